"""Model fields from a manifest's catalog metadata (``protection.services.pointmeta``).

A manifest is data from disk, possibly written by another version or edited by hand:
every value is checked against the field it goes into, and anything unusable falls
back to the model's default instead of failing the import.
"""

from __future__ import annotations

from typing import Any

from backupsite.core.timeofday import parse_time_of_day
from protection.models import (
    MAX_RETENTION_DAYS,
    SYNC_FREQUENCY_CHOICES,
    ControllerType,
    DiskFormat,
    OSFamily,
    ReplicationRole,
    StorageKind,
)


def _int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _choice(value: object, choices: list[str]) -> str | None:
    return value if isinstance(value, str) and value in choices else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _times(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    good = []
    for item in value:
        try:
            parse_time_of_day(item)
        except ValueError:
            continue
        good.append(item.strip())
    return good


def _days(value: object) -> list[int] | None:
    if not isinstance(value, list):
        return None
    return [day for day in value if _int(day, 0, 6) is not None]


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def vm_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return _present(
        {
            "generation": _int(entry.get("generation"), 1, 2),
            "configuration_version": _text(entry.get("configuration_version"), 16),
            "integration_services_version": _text(entry.get("integration_services_version"), 64),
            "os_family": _choice(entry.get("os_family"), OSFamily.values),
            "vss_capable": _bool(entry.get("vss_capable")),
            "replication_role": _choice(entry.get("replication_role"), ReplicationRole.values),
            "storage_kind": _choice(entry.get("storage_kind"), StorageKind.values),
            "highly_available": _bool(entry.get("highly_available")),
            "configuration_path": _text(entry.get("configuration_path"), 1024),
        }
    )


def disk_fields(entry: dict[str, Any]) -> dict[str, Any]:
    big = 1 << 62
    return _present(
        {
            "format": _choice(entry.get("format"), [*DiskFormat.values, ""]),
            "dynamic": _bool(entry.get("dynamic")),
            "virtual_size_bytes": _int(entry.get("virtual_size"), 0, big),
            "file_size_bytes": _int(entry.get("file_size"), 0, big),
            "controller_type": _choice(entry.get("controller"), ControllerType.values),
            "controller_number": _int(entry.get("controller_number"), 0, 255),
            "controller_location": _int(entry.get("controller_location"), 0, 255),
            "passthrough": _bool(entry.get("passthrough")),
        }
    )


def group_fields(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A group's policy from its snapshot; what is missing or invalid keeps the default.

    Reads every field ``pointmeta.GROUP_POLICY_FIELDS`` writes (a test holds them together).

    Nothing is scheduled unless the snapshot says so (empty times are the default)."""
    counts = 10_000
    fields = {
        "description": _text(snapshot.get("description"), 10_000),
        "short_term_on_disk": _bool(snapshot.get("short_term_on_disk")),
        "online_protection": _bool(snapshot.get("online_protection")),
        "retention_days": _int(snapshot.get("retention_days"), 1, MAX_RETENTION_DAYS),
        "keep_daily": _int(snapshot.get("keep_daily"), 0, counts),
        "keep_weekly": _int(snapshot.get("keep_weekly"), 0, counts),
        "keep_monthly": _int(snapshot.get("keep_monthly"), 0, counts),
        "keep_yearly": _int(snapshot.get("keep_yearly"), 0, counts),
        "sync_frequency_minutes": _choice_int(
            snapshot.get("sync_frequency_minutes"), [minutes for minutes, _ in SYNC_FREQUENCY_CHOICES]
        ),
        "recovery_point_times": _times(snapshot.get("recovery_point_times")),
        "recovery_point_days": _days(snapshot.get("recovery_point_days")),
        "express_full_times": _times(snapshot.get("express_full_times")),
        "express_full_days": _days(snapshot.get("express_full_days")),
        "consistency_check_if_inconsistent": _bool(snapshot.get("consistency_check_if_inconsistent")),
        "consistency_check_daily_at": _time(snapshot.get("consistency_check_daily_at")),
    }
    return _present(fields)


def _choice_int(value: object, choices: list[int]) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value in choices else None


def _time(value: object) -> Any:
    try:
        return parse_time_of_day(value) if isinstance(value, str) else None
    except ValueError:
        return None
