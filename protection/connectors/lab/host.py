"""Create lab hosts and lab VMs (the folder format is documented in config.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protection.connectors.lab.config import (
    DISKS_DIR,
    FORMAT_VERSION,
    HOST_FILE,
    VM_FILE,
    VMS_DIR,
    load_host_config,
    write_json_atomic,
)
from protection.connectors.protocol import ConnectorError
from storage.vdisk import builder
from storage.vdisk.builder import DiskSpec, MiB

DEFAULT_OS = "Windows Server 2022"
# Integration services / highest configuration version per host OS, as Get-VMHost
# and Get-VMHostSupportedVersion report them.
HOST_DEFAULTS = {
    "Windows Server 2012 R2": ("6.3.9600.18080", "5.0"),
    "Windows Server 2016": ("10.0.14393", "8.0"),
    "Windows Server 2019": ("10.0.17763", "9.0"),
    "Windows Server 2022": ("10.0.20348", "10.0"),
    "Windows Server 2025": ("10.0.26100", "12.0"),
}


def write_host_json(
    folder: Path,
    name: str,
    *,
    os_version: str = DEFAULT_OS,
    integration_services_version: str | None = None,
    cluster_name: str | None = None,
    nodes: Sequence[str] = (),
    csvs: Sequence[dict[str, Any]] = (),
    free_bytes: int | None = None,
    hardware_vss_provider: bool = False,
    rct_history: int = 16,
    read_bytes_per_second: int | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ic = integration_services_version or HOST_DEFAULTS.get(os_version, ("10.0.20348", ""))[0]
    write_json_atomic(
        folder / HOST_FILE,
        {
            "format": FORMAT_VERSION,
            "name": name,
            "os_version": os_version,
            "integration_services_version": ic,
            "cluster_name": cluster_name,
            "nodes": list(nodes),
            "csvs": list(csvs),
            "free_bytes": free_bytes,
            "hardware_vss_provider": hardware_vss_provider,
            "rct_history": rct_history,
            "read_bytes_per_second": read_bytes_per_second,
        },
    )
    return folder


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy keeping holes (VHDX files from qemu are sparse; a plain copy would fill them)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
                hole = os.lseek(fin.fileno(), data, os.SEEK_HOLE)
            except OSError:
                data, hole = pos, size  # no SEEK_DATA: copy everything that is left
            fin.seek(data)
            fout.seek(data)
            remaining = hole - data
            while remaining:
                chunk = fin.read(min(remaining, 8 * MiB))
                fout.write(chunk)
                remaining -= len(chunk)
            pos = hole
        fout.truncate(size)


@dataclass(frozen=True, slots=True)
class VMDisk:
    """A disk for add_vm: an existing file to copy in, or a spec to build."""

    name: str  # file name inside "Virtual Hard Disks"
    source: Path | None = None
    spec: DiskSpec | None = None
    controller: str = "SCSI"
    controller_number: int = 0
    location: int = 0


def add_vm(
    host_folder: Path,
    name: str,
    disk_files: Sequence[VMDisk],
    *,
    os_family: str = "windows",
    vm_id: str | None = None,
    folder: Path | None = None,
    **settings: Any,
) -> Path:
    """Create a VM folder with vm.json and its disks; ``settings`` override vm.json keys."""
    host = load_host_config(host_folder)
    vm_folder = folder or host_folder / VMS_DIR / name
    if (vm_folder / VM_FILE).exists():
        raise ConnectorError(f"a VM already exists in {vm_folder}")
    disk_dir = vm_folder / DISKS_DIR
    disk_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for disk in disk_files:
        target = disk_dir / disk.name
        if disk.source is not None:
            copy_sparse(disk.source, target)
        elif disk.spec is not None:
            builder.build_disk(target, disk.spec)
        entries.append(
            {
                "path": f"{DISKS_DIR}/{disk.name}",
                "controller": disk.controller,
                "controller_number": disk.controller_number,
                "location": disk.location,
                "pass_through": False,
            }
        )
    config_version = HOST_DEFAULTS.get(host.os_version, ("", "10.0"))[1]
    data: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "id": vm_id or str(uuid.uuid4()),
        "name": name,
        "generation": 2,
        "state": "Running",
        "configuration_version": config_version,
        "integration_services_version": host.integration_services_version,
        "os_family": os_family,
        "vss_capable": True,
        "owner_node": host.name,
        "highly_available": False,
        "cluster": None,
        "controllers": [{"type": "SCSI", "number": 0}],
        "disks": entries,
        "replication": {"role": "none"},
        "storage_kind": "local",
    }
    data.update(settings)
    write_json_atomic(vm_folder / VM_FILE, data)
    return vm_folder


@dataclass(frozen=True, slots=True)
class PlannedVM:
    name: str
    os_family: str
    spec: DiskSpec


def plan_vms(host_name: str, count: int, disk_size: int, seed: str = "") -> list[PlannedVM]:
    """The demo mix: Windows gen-2 NTFS guests with a pagefile, one Linux ext4
    guest, and one Windows guest on a fixed-size disk."""
    prefix = host_name.split(".")[0].upper()[:15]
    pagefile = max(4 * MiB, min(256 * MiB, disk_size // 16) // MiB * MiB)
    data = max(2 * MiB, min(512 * MiB, disk_size // 16) // MiB * MiB)
    planned = []
    for i in range(count):
        base = f"{seed}{host_name}-{i}"
        if i == 1:
            name = f"{prefix}-LNX{i:02d}"
            spec = DiskSpec(disk_size, "ext4", files=builder.linux_files(name.lower(), data))
            planned.append(PlannedVM(name, "linux", spec))
            continue
        subformat = "fixed" if i == 2 else "dynamic"
        name = f"{prefix}-{'SQL' if i == 2 else 'WIN'}{i:02d}"
        files = builder.windows_files(pagefile, base, data)
        planned.append(PlannedVM(name, "windows", DiskSpec(disk_size, "ntfs", subformat, files=files)))
    return planned


def create_lab_host(
    folder: Path,
    name: str,
    vm_count: int,
    disk_size: int,
    *,
    os_version: str = DEFAULT_OS,
    seed: str = "",
) -> Path:
    """A lab host folder with ``vm_count`` VMs; refuses to touch an existing host."""
    if vm_count < 0 or vm_count > 50:
        raise ConnectorError("a lab host holds between 0 and 50 VMs")
    if disk_size < 64 * MiB or disk_size % MiB:
        raise ConnectorError("lab disks must be at least 64 MiB, in whole MiB")
    if (folder / HOST_FILE).exists():
        raise ConnectorError(f"a lab host already exists in {folder}")
    missing = builder.missing_tools()
    if missing:
        raise ConnectorError(
            f"cannot build lab disks, missing tools: {', '.join(missing)} "
            "(Debian packages qemu-utils, gdisk, ntfs-3g, e2fsprogs)"
        )
    created = not folder.exists()
    try:
        write_host_json(folder, name, os_version=os_version)
        for vm in plan_vms(name, vm_count, disk_size, seed):
            add_vm(
                folder,
                vm.name,
                [VMDisk(f"{vm.name}.vhdx", spec=vm.spec)],
                os_family=vm.os_family,
            )
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)  # no half-made host left behind
        raise
    return folder
