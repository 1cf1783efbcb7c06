"""``manage.py add-volume PATH [--label LABEL]``: register a storage pool volume.

The same rules as the storage page's "Add volume" (``storage.services.add_volume``).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.core.models import AuditEvent
from storage.services import add_volume


class Command(BaseCommand):
    help = "Add a folder or mount point to the storage pool as a volume that datastores are created on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="An absolute, existing, writable folder or mount point.")
        parser.add_argument("--label", default="", help="A name shown on the storage pages.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            volume = add_volume(options["path"], options["label"])
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        adopted = list(volume.datastores.values_list("name", flat=True))
        AuditEvent.record("volume.add", obj=volume, path=volume.path, adopted=adopted)
        status = volume.status()
        size = f", {status.space.total} bytes" if status.space else ""
        fs = f" ({status.mount.fs_type} on {status.mount.device}{size})" if status.mount else ""
        self.stdout.write(f"Added volume {volume.path}{fs}.")
        if adopted:
            self.stdout.write(f"Datastores in it: {', '.join(adopted)}.")
