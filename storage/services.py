"""The storage pool's actions, shared by its pages and its commands.

- ``add_volume(path, label)``: register a folder or mount point as a pool volume.
- ``create_datastore(volume, name, folder, ...)``: a new datastore in a folder on a volume.

Both validate everything first and raise ``ValidationError`` (keyed by form field)
with a message an administrator can act on; nothing is written then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from storage.engine import EngineError
from storage.engine.format import DEFAULT_CHUNK, DEFAULT_LEVEL
from storage.models import Datastore, Volume, format_bytes, new_recovery_key
from storage.mounts import contains, mount_of, read_only, writable


def add_volume(path: str, label: str = "") -> Volume:
    """Register ``path`` as a storage pool volume.

    Refused: a relative path; a path that does not exist or is not a folder; a folder
    that cannot be written (read-only mount, or no write permission); one inside (or
    equal to) a datastore's folder; one equal to, inside or holding a registered volume;
    and one too small for the datastores already under it, which the new volume adopts.
    """
    path = path.strip()
    if not path or not os.path.isabs(path):
        raise ValidationError({"path": f"Give an absolute path (starting with '/'), not {path!r}."})
    if "\x00" in path:
        raise ValidationError({"path": "The path may not contain NUL characters."})
    path = os.path.normpath(path)
    if not os.path.exists(path):
        raise ValidationError(
            {"path": f"{path} does not exist. Create the folder or mount the volume first."}
        )
    if not os.path.isdir(path):
        raise ValidationError({"path": f"{path} is not a folder."})
    real = os.path.realpath(path)
    if read_only(path):
        mount = mount_of(path)
        where = f" (the file system mounted at {mount.mount_point})" if mount else ""
        raise ValidationError(
            {"path": f"{path} is on a read-only mount{where}: backups could not be written."}
        )
    if not writable(path):
        raise ValidationError(
            {"path": f"The server's user cannot write to {path}: check its owner and permissions."}
        )
    _refuse_overlaps(path, real)

    adopted = [ds for ds in Datastore.objects.all() if contains(real, os.path.realpath(ds.path))]
    need = sum(max(ds.assigned_bytes, ds.used_bytes) for ds in adopted)
    total = os.statvfs(path)
    size = total.f_blocks * total.f_frsize
    if adopted and size < need:
        names = ", ".join(
            f"{ds.name} ({format_bytes(max(ds.assigned_bytes, ds.used_bytes))})" for ds in adopted
        )
        raise ValidationError(
            {
                "path": f"{path} is too small: it holds {format_bytes(size)}, but the datastores in it "
                f"need {format_bytes(need)} ({names})."
            }
        )
    mount = mount_of(path)
    with transaction.atomic():
        volume = Volume(path=path, label=label.strip(), mount_point=mount.mount_point if mount else "")
        volume.full_clean()
        volume.save(force_insert=True)
        Datastore.objects.filter(pk__in=[ds.pk for ds in adopted]).update(volume=volume)
    return volume


def _refuse_overlaps(path: str, real: str) -> None:
    for datastore in Datastore.objects.only("name", "path"):
        if contains(os.path.realpath(datastore.path), real):
            raise ValidationError(
                {"path": f"{path} is inside datastore {datastore.name}'s folder ({datastore.path})."}
            )
    for volume in Volume.objects.all():
        other = volume.real_path
        if other == real:
            raise ValidationError({"path": f"{path} is already registered as volume {volume}."})
        if contains(other, real):
            raise ValidationError({"path": f"{path} lies inside volume {volume} ({volume.path})."})
        if contains(real, other):
            raise ValidationError(
                {"path": f"{path} holds volume {volume} ({volume.path}); volumes cannot nest."}
            )


@dataclass(frozen=True)
class NewDatastore:
    datastore: Datastore
    recovery_key: str | None  # only for an encrypted datastore; shown once


def create_datastore(
    volume: Volume,
    name: str,
    folder: str,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    compression_level: int = DEFAULT_LEVEL,
    colocate: bool = True,
    encrypt: bool = False,
) -> NewDatastore:
    """A new datastore in ``folder`` directly under ``volume``; with ``encrypt`` the server
    generates its key (the recovery key) and keeps it encrypted on the row."""
    path = volume.datastore_path(folder)
    status = volume.status()
    if status.problem:
        raise ValidationError(f"Volume {volume}: {status.problem}")
    key = new_recovery_key() if encrypt else None
    try:
        datastore = Datastore.objects.create_with_store(
            name,
            path,
            chunk_size,
            compression_level=compression_level,
            volume=volume,
            colocate=colocate,
            key=key,
        )
    except EngineError as error:
        raise ValidationError({"folder": str(error)}) from error
    return NewDatastore(datastore, key)
