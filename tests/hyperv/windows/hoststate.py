"""What the emulated Hyper-V host keeps besides the lab folder: Windows paths,
recovery checkpoints and reference points, and the failure a script reports.

Windows paths: the emulated host's ``C:\\`` is ``host.drive_root`` (the folder Samba
serves as ``C$``; the lab root itself when the host has no such attribute), so
``C:\\<lab>\\Virtual Machines\\VM\\...`` names a lab file and reaches it over SMB.

A recovery checkpoint of a VM lives in ``<VM folder>/Snapshots/<id>/``:
``checkpoint.json`` and a frozen copy of each disk and of ``vm.json``, taken under
the VM's lab lock, so the guest keeps writing to its disks while the backup reads
the copy (Hyper-V redirects the writes to an AVHDX instead; the reading side sees
the same thing). Reference points are ``<VM folder>/ReferencePoints/<id>.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from protection.connectors.lab.config import write_json_atomic
from protection.connectors.lab.connector import LabConnector

SNAPSHOTS_DIR = "Snapshots"
REFERENCE_DIR = "ReferencePoints"
CHECKPOINT_FILE = "checkpoint.json"


class ScriptFailure(Exception):
    """A known failure: the script answers {"ok": false, "error": {"kind", "message"}}."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def drive_root(host: Any) -> Path:
    return Path(getattr(host, "drive_root", None) or host.lab_root)


def windows_path(host: Any, path: Path) -> str:
    relative = PurePosixPath(Path(path).resolve().relative_to(drive_root(host).resolve()))
    return "C:\\" + "\\".join(relative.parts)


def local_path(host: Any, path: str) -> Path:
    """The lab file behind a Windows path of this host; InvalidArgument if none."""
    win = PureWindowsPath(path)
    if win.drive.upper() != "C:" or not win.is_absolute() or ".." in win.parts:
        raise ScriptFailure("InvalidArgument", f"{path} is not a path on this host's C: drive")
    return drive_root(host).joinpath(*win.parts[1:])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(vm_folder: Path) -> list[Path]:
    root = vm_folder / SNAPSHOTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CHECKPOINT_FILE).is_file())


def load_checkpoint(folder: Path) -> dict[str, Any]:
    return json.loads((folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))


def save_checkpoint(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / CHECKPOINT_FILE, record)


def remove_checkpoint(folder: Path) -> None:
    """Hyper-V merges the AVHDX back; here the frozen copies are simply dropped."""
    shutil.rmtree(folder, ignore_errors=True)


def find_checkpoint(vm_folder: Path, checkpoint_id: str) -> Path | None:
    for folder in checkpoint_dirs(vm_folder):
        if load_checkpoint(folder).get("id") == checkpoint_id:
            return folder
    return None


def reference_points(vm_folder: Path) -> dict[str, dict[str, Any]]:
    root = vm_folder / REFERENCE_DIR
    if not root.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*.json"))}


def save_reference_point(vm_folder: Path, reference_id: str, record: dict[str, Any]) -> None:
    (vm_folder / REFERENCE_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(vm_folder / REFERENCE_DIR / f"{reference_id}.json", record)


def checkpoints_of(host: Any, vm_id: str) -> list[dict[str, Any]]:
    """Every checkpoint of the VM, as Get-VMSnapshot would list them (for tests)."""
    folder = LabConnector(host.lab_root).vm_config(vm_id).folder
    return [load_checkpoint(d) for d in checkpoint_dirs(folder)]
