"""Serve the dashboard and run the worker cluster, in one command, until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the web dashboard (gunicorn) and the django-q2 worker cluster together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        web = subprocess.Popen(
            [
                python,
                "-m",
                "gunicorn",
                "backupsite.wsgi:application",
                "--bind",
                options["bind"],
                "--workers",
                str(options["web_workers"]),
                "--threads",
                "4",
                "--access-logfile",
                "-",
                "--timeout",
                "120",
            ]
        )
        workers = subprocess.Popen([python, "manage.py", "qcluster"])
        self.stdout.write(
            f"Dashboard on http://{options['bind']}/ with the worker cluster. Ctrl-C stops both."
        )
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and web.poll() is None and workers.poll() is None:
                time.sleep(0.5)
        finally:
            for process in (web, workers):
                if process.poll() is None:
                    process.terminate()
            deadline = time.monotonic() + 60
            for process in (web, workers):
                try:
                    process.wait(timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
        if not stopping:
            raise SystemExit("The web server or the worker cluster stopped unexpectedly; see the log above.")
