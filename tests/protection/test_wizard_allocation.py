"""The wizard's allocation step (protection.views.wizard, step 4): will the group fit,
counting what the other groups on the datastore are planned to need, and explicit
colocation. The rest of the wizard is in test_wizard_views.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.template.defaultfilters import filesizeformat
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from protection.forms import wizard as wizard_forms
from protection.models import (
    Consistency,
    ProtectedDataSource,
    ProtectionGroup,
    ProtectionGroupDraft,
    RecoveryPoint,
    RecoveryPointKind,
    VirtualMachine,
)
from protection.views import wizard as wizard_views
from storage.models import Datastore
from tests.protection.conftest import needs_root
from tests.protection.helpers import GIB, protect, vm_with_disk
from tests.protection.test_wizard_views import (  # noqa: F401
    HTMX,
    STEPS,
    Input,
    draft,
    fill,
    post,
    url,
    valid,
    vms,
)

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def small_datastore(tmpfs: Callable[[str, int], Path], name: str = "small") -> Datastore:
    return Datastore.objects.create_with_store(name, str(tmpfs(name, 64) / "store"))


def allocation_page(client: Client, of: ProtectionGroupDraft) -> str:
    return client.get(url(of, "allocation")).content.decode()


def warning(page: str) -> str:
    """The underprovisioned warning's text, or "" when there is none."""
    marker = 'data-testid="underprovisioned">'
    if marker not in page:
        return ""
    start = page.index(marker) + len(marker)
    return page[start : page.index("</p>", start)]


@needs_root
def test_a_group_larger_than_the_volume_is_underprovisioned(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    tmpfs: Callable[[str, int], Path],
) -> None:
    small = small_datastore(tmpfs)
    archive = vm_with_disk("archive01", file_size=150 * MIB)
    valid["members"] = {"vms": [str(archive.pk)]}
    valid["allocation"] = {"datastore": str(small.pk), "daily_churn_percent": "0"}
    fill(operator_client, draft, valid, STEPS[:4])  # a warning, not a refusal
    page = allocation_page(operator_client, draft)
    text = warning(page)
    space = small.disk_space()
    assert space is not None and space.free < 64 * MIB
    assert text.startswith(f"Underprovisioned by {_size(150 * MIB - space.free)}: ")
    assert "the group is recommended 150.0\xa0MB and only" in text and "planned for" not in text
    assert '<strong data-testid="provision">150.0\xa0MB</strong>' in page


@needs_root
def test_the_other_groups_planned_space_is_set_aside(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    tmpfs: Callable[[str, int], Path],
) -> None:
    small = small_datastore(tmpfs)
    newcomer = vm_with_disk("web01", file_size=30 * MIB)
    valid["members"] = {"vms": [str(newcomer.pk)]}
    valid["allocation"] = {"datastore": str(small.pk), "daily_churn_percent": "0"}
    fill(operator_client, draft, valid, STEPS[:4])
    alone = allocation_page(operator_client, draft)
    assert warning(alone) == ""  # 30 MiB on a 64 MiB volume fits

    # Gold is planned to need 40 MiB there and has stored nothing yet: 24 MiB are left.
    gold = ProtectionGroup.objects.create(
        name="Gold", datastore=small, retention_days=5, planned_daily_churn_percent=0
    )
    protect(vm_with_disk("sql01", file_size=40 * MIB), gold)
    shared = allocation_page(operator_client, draft)
    space = small.disk_space()
    assert space is not None
    text = warning(shared)
    assert text.startswith(f"Underprovisioned by {_size(30 * MIB - (space.free - 40 * MIB))}: ")
    assert "less 40.0\xa0MB planned for Gold)" in text
    assert '<td data-testid="others-planned">40.0\xa0MB' in shared
    assert f'<strong data-testid="available">{_size(space.free - 40 * MIB)}</strong>' in shared
    assert "Colocated: this group will share datastore small with Gold." in shared

    # What Gold has stored already counts against its plan, not twice.
    Datastore.objects.filter(pk=small.pk).update(used_bytes=35 * MIB)
    partly = allocation_page(operator_client, draft)
    assert "(35.0\xa0MB of it stored already; 5.0\xa0MB still to come)" in partly
    assert warning(partly) == ""


def _size(value: int) -> str:
    return str(filesizeformat(value))


def test_a_dedicated_datastore_in_use_is_neither_offered_nor_accepted(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    datastore: Datastore,
    tmp_path: Path,
) -> None:
    dedicated = Datastore.objects.create_with_store("vault", str(tmp_path / "vault"))
    Datastore.objects.filter(pk=dedicated.pk).update(colocate=False)
    fresh = Datastore.objects.create_with_store("spare", str(tmp_path / "spare"))
    Datastore.objects.filter(pk=fresh.pk).update(colocate=False)
    ProtectionGroup.objects.create(name="Bronze", datastore=dedicated)
    ProtectionGroup.objects.create(name="Silver", datastore=datastore)
    fill(operator_client, draft, valid, STEPS[:3])
    page = allocation_page(operator_client, draft)
    assert f'<option value="{datastore.pk}" selected>main (shared with Silver)</option>' in page
    assert f'<option value="{fresh.pk}">spare (dedicated to one group)</option>' in page
    assert f'value="{dedicated.pk}"' not in page and "vault" not in page

    forged = post(
        operator_client, draft, "allocation", {**valid["allocation"], "datastore": str(dedicated.pk)}
    )
    assert forged.status_code == 200
    assert "Datastore vault is dedicated to group Bronze (colocation is off)" in forged.content.decode()

    chosen = post(operator_client, draft, "allocation", {**valid["allocation"], "datastore": str(fresh.pk)})
    assert chosen["Location"] == url(draft, "replica")
    assert "it will serve this group only" in allocation_page(operator_client, draft)


def test_choosing_a_shared_datastore_names_its_groups_over_htmx(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    datastore: Datastore,
    tmp_path: Path,
) -> None:
    other = Datastore.objects.create_with_store("other", str(tmp_path / "other"))
    for name in ("Silver", "Bronze"):
        ProtectionGroup.objects.create(name=name, datastore=other)
    fill(operator_client, draft, valid, STEPS[:3])
    assert "No other group uses datastore main yet" in allocation_page(operator_client, draft)
    changed = {**valid["allocation"], "datastore": str(other.pk)}
    response = post(operator_client, draft, "allocation", changed, nav="", headers=HTMX)
    content = response.content.decode()
    assert response.status_code == 200 and b"<html" not in response.content
    assert "Colocated: this group will share datastore other with Bronze, Silver." in content


def test_the_plan_is_kept_with_the_group_and_assigned_to_the_datastore(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    vms: list[VirtualMachine],  # noqa: F811
    datastore: Datastore,
) -> None:
    valid["allocation"]["daily_churn_percent"] = "7.5"
    fill(operator_client, draft, valid)
    operator_client.post(url(draft, "summary"))
    group = ProtectionGroup.objects.get(name="Gold")
    assert group.planned_daily_churn_percent == 7.5
    datastore.refresh_from_db()
    assert datastore.assigned_bytes == int(4 * GIB * (1 + 10 * 0.075))


def test_modifying_a_group_plans_with_its_measured_change(
    operator_client: Client, datastore: Datastore
) -> None:
    group = ProtectionGroup.objects.create(name="Gold", datastore=datastore, planned_daily_churn_percent=1)
    vm = vm_with_disk("sql01", file_size=10 * GIB)
    protect(vm, group)
    now = timezone.now()
    for days_ago, kind, stored in (
        (4, RecoveryPointKind.INITIAL, 5 * GIB),
        (2, "sync", GIB),
        (0, "sync", GIB),
    ):
        RecoveryPoint.objects.create(
            point_id=uuid.uuid4().hex, datastore=datastore, vm=vm, group=group, kind=kind,
            created=now - timedelta(days=days_ago), consistency=Consistency.CRASH,
            size_bytes=10 * GIB, stored_bytes=stored,
        )  # fmt: skip
    operator_client.post(reverse("protection:group-modify", args=[group.pk]))
    modify = ProtectionGroupDraft.objects.get(group=group)
    assert modify.data["allocation"]["daily_churn_percent"] == "5.0"  # 2 GiB in 4 days of 10 GiB
    page = allocation_page(operator_client, modify)
    assert 'name="daily_churn_percent" value="5.0"' in page


def test_a_dedicated_datastore_taken_before_create_is_refused(
    operator_client: Client,
    draft: ProtectionGroupDraft,  # noqa: F811
    valid: Input,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vault = Datastore.objects.create_with_store("vault", str(tmp_path / "vault"))
    Datastore.objects.filter(pk=vault.pk).update(colocate=False)
    valid["allocation"]["datastore"] = str(vault.pk)
    fill(operator_client, draft, valid)
    draft.refresh_from_db()
    stale = wizard_forms.clean_draft(draft)
    ProtectionGroup.objects.create(name="Bronze", datastore=vault)  # another wizard was faster
    summary = operator_client.get(url(draft, "summary")).content.decode()
    assert "Datastore vault is dedicated to group Bronze (colocation is off)" in summary

    # The summary's own check passes on the stale policy; the service's locked check must not.
    monkeypatch.setattr(wizard_views, "clean_draft", lambda _draft: stale)
    response = operator_client.post(url(draft, "summary"), follow=True)
    assert response.redirect_chain[-1][0] == url(draft, "allocation")
    assert "Datastore vault is dedicated to group Bronze (colocation is off)" in response.content.decode()
    assert list(ProtectionGroup.objects.values_list("name", flat=True)) == ["Bronze"]
    assert not ProtectedDataSource.objects.exists()
