"""Storage pool volumes: folders or mount points that hold datastores.

A row only records where a volume is (and the mount point it was on when it was
added); everything else (file system, size, free space, read-only) is read from the
live system each time, since a volume can be unmounted or remounted at any moment.
``storage.services.add_volume`` is the one way to add one (page and command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from storage.mounts import Mount, Space, contains, disk_space, mount_of, read_only

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


def format_bytes(value: int) -> str:
    """Binary units with one decimal, as refusals quote them (e.g. "16.0 MiB")."""
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} bytes"


@dataclass(frozen=True)
class VolumeStatus:
    """What the live system says about a volume right now."""

    mount: Mount | None
    space: Space | None
    read_only: bool
    problem: str  # empty when the volume is usable

    @property
    def reachable(self) -> bool:
        return self.space is not None


class VolumeQuerySet(models.QuerySet["Volume"]):
    def containing(self, path: str) -> Volume | None:
        """The registered volume whose folder holds ``path`` (volumes never nest, so at most one)."""
        real = os.path.realpath(path)
        for volume in self:
            if contains(volume.real_path, real):
                return volume
        return None


class Volume(models.Model):
    path = models.CharField(max_length=1024, unique=True, help_text="An absolute folder or mount point.")
    label = models.CharField(max_length=255, blank=True)
    # Where the folder was mounted when it was added: a different mount point now means
    # the volume is not mounted (the folder is then on the disk below it).
    mount_point = models.CharField(max_length=1024, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now)

    objects = VolumeQuerySet.as_manager()

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.label or self.path

    def get_absolute_url(self) -> str:
        return reverse("storage:volume-detail", args=[self.pk])

    @property
    def real_path(self) -> str:
        return os.path.realpath(self.path)

    def status(self) -> VolumeStatus:
        """Probe the live system: mount, file system, size, free space, read-only. Never raises."""
        if not os.path.isdir(self.path):
            return VolumeStatus(
                None,
                None,
                False,
                f"The folder {self.path} does not exist. Is the volume mounted? Was the folder moved?",
            )
        mount = mount_of(self.path)
        if mount is not None and self.mount_point and mount.mount_point != self.mount_point:
            # The space figures would be those of the disk below: not shown, not trusted.
            return VolumeStatus(
                mount,
                None,
                False,
                f"Not mounted: {self.path} is now on {mount.mount_point} ({mount.device}), but it was on "
                f"{self.mount_point} when it was added. Mount the volume again.",
            )
        space = disk_space(self.path)
        if space is None:
            return VolumeStatus(mount, None, False, f"The file system holding {self.path} cannot be read.")
        ro = read_only(self.path)
        problem = "Mounted read-only: backups cannot be written to it (restores still work)." if ro else ""
        return VolumeStatus(mount, space, ro, problem)

    def planned_need(self) -> int:
        """What its datastores need: for each, the larger of what is planned and what is used."""
        return sum(max(ds.assigned_bytes, ds.used_bytes) for ds in self.datastores.all())

    def datastore_path(self, folder: str) -> str:
        """The path of a new datastore in ``folder``, a single safe name directly under the volume.

        Raises ValidationError (field ``folder``) for anything else: '..', '/', NUL, a hidden
        name, or an existing folder that is not empty.
        """
        name = folder.strip()
        if not name:
            raise ValidationError({"folder": "Give the name of the folder to create on the volume."})
        if "\x00" in name or "/" in name or "\\" in name or name in {".", ".."}:
            raise ValidationError(
                {"folder": "The folder must be a single name (no '/', '\\', '..' or NUL characters)."}
            )
        if name.startswith("."):
            raise ValidationError({"folder": "The folder name may not start with '.' (a hidden folder)."})
        if len(name.encode()) > 255:
            raise ValidationError({"folder": "The folder name is longer than 255 bytes."})
        path = os.path.join(self.path, name)
        if os.path.lexists(path):
            if not os.path.isdir(path) or os.path.islink(path):
                raise ValidationError({"folder": f"{path} exists and is not a folder."})
            if os.listdir(path):
                raise ValidationError(
                    {"folder": f"{path} exists and is not empty; a datastore needs a new or empty folder."}
                )
        return path
