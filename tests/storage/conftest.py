"""Real tmpfs mounts for the storage pool tests (root only; CI runs as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")

Mounter = Callable[..., Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mounter]:
    """``tmpfs("name", "size=16m", "ro")`` mounts a fresh tmpfs at tmp_path/name; all are
    unmounted at teardown (innermost first, and stacked mounts until none is left)."""
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        path = tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        opts = ",".join(options) if options else "size=16m"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in sorted(set(mounted), key=lambda p: len(str(p)), reverse=True):
        while os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=True)
