"""Capacity planning figures: planned before backups, measured after (protection.services.capacity)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from protection.models import (
    Consistency,
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    RecoveryPointKind,
    ReplicaState,
    VirtualMachine,
)
from protection.services import capacity
from protection.services.capacity import (
    GIB,
    GUIDELINE_DATA_BYTES,
    datastore_capacity,
    datastore_reduction,
    estate_guideline,
    group_capacity,
    refresh_assigned,
)
from storage.models import Datastore
from tests.factories import make_vm
from tests.protection.conftest import needs_root
from tests.protection.helpers import protect, vm_with_disk

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
NOW = timezone.make_aware(datetime(2026, 11, 30, 12, 0))


def make_group(datastore: Datastore, name: str = "Gold", **fields: object) -> ProtectionGroup:
    fields.setdefault("retention_days", 10)
    return ProtectionGroup.objects.create(name=name, datastore=datastore, **fields)


def point(
    vm: VirtualMachine,
    group: ProtectionGroup,
    *,
    days_ago: float,
    size: int,
    stored: int,
    kind: str = RecoveryPointKind.RECOVERY_POINT,
    **fields: object,
) -> RecoveryPoint:
    return RecoveryPoint.objects.create(
        point_id=uuid.uuid4().hex,
        datastore=group.datastore,
        vm=vm,
        group=group,
        created=NOW - timedelta(days=days_ago),
        kind=kind,
        consistency=Consistency.CRASH,
        size_bytes=size,
        stored_bytes=stored,
        **fields,
    )


def test_before_any_backup_the_plan_uses_the_wizard_churn(datastore: Datastore) -> None:
    group = make_group(datastore, planned_daily_churn_percent=3.0)
    for name in ("sql01", "web01"):
        protect(vm_with_disk(name, file_size=4 * GIB), group)
    protect(vm_with_disk("gone", file_size=50 * GIB), group, replica_state=ReplicaState.STOPPED)
    figures = group_capacity(group, now=NOW)
    assert (figures.vm_count, figures.data_bytes, figures.backed_up_vms) == (2, 8 * GIB, 0)
    assert not figures.measured and figures.churn_percent is None and figures.planned_churn_percent == 3.0
    assert figures.recommended_bytes == math.ceil(8 * GIB * (1 + 10 * 0.03))


def test_measured_churn_and_reduction_make_the_recommendation(datastore: Datastore) -> None:
    group = make_group(datastore)
    sql, web = vm_with_disk("sql01", file_size=100 * GIB), vm_with_disk("web01", file_size=50 * GIB)
    protect(sql, group)
    protect(web, group)
    # Initial replicas 10 days ago: 150 GiB stored in 60 GiB (reduction 0.4).
    point(sql, group, days_ago=10, size=100 * GIB, stored=40 * GIB, kind=RecoveryPointKind.INITIAL)
    point(web, group, days_ago=10, size=50 * GIB, stored=20 * GIB, kind=RecoveryPointKind.INITIAL)
    # Then 1 GiB a day for sql01 and 0.5 GiB for web01; retention removed the oldest ones,
    # whose bytes were still written on their day.
    for day in range(1, 11):
        point(sql, group, days_ago=10 - day, size=100 * GIB, stored=GIB, deleted_at=NOW if day < 4 else None)
        point(web, group, days_ago=10 - day, size=52 * GIB, stored=GIB // 2)
    figures = group_capacity(group, now=NOW)
    assert figures.measured and figures.measured_days == pytest.approx(10)
    assert figures.daily_new_bytes == math.ceil(15 * GIB / 10)
    assert figures.churn_percent == pytest.approx(1.5 * 100 / 150)
    assert figures.ratio == pytest.approx(0.4)
    assert (figures.logical_bytes, figures.backed_up_vms) == (152 * GIB, 2)  # latest usable points
    expected = (152 * GIB * 0.4 + 10 * figures.daily_new_bytes) * 1.10
    assert figures.recommended_bytes == pytest.approx(expected, rel=1e-9)
    # The plan with the wizard's 5 % would have asked for far more.
    assert figures.recommended_bytes < capacity.planned_bytes(150 * GIB, 10, 5.0) / 2


def test_only_the_last_14_days_are_measured(datastore: Datastore) -> None:
    group = make_group(datastore)
    vm = vm_with_disk("sql01", file_size=10 * GIB)
    protect(vm, group)
    point(vm, group, days_ago=40, size=10 * GIB, stored=5 * GIB, kind=RecoveryPointKind.INITIAL)
    point(vm, group, days_ago=20, size=10 * GIB, stored=9 * GIB)  # before the window
    point(vm, group, days_ago=7, size=10 * GIB, stored=7 * GIB)
    figures = group_capacity(group, now=NOW)
    assert figures.measured_days == pytest.approx(14)
    assert figures.daily_new_bytes == math.ceil(7 * GIB / 14)


def test_less_than_a_day_of_backups_is_still_the_plan(datastore: Datastore) -> None:
    group = make_group(datastore)
    vm = vm_with_disk("sql01", file_size=10 * GIB)
    protect(vm, group)
    point(vm, group, days_ago=0.5, size=10 * GIB, stored=4 * GIB, kind=RecoveryPointKind.INITIAL)
    point(vm, group, days_ago=0.1, size=10 * GIB, stored=GIB)
    figures = group_capacity(group, now=NOW)
    assert not figures.measured and figures.measured_days == pytest.approx(0.5)
    assert figures.recommended_bytes == capacity.planned_bytes(10 * GIB, 10, 5.0)
    assert figures.ratio == pytest.approx(0.4)  # the reduction is known at once


def test_a_member_without_a_point_counts_with_its_disk_files(datastore: Datastore) -> None:
    group = make_group(datastore, retention_days=1)
    old, new = vm_with_disk("old", file_size=10 * GIB), vm_with_disk("new", file_size=6 * GIB)
    protect(old, group)
    protect(new, group)
    point(old, group, days_ago=3, size=8 * GIB, stored=4 * GIB, kind=RecoveryPointKind.INITIAL)
    point(old, group, days_ago=2, size=8 * GIB, stored=0, damaged=True)  # not usable: not the latest
    figures = group_capacity(group, now=NOW)
    assert figures.replica_logical_bytes == 8 * GIB + 6 * GIB
    assert figures.daily_new_bytes == 0
    assert figures.recommended_bytes == math.ceil(14 * GIB * 0.5 * 1.10)


def test_colocated_groups_share_the_datastore_reduction(datastore: Datastore) -> None:
    gold, silver = make_group(datastore, "Gold"), make_group(datastore, "Silver")
    a, b = vm_with_disk("a"), vm_with_disk("b")
    protect(a, gold)
    protect(b, silver)
    # Silver's VM was cloned from Gold's: its first copy deduplicated against it.
    point(a, gold, days_ago=2, size=10 * GIB, stored=5 * GIB, kind=RecoveryPointKind.INITIAL)
    point(b, silver, days_ago=1, size=10 * GIB, stored=GIB, kind=RecoveryPointKind.INITIAL)
    reduction = datastore_reduction(datastore)
    assert reduction.ratio == pytest.approx(0.3) and reduction.basis == "initial replicas"
    assert reduction.factor == pytest.approx(1 / 0.3) and reduction.logical_bytes == 20 * GIB
    assert group_capacity(gold, now=NOW).ratio == group_capacity(silver, now=NOW).ratio


def test_without_initial_replicas_the_reduction_is_usage_over_logical_size(datastore: Datastore) -> None:
    group = make_group(datastore)
    vm = vm_with_disk("sql01")
    protect(vm, group)
    point(vm, group, days_ago=1, size=10 * GIB, stored=3 * GIB, kind=RecoveryPointKind.CONSISTENCY_CHECK)
    Datastore.objects.filter(pk=datastore.pk).update(used_bytes=4 * GIB)
    datastore.refresh_from_db()
    assert datastore_reduction(datastore).ratio == pytest.approx(0.4)
    Datastore.objects.filter(pk=datastore.pk).update(used_bytes=40 * GIB)  # never above 1
    datastore.refresh_from_db()
    reduction = datastore_reduction(datastore)
    assert reduction.ratio == 1.0 and reduction.basis == "datastore usage"


def test_nothing_measured_on_an_empty_datastore(datastore: Datastore) -> None:
    reduction = datastore_reduction(datastore)
    assert (reduction.ratio, reduction.factor, reduction.logical_bytes) == (None, None, 0)


@needs_root
def test_datastore_underprovisioned_on_a_small_volume(tmpfs: Callable[[str, int], Path]) -> None:
    datastore = Datastore.objects.create_with_store("Small", str(tmpfs("small", 32) / "store"))
    gold, silver = make_group(datastore, "Gold", retention_days=2), make_group(datastore, "Silver")
    protect(vm_with_disk("a", file_size=20 * MIB), gold)
    protect(vm_with_disk("b", file_size=10 * MIB), silver)
    figures = datastore_capacity(datastore, now=NOW)
    recommended = math.ceil(20 * MIB * 1.1) + math.ceil(10 * MIB * 1.5)  # 37 MiB
    assert figures.recommended_bytes == recommended and figures.shared and figures.used_bytes == 0
    assert figures.space is not None and figures.space.total == 32 * MIB
    assert figures.underprovisioned_bytes == recommended - figures.space.free > 5 * MIB
    assert [entry.group.name for entry in figures.groups] == ["Gold", "Silver"]


@needs_root
def test_underprovisioned_is_recommended_less_used_and_free(tmpfs: Callable[[str, int], Path]) -> None:
    datastore = Datastore.objects.create_with_store("Small", str(tmpfs("small", 32) / "store"))
    gold = make_group(datastore, "Gold", retention_days=10)
    protect(vm_with_disk("a", file_size=30 * MIB), gold)
    Datastore.objects.filter(pk=datastore.pk).update(used_bytes=2 * MIB)
    datastore.refresh_from_db()
    figures = datastore_capacity(datastore, now=NOW)
    assert figures.space is not None
    assert figures.recommended_bytes == 45 * MIB
    assert figures.underprovisioned_bytes == 45 * MIB - (2 * MIB + figures.space.free) > 0
    bar = figures.bar
    assert bar["recommended"] == 100.0 and 0 < bar["datastore"] < 10
    assert assigned_after_refresh(datastore) == 45 * MIB


def assigned_after_refresh(datastore: Datastore) -> int:
    refresh_assigned(datastore)
    return Datastore.objects.get(pk=datastore.pk).assigned_bytes


def test_assigned_space_is_the_sum_of_the_groups(datastore: Datastore) -> None:
    other = Datastore.objects.create(name="other", path="/nonexistent-hvbackup/other")
    gold = make_group(datastore, "Gold", retention_days=4, planned_daily_churn_percent=25.0)
    protect(vm_with_disk("a", file_size=GIB), gold)
    protect(vm_with_disk("b", file_size=GIB), make_group(other, "Elsewhere"))
    assert assigned_after_refresh(datastore) == 2 * GIB
    ProtectedDataSource.objects.filter(group=gold).delete()
    assert assigned_after_refresh(datastore) == 0


def test_estate_against_the_one_server_guideline(datastore: Datastore) -> None:
    group = make_group(datastore)
    protect(vm_with_disk("sql01", file_size=40 * GIB), group)
    protect(vm_with_disk("retired", file_size=500 * GIB), group, replica_state=ReplicaState.STOPPED)
    make_vm("unprotected")
    estate = estate_guideline()
    assert (estate.vm_count, estate.data_bytes) == (1, 40 * GIB) and not estate.exceeded
    assert estate.vm_percent == pytest.approx(0.125)
    assert GUIDELINE_DATA_BYTES == 800 * 100 * GIB
    protect(vm_with_disk("archive", file_size=GUIDELINE_DATA_BYTES), group)
    assert estate_guideline().exceeded


def test_estate_with_more_than_800_machines_passes_the_guideline(datastore: Datastore) -> None:
    group = make_group(datastore)
    host = make_vm("first").host
    machines = VirtualMachine.objects.bulk_create(
        VirtualMachine(name=f"vm{i:03}", host=host, hyperv_id=str(uuid.uuid4())) for i in range(800)
    )
    ProtectedDataSource.objects.bulk_create(ProtectedDataSource(group=group, vm=vm) for vm in machines)
    assert estate_guideline().vm_count == 800 and not estate_guideline().exceeded
    protect(VirtualMachine.objects.get(name="first"), group)
    assert estate_guideline().exceeded
