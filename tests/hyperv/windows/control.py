"""test-connection and inventory as an emulated Hyper-V host answers them.

The answers have the exact shape scripts/test-connection.ps1 and
scripts/inventory.ps1 print on Windows, built from the lab host folder:
``host.json`` gives the host, each ``vm.json`` a VM, and the VHDX files
themselves what Get-VHD would say (read by the lab's own disk code). Paths are
Windows paths of the emulated host: its ``C:\\`` is ``host.drive_root``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from protection.connectors.hyperv.inventory import SERVER_BUILDS, VSS_SERVICE_ID
from protection.connectors.lab.config import LabVMConfig
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.host import HOST_DEFAULTS
from protection.connectors.lab.inventory import describe_disk
from protection.connectors.protocol import DiskFormat, DiskType, ReplicationRole

VOLUME_ID = "\\\\?\\Volume{6d0b3c8e-0000-0000-0000-100000000000}\\"
BUILDS = {name: build for build, name in SERVER_BUILDS.items()}
GUEST_OS = {"windows": "Windows Server 2022 Datacenter", "linux": "Ubuntu 24.04.1 LTS"}
REPLICATION_MODES = {
    ReplicationRole.NONE: "None",
    ReplicationRole.PRIMARY: "Primary",
    ReplicationRole.REPLICA: "Replica",
}


class HostRefusal(Exception):
    """A failure the real script reports as {"ok": false, "error": {"kind", "message"}}."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def windows_path(host: Any, path: Path) -> str:
    """The emulated host's Windows path of a lab file (C:\\ is host.drive_root)."""
    relative = PurePosixPath(Path(path).resolve().relative_to(Path(host.drive_root).resolve()))
    return "C:\\" + "\\".join(relative.parts)


def _computer_name(connector: LabConnector) -> str:
    return connector.host_config().name.split(".")[0].upper()


def os_facts(connector: LabConnector) -> dict[str, Any]:
    """What Get-HostOsFacts (scripts/_common.ps1) returns for the lab host."""
    host = connector.host_config()
    build = BUILDS.get(host.os_version, 20348)
    ic_version = (
        host.integration_services_version or HOST_DEFAULTS.get(host.os_version, ("10.0.20348", ""))[0]
    )
    return {
        "os_caption": f"Microsoft {host.os_version} Datacenter",
        "os_version": f"{'6.3' if build < 10000 else '10.0'}.{build}",
        "os_build": build,
        "integration_services_version": ic_version,
    }


def test_connection(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    connector = LabConnector(host.lab_root)
    name = _computer_name(connector)
    user = host.current_user
    if not host.hyperv_installed:
        raise HostRefusal(
            "NotHyperV", f"{name} does not have the Hyper-V role (no Virtual Machine Management service)."
        )
    is_admin, is_hyperv_admin = host.is_admin(user), host.is_hyperv_admin(user)
    if not is_admin and not is_hyperv_admin:
        raise HostRefusal(
            "AccessDenied",
            f"{user} is neither a local Administrator nor a member of Hyper-V Administrators on {name}.",
        )
    config = connector.host_config()
    return {
        **os_facts(connector),
        "computer_name": name,
        "fqdn": config.name,
        "part_of_domain": False,
        "domain": "WORKGROUP",
        "powershell_version": "5.1.20348.2849",
        "user": user,
        "is_admin": is_admin,
        "is_hyperv_admin": is_hyperv_admin,
        "hyperv_module_version": "2.0.0.0",
        "wmi_namespace": True,
        "cluster_name": config.cluster_name,
    }


def _disk_record(host: Any, cfg: LabVMConfig, index: int) -> dict[str, Any]:
    lab_disk = cfg.disks[index]
    info = describe_disk(cfg.folder, lab_disk)
    record: dict[str, Any] = {
        "vm_id": cfg.id,
        "controller_type": info.controller.value,
        "controller_number": info.controller_number,
        "controller_location": info.controller_location,
        "path": "",
        "disk_number": None,
        "vhd_format": None,
        "vhd_type": None,
        "size": info.virtual_size,
        "file_size": 0,
        "parent_path": None,
        "disk_identifier": None,
        "volume_id": None,
        "error": None,
    }
    if info.pass_through:
        record["disk_number"] = 2 + index
        return record
    record.update(
        path=windows_path(host, Path(info.path)),
        file_size=info.file_size,
        volume_id=VOLUME_ID,
        error=info.error,
    )
    if info.format is not None:
        record["vhd_format"] = "VHD" if info.format == DiskFormat.VHD else "VHDX"
    record["vhd_type"] = {
        DiskType.DYNAMIC: "Dynamic",
        DiskType.FIXED: "Fixed",
        DiskType.DIFFERENCING: "Differencing",
    }.get(info.type)
    if info.parent_path:
        record["parent_path"] = windows_path(host, Path(info.parent_path))
    if info.disk_id:
        record["disk_identifier"] = str(uuid.UUID(info.disk_id)).upper()
    return record


def _services(cfg: LabVMConfig) -> list[dict[str, Any]]:
    contact = cfg.state.value == "Running"
    services = [
        ("Guest Service Interface", "6C09BB55-D683-4DA0-8931-C9BF705F6480", False),
        ("Heartbeat", "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47", True),
        ("Key-Value Pair Exchange", "2A34B1C2-FD73-4043-8A5B-DD2159BC743F", True),
        ("Shutdown", "9F8233AC-BE49-4C79-8EE3-E7E1985B2077", True),
        ("Time Synchronization", "2497F4DE-E9FA-4204-80E4-4B75C46419C0", True),
        ("Backup (volume shadow copy)", VSS_SERVICE_ID.upper(), cfg.vss_capable),
    ]
    return [
        {
            "vm_id": cfg.id,
            "name": name,
            "id": f"Microsoft:{cfg.id.upper()}\\{service_id}",
            "enabled": enabled,
            # The lab's vss_capable is the whole answer for the backup service.
            "status": "OK" if enabled and (contact or service_id == VSS_SERVICE_ID.upper()) else "No Contact",
        }
        for name, service_id, enabled in services
    ]


def inventory(host: Any, params: dict[str, Any]) -> dict[str, Any]:
    connector = LabConnector(host.lab_root)
    config = connector.host_config()
    name = _computer_name(connector)
    configs, _findings = connector.vm_configs()  # a vm.json Hyper-V cannot read is a VM it does not have
    wanted = str(params.get("vm_id") or "").lower()
    if wanted:
        configs = [c for c in configs if c.id == wanted]
        if not configs:
            raise HostRefusal("VMNotFound", f"No VM with id {wanted} on {name}.")
    free = config.free_bytes if config.free_bytes is not None else shutil.disk_usage(host.lab_root).free
    vms, controllers, disks, services, replications = [], [], [], [], []
    for cfg in configs:
        vms.append(
            {
                "id": cfg.id,
                "name": cfg.name,
                "computer_name": cfg.owner_node or name,
                "state": cfg.state.value,
                "generation": cfg.generation,
                "configuration_version": cfg.configuration_version,
                "integration_services_version": cfg.integration_services_version,
                "path": windows_path(host, cfg.folder),
                "is_clustered": cfg.highly_available,
                "replication_mode": REPLICATION_MODES[cfg.replication_role],
                "replication_health": cfg.replication_health.value,
                "replication_state": cfg.replication_state,
                "guest_os": GUEST_OS[cfg.os_family.value],
                "smb_dialect": cfg.smb.smb_version if cfg.smb else None,
                "volume_id": VOLUME_ID,
            }
        )
        controllers += [
            {"vm_id": cfg.id, "kind": kind.value, "number": number} for kind, number in cfg.controllers
        ]
        disks += [_disk_record(host, cfg, index) for index in range(len(cfg.disks))]
        services += _services(cfg)
        if cfg.replication_role != ReplicationRole.NONE:
            replications.append(
                {
                    "vm_id": cfg.id,
                    "mode": REPLICATION_MODES[cfg.replication_role],
                    "state": cfg.replication_state,
                    "health": cfg.replication_health.value,
                }
            )
    csvs = [
        {
            "name": csv.name,
            "path": windows_path(host, host.lab_root / csv.path),
            "owner_node": csv.owner_node,
            "size": shutil.disk_usage(host.lab_root).total,
            "free": free,
        }
        for csv in config.csvs
    ]
    return {
        "host": {
            **os_facts(connector),
            "name": name,
            "fqdn": config.name,
            "cluster_name": config.cluster_name,
            "nodes": list(config.nodes),
            "hardware_vss_provider": config.hardware_vss_provider,
            "default_vhd_path": windows_path(host, host.lab_root),
            "default_volume_id": VOLUME_ID,
        },
        "volumes": [
            {
                "id": VOLUME_ID,
                "path": "C:\\",
                "label": "",
                "size": shutil.disk_usage(host.lab_root).total,
                "free": free,
            }
        ],
        "csvs": csvs,
        "vms": vms,
        "controllers": controllers,
        "disks": disks,
        "integration_services": services,
        "replications": replications,
    }


SCRIPTS = {"test-connection": test_connection, "inventory": inventory}
