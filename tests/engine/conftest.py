"""Fixtures for the engine tests: they never touch the database."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.engine import Datastore

KiB = 1024
MiB = 1024 * 1024
CHUNK = 256 * KiB  # small chunks keep the tests fast while crossing many boundaries


@pytest.fixture
def ds(tmp_path: Path) -> Datastore:
    return Datastore.create(tmp_path / "ds", chunk_size=CHUNK)


def sha(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_file(path: Path, parts: list[bytes | int]) -> Path:
    """Write a file from pieces: bytes are data, an int is a hole of that size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for p in parts:
            if isinstance(p, int):
                f.seek(p, os.SEEK_CUR)
            else:
                f.write(p)
        f.truncate()
    return path


def rand(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes, reproducible when a test fails."""
    return random.Random(seed).randbytes(n)


@pytest.fixture
def files(tmp_path: Path) -> Callable[[str, list[bytes | int]], Path]:
    def make(name: str, parts: list[bytes | int]) -> Path:
        return write_file(tmp_path / "src" / name, parts)

    return make


def allocated(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_blocks * 512


def age_chunks(ds: Datastore, seconds: float) -> None:
    """Pretend every stored chunk was written ``seconds`` ago (GC grace tests)."""
    import time

    t = time.time() - seconds
    for p in Path(ds.root, "chunks").rglob("*"):
        if p.is_file():
            os.utime(p, (t, t))
