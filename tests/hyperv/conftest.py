from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.smb import SMBClient
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.host import VMDisk, add_vm, write_host_json
from tests.hyperv.emulation import DirectTransport, FakeHost
from tests.hyperv.fixtures import SambaServer, hyperv_samba  # noqa: F401


@dataclass
class HyperVLab:
    """A lab host under the emulated C: drive, its scripts, and an SMB client to it."""

    folder: Path
    connector: LabConnector
    host: FakeHost
    transport: DirectTransport
    smb: SMBClient
    images: dict[str, Path]
    ids: dict[str, str]

    def add(self, name: str, image: str = "windows-dynamic.vhdx", **settings: Any) -> str:
        folder = add_vm(self.folder, name, [VMDisk(f"{name}.vhdx", source=self.images[image])], **settings)
        self.ids[name] = str(json.loads((folder / "vm.json").read_text())["id"])
        return self.ids[name]

    def disk(self, name: str) -> Path:
        return self.folder / "Virtual Machines" / name / "Virtual Hard Disks" / f"{name}.vhdx"


@pytest.fixture
def hv_lab(
    hyperv_samba: SambaServer,  # noqa: F811
    disk_images: dict[str, Path],
) -> Iterator[HyperVLab]:
    folder = hyperv_samba.drive / f"lab-{uuid.uuid4().hex[:8]}"
    write_host_json(folder, "HV01")
    host = FakeHost(lab_root=folder, drive_root=hyperv_samba.drive)
    smb = SMBClient(hyperv_samba.settings())
    try:
        yield HyperVLab(folder, LabConnector(folder), host, DirectTransport(host), smb, disk_images, {})
    finally:
        smb.close()
