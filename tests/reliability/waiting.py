"""What the fault tests share: waiting for a condition or a job, and a real worker cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from backupsite.core.models import Job
from tests.browser.workers import WorkerCluster, start_cluster


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finished(job: Job, timeout: float = 120) -> Job:
    def done() -> Job | None:
        job.refresh_from_db()
        return job if job.is_finished else None

    return wait_for(done, timeout, f"job #{job.pk} to finish")  # type: ignore[no-any-return]


@contextmanager
def running_cluster(
    request: pytest.FixtureRequest, log_path: Path, settings_dict: dict[str, Any] | None = None
) -> Iterator[WorkerCluster]:
    """A started ``manage.py qcluster`` (2 workers) on the test database; its output is
    printed when the test failed."""
    cluster = start_cluster(settings_dict or settings.DATABASES["default"], log_path)
    failed_before = request.session.testsfailed
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()
        if request.session.testsfailed > failed_before:
            print(cluster.output())
