"""The growth forecast, the hourly samples and the volume-filling alert
(protection.services.forecast, protection.services.capacity_watch), the alert on real
tmpfs volumes that a file fills."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from protection.models import Alert, AlertKind, AlertSeverity, CapacitySample, ProtectionGroup
from protection.services.capacity_watch import refresh_capacity
from protection.services.forecast import Growth, fit_growth, growth_of, prune_samples, record_sample
from storage.models import Datastore, DiskSpace
from tests.protection.conftest import needs_root
from tests.protection.helpers import protect, vm_with_disk

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
GIB = 1024 * MIB
T0 = timezone.make_aware(datetime(2026, 11, 1, 0, 0))


def series(free: Callable[[float], float], hours: list[float]) -> list[tuple[datetime, int]]:
    return [(T0 + timedelta(hours=h), int(free(h))) for h in hours]


# --------------------------------------------------------------------------- the fit


def test_a_volume_filling_at_a_steady_rate() -> None:
    # 100 GiB free, 2 GiB a day less: full 50 days after the start, 40 days after the last sample.
    samples = series(lambda h: 100 * GIB - 2 * GIB * h / 24, [0, 24, 48, 120, 240])
    growth = fit_growth(samples)
    assert growth.bytes_per_day == pytest.approx(2 * GIB)
    assert (growth.samples, growth.days, growth.free_bytes) == (5, 10, 80 * GIB)
    assert growth.full_at is not None
    assert abs(growth.full_at - (T0 + timedelta(days=50))) < timedelta(seconds=1)
    assert growth.growing and growth.known


def test_noisy_growth_is_fitted_not_read_off_the_last_two_samples() -> None:
    # A nightly backup adds 3 GiB at once; GC gives 1 GiB back at noon: 2 GiB a day net.
    free = 50 * GIB
    samples = []
    for day in range(14):
        samples.append((T0 + timedelta(days=day), free))
        free -= 3 * GIB
        samples.append((T0 + timedelta(days=day, hours=12), free))
        free += GIB
    growth = fit_growth(samples)
    assert growth.bytes_per_day == pytest.approx(2 * GIB, rel=0.05)
    assert growth.full_at is not None and growth.full_at > samples[-1][0]


def test_a_flat_volume_never_fills() -> None:
    growth = fit_growth(series(lambda h: 7 * GIB, [0, 1, 2, 3, 30]))
    assert growth.bytes_per_day == 0 and growth.full_at is None and not growth.growing and growth.known


def test_a_shrinking_volume_never_fills() -> None:
    growth = fit_growth(series(lambda h: GIB + h * MIB, [0, 5, 10, 20]))
    assert growth.bytes_per_day is not None and growth.bytes_per_day < 0
    assert growth.full_at is None and not growth.growing


def test_too_few_samples_say_nothing() -> None:
    assert fit_growth([]) == Growth(0, 0.0, None, None, None)
    two = fit_growth(series(lambda h: GIB - h * MIB, [0, 10]))
    assert (two.samples, two.bytes_per_day, two.full_at, two.free_bytes) == (2, None, None, GIB - 10 * MIB)
    # Three samples within an hour are one backup's step, not a trend.
    close = fit_growth(series(lambda h: GIB - h * GIB / 2, [0, 0.25, 0.5]))
    assert close.bytes_per_day is None and not close.known


def test_growth_too_slow_to_matter_has_no_date() -> None:
    growth = fit_growth(series(lambda h: 10**15 - h, [0, 24, 48]))  # 24 bytes a day
    assert growth.growing and growth.full_at is None


# --------------------------------------------------------------------------- samples


def test_one_sample_per_datastore_and_hour(datastore: Datastore) -> None:
    record_sample(datastore, DiskSpace(100, 10, 90), T0 + timedelta(minutes=5))
    record_sample(datastore, DiskSpace(100, 20, 80), T0 + timedelta(minutes=55))
    sample = CapacitySample.objects.get()
    assert (sample.volume_used_bytes, sample.volume_free_bytes) == (20, 80)
    assert sample.taken_at == T0 + timedelta(minutes=55)
    record_sample(datastore, DiskSpace(100, 30, 70), T0 + timedelta(hours=1, minutes=1))
    assert CapacitySample.objects.count() == 2


def test_old_samples_are_pruned_and_outside_the_fit(datastore: Datastore) -> None:
    for days_ago in (100, 91, 20, 3, 2, 1):
        record_sample(datastore, DiskSpace(100, 100 - days_ago, days_ago), T0 - timedelta(days=days_ago))
    assert growth_of(datastore, T0).samples == 3  # the last 14 days
    assert prune_samples(T0) == 2
    assert CapacitySample.objects.count() == 4


# --------------------------------------------------------------------------- the alert, on real volumes


def fill(volume: Path, name: str, mib: int) -> None:
    (volume / name).write_bytes(b"\xa5" * (mib * MIB))


def filling() -> Alert | None:
    return Alert.objects.active().filter(kind=AlertKind.VOLUME_FILLING).first()


@needs_root
def test_growth_raises_the_alert_with_the_forecast_and_it_clears(
    tmpfs: Callable[[str, int], Path], settings: Any
) -> None:
    volume = tmpfs("volume", 32)
    datastore = Datastore.objects.create_with_store("USB", str(volume / "store"))
    now = timezone.now()
    for hour, size in enumerate((0, 4, 4, 4)):  # 4 MiB more every hour: full within hours
        if size:
            fill(volume, f"fill{hour}", size)
        refresh_capacity(now - timedelta(hours=3 - hour))
    alert = filling()
    assert alert is not None and alert.datastore == datastore and alert.severity == AlertSeverity.WARNING
    assert f"Datastore USB ({volume / 'store'}): " in alert.message
    assert "free of 32.0 MB" in alert.message
    growth = growth_of(datastore, now)
    assert growth.bytes_per_day == pytest.approx(96 * MIB, rel=0.05)
    assert growth.full_at is not None and growth.full_at < now + timedelta(hours=6)
    assert f"the volume is full around {timezone.localtime(growth.full_at):%Y-%m-%d %H:%M}" in alert.message
    assert CapacitySample.objects.filter(datastore=datastore).count() == 4

    # Growth stops: two weeks later the old samples are outside the fit and it is resolved.
    for path in volume.glob("fill*"):
        path.unlink()
    later = now + timedelta(days=15)
    for hour in range(3):
        refresh_capacity(later + timedelta(hours=hour))
    assert filling() is None
    resolved = Alert.objects.get(kind=AlertKind.VOLUME_FILLING)
    assert resolved.resolved_at is not None and "not expected to fill within 14 days" in resolved.resolution
    assert not growth_of(datastore, later + timedelta(hours=2)).growing


@needs_root
def test_low_free_space_raises_the_alert_and_freeing_space_clears_it(
    tmpfs: Callable[[str, int], Path], settings: Any
) -> None:
    volume = tmpfs("volume", 32)
    datastore = Datastore.objects.create_with_store("USB", str(volume))
    fill(volume, "big", 30)  # 2 MiB free: below 10 %, nothing known about growth yet
    refresh_capacity()
    alert = filling()
    assert alert is not None and alert.severity == AlertSeverity.CRITICAL and alert.datastore == datastore
    assert re.search(r"free of 32\.0 MB \(6\.\d %\)\.", alert.message), alert.message
    assert "full around" not in alert.message
    refresh_capacity(timezone.now() + timedelta(hours=1))  # still full: the same alert, seen twice
    alert.refresh_from_db()
    assert alert.occurrences == 2 and Alert.objects.filter(kind=AlertKind.VOLUME_FILLING).count() == 1
    (volume / "big").unlink()
    refresh_capacity(timezone.now() + timedelta(hours=2))
    assert filling() is None


@needs_root
def test_thresholds_come_from_the_settings(tmpfs: Callable[[str, int], Path], settings: Any) -> None:
    volume = tmpfs("volume", 32)
    Datastore.objects.create_with_store("USB", str(volume))
    fill(volume, "half", 16)
    refresh_capacity()
    assert filling() is None  # half free
    settings.CAPACITY_ALERT_FREE_PERCENT = 60
    refresh_capacity(timezone.now() + timedelta(hours=1))
    assert filling() is not None
    settings.CAPACITY_ALERT_FREE_PERCENT = 0
    refresh_capacity(timezone.now() + timedelta(hours=2))
    assert filling() is None


def test_the_task_records_plans_and_skips_unreachable_volumes(datastore: Datastore) -> None:
    lost = Datastore.objects.create(name="lost", path="/nonexistent-hvbackup-volume/lost")
    group = ProtectionGroup.objects.create(name="Gold", datastore=datastore, retention_days=2)
    protect(vm_with_disk("sql01", file_size=GIB), group)
    ProtectionGroup.objects.create(name="Lost", datastore=lost)
    Datastore.objects.filter(pk=lost.pk).update(assigned_bytes=123)
    result = refresh_capacity()
    assert result["sampled"] == 1 and result["filling"] == 0
    assert Datastore.objects.get(pk=datastore.pk).assigned_bytes == math.ceil(GIB * 1.1)
    assert Datastore.objects.get(pk=lost.pk).assigned_bytes == 0  # its group has no members
    assert not CapacitySample.objects.filter(datastore=lost).exists()
