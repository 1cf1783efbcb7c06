"""Resilient Change Tracking, emulated for lab disks.

Hyper-V keeps ``disk.vhdx.rct`` / ``.mrt`` next to each disk and hands out opaque
RCT ids; ``GetVirtualDiskChanges(LimitId=id)`` returns the VIRTUAL ranges
written since that id. The lab keeps ``disk.vhdx.rct.json`` next to the disk:

- ``tracking_id``: GUID of this tracking epoch; a new one whenever tracking is
  reset (disk replaced by a restore, journal unreadable), which makes every
  older id unknown, just as Hyper-V invalidates ids when its RCT file is lost.
- ``generation``: the open generation. Guest writes are recorded in it.
  Creating a reference point closes it and returns ``rct:<tracking_id>:<gen>``.
- ``generations``: per generation, the virtual ranges written and, once closed,
  the file size at that instant (to report growth since a reference).
- ``file_state``: size + mtime of the disk after the last recorded write. If
  the disk changed behind the journal's back, the tracking is not trusted.

Ids older than ``history`` reference points are purged: ChangeTrackingLost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protection.connectors.lab.config import write_json_atomic
from protection.connectors.protocol import ChangeTrackingLost
from protection.connectors.ranges import Range, normalize

SUFFIX = ".rct.json"
_ID_RE = re.compile(r"^rct:([0-9a-f-]{36}):(\d+)$")


def journal_path(disk: Path) -> Path:
    return disk.with_name(disk.name + SUFFIX)


def _stat(disk: Path) -> dict[str, int]:
    st = disk.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True, slots=True)
class Changes:
    virtual: list[Range]  # virtual-disk ranges written since the reference
    size_at_reference: int  # file size when the reference was taken


class RCTJournal:
    def __init__(self, disk: Path, history: int = 16):
        self.disk = disk
        self.path = journal_path(disk)
        self.history = history

    # -------------------------------------------------------------- storage

    def _fresh(self) -> dict[str, Any]:
        return {
            "format": 1,
            "tracking_id": str(uuid.uuid4()),
            "generation": 1,
            "generations": {"1": {"ranges": []}},
            "file_state": _stat(self.disk),
        }

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable journal = no tracking; callers start a new epoch
        if not isinstance(data, dict) or not _ID_RE.match(
            f"rct:{data.get('tracking_id')}:{data.get('generation')}"
        ):
            return None
        return data

    def load_or_start(self) -> dict[str, Any]:
        data = self.load()
        if data is None:
            data = self._fresh()
            self._save(data)
        return data

    def _save(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data)

    def reset(self) -> str:
        """New tracking epoch: every id handed out before becomes unknown."""
        data = self._fresh()
        self._save(data)
        return data["tracking_id"]

    # -------------------------------------------------------------- writes

    def _load_checked(self) -> dict[str, Any]:
        """The journal, in a new epoch if the disk changed behind its back (the
        evidence must not be overwritten by the next recorded write)."""
        data = self.load_or_start()
        state = data["file_state"]
        if state is not None and state != _stat(self.disk):
            data = self._fresh()
        return data

    def begin_write(self, ranges: list[Range]) -> None:
        """Record ranges BEFORE the guest writes them; the disk state is unknown
        until end_write(), so a crash in between costs a full read, not data."""
        data = self._load_checked()
        gen = data["generations"].setdefault(str(data["generation"]), {"ranges": []})
        gen["ranges"] = [list(r) for r in normalize([*map(tuple, gen["ranges"]), *ranges])]
        data["file_state"] = None
        self._save(data)

    def end_write(self) -> None:
        data = self.load_or_start()
        data["file_state"] = _stat(self.disk)
        self._save(data)

    # -------------------------------------------------------------- references

    def create_reference(self) -> str:
        """Close the open generation; the returned id names the disk as it is now."""
        data = self._load_checked()
        gen = data["generation"]
        data["generations"].setdefault(str(gen), {"ranges": []})["size"] = self.disk.stat().st_size
        # The backup that ends here read the disk as it is now (a full read if
        # tracking was in doubt), so from this reference on the state is known.
        data["file_state"] = _stat(self.disk)
        data["generation"] = gen + 1
        data["generations"][str(gen + 1)] = {"ranges": []}
        self._purge(data)
        self._save(data)
        return f"rct:{data['tracking_id']}:{gen}"

    def _purge(self, data: dict[str, Any]) -> None:
        closed = sorted(int(g) for g, v in data["generations"].items() if "size" in v)
        for g in closed[: max(0, len(closed) - self.history)]:
            del data["generations"][str(g)]

    def release(self, reference: str) -> bool:
        """Forget ``reference`` and every older generation (Hyper-V destroying the
        reference point): only ids newer than it stay usable. False when it was unknown
        (another epoch, already purged or released)."""
        match = _ID_RE.match(reference.strip().lower())
        data = self.load()
        if not match or data is None or match.group(1) != data["tracking_id"]:
            return False
        gen = int(match.group(2))
        if gen >= data["generation"] or "size" not in data["generations"].get(str(gen), {}):
            return False  # never closed: not a reference this journal handed out
        for g in [g for g in data["generations"] if int(g) <= gen]:
            del data["generations"][g]
        self._save(data)
        return True

    def current_id(self) -> str | None:
        data = self.load()
        if data is None:
            return None
        closed = [int(g) for g, v in data["generations"].items() if "size" in v]
        return f"rct:{data['tracking_id']}:{max(closed)}" if closed else None

    def changes_since(self, reference: str) -> Changes:
        """Virtual ranges written since ``reference``; ChangeTrackingLost if unusable."""
        match = _ID_RE.match(reference.strip().lower())
        if not match:
            raise ChangeTrackingLost(f"{reference!r} is not an RCT id of this lab")
        data = self.load()
        if data is None:
            raise ChangeTrackingLost(f"{self.disk.name} has no change tracking journal")
        tracking_id, gen = match.group(1), int(match.group(2))
        if tracking_id != data["tracking_id"]:
            raise ChangeTrackingLost(
                f"{reference} belongs to an earlier change-tracking epoch of {self.disk.name} "
                "(the disk was replaced or its tracking reset)"
            )
        ref = data["generations"].get(str(gen))
        if ref is None or "size" not in ref:
            raise ChangeTrackingLost(f"{reference} is no longer (or was never) known for {self.disk.name}")
        if data["file_state"] != _stat(self.disk):
            raise ChangeTrackingLost(
                f"{self.disk.name} was modified without change tracking (or a write was interrupted)"
            )
        ranges: list[Range] = []
        for g, value in data["generations"].items():
            if int(g) > gen:
                ranges.extend((int(o), int(n)) for o, n in value["ranges"])
        return Changes(virtual=normalize(ranges), size_at_reference=int(ref["size"]))


def remove_journal(disk: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal_path(disk))
