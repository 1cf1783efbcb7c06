from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from storage.engine import (
    Cancelled,
    Datastore,
    FileNotInPoint,
    InvalidSource,
    Progress,
    RateLimiter,
    SourceFile,
)

from .conftest import MiB, rand, sha, write_file


@pytest.fixture
def point(ds: Datastore, tmp_path: Path) -> str:
    a = write_file(tmp_path / "a", [rand(2 * MiB)])
    b = write_file(tmp_path / "b", [rand(MiB, 1)])
    return ds.backup("vm", [SourceFile("Virtual Hard Disks/a.vhdx", a), SourceFile("b.vmcx", b)]).id


def test_subset_of_files(ds: Datastore, point: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = ds.restore(point, out, files=["b.vmcx"])
    assert res.files == ["b.vmcx"]
    assert sha(out / "b.vmcx") == sha(tmp_path / "b")
    assert not (out / "Virtual Hard Disks").exists()
    with pytest.raises(FileNotInPoint):
        ds.restore(point, out, files=["nope"])


def test_throttle_progress_and_rate_limiter(ds: Datastore, point: str, tmp_path: Path) -> None:
    seen: list[int] = []
    progress: list[Progress] = []
    ds.restore(point, tmp_path / "o1", throttle=seen.append, progress=progress.append)
    assert sum(seen) == 3 * MiB
    assert progress[-1].bytes_done == 3 * MiB
    t0 = time.monotonic()
    ds.restore(point, tmp_path / "o2", throttle=RateLimiter(12 * MiB))
    assert time.monotonic() - t0 >= 0.2  # 3 MiB at 12 MiB/s ~ 0.25 s

    class Limiter:
        def __init__(self) -> None:
            self.n = 0

        def throttle(self, n: int) -> None:
            self.n += n

    lim = Limiter()
    ds.restore(point, tmp_path / "o3", throttle=lim)
    assert lim.n == 3 * MiB


def test_cancel_leaves_no_partial_file(ds: Datastore, point: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        ds.restore(point, out, cancel=lambda: True)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_never_writes_outside_target(ds: Datastore, point: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "Virtual Hard Disks").symlink_to(elsewhere)
    with pytest.raises(InvalidSource):
        ds.restore(point, out)
    assert list(elsewhere.iterdir()) == []
    # A symlink at the final name is replaced, not followed.
    (out / "Virtual Hard Disks").unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (out / "b.vmcx").symlink_to(victim)
    ds.restore(point, out)
    assert victim.read_bytes() == b"keep"
    assert not os.path.islink(out / "b.vmcx")
    assert sha(out / "b.vmcx") == sha(tmp_path / "b")


def test_hostile_name_in_manifest_is_refused(ds: Datastore, point: str, tmp_path: Path) -> None:
    import json

    m = Path(ds.root) / "points" / point / "manifest.json"
    doc = json.loads(m.read_text())
    doc["files"][1]["name"] = "../../escaped"
    m.write_text(json.dumps(doc))
    with pytest.raises(InvalidSource):
        ds.restore(point, tmp_path / "out" / "deep")
    assert not (tmp_path / "escaped").exists()
