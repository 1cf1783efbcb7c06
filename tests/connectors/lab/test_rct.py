"""The emulated RCT journal: ids, accumulation, purge and every way tracking is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protection.connectors.lab.rct import RCTJournal, journal_path
from protection.connectors.protocol import ChangeTrackingLost


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "d.vhdx"
    path.write_bytes(b"x" * 4096)
    return path


def _write(journal: RCTJournal, ranges: list[tuple[int, int]], grow: int = 0) -> None:
    journal.begin_write(ranges)
    with journal.disk.open("ab") as fh:  # the "guest" write; growth changes the stat
        fh.write(b"y" * grow)
    journal.end_write()


def test_ids_are_opaque_and_changes_accumulate_per_reference(disk: Path) -> None:
    j = RCTJournal(disk)
    first = j.create_reference()
    assert first.startswith("rct:") and first.endswith(":1")
    assert j.changes_since(first).virtual == []
    _write(j, [(0, 10), (100, 10)], grow=512)
    _write(j, [(5, 10)])
    second = j.create_reference()
    _write(j, [(1000, 1)])
    since_first = j.changes_since(first)
    assert since_first.virtual == [(0, 15), (100, 10), (1000, 1)]
    assert since_first.size_at_reference == 4096
    since_second = j.changes_since(second)
    assert since_second.virtual == [(1000, 1)]
    assert since_second.size_at_reference == 4096 + 512
    assert j.current_id() == second


def test_unknown_malformed_and_foreign_ids_are_lost(disk: Path, tmp_path: Path) -> None:
    j = RCTJournal(disk)
    ref = j.create_reference()
    with pytest.raises(ChangeTrackingLost, match="not an RCT id"):
        j.changes_since("garbage")
    with pytest.raises(ChangeTrackingLost, match="no longer"):
        j.changes_since(ref[:-1] + "9")  # a generation that was never closed
    other = tmp_path / "other.vhdx"
    other.write_bytes(b"z")
    foreign = RCTJournal(other).create_reference()  # well-formed, another disk's epoch
    with pytest.raises(ChangeTrackingLost, match="earlier change-tracking epoch"):
        j.changes_since(foreign)


def test_purged_ids_are_lost(disk: Path) -> None:
    j = RCTJournal(disk, history=2)
    refs = [j.create_reference() for _ in range(4)]
    with pytest.raises(ChangeTrackingLost):
        j.changes_since(refs[0])
    with pytest.raises(ChangeTrackingLost):
        j.changes_since(refs[1])
    assert j.changes_since(refs[2]).virtual == []
    assert j.changes_since(refs[3]).virtual == []


def test_reset_and_missing_or_corrupt_journal(disk: Path) -> None:
    j = RCTJournal(disk)
    ref = j.create_reference()
    j.reset()
    with pytest.raises(ChangeTrackingLost, match="earlier change-tracking epoch"):
        j.changes_since(ref)
    ref = j.create_reference()
    journal_path(disk).write_text("{broken")
    with pytest.raises(ChangeTrackingLost, match="no change tracking journal"):
        j.changes_since(ref)
    journal_path(disk).unlink()
    with pytest.raises(ChangeTrackingLost):
        j.changes_since(ref)


def test_disk_changed_behind_the_journal_is_lost_and_stays_lost(disk: Path) -> None:
    j = RCTJournal(disk)
    ref = j.create_reference()
    with disk.open("ab") as fh:
        fh.write(b"outside")
    with pytest.raises(ChangeTrackingLost, match="modified without change tracking"):
        j.changes_since(ref)
    # A later tracked write must not whitewash the untracked one.
    _write(j, [(0, 1)])
    with pytest.raises(ChangeTrackingLost):
        j.changes_since(ref)
    fresh = j.create_reference()
    assert j.changes_since(fresh).virtual == []


def test_interrupted_write_costs_a_full_read_not_data(disk: Path) -> None:
    j = RCTJournal(disk)
    ref = j.create_reference()
    j.begin_write([(10, 5)])  # the guest crashed before end_write
    assert json.loads(journal_path(disk).read_text())["file_state"] is None
    with pytest.raises(ChangeTrackingLost, match="interrupted"):
        j.changes_since(ref)
    _write(j, [(50, 5)])
    # The interrupted range was journaled before the write, so it is still reported.
    assert j.changes_since(ref).virtual == [(10, 5), (50, 5)]
