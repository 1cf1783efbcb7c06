"""Backup sessions on a lab host: the lab's version of Hyper-V's backup sequence.

Hyper-V (docs/connectors.md): recovery checkpoint -> read the
frozen files -> GetVirtualDiskChanges since the previous RCT id ->
ConvertToReferencePoint (ok) or remove the checkpoint (failure). Lab: take the
VM lock (frozen view) -> read the files -> RCT journal -> new reference ids (ok)
or nothing (failure); the lock is released in every case.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from protection.connectors import prerequisites
from protection.connectors.lab import config, inventory
from protection.connectors.lab.config import HOST_FILE, VM_FILE, update_vm_json
from protection.connectors.lab.guest import VMLock
from protection.connectors.lab.rct import RCTJournal
from protection.connectors.protocol import (
    BackupFile,
    BackupRefused,
    ConnectorError,
    Consistency,
    EndsAsFailedOnExit,
    InvalidVMConfig,
    VMInfo,
    VMState,
)
from protection.connectors.ranges import Range, normalize, paging_file_exclusion, ranges_to_copy
from storage.vdisk import VdiskError, read_layout, virtual_to_file_ranges
from storage.vdisk.pagefile import volatile_virtual_ranges


def _opener(path: Path, bytes_per_second: int | None = None) -> Callable[[], BinaryIO]:
    def open_file() -> BinaryIO:
        fh = path.open("rb")
        return fh if bytes_per_second is None else PacedFile(fh, bytes_per_second)  # type: ignore[return-value]

    return open_file


class PacedFile(io.RawIOBase):
    """A file read no faster than ``bytes_per_second``: a host behind a slower link.

    ``fileno`` stays available so holes are still found without reading them.
    """

    def __init__(self, fh: BinaryIO, bytes_per_second: int) -> None:
        self._fh = fh
        self._rate = bytes_per_second
        self._read = 0
        self._began = time.monotonic()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()

    def readinto(self, buffer: Any) -> int:
        count = self._fh.readinto(buffer)  # type: ignore[attr-defined]
        self._read += count or 0
        ahead = self._read / self._rate - (time.monotonic() - self._began)
        if ahead > 0:
            time.sleep(ahead)
        return int(count or 0)

    def close(self) -> None:
        self._fh.close()
        super().close()


class LabBackupSession(EndsAsFailedOnExit):
    def __init__(
        self,
        vm: VMInfo,
        folder: Path,
        lock: VMLock,
        consistency: Consistency,
        offline: bool,
        rct_history: int,
        tracked: bool,
        read_bytes_per_second: int | None = None,
        host_folder: Path | None = None,
    ):
        self.session_id = uuid.uuid4().hex
        self.vm = vm
        self.folder = folder
        self.consistency = consistency
        self.offline = offline
        self.files: list[BackupFile] = []
        self.events: list[str] = []
        self.tracked = tracked  # RCT available for this VM (host OS + config version)
        self._lock = lock
        self._paths: dict[str, Path] = {}
        self._history = rct_history
        self._read_rate = read_bytes_per_second
        self._excluded: dict[str, list[Range]] = {}
        self._host_folder = host_folder if host_folder is not None else folder.parent.parent
        self.ended = False

    # ------------------------------------------------------------------ files

    def add_file(self, name: str, path: Path, kind: str, disk_id: str = "") -> None:
        if name in self._paths:
            return
        self._paths[name] = path
        opener = _opener(path, self._read_rate)
        self.files.append(BackupFile(name, path.stat().st_size, kind, opener, disk_id))

    def _file(self, file_name: str) -> BackupFile:
        for f in self.files:
            if f.name == file_name:
                return f
        raise ConnectorError(f"{file_name!r} is not part of this backup session")

    def _is_tracked_disk(self, f: BackupFile) -> bool:
        return self.tracked and f.kind == "disk" and f.name.lower().endswith(".vhdx")

    # ------------------------------------------------------------------ ranges

    def changed_ranges(self, file_name: str, since_reference: str | None) -> list[Range] | None:
        self._check_open()
        f = self._file(file_name)
        if since_reference is None or not self._is_tracked_disk(f):
            return None
        path = self._paths[file_name]
        changes = RCTJournal(path, self._history).changes_since(since_reference)
        try:
            # One parse (which validates) serves both the mapping and the structure ranges.
            layout = read_layout(path)
            data = normalize(layout.virtual_to_file(changes.virtual))
            meta = normalize(layout.metadata_ranges())
        except VdiskError as exc:
            raise InvalidVMConfig(f"{file_name}: {exc}") from exc
        return ranges_to_copy(data, meta, self.excluded_ranges(file_name), f.size, changes.size_at_reference)

    def excluded_ranges(self, file_name: str) -> list[Range]:
        self._check_open()
        f = self._file(file_name)
        if f.kind != "disk" or not f.name.lower().endswith((".vhdx", ".avhdx")):
            return []
        if file_name not in self._excluded:
            path = self._paths[file_name]
            virtual = volatile_virtual_ranges(path)
            self._excluded[file_name] = paging_file_exclusion(
                file_name,
                virtual,
                # Without the structure ranges: an exclusion must never hold the header, log or BAT.
                lambda ranges: virtual_to_file_ranges(path, ranges, include_metadata=False),
                self.events,
            )
        return list(self._excluded[file_name])

    def bytes_read_from_host(self) -> None:
        """The lab's files are local: the engine's count of bytes read is the figure."""
        return None

    # ------------------------------------------------------------------ end

    def _check_open(self) -> None:
        if self.ended:
            raise ConnectorError("this backup session has already ended")

    def _gone(self, exc: OSError) -> str:
        """Why the host's files could not be reached: the host, the VM, or the error itself."""
        host = self._host_folder
        if not (host / HOST_FILE).is_file():
            return (
                f"lab host {host.name} is unreachable: {host} no longer holds the host's files "
                "(unmounted or disconnected)"
            )
        if not (self.folder / VM_FILE).is_file():
            return f"VM {self.vm.name} was deleted from lab host {host.name} during the backup"
        return f"cannot record the reference point of {self.vm.name}: {exc.strerror or exc}"

    def finish(self, ok: bool) -> dict[str, str]:
        self._check_open()
        refs: dict[str, str] = {}
        try:
            if ok:
                try:
                    for f in self.files:
                        if self._is_tracked_disk(f):
                            refs[f.name] = RCTJournal(self._paths[f.name], self._history).create_reference()
                except OSError as exc:
                    # The files were read through handles opened at the checkpoint; only now,
                    # recording the reference point by path, does a host or VM that went away show.
                    raise ConnectorError(self._gone(exc)) from exc
                self.events.append("reference point created (RCT ids recorded)")
            else:
                self.events.append("backup failed: checkpoint removed, no reference point kept")
        finally:
            self.ended = True
            self._lock.release()
        return refs


def _disk_files(session: LabBackupSession, folder: Path, vm: VMInfo) -> None:
    root = folder.resolve()
    for disk in vm.disks:
        if disk.pass_through:
            session.events.append("pass-through disk skipped: not readable at host level")
            continue
        if disk.error:
            raise InvalidVMConfig(f"VM {vm.name} cannot be backed up: {disk.error}")
        path = Path(disk.path).resolve()
        # Differencing disks need their parents; follow the chain inside the VM folder.
        for _depth in range(64):
            if not path.is_relative_to(root):  # e.g. a symlink pointing elsewhere
                raise InvalidVMConfig(f"{disk.path} resolves outside the VM's folder")
            name = str(PurePosixPath(path.relative_to(root)))
            session.add_file(name, path, "disk", disk.disk_id)
            if path.suffix.lower() != ".avhdx":
                break
            locator = read_layout(path).parent_locator.get("relative_path", "")
            parent = (path.parent / locator.replace("\\", "/")).resolve()
            if not locator or not parent.is_relative_to(root) or not parent.exists():
                raise InvalidVMConfig(f"{path.name}: parent disk {locator!r} not found in the VM")
            path = parent


def begin_lab_backup(
    host_folder: Path, vm_id: str, wanted: Consistency, *, lock_wait_seconds: float
) -> LabBackupSession:
    """Freeze VM ``vm_id`` of the lab host in ``host_folder`` and list what to read."""
    cfg = inventory.find_vm_config(host_folder, vm_id)
    host_cfg = config.load_host_config(host_folder)
    vm = inventory.vm_info(cfg, host_cfg)
    refusal = prerequisites.replica_refusal(vm)
    if refusal:
        raise BackupRefused(f"{vm.name} cannot be backed up now: {refusal}.")
    host = inventory.host_info(host_folder, host_cfg)
    consistency, offline, reasons = prerequisites.plan_consistency(vm, host, wanted)
    known = prerequisites.host_os(host)
    tracked = bool(known and known[1]) and (
        prerequisites.version_tuple(vm.configuration_version) >= prerequisites.RCT_MIN_CONFIG_VERSION
    )
    lock = VMLock(cfg.folder, f"backup of {vm.name}").acquire(lock_wait_seconds)
    session = LabBackupSession(
        vm,
        cfg.folder,
        lock,
        Consistency(consistency),
        offline,
        host_cfg.rct_history,
        tracked,
        host_cfg.read_bytes_per_second,
        host_folder,
    )
    try:
        session.events.append(f"{consistency}-consistent checkpoint: {'; '.join(reasons)}")
        if offline and vm.state == VMState.RUNNING:
            _saved_state_checkpoint(session, cfg.folder)
        _disk_files(session, cfg.folder, vm)
        session.add_file(VM_FILE, cfg.folder / VM_FILE, "config")
        for f in session.files:
            if session._is_tracked_disk(f):
                RCTJournal(cfg.folder / f.name, host_cfg.rct_history).load_or_start()
    except BaseException:
        session.ended = True
        lock.release()
        raise
    return session


def _saved_state_checkpoint(session: LabBackupSession, folder: Path) -> None:
    """MABS offline backup: save the VM, take the checkpoint, resume it at once."""
    started = time.monotonic()
    update_vm_json(folder, state=VMState.SAVED.value)
    try:
        session.events.append("VM put in saved state for the checkpoint (offline backup)")
    finally:
        update_vm_json(folder, state=VMState.RUNNING.value)
    session.events.append(f"VM resumed after {time.monotonic() - started:.2f} s in saved state")


def release_lab_references(
    cfg: config.LabVMConfig, references: Mapping[str, str], history: int, lock_wait_seconds: float
) -> list[str]:
    """Release the previous backup's RCT ids (file name -> id) in the disks' journals."""
    notes: list[str] = []
    root = cfg.folder.resolve()
    # Under the VM's lock: a guest write rewrites the same journal.
    with VMLock(cfg.folder, "releasing change-tracking references").acquire(lock_wait_seconds):
        for name, reference in sorted(references.items()):
            disk = (cfg.folder / name).resolve()
            if not disk.is_relative_to(root) or not disk.is_file():
                notes.append(f"Warning: {name} is no longer a disk of {cfg.name}; its reference was kept.")
                continue
            if RCTJournal(disk, history).release(reference):
                notes.append(f"{name}: previous change-tracking reference released.")
    return notes
