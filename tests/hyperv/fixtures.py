"""Samba on a loopback port serving the emulated Hyper-V host's drive as ``C$``.

The emulated host's ``C:\\`` is a folder (``SambaServer.drive``); every lab host of a
test lives in a subfolder of it, so the Windows paths the emulated scripts report
(``C:\\<test>\\Virtual Machines\\...``) reach the files through the admin share,
as on a real host. ``vmstore`` plays an SMB 3 file server share holding VMs, and
``locked`` is a share this account may not use (access denied).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protection.connectors.hyperv.smb import SMBSettings

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, deadline: float, process: subprocess.Popen[Any]) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"smbd exited with status {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _ensure_unix_user(name: str) -> None:
    if subprocess.run(["id", name], capture_output=True, check=False).returncode == 0:
        return
    proc = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot create the Unix user {name} that Samba needs: {proc.stderr.strip()}")


def _add_samba_user(conf: Path, name: str, password: str) -> None:
    _ensure_unix_user(name)
    added = subprocess.run(
        ["smbpasswd", "-c", str(conf), "-a", "-s", name],
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    if added.returncode != 0:
        pytest.fail(f"smbpasswd could not add {name}: {added.stderr.strip() or added.stdout.strip()}")


@pytest.fixture(scope="session")
def hyperv_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    smbd = shutil.which("smbd") or "/usr/sbin/smbd"
    if not os.path.exists(smbd):
        pytest.fail("smbd is not installed (apt-get install samba); .ci/run installs it")
    base = tmp_path_factory.mktemp("hyperv-samba")
    for folder in ("drive", "vmstore", "locked", "pid", "lock", "state", "cache", "private", "state/ncalrpc"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for share in ("drive", "vmstore", "locked"):
        (base / share).chmod(0o777)
    port = free_port()
    conf = base / "smb.conf"
    conf.write_text(
        f"""[global]
  smb ports = {port}
  bind interfaces only = yes
  interfaces = lo
  server role = standalone server
  pid directory = {base}/pid
  lock directory = {base}/lock
  state directory = {base}/state
  cache directory = {base}/cache
  private dir = {base}/private
  ncalrpc dir = {base}/state/ncalrpc
  log file = {base}/smbd.log
  passdb backend = tdbsam:{base}/private/passdb.tdb
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  server min protocol = SMB2_10
[C$]
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
    )
    _add_samba_user(conf, SAMBA_USER, SAMBA_PASSWORD)
    _add_samba_user(conf, OTHER_USER, SAMBA_PASSWORD + "-other")
    log = (base / "smbd.out").open("wb")
    process = subprocess.Popen(
        [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # smbd signals its whole process group when it stops
    )
    try:
        _wait_for_port(port, time.monotonic() + 20, process)
    except (RuntimeError, TimeoutError) as error:
        process.kill()
        process.wait(timeout=10)
        output = (base / "smbd.out").read_text(errors="replace")[-2000:]
        pytest.fail(f"smbd did not start in this sandbox ({error}): {output}")
    try:
        yield SambaServer(port, base / "drive", base / "vmstore", SAMBA_USER, SAMBA_PASSWORD)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
