"""manage.py lab create / churn, against the real models and real VHDX files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from protection.connectors.lab.connector import LabConnector
from protection.connectors.protocol import Consistency

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path / "data"
    return settings.BACKUPSITE_DATA_DIR


def test_create_builds_registers_and_refuses_a_second_time(data_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from protection.models import Host, VirtualMachine

    call_command("lab", "create", "--name", "LAB-T1", "--vms", "3", "--size-gib", "0.125")
    folder = data_dir / "lab" / "LAB-T1"
    host = Host.objects.get(name="LAB-T1")
    assert host.connection_kind == "lab" and Path(host.address) == folder
    vms = {vm.name: vm for vm in VirtualMachine.objects.filter(host=host)}
    assert len(vms) == 3
    assert sorted(vm.os_family for vm in vms.values()) == ["linux", "windows", "windows"]
    inv = LabConnector(folder).inventory()
    assert inv.findings == ()
    assert sorted(str(d.type) for vm in inv.vms for d in vm.disks) == ["dynamic", "dynamic", "fixed"]
    for vm in inv.vms:
        disk = vm.disks[0].path
        assert subprocess.run(["qemu-img", "check", disk], capture_output=True).returncode == 0
    assert "registered with 3 VM(s)" in capsys.readouterr().out

    with pytest.raises(CommandError, match="already registered"):
        call_command("lab", "create", "--name", "LAB-T1", "--vms", "1", "--size-gib", "0.125")
    VirtualMachine.objects.all().delete()
    Host.objects.filter(name="LAB-T1").delete()  # folder still there: also refused
    with pytest.raises(CommandError, match="already exists"):
        call_command("lab", "create", "--name", "LAB-T1", "--vms", "1", "--size-gib", "0.125")


def test_churn_writes_records_rct_and_keeps_the_disk_valid(data_dir: Path) -> None:
    from protection.models import VirtualMachine

    call_command("lab", "create", "--name", "LAB-T2", "--vms", "2", "--size-gib", "0.125")
    vm = VirtualMachine.objects.get(name__endswith="WIN00")
    conn = LabConnector(data_dir / "lab" / "LAB-T2")
    session = conn.begin_backup(vm.hyperv_id, Consistency.APPLICATION)
    disk_name = session.files[0].name
    refs = conn.end_backup(session, ok=True)
    before = (conn.folder / "Virtual Machines" / vm.name / disk_name).read_bytes()

    call_command("lab", "churn", vm.name.lower(), "--percent", "10", "--seed", "4")

    disk = conn.folder / "Virtual Machines" / vm.name / disk_name
    assert disk.read_bytes() != before
    assert subprocess.run(["qemu-img", "check", str(disk)], capture_output=True).returncode == 0
    session = conn.begin_backup(vm.hyperv_id, Consistency.APPLICATION)
    try:
        ranges = session.changed_ranges(disk_name, refs[disk_name])
    finally:
        conn.end_backup(session, ok=False)
    assert ranges and sum(n for _o, n in ranges) > 4 * 1024 * 1024  # more than structure


def test_command_errors_are_clean(data_dir: Path) -> None:
    with pytest.raises(CommandError, match="No lab VM named"):
        call_command("lab", "churn", "GHOST", "--percent", "5")
    with pytest.raises(CommandError, match="not a usable host name"):
        call_command("lab", "create", "--name", "../evil", "--vms", "1")
    with pytest.raises(CommandError, match="between 0 and 50"):
        call_command("lab", "create", "--name", "BIG", "--vms", "99", "--size-gib", "0.125")
    assert not (data_dir / "lab" / "BIG").exists()


def test_churn_percent_is_validated(data_dir: Path) -> None:
    call_command("lab", "create", "--name", "LAB-T3", "--vms", "1", "--size-gib", "0.125")
    with pytest.raises(CommandError, match="percent"):
        call_command("lab", "churn", "LAB-T3-WIN00", "--percent", "0")


def test_demo_creates_two_hosts_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from protection.management.commands import lab as lab_command
    from protection.models import Host, VirtualMachine

    # The real demo builds 1 GiB disks; a smaller size keeps the test quick.
    original = lab_command.Command.create

    def small_create(self, name, vm_count, size_gib, os_version):  # type: ignore[no-untyped-def]
        return original(self, name, vm_count, 0.0625, os_version)

    monkeypatch.setattr(lab_command.Command, "create", small_create)
    call_command("lab", "demo")
    assert sorted(Host.objects.values_list("name", flat=True)) == ["DEMO-HV01", "DEMO-HV02"]
    assert VirtualMachine.objects.filter(host__name="DEMO-HV01").count() == 3
    assert VirtualMachine.objects.filter(host__name="DEMO-HV02").count() == 0
    call_command("lab", "demo")  # second start of `make run`: nothing new
    assert Host.objects.count() == 2
