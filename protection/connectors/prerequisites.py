"""Backup prerequisites for a Hyper-V VM, after the MABS prerequisite table.

Source: "Back up Hyper-V virtual machines with Azure Backup Server", section
"Backup prerequisites" and "Back up replica virtual machines" (Microsoft Learn).
Each rule is a pure function over VMInfo + HostInfo returning Findings, so the
same rules serve the lab, the real Hyper-V connector and the protection wizard.
The session code reuses ``plan_consistency`` and ``replica_refusal`` so that what
the checks announce is exactly what a backup then does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence

from protection.connectors.protocol import (
    ControllerKind,
    CSVInfo,
    DiskFormat,
    DiskType,
    Finding,
    HostInfo,
    OSFamily,
    ReplicationHealth,
    ReplicationRole,
    Severity,
    StorageKind,
    VMInfo,
    VMState,
)

# Defaults for the AVHDX space rule: a busy server rewrites ~1 % of its disks per
# hour, and a host-level backup of a large VM can take several hours.
DEFAULT_CHURN_RATE = 0.01  # fraction of the disk size changed per hour
DEFAULT_BACKUP_WINDOW_HOURS = 4.0
MAX_PATH = 260
RCT_MIN_CONFIG_VERSION = (6, 2)

# Highest VM configuration version each host OS runs (Get-VMHostSupportedVersion),
# and whether its Hyper-V has RCT (Windows Server 2016 and later).
HOST_OS_TABLE: dict[str, tuple[tuple[int, int], bool]] = {
    "Windows Server 2012 R2": ((5, 0), False),
    "Windows Server 2016": ((8, 0), True),
    "Windows Server 2019": ((9, 0), True),
    "Windows Server 2022": ((10, 0), True),
    "Windows Server 2025": ((12, 0), True),
}

# Replica states in which Hyper-V cannot give even a crash-consistent copy.
REPLICA_REFUSED_STATES = {
    "resynchronizing": "the replica is resynchronizing",
    "resynchronizationrequired": "the replica needs resynchronization",
    "waitingforstartresynchronize": "the replica needs resynchronization",
    "resynchronizesuspended": "resynchronization of the replica is suspended",
    "readyforinitialreplication": "initial replication has not run yet",
    "waitingforinitialreplication": "initial replication is pending",
    "initialreplicationinprogress": "initial replication is in progress",
    "applyinglogs": "replication logs (.hrl) are being applied",
    "applylogsfailed": "applying replication logs (.hrl) failed or was interrupted",
    "preparedforfailover": "a failover is in progress",
    "failedoverwaitingcompletion": "a failover is waiting for completion",
    "failingover": "a failover is in progress",
    "migrating": "the replica VM is being migrated",
    "recoveryinprogress": "a recovery of the replica is in progress",
    "failbackinprogress": "a failback is in progress",
}


def version_tuple(text: str | None) -> tuple[int, ...]:
    if not text or not re.fullmatch(r"\d+(\.\d+)*", text):
        return ()
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # "10.0.20348.0" and "10.0.20348" are the same version
    return tuple(parts)


def host_os(host: HostInfo) -> tuple[tuple[int, int], bool] | None:
    return HOST_OS_TABLE.get(host.os_version.strip())


# --------------------------------------------------------------------------- rules


def check_integration_services(vm: VMInfo, host: HostInfo) -> list[Finding]:
    if vm.integration_services_version is None:
        return [
            Finding(
                "ic-missing",
                Severity.WARNING,
                f"{vm.name} reports no Hyper-V integration services, so the guest cannot "
                "take part in the backup; the VM will be put in saved state briefly.",
                "Install or enable the integration services (Backup / volume shadow copy) in the guest.",
            )
        ]
    if version_tuple(vm.integration_services_version) != version_tuple(host.integration_services_version):
        return [
            Finding(
                "ic-version-mismatch",
                Severity.WARNING,
                f"{vm.name} runs integration services {vm.integration_services_version}, "
                f"the host runs {host.integration_services_version}; they should be equal.",
                "Update the integration services in the guest (Windows Update, or the "
                "host's vmguest image on older hosts).",
            )
        ]
    return []


def avhdx_space_needed(vm: VMInfo, churn_rate: float, window_hours: float) -> int:
    """MABS: initial disk size x churn rate x backup window."""
    initial = sum(d.file_size or d.virtual_size for d in vm.disks if not d.pass_through)
    return int(initial * churn_rate * window_hours)


def check_free_space(
    vm: VMInfo,
    host: HostInfo,
    csv: CSVInfo | None = None,
    *,
    churn_rate: float = DEFAULT_CHURN_RATE,
    backup_window_hours: float = DEFAULT_BACKUP_WINDOW_HOURS,
) -> list[Finding]:
    if vm.storage_kind == StorageKind.SMB:
        return []  # the share's free space is not visible from the host inventory
    free = csv.free_bytes if vm.storage_kind == StorageKind.CSV and csv else host.free_bytes
    need = avhdx_space_needed(vm, churn_rate, backup_window_hours)
    if free >= need:
        return []
    return [
        Finding(
            "free-space-low",
            Severity.ERROR,
            f"The volume holding {vm.name}'s disks has {_size(free)} free; during a backup "
            f"Hyper-V needs about {_size(need)} for the checkpoint's differencing disks "
            f"({churn_rate:.1%} change per hour over {backup_window_hours:g} hours).",
            "Free space on that volume, or move the VM's storage to a larger volume.",
        )
    ]


def check_scsi_controller(vm: VMInfo, host: HostInfo) -> list[Finding]:
    if "2012 R2" not in host.os_version:
        return []
    if any(c.kind == ControllerKind.SCSI for c in vm.controllers):
        return []
    return [
        Finding(
            "scsi-controller-missing",
            Severity.WARNING,
            f"{vm.name} has no SCSI controller. On Windows Server 2012 R2 the host mounts a "
            "disk into the VM during an online backup, which needs one (event 10103); "
            "the VM will be put in saved state for each backup instead.",
            "Add a SCSI controller to the VM (it can stay empty).",
        )
    ]


def check_linux(vm: VMInfo) -> list[Finding]:
    if vm.os_family != OSFamily.LINUX:
        return []
    return [
        Finding(
            "linux-file-consistent",
            Severity.INFO,
            f"{vm.name} is a Linux guest: backups are file-system consistent, not application consistent.",
            "Nothing to do; quiesce databases with their own pre-freeze scripts if needed.",
        )
    ]


def check_pass_through(vm: VMInfo) -> list[Finding]:
    count = sum(1 for d in vm.disks if d.pass_through)
    if not count:
        return []
    return [
        Finding(
            "pass-through-disk",
            Severity.ERROR,
            f"{vm.name} has {count} pass-through disk(s); a host-level backup cannot read them, "
            "so their data would not be protected.",
            "Convert them to VHDX, or protect that data with a backup agent inside the guest.",
        )
    ]


def check_csv(vm: VMInfo, host: HostInfo, csv: CSVInfo | None) -> list[Finding]:
    if vm.storage_kind != StorageKind.CSV:
        return []
    provider = csv.hardware_vss_provider if csv else host.hardware_vss_provider
    if provider:
        return []
    return [
        Finding(
            "csv-no-hardware-vss",
            Severity.WARNING,
            f"{vm.name} lives on a Cluster Shared Volume without a hardware VSS provider; "
            "backups of VMs on the same CSV will run one after another and take longer.",
            "Install your SAN vendor's VSS hardware provider on every cluster node.",
        )
    ]


def check_smb(vm: VMInfo) -> list[Finding]:
    if vm.storage_kind != StorageKind.SMB:
        return []
    share = vm.smb_share
    if share is None:
        return [
            Finding(
                "smb-share-unknown",
                Severity.WARNING,
                f"{vm.name} is stored on an SMB share the host did not describe.",
                "Check that the share is on an SMB 3.0 file server.",
            )
        ]
    out = []
    if version_tuple(share.smb_version) < (3,):
        out.append(
            Finding(
                "smb-version-old",
                Severity.ERROR,
                f"{share.path} is served with SMB {share.smb_version}; Hyper-V over SMB "
                "needs SMB 3.0 or later.",
                "Move the VM to a share on a Windows Server 2012 or later file server.",
            )
        )
    server = share.path.lstrip("\\/").split("\\")[0].split("/")[0]
    try:
        ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        pass
    else:
        out.append(
            Finding(
                "smb-ip-address",
                Severity.ERROR,
                f"{share.path} names the file server by IP address, which is not supported.",
                "Use the file server's DNS name in the VM's storage path.",
            )
        )
    if not share.host_has_full_control:
        out.append(
            Finding(
                "smb-permissions",
                Severity.WARNING,
                f"The Hyper-V host's computer account may lack full control on {share.path}.",
                "Grant every Hyper-V host's machine$ account full control on the share "
                "and its folder, and enable the File Server VSS Agent service.",
            )
        )
    return out


def check_recovery_path(path: str, file_names: Sequence[str]) -> list[Finding]:
    longest = max((f"{path.rstrip('/\\')}\\{n}" for n in file_names), key=len, default=path)
    if len(longest) < MAX_PATH:
        return []
    return [
        Finding(
            "recovery-path-too-long",
            Severity.ERROR,
            f"Restoring to {path} gives file paths of {len(longest)} characters; Hyper-V "
            f"cannot register a VM whose files have paths of {MAX_PATH} characters or more.",
            "Choose a shorter destination folder.",
        )
    ]


def check_versions(vm: VMInfo, host: HostInfo) -> list[Finding]:
    out = []
    known = host_os(host)
    config = version_tuple(vm.configuration_version)
    if vm.generation not in (1, 2):
        out.append(
            Finding(
                "generation-unsupported",
                Severity.ERROR,
                f"{vm.name} reports generation {vm.generation}; only 1 and 2 exist.",
                "Check the VM's configuration on the host.",
            )
        )
    if known is None:
        out.append(
            Finding(
                "host-os-unknown",
                Severity.INFO,
                f"Host OS {host.os_version!r} is not in the tested list; version checks skipped.",
                "Nothing to do if backups succeed.",
            )
        )
        return out
    max_config, has_rct = known
    if config > max_config or config < (5,):
        out.append(
            Finding(
                "config-version-unsupported",
                Severity.ERROR,
                f"{vm.name} has configuration version {vm.configuration_version}, which "
                f"{host.os_version} does not run.",
                "Move the VM to a host that supports this configuration version.",
            )
        )
    elif has_rct and config < RCT_MIN_CONFIG_VERSION:
        out.append(
            Finding(
                "rct-unavailable",
                Severity.WARNING,
                f"{vm.name} has configuration version {vm.configuration_version}; change "
                "tracking (RCT) needs 6.2 or later, so every backup reads the whole disks.",
                "Shut the VM down and run Update-VMVersion on it.",
            )
        )
    elif not has_rct:
        out.append(
            Finding(
                "rct-unavailable-host",
                Severity.INFO,
                f"{host.os_version} has no resilient change tracking; every backup reads the whole disks.",
                "Upgrade the host to Windows Server 2016 or later.",
            )
        )
    if vm.generation == 2 and host.os_version.strip() == "Windows Server 2012":
        out.append(
            Finding(
                "generation-unsupported",
                Severity.ERROR,
                "Generation 2 VMs need Windows Server 2012 R2 or later.",
                "Move the VM to a newer host.",
            )
        )
    return out


def check_disks(vm: VMInfo) -> list[Finding]:
    out = [
        Finding(
            "disk-unusable",
            Severity.ERROR,
            f"{vm.name}: {d.error}",
            "Restore or repair the virtual disk file before protecting this VM.",
        )
        for d in vm.disks
        if d.error
    ]
    if not vm.disks:
        out.append(
            Finding(
                "no-disks",
                Severity.WARNING,
                f"{vm.name} has no virtual disks; only its configuration would be protected.",
                "Attach the VM's disks, or leave it out of protection.",
            )
        )
    if any(d.format == DiskFormat.VHD for d in vm.disks):
        out.append(
            Finding(
                "vhd-no-rct",
                Severity.INFO,
                f"{vm.name} uses legacy .vhd disks, which have no change tracking; every "
                "backup reads them whole.",
                "Convert the disks to VHDX (Convert-VHD) while the VM is off.",
            )
        )
    if any(d.type == DiskType.DIFFERENCING for d in vm.disks):
        out.append(
            Finding(
                "checkpoints-present",
                Severity.INFO,
                f"{vm.name} runs on checkpoints (.avhdx); backups store the chain as it is, "
                "not the checkpoint tree.",
                "Delete checkpoints you no longer need so Hyper-V merges them.",
            )
        )
    return out


def replica_refusal(vm: VMInfo) -> str | None:
    """Why a replica VM cannot be backed up right now, or None."""
    if vm.replication.role != ReplicationRole.REPLICA:
        return None
    if vm.replication.health == ReplicationHealth.CRITICAL:
        return "the replica VM is unhealthy (replication health is Critical)"
    key = vm.replication.state.replace(" ", "").lower()
    return REPLICA_REFUSED_STATES.get(key)


def check_replica(vm: VMInfo) -> list[Finding]:
    if vm.replication.role != ReplicationRole.REPLICA:
        return []
    reason = replica_refusal(vm)
    if reason:
        return [
            Finding(
                "replica-not-ready",
                Severity.ERROR,
                f"{vm.name} is a Hyper-V Replica and cannot be backed up now: {reason}.",
                "Wait for replication to be healthy (Replicating, Normal) and retry.",
            )
        ]
    return [
        Finding(
            "replica-crash-consistent",
            Severity.INFO,
            f"{vm.name} is a Hyper-V Replica: its backups are crash-consistent only.",
            "Back up the primary VM if you need application-consistent recovery points.",
        )
    ]


def online_backup_blockers(vm: VMInfo, host: HostInfo) -> list[str]:
    """Why a running VM cannot be backed up online (with the guest's help)."""
    reasons = []
    if vm.integration_services_version is None:
        reasons.append("integration services are not running in the guest")
    if not vm.vss_capable:
        reasons.append("the guest cannot quiesce its file systems (no backup integration)")
    if check_scsi_controller(vm, host):
        reasons.append("the VM has no SCSI controller (Windows Server 2012 R2)")
    return reasons


def plan_consistency(vm: VMInfo, host: HostInfo, wanted: str) -> tuple[str, bool, list[str]]:
    """(consistency, offline, reasons): what a checkpoint of this VM will achieve.

    ``offline`` means the VM is (or will briefly be put) in saved state, the way
    MABS backs up a VM that cannot take part in an online backup.
    """
    if vm.replication.role == ReplicationRole.REPLICA:
        return "crash", False, ["replica VMs are crash-consistent only"]
    if vm.state == VMState.OFF:
        return "crash", False, ["the VM is off; its disks are at rest"]
    if vm.state in (VMState.SAVED, VMState.PAUSED):
        return "crash", True, [f"the VM is {vm.state.value.lower()}; no guest to quiesce"]
    if wanted == "crash":
        return "crash", False, ["crash-consistent backup requested"]
    blockers = online_backup_blockers(vm, host)
    if blockers:
        return "crash", True, blockers
    if vm.os_family == OSFamily.LINUX:
        return "file", False, ["Linux guests freeze their file systems (file-consistent)"]
    return "application", False, ["guest VSS through the integration services"]


def check_state(vm: VMInfo, host: HostInfo) -> list[Finding]:
    consistency, offline, reasons = plan_consistency(vm, host, "application")
    if not offline:
        return []
    if vm.state == VMState.RUNNING:
        message = (
            f"{vm.name} cannot be backed up online ({'; '.join(reasons)}); it will be put "
            "in saved state for a moment at each backup and the backup is crash-consistent."
        )
    else:
        message = f"{vm.name} is {vm.state.value.lower()}: its backups are {consistency}-consistent."
    return [
        Finding(
            "offline-backup",
            Severity.WARNING,
            message,
            "Start the VM and make sure its integration services (backup) are running.",
        )
    ]


Rule = Callable[[], list[Finding]]


def check_vm(
    vm: VMInfo,
    host: HostInfo,
    *,
    csv: CSVInfo | None = None,
    churn_rate: float = DEFAULT_CHURN_RATE,
    backup_window_hours: float = DEFAULT_BACKUP_WINDOW_HOURS,
    recovery_path: str | None = None,
) -> list[Finding]:
    """Every rule, errors first."""
    findings = [
        *check_disks(vm),
        *check_integration_services(vm, host),
        *check_free_space(vm, host, csv, churn_rate=churn_rate, backup_window_hours=backup_window_hours),
        *check_scsi_controller(vm, host),
        *check_linux(vm),
        *check_pass_through(vm),
        *check_csv(vm, host, csv),
        *check_smb(vm),
        *check_versions(vm, host),
        *check_replica(vm),
        *check_state(vm, host),
    ]
    if recovery_path is not None:
        names = [d.path.replace("\\", "/").rsplit("/", 1)[-1] for d in vm.disks if d.path]
        findings += check_recovery_path(recovery_path, names)
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(findings, key=lambda f: order[f.severity])


def check_vm_on_host(
    vm: VMInfo,
    host: HostInfo,
    csvs: Iterable[CSVInfo],
    *,
    churn_rate: float = DEFAULT_CHURN_RATE,
    backup_window_hours: float = DEFAULT_BACKUP_WINDOW_HOURS,
    recovery_path: str | None = None,
) -> list[Finding]:
    """``check_vm`` with the cluster shared volume the VM lives on found among the host's."""
    by_name = {csv.name: csv for csv in csvs}
    return check_vm(
        vm,
        host,
        csv=by_name.get(vm.csv or ""),
        churn_rate=churn_rate,
        backup_window_hours=backup_window_hours,
        recovery_path=recovery_path,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"
