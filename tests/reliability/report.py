"""The fault table: each fault test records what it injected and what came of it.

A run with ``UPDATE_RELIABILITY=1`` writes the table to ``docs/reliability.md`` (see
``tests/reliability/conftest.py``), so the document is always what the suite measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@dataclass
class FaultRow:
    fault: str
    during: str
    injected: int  # how many times, at random moments
    happened: str  # what the product did
    user_saw: str  # what a user sees (job page, alert)
    nothing_lost: str  # how that was checked


ROWS: list[FaultRow] = []


def repetitions(quick: int, long: int) -> int:
    """How many times to inject a fault: ``quick`` in every test run (CI), ``long`` with
    ``RELIABILITY_LONG=1`` (``make reliability``, the nightly schedule)."""
    return long if os.environ.get("RELIABILITY_LONG") == "1" else quick


def record(row: FaultRow) -> None:
    ROWS.append(row)


HEADER = """# Reliability: faults injected and what happened

Written by the test suite from what each fault test measured; do not edit by hand.
Every fault is injected into real processes (a django-q2 worker cluster, PostgreSQL, a
lab host's files, datastores on real mounts) at random moments, and each time the
committed recovery points are restored and compared byte for byte with what they were
taken from.

- Every `make test` (and CI) runs each fault a few times.
- `make reliability` runs the long variants (`RELIABILITY_LONG=1`: each fault many
  more times, at other random moments; `RELIABILITY_SEED=...` picks the moments) and
  rewrites this file. To run it nightly, enable the schedule: a crontab line such as
  `0 2 * * * cd /path/to/checkout && make reliability >> reliability.log 2>&1` (as root:
  some faults mount file systems).

"""


def write(path: Path = DOC) -> None:
    if not ROWS:
        return
    lines = [
        HEADER,
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.uname().nodename}.\n\n",
        "| fault | during | injected | what happened | what the user saw | nothing lost: checked by |\n",
        "|---|---|---|---|---|---|\n",
    ]
    for row in sorted(ROWS, key=lambda r: (r.fault, r.during)):
        cells = [row.fault, row.during, str(row.injected), row.happened, row.user_saw, row.nothing_lost]
        lines.append(
            "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |\n"
        )
    path.write_text("".join(lines))
