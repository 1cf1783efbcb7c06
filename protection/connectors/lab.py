"""The lab connector: a Hyper-V host emulated in a folder of the server's own disk.

A host is a folder with ``host.json``; each VM is a folder (anywhere below it)
with ``vm.json`` and real VHDX files. See docs/connectors.md for the format.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from protection.connectors import labconfig, prerequisites
from protection.connectors.base import (
    BackupSession,
    ConnectionTest,
    ConnectorError,
    Consistency,
    ControllerInfo,
    CSVInfo,
    DiskFormat,
    DiskInfo,
    DiskType,
    FileSource,
    Finding,
    HostInfo,
    HostInventory,
    InvalidVMConfig,
    ReplicationInfo,
    RestoreResult,
    RestoreTarget,
    Severity,
    SMBShareInfo,
    VMInfo,
    VMNotFound,
)
from protection.connectors.labconfig import LabHostConfig, LabVMConfig
from storage.vdisk import VdiskError, read_layout, read_vhd_footer

if TYPE_CHECKING:
    from protection.connectors.labsession import LabBackupSession


def describe_disk(vm_folder: Path, disk: labconfig.LabDisk) -> DiskInfo:
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


class LabConnector:
    kind = "lab"

    def __init__(self, address: str | Path, *, lock_wait_seconds: float = 10.0):
        self.address = str(address)
        self.folder = Path(address)
        # How long begin_backup / restore wait for guest writes to finish.
        self.lock_wait_seconds = lock_wait_seconds

    # ------------------------------------------------------------------ inventory

    def host_config(self) -> LabHostConfig:
        return labconfig.load_host_config(self.folder)

    def host_info(self, host: LabHostConfig | None = None) -> HostInfo:
        host = host or self.host_config()
        free = host.free_bytes
        if free is None:
            free = shutil.disk_usage(self.folder).free
        return HostInfo(
            name=host.name,
            os_version=host.os_version,
            integration_services_version=host.integration_services_version,
            free_bytes=free,
            hardware_vss_provider=host.hardware_vss_provider,
            cluster_name=host.cluster_name,
            nodes=host.nodes,
        )

    def test_connection(self) -> ConnectionTest:
        try:
            info = self.host_info()
        except ConnectorError as exc:
            return ConnectionTest(ok=False, message=str(exc))
        return ConnectionTest(
            ok=True,
            message=f"Lab host {info.name} ({info.os_version}) answered.",
            host_name=info.name,
            os_version=info.os_version,
        )

    def _csv_infos(self, host: LabHostConfig) -> tuple[CSVInfo, ...]:
        out = []
        for csv in host.csvs:
            path = self.folder / csv.path
            usage = shutil.disk_usage(path if path.exists() else self.folder)
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

    def vm_configs(self) -> tuple[list[LabVMConfig], list[Finding]]:
        configs, findings = [], []
        seen: dict[str, Path] = {}
        for folder in labconfig.find_vm_folders(self.folder):
            try:
                cfg = labconfig.parse_vm_config(folder)
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

    def inventory(self) -> HostInventory:
        host = self.host_config()
        configs, findings = self.vm_configs()
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
            host=self.host_info(host),
            cluster_name=host.cluster_name,
            csvs=self._csv_infos(host),
            vms=vms,
            findings=tuple(findings),
        )

    def vm_config(self, vm_id: str) -> LabVMConfig:
        configs, _findings = self.vm_configs()
        wanted = vm_id.strip().lower().strip("{}")
        for cfg in configs:
            if cfg.id == wanted:
                return cfg
        raise VMNotFound(f"No VM with id {vm_id} on lab host {self.folder.name}.")

    def vm_config_by_name(self, name: str) -> LabVMConfig:
        configs, _findings = self.vm_configs()
        matches = [c for c in configs if c.name.lower() == name.lower()]
        if len(matches) != 1:
            why = "No VM" if not matches else f"{len(matches)} VMs"
            raise VMNotFound(f"{why} named {name!r} on lab host {self.folder.name}.")
        return matches[0]

    def get_vm(self, vm_id: str) -> VMInfo:
        return vm_info(self.vm_config(vm_id), self.host_config())

    # ------------------------------------------------------------------ checks

    def prerequisites(
        self,
        vm_id: str,
        *,
        churn_rate: float = prerequisites.DEFAULT_CHURN_RATE,
        backup_window_hours: float = prerequisites.DEFAULT_BACKUP_WINDOW_HOURS,
        recovery_path: str | None = None,
    ) -> list[Finding]:
        vm = self.get_vm(vm_id)
        host = self.host_info()
        csvs = {c.name: c for c in self._csv_infos(self.host_config())}
        return prerequisites.check_vm(
            vm,
            host,
            csv=csvs.get(vm.csv or ""),
            churn_rate=churn_rate,
            backup_window_hours=backup_window_hours,
            recovery_path=recovery_path,
        )

    # ------------------------------------------------------------------ backup

    def begin_backup(self, vm_id: str, consistency_wanted: Consistency) -> LabBackupSession:
        from protection.connectors.labsession import begin_lab_backup

        return begin_lab_backup(self, vm_id, Consistency(consistency_wanted))

    def end_backup(self, session: BackupSession, ok: bool) -> dict[str, str]:
        from protection.connectors.labsession import LabBackupSession

        if not isinstance(session, LabBackupSession):
            raise ConnectorError("This session was not opened by a lab connector.")
        return session.finish(ok)

    # ------------------------------------------------------------------ restore

    def check_restore_target(
        self, vm_id: str, target: RestoreTarget, file_names: Sequence[str]
    ) -> list[Finding]:
        from protection.connectors.labrestore import check_restore_target

        return check_restore_target(self, vm_id, target, file_names)

    def restore_vm(self, vm_id: str, files: Mapping[str, FileSource], target: RestoreTarget) -> RestoreResult:
        from protection.connectors.labrestore import restore_vm

        return restore_vm(self, vm_id, files, target)
