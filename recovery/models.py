"""Recovery: the wizard's saved input and what each recovery did, item by item.

A recovery itself is a ``protection.Job`` of kind ``recovery`` (so it shares the
job runner, the VM lock and the monitoring pages); its parameters say what and
where, and ``RecoveryItemResult`` rows say how each item went.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse
from django.utils import timezone

from backupsite.core.drafts import WizardDraft


class RecoveryType(models.TextChoices):
    ORIGINAL = "original", "Recover to original instance"
    ALTERNATE = "alternate", "Recover as virtual machine to any host"
    ITEMS = "items", "Copy to a network folder (item-level recovery)"


class WizardStep(models.TextChoices):
    REVIEW = "review", "Review selection"
    TYPE = "type", "Recovery type"
    TARGET = "target", "Destination"
    ITEMS = "items", "Items to recover"
    OPTIONS = "options", "Recovery options"
    SUMMARY = "summary", "Summary"


# The steps each recovery type walks through, in order.
STEPS: dict[str, tuple[str, ...]] = {
    "": (WizardStep.REVIEW, WizardStep.TYPE),
    RecoveryType.ORIGINAL: (
        WizardStep.REVIEW,
        WizardStep.TYPE,
        WizardStep.TARGET,
        WizardStep.OPTIONS,
        WizardStep.SUMMARY,
    ),
    RecoveryType.ALTERNATE: (
        WizardStep.REVIEW,
        WizardStep.TYPE,
        WizardStep.TARGET,
        WizardStep.OPTIONS,
        WizardStep.SUMMARY,
    ),
    RecoveryType.ITEMS: (
        WizardStep.REVIEW,
        WizardStep.TYPE,
        WizardStep.ITEMS,
        WizardStep.TARGET,
        WizardStep.OPTIONS,
        WizardStep.SUMMARY,
    ),
}


class RecoveryDraft(WizardDraft):
    """The recovery wizard's state between steps. ``data`` holds one section per
    answered step (type, target, destination, items, options) and, under "input",
    what was typed on a step that did not validate yet."""

    point = models.ForeignKey(
        "protection.RecoveryPoint", on_delete=models.CASCADE, related_name="recovery_drafts"
    )
    step = models.CharField(max_length=16, choices=WizardStep.choices, default=WizardStep.REVIEW)
    # Set once the recovery is submitted; the draft then only points at its job.
    job = models.OneToOneField(
        "backupsite.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="recovery_draft"
    )

    def __str__(self) -> str:
        return f"Recovery draft {self.pk} of {self.point}"

    def get_absolute_url(self) -> str:
        return reverse("recovery:wizard", args=[self.pk])

    @property
    def recovery_type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def steps(self) -> tuple[str, ...]:
        return STEPS.get(self.recovery_type, STEPS[""])


class ItemKind(models.TextChoices):
    FILE = "file", "File"
    FOLDER = "folder", "Folder"
    VOLUME = "volume", "Volume image"
    DISK = "disk", "Virtual disk"
    VM_FILE = "vm_file", "VM file"


class ItemState(models.TextChoices):
    COPIED = "copied", "Recovered"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class RecoveryItemResult(models.Model):
    """One line of a recovery's result table: an item, where it went, how it went."""

    job = models.ForeignKey("backupsite.Job", on_delete=models.CASCADE, related_name="recovery_items")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=ItemKind.choices)
    source = models.CharField(max_length=2048, help_text="Where the item is in the recovery point")
    destination = models.CharField(max_length=2048, blank=True)
    state = models.CharField(max_length=16, choices=ItemState.choices)
    size_bytes = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "position", "pk"]

    def __str__(self) -> str:
        return f"{self.source}: {self.get_state_display()}"
