"""Datastores: the deduplicated chunk stores on this server's disks.

The engine's ``format.json`` is the source of truth for a store's settings (chunk
size, encryption): a row validates with the engine's own rule, hands its settings to
the engine when the store is created, and mirrors format.json whenever it is opened.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Sum
from django.urls import reverse
from django.utils import timezone

from storage.engine import Datastore as EngineDatastore
from storage.engine import DatastoreNotFound, EngineError, Settings, check_chunk_size, read_settings

MIB = 1024 * 1024

# The engine can encrypt a store with a key, but the server has nowhere safe to keep
# one yet (nor a way to enter it): refusing beats a store silently left unencrypted.
ENCRYPTION_UNAVAILABLE = (
    "Encrypted datastores are not available yet: the server has no place to keep a "
    "datastore's encryption key. Create the datastore unencrypted."
)


class EncryptionUnavailable(EngineError):
    """A datastore row asks for encryption the server cannot provide."""


def validate_chunk_size(value: int) -> None:
    try:
        check_chunk_size(value)
    except EngineError as error:
        message = str(error)
        raise ValidationError(f"{message[:1].upper()}{message[1:]}.", code="chunk_size") from error


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
    chunk_size = models.PositiveIntegerField(default=MIB, validators=[validate_chunk_size])
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

    def engine_settings(self) -> Settings | None:
        """What the store's format.json says, or None when there is no store yet."""
        try:
            return read_settings(self.path)
        except DatastoreNotFound:
            return None

    def clean(self) -> None:
        try:
            settings = self.engine_settings()
        except EngineError as error:
            raise ValidationError({"path": str(error)}) from error
        if settings is None:
            if self.encrypted:
                raise ValidationError({"encrypted": ENCRYPTION_UNAVAILABLE})
            return
        # An existing store's settings are fixed by its format.json.
        errors = {}
        if self.chunk_size != settings.chunk_size:
            errors["chunk_size"] = (
                f"The datastore at {self.path} uses {settings.chunk_size // 1024} KiB chunks; "
                "an existing datastore's chunk size cannot change."
            )
        if self.encrypted != settings.encrypted:
            state = "is" if settings.encrypted else "is not"
            errors["encrypted"] = f"The datastore at {self.path} {state} encrypted; that cannot change."
        if errors:
            raise ValidationError(errors)

    def open_engine(self) -> EngineDatastore:
        """Open the engine datastore, creating it on first use with this row's settings.

        The row then mirrors what format.json says, whoever created the store.
        """
        settings = self.engine_settings()
        if settings is not None:
            self._mirror(settings)
            # An encrypted store (made outside the server) fails here with WrongKey: no key.
            return EngineDatastore.open(self.path)
        if self.encrypted:
            raise EncryptionUnavailable(f"Datastore {self}: {ENCRYPTION_UNAVAILABLE}")
        engine = EngineDatastore.create(self.path, chunk_size=self.chunk_size, key=None)
        self._mirror(engine.settings)
        return engine

    def _mirror(self, settings: Settings) -> None:
        if (self.chunk_size, self.encrypted) == (settings.chunk_size, settings.encrypted):
            return
        self.chunk_size, self.encrypted = settings.chunk_size, settings.encrypted
        if self.pk is not None:
            Datastore.objects.filter(pk=self.pk).update(chunk_size=self.chunk_size, encrypted=self.encrypted)

    def refresh_usage(self) -> None:
        """Walk the store for exact figures: O(chunks), so only maintenance jobs call it."""
        usage = self.open_engine().usage()
        Datastore.objects.filter(pk=self.pk).update(
            used_bytes=usage.total_bytes, chunk_count=usage.chunk_count
        )

    def add_usage(self, bytes_stored: int) -> None:
        """Cheap running total after a backup; the next verify or GC makes it exact."""
        Datastore.objects.filter(pk=self.pk).update(used_bytes=F("used_bytes") + bytes_stored)
