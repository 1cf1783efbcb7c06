"""The audit log: who did what, to which object, from where."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.http import HttpRequest
from django.utils import timezone


class AuditEvent(models.Model):
    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-timestamp", "-pk"]

    def __str__(self) -> str:
        return (
            f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action} {self.object_repr}"
        )

    @classmethod
    def record(
        cls,
        action: str,
        *,
        request: HttpRequest | None = None,
        user: Any = None,
        obj: models.Model | None = None,
        **details: Any,
    ) -> AuditEvent:
        if request is not None and user is None:
            user = request.user
        if user is not None and not user.is_authenticated:
            user = None
        return cls.objects.create(
            user=user,
            username=user.get_username() if user is not None else "",
            action=action,
            object_type=obj._meta.label_lower if obj is not None else "",
            object_id=str(obj.pk) if obj is not None else "",
            object_repr=str(obj)[:255] if obj is not None else "",
            details=details,
            remote_addr=request.META.get("REMOTE_ADDR") if request is not None else None,
        )
