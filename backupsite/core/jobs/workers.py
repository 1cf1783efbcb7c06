"""Are the workers running? Told from the every-minute reaper schedule.

Only a running worker cluster advances a django-q2 schedule's ``next_run``; when the
reaper's is several minutes in the past, no cluster has run it, so no job starts. This
works whatever runs the cluster (``manage.py serve``, systemd, a container), without a
table or a process of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django_q.models import Schedule

REAPER_SCHEDULE = "reap-stale-jobs"
# The reaper runs every minute; a cluster that starts needs a little more to catch up.
DOWN_AFTER = timedelta(minutes=3)


@dataclass(frozen=True)
class WorkersStatus:
    running: bool
    last_seen: datetime | None  # about when the cluster last ran the reaper


def workers_status(now: datetime | None = None) -> WorkersStatus | None:
    """None when nothing can be told (the schedules were never set up: tests, a bare database)."""
    schedule = Schedule.objects.filter(name=REAPER_SCHEDULE).only("next_run").first()
    if schedule is None or schedule.next_run is None:
        return None
    now = now or timezone.now()
    overdue = now - schedule.next_run
    last_seen = schedule.next_run - timedelta(minutes=schedule.minutes or 1)
    return WorkersStatus(running=overdue < DOWN_AFTER, last_seen=last_seen)
