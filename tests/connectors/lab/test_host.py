"""Creating lab hosts: the demo VM mix, idempotency, and valid disks."""

from __future__ import annotations

from pathlib import Path

import pytest

from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.host import create_lab_host, plan_vms
from protection.connectors.protocol import ConnectorError, DiskType, OSFamily
from storage.vdisk import builder

MiB = 1024 * 1024


def test_plan_mixes_windows_linux_and_fixed() -> None:
    plan = plan_vms("lab-hv01.example.com", 4, 256 * MiB)
    assert [v.name for v in plan] == ["LAB-HV01-WIN00", "LAB-HV01-LNX01", "LAB-HV01-SQL02",
                                      "LAB-HV01-WIN03"]  # fmt: skip
    assert [v.spec.fs for v in plan] == ["ntfs", "ext4", "ntfs", "ntfs"]
    assert [v.spec.subformat for v in plan] == ["dynamic", "dynamic", "fixed", "dynamic"]
    pagefile = plan[0].spec.files["pagefile.sys"]
    assert isinstance(pagefile, bytes) and len(pagefile) == 16 * MiB


def test_create_lab_host_and_refuse_to_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "HV9"
    create_lab_host(folder, "HV9", 3, 64 * MiB, os_version="Windows Server 2019")
    inv = LabConnector(folder).inventory()
    assert inv.host.os_version == "Windows Server 2019"
    assert inv.host.integration_services_version == "10.0.17763"
    assert inv.findings == ()
    kinds = sorted((vm.os_family, vm.disks[0].type) for vm in inv.vms)
    assert kinds == [
        (OSFamily.LINUX, DiskType.DYNAMIC),
        (OSFamily.WINDOWS, DiskType.DYNAMIC),
        (OSFamily.WINDOWS, DiskType.FIXED),
    ]
    assert {vm.configuration_version for vm in inv.vms} == {"9.0"}
    for vm in inv.vms:
        assert builder.qemu_img_check(Path(vm.disks[0].path))[0]
        assert LabConnector(folder).prerequisites(vm.id) in ([],) or vm.os_family == "linux"
    with pytest.raises(ConnectorError, match="already exists"):
        create_lab_host(folder, "HV9", 1, 64 * MiB)


def test_bad_arguments_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="at least 64 MiB"):
        create_lab_host(tmp_path / "A", "A", 1, 8 * MiB)
    with pytest.raises(ConnectorError, match="between 0 and 50"):
        create_lab_host(tmp_path / "B", "B", -1, 64 * MiB)
    assert not (tmp_path / "A").exists() and not (tmp_path / "B").exists()
