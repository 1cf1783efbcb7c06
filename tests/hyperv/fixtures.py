"""Samba on a loopback port serving the emulated Hyper-V host's drive as ``C$``.

The emulated host's ``C:\\`` is a folder (``SambaServer.drive``); every lab host of a
test lives in a subfolder of it, so the Windows paths the emulated scripts report
(``C:\\<test>\\Virtual Machines\\...``) reach the files through the admin share,
as on a real host. ``vmstore`` plays an SMB 3 file server share holding VMs, and
``locked`` is a share this account may not use (access denied).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.smb import SMBSettings
from tests.samba import running_smbd

SAMBA_USER = "hvbackuptest"
SAMBA_PASSWORD = "Hyper-V-Backup-Pa55"
OTHER_USER = "hvnobody"


@dataclass
class SambaServer:
    port: int
    drive: Path  # served as C$
    vmstore: Path  # served as vmstore
    username: str
    password: str

    def settings(self, **overrides: Any) -> SMBSettings:
        values: dict[str, Any] = dict(
            server="127.0.0.1", username=self.username, password=self.password, port=self.port
        )
        values.update(overrides)
        return SMBSettings(**values)


@pytest.fixture(scope="session")
def hyperv_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    base = tmp_path_factory.mktemp("hyperv-samba")
    for share in ("drive", "vmstore", "locked"):
        (base / share).mkdir()
        (base / share).chmod(0o777)
    shares = f"""[C$]
  path = {base}/drive
  read only = no
  valid users = {SAMBA_USER}
  force user = root
[vmstore]
  path = {base}/vmstore
  read only = no
  valid users = {SAMBA_USER}
  force user = root
[locked]
  path = {base}/locked
  read only = no
  valid users = {OTHER_USER}
"""
    users = [(SAMBA_USER, SAMBA_PASSWORD), (OTHER_USER, SAMBA_PASSWORD + "-other")]
    with running_smbd(base, shares, users) as port:
        yield SambaServer(port, base / "drive", base / "vmstore", SAMBA_USER, SAMBA_PASSWORD)
