"""A real smbd on a loopback port, for the suites that need an SMB server.

Each suite describes its shares and accounts; this module owns what they have in common:
the private folders and ``[global]`` section that keep smbd inside a temporary folder, the
Unix and Samba accounts, starting smbd and stopping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, deadline: float, process: subprocess.Popen[Any] | None = None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
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


@contextmanager
def running_smbd(base: Path, shares: str, users: Iterable[tuple[str, str]]) -> Iterator[int]:
    """Run smbd with its state under ``base``, serving ``shares`` (smb.conf share sections)
    to ``users`` (name, password); yields the port it listens on and stops it on exit."""
    smbd = shutil.which("smbd") or "/usr/sbin/smbd"
    if not os.path.exists(smbd):
        pytest.fail("smbd is not installed (apt-get install samba); .ci/run installs it")
    for folder in ("pid", "lock", "state", "cache", "private", "state/ncalrpc"):
        (base / folder).mkdir(parents=True, exist_ok=True)
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
{shares}"""
    )
    for name, password in users:
        _add_samba_user(conf, name, password)
    log = (base / "smbd.out").open("wb")
    process = subprocess.Popen(
        [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # smbd signals its whole process group when it stops
    )
    try:
        wait_for_port(port, time.monotonic() + 20, process)
    except (RuntimeError, TimeoutError) as error:
        process.kill()
        process.wait(timeout=10)
        log.close()
        output = (base / "smbd.out").read_text(errors="replace")[-2000:]
        pytest.fail(f"smbd did not start in this sandbox ({error}): {output}")
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
