"""Protection groups: the wizard's draft becoming a group, and the on-demand jobs
(backups, consistency checks, stop protection) started from the pages.

The wizard's steps and their forms live in ``protection.forms.wizard``; this module
turns their cleaned result (a :class:`DraftPolicy`) into rows and jobs, atomically. It
never imports the forms: the view cleans the draft and hands the policy over, and the
draft's input format for an existing group (:func:`initial_input`) lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.http import HttpRequest

from backupsite.core.models import AuditEvent, Job, JobKind
from backupsite.core.timeofday import format_time_of_day
from protection.models import (
    ProtectedDataSource,
    ProtectionGroup,
    ProtectionGroupDraft,
    ReplicaCreationMethod,
    ReplicaState,
    VirtualDisk,
    VirtualMachine,
)
from protection.services.capacity import (
    group_capacity,
    planned_bytes,
    planned_for_groups,
    refresh_assigned,
)
from storage.models import Datastore

# The synchronization frequency choice that means "no own schedule": synchronize
# just before each recovery point (stored as sync_frequency_minutes = None).
JUST_BEFORE_RECOVERY_POINT = "recovery_point"

# The on-demand backups a protected VM's page offers.
VM_JOB_KINDS = (
    JobKind.RECOVERY_POINT,
    JobKind.SYNCHRONIZATION,
    JobKind.CONSISTENCY_CHECK,
    JobKind.EXPRESS_FULL,
)


class ProtectionError(Exception):
    """A protection change that is refused; the message is for the user."""


class DraftIncomplete(ProtectionError):
    """A wizard step whose input is missing or no longer valid."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class DraftPolicy:
    """Everything the wizard chose, cleaned and checked."""

    vm_ids: list[int]
    name: str
    description: str
    short_term_on_disk: bool
    retention_days: int
    sync_frequency_minutes: int | None
    recovery_point_times: list[str]
    recovery_point_days: list[int]
    express_full_times: list[str]
    express_full_days: list[int]
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    keep_yearly: int
    datastore: Datastore
    daily_churn_percent: float
    replica_creation_method: str
    replica_creation_at: datetime | None
    manual_import_path: str
    consistency_check_if_inconsistent: bool
    consistency_check_daily_at: time | None


# --------------------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Allocation:
    vm_count: int
    data_bytes: int  # what the VHD(X) files hold now (file sizes)
    virtual_bytes: int  # what they could grow to (virtual sizes)
    retention_days: int
    daily_churn_percent: float
    provision_bytes: int
    datastore: Datastore | None
    free_bytes: int | None  # None: the datastore's volume cannot be read
    colocated_groups: list[str]
    # What the datastore's other groups are recommended, and what the datastore holds.
    others_planned_bytes: int = 0
    datastore_used_bytes: int = 0
    existing_group: bool = False

    @property
    def reachable(self) -> bool:
        return self.datastore is not None and self.free_bytes is not None

    @property
    def reserved_bytes(self) -> int:
        """Space the other groups are planned to need and have not used yet (what the
        datastore holds counts as theirs, except what an existing group holds itself)."""
        return max(0, self.others_planned_bytes - self.datastore_used_bytes)

    @property
    def available_bytes(self) -> int | None:
        """The room for this group: the volume's free space less what is reserved for
        the other groups; an existing group also has what the datastore holds beyond
        the other groups' plans (part of it is its own data)."""
        if self.free_bytes is None:
            return None
        room = self.free_bytes - self.reserved_bytes
        if self.existing_group:
            room += max(0, self.datastore_used_bytes - self.others_planned_bytes)
        return max(0, room)

    @property
    def shortfall_bytes(self) -> int:
        """How much the datastore is underprovisioned by; 0 when it has room."""
        available = self.available_bytes
        if available is None:
            return 0
        return max(0, self.provision_bytes - available)


def estimate_allocation(
    vm_ids: list[int],
    retention_days: int,
    daily_churn_percent: float,
    datastore: Datastore | None,
    *,
    group: ProtectionGroup | None = None,
) -> Allocation:
    """Replica plus the changes kept over the retention range:
    data x (1 + retention days x daily churn), against the room the datastore has left
    once its other groups' recommended space is set aside."""
    totals = VirtualDisk.objects.filter(vm_id__in=vm_ids).aggregate(
        data=Sum("file_size_bytes"), virtual=Sum("virtual_size_bytes")
    )
    data = int(totals["data"] or 0)
    space = datastore.disk_space() if datastore is not None else None
    colocated: list[str] = []
    others = 0
    if datastore is not None:
        other_groups = datastore.protection_groups.all()
        if group is not None:
            other_groups = other_groups.exclude(pk=group.pk)
        colocated = list(other_groups.values_list("name", flat=True))
        others = planned_for_groups(datastore, exclude=group) if colocated else 0
    return Allocation(
        vm_count=len(vm_ids),
        data_bytes=data,
        virtual_bytes=int(totals["virtual"] or 0),
        retention_days=retention_days,
        daily_churn_percent=daily_churn_percent,
        provision_bytes=planned_bytes(data, retention_days, daily_churn_percent),
        datastore=datastore,
        free_bytes=space.free if space is not None else None,
        colocated_groups=colocated,
        others_planned_bytes=others,
        datastore_used_bytes=datastore.used_bytes if datastore is not None else 0,
        existing_group=group is not None and datastore is not None and group.datastore_id == datastore.pk,
    )


# --------------------------------------------------------------------------- wizard


def start_draft(user: Any, group: ProtectionGroup | None = None) -> ProtectionGroupDraft:
    """A fresh draft: empty for a new group, pre-filled from ``group`` to modify it."""
    with transaction.atomic():
        # One draft per user and target: an abandoned wizard is replaced, not piled up.
        ProtectionGroupDraft.objects.filter(user=user, group=group).delete()
        return ProtectionGroupDraft.start(user, group=group, data=initial_input(group))


POLICY_FIELDS = (
    "name",
    "description",
    "short_term_on_disk",
    "retention_days",
    "sync_frequency_minutes",
    "recovery_point_times",
    "recovery_point_days",
    "express_full_times",
    "express_full_days",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "datastore",
    "consistency_check_if_inconsistent",
    "consistency_check_daily_at",
)
INITIAL_STATE = {
    ReplicaCreationMethod.NOW: ReplicaState.CREATING,
    ReplicaCreationMethod.SCHEDULED: ReplicaState.PENDING,
    ReplicaCreationMethod.MANUAL: ReplicaState.AWAITING_MEDIA,
}


def initial_input(group: ProtectionGroup | None) -> dict[str, Any]:
    """A draft's input, as a browser would post it step by step: nothing for a new
    group, the group's policy to modify it."""
    if group is None:
        return {}
    sync = group.sync_frequency_minutes
    on = "on"
    daily_at = group.consistency_check_daily_at
    members = group.members.exclude(replica_state=ReplicaState.STOPPED).values_list("vm_id", flat=True)
    return {
        "members": {"vms": [str(pk) for pk in members]},
        "method": {
            "name": group.name,
            "description": group.description,
            **({"short_term_on_disk": on} if group.short_term_on_disk else {}),
        },
        "goals": {
            "retention_days": str(group.retention_days),
            "sync_frequency_minutes": JUST_BEFORE_RECOVERY_POINT if sync is None else str(sync),
            "recovery_point_times": ", ".join(group.recovery_point_times),
            "recovery_point_days": [str(day) for day in group.recovery_point_days],
            "express_full_times": ", ".join(group.express_full_times),
            "express_full_days": [str(day) for day in group.express_full_days],
            **{
                name: str(getattr(group, name))
                for name in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
            },
        },
        "allocation": {
            "datastore": str(group.datastore_id),
            "daily_churn_percent": str(_churn_to_plan_with(group)),
        },
        # Only VMs added by this change get an initial replica: over the network, now,
        # unless the administrator picks otherwise.
        "replica": {
            "replica_creation_method": str(ReplicaCreationMethod.NOW),
            "manual_import_path": group.manual_import_path,
        },
        "consistency": {
            **({"consistency_check_if_inconsistent": on} if group.consistency_check_if_inconsistent else {}),
            "consistency_check_daily_at": format_time_of_day(daily_at) if daily_at else "",
        },
    }


def _churn_to_plan_with(group: ProtectionGroup) -> float:
    """Modifying a group plans with the change its backups measured, once they have."""
    measured = group_capacity(group).churn_percent
    churn = group.planned_daily_churn_percent if measured is None else measured
    return round(min(max(churn, 0.0), 100.0), 2)


def apply_draft(
    draft: ProtectionGroupDraft,
    policy: DraftPolicy,
    user: Any,
    *,
    request: HttpRequest | None = None,
) -> ProtectionGroup:
    """Create or update the group the draft describes, start its initial replicas,
    and delete the draft. ``policy`` is the draft cleaned by its forms just before;
    membership is checked again here under row locks. Raises DraftIncomplete naming
    the step to fix."""
    try:
        with transaction.atomic():
            group = _save_group(draft.group, policy, user)
            added, removed = _apply_members(group, policy)
            jobs = _start_replicas(group, added, policy, user)
            jobs += [
                Job.submit(
                    JobKind.STOP_PROTECTION,
                    vm=vm,
                    group=group,
                    requested_by=user,
                    parameters={"keep_data": True},
                )
                for vm in removed
            ]
            AuditEvent.record(
                "group.modify" if draft.group else "group.create",
                request=request,
                user=user,
                obj=group,
                added=[vm.name for vm in added],
                removed=[vm.name for vm in removed],
                replica_creation_method=policy.replica_creation_method if added else "",
                jobs=[job.pk for job in jobs],
            )
            draft.discard()
            # The pool and the next wizard on this datastore see the new plan at once.
            refresh_assigned(group.datastore)
    except IntegrityError as error:
        raise ProtectionError(
            f"The group could not be saved: the name {policy.name!r} or one of the virtual machines "
            "was taken by another change at the same moment. Check the steps and try again."
        ) from error
    return group


def _check_colocation(existing: ProtectionGroup | None, datastore: Datastore) -> None:
    """A datastore with colocation off serves one group. Checked again under a row lock
    on the datastore, because the wizard's check ran in an earlier request and two
    wizards may pick the same datastore."""
    locked = Datastore.objects.select_for_update().get(pk=datastore.pk)
    if locked.colocate:
        return
    others = locked.protection_groups.all()
    if existing is not None:
        others = others.exclude(pk=existing.pk)
    names = sorted(others.values_list("name", flat=True))
    if names:
        raise DraftIncomplete(
            "allocation",
            f"Datastore {locked} is dedicated to group {', '.join(names)} (colocation is off); "
            "choose another datastore.",
        )


def _save_group(existing: ProtectionGroup | None, policy: DraftPolicy, user: Any) -> ProtectionGroup:
    _check_colocation(existing, policy.datastore)
    if existing is None:
        group = ProtectionGroup(created_by=user)
    else:
        group = ProtectionGroup.objects.select_for_update().get(pk=existing.pk)
    for name in POLICY_FIELDS:
        setattr(group, name, getattr(policy, name))
    group.online_protection = False  # not offered until online protection is configured
    group.planned_daily_churn_percent = policy.daily_churn_percent
    group.save()
    return group


def _apply_members(
    group: ProtectionGroup, policy: DraftPolicy
) -> tuple[list[VirtualMachine], list[VirtualMachine]]:
    """Add and remove members; returns (added, removed). Checked again under row locks,
    because the wizard's checks ran in earlier requests."""
    wanted = set(policy.vm_ids)
    # Locking the VM rows serializes two wizards that pick the same VM.
    machines = list(VirtualMachine.objects.select_for_update().filter(pk__in=wanted).order_by("pk"))
    if len(machines) != len(wanted):
        raise DraftIncomplete("members", "A selected virtual machine no longer exists; select again.")
    sources = {
        source.vm_id: source
        for source in ProtectedDataSource.objects.filter(vm__in=machines).select_related("group", "vm")
    }
    # A stopped source is only history: the VM may be protected again, anywhere.
    stopped = {vm_id for vm_id, s in sources.items() if s.replica_state == ReplicaState.STOPPED}
    taken = [
        f"{s.vm} (in {s.group})"
        for s in sources.values()
        if s.group_id != group.pk and s.vm_id not in stopped
    ]
    if taken:
        raise DraftIncomplete(
            "members", f"Already protected in another protection group: {', '.join(sorted(taken))}."
        )
    ProtectedDataSource.objects.filter(vm_id__in=stopped).delete()
    method = policy.replica_creation_method
    added = [vm for vm in machines if vm.pk not in sources or vm.pk in stopped]
    ProtectedDataSource.objects.bulk_create(
        ProtectedDataSource(group=group, vm=vm, replica_state=INITIAL_STATE[ReplicaCreationMethod(method)])
        for vm in added
    )
    removed = [
        source.vm
        for source in group.members.select_related("vm").exclude(vm_id__in=wanted)
        if source.replica_state != ReplicaState.STOPPED
    ]
    return added, removed


def _start_replicas(
    group: ProtectionGroup, added: list[VirtualMachine], policy: DraftPolicy, user: Any
) -> list[Job]:
    if not added:
        return []  # the replica choice only concerns new members; keep the group's own
    method = policy.replica_creation_method
    waiting = group.members.filter(replica_state=ReplicaState.PENDING).exclude(vm__in=added).exists()
    # The scheduler starts pending members from these two fields: members still waiting
    # for a scheduled replica must not be stranded by a later "now" or "manual" addition.
    if method == ReplicaCreationMethod.SCHEDULED or not waiting:
        group.replica_creation_method = method
        scheduled = method == ReplicaCreationMethod.SCHEDULED
        group.replica_creation_at = policy.replica_creation_at if scheduled else None
    if method == ReplicaCreationMethod.MANUAL:
        group.manual_import_path = policy.manual_import_path
    group.save(update_fields=["replica_creation_method", "replica_creation_at", "manual_import_path"])
    if method == ReplicaCreationMethod.SCHEDULED:
        return []
    parameters = {"import_path": policy.manual_import_path} if method == ReplicaCreationMethod.MANUAL else {}
    return [
        Job.submit(JobKind.INITIAL_REPLICA, vm=vm, group=group, requested_by=user, parameters=parameters)
        for vm in added
    ]


# --------------------------------------------------------------------------- on demand


def _active_source(vm: VirtualMachine) -> ProtectedDataSource:
    source = ProtectedDataSource.objects.select_related("group").filter(vm=vm).first()
    if source is None or source.replica_state == ReplicaState.STOPPED:
        raise ProtectionError(f"{vm} is not protected.")
    return source


def run_vm_job(vm: VirtualMachine, kind: str, user: Any, *, request: HttpRequest | None = None) -> Job:
    """Start an on-demand backup of a protected VM."""
    if kind not in VM_JOB_KINDS:
        raise ProtectionError(f"{kind!r} is not an on-demand backup.")
    with transaction.atomic():
        source = _active_source(vm)
        running = Job.objects.active().filter(vm=vm, kind=kind).first()
        if running is not None:
            # A double click must not queue the same backup twice.
            raise ProtectionError(
                f"A {running.get_kind_display().lower()} of {vm} is already queued or running "
                f"(job #{running.pk})."
            )
        job = Job.submit(kind, vm=vm, group=source.group, requested_by=user)
        AuditEvent.record(
            f"vm.{kind}", request=request, user=user, obj=vm, group=source.group.name, job=job.pk
        )
    return job


def stop_vm_protection(
    vm: VirtualMachine, keep_data: bool, user: Any, *, request: HttpRequest | None = None
) -> Job:
    with transaction.atomic():
        source = _active_source(vm)
        if Job.objects.active().filter(vm=vm, kind=JobKind.STOP_PROTECTION).exists():
            raise ProtectionError(f"Stopping the protection of {vm} is already under way.")
        job = Job.submit(
            JobKind.STOP_PROTECTION,
            vm=vm,
            group=source.group,
            requested_by=user,
            parameters={"keep_data": keep_data},
        )
        AuditEvent.record(
            "vm.stop_protection",
            request=request,
            user=user,
            obj=vm,
            group=source.group.name,
            keep_data=keep_data,
            job=job.pk,
        )
    return job


def group_consistency_check(
    group: ProtectionGroup, user: Any, *, request: HttpRequest | None = None
) -> list[Job]:
    """One consistency check per member; members already checking are left alone."""
    with transaction.atomic():
        members = list(group.members.select_related("vm").exclude(replica_state=ReplicaState.STOPPED))
        if not members:
            raise ProtectionError(f"{group} has no members to check.")
        busy = set(
            Job.objects.active()
            .filter(kind=JobKind.CONSISTENCY_CHECK, vm__in=[m.vm for m in members])
            .values_list("vm_id", flat=True)
        )
        jobs = [
            Job.submit(JobKind.CONSISTENCY_CHECK, vm=member.vm, group=group, requested_by=user)
            for member in members
            if member.vm_id not in busy
        ]
        AuditEvent.record(
            "group.consistency_check", request=request, user=user, obj=group, jobs=[job.pk for job in jobs]
        )
    return jobs


def stop_group_protection(
    group: ProtectionGroup, keep_data: bool, user: Any, *, request: HttpRequest | None = None
) -> Job:
    """One job for the group: its handler stops every member and then removes the group."""
    with transaction.atomic():
        if Job.objects.active().filter(group=group, vm=None, kind=JobKind.STOP_PROTECTION).exists():
            raise ProtectionError(f"Stopping the protection of {group} is already under way.")
        job = Job.submit(
            JobKind.STOP_PROTECTION, group=group, requested_by=user, parameters={"keep_data": keep_data}
        )
        AuditEvent.record(
            "group.stop_protection", request=request, user=user, obj=group, keep_data=keep_data, job=job.pk
        )
    return job
