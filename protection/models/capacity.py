"""Capacity samples: a datastore's usage and its volume's space, taken hourly, so the
capacity pages can fit the growth and say when the volume fills (see docs/capacity.md)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class CapacitySample(models.Model):
    datastore = models.ForeignKey(
        "storage.Datastore", on_delete=models.CASCADE, related_name="capacity_samples"
    )
    taken_at = models.DateTimeField(default=timezone.now, db_index=True)
    # What the datastore row said (a running total between verifications) ...
    used_bytes = models.BigIntegerField()
    # ... and what the volume that holds it said: other files on the volume fill it too.
    volume_total_bytes = models.BigIntegerField()
    volume_used_bytes = models.BigIntegerField()
    volume_free_bytes = models.BigIntegerField()

    class Meta:
        ordering = ["datastore", "taken_at"]
        indexes = [models.Index(fields=["datastore", "taken_at"], name="capacity_sample_series")]

    def __str__(self) -> str:
        return f"{self.datastore_id} @ {self.taken_at:%Y-%m-%d %H:%M}"
