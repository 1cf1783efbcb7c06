"""Serve the dashboard and run the worker cluster, each supervised, until Ctrl-C.

The two are separate processes watched separately: when the worker cluster dies (killed,
out of memory, a crash) it is restarted with a growing delay while the dashboard keeps
answering (and says that the workers are down); when the web server dies it is restarted
the same way. Jobs the dead cluster was running are failed by the reaper of the new one,
which sees that their worker processes are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

# After a crash: wait 1 s, then 2, 4 ... up to a minute; a process that then ran for
# HEALTHY_AFTER seconds starts again from 1 s at its next crash.
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
HEALTHY_AFTER = 300.0


@dataclass
class Supervised:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay: float = FIRST_DELAY
    restart_at: float | None = None
    restarts: int = 0
    log: list[str] = field(default_factory=list)

    def start(self) -> None:
        # A session of its own: a crash is cleaned up as a whole process group (a killed
        # qcluster leaves its worker processes behind otherwise).
        self.process = subprocess.Popen(self.argv, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def kill_group(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)


class Command(BaseCommand):
    help = "Run the web dashboard (gunicorn) and the django-q2 worker cluster, each supervised."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        web = Supervised(
            "web server",
            [
                python, "-m", "gunicorn", "backupsite.wsgi:application",
                "--bind", options["bind"], "--workers", str(options["web_workers"]), "--threads", "4",
                "--access-logfile", "-", "--timeout", "120",
            ],
        )  # fmt: skip
        workers = Supervised("worker cluster", [python, "manage.py", "qcluster"])
        children = [web, workers]
        for child in children:
            child.start()
        self.stdout.write(
            f"Dashboard on http://{options['bind']}/ with the worker cluster. Ctrl-C stops both.", ending="\n"
        )
        self.stdout.flush()
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for child in children:
                    self._watch(child)
                time.sleep(0.5)
        finally:
            for child in children:
                child.kill_group(signal.SIGTERM)
            deadline = time.monotonic() + 60
            for child in children:
                if child.process is None:
                    continue
                try:
                    child.process.wait(timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill_group(signal.SIGKILL)
                    child.process.wait()

    def _watch(self, child: Supervised) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self.stderr.write(f"Restarting the {child.name} (restart {child.restarts}).")
                child.start()
            return
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return
        child.kill_group(signal.SIGKILL)  # what it left behind
        if now - child.started_at >= HEALTHY_AFTER:
            child.delay = FIRST_DELAY
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.stderr.write(f"The {child.name} {how}; restarting it in {child.delay:.0f} s.")
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, MAX_DELAY)
