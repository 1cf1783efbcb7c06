"""The database goes away in the middle of a backup, for real, and comes back.

The worker cluster reaches PostgreSQL through a TCP proxy that the test cuts: every
connection of the workers is dropped and new ones are refused for 10-25 s, at a random
moment of the read. Each time the job fails with that cause (not "worker lost"), the
replica is marked inconsistent with an alert once the database is back, nothing
half-written is offered, and the next consistency check succeeds; every committed point
restores byte for byte.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.config import HOST_FILE, write_json_atomic
from protection.models import Alert, AlertKind, RecoveryPoint, ReplicaState
from tests.browser.workers import WorkerCluster, queue_jobs_for_real
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.dbproxy import DatabaseProxy
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, running_cluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MiB = 1024 * 1024
OUTAGES = repetitions(2, 6)


@pytest.fixture
def proxy() -> Iterator[DatabaseProxy]:
    database = settings.DATABASES["default"]
    running = DatabaseProxy(database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cluster(
    transactional_db: None,
    proxy: DatabaseProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[WorkerCluster]:
    queue_jobs_for_real(monkeypatch)
    through_proxy = {**settings.DATABASES["default"], "HOST": "127.0.0.1", "PORT": str(proxy.port)}
    try:
        with running_cluster(request, tmp_path / "qcluster.log", through_proxy) as started:
            yield started
    finally:
        proxy.restore()


def test_database_outage_mid_backup(
    protected_lab: ProtectedLab, proxy: DatabaseProxy, cluster: WorkerCluster, tmp_path: Path
) -> None:
    lab = protected_lab
    vm = lab.windows
    data = json.loads((lab.folder / HOST_FILE).read_text())
    write_json_atomic(lab.folder / HOST_FILE, {**data, "read_bytes_per_second": 4 * MiB})
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "database-outage"))
    committed: dict[str, bytes] = {}
    lengths: list[int] = []

    for attempt in range(OUTAGES):
        kind = JobKind.INITIAL_REPLICA if attempt == 0 else JobKind.CONSISTENCY_CHECK
        expected = lab.disk(vm).read_bytes()
        before = set(RecoveryPoint.objects.values_list("point_id", flat=True))
        job = Job.submit(kind, vm=vm, group=lab.group)
        fraction = rng.uniform(0.1, 0.6)

        def reading(job: Job = job, fraction: float = fraction) -> bool:
            job.refresh_from_db()
            assert not job.is_finished, f"finished before the outage: {job.state} {job.error}"
            return (
                job.state == JobState.RUNNING
                and job.bytes_total > 0
                and (job.bytes_done >= fraction * job.bytes_total)
            )

        wait_for(reading, 60, f"job #{job.pk} to be {fraction:.0%} through")
        outage = rng.randint(10, 25)
        lengths.append(outage)
        proxy.cut()
        time.sleep(outage)
        proxy.restore()

        job = finished(job, timeout=180)
        assert job.state == JobState.FAILED, job.result
        assert "The database could not be reached" in job.error, job.error
        assert "worker lost" not in job.message
        alerts = Alert.objects.active().filter(kind=AlertKind.BACKUP_FAILED, vm=vm)
        wait_for(alerts.exists, 30, "the backup-failed alert")
        assert lab.source(vm).replica_state == ReplicaState.INCONSISTENT
        assert set(RecoveryPoint.objects.values_list("point_id", flat=True)) == before
        assert {p.id for p in lab.datastore.open_engine().points(vm.hyperv_id)} == before

        check = finished(Job.submit(JobKind.CONSISTENCY_CHECK, vm=vm, group=lab.group), timeout=180)
        assert check.state == JobState.SUCCEEDED, check.error
        assert lab.source(vm).replica_state == ReplicaState.OK
        assert not alerts.exists()
        committed[check.result["recovery_point"]] = expected

    assert lab.datastore.open_engine().verify().ok
    for point_id, content in committed.items():
        expected_disk = tmp_path / "expected" / lab.disk(vm).name
        expected_disk.parent.mkdir(exist_ok=True)
        expected_disk.write_bytes(content)
        restore_and_compare(lab.datastore, point_id, expected_disk, tmp_path / f"restore-{point_id}")

    record(
        FaultRow(
            fault="Database unreachable (connections dropped, new ones refused)",
            during=(
                f"initial replica, then a consistency check; {min(lengths)}-{max(lengths)} s, "
                "at 10-60 % of the read"
            ),
            injected=OUTAGES,
            happened=(
                "job failed with 'The database could not be reached ...' once the database was back (its "
                "outcome write waits for it); replica marked inconsistent; no point committed; "
                "the next consistency check succeeded"
            ),
            user_saw=(
                "job failed with the database cause (not 'worker lost'); alert 'Backup failed' until checked"
            ),
            nothing_lost=(
                f"{len(committed)} committed points restored, cmp + qemu-img compare identical; verify clean"
            ),
        )
    )
