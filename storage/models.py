"""Datastores: the deduplicated chunk stores on this server's disks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Sum
from django.urls import reverse
from django.utils import timezone

if TYPE_CHECKING:
    from storage.engine import Datastore as EngineDatastore

MIB = 1024 * 1024


class DiskSpace(NamedTuple):
    total: int
    used: int
    free: int


class DatastoreQuerySet(models.QuerySet["Datastore"]):
    def total_used_bytes(self) -> int:
        return int(self.aggregate(total=Sum("used_bytes"))["total"] or 0)


class Datastore(models.Model):
    name = models.CharField(max_length=255, unique=True)
    path = models.CharField(max_length=1024, unique=True)
    chunk_size = models.PositiveIntegerField(
        default=MIB, validators=[MinValueValidator(256 * 1024), MaxValueValidator(4 * MIB)]
    )
    encrypted = models.BooleanField(default=False)
    # Refreshed after every job that writes or removes data, so pages never walk the store.
    used_bytes = models.BigIntegerField(default=0)
    chunk_count = models.BigIntegerField(default=0)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_gc_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    objects = DatastoreQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("storage:datastore-detail", args=[self.pk])

    def disk_space(self) -> DiskSpace | None:
        """Space on the volume that holds the datastore, or None when it is not mounted."""
        path = Path(self.path)
        probe = path if path.exists() else path.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            return None
        return DiskSpace(usage.total, usage.used, usage.free)

    def open_engine(self) -> EngineDatastore:
        """Open the engine datastore, creating it on first use."""
        from storage.engine import Datastore as EngineDatastore
        from storage.engine.errors import DatastoreNotFound

        try:
            return EngineDatastore.open(self.path)
        except DatastoreNotFound:
            return EngineDatastore.create(self.path, chunk_size=self.chunk_size)

    def refresh_usage(self) -> None:
        """Walk the store for exact figures: O(chunks), so only maintenance jobs call it."""
        usage = self.open_engine().usage()
        Datastore.objects.filter(pk=self.pk).update(
            used_bytes=usage.total_bytes, chunk_count=usage.chunk_count
        )

    def add_usage(self, bytes_stored: int) -> None:
        """Cheap running total after a backup; the next verify or GC makes it exact."""
        Datastore.objects.filter(pk=self.pk).update(used_bytes=F("used_bytes") + bytes_stored)
