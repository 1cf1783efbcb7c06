"""A real django-q2 worker cluster (``manage.py qcluster``) for integration tests.

The cluster is a separate process group working on the *test* database through the
ORM broker, with the test process's data directory, and with jobs really queued:
``BACKUPSITE_TEST_REAL_WORKERS=1`` turns off the synchronous mode that
``tests/settings.py`` sets for every other test. The test process itself must queue
too; see :func:`queue_jobs_for_real`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "running."  # "Q Cluster <name> running." once the pool has started
STOP_DEADLINE_SECONDS = 10.0


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL naming the same PostgreSQL database as ``settings_dict`` (the test database)."""
    if settings_dict["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("a real worker cluster needs the PostgreSQL test database (DATABASE_URL)")
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = settings_dict.get("PASSWORD") or ""
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{credentials}@{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def queue_jobs_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process hand jobs to the broker instead of running them inline.

    django-q2 1.11 decides per call in ``async_task``: ``if "sync" not in task and
    Conf.SYNC: task["sync"] = Conf.SYNC``, then runs the task in place when set.
    ``Conf.SYNC`` is read at each call, so patching the class attribute is enough for
    the test thread and for the live server's request threads alike.
    """
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@dataclass
class WorkerCluster:
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(f"the qcluster process exited with {code}:\n{self.output()}")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until the cluster said it is running; fails when it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if READY_LINE in self.output():
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        raise AssertionError(f"the qcluster did not start within {timeout:.0f} s:\n{self.output()}")

    def stop(self, deadline: float = STOP_DEADLINE_SECONDS) -> float:
        """SIGTERM, wait up to ``deadline`` seconds, then SIGKILL the whole process group.

        A qcluster can take more than 30 s to stop on SIGTERM (it waits for its
        monitor), so the deadline is what bounds the test. Returns the seconds taken.
        """
        begun = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=deadline)
        # The sentinel, pusher, monitor and workers share the group (start_new_session):
        # whatever is left of it goes now, so nothing keeps a connection to the test database.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=deadline)
        return time.monotonic() - begun


def start_cluster(settings_dict: dict[str, Any], log_path: Path, *, workers: int = 2) -> WorkerCluster:
    """Start ``manage.py qcluster`` on the database of ``settings_dict`` (pass the test database)."""
    data_dir = os.environ.get("BACKUPSITE_DATA_DIR")
    if not data_dir:
        raise RuntimeError("BACKUPSITE_DATA_DIR is not set; tests/settings.py sets it before Django starts")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(settings_dict),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "BACKUPSITE_TEST_REAL_WORKERS": "1",
        "BACKUPSITE_DATA_DIR": data_dir,
        "BACKUPSITE_WORKERS": str(workers),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerCluster(process, log_path)
