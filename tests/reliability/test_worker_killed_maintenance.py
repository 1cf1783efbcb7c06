"""SIGKILL of the worker during datastore verification and garbage collection.

A real django-q2 cluster runs the jobs on a datastore of a few hundred chunks (small
chunks, so verify and GC take a moment); the worker is killed at a random instant after
the job starts. Wherever the kill lands (some land after the job finished: that is
counted, not hidden), no committed point is damaged or lost: a new verify passes and
every point restores byte for byte. GC removed only unreferenced chunks.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.utils import timezone

from backupsite.core.jobs.reaper import reap_stale_jobs
from backupsite.core.models import Job, JobKind, JobState
from backupsite.core.models.jobs import worker_alive
from protection.models import RecoveryPoint
from storage.engine import SourceFile
from storage.models import Datastore
from tests.browser.workers import WorkerCluster
from tests.factories import make_vm
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MiB = 1024 * 1024
KILLS = repetitions(3, 15)  # per job kind


def kill_at_random(job: Job, rng: random.Random) -> bool:
    """Kill the job's worker a random moment after it started; True when it was still running."""
    wait_for(lambda: Job.objects.filter(pk=job.pk).exclude(state=JobState.QUEUED).exists(), 60, "the start")
    time.sleep(rng.uniform(0.0, 0.15))
    job.refresh_from_db()
    if job.state != JobState.RUNNING:
        return False
    os.kill(int(job.worker.rpartition(":")[2]), signal.SIGKILL)
    wait_for(lambda: worker_alive(job.worker) is False, 10, "the worker to die")
    reap_stale_jobs()  # what the cluster's minute schedule does (test_worker_killed.py)
    job = finished(job, timeout=30)
    assert job.state in (JobState.FAILED, JobState.SUCCEEDED)
    if job.state == JobState.FAILED:
        assert "is gone: it was killed or crashed" in job.error
    return job.state == JobState.FAILED


def test_worker_killed_during_verify_and_gc(cluster: WorkerCluster, tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "maintenance-kill"))
    datastore = Datastore.objects.create_with_store(
        "main", str(tmp_path / "datastore"), chunk_size=256 * 1024
    )
    engine = datastore.open_engine()
    sources: dict[str, Path] = {}
    for number in range(8):
        source = tmp_path / f"disk{number}.bin"
        source.write_bytes(rng.randbytes(32 * MiB))
        point = engine.backup(f"vm-{number}", [SourceFile("disk.bin", str(source))], vm_name=f"vm{number}")
        vm = make_vm(f"vm{number}")
        RecoveryPoint.objects.create(
            point_id=point.id, datastore=datastore, vm=vm, created=timezone.now(), kind="recovery_point",
            consistency="crash", size_bytes=point.total_bytes,
        )  # fmt: skip
        sources[point.id] = source
    landed = {JobKind.VERIFY: 0, JobKind.GARBAGE_COLLECTION: 0}

    for attempt in range(KILLS):
        job = Job.submit(JobKind.VERIFY, datastore=datastore)
        landed[JobKind.VERIFY] += kill_at_random(job, rng)
        # Garbage to collect: drop one point (catalog and store), as retention does.
        if len(sources) > 3:
            gone = sorted(sources)[attempt % len(sources)]
            engine.delete_point(gone)
            RecoveryPoint.objects.filter(point_id=gone).update(deleted_at=timezone.now())
            del sources[gone]
        job = Job.submit(JobKind.GARBAGE_COLLECTION, datastore=datastore, parameters={"grace_seconds": 0})
        landed[JobKind.GARBAGE_COLLECTION] += kill_at_random(job, rng)

    # Nothing committed was harmed: a full verify and GC run to the end, then every point restores.
    check = finished(Job.submit(JobKind.VERIFY, datastore=datastore))
    assert check.state == JobState.SUCCEEDED, check.error
    assert check.result["bad_chunks"] == 0 and check.result["missing_chunks"] == 0
    assert check.result["damaged_points"] == []
    collect = finished(
        Job.submit(JobKind.GARBAGE_COLLECTION, datastore=datastore, parameters={"grace_seconds": 0})
    )
    assert collect.state == JobState.SUCCEEDED, collect.error
    for point_id, source in sources.items():
        target = tmp_path / f"restore-{point_id}"
        datastore.open_engine().restore(point_id, target)
        subprocess.run(["cmp", str(source), str(target / "disk.bin")], check=True)
    assert datastore.open_engine().verify().ok

    record(
        FaultRow(
            fault="SIGKILL of the worker process",
            during="datastore verify and garbage collection (0-0.15 s after the start)",
            injected=2 * KILLS,
            happened=(
                f"{landed[JobKind.VERIFY]} verify and {landed[JobKind.GARBAGE_COLLECTION]} GC kills landed "
                "while the job ran (the others after it finished): those jobs failed as lost (worker gone); "
                "the next verify and GC succeeded"
            ),
            user_saw="job 'Failed: worker lost' with the cause",
            nothing_lost=f"{len(sources)} points restored, cmp identical; verify clean",
        )
    )
