"""What a job handler gets: progress, log, and cancellation, all cheap to call often."""

from __future__ import annotations

import time
from collections import deque

from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from backupsite.core.models import Job

PROGRESS_INTERVAL = 0.5  # seconds between progress writes: the page polls every second
CANCEL_CHECK_INTERVAL = 1.0
RATE_WINDOW = 10.0  # seconds of samples behind the displayed rate


class JobCancelled(Exception):
    """Raised inside a handler when the user asked the job to stop."""


class JobError(Exception):
    """An expected failure with a message meant for the administrator."""


class JobContext:
    def __init__(self, job: Job) -> None:
        self.job = job
        self._monotonic = time.monotonic
        self._last_progress_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._samples: deque[tuple[float, int]] = deque()
        self.bytes_done = 0
        self.bytes_total = job.bytes_total

    def progress(
        self,
        bytes_done: int,
        bytes_total: int | None = None,
        message: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        now = self._monotonic()
        self.bytes_done = bytes_done
        if bytes_total is not None:
            self.bytes_total = bytes_total
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        if not force and message is None and now - self._last_progress_write < PROGRESS_INTERVAL:
            return
        self._last_progress_write = now
        first_time, first_bytes = self._samples[0]
        elapsed = now - first_time
        rate = (bytes_done - first_bytes) / elapsed if elapsed > 0 else 0.0
        fields: dict[str, object] = {
            "bytes_done": bytes_done,
            "bytes_total": self.bytes_total,
            "rate_bytes_per_second": max(0.0, rate),
            "heartbeat": timezone.now(),
        }
        if message is not None:
            fields["message"] = message[:500]
        Job.objects.filter(pk=self.job.pk).update(**fields)

    def message(self, text: str) -> None:
        Job.objects.filter(pk=self.job.pk).update(message=text[:500], heartbeat=timezone.now())

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
        Job.objects.filter(pk=self.job.pk).update(
            log=Concat(F("log"), Value(f"{stamp}  {line}\n")), heartbeat=timezone.now()
        )

    def is_cancelled(self) -> bool:
        """Cheap enough to pass to the engine as its cancel callback."""
        if self._cancelled:
            return True
        now = self._monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL:
            self._last_cancel_check = now
            self._cancelled = Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
            Job.objects.filter(pk=self.job.pk).update(heartbeat=timezone.now())
        return self._cancelled

    def check_cancel(self) -> None:
        if self.is_cancelled():
            raise JobCancelled()
