"""The capacity page (protection.views.capacity) and the capacity sections of the group
page and the datastore page."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from protection.models import CapacitySample, Consistency, ProtectionGroup, RecoveryPoint, RecoveryPointKind
from protection.services.capacity import GUIDELINE_DATA_BYTES
from storage.models import Datastore
from tests.protection.helpers import GIB, protect, vm_with_disk

pytestmark = pytest.mark.django_db

CAPACITY = reverse("protection:capacity")


@pytest.fixture
def gold(datastore: Datastore) -> ProtectionGroup:
    group = ProtectionGroup.objects.create(
        name="Gold", datastore=datastore, retention_days=10, planned_daily_churn_percent=2.0
    )
    protect(vm_with_disk("sql01", file_size=10 * GIB), group)
    return group


@pytest.fixture
def silver(datastore: Datastore) -> ProtectionGroup:
    """Colocated with Gold, with two weeks of backups measured."""
    group = ProtectionGroup.objects.create(name="Silver", datastore=datastore, retention_days=7)
    vm = vm_with_disk("web01", file_size=20 * GIB)
    protect(vm, group)
    now = timezone.now()
    for days_ago, kind, stored in (
        (14, RecoveryPointKind.INITIAL, 5 * GIB),
        *((d, "recovery_point", GIB) for d in range(14)),
    ):
        RecoveryPoint.objects.create(
            point_id=uuid.uuid4().hex, datastore=datastore, vm=vm, group=group, kind=kind,
            created=now - timedelta(days=days_ago), consistency=Consistency.CRASH,
            size_bytes=20 * GIB, stored_bytes=stored,
        )  # fmt: skip
    Datastore.objects.filter(pk=datastore.pk).update(used_bytes=18 * GIB)
    return group


def samples(datastore: Datastore, free_per_hour: list[int]) -> None:
    now = timezone.now()
    for hours_ago, free in zip(range(len(free_per_hour) - 1, -1, -1), free_per_hour, strict=True):
        CapacitySample.objects.create(
            datastore=datastore, taken_at=now - timedelta(hours=hours_ago), used_bytes=0,
            volume_total_bytes=100 * GIB, volume_used_bytes=100 * GIB - free, volume_free_bytes=free,
        )  # fmt: skip


@pytest.mark.parametrize(
    "client_name", ["admin_client", "operator_client", "recovery_client", "readonly_client"]
)
def test_every_role_sees_the_capacity_page(
    request: pytest.FixtureRequest, client_name: str, gold: ProtectionGroup, silver: ProtectionGroup
) -> None:
    samples(gold.datastore, [50 * GIB, 49 * GIB, 48 * GIB, 47 * GIB])
    response = request.getfixturevalue(client_name).get(CAPACITY)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/protection/capacity/" aria-current="page">Capacity</a>' in page
    datastores = page[page.index('data-testid="datastores"') : page.index('data-testid="groups"')]
    groups = page[page.index('data-testid="groups"') :]
    assert ">main</a>" in datastores and ">Gold</a>, <a" in datastores and ">Silver</a>" in datastores
    assert "24.0\xa0GB/day" in datastores  # 1 GiB less free space an hour
    expected_full = (timezone.localtime() + timedelta(days=47 / 24)).date()
    assert f"<strong>{expected_full:%Y-%m-%d}</strong>" in datastores
    assert '4.0 : 1 <small class="muted">(initial replicas)</small>' in datastores
    assert 'data-testid="capacity-bar"' in datastores
    # Gold has no backups: the plan, 10 GiB x (1 + 10 x 2 %); Silver is measured.
    assert "planned 2 %" in groups and "12.0\xa0GB" in groups
    assert "1.0\xa0GB/day" in groups and "measured over 14.0 days" in groups
    assert "<strong>2</strong> virtual machines with <strong>30.0\xa0GB</strong> of data" in page
    assert 'data-testid="guideline-exceeded"' not in page


def test_an_estate_beyond_the_guideline_is_pointed_out(admin_client: Client, gold: ProtectionGroup) -> None:
    protect(vm_with_disk("archive", file_size=GUIDELINE_DATA_BYTES), gold)
    page = admin_client.get(CAPACITY).content.decode()
    assert 'data-testid="guideline-exceeded"' in page
    assert "up to 800 virtual machines of 100 GB each, 80 TB of data" in page


def test_underprovisioned_datastore_is_shown(admin_client: Client, datastore: Datastore) -> None:
    group = ProtectionGroup.objects.create(name="Huge", datastore=datastore, retention_days=1)
    protect(vm_with_disk("archive", file_size=2**60), group)
    page = admin_client.get(CAPACITY).content.decode()
    assert '<strong class="warning-text">' in page
    detail = admin_client.get(datastore.get_absolute_url()).content.decode()
    assert 'data-testid="underprovisioned"' in detail


def test_empty_server(readonly_client: Client) -> None:
    Datastore.objects.all().delete()
    page = readonly_client.get(CAPACITY).content.decode()
    assert "No datastore." in page and "No protection group." in page


def test_outsider_sees_nothing(outsider_client: Client, gold: ProtectionGroup) -> None:
    assert outsider_client.get(CAPACITY).status_code == 404


def test_read_only_page(admin_client: Client) -> None:
    assert admin_client.post(CAPACITY).status_code == 405


def test_group_page_has_a_capacity_section(
    readonly_client: Client, gold: ProtectionGroup, silver: ProtectionGroup
) -> None:
    page = readonly_client.get(gold.get_absolute_url()).content.decode()
    section = page[page.index('data-testid="group-capacity"') : page.index("<h2>Members</h2>")]
    assert '<strong data-testid="group-recommended">12.0\xa0GB</strong>' in section
    assert "data \N{MULTIPLICATION SIGN} (1 + 10 days \N{MULTIPLICATION SIGN} 2 %)" in section
    assert "its 2 colocated groups" in section
    measured = readonly_client.get(silver.get_absolute_url()).content.decode()
    assert "from the measured change and reduction" in measured and "1.0\xa0GB/day" in measured


def test_datastore_page_has_a_capacity_section(readonly_client: Client, gold: ProtectionGroup) -> None:
    page = readonly_client.get(gold.datastore.get_absolute_url()).content.decode()
    section = page[page.index('data-testid="datastore-capacity"') :]
    assert '<dd data-testid="recommended">12.0\xa0GB' in section
    assert "no samples yet" in section and f'href="{CAPACITY}"' in section
