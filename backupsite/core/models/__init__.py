from backupsite.core.models.audit import AuditEvent
from backupsite.core.models.jobs import (
    ACTIVE_STATES,
    FINISHED_STATES,
    RUN_JOB_TASK,
    Job,
    JobKind,
    JobQuerySet,
    JobState,
    VMLock,
)

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "RUN_JOB_TASK",
    "AuditEvent",
    "Job",
    "JobKind",
    "JobQuerySet",
    "JobState",
    "VMLock",
]
