"""Recovery's job handler; found by the job registry's autodiscovery."""

from __future__ import annotations

from typing import Any

from backupsite.core.jobs.context import JobContext
from backupsite.core.jobs.registry import handles, when_abandoned
from backupsite.core.models import Job, JobKind
from recovery.services.run import recovery_abandoned, run_recovery


@handles(JobKind.RECOVERY)
def recovery(context: JobContext) -> dict[str, Any]:
    return run_recovery(context)


@when_abandoned(JobKind.RECOVERY)
def recovery_lost(job: Job) -> None:
    recovery_abandoned(job)
