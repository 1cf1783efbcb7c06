"""A backup session on a Hyper-V host: recovery checkpoint, frozen files over SMB, RCT.

The sequence (Windows Server 2016+, ``root\\virtualization\\v2``):

1. ``begin-backup.ps1`` removes recovery checkpoints a crashed backup of ours left
   behind, takes a recovery checkpoint (application-consistent, else crash-consistent)
   and returns the checkpoint's id and the frozen files' paths;
2. the job reads those files over SMB (``smb.py``); for a disk with a previous RCT id,
   ``rct-changes.ps1`` returns the virtual ranges written since, which the disk's BAT
   maps to the file ranges to re-read (plus the VHDX structure and any growth);
3. ``end-backup.ps1`` turns the checkpoint into a reference point (ok) and returns the
   new RCT ids, or removes the checkpoint (failure). Whatever fails after step 1, the
   checkpoint is removed before the error leaves this module: an AVHDX left unmerged
   is what administrators hold against backup products;
4. ``destroy_reference`` (``destroy-reference.ps1``) drops the previous reference point;
   the caller runs it only once the new recovery point is committed.

Reference ids handed to the job (one per tracked disk) are ``hvrct1|<file size>|<reference
point id>|<RCT id>``: the file size at the reference tells how far the file has grown
since (new blocks are appended), and the reference point id is what step 4 destroys.

Paging files (pagefile.sys, hiberfil.sys, swapfile.sys) are left out of incremental
reads, as MABS does: the guest's NTFS is opened over SMB with dissect (only for a tracked,
non-differencing VHDX: a chain would need every parent opened too, and is read whole).
"""

from __future__ import annotations

import contextlib
import ntpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protection.connectors.hyperv.smb import SMBClient, SMBSettings, client_for
from protection.connectors.protocol import (
    BackupFile,
    ChangeTrackingLost,
    ConnectorError,
    Consistency,
    ControllerKind,
    DiskFormat,
    DiskInfo,
    DiskType,
    EndsAsFailedOnExit,
    InvalidVMConfig,
    OSFamily,
    ReplicationInfo,
    StorageKind,
    VMInfo,
    VMState,
)
from protection.connectors.ranges import Range, normalize, paging_file_exclusion, ranges_to_copy
from storage.vdisk import VdiskError, VhdxLayout, read_layout
from storage.vdisk.pagefile import volatile_virtual_ranges

# Recovery checkpoints we create are named with this prefix, so a later backup can tell
# ours (safe to remove) from a checkpoint another product or an administrator made.
CHECKPOINT_PREFIX = "HVBackup recovery "
REFERENCE_FORMAT = "hvrct1"
DISKS_FOLDER = "Virtual Hard Disks"
PLAN_ALIGN = 4 * 1024 * 1024  # the largest chunk size a datastore may use
CONFIG_FOLDER = "Virtual Machines"


class ScriptRunner(Protocol):
    def run_script(self, name: str, params: dict[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Reference:
    file_size: int
    reference_point_id: str
    rct_id: str

    def encode(self) -> str:
        return f"{REFERENCE_FORMAT}|{self.file_size}|{self.reference_point_id}|{self.rct_id}"

    @classmethod
    def decode(cls, text: str) -> Reference:
        parts = text.split("|", 3)
        if len(parts) != 4 or parts[0] != REFERENCE_FORMAT or not parts[1].isdigit() or not parts[3]:
            raise ChangeTrackingLost(f"{text!r} is not a Hyper-V change-tracking reference of this product")
        return cls(int(parts[1]), parts[2], parts[3])


def _norm_id(value: str) -> str:
    return str(value).strip().strip("{}").lower()


class HyperVBackupSession(EndsAsFailedOnExit):
    def __init__(
        self,
        transport: ScriptRunner,
        smb: SMBClient,
        vm: VMInfo,
        checkpoint_id: str,
        consistency: Consistency,
        *,
        owns_smb: bool = False,
    ):
        self.session_id = uuid.uuid4().hex
        self.transport = transport
        self.smb = smb
        self.vm = vm
        self.checkpoint_id = checkpoint_id
        self.consistency = consistency
        self.offline = False  # Hyper-V checkpoints a running VM without saving it
        self.files: list[BackupFile] = []
        self.events: list[str] = []
        self.ended = False
        self._owns_smb = owns_smb  # the SMB connections are closed when the session ends
        self._unc: dict[str, str] = {}  # file name -> UNC path of the frozen file
        self._windows: dict[str, str] = {}  # file name -> frozen path on the host
        self._tracked: set[str] = set()  # names of disks RCT tracks (top .vhdx of a chain)
        # Where the engine will read a file with changed ranges (whole chunks around them,
        # chunks are 4 MiB at most): the SMB read-ahead stays inside.
        self._plans: dict[str, list[Range]] = {}
        self._layouts: dict[str, VhdxLayout] = {}
        self._excluded: dict[str, list[Range]] = {}
        self.lookup_bytes = 0  # read over SMB to find the guest's paging files
        self._bytes_at_start = smb.bytes_read.value  # the client may have served others before

    # ------------------------------------------------------------------ files

    def add_file(self, name: str, frozen_path: str, size: int, kind: str, disk_id: str = "") -> None:
        unc = self.smb.settings.to_unc(frozen_path, owner_node=self.vm.host)
        self._unc[name] = unc
        self._windows[name] = frozen_path
        opener = self.smb.opener(unc, lambda: self._plans.get(name))
        self.files.append(BackupFile(name, size, kind, opener, disk_id))

    def _file(self, file_name: str) -> BackupFile:
        for f in self.files:
            if f.name == file_name:
                return f
        raise ConnectorError(f"{file_name!r} is not part of this backup session")

    # ------------------------------------------------------------------ ranges

    def changed_ranges(self, file_name: str, since_reference: str | None) -> list[Range] | None:
        self._check_open()
        f = self._file(file_name)
        if since_reference is None or file_name not in self._tracked:
            return None
        reference = Reference.decode(since_reference)
        result = self.transport.run_script(
            "rct-changes",
            {"vm_id": self.vm.id, "path": self._windows[file_name], "limit_id": reference.rct_id},
        )
        virtual = [(int(off), int(length)) for off, length in result.get("ranges", [])]
        layout = self._layout(file_name)
        try:
            size = layout.virtual_size
            clipped = [(o, min(n, size - o)) for o, n in virtual if 0 <= o < size]
            data = normalize(layout.virtual_to_file(clipped))
            meta = normalize(layout.metadata_ranges())
        except VdiskError as exc:
            raise InvalidVMConfig(f"{file_name}: {exc}") from exc
        ranges = ranges_to_copy(data, meta, self.excluded_ranges(file_name), f.size, reference.file_size)
        self._plans[file_name] = normalize(
            (off - off % PLAN_ALIGN, -(-(off + n) // PLAN_ALIGN) * PLAN_ALIGN - (off - off % PLAN_ALIGN))
            for off, n in ranges
        )
        return ranges

    def _layout(self, file_name: str) -> VhdxLayout:
        if file_name not in self._layouts:
            try:
                with self.smb.open_read(self._unc[file_name]) as fh:
                    self._layouts[file_name] = read_layout(fh)  # type: ignore[arg-type]
            except VdiskError as exc:
                raise InvalidVMConfig(f"{file_name}: {exc}") from exc
        return self._layouts[file_name]

    def excluded_ranges(self, file_name: str) -> list[Range]:
        self._check_open()
        self._file(file_name)
        if file_name not in self._tracked:
            return []
        if file_name not in self._excluded:
            layout = self._layout(file_name)
            with self.smb.open_read(self._unc[file_name]) as fh:
                virtual = volatile_virtual_ranges(fh)  # type: ignore[arg-type]
                self.lookup_bytes += fh.bytes_read
            self._excluded[file_name] = paging_file_exclusion(
                file_name, virtual, lambda ranges: normalize(layout.virtual_to_file(ranges)), self.events
            )
        return list(self._excluded[file_name])

    def bytes_read_from_host(self) -> int:
        """Payload bytes received over SMB by this session: what the engine asked for, the
        read-ahead around it, and the VHDX structures read to map RCT ranges."""
        return self.smb.bytes_read.value - self._bytes_at_start

    # ------------------------------------------------------------------ end

    def _check_open(self) -> None:
        if self.ended:
            raise ConnectorError("this backup session has already ended")

    def _remove_checkpoint(self) -> None:
        self.transport.run_script(
            "end-backup", {"vm_id": self.vm.id, "checkpoint_id": self.checkpoint_id, "ok": False}
        )
        self.events.append("backup failed: recovery checkpoint removed, no reference point kept")

    def finish(self, ok: bool) -> dict[str, str]:
        """New reference ids per file name (ok), or {} once the checkpoint is removed."""
        self._check_open()
        self.ended = True
        try:
            return self._finish(ok)
        finally:
            if self._owns_smb:
                self.smb.close()

    def _finish(self, ok: bool) -> dict[str, str]:
        if not ok:
            self._remove_checkpoint()
            return {}
        try:
            result = self.transport.run_script(
                "end-backup", {"vm_id": self.vm.id, "checkpoint_id": self.checkpoint_id, "ok": True}
            )
            refs = self._references(result)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._remove_checkpoint()
            if isinstance(exc, ConnectorError):
                raise
            if isinstance(exc, Exception):
                raise ConnectorError(f"the reference point could not be created: {exc}") from exc
            raise
        self.events.append(f"reference point {result.get('reference_point_id')} created (RCT ids recorded)")
        return refs

    def _references(self, result: dict[str, Any]) -> dict[str, str]:
        reference_point = str(result["reference_point_id"])
        rct_by_disk = {
            _norm_id(disk_id): str(rct)
            for disk_id, rct in zip(
                result.get("virtual_disk_ids", []), result.get("rct_ids", []), strict=True
            )
        }
        refs: dict[str, str] = {}
        for f in self.files:
            rct = rct_by_disk.get(_norm_id(f.disk_id)) if f.name in self._tracked else None
            if rct:
                refs[f.name] = Reference(f.size, reference_point, rct).encode()
        return refs


# --------------------------------------------------------------------------- begin / end


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}~{n}{dot}{ext}"
    taken.add(candidate.lower())
    return candidate


def minimal_vm_info(info: dict[str, Any], disks: Sequence[dict[str, Any]]) -> VMInfo:
    """The VMInfo a session needs when the caller has no inventory at hand."""
    return VMInfo(
        id=_norm_id(info["id"]),
        name=str(info["name"]),
        host=str(info.get("host") or ""),
        state=VMState(info.get("state") or "Running"),
        generation=int(info.get("generation") or 2),
        configuration_version=str(info.get("configuration_version") or ""),
        integration_services_version=None,
        host_integration_services_version="",
        os_family=OSFamily(info.get("os_family") or "windows"),
        controllers=(),
        disks=tuple(
            DiskInfo(
                path=str(d["path"]),
                format=DiskFormat(d.get("format") or "vhdx"),
                type=DiskType.DYNAMIC,
                virtual_size=int(d.get("virtual_size") or 0),
                file_size=int(d.get("file_size") or 0),
                controller=ControllerKind.SCSI,
                controller_number=0,
                controller_location=i,
                disk_id=str(d.get("disk_id") or ""),
            )
            for i, d in enumerate(disks)
        ),
        replication=ReplicationInfo(),
        storage_kind=StorageKind.LOCAL,
        vss_capable=True,
        path=str(info.get("path") or ""),
    )


def begin_hyperv_backup(
    transport: ScriptRunner,
    smb: SMBClient | SMBSettings | None,
    vm_id: str,
    consistency_wanted: Consistency,
    *,
    vm: VMInfo | None = None,
) -> HyperVBackupSession:
    """Take the recovery checkpoint and describe the frozen files; see the module docstring.

    ``smb``: a client to share, or the settings of one the session opens and closes."""
    wanted = Consistency(consistency_wanted)
    client, owned = client_for(smb)  # no credentials: refuse before any checkpoint exists
    result = transport.run_script(
        "begin-backup",
        {
            "vm_id": vm_id,
            "consistency": "crash" if wanted == Consistency.CRASH else "application",
            "name_prefix": CHECKPOINT_PREFIX,
        },
    )
    # From here on a checkpoint exists on the host: every failure must remove it.
    disks = list(result.get("disks", []))
    info = vm or minimal_vm_info(result["vm"], disks)
    taken = "crash" if result.get("consistency") == "crash" else "application"
    consistency = Consistency.CRASH
    if taken == "application":
        consistency = Consistency.FILE if info.os_family == OSFamily.LINUX else Consistency.APPLICATION
    session = HyperVBackupSession(
        transport, client, info, str(result["checkpoint_id"]), consistency, owns_smb=owned
    )
    try:
        for stale in result.get("removed_stale", []):
            session.events.append(f"stale recovery checkpoint {stale!r} of an earlier backup removed")
        session.events.append(
            f"recovery checkpoint {result.get('checkpoint_name', '')!r} taken, "
            f"{taken}-consistent: {result.get('consistency_note', '')}".rstrip(": ")
        )
        names: set[str] = set()
        for disk in disks:
            name = f"{DISKS_FOLDER}/{_unique(ntpath.basename(disk['path']), names)}"
            session.add_file(
                name, disk["frozen_path"], int(disk["file_size"]), "disk", str(disk.get("disk_id", ""))
            )
            if str(disk.get("format", "")).lower() == "vhdx" and not disk.get("parents"):
                session._tracked.add(name)
            for parent in disk.get("parents", []):
                parent_name = f"{DISKS_FOLDER}/{_unique(ntpath.basename(parent['path']), names)}"
                session.add_file(
                    parent_name,
                    parent["path"],
                    int(parent["file_size"]),
                    "disk",
                    str(parent.get("disk_id", "")),
                )
        for config in result.get("config_files", []):
            name = f"{CONFIG_FOLDER}/{_unique(config.get('name') or ntpath.basename(config['path']), names)}"
            session.add_file(name, config["path"], int(config["size"]), "config")
        # Fail now, while removing the checkpoint is simple, if the files cannot be reached;
        # and read as many bytes as the share has (the frozen files do not change).
        for f in session.files:
            actual = client.stat_size(session._unc[f.name])
            if actual != f.size:
                session.events.append(f"{f.name}: the host reported {f.size} bytes, the share {actual}")
                f.size = actual
    except BaseException:
        with contextlib.suppress(Exception):
            session.finish(ok=False)
        raise
    return session


def end_hyperv_backup(session: HyperVBackupSession, ok: bool) -> dict[str, str]:
    return session.finish(ok)


def destroy_reference(transport: ScriptRunner, vm_id: str, reference: str) -> bool:
    """Drop the reference point behind a reference id (after the newer point is committed)."""
    reference_point = Reference.decode(reference).reference_point_id
    result = transport.run_script(
        "destroy-reference", {"vm_id": vm_id, "reference_point_id": reference_point}
    )
    return bool(result.get("destroyed"))
