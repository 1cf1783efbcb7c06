"""The base job runner: states, traceback, duration, cancellation and the per-VM lock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from backupsite.core.jobs.context import JobContext, JobError
from backupsite.core.jobs.reaper import reap_stale_jobs
from backupsite.core.jobs.registry import handler_override
from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState, VMLock
from tests.factories import make_job, make_vm

pytestmark = pytest.mark.django_db


def test_success_records_result_progress_and_duration() -> None:
    def handler(context: JobContext) -> dict[str, int]:
        context.progress(0, 1000, "starting")
        context.log("first line")
        context.progress(1000, force=True)
        return {"files": 3}

    job = make_job()
    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"files": 3}
    assert job.bytes_done == job.bytes_total == 1000
    assert job.percent == 100
    assert "first line" in job.log
    assert job.started is not None and job.finished is not None and job.finished >= job.started
    assert job.duration_seconds is not None and job.duration_seconds >= 0
    assert job.error == "" and job.traceback == ""


def test_failure_records_error_and_traceback() -> None:
    def handler(context: JobContext) -> None:
        raise JobError("The datastore volume is full")

    job = make_job()
    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.FAILED
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error == "The datastore volume is full"
    assert "Traceback" in job.traceback and "JobError" in job.traceback
    assert job.finished is not None and job.duration_seconds is not None


def test_unknown_kind_fails_cleanly() -> None:
    job = make_job(kind="no-such-kind")
    assert run_job(job.pk) == JobState.FAILED
    job.refresh_from_db()
    assert "No handler" in job.error


def test_running_job_stops_when_cancel_is_requested() -> None:
    checks = []

    def handler(context: JobContext) -> None:
        Job.objects.get(pk=context.job.pk).request_cancel()
        context._last_cancel_check = -1e9  # no throttling inside the test
        checks.append(context.is_cancelled())
        context.check_cancel()
        raise AssertionError("check_cancel should have raised")

    job = make_job()
    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.CANCELLED
    job.refresh_from_db()
    assert checks == [True]
    assert job.state == JobState.CANCELLED and job.finished is not None


def test_queued_job_cancelled_before_it_starts_never_runs() -> None:
    ran = []
    job = make_job()
    assert job.request_cancel()
    with handler_override(JobKind.VERIFY, lambda context: ran.append(1)):
        assert run_job(job.pk) == "not queued"
    job.refresh_from_db()
    assert ran == [] and job.state == JobState.CANCELLED


def test_finished_job_cannot_be_cancelled() -> None:
    job = make_job(state=JobState.SUCCEEDED)
    assert job.request_cancel() is False
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED


def test_a_job_runs_only_once() -> None:
    calls = []
    job = make_job()
    with handler_override(JobKind.VERIFY, lambda context: calls.append(1)):
        run_job(job.pk)
        assert run_job(job.pk) == "not queued"
    assert calls == [1]


def test_two_jobs_never_run_on_one_vm() -> None:
    vm = make_vm()
    holder = make_job(vm=vm, state=JobState.RUNNING, started=timezone.now(), heartbeat=timezone.now())
    assert VMLock.acquire(vm.pk, holder) is None
    waiting = make_job(vm=vm)
    ran = []
    with handler_override(JobKind.VERIFY, lambda context: ran.append(context.job.pk)):
        assert run_job(waiting.pk) == "waiting"
        waiting.refresh_from_db()
        assert ran == []
        assert waiting.state == JobState.QUEUED
        assert f"Waiting for job #{holder.pk}" in waiting.message
        retry = Schedule.objects.get(func="backupsite.core.jobs.runner.run_job")
        assert retry.args == f"({waiting.pk},)" and retry.next_run > timezone.now()

        VMLock.release(holder)
        assert run_job(waiting.pk) == JobState.SUCCEEDED
    assert ran == [waiting.pk]
    assert not VMLock.objects.exists()


def test_other_vms_are_not_blocked() -> None:
    busy, free = make_vm("busy"), make_vm("free")
    holder = make_job(vm=busy, state=JobState.RUNNING, started=timezone.now(), heartbeat=timezone.now())
    VMLock.acquire(busy.pk, holder)
    job = make_job(vm=free)
    with handler_override(JobKind.VERIFY, lambda context: None):
        assert run_job(job.pk) == JobState.SUCCEEDED


def test_lock_is_released_after_failure() -> None:
    vm = make_vm()
    job = make_job(vm=vm)

    def handler(context: JobContext) -> None:
        assert VMLock.objects.filter(vm=vm, job=context.job).exists()
        raise RuntimeError("boom")

    with handler_override(JobKind.VERIFY, handler):
        assert run_job(job.pk) == JobState.FAILED
    assert not VMLock.objects.filter(vm=vm).exists()


def test_lock_of_a_lost_worker_is_taken_over_and_the_job_reaped() -> None:
    vm = make_vm()
    long_ago = timezone.now() - timedelta(hours=1)
    lost = make_job(vm=vm, state=JobState.RUNNING, started=long_ago, heartbeat=long_ago)
    VMLock.objects.create(vm=vm, job=lost)
    job = make_job(vm=vm)
    with handler_override(JobKind.VERIFY, lambda context: None):
        assert run_job(job.pk) == JobState.SUCCEEDED
    assert reap_stale_jobs() == 1
    lost.refresh_from_db()
    assert lost.state == JobState.FAILED and "sent no heartbeat for 3600 s" in lost.error


def test_submit_enqueues_on_commit(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with handler_override(JobKind.VERIFY, lambda context: {"ok": True}):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            job = Job.submit(JobKind.VERIFY)
            assert Job.objects.get(pk=job.pk).state == JobState.QUEUED
        assert len(callbacks) == 1
    job.refresh_from_db()
    # The test settings run django-q2 synchronously, so the job has already run.
    assert job.state == JobState.SUCCEEDED and job.result == {"ok": True}


def test_eta_and_percent() -> None:
    job = make_job(state=JobState.RUNNING, bytes_done=250, bytes_total=1000, rate_bytes_per_second=75)
    assert job.percent == 25
    assert job.eta == timedelta(seconds=10)
