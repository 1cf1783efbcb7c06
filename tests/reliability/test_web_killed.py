"""SIGKILL of the web server while a backup runs, under `manage.py serve` (what `make run` uses).

The dashboard and the workers are separate process groups: killing the web server at a
random moment of a backup leaves the backup running to the end (its point restores byte
for byte), and `serve` brings the dashboard back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.lab.config import HOST_FILE, write_json_atomic
from tests.browser.workers import ROOT, database_url, queue_jobs_for_real
from tests.protection.conftest import ProtectedLab, restore_and_compare
from tests.reliability.report import FaultRow, record, repetitions
from tests.reliability.waiting import finished, wait_for
from tests.test_serve import answers, children, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MiB = 1024 * 1024
KILLS = repetitions(2, 10)


@pytest.fixture
def served(
    transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    queue_jobs_for_real(monkeypatch)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "BACKUPSITE_TEST_REAL_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve", "--bind", f"127.0.0.1:{port}",
             "--web-workers", "1"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    failed_before = request.session.testsfailed
    try:
        yield process, f"http://127.0.0.1:{port}/login/"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if request.session.testsfailed > failed_before:
            print(log.read_text(errors="replace"))


def test_web_server_killed_mid_backup(
    protected_lab: ProtectedLab, served: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    process, url = served
    lab = protected_lab
    data = json.loads((lab.folder / HOST_FILE).read_text())
    write_json_atomic(lab.folder / HOST_FILE, {**data, "read_bytes_per_second": 8 * MiB})
    wait_for(lambda: answers(url), 60, "the dashboard")
    wait_for(lambda: children(process.pid, "qcluster"), 30, "the worker cluster")
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "web-kill"))

    for attempt in range(KILLS):
        vm = lab.windows if attempt % 2 == 0 else lab.linux
        kind = (
            JobKind.INITIAL_REPLICA
            if lab.source(vm).replica_state == "pending"
            else JobKind.CONSISTENCY_CHECK
        )
        expected = lab.disk(vm).read_bytes()
        job = Job.submit(kind, vm=vm, group=lab.group)
        fraction = rng.uniform(0.1, 0.7)

        def reading(job: Job = job, fraction: float = fraction) -> bool:
            job.refresh_from_db()
            assert not job.is_finished, f"finished before the kill: {job.state} {job.error}"
            return (
                job.state == JobState.RUNNING
                and job.bytes_total > 0
                and (job.bytes_done >= fraction * job.bytes_total)
            )

        wait_for(reading, 60, f"job #{job.pk} to be {fraction:.0%} through")
        web = children(process.pid, "gunicorn")
        assert len(web) == 1
        os.killpg(web[0], signal.SIGKILL)
        job = finished(job, timeout=120)
        assert job.state == JobState.SUCCEEDED, job.error  # the backup never noticed
        wait_for(lambda: answers(url), 60, "the dashboard to come back")
        assert process.poll() is None
        restore_and_compare(
            lab.datastore, job.result["recovery_point"], lab.disk(vm), tmp_path / f"r{attempt}"
        )
        assert lab.disk(vm).read_bytes() == expected

    record(
        FaultRow(
            fault="SIGKILL of the web server (gunicorn) under manage.py serve",
            during="initial replicas and consistency checks, at 10-70 % of the read",
            injected=KILLS,
            happened="the backups ran to the end unaffected; serve restarted the web server, which answered",
            user_saw="the dashboard unreachable for a few seconds; the jobs succeeded",
            nothing_lost=f"{KILLS} new points restored, cmp + qemu-img compare identical",
        )
    )
