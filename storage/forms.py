"""Forms of the storage pool pages. They only check the fields; the rules live in
``storage.services`` and the models, whose refusals ``add_errors`` puts on the form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from storage.engine.format import DEFAULT_CHUNK, DEFAULT_LEVEL, MAX_CHUNK, MIN_CHUNK

KIB = 1024
CHUNK_SIZES = [
    (size, f"{size // KIB} KiB" if size < 1024 * KIB else f"{size // (1024 * KIB)} MiB")
    for size in (MIN_CHUNK << shift for shift in range(5))
    if size <= MAX_CHUNK
]
# zstd levels: 1 is the engine's default (measured about as small as 3 on VM disks and
# faster); higher levels trade backup speed for space. The engine has no "off".
COMPRESSION_LEVELS = [
    (1, "1 (fast, recommended)"),
    (3, "3 (balanced)"),
    (9, "9 (smaller, slower backups)"),
    (19, "19 (smallest, much slower backups)"),
]


def add_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's refusal on the form: on its field when the form has one, else on top."""
    if hasattr(error, "error_dict"):
        for field, errors in error.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)


class VolumeForm(forms.Form):
    path = forms.CharField(
        label="Path",
        max_length=1024,
        help_text="An absolute folder or mount point on this server, e.g. /srv/backup or /mnt/usb-disk.",
    )
    label = forms.CharField(
        label="Label", max_length=255, required=False, help_text="Optional, e.g. “USB disk 2”."
    )


class DatastoreForm(forms.Form):
    name = forms.CharField(label="Name", max_length=255)
    folder = forms.CharField(
        label="Folder",
        max_length=255,
        help_text="A new (or empty) folder directly on the volume, created for the datastore.",
    )
    chunk_size = forms.TypedChoiceField(
        label="Chunk size",
        choices=CHUNK_SIZES,
        coerce=int,
        initial=DEFAULT_CHUNK,
        help_text="The unit of deduplication. 1 MiB suits VM disks; smaller finds more duplicates "
        "but keeps more files. Fixed once the datastore exists.",
    )
    compression_level = forms.TypedChoiceField(
        label="Compression (zstd level)",
        choices=COMPRESSION_LEVELS,
        coerce=int,
        initial=DEFAULT_LEVEL,
        help_text="Fixed once the datastore exists.",
    )
    colocate = forms.BooleanField(
        label="Colocation: several protection groups may share this datastore",
        required=False,
        initial=True,
        help_text="Identical data across the groups is then stored once. Without it the datastore "
        "serves one protection group only.",
    )
    encrypt = forms.BooleanField(
        label="Encrypt (AES-256-GCM)",
        required=False,
    )


class ColocationForm(forms.Form):
    colocate = forms.BooleanField(required=False)


class RecoveryKeySavedForm(forms.Form):
    saved = forms.BooleanField(
        label="I have saved the recovery key",
        error_messages={"required": "Tick the box once you have saved the recovery key."},
    )
