"""A backup lost with its worker: the replica is marked inconsistent, an alert is raised, and
the scheduler queues a consistency check when the group's policy asks for one."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from django.utils import timezone

from backupsite.core.jobs.reaper import reap_stale_jobs
from backupsite.core.models import Job, JobKind, JobState
from protection.models import Alert, AlertKind, ProtectedDataSource, ProtectionGroup, ReplicaState
from protection.scheduler import due_jobs
from storage.models import Datastore
from tests.protection.helpers import protect, vm_with_disk

pytestmark = pytest.mark.django_db


def gone() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}"


@pytest.fixture
def group(tmp_path: Path) -> ProtectionGroup:
    datastore = Datastore.objects.create_with_store("main", str(tmp_path / "datastore"))
    return ProtectionGroup.objects.create(name="Gold", datastore=datastore)


def lost_job(kind: str, source: ProtectedDataSource) -> Job:
    job = Job.objects.create(
        kind=kind, vm=source.vm, group=source.group, state=JobState.RUNNING, started=timezone.now()
    )
    Job.objects.filter(pk=job.pk).update(worker=gone(), heartbeat=timezone.now())
    return job


@pytest.mark.parametrize("check_when_inconsistent", [True, False])
def test_an_initial_replica_lost_with_its_worker(
    group: ProtectionGroup, check_when_inconsistent: bool
) -> None:
    policy = {"consistency_check_if_inconsistent": check_when_inconsistent}
    ProtectionGroup.objects.filter(pk=group.pk).update(**policy)
    source = protect(vm_with_disk("sql01"), group, replica_state=ReplicaState.CREATING)
    job = lost_job(JobKind.INITIAL_REPLICA, source)

    assert reap_stale_jobs() == 1
    source.refresh_from_db()
    assert source.replica_state == ReplicaState.INCONSISTENT
    assert source.inconsistency_reason.startswith("Initial replica was interrupted: The worker process")
    alert = Alert.objects.get(kind=AlertKind.BACKUP_FAILED, vm=source.vm)
    assert alert.job_id == job.pk and "interrupted" in alert.message
    due = [(d.kind, d.source.pk) for d in due_jobs()]
    assert ((JobKind.CONSISTENCY_CHECK, source.pk) in due) is check_when_inconsistent


def test_a_lost_job_of_another_kind_leaves_replicas_alone(group: ProtectionGroup) -> None:
    source = protect(vm_with_disk("sql01"), group, replica_state=ReplicaState.OK)
    verify = Job.objects.create(kind=JobKind.VERIFY, datastore=group.datastore, state=JobState.RUNNING)
    Job.objects.filter(pk=verify.pk).update(worker=gone())
    assert reap_stale_jobs() == 1
    source.refresh_from_db()
    assert source.replica_state == ReplicaState.OK
    assert not Alert.objects.filter(kind=AlertKind.BACKUP_FAILED).exists()


def test_a_stopped_source_stays_stopped(group: ProtectionGroup) -> None:
    source = protect(vm_with_disk("sql01"), group, replica_state=ReplicaState.STOPPED)
    lost_job(JobKind.SYNCHRONIZATION, source)
    assert reap_stale_jobs() == 1
    source.refresh_from_db()
    assert source.replica_state == ReplicaState.STOPPED
