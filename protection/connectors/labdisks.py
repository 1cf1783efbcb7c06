"""Build real VHDX guest disks with the standard Linux tools, and write into them.

Used by ``manage.py lab create`` and by tests/fixtures/build_vhdx.py, so the test
fixtures are made exactly like the lab's disks. Tools: qemu-img / qemu-io
(qemu-utils), sgdisk (gdisk), mkntfs / ntfscp (ntfs-3g), mkfs.ext4 (e2fsprogs),
and mkfs.fat (dosfstools) when present for the EFI system partition.

A disk is built as a sparse raw image: GPT by sgdisk, each file system made in
its own sparse partition file (mkntfs/mkfs.ext4 work on plain files, no loop
device or root needed), files copied in, the partition spliced into the raw
image at its offset, then ``qemu-img convert`` makes the VHDX.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024
SECTOR = 512
GPT_RESERVE = 1 * MiB  # keep the last MiB free for the backup GPT
ESP_TYPE, MSR_TYPE, BASIC_DATA_TYPE, LINUX_FS_TYPE = "EF00", "0C01", "0700", "8300"
REQUIRED_TOOLS = ("qemu-img", "qemu-io", "sgdisk", "mkntfs", "ntfscp", "mkfs.ext4")
# Names Windows gives the files whose content is worthless after a restore.
VOLATILE_FILES = ("pagefile.sys", "hiberfil.sys", "swapfile.sys")


class LabToolError(RuntimeError):
    """An external tool is missing or failed; the message carries its stderr."""


def missing_tools(tools: Sequence[str] = REQUIRED_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def run(cmd: Sequence[str], *, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LabToolError(
            f"{cmd[0]} is not installed (Debian packages: qemu-utils, gdisk, ntfs-3g, e2fsprogs)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabToolError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabToolError(f"{cmd[0]} failed ({proc.returncode}): {' | '.join(detail)}")
    return proc.stdout


def pseudo_random(size: int, seed: int | str) -> bytes:
    """Incompressible, reproducible content (so a pagefile really takes space)."""
    return random.Random(seed).randbytes(size)


def text_file(size: int, seed: int | str) -> bytes:
    rng = random.Random(seed)
    words = ["backup", "replica", "volume", "cluster", "invoice", "report", "quarter", "ledger"]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(12)) + "\r\n").encode()
    return bytes(out[:size])


@dataclass(frozen=True, slots=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type_code: str
    name: str


@dataclass(slots=True)
class DiskSpec:
    """What to put in a guest disk. ``files`` maps a path in the guest to content."""

    size: int
    fs: str = "ntfs"  # "ntfs" (Windows, GPT), "ext4" (Linux, GPT) or "none"
    subformat: str = "dynamic"  # or "fixed"
    block_size: int = 8 * MiB
    files: Mapping[str, bytes] = field(default_factory=dict)
    label: str = ""


def gpt_layout(size: int, fs: str) -> list[Partition]:
    """A Windows gen-2 style layout (ESP, MSR, data) scaled down for small disks."""
    esp = 100 * MiB if size >= 2048 * MiB else 8 * MiB
    parts = [Partition(1, 1 * MiB, esp, ESP_TYPE, "EFI system partition")]
    pos = 1 * MiB + esp
    if fs == "ntfs" and size >= 1024 * MiB:
        parts.append(Partition(2, pos, 16 * MiB, MSR_TYPE, "Microsoft reserved partition"))
        pos += 16 * MiB
    end = (size - GPT_RESERVE) // MiB * MiB
    if end - pos < 16 * MiB:
        raise LabToolError(f"a {size // MiB} MiB disk is too small for a {fs} guest layout")
    data_type = BASIC_DATA_TYPE if fs == "ntfs" else LINUX_FS_TYPE
    name = "Basic data partition" if fs == "ntfs" else "Linux filesystem"
    parts.append(Partition(len(parts) + 1, pos, end - pos, data_type, name))
    return parts


def partition_table(raw: Path, parts: Iterable[Partition]) -> None:
    cmd = ["sgdisk", "--clear"]
    for p in parts:
        first = p.start // SECTOR
        last = (p.start + p.size) // SECTOR - 1
        cmd += [f"--new={p.number}:{first}:{last}", f"--typecode={p.number}:{p.type_code}"]
        cmd += [f"--change-name={p.number}:{p.name}"]
    run([*cmd, str(raw)])


def splice(part_file: Path, raw: Path, offset: int) -> None:
    """Copy a partition image into the disk image, skipping zero runs to stay sparse."""
    zero = bytes(MiB)
    with part_file.open("rb") as src, raw.open("r+b") as dst:
        pos = offset
        while chunk := src.read(MiB):
            if chunk != zero[: len(chunk)]:
                dst.seek(pos)
                dst.write(chunk)
            pos += len(chunk)


def make_ntfs(part_file: Path, part: Partition, files: Mapping[str, bytes], label: str) -> None:
    # -H/-S/-p: boot sector geometry and hidden sectors so Windows could boot it;
    # --fast: no zeroing, the sparse file already reads as zeros.
    run(
        [
            "mkntfs", "-F", "-f", "-q", "-s", "512", "-c", "4096", "-H", "255", "-S", "63",
            "-p", str(part.start // SECTOR), "-L", label or "Windows", str(part_file),
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(dir=part_file.parent) as tmp:
        for name, data in files.items():
            if "/" in name.strip("/"):
                raise LabToolError(f"{name}: ntfscp cannot create folders; use root-level files")
            src = Path(tmp) / "content"
            src.write_bytes(data)
            run(["ntfscp", "-f", "-q", str(part_file), str(src), name.strip("/")])


def make_ext4(part_file: Path, files: Mapping[str, bytes], label: str) -> None:
    with tempfile.TemporaryDirectory(dir=part_file.parent) as tmp:
        root = Path(tmp)
        for name, data in files.items():
            target = root / name.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        # -d populates the file system from a folder without mounting anything.
        run(
            ["mkfs.ext4", "-q", "-F", "-L", label or "root", "-E", "root_owner=0:0",
             "-d", str(root), str(part_file)]
        )  # fmt: skip


def make_fat(part_file: Path) -> None:
    if shutil.which("mkfs.fat"):
        run(["mkfs.fat", "-n", "SYSTEM", str(part_file)])


def convert(raw: Path, dest: Path, subformat: str, block_size: int) -> None:
    if subformat not in ("dynamic", "fixed"):
        raise LabToolError(f"unknown VHDX subformat {subformat!r}")
    opts = f"subformat={subformat},block_size={block_size}"
    if subformat == "fixed":
        # qemu marks all-zero blocks of a fixed disk as ZERO (non-standard); a real
        # fixed VHDX has every block present, so turn that off.
        opts += ",block_state_zero=off"
    run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", opts, str(raw), str(dest)])


def build_disk(dest: Path, spec: DiskSpec) -> list[Partition]:
    """Build ``dest`` (a .vhdx) from ``spec``; returns the partitions it holds."""
    missing = missing_tools()
    if missing:
        raise LabToolError(
            f"missing tools: {', '.join(missing)} (Debian: qemu-utils gdisk ntfs-3g e2fsprogs)"
        )
    if spec.size % MiB or spec.size <= 0:
        raise LabToolError("disk size must be a positive multiple of 1 MiB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        raw = Path(tmp) / "disk.raw"
        with raw.open("wb") as fh:
            fh.truncate(spec.size)
        parts: list[Partition] = []
        if spec.fs != "none":
            parts = gpt_layout(spec.size, spec.fs)
            partition_table(raw, parts)
            for part in parts:
                part_file = Path(tmp) / f"part{part.number}.img"
                with part_file.open("wb") as fh:
                    fh.truncate(part.size)
                if part.type_code == ESP_TYPE:
                    make_fat(part_file)
                elif part.type_code == BASIC_DATA_TYPE:
                    make_ntfs(part_file, part, spec.files, spec.label)
                elif part.type_code == LINUX_FS_TYPE:
                    make_ext4(part_file, spec.files, spec.label)
                else:
                    continue
                splice(part_file, raw, part.start)
                part_file.unlink()
        tmp_dest = Path(tmp) / "disk.vhdx"
        convert(raw, tmp_dest, spec.subformat, spec.block_size)
        os.replace(tmp_dest, dest)
    return parts


def windows_files(pagefile_size: int, seed: str, data_size: int = 2 * MiB) -> dict[str, bytes]:
    """A Windows system volume in miniature: paging files plus some user data.

    (Root-level files only: ntfscp cannot create folders.)
    """
    return {
        "pagefile.sys": pseudo_random(pagefile_size, f"{seed}-pagefile"),
        "swapfile.sys": pseudo_random(min(pagefile_size, 1 * MiB), f"{seed}-swapfile"),
        "notes.txt": text_file(6_000, f"{seed}-notes"),
        "report.docx": pseudo_random(300_000, f"{seed}-report"),
        "ledger.csv": text_file(2 * MiB + 123, f"{seed}-ledger"),
        "database.mdf": pseudo_random(data_size, f"{seed}-database"),
    }


def linux_files(seed: str, data_size: int = 1 * MiB + 77) -> dict[str, bytes]:
    return {
        "etc/hostname": f"{seed}\n".encode(),
        "etc/fstab": b"LABEL=root / ext4 defaults 0 1\n",
        "home/admin/notes.txt": text_file(8_000, f"{seed}-notes"),
        "var/lib/app/data.bin": pseudo_random(data_size, f"{seed}-data"),
    }


# --------------------------------------------------------------------------- guest writes


def qemu_io_write(disk: Path, writes: Sequence[tuple[int, int, int]], batch: int = 500) -> None:
    """Write ``(virtual offset, length, pattern byte)`` through qemu's VHDX driver.

    Going through qemu (not poking the file) keeps BAT, log and headers right, like
    a guest writing through Hyper-V would.
    """
    for i in range(0, len(writes), batch):
        cmd = ["qemu-io", "-f", "vhdx"]
        for off, length, pattern in writes[i : i + batch]:
            cmd += ["-c", f"write -q -P {pattern:#04x} {off} {length}"]
        run([*cmd, str(disk)])


def qemu_io_write_data(disk: Path, offset: int, data: bytes) -> None:
    """Write arbitrary bytes at a virtual offset (qemu-io's -s takes a pattern file)."""
    # Not next to the disk: qemu-io splits its command line on spaces.
    with tempfile.NamedTemporaryFile(prefix="qemu-io-") as src:
        src.write(data)
        src.flush()
        run(["qemu-io", "-f", "vhdx", "-c", f"write -q -s {src.name} {offset} {len(data)}",
             str(disk)])  # fmt: skip


def qemu_img_check(disk: Path) -> tuple[bool, str]:
    proc = subprocess.run(
        ["qemu-img", "check", "-f", "vhdx", str(disk)], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
