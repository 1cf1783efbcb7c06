"""Job rows: every piece of long work the workers do, with its state and progress."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task


class JobKind(models.TextChoices):
    INVENTORY = "inventory", "Inventory refresh"
    INITIAL_REPLICA = "initial_replica", "Initial replica"
    SYNCHRONIZATION = "synchronization", "Synchronization"
    RECOVERY_POINT = "recovery_point", "Recovery point"
    EXPRESS_FULL = "express_full", "Express full backup"
    CONSISTENCY_CHECK = "consistency_check", "Consistency check"
    STOP_PROTECTION = "stop_protection", "Stop protection"
    RECOVERY = "recovery", "Recovery"
    VERIFY = "verify", "Verify datastore"
    PRUNE = "prune", "Prune recovery points"
    GARBAGE_COLLECTION = "gc", "Garbage collection"
    ONLINE_COPY = "online_copy", "Online copy"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
# A running job's worker bumps its heartbeat every HEARTBEAT_EVERY from a thread of its
# own, whatever the job is doing; silence for STALE_AFTER means the worker is gone. A
# worker that is still alive on this machine but silent (stuck in I/O, or cut off from
# the database) is given STUCK_AFTER before its job is failed.
HEARTBEAT_EVERY = timedelta(seconds=10)
STALE_AFTER = timedelta(seconds=45)
STUCK_AFTER = timedelta(minutes=10)
# The django-q2 task that runs a job. Queued tasks and one-off retry schedules store this
# dotted path in the database, so a rename needs a data migration (see 0003_jobs).
RUN_JOB_TASK = "backupsite.core.jobs.runner.run_job"


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str) -> bool | None:
    """True/False for a "host:pid" on this machine; None when it cannot be told from here."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    # A killed process stays a zombie until its parent reaps it: it is gone all the same.
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to ask: it exists
    return state not in (b"Z", b"X")


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(state__in=ACTIVE_STATES)

    def finished(self) -> JobQuerySet:
        return self.filter(state__in=FINISHED_STATES)

    def since(self, moment: Any) -> JobQuerySet:
        return self.filter(created__gte=moment)


class Job(models.Model):
    kind = models.CharField(max_length=24, choices=JobKind.choices)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    # What the job works on; any of these may be empty depending on the kind.
    vm = models.ForeignKey(
        "protection.VirtualMachine", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    group = models.ForeignKey(
        "protection.ProtectionGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    host = models.ForeignKey(
        "protection.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    datastore = models.ForeignKey(
        "storage.Datastore", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    parameters = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)

    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    rate_bytes_per_second = models.FloatField(default=0)
    message = models.CharField(max_length=500, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cancel_requested = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    # Bumped by the worker while it runs; a running job whose heartbeat stops was
    # lost with its worker and is failed by the reaper so its VM lock is freed.
    heartbeat = models.DateTimeField(null=True, blank=True)
    # "host:pid" of the worker process that runs the job, so a lost job can be told apart
    # from a slow one: a process that no longer exists on this machine is certainly gone.
    worker = models.CharField(max_length=300, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        target = self.vm or self.group or self.host or self.datastore
        return f"#{self.pk} {self.get_kind_display()}" + (f" of {target}" if target else "")

    def get_absolute_url(self) -> str:
        if self.kind == JobKind.RECOVERY:
            # Recoveries have their own status page with per-item results.
            return reverse("recovery:status", args=[self.pk])
        return reverse("protection:job-detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def percent(self) -> int:
        if self.state == JobState.SUCCEEDED:
            return 100
        if self.bytes_total <= 0:
            return 0
        return min(100, int(self.bytes_done * 100 / self.bytes_total))

    @property
    def eta(self) -> timedelta | None:
        if self.is_finished or self.rate_bytes_per_second <= 0 or self.bytes_total <= 0:
            return None
        remaining = max(0, self.bytes_total - self.bytes_done)
        return timedelta(seconds=round(remaining / self.rate_bytes_per_second))

    def is_stale(self, now: Any = None) -> bool:
        return self.silent_for(now) > STALE_AFTER

    def silent_for(self, now: Any = None) -> timedelta:
        last_sign_of_life = self.heartbeat or self.started or self.created
        return max(timedelta(0), (now or timezone.now()) - last_sign_of_life)

    def lost_cause(self, now: Any = None) -> str:
        """Why this running job is lost with its worker, or "" while it may still finish."""
        if self.state != JobState.RUNNING:
            return ""
        silent = self.silent_for(now)
        alive = worker_alive(self.worker)
        if alive is False:
            return (
                f"The worker process running this job ({self.worker}) is gone: it was killed or "
                "crashed, or the worker cluster was restarted."
            )
        if silent <= STALE_AFTER:
            return ""
        if alive is None:  # another machine, or not recorded: silence is all we know
            return (
                f"The worker running this job ({self.worker or 'unknown'}) sent no heartbeat for "
                f"{int(silent.total_seconds())} s: its process or machine was lost, or it cannot "
                "reach the database."
            )
        if silent > STUCK_AFTER:
            return (
                f"The worker process running this job ({self.worker}) is alive but made no progress "
                f"and sent no heartbeat for {int(silent.total_seconds() // 60)} min: it is stuck."
            )
        return ""  # alive here and silent for a while: cut off from the database, or busy

    @classmethod
    def submit(cls, kind: str, *, requested_by: Any = None, **fields: Any) -> Job:
        """Create a queued job and hand it to the workers once the transaction commits."""
        if requested_by is not None and not getattr(requested_by, "is_authenticated", False):
            requested_by = None
        job = cls.objects.create(kind=kind, requested_by=requested_by, **fields)
        transaction.on_commit(job.enqueue)
        return job

    def enqueue(self) -> None:
        async_task(RUN_JOB_TASK, self.pk, task_name=f"job-{self.pk}")

    def request_cancel(self) -> bool:
        """Cancel a queued job at once; ask a running one to stop at its next check."""
        now = timezone.now()
        if Job.objects.filter(pk=self.pk, state=JobState.QUEUED).update(
            state=JobState.CANCELLED,
            cancel_requested=True,
            finished=now,
            message="Cancelled before it started",
        ):
            self.refresh_from_db()
            return True
        updated = Job.objects.filter(pk=self.pk, state=JobState.RUNNING).update(cancel_requested=True)
        self.refresh_from_db()
        return bool(updated)


class VMLock(models.Model):
    """Held by the one job allowed to work on a VM; the unique VM column is the lock."""

    vm = models.OneToOneField("protection.VirtualMachine", on_delete=models.CASCADE, related_name="lock")
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="vm_lock")
    acquired = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.vm} locked by job #{self.job_id}"

    @classmethod
    def acquire(cls, vm_id: int, job: Job) -> Job | None:
        """Take the VM's lock for ``job``. Returns the job holding it when it is taken.

        A lock whose job is no longer running (a worker that died) is taken over:
        otherwise one crash would block the VM forever.
        """
        for _attempt in range(3):
            try:
                with transaction.atomic():
                    cls.objects.create(vm_id=vm_id, job=job)
                return None
            except IntegrityError:
                holder = cls.objects.select_related("job").filter(vm_id=vm_id).first()
                if holder is None:
                    continue  # released in between: try again
                if holder.job_id == job.pk:
                    return None
                if holder.job.state == JobState.RUNNING and not holder.job.is_stale():
                    return holder.job
                cls.objects.filter(pk=holder.pk, job_id=holder.job_id).delete()
        holder = cls.objects.select_related("job").filter(vm_id=vm_id).first()
        return holder.job if holder else None

    @classmethod
    def release(cls, job: Job) -> None:
        cls.objects.filter(job=job).delete()
