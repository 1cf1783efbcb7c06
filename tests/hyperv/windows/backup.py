"""The backup scripts as an emulated Hyper-V host runs them (see hoststate.py).

Each function takes the script's ``$Params`` and returns what the real script puts
in ``result``, or raises ``ScriptFailure`` for the failures the real script reports
as ``{"ok": false, "error": ...}``. The RCT side is the lab's journal
(protection/connectors/lab/rct.py): the checkpoint closes a journal generation at the
instant the disks are frozen, so the RCT id kept by ConvertToReferencePoint names
exactly the frozen content, and GetVirtualDiskChanges reports the writes between
two such instants.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protection.connectors import prerequisites
from protection.connectors.lab.config import VM_FILE, LabVMConfig
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import VMLock
from protection.connectors.lab.host import copy_sparse
from protection.connectors.lab.inventory import vm_info
from protection.connectors.lab.rct import RCTJournal
from protection.connectors.protocol import ChangeTrackingLost, ReplicationRole, VMNotFound, VMState
from protection.connectors.ranges import normalize
from storage.vdisk import VdiskError, read_layout
from tests.hyperv.windows.hoststate import (
    ScriptFailure,
    checkpoint_dirs,
    find_checkpoint,
    load_checkpoint,
    local_path,
    reference_points,
    remove_checkpoint,
    save_checkpoint,
    save_reference_point,
    windows_path,
)

RECOVERY = "Recovery"
LOCK_WAIT = 10.0


def _vm(host: Any, vm_id: str) -> tuple[LabConnector, LabVMConfig]:
    connector = LabConnector(host.lab_root)
    try:
        return connector, connector.vm_config(str(vm_id))
    except VMNotFound as exc:
        raise ScriptFailure("VMNotFound", str(exc)) from None


def _history(connector: LabConnector) -> int:
    return connector.host_config().rct_history


def begin_backup(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    connector, cfg = _vm(host, params["vm_id"])
    prefix = str(params.get("name_prefix") or "")
    removed = []
    # A recovery checkpoint of ours that is still there was left by a backup that died.
    for folder in checkpoint_dirs(cfg.folder):
        record = load_checkpoint(folder)
        if record["type"] == RECOVERY and prefix and record["name"].startswith(prefix):
            remove_checkpoint(folder)
            removed.append(record["name"])
    vm = vm_info(cfg, connector.host_config())
    refusal = prerequisites.replica_refusal(vm)
    if refusal:
        raise ScriptFailure(
            "BackupRefused", f"{vm.name} is a replica that cannot be backed up now: {refusal}"
        )
    wanted = str(params.get("consistency", "application"))
    if vm.replication.role == ReplicationRole.REPLICA:
        level, note = "crash", "replica VMs are checkpointed crash-consistent"
    elif wanted == "crash":
        level, note = "crash", "crash-consistent checkpoint requested"
    elif vm.state != VMState.RUNNING or not vm.vss_capable or vm.integration_services_version is None:
        level, note = "crash", "the guest could not take an application-consistent checkpoint"
    else:
        level, note = "application", "application-consistent checkpoint (guest VSS)"
    checkpoint_id = str(uuid.uuid4()).upper()
    name = f"{prefix}{datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    folder = cfg.folder / "Snapshots" / checkpoint_id
    history = _history(connector)
    disks, configs, pending = [], [], {}
    with VMLock(cfg.folder, "recovery checkpoint").acquire(LOCK_WAIT):
        try:
            save_checkpoint(
                folder, {"id": checkpoint_id, "name": name, "type": RECOVERY, "state": "creating"}
            )
            for disk in cfg.disks:
                if disk.pass_through:
                    continue
                source = cfg.folder / disk.path
                frozen = folder / source.name
                copy_sparse(source, frozen)
                layout = read_layout(frozen)
                entry: dict[str, Any] = {
                    "path": windows_path(host, source),
                    "frozen_path": windows_path(host, frozen),
                    "disk_id": layout.disk_id,
                    "virtual_size": layout.virtual_size,
                    "file_size": frozen.stat().st_size,
                    "format": source.suffix.lower().lstrip("."),
                    "parents": [],
                }
                disks.append(entry)
                if source.suffix.lower() == ".vhdx":
                    # The journal generation closed now names the frozen content.
                    pending[layout.disk_id] = RCTJournal(source, history).create_reference()
            frozen_config = folder / VM_FILE
            copy_sparse(cfg.folder / VM_FILE, frozen_config)
            configs.append(
                {
                    "path": windows_path(host, frozen_config),
                    "name": VM_FILE,
                    "size": frozen_config.stat().st_size,
                }
            )
            save_checkpoint(
                folder,
                {
                    "id": checkpoint_id,
                    "name": name,
                    "type": RECOVERY,
                    "state": "ready",
                    "consistency": level,
                    "pending_rct": pending,
                },
            )
        except BaseException:
            remove_checkpoint(folder)  # the real script removes a half-made checkpoint too
            raise
    return {
        "checkpoint_id": checkpoint_id,
        "checkpoint_name": name,
        "consistency": level,
        "consistency_note": note,
        "removed_stale": removed,
        "vm": {"id": cfg.id, "name": cfg.name, "host": vm.host, "path": windows_path(host, cfg.folder)},
        "disks": disks,
        "config_files": configs,
    }


def _checkpoint_of_frozen(host: Any, frozen: Path) -> tuple[Path, dict[str, Any]]:
    folder = frozen.parent
    try:
        return folder, load_checkpoint(folder)
    except (OSError, ValueError):
        raise ScriptFailure("InvalidArgument", f"{frozen.name} is not a checkpoint's disk") from None


def rct_changes(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    frozen = local_path(host, params["path"])
    if not frozen.is_file():
        raise ScriptFailure("InvalidArgument", f"{params['path']} does not exist")
    connector, cfg = _vm(host, params["vm_id"])
    _folder, record = _checkpoint_of_frozen(host, frozen)
    try:
        layout = read_layout(frozen)
    except VdiskError as exc:
        raise ScriptFailure("InvalidArgument", f"{frozen.name}: {exc}") from None
    source = next((cfg.folder / d.path for d in cfg.disks if (cfg.folder / d.path).name == frozen.name), None)
    upto = record.get("pending_rct", {}).get(layout.disk_id)
    if source is None or upto is None:
        raise ScriptFailure("ChangeTrackingLost", f"{frozen.name} has no resilient change tracking")
    journal = RCTJournal(source, _history(connector))
    limit = str(params["limit_id"])
    try:
        journal.changes_since(limit)  # validates the id the way GetVirtualDiskChanges does
    except ChangeTrackingLost as exc:
        raise ScriptFailure("ChangeTrackingLost", str(exc)) from None
    data = journal.load() or {}
    since, until = int(limit.rsplit(":", 1)[1]), int(upto.rsplit(":", 1)[1])
    ranges = [
        (int(o), int(n))
        for g, gen in data.get("generations", {}).items()
        if since < int(g) <= until
        for o, n in gen["ranges"]
    ]
    return {"virtual_size": layout.virtual_size, "ranges": [list(r) for r in normalize(ranges)]}


def end_backup(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    _connector, cfg = _vm(host, params["vm_id"])
    folder = find_checkpoint(cfg.folder, str(params["checkpoint_id"]))
    if not params.get("ok"):
        if folder is not None:
            remove_checkpoint(folder)
        return {"removed": folder is not None}
    if folder is None:
        raise ScriptFailure("CheckpointFailed", f"checkpoint {params['checkpoint_id']} no longer exists")
    record = load_checkpoint(folder)
    reference_id = f"Microsoft:{uuid.uuid4()}".upper()
    pending: dict[str, str] = record.get("pending_rct", {})
    save_reference_point(cfg.folder, reference_id, {"checkpoint": record["id"], "rct": pending})
    remove_checkpoint(folder)  # converted: the AVHDX is merged, only the reference remains
    return {
        "reference_point_id": reference_id,
        "virtual_disk_ids": list(pending),
        "rct_ids": list(pending.values()),
    }


def destroy_reference(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    _connector, cfg = _vm(host, params["vm_id"])
    reference_id = str(params["reference_point_id"])
    known = reference_id in reference_points(cfg.folder)
    if known:
        (cfg.folder / "ReferencePoints" / f"{reference_id}.json").unlink()
    return {"destroyed": known}


SCRIPTS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "begin-backup": begin_backup,
    "rct-changes": rct_changes,
    "end-backup": end_backup,
    "destroy-reference": destroy_reference,
}
