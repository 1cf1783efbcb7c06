"""When does a datastore's volume fill? Hourly samples and a least-squares line.

The capacity task (``protection.services.capacity_watch``) records one
:class:`~protection.models.CapacitySample` per datastore and clock hour; the growth is
the slope of a least-squares line through the volume's free space over the last
14 days, and the volume is full when the free space left now is used up at that rate.
A line is honest enough for a volume that a schedule fills a little every day; it
says nothing until there are a few samples, and nothing about a volume that is not
growing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from protection.models import CapacitySample
from storage.models import Datastore, DiskSpace

FIT_WINDOW = timedelta(days=14)
KEEP_SAMPLES = timedelta(days=90)
# Three hourly samples are the fewest that show a trend rather than one backup's step.
MIN_SAMPLES = 3
MIN_SPAN = timedelta(hours=2)
# A volume that fills later than this is, for planning, a volume that does not fill.
HORIZON_DAYS = 100 * 365


@dataclass(frozen=True)
class Growth:
    samples: int
    days: float  # the time the samples cover
    bytes_per_day: float | None  # None: too few samples to tell; negative: shrinking
    free_bytes: int | None  # free space at the latest sample
    full_at: datetime | None  # None: unknown, not growing, or beyond the horizon

    @property
    def known(self) -> bool:
        return self.bytes_per_day is not None

    @property
    def growing(self) -> bool:
        return self.bytes_per_day is not None and self.bytes_per_day > 0


def fit_growth(samples: Sequence[tuple[datetime, int]]) -> Growth:
    """Least-squares growth through ``(taken at, free bytes)`` samples, oldest first."""
    ordered = sorted(samples)
    count = len(ordered)
    if count == 0:
        return Growth(0, 0.0, None, None, None)
    first, last = ordered[0][0], ordered[-1][0]
    span = last - first
    days = span.total_seconds() / 86400
    free_now = ordered[-1][1]
    if count < MIN_SAMPLES or span < MIN_SPAN:
        return Growth(count, days, None, free_now, None)
    xs = [(taken - first).total_seconds() / 86400 for taken, _ in ordered]
    ys = [float(free) for _, free in ordered]
    mean_x, mean_y = sum(xs) / count, sum(ys) / count
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    growth = -slope  # free space shrinks as the volume fills
    full_at = None
    if growth > 0:
        days_left = max(free_now, 0) / growth
        if days_left <= HORIZON_DAYS:
            full_at = last + timedelta(days=days_left)
    return Growth(count, days, growth, free_now, full_at)


def growth_of(datastore: Datastore, now: datetime | None = None) -> Growth:
    now = now or timezone.now()
    rows = CapacitySample.objects.filter(
        datastore=datastore, taken_at__gt=now - FIT_WINDOW, taken_at__lte=now
    ).values_list("taken_at", "volume_free_bytes")
    return fit_growth(list(rows))


def record_sample(datastore: Datastore, space: DiskSpace, now: datetime | None = None) -> CapacitySample:
    """The sample of this clock hour: a second run in the same hour replaces its figures,
    so a restarted worker or a manual refresh never crowds the series."""
    now = now or timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    figures = {
        "taken_at": now,
        "used_bytes": datastore.used_bytes,
        "volume_total_bytes": space.total,
        "volume_used_bytes": space.used,
        "volume_free_bytes": space.free,
    }
    sample = CapacitySample.objects.filter(
        datastore=datastore, taken_at__gte=hour, taken_at__lt=hour + timedelta(hours=1)
    ).first()
    if sample is None:
        return CapacitySample.objects.create(datastore=datastore, **figures)
    for name, value in figures.items():
        setattr(sample, name, value)
    sample.save()
    return sample


def prune_samples(now: datetime | None = None) -> int:
    now = now or timezone.now()
    deleted, _ = CapacitySample.objects.filter(taken_at__lt=now - KEEP_SAMPLES).delete()
    return deleted
