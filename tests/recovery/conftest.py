"""Real guest disks for the item-level recovery tests, built once per session.

Each disk is made with the project's one disk builder (storage.vdisk.builder), the
way the lab makes its disks: a sparse raw image, a partition table, each file
system formatted in its own partition file (mkntfs / mkfs.ext4 / mkfs.vfat),
files copied in, the partition spliced in at its offset, then ``qemu-img
convert`` to a dynamic VHDX with 1 MiB blocks. Every VHDX is backed up
into a real engine datastore and the tests read it back *through the engine
reader*, which is the product path.

NTFS content goes in through an ntfs-3g (FUSE) mount, the only way to make
folders and set timestamps; where FUSE is unavailable the NTFS tests skip.
Names that no tool will create (``..``, ``../x``, NUL inside) are made by
patching placeholder names in the finished NTFS image.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recovery.itemlevel import VirtualDisk, open_point_disk
from storage.engine import Datastore, SourceFile
from storage.vdisk import builder
from storage.vdisk.builder import (
    Partition,
    convert,
    make_differencing,
    mbr,
    partition_table,
    set_log_guid,
    sparse_file,
    splice,
)

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB
SECTOR = 512
T_2001 = 981173106_789000000  # 2001-02-03 04:05:06.789 UTC, in ns
T_2010 = 1262304000_000000000  # 2010-01-01 00:00:00 UTC
T_1999 = 915148800_000000000  # 1999-01-01 00:00:00 UTC
VHD_DIR = "Virtual Hard Disks"

# Placeholder names (made by ntfs-3g) -> hostile names patched into the image afterwards.
HOSTILE_PATCHES = {
    "PH_DOTDOT_0001": "..",
    "PH_DOT_0000002": ".",
    "PH_TRAVERSE_03": "../../pwned",
    "PH_BACKSLASH04": "..\\..\\pwn2",
    "PH_ABSOLUTE_05": "/etc/pwned3",
    "PH_DRIVE_00006": "C:\\pwned4",
    "PH_NUL_0000007": "nul\0byte",
}
# Made through the mount: legal on NTFS, each a problem somewhere.
HOSTILE_MOUNT_NAMES = [
    "a\\b",
    "c:d",
    "CON",
    "aux.txt",
    "trail.",
    "trail ",
    'e<f>|?*"',
    "ctl\x01x",
    "Case.txt",
    "case.txt",
]
LONG_NAME = "é" * 200 + ".txt"  # 204 UTF-16 units (fine on NTFS), 404 UTF-8 bytes (too long for Linux)


rand = builder.pseudo_random
TEXT_WORDS = ("backup", "replica", "volume", "invoice", "ledger", "quarter", "résumé", "ünïcødé")


def text(n: int, seed: int | str) -> bytes:
    """Text with non-ASCII words, so names and contents are not only ASCII."""
    return builder.text_file(n, seed, TEXT_WORDS, per_line=10)


NTFS_FILES: dict[str, tuple[bytes, int | None]] = {
    "Docs/readme.txt": (text(5000, "readme"), T_2001),
    "Docs/Reports/2024/q1.csv": (text(20_000, "csv"), T_2010),
    "Données/résumé - ünïcødé ☃.txt": (text(3000, "unicode"), T_1999),
    "big.bin": (rand(3 * MiB + 123, "big"), T_2010),
    "data/large.bin": (rand(24 * MiB, "large"), None),
    "empty.txt": (b"", T_2010),
    "tiny.txt": (b"tiny data\n", T_2010),
    "pagefile.sys": (rand(1 * MiB, "pagefile"), None),
    "Hidden.txt": (b"hidden but normal\n", T_2010),
}
EXT_FILES: dict[str, tuple[bytes, int | None]] = {
    "docs/readme.txt": (text(4000, "ext-readme"), T_2001),
    "docs/a/b/c/deep.txt": (b"deep\n", T_1999),
    "big.bin": (rand(1 * MiB + 77, "ext-big"), T_2010),
    "ünï.txt": (text(100, "ext-uni"), T_2010),
    "back\\slash.txt": (b"backslash in a POSIX name\n", T_2010),
    ".dotfile": (b"dot\n", T_2010),
}
EXT_LATIN1 = b"latin\xe9.txt"  # not UTF-8: the name comes back with surrogate escapes
FAT_FILES: dict[str, tuple[bytes, int | None]] = {
    "Folder/Sub/file.txt": (text(2000, "fat-file"), T_2010),
    "Long File Name With Spaces.txt": (text(700, "fat-long"), T_2010),
    "Ünïcødé ☃.txt": (text(300, "fat-uni"), T_2010),
    "big.bin": (rand(700 * KiB, "fat-big"), T_2010),
}


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    return builder.run(cmd, env=env, timeout=300)


def need(*tools: str) -> None:
    missing = builder.missing_tools(tools)
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


def gpt(raw: Path, parts: list[tuple[int, int, str, str]]) -> None:
    """(start MiB, size MiB, type code, name) per partition."""
    layout = [
        Partition(n, start * MiB, size * MiB, code, name)
        for n, (start, size, code, name) in enumerate(parts, 1)
    ]
    partition_table(raw, layout)


def write_tree(root: Path, files: dict[str, tuple[bytes, int | None]]) -> None:
    for rel, (data, mtime) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if mtime is not None:
            os.utime(p, ns=(mtime, mtime))


@contextlib.contextmanager
def ntfs_mount(part: Path) -> Iterator[Path]:
    mnt = part.parent / f"{part.stem}-mnt"
    mnt.mkdir(exist_ok=True)
    try:
        run("ntfs-3g", str(part), str(mnt))
    except RuntimeError as exc:
        pytest.skip(f"cannot mount NTFS with ntfs-3g here (FUSE): {exc}")
    try:
        yield mnt
    finally:
        unmount = shutil.which("fusermount") or shutil.which("fusermount3")
        run(*([unmount, "-u"] if unmount else ["umount"]), str(mnt))


def patch_ntfs_names(part: Path, patches: dict[str, str]) -> None:
    """Rename placeholders in place: the $FILE_NAME attribute and the index entry both hold
    [length in UTF-16 units][namespace][name]; a shorter name keeps every structure valid."""
    data = bytearray(part.read_bytes())
    for old, new in patches.items():
        needle, new_enc = old.encode("utf-16-le"), new.encode("utf-16-le")
        assert len(new) <= len(old)
        hits, start = 0, 0
        while (i := data.find(needle, start)) >= 0:
            start = i + 2
            if data[i - 2] != len(old):
                continue
            data[i - 2] = len(new)
            data[i : i + len(needle)] = new_enc.ljust(len(needle), b"\0")
            hits += 1
        if hits < 2:
            raise RuntimeError(f"placeholder {old} found {hits} times, expected the record and the index")
    part.write_bytes(bytes(data))


@dataclass
class Image:
    """A VHDX built for the tests and backed up into the session datastore."""

    ds: Datastore
    point_id: str
    name: str  # the disk's file name inside the recovery point
    vhdx: Path
    parts: dict[int, Path] = field(default_factory=dict)  # partition images, by partition number
    names: list[str] = field(default_factory=list)  # all file names of the point

    def open(self, name: str | None = None, datastore: Datastore | None = None) -> VirtualDisk:
        ds = datastore or self.ds
        return open_point_disk(self.names, lambda n: ds.open_file(self.point_id, n), name or self.name)

    def counting(self) -> tuple[Datastore, dict[str, int]]:
        """A separate handle on the datastore that counts the chunks loaded through it."""
        ds = Datastore.open(self.ds.root)
        counts = {"chunks": 0, "bytes": 0}
        load = ds.store.load

        def counted(digest: bytes, *, check: bool = True) -> bytes:
            data = load(digest, check=check)
            counts["chunks"] += 1
            counts["bytes"] += len(data)
            return data

        ds.store.load = counted  # type: ignore[method-assign]
        return ds, counts


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("itemlevel-images")


@pytest.fixture(scope="session")
def datastore(tmp_path_factory: pytest.TempPathFactory) -> Datastore:
    return Datastore.create(tmp_path_factory.mktemp("itemlevel-ds") / "ds", chunk_size=CHUNK)


def back_up(ds: Datastore, vm: str, files: dict[str, Path]) -> str:
    point = ds.backup(vm, [SourceFile(name, str(path)) for name, path in files.items()], parent=None)
    return point.id


@pytest.fixture(scope="session")
def ntfs_image(build_dir: Path, datastore: Datastore) -> Image:
    """GPT: an 8 MiB FAT 'EFI' partition and an NTFS data partition with normal and hostile names."""
    need("qemu-img", "sgdisk", "mkntfs", "ntfscp", "ntfs-3g", "mkfs.vfat")
    d = build_dir / "ntfs"
    d.mkdir()
    raw = sparse_file(d / "disk.raw", 96 * MiB)
    gpt(raw, [(1, 8, "EF00", "EFI system partition"), (9, 86, "0700", "Basic data partition")])
    esp = sparse_file(d / "esp.img", 8 * MiB)
    run("mkfs.vfat", "-n", "SYSTEM", str(esp))
    part = sparse_file(d / "ntfs.img", 86 * MiB)
    run(
        "mkntfs",
        "-F",
        "-f",
        "-q",
        "-s",
        "512",
        "-c",
        "4096",
        "-p",
        str(9 * MiB // SECTOR),
        "-L",
        "Data",
        str(part),
    )
    with ntfs_mount(part) as mnt:
        write_tree(mnt, NTFS_FILES)
        run("setfattr", "-n", "system.ntfs_attrib_be", "-v", "0x00000002", str(mnt / "Hidden.txt"))
        with (mnt / "sparse.bin").open("wb") as f:
            f.write(b"head" * 1024)
            f.seek(2 * MiB - 4096)
            f.write(b"tail" * 1024)
        evil = mnt / "evil"
        evil.mkdir()
        for n, name in enumerate([*HOSTILE_MOUNT_NAMES, *HOSTILE_PATCHES]):
            (evil / name).write_bytes(f"hostile {n}\n".encode())
        (evil / "sub").mkdir()
        (evil / "sub" / "inner.txt").write_bytes(b"inner\n")
        for folder, t in (("Docs", T_2010), ("Docs/Reports", T_2001)):
            os.utime(mnt / folder, ns=(t, t))
    src = d / "long.txt"
    src.write_bytes(b"long name\n")
    run("ntfscp", "-f", "-q", str(part), str(src), f"evil/{LONG_NAME}")
    patch_ntfs_names(part, HOSTILE_PATCHES)
    splice(esp, raw, 1 * MiB)
    splice(part, raw, 9 * MiB)
    vhdx = convert(raw, d / "ntfs.vhdx")
    raw.unlink()
    name = f"{VHD_DIR}/web01.vhdx"
    point = back_up(datastore, "vm-ntfs", {name: vhdx, "Virtual Machines/web01.vmcx": src})
    return Image(datastore, point, name, vhdx, {1: esp, 2: part}, [name, "Virtual Machines/web01.vmcx"])


@pytest.fixture(scope="session")
def ext_image(build_dir: Path, datastore: Datastore) -> Image:
    """MBR with one ext4 partition: symlinks (in and out), a FIFO, odd names, known timestamps."""
    need("qemu-img", "mkfs.ext4")
    d = build_dir / "ext"
    d.mkdir()
    tree = d / "tree"
    write_tree(tree, EXT_FILES)
    (tree / "docs" / "latin").mkdir()
    latin = os.path.join(os.fsencode(tree / "docs" / "latin"), EXT_LATIN1)
    with open(latin, "wb") as f:
        f.write(b"latin-1 name\n")
    os.symlink("docs/readme.txt", tree / "link-rel")
    os.symlink("/etc/passwd", tree / "link-abs")
    os.symlink("../../../../../etc", tree / "docs" / "link-up")
    os.symlink("docs", tree / "link-dir")
    os.mkfifo(tree / "pipe")
    for folder, t in (("docs", T_2010), ("docs/a", T_1999)):
        os.utime(tree / folder, ns=(t, t))
    raw = sparse_file(d / "disk.raw", 64 * MiB)
    mbr(raw, [Partition(1, 1 * MiB, 48 * MiB, "83", "")])
    part = sparse_file(d / "ext.img", 48 * MiB)
    run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        "linroot",
        "-I",
        "256",
        "-E",
        "root_owner=0:0",
        "-d",
        str(tree),
        str(part),
    )
    splice(part, raw, 1 * MiB)
    vhdx = convert(raw, d / "ext.vhdx")
    raw.unlink()
    name = f"{VHD_DIR}/db01.vhdx"
    return Image(datastore, back_up(datastore, "vm-ext", {name: vhdx}), name, vhdx, {1: part}, [name])


@pytest.fixture(scope="session")
def fat_image(build_dir: Path, datastore: Datastore) -> Image:
    """An unpartitioned ("superfloppy") FAT32 disk filled with mtools."""
    need("qemu-img", "mkfs.vfat", "mcopy")
    d = build_dir / "fat"
    d.mkdir()
    tree = d / "tree"
    write_tree(tree, FAT_FILES)
    raw = sparse_file(d / "disk.raw", 64 * MiB)
    run("mkfs.vfat", "-F", "32", "-n", "FATVOL", str(raw))
    env = {"LC_ALL": "C.UTF-8", "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    run("mcopy", "-s", "-m", "-i", str(raw), *[str(p) for p in sorted(tree.iterdir())], "::/", env=env)
    vhdx = convert(raw, d / "fat.vhdx")
    name = f"{VHD_DIR}/fat.vhdx"
    return Image(datastore, back_up(datastore, "vm-fat", {name: vhdx}), name, vhdx, {0: raw}, [name])


def _zero_ntfs_mft(part: Path) -> None:
    with part.open("r+b") as f:
        boot = f.read(512)
        bytes_per_sector = struct.unpack_from("<H", boot, 0x0B)[0]
        cluster = bytes_per_sector * boot[0x0D]
        mft_lcn = struct.unpack_from("<q", boot, 0x30)[0]
        f.seek(mft_lcn * cluster)
        f.write(rand(256 * KiB, "mft-garbage"))


@pytest.fixture(scope="session")
def special_image(build_dir: Path, datastore: Datastore) -> Image:
    """GPT with volumes that cannot be browsed: BitLocker, a damaged NTFS, an empty one,
    garbage, and an NTFS whose boot sector was zeroed."""
    need("qemu-img", "sgdisk", "mkntfs")
    d = build_dir / "special"
    d.mkdir()
    raw = sparse_file(d / "disk.raw", 48 * MiB)
    gpt(raw, [(1 + 8 * i, 8, "0700", f"part{i + 1}") for i in range(5)])
    bitlocker = bytearray(rand(512, "fve"))
    bitlocker[0:11] = b"\xeb\x58\x90-FVE-FS-"
    bitlocker[510:512] = b"\x55\xaa"
    (d / "p1.img").write_bytes(bytes(bitlocker) + rand(64 * KiB, "fve-body"))
    p2 = sparse_file(d / "p2.img", 8 * MiB)
    run("mkntfs", "-F", "-f", "-q", "-L", "Broken", str(p2))
    _zero_ntfs_mft(p2)
    (d / "p4.img").write_bytes(rand(1 * MiB, "garbage"))
    p5 = sparse_file(d / "p5.img", 8 * MiB)
    run("mkntfs", "-F", "-f", "-q", "-L", "NoBoot", str(p5))
    with p5.open("r+b") as f:
        f.write(bytes(512))
    for n in (1, 2, 4, 5):
        splice(d / f"p{n}.img", raw, (1 + 8 * (n - 1)) * MiB)
    vhdx = convert(raw, d / "special.vhdx")
    name = f"{VHD_DIR}/special.vhdx"
    return Image(datastore, back_up(datastore, "vm-special", {name: vhdx}), name, vhdx, {}, [name])


# -- a differencing chain ------------------------------------------------------------------


@pytest.fixture(scope="session")
def chain_image(build_dir: Path, datastore: Datastore) -> Image:
    """base.vhdx (FAT) + an AVHDX holding the blocks a later write changed, and a copy of the
    base whose header says its log was not replayed."""
    need("qemu-img", "mkfs.vfat", "mcopy")
    d = build_dir / "chain"
    d.mkdir()
    env = {"LC_ALL": "C.UTF-8", "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    raw1 = sparse_file(d / "base.raw", 32 * MiB)
    run("mkfs.vfat", "-n", "CHAIN", str(raw1))
    (d / "a.txt").write_bytes(text(300 * KiB, "old"))
    (d / "keep.txt").write_bytes(text(50 * KiB, "keep"))
    run("mcopy", "-i", str(raw1), str(d / "a.txt"), str(d / "keep.txt"), "::/", env=env)
    raw2 = d / "child.raw"
    shutil.copyfile(raw1, raw2)
    (d / "a.txt").write_bytes(text(500 * KiB, "new"))
    (d / "b.txt").write_bytes(b"added in the checkpoint\n")
    run("mcopy", "-o", "-i", str(raw2), str(d / "a.txt"), str(d / "b.txt"), "::/", env=env)
    delta = sparse_file(d / "delta.raw", 32 * MiB)
    with raw1.open("rb") as f1, raw2.open("rb") as f2, delta.open("r+b") as out:
        for block in range(32):
            b1, b2 = f1.read(MiB), f2.read(MiB)
            if b1 != b2:
                assert b2.strip(b"\0"), "a changed block that is all zeros would read through to the parent"
                out.seek(block * MiB)
                out.write(b2)
    base = convert(raw1, d / "base.vhdx")
    child = convert(delta, d / "base_6A1B.avhdx")
    make_differencing(
        child,
        base,
        {
            "relative_path": ".\\base.vhdx",
            "absolute_win32_path": "C:\\VMs\\vm1\\Virtual Hard Disks\\base.vhdx",
        },
    )
    logged = d / "logged.vhdx"
    shutil.copyfile(base, logged)
    set_log_guid(logged, uuid.uuid4())
    files = {
        f"{VHD_DIR}/base.vhdx": base,
        f"{VHD_DIR}/base_6A1B.avhdx": child,
        f"{VHD_DIR}/logged.vhdx": logged,
    }
    point = back_up(datastore, "vm-chain", files)
    return Image(datastore, point, f"{VHD_DIR}/base_6A1B.avhdx", child, {0: raw2}, list(files))


# -- helpers for the tests -----------------------------------------------------------------


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of every path under ``root`` except ``skip`` and below; links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if skip is not None and (p == str(skip) or p.startswith(str(skip) + os.sep)):
                continue
            if skip is not None and str(skip).startswith(p + os.sep) and os.path.isdir(p):
                continue  # a parent of the destination: making the destination creates it
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def nothing_written_outside(root: Path, dest: Path) -> Iterator[None]:
    """Everything under ``root`` but ``dest`` must be exactly as it was."""
    before = snapshot(root, dest)
    yield
    after = snapshot(root, dest)
    assert after == before, (
        f"changed outside the destination: {sorted(set(after.items()) ^ set(before.items()))}"
    )


@pytest.fixture(scope="session")
def vhd_image(fat_image: Image, build_dir: Path, datastore: Datastore) -> Image:
    """The FAT disk as legacy VHD files: dynamic, fixed, and a dynamic one marked differencing."""
    need("qemu-img")
    d = build_dir / "vhd"
    d.mkdir()
    raw = fat_image.parts[0]
    files = {}
    for sub in ("dynamic", "fixed"):
        dest = d / f"{sub}.vhd"
        opts = f"subformat={sub},force_size=on"
        run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", opts, str(raw), str(dest))
        files[f"{VHD_DIR}/{sub}.vhd"] = dest
    diff = d / "diff.vhd"
    data = bytearray((d / "dynamic.vhd").read_bytes())
    struct.pack_into(">I", data, len(data) - 512 + 60, 4)  # footer disk_type = differencing
    diff.write_bytes(bytes(data))
    files[f"{VHD_DIR}/diff.vhd"] = diff
    point = back_up(datastore, "vm-vhd", files)
    return Image(datastore, point, f"{VHD_DIR}/dynamic.vhd", files[f"{VHD_DIR}/dynamic.vhd"], {}, list(files))


# -- exFAT: formatted by mkfs.exfat, files written by hand (no tool adds files without mounting) ----

EXFAT_HELLO = rand(100 * KiB + 5, "exfat-hello")
EXFAT_INNER = b"inside a folder\n"


def _exfat_entry_set(name: str, attributes: int, cluster: int, size: int, contiguous: bool = True) -> bytes:
    """A file directory entry set: File (0x85), Stream Extension (0xC0), File Name (0xC1) entries."""
    units = name.encode("utf-16-le")
    parts = [units[i : i + 30].ljust(30, b"\0") for i in range(0, max(len(units), 1), 30)]
    date = ((2010 - 1980) << 9) | (1 << 5) | 1
    stamp = (date << 16) | (1 << 11)  # 2010-01-01 01:00:00 local time...
    tz = 0x80 | 4  # ...at UTC+01:00 (4 quarter hours): 2010-01-01 00:00:00 UTC
    primary = struct.pack("<BBHHH", 0x85, 1 + len(parts), 0, attributes, 0)
    primary += struct.pack("<IIIBBBBB", stamp, stamp, stamp, 0, 0, tz, tz, tz).ljust(24, b"\0")
    flags = 0x01 | (0x02 if contiguous else 0)
    stream = struct.pack("<BBBBHH", 0xC0, flags, 0, len(name), 0, 0)
    stream += struct.pack("<QIIQ", size, 0, cluster, size)
    names = b"".join(struct.pack("<BB", 0xC1, 0) + p for p in parts)
    return primary + stream + names


@pytest.fixture(scope="session")
def exfat_image(build_dir: Path, datastore: Datastore) -> Image:
    need("qemu-img", "mkfs.exfat")
    d = build_dir / "exfat"
    d.mkdir()
    raw = sparse_file(d / "disk.raw", 32 * MiB)
    run("mkfs.exfat", "-L", "EXDATA", str(raw))
    data = bytearray(raw.read_bytes())
    sector = 1 << data[108]
    cluster_size = sector << data[109]
    heap, count, root = struct.unpack_from("<III", data, 88)

    def at(cluster: int) -> int:
        return heap * sector + (cluster - 2) * cluster_size

    hello_cluster, sub_cluster = count - 40, count - 5  # far past what mkfs used
    root_off = at(root)
    slot = root_off
    while data[slot] != 0:  # first unused entry after label, bitmap and up-case table
        slot += 32
    entries = _exfat_entry_set("hello wörld.txt", 0x20, hello_cluster, len(EXFAT_HELLO))
    entries += _exfat_entry_set("Sub", 0x10, sub_cluster, cluster_size)
    data[slot : slot + len(entries)] = entries
    data[at(hello_cluster) : at(hello_cluster) + len(EXFAT_HELLO)] = EXFAT_HELLO
    inner_cluster = sub_cluster + 1
    inner = _exfat_entry_set("inner.txt", 0x20, inner_cluster, len(EXFAT_INNER))
    data[at(sub_cluster) : at(sub_cluster) + len(inner)] = inner
    data[at(inner_cluster) : at(inner_cluster) + len(EXFAT_INNER)] = EXFAT_INNER
    raw.write_bytes(bytes(data))
    disk = sparse_file(d / "gpt.raw", 40 * MiB)
    gpt(disk, [(1, 32, "0700", "exFAT data")])
    splice(raw, disk, 1 * MiB)
    vhdx = convert(disk, d / "exfat.vhdx")
    name = f"{VHD_DIR}/exfat.vhdx"
    return Image(datastore, back_up(datastore, "vm-exfat", {name: vhdx}), name, vhdx, {1: raw}, [name])
