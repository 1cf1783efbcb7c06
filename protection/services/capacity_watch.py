"""The hourly capacity task: sample every datastore's volume, keep the planned space
(``Datastore.assigned_bytes``) current, and raise or clear the "volume filling up" alert.

The alert is raised when less than ``CAPACITY_ALERT_FREE_PERCENT`` of the volume is
free, or when the growth of the last 14 days fills it within ``CAPACITY_ALERT_DAYS``
days; it is resolved by the first run that finds neither true. A volume that cannot
be read is left alone here: jobs raise ``DATASTORE_UNAVAILABLE`` for that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from protection.models import Alert, AlertKind, AlertSeverity
from protection.services.capacity import refresh_assigned
from protection.services.forecast import Growth, growth_of, prune_samples, record_sample
from storage.models import Datastore, DiskSpace


def size(value: float) -> str:
    return str(filesizeformat(value)).replace("\xa0", " ")


def filling_reasons(space: DiskSpace, growth: Growth, now: datetime) -> tuple[bool, bool]:
    """(free space below the threshold, forecast full within the warning period)."""
    percent = settings.CAPACITY_ALERT_FREE_PERCENT
    days = settings.CAPACITY_ALERT_DAYS
    low = percent > 0 and space.total > 0 and space.free * 100 < percent * space.total
    soon = days > 0 and growth.full_at is not None and growth.full_at <= now + timedelta(days=days)
    return low, soon


def describe(datastore: Datastore, space: DiskSpace, growth: Growth) -> str:
    free_percent = space.free * 100 / space.total if space.total else 0.0
    text = (
        f"Datastore {datastore} ({datastore.path}): {size(space.free)} free of {size(space.total)} "
        f"({free_percent:.1f} %)."
    )
    if growth.full_at is not None and growth.bytes_per_day is not None:
        local = timezone.localtime(growth.full_at)
        text += (
            f" At the growth of the last {max(growth.days, 0.1):.1f} days "
            f"({size(growth.bytes_per_day)} a day) the volume is full around {local:%Y-%m-%d %H:%M}."
        )
    elif growth.known:
        text += " The volume is not growing."
    return f"{text} Add space to the volume, move a group to another datastore, or shorten retention."


def check_volume(datastore: Datastore, space: DiskSpace, growth: Growth, now: datetime) -> Alert | None:
    """Raise (or refresh) the alert while the volume is filling; resolve it otherwise."""
    low, soon = filling_reasons(space, growth, now)
    if low or soon:
        return Alert.raise_alert(
            AlertKind.VOLUME_FILLING,
            describe(datastore, space, growth),
            severity=AlertSeverity.CRITICAL if low else AlertSeverity.WARNING,
            datastore=datastore,
        )
    Alert.resolve(
        [AlertKind.VOLUME_FILLING],
        f"{size(space.free)} free; not expected to fill within {settings.CAPACITY_ALERT_DAYS} days",
        datastore=datastore,
    )
    return None


def refresh_capacity(now: datetime | None = None) -> dict[str, int]:
    """The django-q2 schedule's task (hourly, see ``bootstrap``)."""
    now = now or timezone.now()
    sampled = alerts = 0
    for datastore in Datastore.objects.all():
        refresh_assigned(datastore)
        space = datastore.disk_space()
        if space is None:
            continue
        record_sample(datastore, space, now)
        sampled += 1
        if check_volume(datastore, space, growth_of(datastore, now), now) is not None:
            alerts += 1
    return {"sampled": sampled, "filling": alerts, "pruned": prune_samples(now)}
