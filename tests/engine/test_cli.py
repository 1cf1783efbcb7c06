from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.engine import Datastore

from .conftest import MiB, rand, sha, write_file

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "storage.engine", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cli_round_trip(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    cli("init", ds, "--chunk-size", "256K")
    a = write_file(tmp_path / "vm" / "Virtual Hard Disks" / "a.vhdx", [rand(2 * MiB)])
    b = write_file(tmp_path / "vm" / "cfg.vmcx", [b"cfg"])
    p1 = cli("backup", ds, "--vm", "web", "--base-dir", tmp_path / "vm", a, b).stdout.strip()
    data = bytearray(a.read_bytes())
    data[10:20] = b"x" * 10
    a.write_bytes(data)
    ranges = tmp_path / "ranges.json"
    ranges.write_text(json.dumps({"Virtual Hard Disks/a.vhdx": [[10, 10]], "cfg.vmcx": []}))
    p2 = cli(
        "backup",
        ds,
        "--vm",
        "web",
        "--base-dir",
        tmp_path / "vm",
        "--changed-ranges",
        ranges,
        a,
        b,
    ).stdout.strip()
    listing = cli("ls", ds).stdout
    assert p1 in listing and p2 in listing and "web" in listing
    pts = json.loads(cli("ls", ds, "--json").stdout)
    assert [p["id"] for p in pts] == [p1, p2] and pts[1]["parent"] == p1
    assert "Virtual Hard Disks/a.vhdx" in cli("ls", ds, p2).stdout
    out = tmp_path / "out"
    cli("restore", ds, p2, out)
    assert sha(out / "Virtual Hard Disks" / "a.vhdx") == sha(a)
    r = subprocess.run(
        [sys.executable, "-m", "storage.engine", "cat", str(ds), p2, "Virtual Hard Disks/a.vhdx"],
        cwd=ROOT,
        capture_output=True,
    )
    assert r.returncode == 0 and r.stdout == bytes(data)
    assert "0 bad" in cli("verify", ds).stdout
    assert "removed" in cli("prune", ds, "--keep-last", "1").stdout
    assert "removed" in cli("gc", ds, "--grace-seconds", "0").stdout
    assert "1 points" in cli("usage", ds).stdout


def test_cli_encrypted(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret passphrase\n")
    ds = tmp_path / "ds"
    cli("init", ds, "--encrypt", "--key-file", key)
    f = write_file(tmp_path / "f", [rand(MiB)])
    p = cli("backup", ds, "--key-file", key, "--vm", "v", f).stdout.strip()
    r = cli("ls", ds, check=False)
    assert r.returncode == 1 and "key is required" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("nope")
    r = cli("--key-file", bad, "ls", ds, check=False)
    assert r.returncode == 1 and "wrong encryption key" in r.stderr
    cli("restore", ds, p, tmp_path / "out", "--key-file", key)
    assert sha(tmp_path / "out" / "f") == sha(f)


@pytest.mark.parametrize(
    "args, message",
    [
        (["ls", "{tmp}/missing"], "no datastore"),
        (["backup", "{ds}", "--vm", "v", "{tmp}/nofile"], "cannot open"),
        (["restore", "{ds}", "nopoint", "{tmp}/o"], "no recovery point"),
        (["cat", "{ds}", "../x", "f"], "invalid recovery point"),
        (["backup", "{ds}", "--vm", "v", "--changed-ranges", "{tmp}/r.json", "{tmp}/f"], "outside"),
        (["init", "{ds}"], "already exists"),
        (["prune", "{ds}"], "--keep"),
        (["init", "{tmp}/new", "--chunk-size", "3M"], "power of two"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    ds = tmp_path / "ds"
    Datastore.create(ds)
    write_file(tmp_path / "f", [b"12345"])
    (tmp_path / "r.json").write_text(json.dumps({"f": [[0, 99]]}))
    r = cli(*[a.format(tmp=tmp_path, ds=ds) for a in args], check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr


def test_cli_wrong_format_version(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    Datastore.create(ds)
    doc = json.loads((ds / "format.json").read_text())
    doc["version"] = 2
    (ds / "format.json").write_text(json.dumps(doc))
    r = cli("ls", ds, check=False)
    assert r.returncode == 1 and "version 2" in r.stderr and "Traceback" not in r.stderr


def test_sigkill_during_backup_never_breaks_committed_points(tmp_path: Path) -> None:
    """Kill the backup process at random instants; every committed point must
    restore to exactly what was backed up and verify must stay clean."""
    ds = tmp_path / "ds"
    cli("init", ds, "--chunk-size", "256K")
    rng = random.Random(1234)
    src = tmp_path / "disk.vhdx"
    expected: dict[int, str] = {}
    killed = 0
    deadline = time.monotonic() + 25
    it = 0
    duration = 0.0  # of an uninterrupted run, measured on the first iteration
    while it < 12 and time.monotonic() < deadline:
        data = bytearray(rand(24 * MiB, seed=it // 2))
        for _ in range(20):
            off = rng.randrange(len(data) - 100)
            data[off : off + 100] = rand(100, seed=rng.randrange(1 << 30))
        write_file(src, [bytes(data)])
        expected[it] = sha(src)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storage.engine",
                "backup",
                str(ds),
                "--vm",
                "v",
                "--metadata",
                json.dumps({"iteration": it}),
                str(src),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        t0 = time.monotonic()
        if it == 0:
            proc.wait()
            duration = time.monotonic() - t0
        else:
            time.sleep(rng.uniform(0.1, 1.0) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate()
        it += 1
    assert killed >= 2, "no backup was interrupted: raise the data size"
    store = Datastore.open(ds)
    points = store.points()
    assert points, "no backup ever committed"
    rep = store.verify()
    assert rep.ok, rep
    for p in points:
        out = tmp_path / "out" / p.id
        store.restore(p.id, out)
        assert sha(out / "disk.vhdx") == expected[p.metadata["iteration"]]
    # A marker killed before its rename is only removed once it is a second old
    # (its creator locks it microseconds after creating it).
    time.sleep(1.1)
    store.gc(grace_seconds=0)
    assert not [d for d in (ds / "points").iterdir() if not (d / "manifest.json").exists()]
    assert store.verify().ok
    assert set(os.listdir(ds / "in-progress")) <= {".clock", "gc.lock"}
