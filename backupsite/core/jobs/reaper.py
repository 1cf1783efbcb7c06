"""The stale-job reaper: a django-q2 schedule every minute (created by ``bootstrap``)."""

from __future__ import annotations

from django.utils import timezone

from backupsite.core.models import Job, JobState, VMLock


def reap_stale_jobs() -> int:
    """Fail running jobs whose worker stopped sending heartbeats (killed, machine lost)."""
    now = timezone.now()
    reaped = 0
    for job in Job.objects.filter(state=JobState.RUNNING):
        if job.is_stale(now):
            reaped += Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(
                state=JobState.FAILED,
                finished=now,
                error="The worker running this job stopped responding (process killed or machine lost).",
                message="Failed: worker lost",
            )
            VMLock.release(job)
    return reaped
