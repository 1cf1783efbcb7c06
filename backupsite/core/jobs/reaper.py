"""The lost-job reaper: a django-q2 schedule every minute (created by ``bootstrap``).

A job is lost when its worker process is gone (known for certain on this machine), or
when it has been silent longer than a heartbeat thread ever is (another machine, or a
worker that could not be asked). The job is failed with that cause, its VM lock freed,
and the feature that owns the job kind is told (a backup marks its replica inconsistent
and raises an alert, so the next consistency check repairs it).
"""

from __future__ import annotations

import logging

from django.utils import timezone

from backupsite.core.jobs.registry import abandoned_hooks
from backupsite.core.models import Job, JobState, VMLock

logger = logging.getLogger(__name__)


def reap_stale_jobs() -> int:
    """Fail running jobs whose worker was lost; returns how many."""
    now = timezone.now()
    reaped = 0
    for job in Job.objects.filter(state=JobState.RUNNING).select_related("vm", "group"):
        cause = job.lost_cause(now)
        if not cause:
            continue
        failed = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(
            state=JobState.FAILED,
            finished=now,
            error=cause,
            message="Failed: worker lost",
            rate_bytes_per_second=0,
        )
        if not failed:
            continue  # it finished (or was reaped) meanwhile
        reaped += 1
        VMLock.release(job)
        job.refresh_from_db()
        for hook in abandoned_hooks(job.kind):
            try:
                hook(job)
            except Exception:  # one feature's cleanup must not stop the others
                logger.exception("Cleaning up after lost job %s failed", job.pk)
    return reaped
