"""Runs one Job row: state, lock, handler, outcome. The django-q2 task entry point."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.db import DatabaseError, connection
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest, NullIf
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import schedule

from backupsite.core.jobs.context import JobCancelled, JobContext
from backupsite.core.jobs.heartbeat import Heartbeat
from backupsite.core.jobs.registry import abandoned_hooks, get_handler
from backupsite.core.models import RUN_JOB_TASK, Job, JobState, VMLock
from backupsite.core.models.jobs import this_worker

logger = logging.getLogger(__name__)
LOCK_RETRY_DELAY = timedelta(seconds=30)
# How long a finished job keeps trying to record its outcome while the database is away.
FINISH_RETRY_FOR = timedelta(minutes=10)


def run_job(job_id: int) -> str:
    """Claim a queued job, run its handler, and record how it ended."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        state=JobState.RUNNING, started=now, heartbeat=now, finished=None, worker=this_worker()
    )
    if not claimed:
        return "not queued"  # cancelled before it started, or another worker has it
    job = Job.objects.select_related("vm").get(pk=job_id)

    if job.vm_id is not None:
        holder = VMLock.acquire(job.vm_id, job)
        if holder is not None:
            _wait_for_lock(job, holder)
            return "waiting"

    started = time.monotonic()
    context = JobContext(job)
    heartbeat = Heartbeat(job.pk)
    try:
        with heartbeat:
            handler = get_handler(job.kind)
            if handler is None:
                raise LookupError(f"No handler is registered for job kind {job.kind!r}")
            result = handler(context) or {}
    except JobCancelled:
        _finish(job, started, JobState.CANCELLED, message="Cancelled by user")
        return JobState.CANCELLED
    except Exception as error:
        logger.exception("Job %s failed", job_id)
        reason = str(error) or error.__class__.__name__
        if isinstance(error, DatabaseError) or heartbeat.database_outage:
            # The real cause, not a side effect of it (nor, later, "worker lost").
            outage = heartbeat.database_outage or "The database could not be reached while the job ran."
            reason = f"{outage} {reason}"
        _finish(
            job,
            started,
            JobState.FAILED,
            message=f"Failed: {reason}"[:500],
            error=reason,
            traceback=traceback.format_exc(),
        )
        if isinstance(error, DatabaseError) or heartbeat.database_outage:
            # The handler's own clean-up could not reach the database either: do what is
            # done for a job lost with its worker (a backup marks its replica inconsistent).
            _run_abandoned_hooks(job)
        return JobState.FAILED
    finally:
        _with_database(lambda: VMLock.release(job))
    # In the database, not read back first: a finished job's bar is full, and a
    # handler that set no message gets a plain one.
    _finish(
        job,
        started,
        JobState.SUCCEEDED,
        result=result,
        message=Coalesce(NullIf(F("message"), Value("")), Value("Completed")),
        bytes_done=Greatest(F("bytes_done"), F("bytes_total")),
    )
    return JobState.SUCCEEDED


def _run_abandoned_hooks(job: Job) -> None:
    job.refresh_from_db()
    for hook in abandoned_hooks(job.kind):
        try:
            _with_database(lambda hook=hook: hook(job))  # type: ignore[misc]
        except Exception:
            logger.exception("Cleaning up after job %s failed", job.pk)


def _finish(job: Job, started: float, state: JobState, **fields: object) -> None:
    duration = round(time.monotonic() - started, 3)

    def record() -> None:
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(
            state=state,
            finished=now,
            heartbeat=now,
            duration_seconds=duration,
            rate_bytes_per_second=0,
            **fields,
        )

    _with_database(record)


def _with_database(write: Callable[[], object]) -> None:
    """Run a write that must not be lost to a database outage: retry until it answers.

    Gives up after FINISH_RETRY_FOR (the reaper then fails the job); meanwhile the
    heartbeat thread keeps the job from being taken for lost.
    """
    deadline = time.monotonic() + FINISH_RETRY_FOR.total_seconds()
    delay = 1.0
    while True:
        try:
            write()
            return
        except DatabaseError:
            if time.monotonic() >= deadline:
                raise
            logger.warning("The database does not answer; retrying in %.0f s", delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _wait_for_lock(job: Job, holder: Job) -> None:
    """Put the job back in the queue and try again shortly: one job per VM at a time."""
    Job.objects.filter(pk=job.pk).update(
        state=JobState.QUEUED,
        started=None,
        message=f"Waiting for job #{holder.pk} ({holder.get_kind_display()}) on {job.vm}",
    )
    schedule(
        RUN_JOB_TASK,
        job.pk,
        name=f"job-{job.pk}-retry-{int(time.time() * 1000)}",
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=timezone.now() + LOCK_RETRY_DELAY,
    )
