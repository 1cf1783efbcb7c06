"""What a lab host reports: Get-VMHost, Get-VM, Get-VHD and the cluster, from its folder.

Read-only views of the folder format (``config``) as protocol values. Backup
sessions and restores build their VMInfo here too, so they never need the
connector class that sits above them.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from protection.connectors.lab import config
from protection.connectors.lab.config import LabHostConfig, LabVMConfig
from protection.connectors.protocol import (
    ControllerInfo,
    CSVInfo,
    DiskFormat,
    DiskInfo,
    DiskType,
    Finding,
    HostInfo,
    HostInventory,
    InvalidVMConfig,
    ReplicationInfo,
    Severity,
    SMBShareInfo,
    VMInfo,
    VMNotFound,
)
from storage.vdisk import VdiskError, read_layout, read_vhd_footer


def describe_disk(vm_folder: Path, disk: config.LabDisk) -> DiskInfo:
    """What Get-VMHardDiskDrive + Get-VHD would say; a broken file is reported, not raised."""
    base = DiskInfo(
        path="",
        format=None,
        type=DiskType.DYNAMIC,
        virtual_size=0,
        file_size=0,
        controller=disk.controller,
        controller_number=disk.controller_number,
        controller_location=disk.controller_location,
    )
    if disk.pass_through:
        return replace(base, type=DiskType.PASS_THROUGH, virtual_size=disk.physical_size, pass_through=True)
    path = vm_folder / disk.path
    suffix = path.suffix.lower().lstrip(".")
    fmt = DiskFormat(suffix) if suffix in ("vhdx", "avhdx", "vhd") else None
    base = replace(base, path=str(path), format=fmt)
    base = replace(base, file_size=path.stat().st_size if path.is_file() else 0)
    if fmt is None:
        return replace(base, error=f"{path.name} is not a .vhdx, .avhdx or .vhd file")
    try:
        if fmt == DiskFormat.VHD:
            footer = read_vhd_footer(path)
            return replace(
                base,
                type=DiskType(footer.disk_type),
                virtual_size=footer.virtual_size,
                disk_id=footer.disk_id,
            )
        layout = read_layout(path)
    except VdiskError as exc:
        return replace(base, error=f"{path.name}: {exc}")
    if layout.has_parent:
        kind = DiskType.DIFFERENCING
    elif layout.leave_blocks_allocated:
        kind = DiskType.FIXED
    else:
        kind = DiskType.DYNAMIC
    parent = layout.parent_locator.get("relative_path") if layout.has_parent else None
    return replace(
        base,
        type=kind,
        virtual_size=layout.virtual_size,
        disk_id=layout.disk_id,
        parent_path=str(path.parent / parent.replace("\\", "/")) if parent else None,
        error=None
        if layout.log_guid_zero
        else f"{path.name}: the VHDX log has not been replayed; open it on a Hyper-V host first",
    )


def vm_info(cfg: LabVMConfig, host: LabHostConfig) -> VMInfo:
    controllers = tuple(ControllerInfo(kind, number) for kind, number in cfg.controllers)
    smb = None
    if cfg.smb is not None:
        smb = SMBShareInfo(cfg.smb.path, cfg.smb.smb_version, cfg.smb.host_has_full_control)
    return VMInfo(
        id=cfg.id,
        name=cfg.name,
        host=cfg.owner_node or host.name,
        state=cfg.state,
        generation=cfg.generation,
        configuration_version=cfg.configuration_version,
        integration_services_version=cfg.integration_services_version,
        host_integration_services_version=host.integration_services_version,
        os_family=cfg.os_family,
        controllers=controllers,
        disks=tuple(describe_disk(cfg.folder, d) for d in cfg.disks),
        replication=ReplicationInfo(cfg.replication_role, cfg.replication_health, cfg.replication_state),
        storage_kind=cfg.storage_kind,
        vss_capable=cfg.vss_capable,
        path=str(cfg.folder),
        highly_available=cfg.highly_available,
        cluster=cfg.cluster,
        csv=cfg.csv,
        smb_share=smb,
    )


def host_info(host_folder: Path, host: LabHostConfig) -> HostInfo:
    free = host.free_bytes
    if free is None:
        free = shutil.disk_usage(host_folder).free
    return HostInfo(
        name=host.name,
        os_version=host.os_version,
        integration_services_version=host.integration_services_version,
        free_bytes=free,
        hardware_vss_provider=host.hardware_vss_provider,
        cluster_name=host.cluster_name,
        nodes=host.nodes,
    )


def csv_infos(host_folder: Path, host: LabHostConfig) -> tuple[CSVInfo, ...]:
    out = []
    for csv in host.csvs:
        path = host_folder / csv.path
        usage = shutil.disk_usage(path if path.exists() else host_folder)
        out.append(
            CSVInfo(
                name=csv.name,
                path=str(path),
                owner_node=csv.owner_node,
                hardware_vss_provider=csv.hardware_vss_provider,
                capacity_bytes=usage.total,
                free_bytes=host.free_bytes if host.free_bytes is not None else usage.free,
            )
        )
    return tuple(out)


def vm_configs(host_folder: Path) -> tuple[list[LabVMConfig], list[Finding]]:
    """Every readable VM of the host, and a finding for each one that is not."""
    configs, findings = [], []
    seen: dict[str, Path] = {}
    for folder in config.find_vm_folders(host_folder):
        try:
            cfg = config.parse_vm_config(folder)
        except InvalidVMConfig as exc:
            findings.append(
                Finding(
                    code="vm-config-invalid",
                    severity=Severity.ERROR,
                    message=f"The VM in {folder} cannot be read: {exc}",
                    fix="Correct the VM's configuration file or remove the folder.",
                )
            )
            continue
        if cfg.id in seen:
            findings.append(
                Finding(
                    code="vm-id-duplicate",
                    severity=Severity.ERROR,
                    message=f"{folder} and {seen[cfg.id]} claim the same VM id {cfg.id}.",
                    fix="Give one of them a new id (a restored copy must be re-registered).",
                )
            )
            continue
        seen[cfg.id] = folder
        configs.append(cfg)
    return configs, findings


def find_vm_config(host_folder: Path, vm_id: str) -> LabVMConfig:
    configs, _findings = vm_configs(host_folder)
    wanted = vm_id.strip().lower().strip("{}")
    for cfg in configs:
        if cfg.id == wanted:
            return cfg
    raise VMNotFound(f"No VM with id {vm_id} on lab host {host_folder.name}.")


def find_vm_config_by_name(host_folder: Path, name: str) -> LabVMConfig:
    configs, _findings = vm_configs(host_folder)
    matches = [c for c in configs if c.name.lower() == name.lower()]
    if len(matches) != 1:
        why = "No VM" if not matches else f"{len(matches)} VMs"
        raise VMNotFound(f"{why} named {name!r} on lab host {host_folder.name}.")
    return matches[0]


def host_inventory(host_folder: Path) -> HostInventory:
    host = config.load_host_config(host_folder)
    configs, findings = vm_configs(host_folder)
    vms = tuple(vm_info(cfg, host) for cfg in configs)
    for vm in vms:
        findings.extend(
            Finding(
                code="disk-unusable",
                severity=Severity.ERROR,
                message=f"VM {vm.name}: {disk.error}",
                fix="Restore or repair the virtual disk file before protecting this VM.",
            )
            for disk in vm.disks
            if disk.error
        )
    return HostInventory(
        host=host_info(host_folder, host),
        cluster_name=host.cluster_name,
        csvs=csv_infos(host_folder, host),
        vms=vms,
        findings=tuple(findings),
    )
