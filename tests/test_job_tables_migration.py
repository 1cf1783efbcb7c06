"""Upgrading from the release where jobs lived in the protection app keeps every job,
lock and queued task (migrations backupsite 0003/0004, protection 0003, recovery 0002)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_q.signing import SignedPackage

DJANGO_Q = ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more")
OLD = [
    ("backupsite", "0002_roles"),
    ("protection", "0002_alerts_and_drafts"),
    ("recovery", "0001_initial"),
    ("storage", "0001_initial"),
    DJANGO_Q,
]
NEW = [
    ("backupsite", "0004_rename_job_tables"),
    ("protection", "0003_jobs_to_backbone"),
    ("recovery", "0002_jobs_to_backbone"),
    DJANGO_Q,
]


def _migrate(targets: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_jobs_locks_and_queued_tasks_survive_the_move_to_the_backbone() -> None:
    old = _migrate(OLD)
    host = old.get_model("protection", "Host").objects.create(name="H1", address="/x", connection_kind="lab")
    vm = old.get_model("protection", "VirtualMachine").objects.create(
        host=host, hyperv_id="00000000-0000-0000-0000-000000000001", name="VM1"
    )
    job = old.get_model("protection", "Job").objects.create(kind="synchronization", vm=vm, log="kept")
    old.get_model("protection", "VMLock").objects.create(vm=vm, job=job)
    old.get_model("protection", "Alert").objects.create(kind="backup_failed", message="m", job=job)
    old.get_model("django_q", "Schedule").objects.create(
        func="protection.jobs.runner.reap_stale_jobs", name="reap", schedule_type="I", minutes=1
    )
    old.get_model("django_q", "OrmQ").objects.create(
        key="default",
        payload=SignedPackage.dumps(
            {
                "id": "x",
                "name": "job-1",
                "func": "protection.jobs.runner.run_job",
                "args": (job.pk,),
                "kwargs": {},
            }
        ),
    )

    new = _migrate(NEW)
    _migrate(_latest())  # leave the database as every other test expects it

    moved = new.get_model("backupsite", "Job").objects.get(pk=job.pk)
    assert moved.log == "kept" and moved.vm_id == vm.pk
    assert new.get_model("backupsite", "VMLock").objects.get().job_id == job.pk
    assert new.get_model("protection", "Alert").objects.get().job_id == job.pk
    assert "backupsite_job" in connection.introspection.table_names()
    assert "protection_job" not in connection.introspection.table_names()
    funcs = set(new.get_model("django_q", "Schedule").objects.values_list("func", flat=True))
    assert funcs == {"backupsite.core.jobs.reaper.reap_stale_jobs"}
    (queued,) = new.get_model("django_q", "OrmQ").objects.all()
    assert SignedPackage.loads(queued.payload)["func"] == "backupsite.core.jobs.runner.run_job"
