"""Datastores: the deduplicated chunk stores on this server's disks.

The engine's ``format.json`` is the source of truth for a store's settings (chunk
size, encryption) and its identity (``uuid``): a row validates with the engine's own
rule, hands its settings to the engine when the store is created, and mirrors
format.json whenever it is opened.

A store is created only on purpose (``Datastore.objects.create_with_store``, the
``create-datastore`` command, first-run ``bootstrap``). Opening never creates one:
a folder without the store the row expects (an unmounted volume, another volume
mounted there, a renamed folder) raises ``DatastoreUnavailable``, so a backup can
never land in a fresh empty store on the root disk.
"""

from __future__ import annotations

import os
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
from storage.engine.format import DEFAULT_CHUNK

MIB = 1024 * 1024

# The engine can encrypt a store with a key, but the server has nowhere safe to keep
# one yet (nor a way to enter it): refusing beats a store silently left unencrypted.
ENCRYPTION_UNAVAILABLE = (
    "Encrypted datastores are not available yet: the server has no place to keep a "
    "datastore's encryption key. Create the datastore unencrypted."
)


class DatastoreUnavailable(EngineError):
    """The store a row names is not usable where it should be; nothing was written.

    The message says what to check. Jobs catch it to fail with an alert.
    """


class DatastoreMissing(DatastoreUnavailable):
    """No store at the path: the folder is missing, empty, or has no format.json."""


class DatastoreReplaced(DatastoreUnavailable):
    """The path holds a store, but not the one this row was created with."""


class DatastoreReadOnly(DatastoreUnavailable):
    """The store is there but its volume cannot be written."""


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

    def create_with_store(self, name: str, path: str, chunk_size: int = DEFAULT_CHUNK) -> Datastore:
        """The explicit way to make a datastore: a new engine store at ``path``, then its row.

        Validates first, so nothing is written for a bad name, path or chunk size; the
        engine refuses a folder that already holds files.
        """
        datastore = self.model(name=name, path=str(Path(path).absolute()), chunk_size=chunk_size)
        datastore.full_clean()
        engine = EngineDatastore.create(datastore.path, chunk_size=chunk_size, key=None)
        datastore.uuid = engine.settings.uuid
        datastore.save(force_insert=True)
        return datastore

    def register_existing(self, name: str, path: str) -> Datastore:
        """A row for a store that already exists at ``path`` (e.g. after the database was
        reset): it takes the store's settings and id from its format.json."""
        settings = read_settings(path)  # DatastoreNotFound when there is none
        return self.create(
            name=name,
            path=str(Path(path).absolute()),
            chunk_size=settings.chunk_size,
            encrypted=settings.encrypted,
            uuid=settings.uuid,
        )


class Datastore(models.Model):
    name = models.CharField(max_length=255, unique=True)
    path = models.CharField(max_length=1024, unique=True)
    # The uuid of the store's format.json: the store this row means. Empty only for rows
    # made before stores were identified; the first open records it.
    uuid = models.CharField(max_length=64, blank=True, default="", editable=False)
    chunk_size = models.PositiveIntegerField(default=MIB, validators=[validate_chunk_size])
    encrypted = models.BooleanField(default=False)
    # Colocation, chosen explicitly: when True several protection groups may share this
    # datastore (identical data across them is stored once); when False it serves one group.
    colocate = models.BooleanField(
        default=True,
        help_text="Allow several protection groups to share this datastore (identical data is stored once).",
    )
    # What the protection groups assigned to this datastore are planned to need (capacity
    # planning writes it); the storage pool refuses a volume too small for it.
    assigned_bytes = models.BigIntegerField(default=0, editable=False)
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

    def open_engine(self, *, write: bool = True) -> EngineDatastore:
        """Open the engine store this row names; never creates one.

        Raises ``DatastoreUnavailable`` when the path does not hold that store, and,
        with ``write`` (backups, verify, GC), when its volume is read-only. Restores
        and browsing only read, so they still work from a volume mounted read-only.
        The row then mirrors what format.json says.
        """
        settings = self._check_store()
        if write and not _writable(self.path):
            raise DatastoreReadOnly(
                f"Datastore {self}: {self.path} is read-only. Is the volume mounted read-write, "
                "and does the server's user own the folder?"
            )
        self._mirror(settings)
        # An encrypted store (made outside the server) fails here with WrongKey: no key.
        return EngineDatastore.open(self.path)

    def _check_store(self) -> Settings:
        """The settings of the store at ``path``, if it is the store this row means."""
        where = f"Datastore {self}: "
        if not os.path.isdir(self.path):
            raise DatastoreMissing(
                f"{where}the folder {self.path} does not exist. Is the volume mounted? "
                "Was the folder renamed or moved?"
            )
        try:
            settings = read_settings(self.path)
        except DatastoreNotFound:
            if not _has_entries(self.path):
                raise DatastoreMissing(
                    f"{where}the folder {self.path} is empty. Is the volume mounted? "
                    "An unmounted mount point looks like this; nothing was written to it."
                ) from None
            raise DatastoreMissing(
                f"{where}{self.path} holds no datastore (its format.json is missing). "
                "Is the right volume mounted there?"
            ) from None
        if not self.uuid:
            # A row from before stores were identified: the store found now is the one it meant.
            self.uuid = settings.uuid
            if self.pk is not None:
                Datastore.objects.filter(pk=self.pk, uuid="").update(uuid=settings.uuid)
        elif settings.uuid != self.uuid:
            raise DatastoreReplaced(
                f"{where}{self.path} holds another datastore (id {settings.uuid}, expected {self.uuid}). "
                "Is another volume mounted there, or was the datastore replaced?"
            )
        return settings

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


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            # lost+found is what an empty ext4 volume holds: a fresh volume, not a store.
            return any(entry.name != "lost+found" for entry in entries)
    except OSError:
        return False


def _writable(path: str) -> bool:
    """False on a read-only mount even for root (access() checks EROFS), or a folder we cannot write."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)
