"""The Connector protocol: the only surface the protection jobs use to drive a host.

Implementations live in subpackages (``lab/``: a Hyper-V host emulated in a local
folder; ``hyperv/``: WinRM + SMB) and are found by kind through
``registry.get_connector``. This module holds only the values, the errors and the
Protocol, so every connector and every caller can import it. Everything that
crosses this boundary is a plain, typed, immutable value so that jobs, views and
tests never depend on which implementation produced it.

Ranges are always ``(offset, length)`` tuples in bytes. Ranges returned by a
backup session are FILE offsets of the file being read (never virtual-disk
offsets), sorted and non-overlapping, ready for the engine.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from protection.connectors.ranges import Range


class VMState(enum.StrEnum):
    RUNNING = "Running"
    OFF = "Off"
    SAVED = "Saved"
    PAUSED = "Paused"


class OSFamily(enum.StrEnum):
    WINDOWS = "windows"
    LINUX = "linux"


class DiskFormat(enum.StrEnum):
    VHDX = "vhdx"
    AVHDX = "avhdx"
    VHD = "vhd"


class DiskType(enum.StrEnum):
    DYNAMIC = "dynamic"
    FIXED = "fixed"
    DIFFERENCING = "differencing"
    PASS_THROUGH = "pass-through"  # noqa: S105 (not a password)


class ControllerKind(enum.StrEnum):
    IDE = "IDE"
    SCSI = "SCSI"


class ReplicationRole(enum.StrEnum):
    NONE = "none"
    PRIMARY = "primary"
    REPLICA = "replica"


class ReplicationHealth(enum.StrEnum):
    NOT_APPLICABLE = "NotApplicable"
    NORMAL = "Normal"
    WARNING = "Warning"
    CRITICAL = "Critical"


class StorageKind(enum.StrEnum):
    LOCAL = "local"
    CSV = "csv"
    SMB = "smb"


class Consistency(enum.StrEnum):
    APPLICATION = "application"  # guest VSS through the integration services
    FILE = "file"  # Linux guest: file-system freeze, no application writers
    CRASH = "crash"  # as if the power had been cut at the checkpoint instant


class Severity(enum.StrEnum):
    ERROR = "error"  # protection cannot work until this is fixed
    WARNING = "warning"  # protection works, but worse than the administrator may expect
    INFO = "info"


# --------------------------------------------------------------------------- errors


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose; message is plain language."""


class HostUnreachable(ConnectorError):
    pass


class VMNotFound(ConnectorError):
    pass


class ChangeTrackingLost(ConnectorError):
    """The RCT reference is unknown or stale: read the whole file and mark the run
    as a consistency check."""


class BackupRefused(ConnectorError):
    """The host will not back this VM up now (unhealthy replica, busy VM, ...)."""


class InvalidVMConfig(ConnectorError):
    pass


class RestoreRefused(ConnectorError):
    pass


class UnsupportedConnector(ConnectorError):
    pass


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable identifier, e.g. "ic-version-mismatch"; tests and UI key on it
    severity: Severity
    message: str  # what is wrong, in plain language
    fix: str  # what the administrator should do about it


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    kind: ControllerKind
    number: int


@dataclass(frozen=True, slots=True)
class DiskInfo:
    path: str  # host path of the disk file ("" for a pass-through disk)
    format: DiskFormat | None  # None for pass-through disks
    type: DiskType
    virtual_size: int
    file_size: int
    controller: ControllerKind
    controller_number: int
    controller_location: int
    pass_through: bool = False
    disk_id: str = ""  # VHDX virtual disk id when the file could be read
    parent_path: str | None = None  # differencing disks only
    # Why the file could not be used (missing, corrupt, truncated); None when fine.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicationInfo:
    role: ReplicationRole = ReplicationRole.NONE
    health: ReplicationHealth = ReplicationHealth.NOT_APPLICABLE
    # Hyper-V's ReplicationState as a string (Replicating, Resynchronizing, ...).
    state: str = "Disabled"


@dataclass(frozen=True, slots=True)
class SMBShareInfo:
    path: str  # \\server\share
    smb_version: str  # dialect, e.g. "3.1.1"
    host_has_full_control: bool


@dataclass(frozen=True, slots=True)
class VMInfo:
    id: str  # Hyper-V VMId GUID, lower case
    name: str
    host: str  # owner node
    state: VMState
    generation: int
    configuration_version: str
    integration_services_version: str | None  # None: not installed / not reported
    host_integration_services_version: str
    os_family: OSFamily
    controllers: tuple[ControllerInfo, ...]
    disks: tuple[DiskInfo, ...]
    replication: ReplicationInfo
    storage_kind: StorageKind
    vss_capable: bool
    path: str  # VM configuration folder on the host
    highly_available: bool = False
    cluster: str | None = None
    csv: str | None = None  # CSV name when storage_kind is csv
    smb_share: SMBShareInfo | None = None


@dataclass(frozen=True, slots=True)
class CSVInfo:
    name: str
    path: str
    owner_node: str
    hardware_vss_provider: bool
    capacity_bytes: int = 0
    free_bytes: int = 0


@dataclass(frozen=True, slots=True)
class HostInfo:
    name: str
    os_version: str  # e.g. "Windows Server 2022"
    integration_services_version: str
    free_bytes: int  # free space on the volume that holds the VHDs
    hardware_vss_provider: bool = False
    cluster_name: str | None = None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostInventory:
    host: HostInfo
    cluster_name: str | None
    csvs: tuple[CSVInfo, ...]
    vms: tuple[VMInfo, ...]
    # Problems met while reading the host (a VM folder that cannot be read, ...):
    # inventory never fails because one VM is broken.
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    ok: bool
    message: str
    host_name: str = ""
    os_version: str = ""


@dataclass(slots=True)
class BackupFile:
    name: str  # relative name, stable between backups of the same VM
    size: int
    kind: str  # "disk" or "config"
    opener: Callable[[], BinaryIO] = field(repr=False)
    disk_id: str = ""

    def open(self) -> BinaryIO:
        """A binary, seekable, read-only file object over the frozen file."""
        return self.opener()


@runtime_checkable
class BackupSession(Protocol):
    session_id: str
    vm: VMInfo
    consistency: Consistency
    offline: bool  # True when the VM was put in saved state for the checkpoint
    files: list[BackupFile]
    events: list[str]  # what the host did, in order, for the job log

    def changed_ranges(self, file_name: str, since_reference: str | None) -> list[Range] | None:
        """FILE ranges to re-read since ``since_reference``; None = no tracking, read it all.

        Raises ChangeTrackingLost when the reference is unknown or stale.
        """
        ...

    def excluded_ranges(self, file_name: str) -> list[Range]:
        """FILE ranges whose content need not be kept (guest page/hibernation files)."""
        ...

    def bytes_read_from_host(self) -> int | None:
        """Bytes this session has read from the host over the network (file data, read-ahead
        and the disk structures read to map changes), or None when the files are read where
        they are and the engine's own count is the figure."""
        ...


class EndsAsFailedOnExit:
    """Base of the connectors' backup sessions: used in a ``with`` block, a session that is
    still open when the block exits ends as a failed backup (``finish(ok=False)``)."""

    ended: bool

    def finish(self, ok: bool) -> dict[str, str]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.ended:
            self.finish(ok=False)


@dataclass(frozen=True, slots=True)
class RestoreTarget:
    """Where restore_vm writes.

    ``original``: back into the VM's own folder on its own host, same VM id.
    ``alternate``: ``host_address`` (another host of the same connector kind) and
    ``path`` on it; the VM is registered as a new VM with a new id, not highly available.
    """

    mode: str  # "original" | "alternate"
    host_address: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class RestoreResult:
    vm: VMInfo
    files_written: tuple[str, ...]
    new_registration: bool


FileSource = Callable[[], BinaryIO]


@runtime_checkable
class Connector(Protocol):
    kind: str
    address: str

    def test_connection(self) -> ConnectionTest: ...

    def inventory(self) -> HostInventory: ...

    def get_vm(self, vm_id: str) -> VMInfo: ...

    def prerequisites(
        self,
        vm_id: str,
        *,
        churn_rate: float = ...,
        backup_window_hours: float = ...,
        recovery_path: str | None = None,
    ) -> list[Finding]: ...

    def begin_backup(self, vm_id: str, consistency_wanted: Consistency) -> BackupSession: ...

    def end_backup(self, session: BackupSession, ok: bool) -> dict[str, str]: ...

    def release_references(self, vm_id: str, references: Mapping[str, str]) -> list[str]:
        """Release the previous backup's change-tracking references (file name -> reference),
        no longer needed now that a newer recovery point is committed.

        Called only after that commit, so a crash before it leaves the older reference
        usable. Never raises for a reference that cannot be released: returns notes for
        the job log, a failure among them as a warning (the new point is already safe).
        """
        ...

    def check_restore_target(
        self, vm_id: str, target: RestoreTarget, file_names: Sequence[str]
    ) -> list[Finding]: ...

    def restore_vm(
        self, vm_id: str, files: Mapping[str, FileSource], target: RestoreTarget
    ) -> RestoreResult: ...
