"""Browser tests: Chromium and the page fixture live in tests/conftest.py (shared with
tests/recovery_web); the real worker cluster fixture is here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def worker_cluster(
    transactional_db: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A real django-q2 cluster (``manage.py qcluster``) on the test database.

    Jobs submitted by the test and by the live server's request threads are queued in
    the ORM broker and run by the cluster's workers, in another process, as in
    production. Depends on ``transactional_db`` so that the cluster is stopped before
    the tables are flushed.
    """
    from django.conf import settings

    from tests.browser.workers import queue_jobs_for_real, start_cluster

    queue_jobs_for_real(monkeypatch)
    cluster = start_cluster(settings.DATABASES["default"], tmp_path / "qcluster.log")
    failed_before = request.session.testsfailed
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        seconds = cluster.stop()
        if request.session.testsfailed > failed_before:
            print(f"qcluster (pid {cluster.pid}) stopped in {seconds:.1f} s; its output:\n{cluster.output()}")
