"""Shared pieces of the host-side fault tests: a backup job run in a thread of this process
(so the test can act on the host while the job reads), a lab host read at a fixed pace,
and the checks every fault ends with."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.db import connection

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobState
from protection.connectors.lab.config import HOST_FILE, write_json_atomic
from protection.connectors.lab.guest import LOCK_FILE
from protection.models import VirtualMachine
from storage.models import Datastore
from tests.protection.conftest import restore_and_compare
from tests.reliability.waiting import wait_for

MiB = 1024 * 1024


def pace_lab_host(folder: Path, bytes_per_second: int) -> None:
    data = json.loads((folder / HOST_FILE).read_text())
    write_json_atomic(folder / HOST_FILE, {**data, "read_bytes_per_second": bytes_per_second})


class JobThread:
    """``run_job`` in a thread with its own database connection, as a worker would run it."""

    def __init__(self, kind: str, vm: VirtualMachine, **fields: Any) -> None:
        self.job = Job.objects.create(kind=kind, vm=vm, **fields)
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            run_job(self.job.pk)
        except BaseException as error:  # the test reports it; a job must never raise
            self.error = error
        finally:
            self.ended_at = time.monotonic()
            connection.close()

    def start(self) -> JobThread:
        self._thread.start()
        return self

    def wait_reading(self, fraction: float, timeout: float = 60) -> None:
        """Until the job has read ``fraction`` of its files."""

        def reading() -> bool:
            self.job.refresh_from_db()
            assert not self.job.is_finished, f"finished before the fault: {self.job.state} {self.job.error}"
            return (
                self.job.state == JobState.RUNNING
                and self.job.bytes_total > 0
                and self.job.bytes_done >= fraction * self.job.bytes_total
            )

        wait_for(reading, timeout, f"job #{self.job.pk} to be {fraction:.0%} through")

    def finish(self, timeout: float = 120) -> Job:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"job #{self.job.pk} still running after {timeout:.0f} s"
        assert self.error is None, f"run_job raised: {self.error!r}"
        self.job.refresh_from_db()
        return self.job


def run_in_thread(kind: str, vm: VirtualMachine, **fields: Any) -> Job:
    return JobThread(kind, vm, **fields).start().finish()


def lock_held(vm_folder: Path) -> bool:
    """Does anything still hold the VM's backup lock (the lab's recovery checkpoint)?"""
    lock = vm_folder / LOCK_FILE
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def restore_all(datastore: Datastore, committed: dict[str, bytes], disk_name: str, scratch: Path) -> None:
    """Every committed point restores its disk byte for byte; the datastore verifies clean."""
    for point_id, content in committed.items():
        expected = scratch / f"expected-{point_id}" / disk_name
        expected.parent.mkdir(parents=True)
        expected.write_bytes(content)
        restore_and_compare(datastore, point_id, expected, scratch / f"restore-{point_id}")
    report = datastore.open_engine().verify()
    assert report.ok, report
