"""`manage.py serve` (what `make run` uses) supervises the dashboard and the workers separately:
a killed worker cluster is restarted while the dashboard keeps answering, and so is a killed
web server. Real processes: gunicorn and a django-q2 cluster on a SQLite database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def children(pid: int, pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", pattern], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a local test server
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "BACKUPSITE_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "serve-test-" + "k7Xq2" * 12,
        "BACKUPSITE_HTTPS": "0",
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], env=env, cwd=ROOT, check=True)
    subprocess.run([*manage, "collectstatic", "--no-input", "-v0"], env=env, cwd=ROOT, check=True)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*manage, "serve", "--bind", f"127.0.0.1:{port}", "--web-workers", "1"],
            env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process, f"http://127.0.0.1:{port}/login/", log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_killed_workers_and_web_are_restarted_separately(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, log = served
    wait_for(lambda: answers(url), 60, "the dashboard")
    cluster = wait_for(lambda: children(process.pid, "qcluster"), 30, "the worker cluster")
    assert isinstance(cluster, list) and len(cluster) == 1

    os.killpg(cluster[0], signal.SIGKILL)  # the cluster and its worker processes
    restarted = wait_for(
        lambda: [pid for pid in children(process.pid, "qcluster") if pid != cluster[0]], 30, "a new cluster"
    )
    assert answers(url)  # the dashboard stayed up meanwhile
    assert process.poll() is None
    assert b"The worker cluster was killed by signal 9; restarting it" in log.read_bytes()

    web = children(process.pid, "gunicorn")
    assert len(web) == 1
    os.killpg(web[0], signal.SIGKILL)
    wait_for(
        lambda: [pid for pid in children(process.pid, "gunicorn") if pid != web[0]], 30, "a new web server"
    )
    wait_for(lambda: answers(url), 60, "the dashboard after its restart")
    assert children(process.pid, "qcluster") == restarted  # the workers were left alone

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=90) == 0
    assert not children(process.pid, "qcluster") and not children(process.pid, "gunicorn")
