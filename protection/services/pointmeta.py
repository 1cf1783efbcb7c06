"""What a recovery point's manifest records about its catalog, so the datastore alone
can rebuild the server's catalog (``manage.py import-datastore``).

Every backup writes ``metadata["catalog"]``: the host, the VM, its disks (with the name
each disk is stored under in the point) and a snapshot of the protection group's
policy. It is a few hundred bytes per point. The keys are documented in
docs/datastore-format.md ("Catalog metadata"); ``CATALOG_VERSION`` changes only when a
key changes meaning, and readers ignore keys they do not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backupsite.core.timeofday import format_time_of_day
from protection.models import ProtectionGroup, VirtualDisk, VirtualMachine

CATALOG_VERSION = 1

# The policy fields a group is recreated with; everything else (owner, drafts, replica
# creation method: the replica exists already) is not needed to protect the VM again.
GROUP_POLICY_FIELDS = (
    "description",
    "short_term_on_disk",
    "online_protection",
    "retention_days",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "sync_frequency_minutes",
    "recovery_point_times",
    "recovery_point_days",
    "express_full_times",
    "express_full_days",
    "consistency_check_if_inconsistent",
)

VM_FIELDS = (
    "generation",
    "configuration_version",
    "integration_services_version",
    "os_family",
    "vss_capable",
    "replication_role",
    "storage_kind",
    "highly_available",
    "configuration_path",
)


def _base_name(path: str) -> str:
    """The file name of a host path, Windows or POSIX."""
    return path.replace("\\", "/").rsplit("/", 1)[-1].lower()


def disk_entries(disks: Iterable[VirtualDisk], file_names: Iterable[str]) -> list[dict[str, Any]]:
    """One entry per disk; ``file`` is the name the disk is stored under in the point
    (matched by file name), or None when the point does not hold it (pass-through)."""
    by_base: dict[str, str] = {}
    for name in file_names:
        by_base.setdefault(_base_name(name), name)
    return [
        {
            "file": None if disk.passthrough else by_base.get(_base_name(disk.path)),
            "path": disk.path,
            "format": disk.format,
            "dynamic": disk.dynamic,
            "virtual_size": disk.virtual_size_bytes,
            "file_size": disk.file_size_bytes,
            "controller": disk.controller_type,
            "controller_number": disk.controller_number,
            "controller_location": disk.controller_location,
            "passthrough": disk.passthrough,
        }
        for disk in disks
    ]


def group_policy(group: ProtectionGroup) -> dict[str, Any]:
    policy: dict[str, Any] = {"name": group.name}
    policy.update({name: getattr(group, name) for name in GROUP_POLICY_FIELDS})
    daily = group.consistency_check_daily_at
    policy["consistency_check_daily_at"] = format_time_of_day(daily) if daily else None
    return policy


def catalog_metadata(vm: VirtualMachine, group: ProtectionGroup, file_names: Iterable[str]) -> dict[str, Any]:
    """The ``catalog`` entry of a point's metadata for a backup of ``vm`` in ``group``."""
    host = vm.host
    vm_entry: dict[str, Any] = {"name": vm.name, "cluster": vm.cluster.name if vm.cluster else None}
    vm_entry.update({name: getattr(vm, name) for name in VM_FIELDS})
    return {
        "version": CATALOG_VERSION,
        # Never credentials: manifests are not encrypted, even in an encrypted datastore.
        "host": {
            "name": host.name,
            "kind": host.connection_kind,
            "address": host.address,
            "cluster": host.cluster.name if host.cluster else None,
        },
        "vm": vm_entry,
        "disks": disk_entries(vm.disks.all(), file_names),
        "group": group_policy(group),
    }
