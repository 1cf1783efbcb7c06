"""Datastore housekeeping the scheduler runs: garbage collection and verification.

Retention deletes recovery points; only garbage collection gives their chunks'
space back, so it runs daily. Verification re-reads every chunk and finds silent
damage before a restore needs it, so it runs weekly. Both are ordinary jobs, safe
while backups run (the engine pins what running backups use).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from backupsite.core.models import ACTIVE_STATES, Job, JobKind
from storage.models import Datastore

GC_EVERY = timedelta(days=1)
VERIFY_EVERY = timedelta(days=7)


def due_maintenance(now: datetime | None = None) -> list[tuple[str, Datastore]]:
    now = now or timezone.now()
    due: list[tuple[str, Datastore]] = []
    for datastore in Datastore.objects.all():
        active = set(
            Job.objects.filter(datastore=datastore, state__in=ACTIVE_STATES).values_list("kind", flat=True)
        )
        # A datastore that never ran one counts from its creation, so a new one is not
        # collected or verified in its first hour while the initial replicas are written.
        last_gc = datastore.last_gc_at or datastore.created
        last_verify = datastore.last_verified_at or datastore.created
        if JobKind.GARBAGE_COLLECTION not in active and now - last_gc >= GC_EVERY:
            due.append((JobKind.GARBAGE_COLLECTION, datastore))
        if JobKind.VERIFY not in active and now - last_verify >= VERIFY_EVERY:
            due.append((JobKind.VERIFY, datastore))
    return due


def schedule_maintenance(now: datetime | None = None) -> list[int]:
    """Submit the GC and verify jobs that are due; the django-q2 schedule calls it hourly."""
    return [
        Job.submit(kind, datastore=datastore, message="Scheduled maintenance").pk
        for kind, datastore in due_maintenance(now)
    ]


def submit_now(kind: str, datastore: Datastore, user: object) -> Job:
    """An administrator's "Verify now" / "Collect garbage now"; one of each kind at a time."""
    existing = Job.objects.filter(datastore=datastore, kind=kind, state__in=ACTIVE_STATES).first()
    if existing is not None:
        return existing
    return Job.submit(kind, datastore=datastore, requested_by=user)
