"""Everything at once on two cores: 20 initial replicas, a recovery, GC and verify.

A real django-q2 cluster of two workers takes 23 jobs submitted together. Garbage
collection runs with no grace period, so it is only safe because of the engine's
in-progress markers and parent pins; the recovery reads a point of the same
datastore while backups write to it. Afterwards: every job finished in a bounded
time, each ran exactly once (one claim, one point per VM, catalog == engine), GC
removed only chunks nothing references (verify finds nothing missing), and every
VM's point and the recovered VM are byte-identical to what they were taken from.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from django_q.models import Task

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import FINISHED_STATES, Job, JobKind, JobState
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import create_lab_host, write_host_json
from protection.models import (
    Alert,
    ConnectionKind,
    Host,
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    ReplicaState,
    VirtualMachine,
)
from protection.services.inventory import sync_host_inventory
from storage.models import Datastore
from tests.browser.workers import WorkerCluster
from tests.reliability.report import FaultRow, record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MiB = 1024 * 1024
BACKUPS = 20
ALL_DONE_WITHIN = 300.0  # seconds: far beyond the ~1 minute it takes, far below "stuck"


@pytest.fixture(scope="session")
def crowded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 VMs with 64 MiB disks, built once (about 30 s); each test copies it sparsely."""
    folder = tmp_path_factory.mktemp("crowded-template") / "LAB-HV20"
    create_lab_host(folder, "LAB-HV20", BACKUPS + 1, 64 * MiB, seed="concurrency")
    return folder


def run_inline(kind: str, vm: VirtualMachine, group: ProtectionGroup) -> Job:
    """Set-up jobs, before the crowd: run in this process, like the scheduler's would."""
    job = Job.objects.create(kind=kind, vm=vm, group=group)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    return job


def same_disk(left: Path, right: Path) -> None:
    subprocess.run(["cmp", str(left), str(right)], check=True)


def runs_of(jobs: list[Job]) -> Counter[int]:
    """How many django-q2 tasks really ran each job (a task that found its job already
    claimed returns "not queued" and did nothing)."""
    ids = {job.pk for job in jobs}
    counts: Counter[int] = Counter()
    for task in Task.objects.all():
        args = task.args or ()
        if args and args[0] in ids and task.result != "not queued":
            counts[args[0]] += 1
    return counts


def test_twenty_backups_a_recovery_gc_and_verify_at_once(
    crowded_template: Path, cluster: WorkerCluster, tmp_path: Path
) -> None:
    folder = tmp_path / "LAB-HV20"
    subprocess.run(["cp", "-a", "--sparse=always", str(crowded_template), str(folder)], check=True)
    host = Host.objects.create(name="LAB-HV20", connection_kind=ConnectionKind.LAB, address=str(folder))
    machines = sorted(sync_host_inventory(host), key=lambda vm: vm.name)
    assert len(machines) == BACKUPS + 1
    datastore = Datastore.objects.create_with_store("crowd", str(tmp_path / "datastore"))
    group = ProtectionGroup.objects.create(
        name="Crowd",
        datastore=datastore,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[0],
    )
    for vm in machines:
        ProtectedDataSource.objects.create(group=group, vm=vm, replica_state=ReplicaState.PENDING)
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "concurrency"))

    # One VM is already protected: a point for the recovery to read, and an older point
    # deleted by retention whose own chunks are garbage for the GC to collect.
    recovered_vm = machines[-1]
    crowd = machines[:-1]
    old = run_inline(JobKind.INITIAL_REPLICA, recovered_vm, group)
    churn(LabConnector(folder).vm_config(recovered_vm.hyperv_id), 40.0, seed=7)
    kept = run_inline(JobKind.CONSISTENCY_CHECK, recovered_vm, group)
    engine = datastore.open_engine()
    engine.delete_point(old.result["recovery_point"])
    RecoveryPoint.objects.filter(point_id=old.result["recovery_point"]).update(deleted_at=kept.finished)
    kept_point = RecoveryPoint.objects.get(point_id=kept.result["recovery_point"])
    recovered_disk = Path(recovered_vm.disks.get().path)
    expected_recovered = tmp_path / "expected-recovered.vhdx"
    subprocess.run(["cp", "--sparse=always", str(recovered_disk), str(expected_recovered)], check=True)
    target_host = Host.objects.create(
        name="LAB-HV02",
        connection_kind=ConnectionKind.LAB,
        address=str(write_host_json(tmp_path / "LAB-HV02", "LAB-HV02")),
    )
    sync_host_inventory(target_host)
    time.sleep(2.5)  # the garbage chunks are older than GC's clock margin
    expected = {vm.pk: Path(vm.disks.get().path) for vm in crowd}

    # The crowd, in a random order, with the three other jobs somewhere among the backups.
    order: list[object] = list(crowd)
    for other in ("recovery", "gc", "verify"):
        order.insert(rng.randint(1, len(order) - 1), other)
    backups: dict[int, Job] = {}
    began = time.monotonic()
    for entry in order:
        if isinstance(entry, VirtualMachine):
            backups[entry.pk] = Job.submit(JobKind.INITIAL_REPLICA, vm=entry, group=group)
        elif entry == "recovery":
            recovery = Job.submit(
                JobKind.RECOVERY,
                vm=recovered_vm,
                host_id=target_host.pk,
                datastore=datastore,
                parameters={
                    "point": kept_point.pk,
                    "point_id": kept_point.point_id,
                    "type": "alternate",
                    "options": {},
                    "target": {"host": target_host.pk, "path": "Restored/CROWD"},
                },
            )
        elif entry == "gc":
            gc = Job.submit(JobKind.GARBAGE_COLLECTION, datastore=datastore, parameters={"grace_seconds": 0})
        else:
            verify = Job.submit(JobKind.VERIFY, datastore=datastore)
    everything = [*backups.values(), recovery, gc, verify]

    # Every job finishes, none is left running or queued: no deadlock, bounded wait.
    deadline = began + ALL_DONE_WITHIN
    while True:
        cluster.check_alive()
        states = dict(Job.objects.filter(pk__in=[j.pk for j in everything]).values_list("pk", "state"))
        if all(state in FINISHED_STATES for state in states.values()):
            break
        assert time.monotonic() < deadline, (
            f"not finished after {ALL_DONE_WITHIN:.0f} s: {Counter(states.values())}"
        )
        time.sleep(0.25)
    took = time.monotonic() - began
    for job in everything:
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, (job.kind, job.error, job.traceback)
        assert job.started is not None and job.worker
    # Exactly once: one task ran each job, and each backup made one point, the same in the
    # catalog and in the engine.
    assert runs_of(everything) == Counter({job.pk: 1 for job in everything})
    engine_points = Counter(point.vm_id for point in engine.points())
    for vm in crowd:
        job = backups[vm.pk]
        catalog = list(RecoveryPoint.objects.filter(vm=vm, deleted_at__isnull=True))
        assert [p.point_id for p in catalog] == [job.result["recovery_point"]], vm.name
        assert engine_points[vm.hyperv_id] == 1, vm.name
        assert ProtectedDataSource.objects.get(vm=vm).replica_state == ReplicaState.OK
    assert engine_points[recovered_vm.hyperv_id] == 1
    assert not list((Path(datastore.path) / "in-progress").glob("*.json"))
    assert not Alert.objects.active().exists(), list(Alert.objects.active().values_list("message", flat=True))
    # The recovery, GC and verify really ran while backups did.
    spans = [(b.started, b.finished) for b in backups.values() if b.started and b.finished]
    assert len(spans) == BACKUPS
    for job in (recovery, gc, verify):
        assert job.started and job.finished
        assert any(start < job.finished and job.started < end for start, end in spans), job.kind

    # GC collected the deleted point's chunks and nothing referenced: a full verify now
    # reads every chunk of every point.
    assert gc.result["chunks_removed"] > 0, gc.result
    assert verify.result["bad_chunks"] == 0 and verify.result["missing_chunks"] == 0, verify.result
    final = engine.verify()
    assert final.ok, final

    # Every VM's point restores byte for byte; a sample also through qemu-img compare.
    sample = set(rng.sample(sorted(expected), 3))
    for vm in crowd:
        target = tmp_path / f"restore-{vm.pk}"
        engine.restore(backups[vm.pk].result["recovery_point"], target)
        restored = next(target.rglob(expected[vm.pk].name))
        same_disk(restored, expected[vm.pk])
        if vm.pk in sample:
            subprocess.run(["qemu-img", "compare", "-q", str(restored), str(expected[vm.pk])], check=True)
        subprocess.run(["rm", "-rf", str(target)], check=True)
    # The recovered VM is the kept point's disk.
    recovered = Path(target_host.address) / "Restored" / "CROWD" / "Virtual Hard Disks" / recovered_disk.name
    same_disk(recovered, expected_recovered)
    subprocess.run(["qemu-img", "compare", "-q", str(recovered), str(expected_recovered)], check=True)

    total = sum(job.result["bytes_total"] for job in backups.values())
    row = FaultRow(
        fault="Concurrency: 20 initial replicas, a recovery, GC (no grace period) and verify at once",
        during=f"2 workers on {os.cpu_count()} cores; 20 VMs of 64 MiB, submitted in a random order",
        injected=1,
        happened=(
            f"all 23 jobs succeeded in {took:.0f} s ({total / MiB / took:.1f} MiB/s of virtual disk "
            f"backed up); each ran once (one task, one point per VM, catalog = engine); GC removed "
            f"{gc.result['chunks_removed']} unreferenced chunk(s) and nothing referenced"
        ),
        user_saw="23 succeeded jobs; no alerts",
        nothing_lost=(
            f"{len(crowd)} points restored, cmp identical ({len(sample)} also qemu-img compare); "
            "recovered VM's disk identical; verify clean during and after"
        ),
    )
    print(row)
    record(row)
