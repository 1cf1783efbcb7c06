"""Protection's job handlers (inventory, backups, stop protection, datastore verify and
garbage collection, which reconcile the catalog of recovery points). Found by the job
registry's autodiscovery; each handler takes a JobContext and returns a result dict."""

from __future__ import annotations

from typing import Any

from backupsite.core.jobs.context import JobContext, JobError
from backupsite.core.jobs.registry import handles, when_abandoned
from backupsite.core.models import Job, JobKind
from protection.services import lifecycle
from protection.services.backup import BACKUP_KINDS, mark_abandoned, run_backup_job
from protection.services.inventory import sync_host_inventory


@handles(JobKind.INVENTORY)
def refresh_inventory(context: JobContext) -> dict[str, Any]:
    host = context.job.host
    if host is None:
        raise JobError("The host of this inventory job no longer exists.")
    context.message(f"Reading the inventory of {host}")
    machines = sync_host_inventory(host)
    context.log(f"{len(machines)} virtual machines found on {host}")
    return {"virtual_machines": len(machines)}


@handles(JobKind.INITIAL_REPLICA)
@handles(JobKind.SYNCHRONIZATION)
@handles(JobKind.RECOVERY_POINT)
@handles(JobKind.EXPRESS_FULL)
@handles(JobKind.CONSISTENCY_CHECK)
def backup(context: JobContext) -> dict[str, Any]:
    return run_backup_job(context)


@when_abandoned(*BACKUP_KINDS)
def backup_abandoned(job: Job) -> None:
    mark_abandoned(job)


@handles(JobKind.STOP_PROTECTION)
def stop_protection(context: JobContext) -> dict[str, Any]:
    return lifecycle.stop_protection(context)


@handles(JobKind.VERIFY)
def verify(context: JobContext) -> dict[str, Any]:
    return lifecycle.verify_datastore(context)


@handles(JobKind.GARBAGE_COLLECTION)
def garbage_collection(context: JobContext) -> dict[str, Any]:
    return lifecycle.collect_garbage(context)
