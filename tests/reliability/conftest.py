"""Fault-injection tests: shared fixtures and the fault table writer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.workers import WorkerCluster, queue_jobs_for_real
from tests.protection.conftest import lab_template, protected_lab  # noqa: F401 - fixtures
from tests.reliability import report
from tests.reliability.waiting import running_cluster


@pytest.fixture
def cluster(
    transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[WorkerCluster]:
    """A real django-q2 cluster that runs the jobs the test submits."""
    queue_jobs_for_real(monkeypatch)
    with running_cluster(request, tmp_path / "qcluster.log") as started:
        yield started


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("UPDATE_RELIABILITY") == "1":
        report.write()
