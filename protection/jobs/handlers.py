"""Handlers for every job kind. Each takes a JobContext and returns a result dict.

Protection and recovery handlers arrive with their issues; the inventory refresh
is here from the start because registering a host needs it.
"""

from __future__ import annotations

from typing import Any

from protection.jobs.context import JobContext, JobError
from protection.jobs.registry import handles
from protection.models import JobKind


@handles(JobKind.INVENTORY)
def refresh_inventory(context: JobContext) -> dict[str, Any]:
    host = context.job.host
    if host is None:
        raise JobError("The host of this inventory job no longer exists.")
    context.message(f"Reading the inventory of {host}")
    machines = host.refresh_inventory()
    context.log(f"{len(machines)} virtual machines found on {host}")
    return {"virtual_machines": len(machines)}
