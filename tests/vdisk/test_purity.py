"""storage.vdisk is a pure library: importing all of it loads neither Django, nor the
backup engine, nor any of our Django apps."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import storage.vdisk

FORBIDDEN = ("django", "storage.engine", "storage.models", "protection", "recovery", "backupsite")


def test_vdisk_imports_nothing_of_django_or_the_apps() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(storage.vdisk.__path__, "storage.vdisk."))
    assert {"storage.vdisk.vhdx", "storage.vdisk.chain", "storage.vdisk.builder"} <= set(modules)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    root = Path(storage.vdisk.__file__).resolve().parents[2]
    # A fresh interpreter: this one already has Django loaded by pytest-django.
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True, env={}
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "storage.vdisk.builder" in loaded
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)] == []
