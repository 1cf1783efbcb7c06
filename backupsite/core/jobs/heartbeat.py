"""A running job's heartbeat, from a thread of its own.

The handler reports progress when it has some; a long read, a slow host or a checkpoint
that takes minutes reports none. The reaper must still tell a slow job from a lost one
within a minute, so while a job runs this thread bumps its heartbeat every
``HEARTBEAT_EVERY`` whatever the handler does. It also notes when the database could
not be reached, so a job that fails for that reason says so instead of "worker lost".
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from django.db import DatabaseError, connections
from django.utils import timezone

from backupsite.core.models import Job, JobState
from backupsite.core.models.jobs import HEARTBEAT_EVERY

RETRY_EVERY = 2.0  # seconds between attempts while the database does not answer


class Heartbeat:
    """``with Heartbeat(job_id) as beat:`` around a handler; ``beat.database_outage`` after."""

    def __init__(self, job_id: int, every: float = HEARTBEAT_EVERY.total_seconds()) -> None:
        self.job_id = job_id
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{job_id}-heartbeat", daemon=True)
        self.outage_seconds = 0.0
        self.last_database_error = ""

    @property
    def database_outage(self) -> str:
        """A sentence about database trouble seen while the job ran, or ""."""
        if not self.last_database_error:
            return ""
        how_long = f" for about {self.outage_seconds:.0f} s" if self.outage_seconds >= 1 else ""
        return f"The database could not be reached{how_long} while the job ran ({self.last_database_error})."

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        wait = self.every
        failing_since: float | None = None
        try:
            while not self._stop.wait(wait):
                try:
                    Job.objects.filter(pk=self.job_id, state=JobState.RUNNING).update(
                        heartbeat=timezone.now()
                    )
                except DatabaseError as error:
                    self.last_database_error = (str(error).strip().splitlines() or ["error"])[0][:300]
                    if failing_since is None:
                        failing_since = time.monotonic() - wait / 2  # it failed some time since the last beat
                    wait = RETRY_EVERY
                    connections["default"].close()  # a fresh connection on the next attempt
                    continue
                if failing_since is not None:
                    self.outage_seconds += time.monotonic() - failing_since
                    failing_since = None
                wait = self.every
        finally:
            if failing_since is not None:
                self.outage_seconds += time.monotonic() - failing_since
            connections.close_all()  # this thread's own connections
