"""Malformed virtual disks: damaged VHDX / VHD structures, looping chains, absurd partition tables.

Every case starts from a real small disk (built by the project's disk builder with
qemu-img, sgdisk and mkfs.ext4), patches one structure the way damage or a hostile file
would, and then opens it, lists its volumes and reads the whole virtual disk. Each step
either works or raises a ``VdiskError`` subclass with a plain message; never another
exception type, never more than a few seconds, never more than 64 MiB allocated.
The bounds are enforced by ``tests/fixtures/bounded.py`` (tracemalloc peak, an
RLIMIT_AS safety net, per-case timing, and pytest-timeout against a real hang).
"""

from __future__ import annotations

import io
import random
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from storage.vdisk import VdiskError, builder, list_volumes, open_disk
from storage.vdisk.builder import DiskSpec
from storage.vdisk.chain import ParentRef
from storage.vdisk.vhdx import (
    FILE_PARAMETERS,
    HEADER_OFFSETS,
    LOGICAL_SECTOR_SIZE,
    REGION_TABLE_OFFSETS,
    VIRTUAL_DISK_SIZE,
    VhdxLayout,
    crc32c,
    crc32c_python,
    read_layout,
    with_checksum,
)
from tests.fixtures.bounded import SCORE, run_case
from tests.fixtures.bounded import MiB as _MiB
from tests.reliability.report import FaultRow, record

KiB = 1024
MiB = 1024 * KiB
Patch = Callable[[bytearray, VhdxLayout], object]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, VhdxLayout]:
    """A 32 MiB dynamic VHDX (1 MiB blocks): GPT, an empty ESP and an ext4 volume with files."""
    missing = builder.missing_tools()
    if missing:
        pytest.fail(f"disk tools missing: {missing}")
    path = tmp_path_factory.mktemp("malformed") / "small.vhdx"
    builder.build_disk(
        path, DiskSpec(32 * MiB, "ext4", "dynamic", 1 * MiB, builder.linux_files("fz", 300_000))
    )
    return path.read_bytes(), read_layout(path)


def exercise(data: bytes, parent_opener: Any = None, name: str = "fuzz.vhdx") -> None:
    """Open, list volumes, read every byte of the virtual disk (1 MiB at a time)."""
    with open_disk(io.BytesIO(data), name=name, parent_opener=parent_opener) as disk:
        for volume in list_volumes(disk):
            assert volume.message or volume.browsable
        disk.stream.seek(0)
        total = 0
        while chunk := disk.stream.read(MiB):
            total += len(chunk)
            if total >= 64 * MiB:  # absurd sizes: what was read so far is enough
                break


def check(label: str, data: bytes, parent_opener: Any = None) -> str | None:
    return run_case(label, lambda: exercise(data, parent_opener), (VdiskError,))


# --------------------------------------------------------------------------- VHDX structure


def _header(data: bytearray, index: int, **fields: int | bytes) -> bytearray:
    off = HEADER_OFFSETS[index]
    h = bytearray(data[off : off + 4 * KiB])
    layout = {"seq": ("<Q", 8), "log_length": ("<I", 68), "log_offset": ("<Q", 72), "version": ("<H", 66)}
    for key, value in fields.items():
        if key == "log_guid":
            h[48:64] = value  # type: ignore[assignment]
        else:
            fmt, at = layout[key]
            struct.pack_into(fmt, h, at, value)
    data[off : off + 4 * KiB] = with_checksum(bytes(h))
    return data


def _region(
    data: bytearray,
    which: uuid.UUID | None,
    *,
    offset: int | None = None,
    length: int | None = None,
    count: int | None = None,
) -> None:
    for rt in REGION_TABLE_OFFSETS:
        t = bytearray(data[rt : rt + 64 * KiB])
        if count is not None:
            struct.pack_into("<I", t, 8, count)
        n = min(struct.unpack_from("<I", data, rt + 8)[0], 2047)
        for i in range(n):
            e = 16 + 32 * i
            if which is not None and uuid.UUID(bytes_le=bytes(t[e : e + 16])) == which:
                if offset is not None:
                    struct.pack_into("<Q", t, e + 16, offset)
                if length is not None:
                    struct.pack_into("<I", t, e + 24, length)
        data[rt : rt + 64 * KiB] = with_checksum(bytes(t))


def _meta_item(data: bytearray, lay: VhdxLayout, item: uuid.UUID, value: bytes) -> None:
    m = lay.metadata_offset
    count = struct.unpack_from("<H", data, m + 10)[0]
    for i in range(count):
        e = m + 32 + 32 * i
        if uuid.UUID(bytes_le=bytes(data[e : e + 16])) == item:
            ioff = struct.unpack_from("<I", data, e + 16)[0]
            data[m + ioff : m + ioff + len(value)] = value
            return
    raise AssertionError(f"no metadata item {item}")


def _meta_entry(data: bytearray, lay: VhdxLayout, index: int, ioff: int, iln: int) -> None:
    struct.pack_into("<II", data, lay.metadata_offset + 32 + 32 * index + 16, ioff, iln)


def _bat(data: bytearray, lay: VhdxLayout, block: int, state: int, file_mib: int) -> bytearray:
    struct.pack_into("<Q", data, lay.bat_offset + 8 * lay.bat_index(block), (file_mib << 20) | state)
    return data


def _present(lay: VhdxLayout) -> list[int]:
    return [b for b in range(lay.data_blocks) if lay.block_entry(b)[0] == 6]


CASES: dict[str, Patch] = {
    "BAT entry far past the end": lambda d, lay: _bat(d, lay, _present(lay)[0], 6, 2**44 - 1),
    "BAT entry just past the end": lambda d, lay: _bat(d, lay, _present(lay)[-1], 6, lay.file_size // MiB),
    "BAT entry pointing at the header": lambda d, lay: _bat(d, lay, _present(lay)[0], 6, 0),
    "BAT entries all on one block": lambda d, lay: [_bat(d, lay, b, 6, 8) for b in range(lay.data_blocks)],
    "BAT entry with an undefined state": lambda d, lay: _bat(d, lay, _present(lay)[0], 5, 9),
    "BAT partially present, no bitmap": lambda d, lay: _bat(d, lay, _present(lay)[0], 7, 8),
    "BAT all bits set": lambda d, lay: d.__setitem__(
        slice(lay.bat_offset, lay.bat_offset + lay.bat_length), b"\xff" * lay.bat_length
    ),
    "block size 0": lambda d, lay: _meta_item(d, lay, FILE_PARAMETERS, struct.pack("<I", 0)),
    "block size not a power of two": lambda d, lay: _meta_item(
        d, lay, FILE_PARAMETERS, struct.pack("<I", 3 * MiB)
    ),
    "block size 2^31": lambda d, lay: _meta_item(d, lay, FILE_PARAMETERS, struct.pack("<I", 2**31)),
    "virtual size 0": lambda d, lay: _meta_item(d, lay, VIRTUAL_DISK_SIZE, struct.pack("<Q", 0)),
    "virtual size 2^60": lambda d, lay: _meta_item(d, lay, VIRTUAL_DISK_SIZE, struct.pack("<Q", 2**60)),
    "virtual size 2^64-512": lambda d, lay: _meta_item(
        d, lay, VIRTUAL_DISK_SIZE, struct.pack("<Q", 2**64 - 512)
    ),
    "virtual size not whole sectors": lambda d, lay: _meta_item(
        d, lay, VIRTUAL_DISK_SIZE, struct.pack("<Q", 1000)
    ),
    "sector size 0": lambda d, lay: _meta_item(d, lay, LOGICAL_SECTOR_SIZE, struct.pack("<I", 0)),
    "sector size 1000": lambda d, lay: _meta_item(d, lay, LOGICAL_SECTOR_SIZE, struct.pack("<I", 1000)),
    "sector size 2^31": lambda d, lay: _meta_item(d, lay, LOGICAL_SECTOR_SIZE, struct.pack("<I", 2**31)),
    "sector size 4096 on a 512 disk": lambda d, lay: _meta_item(
        d, lay, LOGICAL_SECTOR_SIZE, struct.pack("<I", 4096)
    ),
    "metadata count 65535": lambda d, lay: struct.pack_into("<H", d, lay.metadata_offset + 10, 0xFFFF),
    "metadata count 0": lambda d, lay: struct.pack_into("<H", d, lay.metadata_offset + 10, 0),
    "metadata item outside the region": lambda d, lay: _meta_entry(d, lay, 0, 2**32 - 8, 16),
    "metadata item of 4 GiB": lambda d, lay: _meta_entry(d, lay, 0, 64 * KiB, 2**32 - 1),
    "metadata item inside the table": lambda d, lay: _meta_entry(d, lay, 0, 0, 8),
    "metadata signature gone": lambda d, lay: d.__setitem__(
        slice(lay.metadata_offset, lay.metadata_offset + 8), b"x" * 8
    ),
    "metadata region of 4 GiB": lambda d, lay: _region(
        d, uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E"), length=2**32 - 1
    ),
    "metadata region at 2^63": lambda d, lay: _region(
        d, uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E"), offset=2**63
    ),
    "BAT region of 4 GiB": lambda d, lay: _region(
        d, uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08"), length=2**32 - MiB
    ),
    "BAT region overlapping the header": lambda d, lay: _region(
        d, uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08"), offset=0
    ),
    "BAT region of 0 bytes": lambda d, lay: _region(
        d, uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08"), length=0
    ),
    "region count 2^32-1": lambda d, lay: _region(d, None, count=2**32 - 1),
    "region count 0": lambda d, lay: _region(d, None, count=0),
    "region table checksums wrong": lambda d, lay: [
        d.__setitem__(rt + 4, d[rt + 4] ^ 1) for rt in REGION_TABLE_OFFSETS
    ],
    "one region table checksum wrong": lambda d, lay: d.__setitem__(
        REGION_TABLE_OFFSETS[0] + 4, d[REGION_TABLE_OFFSETS[0] + 4] ^ 1
    ),
    "both headers damaged": lambda d, lay: [
        d.__setitem__(h + 100, d[h + 100] ^ 0xFF) for h in HEADER_OFFSETS
    ],
    "headers with equal sequence numbers": lambda d, lay: [_header(d, i, seq=7) for i in (0, 1)],
    "newest header with a log at 2^63": lambda d, lay: _header(
        d, 1, seq=2**64 - 1, log_offset=2**63, log_guid=b"\x01" * 16
    ),
    "log of 4 GiB": lambda d, lay: _header(d, 1, seq=2**64 - 1, log_length=2**32 - 1, log_guid=b"\x01" * 16),
    "log not aligned": lambda d, lay: _header(d, 1, seq=2**64 - 1, log_offset=lay.log_offset + 512),
    "log full of garbage": lambda d, lay: d.__setitem__(
        slice(lay.log_offset, lay.log_offset + MiB), random.Random(1).randbytes(MiB)
    ),
    "header version 9": lambda d, lay: [_header(d, i, version=9) for i in (0, 1)],
    "file identifier only": lambda d, lay: d.__setitem__(slice(8, len(d)), bytes(len(d) - 8)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", list(CASES))
def test_a_damaged_vhdx_gives_a_clear_error_or_works(small: tuple[bytes, VhdxLayout], label: str) -> None:
    data = bytearray(small[0])
    CASES[label](data, small[1])
    assert bytes(data) != small[0]
    check(label, bytes(data))


@pytest.mark.timeout(120)
def test_absurd_sizes_are_refused_with_what_is_wrong(small: tuple[bytes, VhdxLayout]) -> None:
    """The cases that must not open, and what their message says."""
    expected = {
        "BAT entry far past the end": "beyond the end of the file",
        "block size 0": "block size",
        "virtual size 2^60": "virtual size",
        "sector size 1000": "sector size",
        "metadata count 65535": "metadata",
        "metadata item of 4 GiB": "metadata",
        "metadata region of 4 GiB": "metadata",
        "region table checksums wrong": "region table",
        "both headers damaged": "header",
        "log of 4 GiB": "log",
    }
    for label, words in expected.items():
        data = bytearray(small[0])
        CASES[label](data, small[1])
        message = check(label, bytes(data))
        assert message is not None and words in message, (label, message)
        assert message.startswith("fuzz.vhdx could not be read as a VHDX file"), message


@pytest.mark.timeout(300)
def test_truncated_at_every_64_kib_and_at_random_offsets(small: tuple[bytes, VhdxLayout]) -> None:
    data, lay = small
    rng = random.Random(20261202)
    cuts = [*range(0, len(data), 64 * KiB), *(rng.randrange(len(data)) for _ in range(40))]
    refused = 0
    for cut in cuts:
        if check(f"truncated at {cut}", data[:cut]) is not None:
            refused += 1
    # Everything up to the last payload block is needed: only cuts past it may open.
    last_needed = max(off for _s, off in (lay.block_entry(b) for b in _present(lay))) + lay.block_size
    assert refused >= sum(1 for c in cuts if c < last_needed)


# --------------------------------------------------------------------------- differencing chains


@pytest.fixture(scope="module")
def child(small: tuple[bytes, VhdxLayout], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("malformed-chain")
    base = d / "base.vhdx"
    base.write_bytes(small[0])
    kid = builder.create(d / "child.avhdx", 32 * MiB, block_size=MiB)
    builder.make_differencing(kid, base, {"relative_path": ".\\base.vhdx"})
    return kid.read_bytes()


@pytest.mark.timeout(120)
def test_chains_that_loop_or_never_end(child: bytes, small: tuple[bytes, VhdxLayout]) -> None:
    counter = iter(range(10**6))

    def itself(ref: ParentRef) -> tuple[str, Any]:
        return "fuzz.vhdx", io.BytesIO(child)

    names = {"fuzz.vhdx": "b.avhdx", "b.avhdx": "fuzz.vhdx"}

    def a_b_a(ref: ParentRef) -> tuple[str, Any]:
        return names[ref.child_name], io.BytesIO(child)

    def endless(ref: ParentRef) -> tuple[str, Any]:
        return f"level{next(counter)}.avhdx", io.BytesIO(child)

    def not_a_disk(ref: ParentRef) -> tuple[str, Any]:
        return "base.vhdx", io.BytesIO(b"garbage" * 1000)

    def truncated_parent(ref: ParentRef) -> tuple[str, Any]:
        return "base.vhdx", io.BytesIO(small[0][: 5 * MiB])

    assert "loops" in (check("self-parent", child, itself) or "")
    assert "loops" in (check("A -> B -> A", child, a_b_a) or "")
    assert "longer than" in (check("endless chain", child, endless) or "")
    assert check("parent not a disk", child, not_a_disk) is not None
    assert "base.vhdx" in (check("truncated parent", child, truncated_parent) or "")
    assert "no parent" in (check("no parent opener", child, None) or "")


# --------------------------------------------------------------------------- legacy VHD


@pytest.fixture(scope="module")
def vhd(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("malformed-vhd")
    raw = builder.sparse_file(d / "d.raw", 8 * MiB)
    with raw.open("r+b") as fh:
        fh.write(builder.pseudo_random(3 * MiB, "vhd"))
    out = d / "d.vhd"
    builder.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", str(raw), str(out)]
    )
    return out.read_bytes()


def _vhd_patch(
    data: bytearray, *, footer: dict[int, bytes] | None = None, header: dict[int, bytes] | None = None
) -> None:
    foot = len(data) - 512
    dyn = struct.unpack_from(">Q", data, foot + 16)[0]
    for where, fields in ((foot, footer or {}), (dyn, header or {})):
        for at, value in fields.items():
            data[where + at : where + at + len(value)] = value
    for where, size, at in ((foot, 512, 64), (dyn, 1024, 36)):  # checksums: one's complement of the sum
        struct.pack_into(">I", data, where + at, 0)
        struct.pack_into(">I", data, where + at, ~sum(data[where : where + size]) & 0xFFFFFFFF)
    data[:512] = data[foot:]  # the copy of the footer at the start


VHD_CASES: dict[str, dict[str, dict[int, bytes]]] = {
    "size 2^63": {"footer": {48: struct.pack(">Q", 2**63)}},
    "size 0": {"footer": {48: struct.pack(">Q", 0)}},
    "max table entries 2^32-1": {"header": {28: struct.pack(">I", 2**32 - 1)}},
    "max table entries 0": {"header": {28: struct.pack(">I", 0)}},
    "block size 0": {"header": {32: struct.pack(">I", 0)}},
    "block size 2^31": {"header": {32: struct.pack(">I", 2**31)}},
    "block size 3": {"header": {32: struct.pack(">I", 3)}},
    "BAT past the end": {"header": {16: struct.pack(">Q", 2**40)}},
    "dynamic header past the end": {"footer": {16: struct.pack(">Q", 2**50)}},
    "dynamic header inside the footer": {"footer": {16: struct.pack(">Q", 2**64 - 1)}},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", list(VHD_CASES))
def test_a_damaged_vhd_gives_a_clear_error_or_works(vhd: bytes, label: str) -> None:
    data = bytearray(vhd)
    _vhd_patch(data, **VHD_CASES[label])
    check(f"VHD {label}", bytes(data))


@pytest.mark.timeout(120)
def test_a_vhd_whose_bat_points_past_the_end(vhd: bytes) -> None:
    data = bytearray(vhd)
    foot = len(data) - 512
    dyn = struct.unpack_from(">Q", data, foot + 16)[0]
    bat = struct.unpack_from(">Q", data, dyn + 16)[0]
    struct.pack_into(">I", data, bat, 0xFFFFFFF0)
    struct.pack_into(">I", data, bat + 4, 0x7FFFFFFF)
    check("VHD BAT past the end", bytes(data))
    for cut in range(0, len(vhd), 256 * KiB):
        check(f"VHD truncated at {cut}", vhd[:cut])


# --------------------------------------------------------------------------- partition tables


def _gpt(data: bytearray, lay: VhdxLayout, patch: Callable[[bytearray], None]) -> None:
    """Patch the GPT header (virtual sector 1, in payload block 0) and fix its CRC-32."""
    import zlib

    off = lay.block_entry(0)[1] + 512
    header = bytearray(data[off : off + 92])
    patch(header)
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    data[off : off + 92] = header


def _gpt_entry(data: bytearray, lay: VhdxLayout, index: int, first: int, last: int) -> None:
    off = lay.block_entry(0)[1] + 1024 + 128 * index
    struct.pack_into("<QQ", data, off + 32, first, last)


def _mbr(data: bytearray, lay: VhdxLayout, parts: list[tuple[int, int, int]]) -> None:
    off = lay.block_entry(0)[1]
    for i, (ptype, start, count) in enumerate(parts):
        struct.pack_into(
            "<B3sB3sII", data, off + 446 + 16 * i, 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start, count
        )


PARTITION_CASES: dict[str, Patch] = {
    "GPT with 2^32-1 entries": lambda d, lay: _gpt(
        d, lay, lambda h: struct.pack_into("<I", h, 80, 2**32 - 1)
    ),
    "GPT entries of 0 bytes": lambda d, lay: _gpt(d, lay, lambda h: struct.pack_into("<I", h, 84, 0)),
    "GPT entries of 2^31 bytes": lambda d, lay: _gpt(d, lay, lambda h: struct.pack_into("<I", h, 84, 2**31)),
    "GPT array at LBA 2^60": lambda d, lay: _gpt(d, lay, lambda h: struct.pack_into("<Q", h, 72, 2**60)),
    "GPT partition past the end": lambda d, lay: _gpt_entry(d, lay, 1, 2**40, 2**41),
    "GPT partition ending before it starts": lambda d, lay: _gpt_entry(d, lay, 1, 60000, 2048),
    "GPT partitions overlapping": lambda d, lay: _gpt_entry(d, lay, 0, 2048, 60000),
    "MBR partition past the end": lambda d, lay: _mbr(d, lay, [(0x83, 2**31, 2**31)]),
    "MBR partitions overlapping": lambda d, lay: _mbr(d, lay, [(0x07, 2048, 40000), (0x83, 4096, 40000)]),
    "MBR extended partition that contains itself": lambda d, lay: _mbr(d, lay, [(0x05, 0, 60000)]),
    "MBR extended partition chain loop": lambda d, lay: _mbr(d, lay, [(0x0F, 1, 100), (0x05, 1, 100)]),
    "MBR partition of 0 sectors": lambda d, lay: _mbr(d, lay, [(0x83, 2048, 0)]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", list(PARTITION_CASES))
def test_an_absurd_partition_table_gives_volumes_or_a_clear_error(
    small: tuple[bytes, VhdxLayout], label: str
) -> None:
    data = bytearray(small[0])
    PARTITION_CASES[label](data, small[1])
    assert bytes(data) != small[0]
    check(label, bytes(data))


def test_a_partition_past_the_end_is_left_out(small: tuple[bytes, VhdxLayout]) -> None:
    data = bytearray(small[0])
    PARTITION_CASES["GPT partition past the end"](data, small[1])
    with open_disk(io.BytesIO(bytes(data)), name="d.vhdx") as disk:
        volumes = list_volumes(disk)
    assert [v.number for v in volumes] == [1]
    assert all(v.offset + v.size <= disk.size for v in volumes)


def test_the_native_checksum_matches_the_reference() -> None:
    rng = random.Random(7)
    for n in (0, 1, 7, 4096, 65536):
        data = rng.randbytes(n)
        assert crc32c(data) == crc32c_python(data)


def test_zz_record_the_fault_row() -> None:
    """One row in docs/reliability.md for every malformed disk tried in this session."""
    if SCORE.cases < 300:
        pytest.skip("run with the malformed-disk tests (tests/vdisk/test_malformed.py and this module)")
    example = min((m for m in SCORE.messages if "truncated" in m), key=len, default="")
    record(
        FaultRow(
            fault="Malformed disk images (VHDX, VHD, chains, partition tables, NTFS/ext4/FAT records)",
            during="opening, listing volumes and folders, reading and copying files",
            injected=SCORE.cases,
            happened=(
                f"{SCORE.errors} refused with a clear error, the rest opened and read; slowest case "
                f"{SCORE.max_seconds:.1f} s, peak allocation {SCORE.max_peak / _MiB:.0f} MiB"
            ),
            user_saw=f"a plain message, e.g. \u201c{example}\u201d",
            nothing_lost="no exception outside VdiskError / ItemLevelError, no hang, memory bounded per case",
        )
    )
    assert SCORE.max_peak < 64 * _MiB and SCORE.max_seconds < 10
