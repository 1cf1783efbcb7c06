"""Drive the real backup engine from a connector session, the way a job would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protection.connectors.protocol import BackupSession, ChangeTrackingLost, Connector, Consistency
from storage.vdisk.pagefile import guest_files, volatile_virtual_ranges


def backup_vm(
    ds: Any, conn: Connector, vm_id: str, refs: dict[str, str] | None
) -> tuple[Any, dict[str, str], dict[str, list[tuple[int, int]] | None]]:
    """One backup: full when ``refs`` is None, else incremental from the RCT ids."""
    session = conn.begin_backup(vm_id, Consistency.APPLICATION)
    ok = False
    try:
        point, used = read_session(ds, session, vm_id, refs)
        ok = True
    finally:
        new_refs = conn.end_backup(session, ok)
    return point, new_refs, used


def read_session(
    ds: Any, session: BackupSession, vm_id: str, refs: dict[str, str] | None
) -> tuple[Any, dict[str, list[tuple[int, int]] | None]]:
    """Read an open session's files into a recovery point, incrementally from ``refs`` where
    the session can say what changed; returns the point and the ranges used per file."""
    from storage.engine import SourceFile

    used: dict[str, list[tuple[int, int]] | None] = {}
    sources = []
    for f in session.files:
        try:
            ranges = session.changed_ranges(f.name, (refs or {}).get(f.name))
        except ChangeTrackingLost:
            ranges = None  # full read; a job would mark this a consistency check
        used[f.name] = ranges
        sources.append(SourceFile(f.name, f.opener, f.size, ranges))
    point = ds.backup(vm_id, sources, vm_name=session.vm.name, consistency=str(session.consistency))
    return point, used


def restore_point(ds: Any, point_id: str, target: Path) -> Path:
    ds.restore(point_id, target)
    return target


def writes_outside_paging_files(disk: Path, count: int) -> list[tuple[int, int, int]]:
    """Guest writes into files' data, avoiding paging files (excluded by design)."""
    from protection.connectors.ranges import subtract

    volatile = volatile_virtual_ranges(disk)
    targets = subtract([r for f in guest_files(disk) for r in f.virtual_ranges], volatile)
    slots = [(off + i, 4096) for off, length in targets for i in range(0, length - 4096, 65536)]
    step = max(1, len(slots) // count)
    return [(off, n, 0x20 + i % 200) for i, (off, n) in enumerate(slots[::step][:count])]
