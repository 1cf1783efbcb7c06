"""Recovery's job handler; found by the job registry's autodiscovery."""

from __future__ import annotations

from typing import Any

from backupsite.core.jobs.context import JobContext
from backupsite.core.jobs.registry import handles
from backupsite.core.models import JobKind
from recovery.services.run import run_recovery


@handles(JobKind.RECOVERY)
def recovery(context: JobContext) -> dict[str, Any]:
    return run_recovery(context)
