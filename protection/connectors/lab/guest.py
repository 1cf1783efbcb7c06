"""The lab "guest": writes into a VM's disks the way a running VM would, and the
per-VM lock that gives a backup session its frozen view.

Frozen view choice: a backup session holds an exclusive flock on the VM's
``.lab.lock`` from begin_backup to end_backup. Guest writes (churn) and restores
take the same lock, so they wait (up to a timeout) while a backup reads, and a
second backup of the same VM is refused. The kernel drops a flock when its
process dies, so a crashed worker can never leave a VM locked. (Hyper-V instead
redirects writes to an AVHDX during the backup; the lab trades that for
simplicity, the reading side sees the same thing: files that do not move.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from protection.connectors.lab.config import LabVMConfig
from protection.connectors.lab.rct import RCTJournal
from protection.connectors.protocol import BackupRefused, ConnectorError
from protection.connectors.ranges import Range, normalize, total
from storage.vdisk import PAYLOAD_BLOCK_FULLY_PRESENT, builder, read_layout
from storage.vdisk.pagefile import guest_files

LOCK_FILE = ".lab.lock"
KiB = 1024
WRITE_SIZE = 64 * KiB


class VMBusy(BackupRefused):
    """The VM's lock is held (a backup, a restore or guest writes are running)."""


class VMLock:
    def __init__(self, vm_folder: Path, purpose: str):
        self.path = vm_folder / LOCK_FILE
        self.purpose = purpose
        self.fd: int | None = None

    def acquire(self, wait: float = 0.0) -> VMLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    raise VMBusy(
                        f"The VM is busy ({holder or 'another operation'} is running); "
                        "try again when it has finished."
                    ) from None
                time.sleep(0.05)
        # Who holds it, for the message another waiter gets; informative only.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": self.purpose}).encode(), 0)
        self.fd = fd
        return self

    def _holder(self) -> str:
        try:
            return str(json.loads(self.path.read_text()).get("purpose", ""))
        except (OSError, ValueError, AttributeError):
            return ""

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing drops the flock

    def __del__(self) -> None:
        # A session dropped without end_backup must not keep the VM locked.
        self.release()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> VMLock:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def record_and_write(disk: Path, writes: list[tuple[int, int, int]], history: int) -> None:
    """Journal the virtual ranges, then write them through qemu-io (caller holds the lock)."""
    journal = RCTJournal(disk, history)
    journal.begin_write([(off, length) for off, length, _p in writes])
    builder.qemu_io_write(disk, writes)
    journal.end_write()


def guest_write(
    cfg: LabVMConfig,
    disk_index: int,
    writes: list[tuple[int, int, int]],
    *,
    history: int = 16,
    wait: float = 30.0,
) -> None:
    """Write ``(virtual offset, length, pattern byte)`` into one of the VM's disks."""
    disk = _disk_path(cfg, disk_index)
    layout = read_layout(disk)
    for off, length, _p in writes:
        if off < 0 or length <= 0 or off + length > layout.virtual_size:
            raise ConnectorError(f"write ({off}, {length}) lies outside the virtual disk")
    with VMLock(cfg.folder, "guest writes").acquire(wait):
        record_and_write(disk, writes, history)


def _disk_path(cfg: LabVMConfig, disk_index: int) -> Path:
    disks = [d for d in cfg.disks if not d.pass_through]
    if not 0 <= disk_index < len(disks):
        raise ConnectorError(f"VM {cfg.name} has no virtual disk number {disk_index}")
    path = cfg.folder / disks[disk_index].path
    if path.suffix.lower() != ".vhdx":
        raise ConnectorError(f"the lab guest only writes .vhdx disks, not {path.name}")
    return path


@dataclass(frozen=True, slots=True)
class ChurnResult:
    disk: Path
    writes: int
    bytes_written: int
    virtual_ranges: list[Range]


def churn_targets(disk: Path) -> list[Range]:
    """Where a guest would write: inside its files' data (so its file system stays
    valid), pagefile included; the whole disk when no file system is readable."""
    ranges = normalize(r for f in guest_files(disk) for r in f.virtual_ranges)
    if ranges:
        return ranges
    return [(0, read_layout(disk).virtual_size)]


def plan_churn(disk: Path, percent: float, rng: random.Random) -> list[tuple[int, int, int]]:
    layout = read_layout(disk)
    allocated = sum(
        layout.block_size
        for b in range(layout.data_blocks)
        if layout.block_entry(b)[0] == PAYLOAD_BLOCK_FULLY_PRESENT
    )
    wanted = max(1, math.ceil(allocated * percent / 100 / WRITE_SIZE))
    targets = churn_targets(disk)
    # Pick 64 KiB-aligned slots inside the targets, weighted by size; a slot at
    # a target's edge is clipped so nothing outside the files is touched.
    slots: list[Range] = []
    for off, length in targets:
        pos = off
        while pos < off + length:
            end = min((pos // WRITE_SIZE + 1) * WRITE_SIZE, off + length)
            slots.append((pos, end - pos))
            pos = end
    chosen = rng.sample(slots, min(wanted, len(slots))) if slots else []
    return [(off, length, rng.randrange(1, 256)) for off, length in sorted(chosen)]


def churn(
    cfg: LabVMConfig,
    percent: float,
    *,
    seed: int | None = None,
    history: int = 16,
    wait: float = 30.0,
) -> ChurnResult:
    """Rewrite ``percent`` % of the first disk's allocated data in 64 KiB writes."""
    if not 0 < percent <= 100:
        raise ConnectorError("percent must be greater than 0 and at most 100")
    disk = _disk_path(cfg, 0)
    with VMLock(cfg.folder, "guest writes").acquire(wait):
        writes = plan_churn(disk, percent, random.Random(seed))
        if writes:
            record_and_write(disk, writes, history)
    ranges = normalize((o, n) for o, n, _p in writes)
    return ChurnResult(disk, len(writes), total(ranges), ranges)
