"""Fixtures for the recovery wizard and jobs: a backed-up lab host, a Samba server and
an SMTP server on loopback, and catalog rows over the item-level test images."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.models import RecoveryPoint, VirtualMachine
from recovery.models import RecoveryDraft, WizardStep

# Fixtures shared with other suites: the lab host of the protection tests and the item-level
# tests' images (hostile names, damaged and encrypted volumes).
from tests.protection.conftest import ProtectedLab, lab_template, protected_lab  # noqa: F401
from tests.recovery.conftest import build_dir, datastore, ntfs_image, special_image  # noqa: F401
from tests.samba import free_port, running_smbd

MiB = 1024 * 1024


@pytest.fixture
def recovery_root(tmp_path: Path, settings: Any) -> Path:
    """The one folder item-level recovery may write to in these tests."""
    root = tmp_path / "restores"
    root.mkdir()
    settings.RECOVERY_ROOTS = [str(root)]
    return root


@dataclass
class BackedUpLab:
    lab: ProtectedLab
    windows_point: RecoveryPoint
    linux_point: RecoveryPoint

    @property
    def windows(self) -> VirtualMachine:
        return self.lab.windows

    @property
    def linux(self) -> VirtualMachine:
        return self.lab.linux

    def disk_name(self, vm: VirtualMachine) -> str:
        return f"Virtual Hard Disks/{self.lab.disk(vm).name}"


def back_up(lab: ProtectedLab, vm: VirtualMachine) -> RecoveryPoint:
    job = Job.objects.create(kind=JobKind.INITIAL_REPLICA, vm=vm, group=lab.group)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    return RecoveryPoint.objects.get(point_id=job.result["recovery_point"])


@pytest.fixture
def backed_up_lab(protected_lab: ProtectedLab) -> BackedUpLab:  # noqa: F811
    """The protection tests' lab host with one recovery point of each VM."""
    return BackedUpLab(
        protected_lab,
        back_up(protected_lab, protected_lab.windows),
        back_up(protected_lab, protected_lab.linux),
    )


def make_draft(user: Any, point: RecoveryPoint, step: str = WizardStep.REVIEW, **data: Any) -> RecoveryDraft:
    return RecoveryDraft.objects.create(user=user, point=point, step=step, data=data)


def user_of(client: Client) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


# --------------------------------------------------------------------------- Samba


@dataclass
class SambaShare:
    host: str
    port: int
    share: str
    path: Path
    username: str
    password: str

    @property
    def unc(self) -> str:
        return f"\\\\{self.host}\\{self.share}"


SAMBA_USER = "backuptest"
SAMBA_PASSWORD = "Recovery-Test-Pa55"


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaShare]:
    """A real smbd on a loopback port, with its own smb.conf and a password-protected share."""
    base = tmp_path_factory.mktemp("samba")
    share = base / "share"
    share.mkdir()
    share.chmod(0o777)
    shares = f"""[restores]
  path = {share}
  read only = no
  valid users = {SAMBA_USER}
  force user = root
"""
    with running_smbd(base, shares, [(SAMBA_USER, SAMBA_PASSWORD)]) as port:
        yield SambaShare("127.0.0.1", port, "restores", share, SAMBA_USER, SAMBA_PASSWORD)


# --------------------------------------------------------------------------- SMTP


@dataclass
class SMTPServer:
    port: int
    messages: list[Any]

    def mailers(self) -> dict[str, Any]:
        return {
            "default": {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": "127.0.0.1", "port": self.port, "timeout": 10},
            }
        }


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) on a loopback port that keeps what it receives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    try:
        yield SMTPServer(controller.port, received)
    finally:
        controller.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --------------------------------------------------------------------------- reference copies


def engine_restore(point: RecoveryPoint, target: Path) -> Path:
    """Restore the whole point with the engine itself: the reference to compare against."""
    point.datastore.open_engine().restore(point.point_id, target)
    return target


def extract_partition(vhdx: Path, offset: int, size: int, workdir: Path) -> Path:
    """The partition as a plain file: qemu-img to raw, then dd by byte offset (no loop device)."""
    raw = workdir / f"{vhdx.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(vhdx), str(raw)], check=True)
    part = workdir / f"{vhdx.stem}-at-{offset}.img"
    subprocess.run(
        ["dd", f"if={raw}", f"of={part}", "bs=1M", f"skip={offset}", f"count={size}",
         "iflag=skip_bytes,count_bytes", "status=none"],
        check=True,
    )  # fmt: skip
    raw.unlink()
    return part


def ntfscat(partition: Path, guest_path: str) -> bytes:
    return subprocess.run(["ntfscat", str(partition), guest_path], check=True, capture_output=True).stdout


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed): proves nothing appeared outside a folder."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.join(dirpath, name))
    return found


def make_point(vm: VirtualMachine, created: Any, **fields: Any) -> RecoveryPoint:
    """A catalog row only (no engine data): enough for the find and calendar pages."""
    from storage.models import Datastore

    store = Datastore.objects.get_or_create(name="catalog-only", defaults={"path": "/nonexistent/store"})[0]
    defaults: dict[str, Any] = {
        "kind": "recovery_point",
        "consistency": "application",
        "size_bytes": 64 * MiB,
    }
    return RecoveryPoint.objects.create(
        point_id=f"p-{vm.pk}-{created:%Y%m%d%H%M%S}",
        datastore=store,
        vm=vm,
        created=created,
        **(defaults | fields),
    )
