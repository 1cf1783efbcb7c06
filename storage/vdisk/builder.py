"""The one disk builder: real VHDX guest disks made with the standard Linux tools.

Used by the lab (``manage.py lab create``, the lab guest's writes), by the test
fixtures and by the benchmark, so every disk in the project is made the same way.
Tools: qemu-img / qemu-io (qemu-utils), sgdisk (gdisk), mkntfs / ntfscp (ntfs-3g),
mkfs.ext4 (e2fsprogs), and mkfs.fat (dosfstools) when present for the EFI system
partition.

A disk is built as a sparse raw image: GPT by sgdisk, each file system made in
its own sparse partition file (mkntfs/mkfs.ext4 work on plain files, no loop
device or root needed), files copied in, the partition spliced into the raw
image at its offset, then ``qemu-img convert`` makes the VHDX. The steps are
public too, for disks ``build_disk`` does not describe (MBR, FAT, odd layouts).
Differencing disks and a non-replayed log are made by patching a finished
VHDX (``make_differencing``, ``set_log_guid``): qemu can make neither.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ToolError
from .vhdx import (
    FILE_PARAMETERS,
    HEADER_OFFSETS,
    PARENT_LOCATOR,
    PAYLOAD_BLOCK_ZERO,
    VHDX_PARENT_LOCATOR_TYPE,
    read_layout,
    with_checksum,
)

KiB = 1024
MiB = 1024 * KiB
SECTOR = 512
GPT_RESERVE = 1 * MiB  # keep the last MiB free for the backup GPT
ESP_TYPE, MSR_TYPE, BASIC_DATA_TYPE, LINUX_FS_TYPE = "EF00", "0C01", "0700", "8300"
REQUIRED_TOOLS = ("qemu-img", "qemu-io", "sgdisk", "mkntfs", "ntfscp", "mkfs.ext4")


def missing_tools(tools: Sequence[str] = REQUIRED_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def run(
    cmd: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> str:
    """Run a tool; its stdout (undecodable bytes kept as surrogate escapes), or ToolError."""
    argv = [os.fspath(c) for c in cmd]
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, check=False, env={**os.environ, **(env or {})}
        )
    except FileNotFoundError as exc:
        raise ToolError(
            f"{argv[0]} is not installed (Debian packages: qemu-utils, gdisk, ntfs-3g, e2fsprogs)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-5:]
        raise ToolError(f"{argv[0]} failed ({proc.returncode}): {' | '.join(detail)}")
    return proc.stdout.decode(errors="surrogateescape")


def pseudo_random(size: int, seed: int | str) -> bytes:
    """Incompressible, reproducible content (so a pagefile really takes space).

    Made in 1 MiB blocks: ``randbytes`` draws n*8 bits in one C int and overflows from
    256 MiB on (the page file of a 4 GiB lab disk).
    """
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MiB, size - offset)) for offset in range(0, size, MiB))


TEXT_WORDS = ("backup", "replica", "volume", "cluster", "invoice", "report", "quarter", "ledger")


def text_file(size: int, seed: int | str, words: Sequence[str] = TEXT_WORDS, per_line: int = 12) -> bytes:
    """Reproducible text (compressible, unlike ``pseudo_random``): CRLF lines of words."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(per_line)) + "\r\n").encode()
    return bytes(out[:size])


@dataclass(frozen=True, slots=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type_code: str
    name: str


# Content of a guest file: the bytes, or a file on this machine to copy (large files).
Content = bytes | Path


@dataclass(slots=True)
class DiskSpec:
    """What to put in a guest disk. ``files`` maps a path in the guest to content."""

    size: int
    fs: str = "ntfs"  # "ntfs" (Windows, GPT), "ext4" (Linux, GPT) or "none"
    subformat: str = "dynamic"  # or "fixed"
    block_size: int = 8 * MiB  # 0: qemu-img's default
    files: Mapping[str, Content] = field(default_factory=dict)
    label: str = ""
    partitions: Sequence[Partition] | None = None  # None: gpt_layout(size, fs)


def sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


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
        raise ToolError(f"a {size // MiB} MiB disk is too small for a {fs} guest layout")
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


def mbr(raw: Path, parts: Iterable[Partition]) -> None:
    """A classic MBR with primary partitions (``type_code`` in hex, e.g. "83"), written by hand."""
    table = bytearray(512)
    for i, p in enumerate(parts):
        entry = struct.pack(
            "<B3sB3sII", 0, b"\xfe\xff\xff", int(p.type_code, 16), b"\xfe\xff\xff",
            p.start // SECTOR, p.size // SECTOR,
        )  # fmt: skip
        table[446 + 16 * i : 462 + 16 * i] = entry
    table[440:444] = b"\x12\x34\x56\x78"  # disk signature
    table[510:512] = b"\x55\xaa"
    with raw.open("r+b") as fh:
        fh.write(table)


def make_ntfs(part_file: Path, part: Partition, files: Mapping[str, Content], label: str) -> None:
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
                raise ToolError(f"{name}: ntfscp cannot create folders; use root-level files")
            if isinstance(data, Path):
                src = data
            else:
                src = Path(tmp) / "content"
                src.write_bytes(data)
            run(["ntfscp", "-f", "-q", str(part_file), str(src), name.strip("/")])


def make_ext4(part_file: Path, files: Mapping[str, Content], label: str) -> None:
    with tempfile.TemporaryDirectory(dir=part_file.parent) as tmp:
        root = Path(tmp)
        for name, data in files.items():
            target = root / name.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, Path):
                shutil.copyfile(data, target)
            else:
                target.write_bytes(data)
        # -d populates the file system from a folder without mounting anything.
        run(
            ["mkfs.ext4", "-q", "-F", "-L", label or "root", "-E", "root_owner=0:0",
             "-d", str(root), str(part_file)]
        )  # fmt: skip


def make_fat(part_file: Path) -> None:
    if shutil.which("mkfs.fat"):
        run(["mkfs.fat", "-n", "SYSTEM", str(part_file)])


def convert(raw: Path, dest: Path, subformat: str = "dynamic", block_size: int = MiB) -> Path:
    """A raw image to a VHDX (``block_size`` 0: qemu-img's default); returns ``dest``."""
    if subformat not in ("dynamic", "fixed"):
        raise ToolError(f"unknown VHDX subformat {subformat!r}")
    opts = f"subformat={subformat}" + (f",block_size={block_size}" if block_size else "")
    if subformat == "fixed":
        # qemu marks all-zero blocks of a fixed disk as ZERO (non-standard); a real
        # fixed VHDX has every block present, so turn that off.
        opts += ",block_state_zero=off"
    run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", opts, str(raw), str(dest)])
    return dest


def create(dest: Path, size: int, subformat: str = "dynamic", block_size: int = 0) -> Path:
    """An empty VHDX (``block_size`` 0: qemu-img's default); returns ``dest``."""
    opts = f"subformat={subformat}" + (f",block_size={block_size}" if block_size else "")
    run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, str(dest), str(size)])
    return dest


def build_disk(dest: Path, spec: DiskSpec) -> list[Partition]:
    """Build ``dest`` (a .vhdx) from ``spec``; returns the partitions it holds."""
    missing = missing_tools()
    if missing:
        raise ToolError(f"missing tools: {', '.join(missing)} (Debian: qemu-utils gdisk ntfs-3g e2fsprogs)")
    if spec.size % MiB or spec.size <= 0:
        raise ToolError("disk size must be a positive multiple of 1 MiB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        raw = sparse_file(Path(tmp) / "disk.raw", spec.size)
        parts: list[Partition] = []
        if spec.fs != "none":
            parts = list(spec.partitions) if spec.partitions is not None else gpt_layout(spec.size, spec.fs)
            partition_table(raw, parts)
            for part in parts:
                part_file = sparse_file(Path(tmp) / f"part{part.number}.img", part.size)
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


# --------------------------------------------------------------------------- patched VHDX


def make_differencing(child: Path, parent: Path, locator: Mapping[str, str]) -> None:
    """Turn a qemu-made dynamic VHDX into a differencing disk of ``parent``.

    qemu cannot create differencing VHDX files. With 1 MiB blocks and a small disk
    the BAT layout is the same, so it takes: the has_parent flag in the file
    parameters, a parent locator metadata item ([MS-VHDX] 2.6.2.6) whose
    ``parent_linkage`` is the parent's DataWriteGuid, and the blocks qemu marked
    ZERO (never written) turned NOT_PRESENT, so they read from the parent.
    """
    layout = read_layout(child)
    meta_off = layout.metadata_offset
    data = bytearray(child.read_bytes())
    for block in range(layout.data_blocks):
        if layout.block_entry(block)[0] == PAYLOAD_BLOCK_ZERO:
            struct.pack_into("<Q", data, layout.bat_offset + 8 * layout.bat_index(block), 0)
    locator = {"parent_linkage": "{" + str(read_layout(parent).data_write_guid) + "}", **locator}
    count = struct.unpack_from("<H", data, meta_off + 10)[0]
    end = 64 * KiB
    for i in range(count):
        e = meta_off + 32 + 32 * i
        item = uuid.UUID(bytes_le=bytes(data[e : e + 16]))
        item_off, item_len = struct.unpack_from("<II", data, e + 16)
        end = max(end, item_off + item_len)
        if item == FILE_PARAMETERS:
            flags = struct.unpack_from("<I", data, meta_off + item_off + 4)[0]
            struct.pack_into("<I", data, meta_off + item_off + 4, flags | 2)
    keys = [(k.encode("utf-16-le"), v.encode("utf-16-le")) for k, v in locator.items()]
    body = bytearray(VHDX_PARENT_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(keys)))
    pos = 20 + 12 * len(keys)
    strings = bytearray()
    for k, v in keys:
        body += struct.pack("<IIHH", pos + len(strings), pos + len(strings) + len(k), len(k), len(v))
        strings += k + v
    body += strings
    item_off = (end + 7) // 8 * 8
    data[meta_off + item_off : meta_off + item_off + len(body)] = body
    e = meta_off + 32 + 32 * count
    data[e : e + 32] = PARENT_LOCATOR.bytes_le + struct.pack("<IIII", item_off, len(body), 0b110, 0)
    struct.pack_into("<H", data, meta_off + 10, count + 1)
    child.write_bytes(bytes(data))


def set_log_guid(vhdx: Path, guid: uuid.UUID) -> None:
    """Say in both headers (checksums kept valid) that the log holds writes not yet replayed."""
    data = bytearray(vhdx.read_bytes())
    for h in HEADER_OFFSETS:
        header = bytearray(data[h : h + 4 * KiB])
        header[48:64] = guid.bytes_le
        data[h : h + 4 * KiB] = with_checksum(bytes(header))
    vhdx.write_bytes(bytes(data))
