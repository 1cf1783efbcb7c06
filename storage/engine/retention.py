"""Which recovery points a retention policy keeps (per VM)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import InvalidPolicy
from .points import PointInfo


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep points newer than ``keep_days`` plus GFS buckets.

    GFS works like restic/borg: walking from newest to oldest, the newest point of
    each day/ISO week/month/year is kept until that rule's count is used up. The
    newest point of a VM is always kept.
    """

    keep_days: float | None = None
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            if getattr(self, name) < 0:
                raise InvalidPolicy(f"{name} must not be negative")
        if self.keep_days is not None and self.keep_days < 0:
            raise InvalidPolicy("keep_days must not be negative")


_BUCKETS: list[tuple[str, Callable[[datetime], object]]] = [
    ("keep_daily", lambda t: t.date()),
    ("keep_weekly", lambda t: t.isocalendar()[:2]),
    ("keep_monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", lambda t: t.year),
]


def select_kept(points: Iterable[PointInfo], policy: RetentionPolicy, now: datetime) -> set[str]:
    by_vm: dict[str, list[PointInfo]] = {}
    for p in points:
        by_vm.setdefault(p.vm_id, []).append(p)
    kept: set[str] = set()
    for pts in by_vm.values():
        pts.sort(key=lambda p: (p.created, p.id), reverse=True)
        kept.add(pts[0].id)
        kept.update(p.id for p in pts[: policy.keep_last])
        if policy.keep_days is not None:
            cutoff = now - timedelta(days=policy.keep_days)
            kept.update(p.id for p in pts if p.created >= cutoff)
        for attr, bucket in _BUCKETS:
            want = getattr(policy, attr)
            seen: set[object] = set()
            for p in pts:
                if len(seen) >= want:
                    break
                key = bucket(p.created)
                if key not in seen:
                    seen.add(key)
                    kept.add(p.id)
    return kept


def select_removals(points: Iterable[PointInfo], policy: RetentionPolicy, now: datetime) -> list[PointInfo]:
    pts = list(points)
    kept = select_kept(pts, policy, now)
    return [p for p in pts if p.id not in kept]
