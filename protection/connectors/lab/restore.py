"""Restore and register VMs on lab hosts (MABS "original instance" / "any host").

Original: the VM's own folder on its own host; existing disks and checkpoints are
replaced, the VM keeps its id (and stays highly available), change tracking
restarts (old RCT ids become unknown: the next backup is a full read).
Alternate: a folder on another lab host; the VM is registered as a new VM with a
new id, not highly available, stored locally.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from protection.connectors import prerequisites
from protection.connectors.lab import config, inventory
from protection.connectors.lab.config import VM_FILE, LabVMConfig
from protection.connectors.lab.guest import VMLock
from protection.connectors.lab.rct import remove_journal
from protection.connectors.protocol import (
    ConnectorError,
    FileSource,
    Finding,
    HostUnreachable,
    RestoreRefused,
    RestoreResult,
    RestoreTarget,
    Severity,
    VMNotFound,
)

DISK_SUFFIXES = (".vhdx", ".avhdx", ".vhd")


def _error(code: str, message: str, fix: str) -> Finding:
    return Finding(code, Severity.ERROR, message, fix)


def _safe_name(name: str) -> str:
    p = PurePosixPath(name)
    if not name or "\\" in name or p.is_absolute() or any(x in ("", ".", "..") for x in p.parts):
        raise RestoreRefused(f"refusing to restore a file named {name!r}")
    return str(p)


def _resolve_destination(
    source_host: Path, vm_id: str, target: RestoreTarget
) -> tuple[Path, Path, LabVMConfig | None, list[Finding]]:
    """(host folder, VM folder, registered config or None, findings)."""
    findings: list[Finding] = []
    if target.mode == "original":
        host_folder = source_host
        try:
            config.load_host_config(host_folder)
        except HostUnreachable as exc:
            findings.append(
                _error(
                    "original-host-missing",
                    f"The original host is gone: {exc}",
                    "Restore to another host (alternate location) instead.",
                )
            )
            return host_folder, Path(target.path or host_folder), None, findings
        try:
            cfg = inventory.find_vm_config(host_folder, vm_id)
            return host_folder, cfg.folder, cfg, findings
        except VMNotFound:
            pass
        if not target.path:
            findings.append(
                _error(
                    "original-folder-unknown",
                    "The VM is no longer registered on its host and no original folder was given.",
                    "Give the VM's original folder, or restore to an alternate location.",
                )
            )
            return host_folder, host_folder, None, findings
        folder = Path(target.path)
    elif target.mode == "alternate":
        host_folder = Path(target.host_address)
        try:
            config.load_host_config(host_folder)
        except HostUnreachable as exc:
            findings.append(_error("target-host-missing", str(exc), "Pick a lab host that exists."))
            return host_folder, host_folder, None, findings
        folder = Path(target.path)
        if not folder.is_absolute():
            folder = host_folder / folder
    else:
        raise ConnectorError(f"unknown restore mode {target.mode!r}")
    folder = Path(os.path.normpath(folder))
    if not folder.is_relative_to(Path(os.path.normpath(host_folder))) or folder == host_folder:
        findings.append(
            _error(
                "target-outside-host",
                f"{folder} is not a folder of lab host {host_folder.name}.",
                "Choose a destination path inside the host's storage.",
            )
        )
    elif target.mode == "alternate" and (folder / VM_FILE).exists():
        findings.append(
            _error(
                "target-occupied",
                f"{folder} already holds a VM.",
                "Choose an empty folder for the restored VM.",
            )
        )
    return host_folder, folder, None, findings


def check_restore_target(
    source_host: Path,
    vm_id: str,
    target: RestoreTarget,
    file_names: Sequence[str],
    *,
    backup_config: dict[str, Any] | None = None,
) -> list[Finding]:
    """Why restoring VM ``vm_id`` of lab host ``source_host`` to ``target`` would fail."""
    host_folder, folder, cfg, findings = _resolve_destination(source_host, vm_id, target)
    if findings:
        return findings
    longest = max((str(folder / n) for n in file_names), key=len, default=str(folder))
    if len(longest) >= prerequisites.MAX_PATH:
        findings.append(
            _error(
                "recovery-path-too-long",
                f"Restoring to {folder} gives file paths of {len(longest)} characters; Hyper-V "
                f"cannot register a VM whose files have paths of {prerequisites.MAX_PATH} "
                "characters or more.",
                "Choose a shorter destination folder.",
            )
        )
    if target.mode == "original":
        cluster = cfg.cluster if cfg else (backup_config or {}).get("cluster")
        ha = cfg.highly_available if cfg else bool((backup_config or {}).get("highly_available"))
        host_cluster = config.load_host_config(host_folder).cluster_name
        if (cluster or ha) and (not host_cluster or (cluster and cluster != host_cluster)):
            findings.append(
                _error(
                    "original-cluster-missing",
                    f"The VM was highly available in cluster {cluster or '?'}, which this host "
                    "no longer belongs to.",
                    "Restore to an alternate location, then make the VM highly available again.",
                )
            )
    return findings


def _write_file(dest: Path, source: FileSource) -> None:
    """Temp name + fsync + rename, so a failed restore never leaves half a disk."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.restoring")
    try:
        with source() as src, tmp.open("wb") as out:
            while chunk := src.read(8 * 1024 * 1024):
                if chunk.count(0) == len(chunk):
                    out.seek(len(chunk), os.SEEK_CUR)  # keep the file sparse
                else:
                    out.write(chunk)
            out.truncate()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def restore_vm(
    source_host: Path,
    vm_id: str,
    files: Mapping[str, FileSource],
    target: RestoreTarget,
    *,
    lock_wait_seconds: float,
) -> RestoreResult:
    """Write ``files`` for VM ``vm_id`` of lab host ``source_host`` and register it at ``target``."""
    names = [_safe_name(n) for n in files]
    backup_config: dict[str, Any] | None = None
    if VM_FILE in files:
        try:
            with files[VM_FILE]() as fh:
                backup_config = json.loads(fh.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RestoreRefused(f"the backed-up {VM_FILE} is not valid JSON: {exc}") from exc
    findings = check_restore_target(source_host, vm_id, target, names, backup_config=backup_config)
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        raise RestoreRefused(" ".join(f.message for f in errors))
    host_folder, folder, cfg, _ = _resolve_destination(source_host, vm_id, target)
    if backup_config is None and cfg is None:
        raise RestoreRefused(f"the restore needs the VM's configuration file ({VM_FILE})")
    folder.mkdir(parents=True, exist_ok=True)
    host = config.load_host_config(host_folder)
    with VMLock(folder, "restore").acquire(lock_wait_seconds):
        if cfg is not None:
            # Original instance: the VM's disks and checkpoints are replaced.
            for old in _current_disks(cfg):
                remove_journal(old)
                if _relative(old, folder) not in names:
                    old.unlink(missing_ok=True)
        for name in names:
            if name == VM_FILE:
                continue
            dest = folder / name
            _write_file(dest, files[name])
            remove_journal(dest)  # tracking restarts: older RCT ids are now unknown
        vm_json = dict(backup_config) if backup_config is not None else dict(cfg.raw)  # type: ignore[union-attr]
        vm_json["state"] = "Off"
        if target.mode == "original":
            vm_json["id"] = vm_id
        else:
            vm_json.update(
                id=str(uuid.uuid4()),
                highly_available=False,
                cluster=None,
                owner_node=host.name,
                storage_kind="local",
                csv=None,
                smb=None,
                replication={"role": "none"},
            )
        config.write_json_atomic(folder / VM_FILE, vm_json)
    new_cfg = config.parse_vm_config(folder)
    return RestoreResult(
        vm=inventory.vm_info(new_cfg, config.load_host_config(host_folder)),
        files_written=tuple(names),
        new_registration=target.mode != "original",
    )


def _current_disks(cfg: LabVMConfig) -> list[Path]:
    disks = {cfg.folder / d.path for d in cfg.disks if not d.pass_through}
    disk_dir = cfg.folder / config.DISKS_DIR
    if disk_dir.is_dir():
        disks |= {p for p in disk_dir.iterdir() if p.suffix.lower() == ".avhdx"}
    return sorted(disks)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(PurePosixPath(path.relative_to(folder)))
    except ValueError:
        return ""
