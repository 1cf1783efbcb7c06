"""A Hyper-V host as the product sees it: an ``EmulatedHyperV`` over a lab host folder behind
a real WS-Management endpoint (HTTPS, NTLM, test CA), with Samba serving the folder, and
the credentials a ``Host`` row stores to reach both (what the add-host form saves).

Used by the job tests here and by the browser end-to-end test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protection.connectors.lab.host import VMDisk, add_vm, write_host_json
from tests.hyperv.fixtures import SambaServer
from tests.hyperv.windows import EmulatedHyperV
from tests.wsman.fixtures import EndpointFactory
from tests.wsman.server import WSManEndpoint

WINRM_USER = "HV21\\hvbackup"
WINRM_PASSWORD = "Wired-Pässword-21"


@dataclass
class WiredHost:
    folder: Path  # the lab host folder, under the Samba drive (C:\<folder name>)
    emulated: EmulatedHyperV
    endpoint: WSManEndpoint
    samba: SambaServer
    ids: dict[str, str] = field(default_factory=dict)

    def credentials(self) -> dict[str, Any]:
        return {
            "auth": "ntlm",
            "scheme": "https",
            "port": self.endpoint.port,
            "username": WINRM_USER,
            "password": WINRM_PASSWORD,
            "ca_pem": self.endpoint.ca_pem,
            "smb_username": self.samba.username,
            "smb_password": self.samba.password,
            "smb_port": self.samba.port,
        }

    def add_vm(self, name: str, image: Path, **settings: Any) -> str:
        vm_folder = add_vm(self.folder, name, [VMDisk(f"{name}.vhdx", source=image)], **settings)
        self.ids[name] = str(json.loads((vm_folder / "vm.json").read_text())["id"])
        return self.ids[name]

    def vm_folder(self, name: str) -> Path:
        return self.folder / "Virtual Machines" / name

    def disk(self, name: str) -> Path:
        return self.vm_folder(name) / "Virtual Hard Disks" / f"{name}.vhdx"

    def windows_path(self, *parts: str) -> str:
        return "\\".join(["C:", self.folder.name, *parts])


def wired_host(
    wsman_endpoint: EndpointFactory, samba: SambaServer, folder_name: str, host_name: str
) -> WiredHost:
    """A new lab host folder ``folder_name`` on the Samba drive, answered by a new endpoint."""
    folder = write_host_json(samba.drive / folder_name, host_name)
    emulated = EmulatedHyperV(folder, drive_root=samba.drive)
    endpoint = wsman_endpoint(emulated.handle, tls=True, users={WINRM_USER: WINRM_PASSWORD})
    return WiredHost(folder, emulated, endpoint, samba)
