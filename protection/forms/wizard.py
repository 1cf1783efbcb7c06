"""The protection group wizard: one form per step, and the draft's input format.

A draft keeps each step's raw input (``draft.data[step key]``, strings and lists as
posted) rather than cleaned values: a step shown again binds that input, so what
the user typed comes back exactly, including input that was refused. Cleaning
happens again at the end (:func:`clean_draft`), because the world may have changed
between steps (a VM protected by someone else, a folder removed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.utils import timezone

from backupsite.core.timeofday import parse_time_of_day
from protection.forms.fields import DaysField, TimeListField, TimeOfDayField
from protection.models import (
    MAX_RETENTION_DAYS,
    SYNC_FREQUENCY_CHOICES,
    ProtectionGroup,
    ProtectionGroupDraft,
    ReplicaCreationMethod,
    ReplicaState,
    VirtualMachine,
)
from protection.services.capacity import DEFAULT_DAILY_CHURN_PERCENT
from protection.services.groups import (
    JUST_BEFORE_RECOVERY_POINT,
    Allocation,
    DraftIncomplete,
    DraftPolicy,
    estimate_allocation,
)
from protection.services.hosts import PrerequisiteReport, check_prerequisites
from storage.models import Datastore

MAX_GFS_KEEP = 1000
DEFAULT_RETENTION_DAYS = 5


class WizardForm(forms.Form):
    def __init__(self, *args: Any, draft: ProtectionGroupDraft, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draft = draft

    @classmethod
    def raw_input(cls, data: QueryDict) -> dict[str, Any]:
        """The part of a POST this step keeps in the draft: its own fields, as posted."""
        kept: dict[str, Any] = {}
        for name, field in cls.base_fields.items():
            if field.disabled:
                continue
            if isinstance(field, forms.MultipleChoiceField):
                kept[name] = data.getlist(name)
            elif name in data:
                kept[name] = data.get(name)
        return kept


def saved_vm_ids(draft: ProtectionGroupDraft) -> list[int]:
    raw = draft.data.get("members", {}).get("vms", [])
    return sorted({int(value) for value in raw if str(value).isdigit()})


def current_member_ids(draft: ProtectionGroupDraft) -> set[int]:
    if draft.group is None:
        return set()
    members = draft.group.members.exclude(replica_state=ReplicaState.STOPPED)
    return set(members.values_list("vm_id", flat=True))


# --------------------------------------------------------------------------- 1. members


@dataclass(frozen=True)
class MemberRow:
    vm: VirtualMachine
    checked: bool
    in_group: bool  # already a member of the group being modified
    other_group: str  # name of the group that protects it elsewhere
    report: PrerequisiteReport | None

    @property
    def blocked_reasons(self) -> list[str]:
        if self.other_group:
            return [f"Already protected in group {self.other_group}."]
        return self.report.blocking if self.report is not None else []


class MembersForm(WizardForm):
    vms = forms.TypedMultipleChoiceField(
        coerce=int,
        label="Virtual machines",
        error_messages={"required": "Select at least one virtual machine to protect."},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        members = current_member_ids(self.draft)
        # Members that vanished from their host stay listed so a modify can keep or drop them.
        machines = VirtualMachine.objects.present() | VirtualMachine.objects.filter(pk__in=members)
        self.machines = list(
            machines.select_related("host", "cluster", "data_source__group").order_by("name", "pk")
        )
        self.members = members
        field = self.fields["vms"]
        assert isinstance(field, forms.TypedMultipleChoiceField)
        field.choices = [(vm.pk, vm.name) for vm in self.machines]
        self._reports: dict[int, PrerequisiteReport] | None = None

    def _other_group(self, vm: VirtualMachine) -> str:
        source = getattr(vm, "data_source", None)
        if source is None or source.replica_state == ReplicaState.STOPPED:
            return ""
        return "" if self.draft.group_id == source.group_id else source.group.name

    def reports(self) -> dict[int, PrerequisiteReport]:
        """Findings of the VMs that could be added (existing members are not re-checked:
        a host that is down must not stop anyone from editing a group's schedule)."""
        if self._reports is None:
            self._reports = check_prerequisites(
                vm for vm in self.machines if vm.pk not in self.members and not self._other_group(vm)
            )
        return self._reports

    def clean_vms(self) -> list[int]:
        wanted = set(self.cleaned_data["vms"])
        chosen = [vm for vm in self.machines if vm.pk in wanted]
        errors = [
            f"{vm} is already protected in group {self._other_group(vm)}."
            for vm in chosen
            if self._other_group(vm)
        ]
        reports = self.reports()
        for vm in chosen:
            report = reports.get(vm.pk)
            if report is not None and report.blocking:
                errors.append(f"{vm} cannot be protected: {' '.join(report.blocking)}")
        if errors:
            raise ValidationError(errors)
        return sorted(wanted)

    def sections(self) -> list[tuple[str, list[MemberRow]]]:
        """VMs grouped by cluster, or by host for standalone hosts, for the page."""
        selected = {str(value) for value in (self["vms"].value() or [])}
        reports = self.reports()
        grouped: dict[str, list[MemberRow]] = {}
        for vm in self.machines:
            label = f"Cluster {vm.cluster}" if vm.cluster_id else f"Host {vm.host}"
            grouped.setdefault(label, []).append(
                MemberRow(
                    vm=vm,
                    checked=str(vm.pk) in selected,
                    in_group=vm.pk in self.members,
                    other_group=self._other_group(vm),
                    report=reports.get(vm.pk),
                )
            )
        return sorted(grouped.items())


# --------------------------------------------------------------------------- 2. method


class MethodForm(WizardForm):
    name = forms.CharField(label="Group name", max_length=255)
    description = forms.CharField(
        label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    short_term_on_disk = forms.BooleanField(
        label="Short-term protection on disk",
        initial=True,
        error_messages={
            "required": "Short-term protection on disk is required: it holds the replica and recovery points."
        },
    )
    online_protection = forms.BooleanField(
        label="Online protection",
        required=False,
        disabled=True,
        help_text="Available once online protection is configured.",
    )

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        clash = ProtectionGroup.objects.filter(name__iexact=name)
        if self.draft.group_id is not None:
            clash = clash.exclude(pk=self.draft.group_id)
        if clash.exists():
            raise ValidationError(f"A protection group named “{name}” already exists; choose another name.")
        return name


# --------------------------------------------------------------------------- 3. goals


def _keep_field(label: str) -> forms.IntegerField:
    return forms.IntegerField(label=label, min_value=0, max_value=MAX_GFS_KEEP, initial=0, required=False)


class GoalsForm(WizardForm):
    retention_days = forms.IntegerField(
        label="Retention range (days)",
        initial=DEFAULT_RETENTION_DAYS,
        min_value=1,
        max_value=MAX_RETENTION_DAYS,
        error_messages={
            "min_value": f"The retention range is 1 to {MAX_RETENTION_DAYS} days.",
            "max_value": f"The retention range is 1 to {MAX_RETENTION_DAYS} days.",
        },
    )
    sync_frequency_minutes = forms.ChoiceField(
        label="Synchronization frequency",
        initial="15",
        choices=[
            *((str(minutes), label) for minutes, label in SYNC_FREQUENCY_CHOICES),
            (JUST_BEFORE_RECOVERY_POINT, "Just before a recovery point"),
        ],
    )
    recovery_point_times = TimeListField(
        label="Recovery point times",
        initial="20:00",
        help_text="Times of day, HH:MM, separated by commas.",
        error_messages={"required": "Enter at least one time of day for recovery points."},
    )
    recovery_point_days = DaysField(
        label="Recovery point days",
        initial=list(range(7)),
        error_messages={"required": "Choose at least one day of the week for recovery points."},
    )
    express_full_times = TimeListField(
        label="Express full backup times", required=False, help_text="Leave empty for none."
    )
    express_full_days = DaysField(label="Express full backup days", required=False)
    keep_daily = _keep_field("Daily recovery points kept")
    keep_weekly = _keep_field("Weekly recovery points kept")
    keep_monthly = _keep_field("Monthly recovery points kept")
    keep_yearly = _keep_field("Yearly recovery points kept")

    def clean_sync_frequency_minutes(self) -> int | None:
        value = self.cleaned_data["sync_frequency_minutes"]
        return None if value == JUST_BEFORE_RECOVERY_POINT else int(value)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            if name in cleaned and cleaned[name] is None:
                cleaned[name] = 0
        times, days = cleaned.get("express_full_times"), cleaned.get("express_full_days")
        if times is not None and days is not None and bool(times) != bool(days):
            self.add_error(
                "express_full_days" if times else "express_full_times",
                "An express full backup schedule needs both times of day and days of the week.",
            )
        return cleaned


# --------------------------------------------------------------------------- 4. allocation


@dataclass(frozen=True)
class DatastoreChoice:
    """A datastore as the allocation step offers it: with whom it would be shared."""

    datastore: Datastore
    groups: list[str]  # the groups already on it, this group left out

    @property
    def offered(self) -> bool:
        """A datastore without colocation serves one group only."""
        return self.datastore.colocate or not self.groups

    @property
    def label(self) -> str:
        if not self.datastore.colocate:
            return f"{self.datastore.name} (dedicated to one group)"
        if self.groups:
            return f"{self.datastore.name} (shared with {', '.join(self.groups)})"
        return f"{self.datastore.name} (colocation on, no group yet)"


class AllocationForm(WizardForm):
    datastore = forms.ModelChoiceField(
        label="Datastore",
        queryset=Datastore.objects.all(),
        empty_label=None,
        error_messages={"required": "Choose the datastore that will hold this group's replicas."},
    )
    daily_churn_percent = forms.FloatField(
        label="Daily change rate (%)",
        initial=DEFAULT_DAILY_CHURN_PERCENT,
        min_value=0,
        max_value=100,
        help_text="Share of the data expected to change each day; the plan until backups measure it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = self._datastore_choices()
        field = self.fields["datastore"]
        assert isinstance(field, forms.ModelChoiceField)
        if self.draft.group is not None:
            # Existing recovery points live in the group's datastore; moving them is not a wizard step.
            field.disabled = True
            field.initial = self.draft.group.datastore_id
            field.help_text = "The datastore of an existing group does not change."
        else:
            offered = [choice for choice in self.choices if choice.offered]
            # Only the choices shown; a datastore posted anyway is refused in clean_datastore
            # with the reason (the queryset still knows it).
            field.choices = [(choice.datastore.pk, choice.label) for choice in offered]
            field.initial = offered[0].datastore.pk if offered else None
            field.help_text = (
                "A shared datastore holds several groups (identical data is stored once); "
                "a datastore with colocation off serves one group and is not offered once it has one."
            )

    def _datastore_choices(self) -> list[DatastoreChoice]:
        names: dict[int, list[str]] = {}
        others = ProtectionGroup.objects.order_by("name")
        if self.draft.group_id is not None:
            others = others.exclude(pk=self.draft.group_id)
        for datastore_id, name in others.values_list("datastore_id", "name"):
            names.setdefault(datastore_id, []).append(name)
        datastores = Datastore.objects.all()
        return [DatastoreChoice(datastore, names.get(datastore.pk, [])) for datastore in datastores]

    def clean_datastore(self) -> Datastore:
        datastore: Datastore = self.cleaned_data["datastore"]
        choice = next((c for c in self.choices if c.datastore.pk == datastore.pk), None)
        if self.draft.group is None and choice is not None and not choice.offered:
            raise ValidationError(
                f"Datastore {datastore} is dedicated to group {', '.join(choice.groups)} "
                "(colocation is off); choose another datastore, or turn colocation on for it "
                "on its storage page."
            )
        if datastore.disk_space() is None:
            raise ValidationError(
                f"Datastore {datastore} ({datastore.path}) is not reachable: its volume cannot be read. "
                "Choose another datastore or repair its storage."
            )
        return datastore

    def allocation(self) -> Allocation:
        """The estimate for what is on the page now, valid or not yet."""
        datastore = None
        pk = self["datastore"].value()
        if pk not in (None, "") and str(pk).isdigit():
            datastore = Datastore.objects.filter(pk=int(pk)).first()
        try:
            churn = float(self["daily_churn_percent"].value())
        except (TypeError, ValueError):
            churn = DEFAULT_DAILY_CHURN_PERCENT
        if not math.isfinite(churn):  # "nan" and "inf" parse as floats
            churn = DEFAULT_DAILY_CHURN_PERCENT
        raw_days = str(self.draft.data.get("goals", {}).get("retention_days", DEFAULT_RETENTION_DAYS))
        days = int(raw_days) if raw_days.isdigit() else DEFAULT_RETENTION_DAYS
        return estimate_allocation(
            saved_vm_ids(self.draft),
            min(max(days, 1), MAX_RETENTION_DAYS),
            min(max(churn, 0.0), 100.0),
            datastore,
            group=self.draft.group,
        )


# --------------------------------------------------------------------------- 5. replica


class ReplicaForm(WizardForm):
    replica_creation_method = forms.ChoiceField(
        label="Create the replica",
        choices=ReplicaCreationMethod.choices,
        initial=ReplicaCreationMethod.NOW,
        widget=forms.RadioSelect,
    )
    replica_creation_at = forms.DateTimeField(
        label="Scheduled time",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    manual_import_path = forms.CharField(
        label="Offline media folder on this server",
        required=False,
        max_length=1024,
        help_text="Holds one folder per virtual machine, named like the VM, with its files.",
    )

    @property
    def adds_members(self) -> bool:
        return bool(set(saved_vm_ids(self.draft)) - current_member_ids(self.draft))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        method = cleaned.get("replica_creation_method")
        if self.draft.group is not None and not self.adds_members:
            return cleaned  # the choice only matters for VMs being added
        if method == ReplicaCreationMethod.SCHEDULED:
            at = cleaned.get("replica_creation_at")
            if at is None and "replica_creation_at" not in self.errors:
                self.add_error("replica_creation_at", "Choose when the replica is to be created.")
            elif at is not None and at <= timezone.now():
                self.add_error("replica_creation_at", "The scheduled time must be in the future.")
        if method == ReplicaCreationMethod.MANUAL:
            problem = self._folder_problem(cleaned.get("manual_import_path", "").strip())
            if problem:
                self.add_error("manual_import_path", problem)
            else:
                cleaned["manual_import_path"] = str(Path(cleaned["manual_import_path"].strip()))
        return cleaned

    @staticmethod
    def _folder_problem(path: str) -> str:
        if not path:
            return "Enter the folder on this server that holds the offline media."
        folder = Path(path)
        if not folder.is_absolute():
            return f"“{path}” is not an absolute path on this server."
        if not folder.exists():
            return f"The folder {path} does not exist on this server."
        if not folder.is_dir():
            return f"{path} is not a folder."
        if not os.access(folder, os.R_OK | os.X_OK):
            return f"The folder {path} cannot be read by the server."
        return ""


# --------------------------------------------------------------------------- 6. consistency


class ConsistencyForm(WizardForm):
    consistency_check_if_inconsistent = forms.BooleanField(
        label="Run a consistency check when a replica becomes inconsistent", required=False, initial=True
    )
    consistency_check_daily_at = TimeOfDayField(
        label="Also run a consistency check every day at",
        required=False,
        help_text="HH:MM; leave empty for no daily check.",
    )

    def clean_consistency_check_daily_at(self) -> time | None:
        value = self.cleaned_data["consistency_check_daily_at"]
        return parse_time_of_day(value) if value else None


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    number: int
    key: str
    title: str
    form_class: type[WizardForm] | None  # None: the summary

    @property
    def url_name(self) -> str:
        return f"protection:wizard-{self.key}"

    @property
    def template(self) -> str:
        return f"protection/wizard/_{self.key}.html"


STEPS = [
    Step(1, "members", "Select group members", MembersForm),
    Step(2, "method", "Data protection method", MethodForm),
    Step(3, "goals", "Short-term goals", GoalsForm),
    Step(4, "allocation", "Review disk allocation", AllocationForm),
    Step(5, "replica", "Replica creation method", ReplicaForm),
    Step(6, "consistency", "Consistency check options", ConsistencyForm),
    Step(7, "summary", "Summary", None),
]
STEP_BY_KEY = {step.key: step for step in STEPS}


def step_form(step: Step, draft: ProtectionGroupDraft, data: QueryDict | None = None) -> WizardForm:
    """The step's form: bound to ``data`` (a POST), else to the saved input, else unbound."""
    assert step.form_class is not None
    if data is not None:
        return step.form_class(data, draft=draft)
    if step.key in draft.data:
        return step.form_class(draft.data[step.key], draft=draft)
    return step.form_class(draft=draft)


def first_error(form: forms.Form) -> str:
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        return f"{label}: {errors[0]}" if label else str(errors[0])
    return "Check this step."


def clean_draft(draft: ProtectionGroupDraft) -> DraftPolicy:
    """Every step cleaned again; DraftIncomplete names the first step to fix."""
    cleaned: dict[str, Any] = {}
    for step in STEPS:
        if step.form_class is None:
            continue
        if step.key not in draft.data:
            raise DraftIncomplete(step.key, f"Step {step.number}, {step.title}, has not been completed.")
        form = step_form(step, draft)
        if not form.is_valid():
            raise DraftIncomplete(step.key, f"Step {step.number}, {step.title}: {first_error(form)}")
        cleaned.update(form.cleaned_data)
    cleaned.pop("online_protection", None)
    return DraftPolicy(vm_ids=cleaned.pop("vms"), **cleaned)
