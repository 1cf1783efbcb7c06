"""The scheduler tick decides from the policies and a frozen clock what is due."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from backupsite.core.models import Job, JobKind, JobState
from protection.models import ProtectedDataSource, ProtectionGroup, ReplicaState
from protection.scheduler import due_jobs, latest_slot, tick
from storage.models import Datastore
from tests.factories import make_vm

pytestmark = pytest.mark.django_db

# A Wednesday.
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WEEKDAYS = [0, 1, 2, 3, 4]


def protect(name: str = "vm01", **policy: object) -> ProtectedDataSource:
    datastore = Datastore.objects.get_or_create(name="ds", path="/srv/ds")[0]
    group = ProtectionGroup.objects.create(name=f"group-{name}", datastore=datastore, **policy)
    return ProtectedDataSource.objects.create(
        group=group, vm=make_vm(name), replica_state=ReplicaState.OK, added=NOON - timedelta(days=10)
    )


def kinds(now: datetime) -> list[str]:
    return [due.kind for due in due_jobs(now)]


def test_latest_slot_respects_days_and_times() -> None:
    assert latest_slot(["08:00", "20:00"], WEEKDAYS, NOON) == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    # Saturday noon with weekday-only slots: Friday 20:00.
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert latest_slot(["08:00", "20:00"], WEEKDAYS, saturday) == datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    assert latest_slot([], WEEKDAYS, NOON) is None
    assert latest_slot(["08:00"], [], NOON) is None
    assert latest_slot(["bad", "25:99"], WEEKDAYS, NOON) is None


def test_recovery_point_due_once_per_slot() -> None:
    source = protect(recovery_point_times=["11:30"], recovery_point_days=WEEKDAYS)
    source.last_recovery_point_at = NOON - timedelta(days=1)
    source.save()
    assert kinds(NOON - timedelta(minutes=31)) == []  # before the slot
    assert kinds(NOON) == [JobKind.RECOVERY_POINT]
    [job_id] = tick(NOON)
    job = Job.objects.get(pk=job_id)
    assert job.vm == source.vm and job.group == source.group and job.kind == JobKind.RECOVERY_POINT
    assert job.state == JobState.QUEUED and job.created == NOON
    Job.objects.filter(pk=job_id).update(state=JobState.FAILED)
    # One attempt per slot: the failed attempt is not retried every minute.
    assert kinds(NOON + timedelta(minutes=1)) == []
    # The next slot (tomorrow 11:30) is due again.
    assert kinds(NOON + timedelta(days=1)) == [JobKind.RECOVERY_POINT]


def test_done_recovery_point_is_not_due() -> None:
    source = protect(recovery_point_times=["11:30"], recovery_point_days=WEEKDAYS)
    source.last_recovery_point_at = datetime(2026, 11, 25, 11, 31, tzinfo=UTC)
    source.save()
    assert kinds(NOON) == []


def test_missed_slot_older_than_catch_up_limit_is_skipped() -> None:
    source = protect(recovery_point_times=["01:00"], recovery_point_days=WEEKDAYS)
    source.last_recovery_point_at = NOON - timedelta(days=2)
    source.save()
    assert kinds(NOON) == []  # 11 hours late: wait for the next slot


def test_sync_frequency() -> None:
    source = protect(sync_frequency_minutes=15)
    source.last_sync_at = NOON - timedelta(minutes=14)
    source.save()
    assert kinds(NOON) == []
    assert kinds(NOON + timedelta(minutes=1)) == [JobKind.SYNCHRONIZATION]


def test_just_before_recovery_point_means_no_separate_sync() -> None:
    source = protect(sync_frequency_minutes=None)
    source.last_sync_at = NOON - timedelta(days=3)
    source.save()
    assert kinds(NOON) == []


def test_busy_vm_gets_nothing_new() -> None:
    source = protect(sync_frequency_minutes=15)
    Job.objects.create(kind=JobKind.RECOVERY, vm=source.vm, state=JobState.RUNNING)
    assert kinds(NOON) == []


def test_express_full_wins_over_recovery_point_in_the_same_slot() -> None:
    protect(
        recovery_point_times=["11:00"],
        recovery_point_days=WEEKDAYS,
        express_full_times=["11:00"],
        express_full_days=[2],
    )
    assert kinds(NOON) == [JobKind.EXPRESS_FULL]


def test_inconsistent_replica_gets_a_consistency_check_when_enabled() -> None:
    on = protect("on", consistency_check_if_inconsistent=True)
    off = protect("off", consistency_check_if_inconsistent=False)
    ProtectedDataSource.objects.filter(pk__in=[on.pk, off.pk]).update(replica_state=ReplicaState.INCONSISTENT)
    due = due_jobs(NOON)
    assert [(d.kind, d.source.pk) for d in due] == [(JobKind.CONSISTENCY_CHECK, on.pk)]
    Job.objects.create(kind=JobKind.CONSISTENCY_CHECK, vm=on.vm, state=JobState.FAILED, created=NOON)
    assert kinds(NOON + timedelta(minutes=30)) == []  # at most hourly
    assert kinds(NOON + timedelta(minutes=61)) == [JobKind.CONSISTENCY_CHECK]


def test_daily_consistency_check() -> None:
    source = protect(consistency_check_daily_at=time(11, 0))
    source.last_consistency_check_at = NOON - timedelta(days=1)
    source.save()
    assert kinds(NOON) == [JobKind.CONSISTENCY_CHECK]


def test_scheduled_initial_replica() -> None:
    source = protect(replica_creation_method="scheduled", replica_creation_at=NOON + timedelta(hours=1))
    ProtectedDataSource.objects.filter(pk=source.pk).update(replica_state=ReplicaState.PENDING)
    assert kinds(NOON) == []
    assert kinds(NOON + timedelta(hours=1)) == [JobKind.INITIAL_REPLICA]


def test_awaiting_media_and_removed_vms_are_left_alone() -> None:
    waiting = protect("waiting", sync_frequency_minutes=15)
    ProtectedDataSource.objects.filter(pk=waiting.pk).update(replica_state=ReplicaState.AWAITING_MEDIA)
    gone = protect("gone", sync_frequency_minutes=15)
    gone.vm.removed_at = NOON
    gone.vm.save()
    assert kinds(NOON) == []
