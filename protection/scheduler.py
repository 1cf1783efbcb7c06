"""The scheduler tick: what protection work is due now, from the groups' policies.

`tick()` runs every minute as a django-q2 schedule. Everything is computed from the
clock passed in, so tests freeze time by passing `now`. One attempt per slot: a
job created after a slot's instant counts as that slot's attempt even when it
failed, so a failing VM is retried at the next slot, not every minute.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from backupsite.core.models import ACTIVE_STATES, Job, JobKind
from backupsite.core.timeofday import format_time_of_day, parse_time_of_day
from protection.models import ProtectedDataSource, ProtectionGroup, ReplicaCreationMethod, ReplicaState

# A slot missed by more than this (server down) is skipped rather than run late.
CATCH_UP_LIMIT = timedelta(hours=6)


@dataclass(frozen=True)
class DueJob:
    kind: str
    source: ProtectedDataSource
    reason: str


def _zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def _parse_times(values: list[str]) -> list[time]:
    parsed = []
    for value in values:
        try:
            parsed.append(parse_time_of_day(value))
        except ValueError:
            continue  # the wizard validates; a hand-edited bad value is ignored, not fatal
    return parsed


def latest_slot(times: list[str], days: list[int], now: datetime) -> datetime | None:
    """The most recent scheduled instant at or before ``now`` (server time zone)."""
    slots = _parse_times(times)
    weekdays = {int(day) for day in days if str(day).lstrip("-").isdigit() and 0 <= int(day) <= 6}
    if not slots or not weekdays:
        return None
    local_now = now.astimezone(_zone())
    for days_back in range(8):
        day = local_now.date() - timedelta(days=days_back)
        if day.weekday() not in weekdays:
            continue
        candidates = [datetime.combine(day, slot, tzinfo=_zone()) for slot in slots]
        past = [c for c in candidates if c <= local_now]
        if past:
            return max(past)
    return None


def _last_attempts(sources: list[ProtectedDataSource]) -> dict[tuple[int, str], datetime]:
    rows = (
        Job.objects.filter(vm_id__in=[s.vm_id for s in sources])
        .values("vm_id", "kind")
        .annotate(last=Max("created"))
    )
    return {(row["vm_id"], row["kind"]): row["last"] for row in rows}


def _busy_vms(sources: list[ProtectedDataSource]) -> set[int]:
    return set(
        Job.objects.filter(vm_id__in=[s.vm_id for s in sources], state__in=ACTIVE_STATES).values_list(
            "vm_id", flat=True
        )
    )


def due_jobs(now: datetime | None = None) -> list[DueJob]:
    now = now or timezone.now()
    sources = list(
        ProtectedDataSource.objects.select_related("group", "vm").exclude(replica_state=ReplicaState.STOPPED)
    )
    attempts = _last_attempts(sources)
    busy = _busy_vms(sources)
    due: list[DueJob] = []
    for source in sources:
        if source.vm_id in busy or source.vm.removed_at is not None:
            continue
        job = _due_for(source, source.group, now, attempts)
        if job is not None:
            due.append(job)
    return due


def _attempted_since(
    attempts: dict[tuple[int, str], datetime], source: ProtectedDataSource, kind: str, moment: datetime
) -> bool:
    last = attempts.get((source.vm_id, kind))
    return last is not None and last >= moment


def _slot_due(
    times: list[str],
    days: list[int],
    done_at: datetime | None,
    kind: str,
    source: ProtectedDataSource,
    now: datetime,
    attempts: dict[tuple[int, str], datetime],
) -> datetime | None:
    slot = latest_slot(times, days, now)
    if slot is None or now - slot > CATCH_UP_LIMIT or slot < source.added:
        return None
    if done_at is not None and done_at >= slot:
        return None
    if _attempted_since(attempts, source, kind, slot):
        return None
    return slot


def _due_for(
    source: ProtectedDataSource,
    group: ProtectionGroup,
    now: datetime,
    attempts: dict[tuple[int, str], datetime],
) -> DueJob | None:
    state = source.replica_state
    if state == ReplicaState.PENDING:
        at = group.replica_creation_at
        scheduled = group.replica_creation_method == ReplicaCreationMethod.SCHEDULED
        if (
            scheduled
            and at is not None
            and at <= now
            and not _attempted_since(attempts, source, JobKind.INITIAL_REPLICA, at)
        ):
            return DueJob(
                JobKind.INITIAL_REPLICA, source, f"initial replica scheduled for {at:%Y-%m-%d %H:%M}"
            )
        return None
    if state == ReplicaState.INCONSISTENT:
        if group.consistency_check_if_inconsistent:
            last = attempts.get((source.vm_id, JobKind.CONSISTENCY_CHECK))
            # Retry an automatic check at most hourly so a broken host does not spin.
            if last is None or now - last >= timedelta(hours=1):
                return DueJob(JobKind.CONSISTENCY_CHECK, source, "replica is inconsistent")
        return None
    if state != ReplicaState.OK:
        return None  # creating, or waiting for offline media

    # Most important first: one job per VM per tick, and an express full or a
    # consistency check also refreshes the replica a recovery point would have.
    daily_check = group.consistency_check_daily_at
    slotted = [
        (
            JobKind.CONSISTENCY_CHECK,
            [format_time_of_day(daily_check)] if daily_check else [],
            list(range(7)),
            source.last_consistency_check_at,
            "daily consistency check",
        ),
        (
            JobKind.EXPRESS_FULL,
            group.express_full_times,
            group.express_full_days,
            source.last_express_full_at,
            "express full backup scheduled",
        ),
        (
            JobKind.RECOVERY_POINT,
            group.recovery_point_times,
            group.recovery_point_days,
            source.last_recovery_point_at,
            "recovery point scheduled",
        ),
    ]
    for kind, times, days, done_at, label in slotted:
        slot = _slot_due(times, days, done_at, kind, source, now, attempts)
        if slot is not None:
            return DueJob(kind, source, f"{label} at {slot:%H:%M}")
    frequency = group.sync_frequency_minutes
    if frequency:
        interval = timedelta(minutes=frequency)
        last_sync = source.last_sync_at or source.added
        last_try = attempts.get((source.vm_id, JobKind.SYNCHRONIZATION))
        if now - last_sync >= interval and (last_try is None or now - last_try >= interval):
            return DueJob(JobKind.SYNCHRONIZATION, source, f"synchronization every {frequency} minutes")
    return None


def tick(now: datetime | None = None) -> list[int]:
    """Submit every job that is due; returns the new job ids."""
    now = now or timezone.now()
    created = []
    for due in due_jobs(now):
        job = Job.submit(
            due.kind,
            vm=due.source.vm,
            group=due.source.group,
            message=f"Scheduled: {due.reason}",
            created=now,
        )
        created.append(job.pk)
    return created
