"""A real lab host (real VHDX files) registered in the catalog, for protection tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.host import create_lab_host
from protection.models import (
    ConnectionKind,
    Host,
    ProtectedDataSource,
    ProtectionGroup,
    ReplicaState,
    VirtualMachine,
)
from protection.services.inventory import sync_host_inventory
from storage.models import Datastore
from storage.vdisk import builder
from tests.protection.helpers import FakeConnector

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def lab_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once (a few seconds); each test gets its own sparse copy."""
    missing = builder.missing_tools()
    if missing:
        pytest.fail(f"tools needed for lab disks are missing: {missing}")
    folder = tmp_path_factory.mktemp("lab-template") / "LAB-HV01"
    create_lab_host(folder, "LAB-HV01", 2, 64 * MiB, seed="protection-tests")
    return folder


@dataclass
class ProtectedLab:
    folder: Path
    host: Host
    datastore: Datastore
    group: ProtectionGroup
    windows: VirtualMachine
    linux: VirtualMachine

    @property
    def connector(self) -> LabConnector:
        return LabConnector(self.folder)

    def disk(self, vm: VirtualMachine) -> Path:
        return Path(vm.disks.get().path)

    def source(self, vm: VirtualMachine) -> ProtectedDataSource:
        return ProtectedDataSource.objects.get(vm=vm)


@pytest.fixture
def protected_lab(lab_template: Path, tmp_path: Path) -> ProtectedLab:
    folder = tmp_path / "LAB-HV01"
    subprocess.run(["cp", "-a", "--sparse=always", str(lab_template), str(folder)], check=True)
    host = Host.objects.create(name="LAB-HV01", connection_kind=ConnectionKind.LAB, address=str(folder))
    machines = sync_host_inventory(host)
    windows = next(vm for vm in machines if vm.os_family == "windows")
    linux = next(vm for vm in machines if vm.os_family == "linux")
    datastore = Datastore.objects.create_with_store("test", str(tmp_path / "datastore"))
    group = ProtectionGroup.objects.create(
        name="Gold",
        datastore=datastore,
        retention_days=5,
        recovery_point_times=["20:00"],
        recovery_point_days=[0],
    )
    for vm in (windows, linux):
        ProtectedDataSource.objects.create(group=group, vm=vm, replica_state=ReplicaState.PENDING)
    return ProtectedLab(folder, host, datastore, group, windows, linux)


def restore_and_compare(datastore: Datastore, point_id: str, live_disk: Path, target: Path) -> None:
    """Restore one point and compare its disk with the live disk: cmp and qemu-img compare."""
    engine = datastore.open_engine()
    engine.restore(point_id, target)
    restored = [p for p in target.rglob(live_disk.name)]
    assert len(restored) == 1, f"{live_disk.name} not in restored files {list(target.rglob('*'))}"
    subprocess.run(["cmp", str(restored[0]), str(live_disk)], check=True)
    subprocess.run(["qemu-img", "compare", "-q", str(restored[0]), str(live_disk)], check=True)
    shutil.rmtree(target)


# ---------------------------------------------------------------------------------------------
# Protection pages (hosts, VM page, groups, wizard): catalog rows only, no lab disks. Prerequisite
# findings come from a stand-in connector installed at the ``Host.connector`` boundary.


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConnector]:
    fake = FakeConnector()
    monkeypatch.setattr(Host, "connector", lambda self: fake)
    yield fake


@pytest.fixture
def datastore(tmp_path: Path) -> Datastore:
    return Datastore.objects.create_with_store("main", str(tmp_path / "datastore"))


# ---------------------------------------------------------------------------------------------
# Small real volumes (capacity planning, the volume-filling alert): tmpfs mounts, root only.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``tmpfs(name, size_mib)`` mounts a tmpfs of that size under tmp_path; all are
    unmounted at teardown."""
    mounted: list[Path] = []

    def mount(name: str, size_mib: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        while os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=True)
