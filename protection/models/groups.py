"""Protection groups, their policy, the VMs in them, and the recovery points kept."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from backupsite.core.drafts import WizardDraft
from protection.models.inventory import VirtualMachine

# MABS offers synchronization every 15 minutes up to once a day.
SYNC_FREQUENCY_CHOICES = [
    (15, "Every 15 minutes"),
    (30, "Every 30 minutes"),
    (60, "Every hour"),
    (120, "Every 2 hours"),
    (240, "Every 4 hours"),
    (360, "Every 6 hours"),
    (720, "Every 12 hours"),
    (1440, "Every 24 hours"),
]
MAX_RETENTION_DAYS = 448  # the MABS/DPM short-term disk retention ceiling


class ReplicaCreationMethod(models.TextChoices):
    NOW = "now", "Over the network, now"
    SCHEDULED = "scheduled", "Over the network, at a scheduled time"
    MANUAL = "manual", "Manually (import from offline media)"


class ProtectionGroup(models.Model):
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    datastore = models.ForeignKey(
        "storage.Datastore", on_delete=models.PROTECT, related_name="protection_groups"
    )
    short_term_on_disk = models.BooleanField(default=True)
    online_protection = models.BooleanField(default=False)

    # The daily change rate the wizard planned with (percent of the data); capacity
    # planning uses it until the group's own backups measure the real one.
    planned_daily_churn_percent = models.FloatField(
        default=5.0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )

    retention_days = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)]
    )
    # Long-term (GFS) retention on top of the range; 0 keeps none beyond the range.
    keep_daily = models.PositiveIntegerField(default=0)
    keep_weekly = models.PositiveIntegerField(default=0)
    keep_monthly = models.PositiveIntegerField(default=0)
    keep_yearly = models.PositiveIntegerField(default=0)

    # None means "just before a recovery point" (no separate synchronizations).
    sync_frequency_minutes = models.PositiveIntegerField(
        null=True, blank=True, choices=SYNC_FREQUENCY_CHOICES
    )
    recovery_point_times = models.JSONField(default=list, help_text="Times of day, 'HH:MM'")
    recovery_point_days = models.JSONField(default=list, help_text="Days of week, 0=Monday .. 6=Sunday")
    express_full_times = models.JSONField(default=list)
    express_full_days = models.JSONField(default=list)

    replica_creation_method = models.CharField(
        max_length=16, choices=ReplicaCreationMethod.choices, default=ReplicaCreationMethod.NOW
    )
    replica_creation_at = models.DateTimeField(null=True, blank=True)
    manual_import_path = models.CharField(max_length=1024, blank=True)

    consistency_check_if_inconsistent = models.BooleanField(default=True)
    consistency_check_daily_at = models.TimeField(null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("protection:group-detail", args=[self.pk])


class ReplicaState(models.TextChoices):
    PENDING = "pending", "Initial replication pending"
    CREATING = "creating", "Creating replica"
    AWAITING_MEDIA = "awaiting_media", "Waiting for manual replica import"
    OK = "ok", "OK"
    INCONSISTENT = "inconsistent", "Replica is inconsistent"
    STOPPED = "stopped", "Protection stopped"
    # Rebuilt from a datastore (import-datastore): the points are cataloged, but no backup
    # runs until the host answers again (a successful inventory), see services/inventory.py.
    IMPORTED = "imported", "Imported: waiting for the host"


class ProtectedDataSource(models.Model):
    """One VM under protection: MABS calls this a data source with a replica."""

    group = models.ForeignKey(ProtectionGroup, on_delete=models.PROTECT, related_name="members")
    # One-to-one: a VM can be in one protection group only.
    vm = models.OneToOneField(VirtualMachine, on_delete=models.PROTECT, related_name="data_source")
    replica_state = models.CharField(
        max_length=16, choices=ReplicaState.choices, default=ReplicaState.PENDING
    )
    inconsistency_reason = models.TextField(blank=True)
    # Opaque change-tracking reference ids per disk from the last successful backup.
    change_tracking_refs = models.JSONField(default=dict, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_recovery_point_at = models.DateTimeField(null=True, blank=True)
    last_express_full_at = models.DateTimeField(null=True, blank=True)
    last_consistency_check_at = models.DateTimeField(null=True, blank=True)
    added = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["group", "vm__name"]

    def __str__(self) -> str:
        return f"{self.vm} in {self.group}"


class Consistency(models.TextChoices):
    APPLICATION = "application", "Application consistent"
    FILE = "file", "File-system consistent"
    CRASH = "crash", "Crash consistent"


class RecoveryPointKind(models.TextChoices):
    INITIAL = "initial", "Initial replica"
    SYNC = "sync", "Synchronization"
    RECOVERY_POINT = "recovery_point", "Recovery point"
    EXPRESS_FULL = "express_full", "Express full backup"
    CONSISTENCY_CHECK = "consistency_check", "Consistency check"


class RecoveryPointLocation(models.TextChoices):
    DISK = "disk", "Disk"
    ONLINE = "online", "Online"


# A point that can be offered as a recovery source: neither damaged, nor missing from
# its datastore, nor removed. A Q so joins (VM lists) can use the same rule.
USABLE_POINT = models.Q(damaged=False, missing=False, deleted_at__isnull=True)

POINT_MISSING = (
    "This recovery point is missing from its datastore (the datastore no longer holds it) "
    "and cannot be recovered."
)
POINT_DAMAGED = "This recovery point is damaged (verify found damaged data) and cannot be recovered."
POINT_REMOVED = "This recovery point was removed and cannot be recovered."


class RecoveryPointQuerySet(models.QuerySet["RecoveryPoint"]):
    def usable(self) -> RecoveryPointQuerySet:
        return self.filter(USABLE_POINT)


class RecoveryPoint(models.Model):
    # The engine's point id: the datastore is the source of truth, this row is its catalog entry.
    point_id = models.CharField(max_length=64)
    datastore = models.ForeignKey(
        "storage.Datastore", on_delete=models.PROTECT, related_name="recovery_points"
    )
    vm = models.ForeignKey(VirtualMachine, on_delete=models.PROTECT, related_name="recovery_points")
    group = models.ForeignKey(
        ProtectionGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="recovery_points"
    )
    created = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=24, choices=RecoveryPointKind.choices)
    consistency = models.CharField(max_length=16, choices=Consistency.choices)
    location = models.CharField(
        max_length=8, choices=RecoveryPointLocation.choices, default=RecoveryPointLocation.DISK
    )
    size_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0, help_text="New data this point added")
    verified_at = models.DateTimeField(null=True, blank=True)
    damaged = models.BooleanField(default=False)
    # Set when the datastore (the right one: its id matched) does not hold this point:
    # found by verify's reconciliation, or by a page that tried to read it.
    missing = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    objects = RecoveryPointQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["datastore", "point_id"], name="point_unique_in_datastore")
        ]

    def __str__(self) -> str:
        return f"{self.vm} @ {self.created:%Y-%m-%d %H:%M}"

    def unavailable_reason(self) -> str:
        """Why this point cannot be recovered from, or "" when it can."""
        if self.deleted_at is not None:
            return POINT_REMOVED
        if self.missing:
            return POINT_MISSING
        if self.damaged:
            return POINT_DAMAGED
        return ""

    def mark_missing(self) -> None:
        self.missing = True
        RecoveryPoint.objects.filter(pk=self.pk).update(missing=True)


class ProtectionGroupDraft(WizardDraft):
    """The create / modify group wizard's input between steps, one entry per step key
    (see ``protection.forms.wizard``)."""

    # Set when the wizard modifies an existing group.
    group = models.ForeignKey(
        ProtectionGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="drafts"
    )
    step = models.CharField(max_length=16, default="members")

    def __str__(self) -> str:
        return f"Draft {self.pk} ({'modify ' + str(self.group) if self.group else 'new group'})"
