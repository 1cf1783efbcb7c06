"""The restore script as an emulated Hyper-V host runs it.

``restore-vm`` has three phases, as the real script: ``check`` (where each file goes,
and what stops the restore), then the server writes the files over SMB, then
``register`` (the VM is registered: in place for the original VM, as a new VM with a
new id on another host). The emulator has the files written into a staging folder
and registers them with the lab's own restore (protection/connectors/lab/restore.py),
which replaces the VM's disks and vm.json the way the lab connector does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from protection.connectors.lab.config import VM_FILE
from protection.connectors.lab.connector import LabConnector
from protection.connectors.protocol import RestoreRefused, RestoreTarget, VMNotFound
from tests.hyperv.windows.hoststate import ScriptFailure, local_path, windows_path

STAGING = ".hvbackup-restore"
CONFIG_NAME = f"Virtual Machines/{VM_FILE}"


def _lab_name(name: str) -> str:
    """The backup names the lab's vm.json like a Hyper-V configuration file."""
    return VM_FILE if name == CONFIG_NAME else name


def _folder(host: Any, params: dict[str, Any]) -> tuple[Path, RestoreTarget]:
    connector = LabConnector(host.lab_root)
    mode = str(params.get("mode"))
    if mode == "original":
        try:
            return connector.vm_config(str(params["vm_id"])).folder, RestoreTarget("original")
        except VMNotFound:
            if not params.get("path"):
                raise ScriptFailure(
                    "RestoreRefused", "The VM is no longer registered and no original folder was given."
                ) from None
            folder = local_path(host, str(params["path"]))
            return folder, RestoreTarget("original", path=str(folder))
    if mode == "alternate":
        folder = local_path(host, str(params.get("path") or ""))
        return folder, RestoreTarget("alternate", host_address=str(host.lab_root), path=str(folder))
    raise ScriptFailure("InvalidArgument", f"unknown restore mode {mode!r}")


def _check(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    folder, target = _folder(host, params)
    names = [str(n) for n in params.get("files", [])]
    findings = LabConnector(host.lab_root).check_restore_target(
        str(params["vm_id"]), target, [_lab_name(n) for n in names]
    )
    staging = folder / STAGING
    destinations = {n: windows_path(host, staging.joinpath(*PurePosixPath(n).parts)) for n in names}
    return {
        "folder": windows_path(host, folder),
        "destinations": destinations,
        "findings": [
            {"code": f.code, "severity": str(f.severity), "message": f.message, "fix": f.fix}
            for f in findings
        ],
    }


def _opener(path: Path) -> Callable[[], BinaryIO]:
    def open_file() -> BinaryIO:
        return path.open("rb")

    return open_file


def _register(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    folder, target = _folder(host, params)
    staging = folder / STAGING
    names = [str(n) for n in params.get("files", [])]
    files = {_lab_name(n): _opener(staging.joinpath(*PurePosixPath(n).parts)) for n in names}
    missing = [n for n in names if not staging.joinpath(*PurePosixPath(n).parts).is_file()]
    if missing:
        raise ScriptFailure("RestoreRefused", f"restored files are missing on the host: {', '.join(missing)}")
    try:
        result = LabConnector(host.lab_root).restore_vm(str(params["vm_id"]), files, target)
    except RestoreRefused as exc:
        raise ScriptFailure("RestoreRefused", str(exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    vm = result.vm
    return {
        "vm": {
            "id": vm.id,
            "name": vm.name,
            "host": vm.host,
            "path": windows_path(host, Path(vm.path)),
            "state": str(vm.state),
        },
        "new_registration": result.new_registration,
    }


def restore_vm(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    phase = params.get("phase")
    if phase == "check":
        return _check(host, params)
    if phase == "register":
        return _register(host, params)
    raise ScriptFailure("InvalidArgument", f"unknown restore phase {phase!r}")


SCRIPTS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {"restore-vm": restore_vm}
