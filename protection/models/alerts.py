"""Alerts: failed or inconsistent protection, shown on the dashboard until a later
job succeeds."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class AlertSeverity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Information"


class AlertKind(models.TextChoices):
    BACKUP_FAILED = "backup_failed", "Backup failed"
    REPLICA_INCONSISTENT = "replica_inconsistent", "Replica is inconsistent"
    RECOVERY_FAILED = "recovery_failed", "Recovery failed"
    HOST_UNREACHABLE = "host_unreachable", "Host unreachable"
    DATASTORE_DAMAGED = "datastore_damaged", "Datastore damage found"
    DATASTORE_UNAVAILABLE = "datastore_unavailable", "Datastore not available"
    STORAGE_LOW = "storage_low", "Low free space"
    VOLUME_FILLING = "volume_filling", "Datastore volume filling up"


class AlertQuerySet(models.QuerySet["Alert"]):
    def active(self) -> AlertQuerySet:
        return self.filter(resolved_at__isnull=True)


class Alert(models.Model):
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=AlertSeverity.choices, default=AlertSeverity.CRITICAL)
    message = models.TextField()
    vm = models.ForeignKey(
        "protection.VirtualMachine", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    group = models.ForeignKey(
        "protection.ProtectionGroup", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    host = models.ForeignKey(
        "protection.Host", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    datastore = models.ForeignKey(
        "storage.Datastore", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    job = models.ForeignKey(
        "backupsite.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    created = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    occurrences = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=255, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:80]}"

    @classmethod
    def raise_alert(
        cls, kind: str, message: str, *, severity: str = AlertSeverity.CRITICAL, **target: Any
    ) -> Alert:
        """Open an alert, or bump the open one of the same kind for the same target."""
        existing = (
            cls.objects.active().filter(kind=kind, **{k: v for k, v in target.items() if k != "job"}).first()
        )
        now = timezone.now()
        if existing is not None:
            cls.objects.filter(pk=existing.pk).update(
                message=message, last_seen=now, occurrences=models.F("occurrences") + 1, job=target.get("job")
            )
            existing.refresh_from_db()
            return existing
        return cls.objects.create(kind=kind, message=message, severity=severity, **target)

    @classmethod
    def resolve(cls, kinds: list[str], resolution: str, **target: Any) -> int:
        return (
            cls.objects.active()
            .filter(kind__in=kinds, **target)
            .update(resolved_at=timezone.now(), resolution=resolution[:255])
        )
