"""Capacity planning: what each protection group and datastore needs, measured once
backups exist and planned before (the formulas are in docs/capacity.md).

Per group:
- data size: the file sizes of its members' virtual disks, and the logical size of
  each member's latest usable recovery point;
- measured daily change: the new bytes its backups stored per day over the last 14
  days (``RecoveryPoint.stored_bytes``; initial replicas are the first copy, not
  change, and are left out), also as a share of the data;
- recommended space: before a day of backups, the planning formula
  ``data x (1 + retention days x daily change rate)`` with the rate the wizard
  planned with; after, ``(replica x reduction + retention days x measured daily new
  bytes) x (1 + margin)``.

Per datastore: the reduction (stored bytes per logical byte of a full copy, measured
on the datastore, shared by its colocated groups), the sum of its groups'
recommendations (written to ``Datastore.assigned_bytes``), what is used and free,
how much it is underprovisioned by, and the growth forecast (``forecast``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Min, OuterRef, QuerySet, Subquery, Sum
from django.utils import timezone

from protection.models import (
    USABLE_POINT,
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    RecoveryPointKind,
    ReplicaState,
    VirtualDisk,
    VirtualMachine,
)
from protection.services.forecast import Growth, growth_of
from storage.models import Datastore, DiskSpace

GIB = 1024**3

# A typical server rewrites a few percent of its disk data a day; 5 % is the planning
# figure the wizard starts from (the administrator may change it).
DEFAULT_DAILY_CHURN_PERCENT = 5.0

# The sizing guideline of the product this server replaces (MABS: "You can protect up
# to 800 virtual machines of 100 GB each on one MABS server"; its storage guideline:
# average VM 100 GB, 800 VMs per server, 80 TB of data, 80 TB of backup storage).
GUIDELINE_VMS = 800
GUIDELINE_VM_BYTES = 100 * GIB
GUIDELINE_DATA_BYTES = GUIDELINE_VMS * GUIDELINE_VM_BYTES

# The change is measured over this window, once the backups cover at least a day (a
# few hours after the initial replica say little about a day).
CHURN_WINDOW = timedelta(days=14)
MIN_MEASURED_SPAN = timedelta(days=1)
# On top of a measured recommendation: deleted points' chunks are freed only by the
# next daily garbage collection, and a running backup holds its new chunks before
# retention removes the oldest point.
MARGIN_PERCENT = 10


def planned_bytes(data_bytes: int, retention_days: int, daily_churn_percent: float) -> int:
    """The planning formula: the replica plus one day of changes per retained day."""
    return math.ceil(data_bytes * (1 + retention_days * daily_churn_percent / 100))


# --------------------------------------------------------------------------- datastore reduction


@dataclass(frozen=True)
class Reduction:
    """Stored bytes per logical byte of a full copy, measured on one datastore."""

    ratio: float | None  # 0.5 = half the size on disk; None: nothing measured yet
    basis: str  # how it was measured, for the page
    logical_bytes: int  # latest usable point of every VM stored here

    @property
    def factor(self) -> float | None:
        """The same as "N : 1" (2.0 = stored in half the space)."""
        return 1 / self.ratio if self.ratio else None


def datastore_reduction(datastore: Datastore) -> Reduction:
    """Measured over the datastore, not per group: colocated groups deduplicate against
    each other, so which group's backup stored a shared chunk first is an accident of
    timing. Initial replicas are full copies, so their stored/logical bytes is the
    reduction of a full copy (compression plus deduplication). Without one (replicas
    imported some other way), the datastore's usage over the logical size of its
    latest points, at most 1: an overestimate, since usage also holds retained
    changes, which errs on the safe side."""
    logical = _latest_logical_bytes(RecoveryPoint.objects.filter(datastore=datastore))
    initial = RecoveryPoint.objects.filter(
        datastore=datastore, kind=RecoveryPointKind.INITIAL, size_bytes__gt=0
    ).aggregate(stored=Sum("stored_bytes"), size=Sum("size_bytes"))
    if initial["size"]:
        return Reduction(initial["stored"] / initial["size"], "initial replicas", logical)
    if logical and datastore.used_bytes:
        return Reduction(min(1.0, datastore.used_bytes / logical), "datastore usage", logical)
    return Reduction(None, "", logical)


def _latest_logical_bytes(points: QuerySet[RecoveryPoint]) -> int:
    """The logical size of each VM's newest usable point among ``points``, summed."""
    return sum(_latest_sizes(points).values())


def _latest_sizes(points: QuerySet[RecoveryPoint], vm_ids: list[int] | None = None) -> dict[int, int]:
    usable = points.filter(USABLE_POINT)
    vms = VirtualMachine.objects.all()
    vms = (
        vms.filter(pk__in=vm_ids) if vm_ids is not None else vms.filter(recovery_points__in=usable).distinct()
    )
    newest = usable.filter(vm=OuterRef("pk")).order_by("-created", "-pk").values("size_bytes")[:1]
    rows = vms.annotate(latest=Subquery(newest)).values_list("pk", "latest")
    return {pk: int(size) for pk, size in rows if size is not None}


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class GroupCapacity:
    group: ProtectionGroup
    vm_count: int
    data_bytes: int  # the members' virtual disk files now
    logical_bytes: int  # their latest usable points
    backed_up_vms: int  # members with a usable point
    replica_logical_bytes: int  # latest point, or the disk files of members without one
    daily_new_bytes: int | None  # measured; None before a day of backups
    measured_days: float
    ratio: float | None  # the datastore's reduction
    recommended_bytes: int

    @property
    def measured(self) -> bool:
        return self.daily_new_bytes is not None

    @property
    def planned_churn_percent(self) -> float:
        return self.group.planned_daily_churn_percent

    @property
    def churn_percent(self) -> float | None:
        """Measured daily new bytes as a share of the data (after reduction: the bytes
        stored, over the logical data)."""
        base = self.data_bytes or self.replica_logical_bytes
        if self.daily_new_bytes is None or not base:
            return None
        return self.daily_new_bytes * 100 / base

    @property
    def replica_stored_bytes(self) -> int:
        return math.ceil(self.replica_logical_bytes * (self.ratio if self.ratio is not None else 1.0))


def _member_ids(group: ProtectionGroup) -> list[int]:
    return list(group.members.exclude(replica_state=ReplicaState.STOPPED).values_list("vm_id", flat=True))


def _disk_bytes(vm_ids: list[int]) -> dict[int, int]:
    rows = VirtualDisk.objects.filter(vm_id__in=vm_ids).values("vm_id").annotate(total=Sum("file_size_bytes"))
    return {row["vm_id"]: int(row["total"] or 0) for row in rows}


def measured_daily_new_bytes(group: ProtectionGroup, now: datetime) -> tuple[int | None, float]:
    """New stored bytes per day over the window, and the days measured. Points retention
    removed since still count: their bytes were written that day."""
    points = RecoveryPoint.objects.filter(group=group, created__lte=now)
    first = points.aggregate(first=Min("created"))["first"]
    if first is None:
        return None, 0.0
    start = max(now - CHURN_WINDOW, first)
    span = now - start
    days = span.total_seconds() / 86400
    if span < MIN_MEASURED_SPAN:
        return None, days
    new = (
        points.filter(created__gte=start)
        .exclude(kind=RecoveryPointKind.INITIAL)
        .aggregate(total=Sum("stored_bytes"))["total"]
    )
    return math.ceil(int(new or 0) / days), days


def group_capacity(
    group: ProtectionGroup, *, reduction: Reduction | None = None, now: datetime | None = None
) -> GroupCapacity:
    now = now or timezone.now()
    vm_ids = _member_ids(group)
    disks = _disk_bytes(vm_ids)
    latest = _latest_sizes(RecoveryPoint.objects.filter(datastore_id=group.datastore_id), vm_ids)
    replica = sum(latest.get(vm, disks.get(vm, 0)) for vm in vm_ids)
    data = sum(disks.values())
    daily, days = measured_daily_new_bytes(group, now)
    if reduction is None:
        reduction = datastore_reduction(group.datastore)
    ratio = reduction.ratio
    if daily is None:
        recommended = planned_bytes(data, group.retention_days, group.planned_daily_churn_percent)
    else:
        stored_replica = replica * (ratio if ratio is not None else 1.0)
        recommended = math.ceil((stored_replica + group.retention_days * daily) * (1 + MARGIN_PERCENT / 100))
    return GroupCapacity(
        group=group,
        vm_count=len(vm_ids),
        data_bytes=data,
        logical_bytes=sum(latest.values()),
        backed_up_vms=len(latest),
        replica_logical_bytes=replica,
        daily_new_bytes=daily,
        measured_days=days,
        ratio=ratio,
        recommended_bytes=recommended,
    )


# --------------------------------------------------------------------------- datastores


@dataclass(frozen=True)
class DatastoreCapacity:
    datastore: Datastore
    groups: list[GroupCapacity]
    reduction: Reduction
    space: DiskSpace | None  # None: the volume cannot be read
    growth: Growth

    @property
    def recommended_bytes(self) -> int:
        return sum(group.recommended_bytes for group in self.groups)

    @property
    def used_bytes(self) -> int:
        return self.datastore.used_bytes

    @property
    def free_bytes(self) -> int | None:
        return self.space.free if self.space is not None else None

    @property
    def underprovisioned_bytes(self) -> int:
        """What the groups are recommended beyond what the datastore holds plus the
        volume's free space; 0 when they fit (or the volume cannot be read)."""
        if self.space is None:
            return 0
        return max(0, self.recommended_bytes - (self.used_bytes + self.space.free))

    @property
    def shared(self) -> bool:
        return len(self.groups) > 1

    @property
    def bar(self) -> dict[str, float]:
        """Percentages of the volume for the page's bar: the datastore's usage, the rest
        of the volume's used space, and the recommendation's mark."""
        if self.space is None or not self.space.total:
            return {}
        total = self.space.total

        def share(value: int) -> float:
            return round(min(100.0, max(0.0, value * 100 / total)), 1)

        datastore = share(self.used_bytes)
        return {
            "datastore": datastore,
            "other": round(max(0.0, share(self.space.total - self.space.free) - datastore), 1),
            "recommended": share(self.recommended_bytes),
        }


def datastore_capacity(datastore: Datastore, now: datetime | None = None) -> DatastoreCapacity:
    now = now or timezone.now()
    reduction = datastore_reduction(datastore)
    groups = [
        group_capacity(group, reduction=reduction, now=now)
        for group in datastore.protection_groups.select_related("datastore")
    ]
    return DatastoreCapacity(datastore, groups, reduction, datastore.disk_space(), growth_of(datastore, now))


def planned_for_groups(datastore: Datastore, *, exclude: ProtectionGroup | None = None) -> int:
    """What the datastore's groups (but ``exclude``) are recommended, live."""
    groups = datastore.protection_groups.select_related("datastore")
    if exclude is not None:
        groups = groups.exclude(pk=exclude.pk)
    reduction = datastore_reduction(datastore)
    return sum(group_capacity(group, reduction=reduction).recommended_bytes for group in groups)


def refresh_assigned(datastore: Datastore) -> int:
    """Write what the datastore's groups are planned to need to ``assigned_bytes``."""
    assigned = planned_for_groups(datastore)
    Datastore.objects.filter(pk=datastore.pk).update(assigned_bytes=assigned)
    datastore.assigned_bytes = assigned
    return assigned


# --------------------------------------------------------------------------- the whole server


@dataclass(frozen=True)
class Guideline:
    """The protected estate against the one-server sizing guideline."""

    vm_count: int
    data_bytes: int
    max_vms: int = GUIDELINE_VMS
    max_data_bytes: int = GUIDELINE_DATA_BYTES
    vm_bytes: int = GUIDELINE_VM_BYTES

    @property
    def vm_percent(self) -> float:
        return self.vm_count * 100 / self.max_vms

    @property
    def data_percent(self) -> float:
        return self.data_bytes * 100 / self.max_data_bytes

    @property
    def exceeded(self) -> bool:
        return self.vm_count > self.max_vms or self.data_bytes > self.max_data_bytes


def estate_guideline() -> Guideline:
    active = ProtectedDataSource.objects.exclude(replica_state=ReplicaState.STOPPED)
    vm_ids = list(active.values_list("vm_id", flat=True))
    return Guideline(vm_count=len(vm_ids), data_bytes=sum(_disk_bytes(vm_ids).values()))


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class CapacityReport:
    datastores: list[DatastoreCapacity]
    guideline: Guideline
    margin_percent: int = MARGIN_PERCENT

    @property
    def groups(self) -> list[GroupCapacity]:
        return sorted(
            (group for datastore in self.datastores for group in datastore.groups),
            key=lambda group: group.group.name.lower(),
        )


def capacity_report(datastores: QuerySet[Datastore], now: datetime | None = None) -> CapacityReport:
    """Every datastore the user may see, with its groups, and the whole server."""
    now = now or timezone.now()
    return CapacityReport([datastore_capacity(ds, now) for ds in datastores], estate_guideline())


def group_report(
    group: ProtectionGroup, now: datetime | None = None
) -> tuple[GroupCapacity, DatastoreCapacity]:
    """A group's figures and those of the datastore it shares (for the group's page)."""
    datastore = datastore_capacity(group.datastore, now)
    own = next(entry for entry in datastore.groups if entry.group.pk == group.pk)
    return own, datastore
