from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.models import JobState
from protection.models import ProtectedDataSource, ProtectionGroup, RecoveryPoint
from storage.models import Datastore
from tests.factories import make_job, make_vm

pytestmark = pytest.mark.django_db


def test_home_counts_come_from_the_database(readonly_client: Client) -> None:
    datastore = Datastore.objects.create(name="ds", path="/srv/ds", used_bytes=3 * 1024**3)
    group = ProtectionGroup.objects.create(name="Gold", datastore=datastore)
    protected, _other = make_vm("web01"), make_vm("web02")
    ProtectedDataSource.objects.create(group=group, vm=protected)
    for minutes in (1, 2):
        RecoveryPoint.objects.create(
            point_id=f"p{minutes}",
            datastore=datastore,
            vm=protected,
            group=group,
            created=timezone.now() - timedelta(minutes=minutes),
            kind="sync",
            consistency="crash",
        )
    RecoveryPoint.objects.create(
        point_id="bad",
        datastore=datastore,
        vm=protected,
        created=timezone.now(),
        kind="sync",
        consistency="crash",
        damaged=True,
    )
    make_job(state=JobState.SUCCEEDED)
    make_job(state=JobState.FAILED, vm=protected, message="disk full")
    old = make_job(state=JobState.FAILED)
    old.created = timezone.now() - timedelta(days=2)
    old.save()

    response = readonly_client.get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="protected-vms">1<' in html
    assert 'data-testid="recovery-points">2<' in html
    assert 'data-testid="storage-used">3.0\xa0GB<' in html
    assert 'data-testid="jobs-failed">1<' in html
    assert 'data-testid="jobs-succeeded">1<' in html


def test_home_wrong_method(admin_client: Client) -> None:
    assert admin_client.post(reverse("home")).status_code == 405


@pytest.mark.parametrize(
    "name", ["protection:overview", "recovery:overview", "storage:datastore-list", "management"]
)
def test_section_pages_render(admin_client: Client, name: str) -> None:
    assert admin_client.get(reverse(name)).status_code == 200


def test_active_alerts_show_on_the_dashboard_until_resolved(readonly_client: Client) -> None:
    from protection.models import Alert, AlertKind

    vm = make_vm("exchange01")
    Alert.raise_alert(AlertKind.BACKUP_FAILED, "Synchronization failed: host unreachable", vm=vm)
    again = Alert.raise_alert(AlertKind.BACKUP_FAILED, "Synchronization failed: host unreachable", vm=vm)
    assert again.occurrences == 2 and Alert.objects.count() == 1
    page = readonly_client.get(reverse("home")).content.decode()
    assert "Synchronization failed: host unreachable" in page and "exchange01" in page
    assert Alert.resolve([AlertKind.BACKUP_FAILED], "Job #9 succeeded", vm=vm) == 1
    page = readonly_client.get(reverse("home")).content.decode()
    assert "No active alerts" in page
