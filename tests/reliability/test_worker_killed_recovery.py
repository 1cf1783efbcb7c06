"""SIGKILL of the worker in the middle of an item-level recovery, at random moments.

A real django-q2 cluster copies files out of a recovery point, throttled so that the
copy takes seconds. Each time: the job fails with the real cause, a "recovery failed"
alert is raised, no file is presented under its real name unless it is complete, the
copy's temporary files are removed, and the next recovery of the same items succeeds
byte for byte (checked against ntfscat, an independent NTFS reader).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from backupsite.core.jobs.reaper import reap_stale_jobs
from backupsite.core.models import Job, JobKind, JobState
from backupsite.core.models.jobs import worker_alive
from protection.models import Alert, AlertKind
from recovery.itemlevel.writer import TMP_PREFIX
from recovery.services.browse import ItemRef, volumes
from tests.browser.workers import WorkerCluster, queue_jobs_for_real
from tests.recovery_web.conftest import (  # noqa: F401 - fixtures
    BackedUpLab,
    backed_up_lab,
    engine_restore,
    extract_partition,
    lab_template,
    ntfscat,
    protected_lab,
)
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, running_cluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
KILLS = repetitions(2, 10)
FILES = ["/notes.txt", "/report.docx", "/ledger.csv", "/database.mdf"]


@pytest.fixture
def restore_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "restores"
    root.mkdir()
    settings.RECOVERY_ROOTS = [str(root)]
    monkeypatch.setenv("BACKUPSITE_RECOVERY_ROOTS", str(root))  # for the cluster's processes
    return root


@pytest.fixture
def cluster(
    transactional_db: None,
    restore_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[WorkerCluster]:
    queue_jobs_for_real(monkeypatch)
    with running_cluster(request, tmp_path / "qcluster.log") as started:
        yield started


def item_recovery(lab: BackedUpLab, folder: Path, items: list[ItemRef]) -> Job:
    return Job.submit(
        JobKind.RECOVERY,
        vm=lab.windows,
        parameters={
            "point": lab.windows_point.pk,
            "type": "items",
            "items": [item.as_dict() for item in items],
            "destination": {"kind": "server", "folder": str(folder)},
            # About 1 MB/s: the 2 MiB database file alone takes two seconds.
            "options": {"throttle": "rate", "rate_mbps": 8},
            "destination_text": str(folder),
        },
    )


def test_worker_killed_mid_item_recovery(
    backed_up_lab: BackedUpLab,  # noqa: F811
    cluster: WorkerCluster,
    restore_root: Path,
    tmp_path: Path,
) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    found, _ = volumes(lab.windows_point, disk)
    ntfs = next(v for v in found if v.filesystem_name == "NTFS")
    items = [ItemRef("file", disk, ntfs.index, path) for path in FILES]
    # The reference: each file as an independent reader sees it in the point's disk.
    restored_disk = engine_restore(lab.windows_point, tmp_path / "reference") / disk
    partition = extract_partition(restored_disk, ntfs.offset, ntfs.size, tmp_path)
    expected = {path: ntfscat(partition, path) for path in FILES}
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "recovery-kill"))
    detection: list[float] = []

    for attempt in range(KILLS):
        folder = restore_root / f"attempt-{attempt}"
        job = item_recovery(lab, folder, items)
        fraction = rng.uniform(0.15, 0.7)

        def copying(job: Job = job, fraction: float = fraction) -> bool:
            job.refresh_from_db()
            assert not job.is_finished, f"finished before the kill: {job.state} {job.error}"
            return (
                job.state == JobState.RUNNING
                and job.bytes_total > 0
                and (job.bytes_done >= fraction * job.bytes_total)
            )

        wait_for(copying, 60, f"recovery #{job.pk} to be {fraction:.0%} through")
        job.refresh_from_db()
        os.kill(int(job.worker.rpartition(":")[2]), signal.SIGKILL)
        killed_at = time.monotonic()

        def gone(worker: str = job.worker) -> bool:
            return worker_alive(worker) is False

        wait_for(gone, 10, "the process to die")
        # The reaper, as the cluster runs it every minute (test_worker_killed.py proves the
        # schedule finds lost jobs by itself); called here to keep this test short.
        assert reap_stale_jobs() == 1
        job = finished(job, timeout=30)
        detection.append(time.monotonic() - killed_at)
        assert job.state == JobState.FAILED and "is gone: it was killed or crashed" in job.error
        alert = Alert.objects.active().get(kind=AlertKind.RECOVERY_FAILED, vm=lab.windows)
        assert "was interrupted" in alert.message and alert.job_id == job.pk
        # What is there under a real name is complete; nothing unfinished is left behind.
        present = {path.name: path for path in folder.rglob("*") if path.is_file()} if folder.exists() else {}
        assert not [name for name in present if name.startswith(TMP_PREFIX)]
        for name, path in present.items():
            assert path.read_bytes() == expected[f"/{name}"], f"{name} is not complete"
        assert len(present) < len(FILES)  # the kill landed before the end

        again = finished(item_recovery(lab, restore_root / f"again-{attempt}", items))
        assert again.state == JobState.SUCCEEDED, again.error
        for guest_path in FILES:
            copied = restore_root / f"again-{attempt}" / guest_path.lstrip("/")
            assert copied.read_bytes() == expected[guest_path]
        assert not Alert.objects.active().filter(kind=AlertKind.RECOVERY_FAILED, vm=lab.windows).exists()

    record(
        FaultRow(
            fault="SIGKILL of the worker process",
            during="item-level recovery to a folder (throttled copy), at 15-70 % of the bytes",
            injected=KILLS,
            happened=(
                "job failed by the reaper (worker process gone); the copy's temporary files removed; "
                "the files already renamed into place were complete; the next recovery succeeded"
            ),
            user_saw=(
                "recovery status 'Failed: worker lost' with the cause; alert 'Recovery failed' until success"
            ),
            nothing_lost="every file of the next recovery equal to ntfscat's reading of the point",
        )
    )
