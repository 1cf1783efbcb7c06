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


def record(row: FaultRow) -> None:
    ROWS.append(row)


HEADER = """# Reliability: faults injected and what happened

Written by the test suite (`UPDATE_RELIABILITY=1 make test`, or the tests under
`tests/reliability/`), from what each fault test measured; do not edit by hand. Every
fault is injected into real processes (a django-q2 worker cluster, PostgreSQL, a lab
host's files, datastores on real mounts) at random moments, and each time the committed
recovery points are restored and compared byte for byte with what they were taken from.

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
