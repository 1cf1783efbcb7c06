"""Catalog helpers and a connector stand-in for the protection page tests."""

from __future__ import annotations

from typing import Any

from protection.connectors import ConnectorError, Finding, Severity
from protection.connectors.protocol import ConnectionTest
from protection.models import ProtectedDataSource, ProtectionGroup, VirtualDisk, VirtualMachine
from tests.factories import make_vm

GIB = 1024**3


class FakeConnector:
    kind = "lab"
    address = "/fake"

    def __init__(self) -> None:
        self.findings: dict[str, list[Finding]] = {}
        self.failures: dict[str, ConnectorError] = {}

    def test_connection(self) -> ConnectionTest:
        return ConnectionTest(ok=True, message="Fake host answered.", host_name="fake", os_version="Fake OS")

    def prerequisites(self, vm_id: str, **_options: Any) -> list[Finding]:
        if vm_id in self.failures:
            raise self.failures[vm_id]
        return self.findings.get(vm_id, [])

    def block(self, vm: VirtualMachine, message: str = "Pass-through disks cannot be backed up.") -> None:
        self.findings[vm.hyperv_id] = [
            Finding("pass-through-disk", Severity.ERROR, message, "Convert the disk to a VHDX.")
        ]


def vm_with_disk(name: str, file_size: int = 2 * GIB, virtual_size: int = 40 * GIB) -> VirtualMachine:
    vm = make_vm(name)
    VirtualDisk.objects.create(
        vm=vm, path=f"D:\\VMs\\{name}\\disk0.vhdx", file_size_bytes=file_size, virtual_size_bytes=virtual_size
    )
    return vm


def protect(vm: VirtualMachine, group: ProtectionGroup, **fields: Any) -> ProtectedDataSource:
    return ProtectedDataSource.objects.create(vm=vm, group=group, **fields)
