from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.host import VMDisk, add_vm, write_host_json


@dataclass
class Lab:
    folder: Path
    connector: LabConnector
    ids: dict[str, str]
    images: dict[str, Path]

    def add(self, name: str, image: str = "windows-dynamic.vhdx", **settings: Any) -> str:
        disks = [VMDisk(f"{name}.vhdx", source=self.images[image])] if image else []
        folder = add_vm(self.folder, name, disks, **settings)
        self.ids[name] = str(json.loads((folder / "vm.json").read_text())["id"])
        return self.ids[name]

    def cfg(self, name: str) -> Any:
        return self.connector.vm_config(self.ids[name])

    def disk(self, name: str) -> Path:
        return self.folder / "Virtual Machines" / name / "Virtual Hard Disks" / f"{name}.vhdx"


@pytest.fixture
def make_lab(tmp_path: Path, disk_images: dict[str, Path]) -> Callable[..., Lab]:
    def make(name: str = "LAB-HV01", folder: Path | None = None, **host: Any) -> Lab:
        target = folder or tmp_path / name
        write_host_json(target, name, **host)
        return Lab(target, LabConnector(target), {}, disk_images)

    return make


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A Windows Server 2022 host with a Windows, a Linux and a fixed-disk VM."""
    lab = make_lab()
    lab.add("WIN01", "windows-dynamic.vhdx")
    lab.add("LNX01", "linux-dynamic.vhdx", os_family="linux")
    lab.add("SQL01", "windows-fixed.vhdx")
    return lab
