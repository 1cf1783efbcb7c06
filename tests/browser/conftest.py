"""A real Chromium (Debian's) driven by Playwright against Django's live server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls
    # made by the test itself are still synchronous and safe.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    tab = browser.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        tab.close()


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
