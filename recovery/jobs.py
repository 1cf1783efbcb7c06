"""Recovery job handlers register themselves here; the runner imports this module."""

from __future__ import annotations

from typing import Any

from protection.jobs.context import JobContext
from protection.jobs.registry import handles
from protection.models import JobKind


@handles(JobKind.RECOVERY)
def recovery(context: JobContext) -> dict[str, Any]:
    from recovery.services.run import run_recovery

    return run_recovery(context)
