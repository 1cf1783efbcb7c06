"""A lab host answered by an emulated Hyper-V behind a real WS-Management endpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.connector import HyperVConnector
from protection.connectors.hyperv.transport import WinRMSettings, WinRMTransport
from protection.connectors.lab.host import VMDisk, add_vm, write_host_json
from tests.hyperv.windows import EmulatedHyperV
from tests.wsman.fixtures import EndpointFactory, wsman_endpoint
from tests.wsman.server import WSManEndpoint

__all__ = ["wsman_endpoint"]

USERNAME = "HV07\\hvbackup"
# Distinctive, with characters that must survive every encoding on the way.
PASSWORD = "Sècret-Pässwörd-7£!"


@dataclass
class LabHost:
    folder: Path
    ids: dict[str, str]

    def add(self, images: dict[str, Path], name: str, image: str, **settings: Any) -> str:
        folder = add_vm(self.folder, name, [VMDisk(f"{name}.vhdx", source=images[image])], **settings)
        self.ids[name] = str(json.loads((folder / "vm.json").read_text())["id"])
        return self.ids[name]


@pytest.fixture
def lab_host(tmp_path: Path, disk_images: dict[str, Path]) -> LabHost:
    """HV07 (Windows Server 2022) with a Windows VM and a Linux VM."""
    host = LabHost(write_host_json(tmp_path / "HV07", "HV07"), {})
    host.add(disk_images, "WIN01", "windows-dynamic.vhdx")
    host.add(disk_images, "LNX01", "linux-dynamic.vhdx", os_family="linux")
    return host


@pytest.fixture
def emulated(lab_host: LabHost) -> EmulatedHyperV:
    return EmulatedHyperV(lab_host.folder)


@dataclass
class Wired:
    """An emulated host behind an endpoint, and how to build clients for it."""

    host: EmulatedHyperV
    endpoint: WSManEndpoint

    def settings(self, **changes: Any) -> WinRMSettings:
        values: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": self.endpoint.port,
            "scheme": "https" if self.endpoint.tls else "http",
            "auth": "ntlm",
            "username": USERNAME,
            "password": PASSWORD,
            "ca_pem": self.endpoint.ca_pem if self.endpoint.tls else None,
            "operation_timeout": 2,
            "read_timeout": 5,
            "script_timeout": 30.0,
        }
        return WinRMSettings(**{**values, **changes})

    def transport(self, **changes: Any) -> WinRMTransport:
        return WinRMTransport(self.settings(**changes))

    def connector(self, **changes: Any) -> HyperVConnector:
        return HyperVConnector("127.0.0.1", transport=self.transport(**changes))


@pytest.fixture
def wire(wsman_endpoint: EndpointFactory, emulated: EmulatedHyperV) -> Callable[..., Wired]:
    def make(*, tls: bool = True, certificates: bool = False) -> Wired:
        endpoint = wsman_endpoint(
            emulated.handle,
            tls=tls,
            users={USERNAME: PASSWORD},
            client_cert_users={} if certificates else None,
        )
        return Wired(emulated, endpoint)

    return make
