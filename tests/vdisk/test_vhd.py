"""The legacy VHD footer."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.vdisk import builder
from storage.vdisk.errors import UnreadableDisk
from storage.vdisk.vhd import read_vhd_footer

MiB = 1024 * 1024


def test_legacy_vhd_footer(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"")
    with raw.open("wb") as fh:
        fh.truncate(8 * MiB)
    vhd = tmp_path / "disk.vhd"
    builder.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed",
                  str(raw), str(vhd)])  # fmt: skip
    footer = read_vhd_footer(vhd)
    assert footer.disk_type == "fixed" and footer.virtual_size >= 8 * MiB
    with pytest.raises(UnreadableDisk, match="VHD footer"):
        read_vhd_footer(raw)
