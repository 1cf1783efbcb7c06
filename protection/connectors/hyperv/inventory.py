"""The inventory script's JSON (scripts/inventory.ps1) as the protocol's values.

Parsing is strict: a missing field or a value of the wrong type becomes a
ProtocolError that names the field (``vms[2].generation``), never a KeyError
deep inside a job. What the host reports about a single broken disk (Get-VHD
failed) is kept as that disk's ``error`` and a finding: one broken VM never
hides the others.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from protection.connectors.hyperv.errors import ProtocolError
from protection.connectors.protocol import (
    ControllerInfo,
    ControllerKind,
    CSVInfo,
    DiskFormat,
    DiskInfo,
    DiskType,
    Finding,
    HostInfo,
    HostInventory,
    OSFamily,
    ReplicationHealth,
    ReplicationInfo,
    ReplicationRole,
    Severity,
    SMBShareInfo,
    StorageKind,
    VMInfo,
    VMState,
)

# Windows Server release by build number (what Win32_OperatingSystem.BuildNumber says).
SERVER_BUILDS = {
    9600: "Windows Server 2012 R2",
    14393: "Windows Server 2016",
    17763: "Windows Server 2019",
    20348: "Windows Server 2022",
    26100: "Windows Server 2025",
}
# The "Backup (volume shadow copy)" integration service; its display name is localized.
VSS_SERVICE_ID = "35fa2e29-ea23-4236-96ae-3a6ebacba440"
LINUX_NAMES = re.compile(
    r"linux|ubuntu|debian|red ?hat|rhel|centos|suse|fedora|oracle|rocky|alma|gentoo|arch", re.IGNORECASE
)
_CAPTION_RE = re.compile(r"Windows Server (\d{4}(?: R2)?)")


class Record:
    """Typed access to one JSON object of the inventory; complaints name the field."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise ProtocolError(f"Host inventory: {where} must be an object, not {type(data).__name__}.")
        self.data, self.where = data, where

    def fail(self, name: str, why: str) -> ProtocolError:
        return ProtocolError(f"Host inventory: {self.where}.{name} {why}.")

    def _get(self, name: str) -> Any:
        if name not in self.data:
            raise self.fail(name, "is missing")
        return self.data[name]

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, not {_kind(value)}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string or null, not {_kind(value)}")
        return value

    def integer(self, name: str) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, not {_kind(value)}")
        return value

    def optional_integer(self, name: str) -> int | None:
        if self.data.get(name) is None:
            return None
        return self.integer(name)

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, not {_kind(value)}")
        return value

    def records(self, name: str) -> list[Record]:
        value = self._get(name)
        if value is None:
            return []
        if isinstance(value, dict):  # a one-element list may reach us unwrapped
            value = [value]
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list, not {_kind(value)}")
        return [Record(item, f"{name}[{i}]") for i, item in enumerate(value)]

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of strings")
        return value

    def guid(self, name: str) -> str:
        value = self.text(name)
        try:
            return str(uuid.UUID(value.strip("{}")))
        except ValueError:
            raise self.fail(name, f"must be a GUID, not {value!r}") from None


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]


def windows_server_name(build: int, caption: str) -> str:
    """'Windows Server 2022' from the build (or the caption for builds we do not know)."""
    if build in SERVER_BUILDS:
        return SERVER_BUILDS[build]
    match = _CAPTION_RE.search(caption)
    return f"Windows Server {match.group(1)}" if match else caption.replace("Microsoft ", "").strip()


def vm_state(text: str) -> VMState:
    """Hyper-V has more states than the protocol; the transitional ones count as running."""
    lowered = text.lower()
    if lowered.startswith("off"):
        return VMState.OFF
    if lowered.startswith("saved"):
        return VMState.SAVED
    if lowered.startswith("paused"):
        return VMState.PAUSED
    return VMState.RUNNING


def _replication_role(mode: str, record: Record) -> ReplicationRole:
    table = {
        "none": ReplicationRole.NONE,
        "": ReplicationRole.NONE,
        "primary": ReplicationRole.PRIMARY,
        "replica": ReplicationRole.REPLICA,
        "extendedreplica": ReplicationRole.REPLICA,
        "testreplica": ReplicationRole.REPLICA,
    }
    if mode.lower() not in table:
        raise record.fail("replication_mode", f"is not a replication mode Hyper-V reports: {mode!r}")
    return table[mode.lower()]


def _replication_health(health: str, record: Record) -> ReplicationHealth:
    for member in ReplicationHealth:
        if member.value.lower() == health.lower():
            return member
    if not health:
        return ReplicationHealth.NOT_APPLICABLE
    raise record.fail("replication_health", f"is not a replication health Hyper-V reports: {health!r}")


def _ic_version(text: str | None) -> str | None:
    """None when the guest reports no integration services ('0.0' or nothing)."""
    if not text or not re.fullmatch(r"\d+(\.\d+)*", text) or not any(int(p) for p in text.split(".")):
        return None
    return text


def os_family(guest_os: str) -> OSFamily:
    """From the guest's KVP OSName; a guest that reports nothing is taken as Windows."""
    if guest_os and "windows" not in guest_os.lower() and LINUX_NAMES.search(guest_os):
        return OSFamily.LINUX
    return OSFamily.WINDOWS


def parse_disk(d: Record) -> DiskInfo:
    controller_text = d.text("controller_type").upper()
    if controller_text not in ("IDE", "SCSI"):
        raise d.fail("controller_type", f"must be IDE or SCSI, not {controller_text!r}")
    base = DiskInfo(
        path="",
        format=None,
        type=DiskType.DYNAMIC,
        virtual_size=d.integer("size"),
        file_size=0,
        controller=ControllerKind(controller_text),
        controller_number=d.integer("controller_number"),
        controller_location=d.integer("controller_location"),
    )
    if d.optional_integer("disk_number") is not None:
        return replace(base, type=DiskType.PASS_THROUGH, pass_through=True)
    path = d.text("path")
    if not path:
        raise d.fail("path", "is empty for a disk that is not pass-through")
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    fmt = DiskFormat(suffix) if suffix in ("vhdx", "avhdx", "vhd") else None
    error = d.optional_text("error")
    if fmt is None and error is None:
        error = f"{path} is not a .vhdx, .avhdx or .vhd file"
    vhd_type = (d.optional_text("vhd_type") or "").lower()
    kind = {"dynamic": DiskType.DYNAMIC, "fixed": DiskType.FIXED, "differencing": DiskType.DIFFERENCING}
    if vhd_type and vhd_type not in kind:
        raise d.fail("vhd_type", f"must be Dynamic, Fixed or Differencing, not {vhd_type!r}")
    identifier = d.optional_text("disk_identifier")
    return replace(
        base,
        path=path,
        format=fmt,
        type=kind.get(vhd_type, DiskType.DYNAMIC),
        file_size=d.integer("file_size"),
        disk_id=identifier.strip("{}").lower() if identifier else "",
        parent_path=d.optional_text("parent_path"),
        error=error,
    )


def _storage(paths: Iterable[str], csvs: tuple[CSVInfo, ...]) -> tuple[StorageKind, str | None]:
    """Where a VM's files live: an SMB share, a cluster shared volume, or a local volume."""
    for path in paths:
        lowered = path.lower()
        if lowered.startswith("\\\\"):
            return StorageKind.SMB, None
        for csv in csvs:
            if csv.path and lowered.startswith(csv.path.lower().rstrip("\\") + "\\"):
                return StorageKind.CSV, csv.name
        if ":\\clusterstorage\\" in lowered:
            return StorageKind.CSV, None
    return StorageKind.LOCAL, None


def _smb_share(path: str, dialect: str | None) -> SMBShareInfo:
    server, _sep, rest = path.lstrip("\\").partition("\\")
    share = rest.split("\\", 1)[0]
    # Hyper-V runs VMs only from SMB 3 shares, so a running VM proves at least 3.0
    # even when the host has no open connection to report the dialect of.
    return SMBShareInfo(f"\\\\{server}\\{share}", dialect or "3.0", host_has_full_control=False)


def parse_inventory(result: Any) -> HostInventory:
    """HostInventory from the ``result`` of scripts/inventory.ps1."""
    top = Record(result, "result")
    h = Record(top._get("host"), "host")
    host_name = h.text("name")
    cluster_name = h.optional_text("cluster_name")
    hardware_vss = h.flag("hardware_vss_provider")
    volumes = {v.text("id"): v.integer("free") for v in top.records("volumes")}
    csvs = tuple(
        CSVInfo(
            name=c.text("name"),
            path=c.text("path"),
            owner_node=c.text("owner_node"),
            hardware_vss_provider=hardware_vss,
            capacity_bytes=c.integer("size"),
            free_bytes=c.integer("free"),
        )
        for c in top.records("csvs")
    )
    by_vm: dict[str, dict[str, list[Record]]] = {}
    for key in ("controllers", "disks", "integration_services", "replications"):
        for item in top.records(key):
            by_vm.setdefault(item.guid("vm_id"), {}).setdefault(key, []).append(item)

    vms: list[VMInfo] = []
    findings: list[Finding] = []
    used_volumes: set[str | None] = set()
    for v in top.records("vms"):
        vm_id = v.guid("id")
        parts = by_vm.get(vm_id, {})
        disks = tuple(parse_disk(d) for d in parts.get("disks", []))
        for d in parts.get("disks", []):
            if d.optional_text("volume_id"):
                used_volumes.add(d.optional_text("volume_id"))
        if v.optional_text("volume_id"):
            used_volumes.add(v.optional_text("volume_id"))
        vm = _parse_vm(v, vm_id, parts, disks, h, csvs)
        vms.append(vm)
        findings.extend(
            Finding(
                "disk-unusable",
                Severity.ERROR,
                f"VM {vm.name}: {disk.error}",
                "Restore or repair the virtual disk file before protecting this VM.",
            )
            for disk in vm.disks
            if disk.error
        )
    # The free space that matters is the fullest volume holding local VM files.
    local = [volumes[v] for v in used_volumes if v in volumes]
    default = h.optional_text("default_volume_id")
    if local:
        free = min(local)
    elif default in volumes:
        free = volumes[default or ""]
    else:
        free = max(volumes.values(), default=0)
    host = HostInfo(
        name=host_name,
        os_version=windows_server_name(h.integer("os_build"), h.text("os_caption")),
        integration_services_version=h.text("integration_services_version"),
        free_bytes=free,
        hardware_vss_provider=hardware_vss,
        cluster_name=cluster_name,
        nodes=tuple(h.strings("nodes")) or (host_name,),
    )
    return HostInventory(
        host=host, cluster_name=cluster_name, csvs=csvs, vms=tuple(vms), findings=tuple(findings)
    )


def _parse_vm(
    v: Record,
    vm_id: str,
    parts: dict[str, list[Record]],
    disks: tuple[DiskInfo, ...],
    h: Record,
    csvs: tuple[CSVInfo, ...],
) -> VMInfo:
    generation = v.integer("generation")
    if generation not in (1, 2):
        raise v.fail("generation", f"must be 1 or 2, not {generation}")
    controllers = []
    for c in parts.get("controllers", []):
        kind = c.text("kind").upper()
        if kind not in ("IDE", "SCSI"):
            raise c.fail("kind", f"must be IDE or SCSI, not {kind!r}")
        controllers.append(ControllerInfo(ControllerKind(kind), c.integer("number")))
    role = _replication_role(v.text("replication_mode"), v)
    health = _replication_health(v.text("replication_health"), v)
    state = v.text("replication_state") or "Disabled"
    for r in parts.get("replications", []):  # Get-VMReplication is the more precise source
        state = r.text("state") or state
        health = _replication_health(r.text("health"), r)
    vss = any(
        (s.text("id").lower().endswith(VSS_SERVICE_ID) or "shadow" in s.text("name").lower())
        and s.flag("enabled")
        and s.text("status").upper() == "OK"
        for s in parts.get("integration_services", [])
    )
    path = v.text("path")
    storage, csv_name = _storage([d.path for d in disks if d.path] + [path], csvs)
    clustered = v.flag("is_clustered")
    return VMInfo(
        id=vm_id,
        name=v.text("name"),
        host=v.optional_text("computer_name") or h.text("name"),
        state=vm_state(v.text("state")),
        generation=generation,
        configuration_version=v.text("configuration_version"),
        integration_services_version=_ic_version(v.optional_text("integration_services_version")),
        host_integration_services_version=h.text("integration_services_version"),
        os_family=os_family(v.optional_text("guest_os") or ""),
        controllers=tuple(controllers),
        disks=disks,
        replication=ReplicationInfo(role, health, state),
        storage_kind=storage,
        vss_capable=vss,
        path=path,
        highly_available=clustered,
        cluster=h.optional_text("cluster_name") if clustered else None,
        csv=csv_name,
        smb_share=_smb_share(path, v.optional_text("smb_dialect")) if storage == StorageKind.SMB else None,
    )
