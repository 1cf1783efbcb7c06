"""Every page that offers a recovery point copes with one that turned out missing from
its datastore or damaged, or whose datastore is not there: a message, never a 500, and
no way to start a recovery from it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from protection.models import RecoveryPoint
from recovery.models import RecoveryDraft, WizardStep
from tests.recovery_web.conftest import BackedUpLab, make_draft, user_of

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

MISSING = "missing from its datastore"


def items_draft(client: Client, point: RecoveryPoint) -> RecoveryDraft:
    return make_draft(user_of(client), point, WizardStep.ITEMS, type="items")


def browse_text(client: Client, draft: RecoveryDraft) -> str:
    response = client.get(reverse("recovery:browse", args=[draft.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def download(client: Client, point: RecoveryPoint, disk: str) -> Any:
    return client.get(
        reverse("recovery:download", args=[point.pk]), {"disk": disk, "volume": "1", "path": "/a"}
    )


def day_text(client: Client, point: RecoveryPoint) -> str:
    day = timezone.localdate(point.created).isoformat()
    url = reverse("recovery:day", args=[point.vm_id]) + f"?date={day}"
    return client.get(url, headers={"HX-Request": "true"}).content.decode()


def assert_refused_everywhere(client: Client, lab: BackedUpLab, point: RecoveryPoint, message: str) -> None:
    """The point is flagged in the catalog: every page says why and none recovers from it."""
    draft = items_draft(client, point)
    wizard = client.get(draft.get_absolute_url(), follow=True)
    assert wizard.redirect_chain[0][0] == reverse("recovery:vm", args=[point.vm_id])
    assert message in wizard.content.decode()
    htmx = client.post(draft.get_absolute_url(), {"step": WizardStep.ITEMS}, headers={"HX-Request": "true"})
    assert htmx.status_code == 200 and htmx["HX-Redirect"] == reverse("recovery:vm", args=[point.vm_id])
    submitted = client.post(reverse("recovery:submit", args=[draft.pk]), follow=True)
    assert submitted.status_code == 200 and message in submitted.content.decode()
    assert not RecoveryDraft.objects.filter(pk=draft.pk, job__isnull=False).exists()
    assert message in browse_text(client, draft)
    refused = download(client, point, lab.disk_name(lab.windows))
    assert refused.status_code == 409 and message in refused.content.decode()
    drafts = RecoveryDraft.objects.filter(point=point).count()
    started = client.post(reverse("recovery:start", args=[point.pk]), follow=True)
    assert message in started.content.decode()
    assert RecoveryDraft.objects.filter(point=point).count() == drafts  # no new draft
    day = day_text(client, point)
    assert "Recover…" not in day
    overview = client.get(reverse("recovery:overview"))
    assert overview.status_code == 200 and overview.context["total"] == 1  # only the Linux VM
    vm_page = client.get(reverse("protection:vm-detail", args=[point.vm_id]))
    assert vm_page.status_code == 200


def test_a_point_the_store_lost_is_found_out_by_the_first_page_that_reads_it(
    admin_client: Client, backed_up_lab: BackedUpLab
) -> None:
    lab = backed_up_lab
    point = lab.windows_point
    draft = items_draft(admin_client, point)
    shutil.rmtree(Path(lab.lab.datastore.path) / "points" / point.point_id)
    assert MISSING in browse_text(admin_client, draft)  # was a 500 (PointNotFound)
    point.refresh_from_db()
    assert point.missing  # from now on every page knows, before any verify
    assert "Missing from its datastore" in day_text(admin_client, point)
    vm_page = admin_client.get(reverse("protection:vm-detail", args=[point.vm_id])).content.decode()
    assert "Missing from its datastore" in vm_page
    assert_refused_everywhere(admin_client, lab, point, MISSING)


def test_a_point_the_download_finds_missing(admin_client: Client, backed_up_lab: BackedUpLab) -> None:
    lab = backed_up_lab
    shutil.rmtree(Path(lab.lab.datastore.path) / "points" / lab.windows_point.point_id)
    refused = download(admin_client, lab.windows_point, lab.disk_name(lab.windows))
    assert refused.status_code == 409 and MISSING in refused.content.decode()


def test_a_wizard_step_that_finds_the_point_missing(admin_client: Client, backed_up_lab: BackedUpLab) -> None:
    lab = backed_up_lab
    draft = items_draft(admin_client, lab.windows_point)
    shutil.rmtree(Path(lab.lab.datastore.path) / "points" / lab.windows_point.point_id)
    page = admin_client.get(draft.get_absolute_url(), follow=True)  # the items step lists the disks
    assert page.status_code == 200 and MISSING in page.content.decode()


@pytest.mark.parametrize(("flag", "message"), [("damaged", "is damaged"), ("missing", MISSING)])
def test_flagged_points_are_refused_with_a_message(
    admin_client: Client, backed_up_lab: BackedUpLab, flag: str, message: str
) -> None:
    point = backed_up_lab.windows_point
    RecoveryPoint.objects.filter(pk=point.pk).update(**{flag: True})
    point.refresh_from_db()
    label = "Damaged" if flag == "damaged" else "Missing from its datastore"
    assert label in day_text(admin_client, point)
    assert_refused_everywhere(admin_client, backed_up_lab, point, message)


def test_an_unmounted_datastore_is_a_message_not_a_missing_point(
    admin_client: Client, backed_up_lab: BackedUpLab
) -> None:
    lab = backed_up_lab
    draft = items_draft(admin_client, lab.windows_point)
    store = Path(lab.lab.datastore.path)
    store.rename(store.with_name("detached"))
    assert "Is the volume mounted?" in browse_text(admin_client, draft)
    refused = download(admin_client, lab.windows_point, lab.disk_name(lab.windows))
    assert refused.status_code == 409 and "Is the volume mounted?" in refused.content.decode()
    lab.windows_point.refresh_from_db()
    assert not lab.windows_point.missing  # the point is fine; its volume is not there
    assert not store.exists()
