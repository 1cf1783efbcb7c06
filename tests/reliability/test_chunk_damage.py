"""Chunks of committed points deleted or corrupted on the datastore, at random.

Each round one chunk referenced by a VM's newest point is deleted and another one
corrupted (a flipped byte), chosen at random. The verify job then marks exactly the
points that reference them damaged and raises the datastore-damage alert; every other
point still restores byte for byte. The next consistency check of the VM reads its disk
again and stores the lost chunks anew, so its new point restores byte for byte, a second
verify is clean and resolves the alert, and the points that were damaged are whole again.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.guest import churn
from protection.models import Alert, AlertKind, RecoveryPoint, VirtualMachine
from storage.engine import Datastore as EngineDatastore
from storage.engine.chunks import ZERO_DIGEST
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record, repetitions

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
ROUNDS = repetitions(3, 12)


def run(kind: str, lab: ProtectedLab, vm: VirtualMachine | None = None) -> Job:
    job = Job.objects.create(kind=kind, vm=vm, group=lab.group if vm else None)
    if vm is None:
        Job.objects.filter(pk=job.pk).update(datastore=lab.datastore)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def references(engine: EngineDatastore) -> dict[bytes, set[str]]:
    """Every stored chunk digest and the committed points whose files use it."""
    used: dict[bytes, set[str]] = {}
    for point in engine.points():
        for item in point.files:
            with engine.open_file(point.id, item.name) as reader:
                for index in range(item.chunks):
                    digest = reader.digest_at(index)
                    if digest != ZERO_DIGEST:
                        used.setdefault(digest, set()).add(point.id)
    return used


def test_chunks_deleted_and_corrupted_are_found_and_stored_again(
    protected_lab: ProtectedLab, tmp_path: Path
) -> None:
    lab = protected_lab
    machines = [lab.windows, lab.linux]
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "chunk-damage"))
    engine = lab.datastore.open_engine()
    contents: dict[str, tuple[VirtualMachine, bytes]] = {}  # point id -> what it was taken from

    def back_up(kind: str, vm: VirtualMachine) -> str:
        content = lab.disk(vm).read_bytes()
        job = run(kind, lab, vm)
        assert job.state == JobState.SUCCEEDED, job.traceback
        contents[job.result["recovery_point"]] = (vm, content)
        return str(job.result["recovery_point"])

    def restores(point_id: str) -> None:
        vm, content = contents[point_id]
        expected = tmp_path / "expected" / lab.disk(vm).name
        expected.parent.mkdir(exist_ok=True)
        expected.write_bytes(content)
        restore_and_compare(lab.datastore, point_id, expected, tmp_path / f"restore-{point_id}")

    for vm in machines:
        back_up(JobKind.INITIAL_REPLICA, vm)
    damaged_total = 0

    for attempt in range(ROUNDS):
        # New data on one VM, so every round has older and newer points to lose.
        victim = rng.choice(machines)
        churn(lab.connector.vm_config(victim.hyperv_id), 10.0, seed=300 + attempt)
        newest = back_up(JobKind.CONSISTENCY_CHECK, victim)

        # The newest point's chunks are what the disk holds now: a backup can store them again.
        used = references(engine)
        candidates = sorted(digest for digest, points in used.items() if newest in points)
        deleted, corrupted = rng.sample(candidates, 2)
        chunk_path = {digest: Path(engine.store.path(digest)) for digest in (deleted, corrupted)}
        chunk_path[deleted].unlink()
        data = bytearray(chunk_path[corrupted].read_bytes())
        data[rng.randrange(len(data))] ^= 0xFF
        chunk_path[corrupted].write_bytes(bytes(data))
        affected = used[deleted] | used[corrupted]

        # The scheduled verify finds both and marks exactly the points that use them.
        verify = run(JobKind.VERIFY, lab)
        assert verify.state == JobState.SUCCEEDED, verify.traceback
        assert verify.result["missing_chunks"] == 1 and verify.result["bad_chunks"] == 1, verify.result
        assert set(verify.result["damaged_points"]) == affected
        assert (
            set(
                RecoveryPoint.objects.filter(damaged=True, deleted_at__isnull=True).values_list(
                    "point_id", flat=True
                )
            )
            == affected
        )
        alert = Alert.objects.active().get(kind=AlertKind.DATASTORE_DAMAGED, datastore=lab.datastore)
        assert "2 damaged chunk(s)" in alert.message, alert.message
        assert all(RecoveryPoint.objects.get(point_id=p).unavailable_reason() for p in affected)
        damaged_total += len(affected)
        # Every other committed point is untouched.
        live = {point.id for point in engine.points()}
        for point_id in sorted(live - affected):
            restores(point_id)

        # The next backup of the VM stores the lost chunks again.
        repaired = back_up(JobKind.CONSISTENCY_CHECK, victim)
        assert run_result(repaired)["damaged_chunks"] == 2
        restores(repaired)
        second = run(JobKind.VERIFY, lab)
        assert second.result["missing_chunks"] == 0 and second.result["bad_chunks"] == 0, second.result
        assert second.result["damaged_points"] == []
        assert not Alert.objects.active().filter(kind=AlertKind.DATASTORE_DAMAGED).exists()
        # The chunks are back under their digests, so the points that lost them are whole again.
        assert not RecoveryPoint.objects.filter(damaged=True).exists()
        for point_id in sorted(affected & {point.id for point in engine.points()}):
            restores(point_id)

    assert engine.verify().ok
    record(
        FaultRow(
            fault="Chunk deleted, another corrupted (a flipped byte)",
            during="between backups, chunks of a VM's newest point chosen at random",
            injected=ROUNDS,
            happened=(
                f"verify job found the missing and the damaged chunk each time and marked exactly the "
                f"{damaged_total} affected points damaged; the next consistency check stored both chunks "
                "again; a second verify was clean and the affected points whole again"
            ),
            user_saw=(
                "verify job: '2 damaged chunk(s) affecting N recovery point(s)'; alert 'Datastore damage "
                "found' until the second verify; damaged points refused in recovery until then"
            ),
            nothing_lost=(
                f"{len(contents)} points restored (cmp + qemu-img compare) after each round, unaffected "
                "ones while the damage was there; verify clean at the end"
            ),
        )
    )


def run_result(point_id: str) -> dict[str, object]:
    job_id = RecoveryPoint.objects.get(point_id=point_id).metadata["job"]
    return Job.objects.get(pk=job_id).result  # type: ignore[no-any-return]
