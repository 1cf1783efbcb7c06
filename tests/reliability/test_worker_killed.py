"""SIGKILL of the worker process in the middle of a backup, at random moments.

A real django-q2 cluster runs the jobs; the lab host is read at a fixed pace so that a
backup can be caught part way. Each time: the job fails with the real cause within a
minute (found by the cluster's own reaper schedule), the replica is marked inconsistent
and an alert raised, nothing half-written is offered as a recovery point, the host is
left without a checkpoint, every committed point still restores byte for byte, and the
next run (a consistency check) succeeds and clears the alert.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.config import HOST_FILE, write_json_atomic
from protection.connectors.lab.guest import LOCK_FILE, churn
from protection.models import Alert, AlertKind, RecoveryPoint, ReplicaState, VirtualMachine
from tests.browser.workers import WorkerCluster, queue_jobs_for_real, start_cluster
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, running_cluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MiB = 1024 * 1024
KILLS = repetitions(3, 12)
READ_RATE = 12 * MiB  # bytes/s: a backup of the lab VM takes a few seconds


@pytest.fixture
def cluster(
    transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[WorkerCluster]:
    queue_jobs_for_real(monkeypatch)
    # The reaper as bootstrap schedules it: the cluster itself must find lost jobs.
    Schedule.objects.create(
        name="reap-stale-jobs",
        func="backupsite.core.jobs.reaper.reap_stale_jobs",
        schedule_type=Schedule.MINUTES,
        minutes=1,
        repeats=-1,
        next_run=timezone.now(),
    )
    with running_cluster(request, tmp_path / "qcluster.log") as started:
        yield started


def slow_host(lab: ProtectedLab) -> None:
    import json

    data = json.loads((lab.folder / HOST_FILE).read_text())
    write_json_atomic(lab.folder / HOST_FILE, {**data, "read_bytes_per_second": READ_RATE})


def checkpoint_held(lab: ProtectedLab, vm: VirtualMachine | None = None) -> bool:
    """Does anything still hold the VM's backup lock (the lab's recovery checkpoint)?"""
    vm_folder = lab.disk(vm or lab.windows).parent.parent
    lock = vm_folder / LOCK_FILE
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_worker_killed_mid_backup(
    protected_lab: ProtectedLab, cluster: WorkerCluster, tmp_path: Path
) -> None:
    lab = protected_lab
    vm = lab.windows
    slow_host(lab)
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "worker-kill"))

    committed: dict[str, bytes] = {}
    detection: list[float] = []
    kinds: list[str] = []

    for attempt in range(KILLS):
        # The first kill lands in the initial replica (the replica is "creating"); the
        # others in consistency checks, which read the whole disk like it.
        kind = JobKind.INITIAL_REPLICA if attempt == 0 else JobKind.CONSISTENCY_CHECK
        kinds.append(kind)
        if attempt:
            churn(lab.connector.vm_config(vm.hyperv_id), 2.0, seed=attempt)
        expected_now = lab.disk(vm).read_bytes()
        points_before = set(RecoveryPoint.objects.values_list("point_id", flat=True))
        job = Job.submit(kind, vm=vm, group=lab.group)
        fraction = rng.uniform(0.1, 0.7)  # a random moment of the read

        def reading(job: Job = job, fraction: float = fraction) -> bool:
            job.refresh_from_db()
            assert not job.is_finished, f"finished before the kill: {job.state} {job.error}"
            return (
                job.state == JobState.RUNNING
                and job.bytes_total > 0
                and (job.bytes_done >= fraction * job.bytes_total)
            )

        wait_for(reading, 60, f"job #{job.pk} to be {fraction:.0%} through")
        worker_pid = int(job.worker.rpartition(":")[2])
        os.kill(worker_pid, signal.SIGKILL)
        killed_at = time.monotonic()

        job = finished(job, timeout=150)
        detection.append(time.monotonic() - killed_at)
        assert job.state == JobState.FAILED
        assert f"({job.worker}) is gone: it was killed or crashed" in job.error
        assert job.message == "Failed: worker lost"
        # The reaper fails the job first, then tells protection: give it a moment.
        alerts = Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm)
        alert = wait_for(alerts.first, 10, "the backup-failed alert")
        source = lab.source(vm)
        assert source.replica_state == ReplicaState.INCONSISTENT
        assert "was interrupted" in source.inconsistency_reason
        assert alert.job_id == job.pk
        # Nothing half-written is offered; the host holds no checkpoint any more.
        assert set(RecoveryPoint.objects.values_list("point_id", flat=True)) == points_before
        assert {p.id for p in lab.datastore.open_engine().points(vm.hyperv_id)} == points_before
        assert not checkpoint_held(lab)

        # The next run repairs the replica and clears the alert.
        check = finished(Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group))
        assert check.state == JobState.SUCCEEDED, check.error
        assert lab.source(vm).replica_state == ReplicaState.OK
        assert not Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists()
        committed[check.result["recovery_point"]] = expected_now

    # Every committed point restores what it was taken from; the datastore verifies clean.
    for point_id, expected in committed.items():
        live = tmp_path / "expected.vhdx"
        live.write_bytes(expected)
        restored = tmp_path / f"restore-{point_id}"
        target_disk = live.with_name(lab.disk(vm).name)
        live.rename(target_disk)
        restore_and_compare(lab.datastore, point_id, target_disk, restored)
        target_disk.unlink()
    report = lab.datastore.open_engine().verify()
    assert not report.bad_chunks and not report.missing_chunks

    assert max(detection) < 60
    record(
        FaultRow(
            fault="SIGKILL of the worker process",
            during="initial replica, then consistency checks; at 10-70% of the read",
            injected=KILLS,
            happened=(
                f"job failed by the cluster's reaper {min(detection):.0f}-{max(detection):.0f} s "
                "after the kill "
                "(worker process gone); replica marked inconsistent; no point committed; no checkpoint left; "
                "the next consistency check succeeded"
            ),
            user_saw=(
                "job: 'Failed: worker lost' with the cause; alert 'Backup failed' until the check succeeded"
            ),
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )


def test_whole_cluster_killed_mid_initial_replica_and_restarted(
    protected_lab: ProtectedLab, cluster: WorkerCluster, tmp_path: Path
) -> None:
    """The issue as first seen: the whole worker cluster (sentinel, scheduler, workers) killed
    while an initial replica runs. What `manage.py serve` does next is start a new cluster
    (tests/test_serve.py shows it does); that cluster's own reaper must fail the job within a
    minute, and the replica must not stay "creating"."""
    lab = protected_lab
    vm = lab.linux
    slow_host(lab)
    job = Job.submit(JobKind.INITIAL_REPLICA, vm=vm, group=lab.group)

    def reading() -> bool:
        job.refresh_from_db()
        return (
            job.state == JobState.RUNNING and job.bytes_total > 0 and job.bytes_done >= 0.3 * job.bytes_total
        )

    wait_for(reading, 60, "the initial replica to be 30% through")
    assert lab.source(vm).replica_state == ReplicaState.CREATING
    os.killpg(cluster.pid, signal.SIGKILL)  # everything: no reaper runs until a cluster is back
    cluster.process.wait()
    killed_at = time.monotonic()
    replacement = start_cluster(settings.DATABASES["default"], tmp_path / "qcluster-2.log")
    try:
        replacement.wait_ready()
        job = finished(job, timeout=90)
        found_after = time.monotonic() - killed_at
        assert job.state == JobState.FAILED and "is gone" in job.error
        assert found_after < 60, found_after
        wait_for(Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm).exists, 10, "the alert")
        assert lab.source(vm).replica_state == ReplicaState.INCONSISTENT
        assert not RecoveryPoint.objects.filter(vm=vm).exists()
        assert not checkpoint_held(lab, vm)
        check = finished(Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group))
        assert check.state == JobState.SUCCEEDED, check.error
        restore_and_compare(
            lab.datastore, check.result["recovery_point"], lab.disk(vm), tmp_path / "restored"
        )
    finally:
        replacement.stop()
        if replacement.process.returncode not in (0, -15, -9, None):
            print(replacement.output())
    record(
        FaultRow(
            fault="SIGKILL of the whole worker cluster (sentinel, scheduler, workers), then restarted",
            during="initial replica, at 30 % of the read",
            injected=1,
            happened=(
                f"the restarted cluster's reaper failed the job {found_after:.0f} s after the kill (worker "
                "process gone); replica 'creating' became inconsistent; no point; no checkpoint left; "
                "the consistency check then created the replica"
            ),
            user_saw="job 'Failed: worker lost' with the cause; alert 'Backup failed' until the check passed",
            nothing_lost="the new replica restored, cmp + qemu-img compare identical",
        )
    )
