"""Lost workers are found by heartbeats, within a minute, and failed with the real cause."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from backupsite.core.jobs import heartbeat as heartbeat_module
from backupsite.core.jobs.context import JobContext
from backupsite.core.jobs.reaper import reap_stale_jobs
from backupsite.core.jobs.registry import handler_override
from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState, VMLock
from backupsite.core.models.jobs import STALE_AFTER, STUCK_AFTER, this_worker, worker_alive
from tests.factories import make_job, make_vm

pytestmark = pytest.mark.django_db


def dead_worker() -> str:
    """host:pid of a process that existed a moment ago on this machine."""
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}"


def test_worker_alive_tells_what_it_can() -> None:
    assert worker_alive(this_worker()) is True
    assert worker_alive(dead_worker()) is False
    assert worker_alive("another-machine:1234") is None
    assert worker_alive("") is None and worker_alive("garbage") is None


def test_a_job_records_the_worker_that_runs_it() -> None:
    job = make_job()
    seen: dict[str, str] = {}

    def handler(context: JobContext) -> None:
        seen["worker"] = Job.objects.get(pk=context.job.pk).worker

    with handler_override(JobKind.VERIFY, handler):
        run_job(job.pk)
    assert seen["worker"] == this_worker()


def test_a_dead_worker_process_is_reaped_at_once_with_that_cause() -> None:
    vm = make_vm()
    now = timezone.now()
    # Its heartbeat is 5 s old: silence alone would not condemn it yet.
    job = make_job(vm=vm, state=JobState.RUNNING, started=now, heartbeat=now - timedelta(seconds=5))
    Job.objects.filter(pk=job.pk).update(worker=dead_worker())
    VMLock.objects.create(vm=vm, job=job)
    assert reap_stale_jobs() == 1
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.message == "Failed: worker lost"
    assert "is gone: it was killed or crashed" in job.error
    assert not VMLock.objects.filter(vm=vm).exists()
    assert reap_stale_jobs() == 0  # once


def test_silence_from_another_machine_is_reaped_after_stale_after() -> None:
    now = timezone.now()
    fresh = make_job(state=JobState.RUNNING, started=now, heartbeat=now - STALE_AFTER + timedelta(seconds=5))
    silent = make_job(state=JobState.RUNNING, started=now, heartbeat=now - STALE_AFTER - timedelta(seconds=5))
    Job.objects.filter(pk__in=[fresh.pk, silent.pk]).update(worker="other-machine:42")
    assert reap_stale_jobs() == 1
    silent.refresh_from_db()
    fresh.refresh_from_db()
    assert fresh.state == JobState.RUNNING
    assert silent.state == JobState.FAILED and "sent no heartbeat for 50 s" in silent.error
    assert timedelta(minutes=1) >= STALE_AFTER  # found within a minute of going silent


def test_a_live_worker_cut_off_from_the_database_is_given_time() -> None:
    """Alive here but silent: the database was unreachable, or it is busy. Not "worker lost"
    (the worker records the real cause itself when it can write again), unless stuck for long."""
    now = timezone.now()
    waiting = make_job(state=JobState.RUNNING, started=now, heartbeat=now - timedelta(minutes=3))
    stuck = make_job(state=JobState.RUNNING, started=now, heartbeat=now - STUCK_AFTER - timedelta(minutes=1))
    Job.objects.filter(pk__in=[waiting.pk, stuck.pk]).update(worker=this_worker())
    assert reap_stale_jobs() == 1
    waiting.refresh_from_db()
    stuck.refresh_from_db()
    assert waiting.state == JobState.RUNNING
    assert stuck.state == JobState.FAILED and "is alive but made no progress" in stuck.error


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_while_the_handler_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    # A handler that reports nothing for a while (a slow host, a long checkpoint).
    monkeypatch.setattr(heartbeat_module.Heartbeat.__init__, "__defaults__", (0.05,))
    job = make_job()
    beats: list[Any] = []

    def handler(context: JobContext) -> None:
        for _ in range(4):
            time.sleep(0.15)
            beats.append(Job.objects.get(pk=context.job.pk).heartbeat)

    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.SUCCEEDED
    assert len(set(beats)) >= 3  # bumped between the handler's own looks, by the thread


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_the_cause_recorded_not_worker_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat_module.Heartbeat.__init__, "__defaults__", (0.05,))
    monkeypatch.setattr(heartbeat_module, "RETRY_EVERY", 0.05)
    job = make_job()
    down = {"now": False}
    real_update = heartbeat_module.Job.objects.filter(pk=job.pk).update.__func__  # type: ignore[attr-defined]

    def update(self: Any, **fields: Any) -> int:
        if down["now"] and "heartbeat" in fields and len(fields) == 1:
            raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")
        return int(real_update(self, **fields))

    monkeypatch.setattr(type(Job.objects.all()), "update", update)

    def handler(context: JobContext) -> None:
        down["now"] = True
        time.sleep(0.4)
        raise OperationalError("server closed the connection unexpectedly")

    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.FAILED
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error.startswith("The database could not be reached while the job ran (connection to server")
    assert "Connection refused" in job.error and "server closed the connection" in job.error
    assert "worker lost" not in job.message


def test_a_killed_worker_that_is_still_a_zombie_is_gone() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert worker_alive(f"{socket.gethostname()}:{process.pid}") is True
        process.kill()
        time.sleep(0.2)  # killed, not yet reaped by its parent (us): a zombie
        assert worker_alive(f"{socket.gethostname()}:{process.pid}") is False
    finally:
        process.wait()
