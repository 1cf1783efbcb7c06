"""Wizard drafts: what a user entered in a multi-step wizard, kept between steps.

Both wizards (a protection group's, a recovery's) keep their state in a table of
their own (each draft points at different things), built on this one abstract model:
one owner, the current step, the input as JSON, and an expiry. So back/next never
loses input, a half-finished wizard survives a closed browser tab, and an abandoned
one does not stay forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Self

from django.conf import settings
from django.db import models
from django.utils import timezone

# A draft nobody touched for this long is gone: the next draft of its kind removes it.
DRAFT_LIFETIME = timedelta(days=30)


def expiry_cutoff() -> datetime:
    """Drafts last updated before this instant have expired."""
    return timezone.now() - DRAFT_LIFETIME


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters removed from every string in it.

    Drafts keep input as typed, before it is validated; PostgreSQL's JSONB cannot hold
    a NUL character, so one in any field would make the draft unsavable. The form still
    sees (and refuses) what was posted; only the kept copy drops the NUL.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value


class WizardDraftQuerySet(models.QuerySet[Any]):
    def owned_by(self, user: Any) -> Self:
        """The user's drafts that have not expired; nobody ever sees another's draft."""
        return self.filter(user_id=user.pk or 0, updated__gte=expiry_cutoff())

    def expired(self) -> Self:
        return self.filter(updated__lt=expiry_cutoff())


# Declared here rather than with as_manager() in the class body: mypy's Django plugin
# cannot resolve the related managers of subclasses otherwise.
WizardDraftManager = models.Manager.from_queryset(WizardDraftQuerySet)


class WizardDraft(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # The step's key; a concrete draft narrows it with its wizard's choices.
    step = models.CharField(max_length=16, blank=True)
    # The wizard's input, one entry per step or section, as the wizard defines.
    data = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)

    objects = WizardDraftManager()

    class Meta:
        abstract = True
        ordering = ["-updated"]

    @classmethod
    def start(cls, user: Any, **fields: Any) -> Self:
        """A new draft for ``user``; expired drafts of this kind are removed on the way."""
        cls.objects.expired().delete()
        return cls.objects.create(user=user, **fields)

    @property
    def expires_at(self) -> datetime:
        return self.updated + DRAFT_LIFETIME

    def section(self, name: str) -> dict[str, Any]:
        """One part of the saved input, as a fresh dict ({} when missing or not a dict)."""
        value = self.data.get(name)
        return dict(value) if isinstance(value, dict) else {}

    def save_progress(self, step: str | None = None, **sections: Any) -> None:
        """Store the current step and input (only those columns, and ``updated``)."""
        if step is not None:
            self.step = step
        self.data.update(without_nul(sections))
        self.save(update_fields=["step", "data", "updated"])

    def discard(self) -> None:
        self.delete()
