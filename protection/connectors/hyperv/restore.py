"""Restore a VM to a Hyper-V host: files written over SMB, then the VM registered.

``restore-vm.ps1`` runs twice around the copy:

- phase ``check`` says where each file goes on the host (the VM's own paths for the
  original VM, a folder of the target host otherwise) and what stops the restore
  (the VM is running, the folder already holds a VM, a path is too long, ...);
- the files are written over SMB (``SMBClient.write_file``: temporary name, then renamed);
- phase ``register`` registers the VM: in place for the original VM (same id), with
  ``Import-VM -Copy -GenerateNewId`` on another host (a new VM, not highly available).

``transport`` and ``smb`` are those of the host that RECEIVES the VM: for an alternate
location the caller builds them for ``target.host_address``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from protection.connectors.hyperv.session import ScriptRunner, minimal_vm_info
from protection.connectors.hyperv.smb import SMBClient, SMBSettings, smb_client
from protection.connectors.protocol import (
    ConnectorError,
    FileSource,
    Finding,
    RestoreRefused,
    RestoreResult,
    RestoreTarget,
    Severity,
)

MAX_PATH = 260  # Hyper-V cannot register a VM whose file paths reach this length


def _safe_name(name: str) -> str:
    p = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or ":" in name
        or p.is_absolute()
        or any(x in ("", ".", "..") for x in p.parts)
    ):
        raise RestoreRefused(f"refusing to restore a file named {name!r}")
    return str(p)


def _params(vm_id: str, target: RestoreTarget, names: Sequence[str], phase: str) -> dict[str, Any]:
    if target.mode not in ("original", "alternate"):
        raise ConnectorError(f"unknown restore mode {target.mode!r}")
    return {"phase": phase, "mode": target.mode, "vm_id": vm_id, "path": target.path, "files": list(names)}


def _plan(
    transport: ScriptRunner, vm_id: str, target: RestoreTarget, names: Sequence[str]
) -> tuple[dict[str, str], list[Finding]]:
    result = transport.run_script("restore-vm", _params(vm_id, target, names, "check"))
    findings = [
        Finding(str(f["code"]), Severity(f["severity"]), str(f["message"]), str(f.get("fix", "")))
        for f in result.get("findings", [])
    ]
    destinations = {str(k): str(v) for k, v in result.get("destinations", {}).items()}
    too_long = [path for path in destinations.values() if len(path) >= MAX_PATH]
    if too_long and not any(f.code == "recovery-path-too-long" for f in findings):
        longest = max(too_long, key=len)
        findings.append(
            Finding(
                "recovery-path-too-long",
                Severity.ERROR,
                f"Restoring gives file paths of {len(longest)} characters ({longest}); Hyper-V "
                f"cannot register a VM whose files have paths of {MAX_PATH} characters or more.",
                "Choose a shorter destination folder.",
            )
        )
    missing = [n for n in names if n not in destinations]
    if missing:
        raise ConnectorError(f"the host gave no destination for {', '.join(missing)}")
    return destinations, findings


def check_restore_target(
    transport: ScriptRunner,
    smb: SMBClient | SMBSettings | None,
    vm_id: str,
    target: RestoreTarget,
    file_names: Sequence[str],
) -> list[Finding]:
    names = [_safe_name(n) for n in file_names]
    _destinations, findings = _plan(transport, vm_id, target, names)
    return findings


def restore_vm(
    transport: ScriptRunner,
    smb: SMBClient | SMBSettings | None,
    vm_id: str,
    files: Mapping[str, FileSource],
    target: RestoreTarget,
) -> RestoreResult:
    names = [_safe_name(n) for n in files]
    destinations, findings = _plan(transport, vm_id, target, names)
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        raise RestoreRefused(" ".join(f.message for f in errors))
    with smb_client(smb) as client:
        for name in names:
            unc = client.settings.to_unc(destinations[name])
            with files[name]() as source:
                client.write_file(unc, source)
    result = transport.run_script("restore-vm", _params(vm_id, target, names, "register"))
    return RestoreResult(
        vm=minimal_vm_info(result["vm"], []),
        files_written=tuple(names),
        new_registration=bool(result.get("new_registration")),
    )
