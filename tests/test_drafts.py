"""The one wizard-draft mechanism (backupsite.core.drafts) under both wizards."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.drafts import DRAFT_LIFETIME
from backupsite.core.permissions import Role
from protection.models import ProtectionGroupDraft, RecoveryPoint
from recovery.models import RecoveryDraft, WizardStep
from storage.models import Datastore
from tests.factories import make_vm

pytestmark = pytest.mark.django_db


def age(draft: Any, by: Any) -> None:
    """Pretend the draft was last touched ``by`` ago (auto_now only moves forward)."""
    type(draft).objects.filter(pk=draft.pk).update(updated=timezone.now() - by)


@pytest.fixture
def point() -> RecoveryPoint:
    return RecoveryPoint.objects.create(
        point_id="p1",
        datastore=Datastore.objects.create(name="d", path="/srv/d"),
        vm=make_vm("sql01"),
        created=timezone.now(),
        kind="express_full",
        consistency="crash",
    )


def test_owned_by_hides_other_users_and_expired_drafts(make_user: Callable[..., Any]) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    fresh = ProtectionGroupDraft.start(ann)
    stale = ProtectionGroupDraft.start(ann)
    ProtectionGroupDraft.start(bob)
    age(stale, DRAFT_LIFETIME + timedelta(minutes=1))
    assert list(ProtectionGroupDraft.objects.owned_by(ann)) == [fresh]
    assert fresh.expires_at == fresh.updated + DRAFT_LIFETIME


def test_starting_a_draft_removes_expired_ones_of_that_kind_only(
    make_user: Callable[..., Any], point: RecoveryPoint
) -> None:
    ann = make_user("ann")
    old_group_draft = ProtectionGroupDraft.start(ann)
    old_recovery = RecoveryDraft.start(ann, point=point)
    recent_recovery = RecoveryDraft.start(ann, point=point)
    for draft in (old_group_draft, old_recovery):
        age(draft, DRAFT_LIFETIME * 2)
    age(recent_recovery, DRAFT_LIFETIME / 2)
    new = RecoveryDraft.start(ann, point=point, step=WizardStep.TYPE)
    assert set(RecoveryDraft.objects.all()) == {recent_recovery, new} and new.step == WizardStep.TYPE
    assert ProtectionGroupDraft.objects.filter(pk=old_group_draft.pk).exists()  # not its kind


def test_save_progress_keeps_earlier_steps_and_moves_the_step(make_user: Callable[..., Any]) -> None:
    draft = ProtectionGroupDraft.start(make_user("ann"), data={"members": {"vms": ["1"]}})
    draft.save_progress("method", method={"name": "Gold"})
    draft.save_progress()  # nothing new: still saved as it is
    draft = ProtectionGroupDraft.objects.get(pk=draft.pk)
    assert draft.step == "method"
    assert draft.data == {"members": {"vms": ["1"]}, "method": {"name": "Gold"}}
    assert draft.section("method") == {"name": "Gold"} and draft.section("nothing") == {}
    draft.data["odd"] = "text"
    assert draft.section("odd") == {}  # a section is always a dict
    draft.section("method")["name"] = "changed"
    assert draft.data["method"] == {"name": "Gold"}  # a copy: reading never edits the draft
    draft.discard()
    assert not ProtectionGroupDraft.objects.exists()


def test_expired_drafts_are_not_found_by_either_wizard(
    make_user: Callable[..., Any], point: RecoveryPoint
) -> None:
    ann = make_user("ann", Role.ADMINISTRATOR)
    client = Client()
    client.force_login(ann)
    group_draft = ProtectionGroupDraft.start(ann)
    recovery_draft = RecoveryDraft.start(ann, point=point)
    assert client.get(reverse("protection:wizard-members", args=[group_draft.pk])).status_code == 200
    assert client.get(recovery_draft.get_absolute_url()).status_code == 200
    for draft in (group_draft, recovery_draft):
        age(draft, DRAFT_LIFETIME + timedelta(seconds=1))
    assert client.get(reverse("protection:wizard-members", args=[group_draft.pk])).status_code == 404
    assert client.get(recovery_draft.get_absolute_url()).status_code == 404


def test_migration_turns_step_numbers_into_step_keys(make_user: Callable[..., Any]) -> None:
    migration = importlib.import_module("protection.migrations.0004_draft_step_is_the_step_key")
    ann = make_user("ann")
    third, last, odd = (ProtectionGroupDraft.start(ann, step=step) for step in ("3", "7", "99"))
    migration.numbers_to_keys(apps, None)
    assert [ProtectionGroupDraft.objects.get(pk=d.pk).step for d in (third, last, odd)] == [
        "goals",
        "summary",
        "members",
    ]
    migration.keys_to_numbers(apps, None)
    assert [ProtectionGroupDraft.objects.get(pk=d.pk).step for d in (third, last, odd)] == ["3", "7", "1"]
