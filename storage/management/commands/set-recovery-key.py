"""``manage.py set-recovery-key NAME --key-file FILE``: give an encrypted datastore its key again.

For a row whose key this server can no longer decrypt (the credentials key was lost or
changed) or never had. The key is checked against the store before it is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.core.models import AuditEvent
from storage.engine import EngineError
from storage.models import Datastore


class Command(BaseCommand):
    help = "Give an encrypted datastore its recovery key again (checked against the store)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The datastore's name.")
        parser.add_argument("--key-file", required=True, help="A file holding the recovery key.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            datastore = Datastore.objects.get(name=options["name"])
        except Datastore.DoesNotExist:
            raise CommandError(f"No datastore is named {options['name']!r}.") from None
        try:
            key = Path(options["key_file"]).read_bytes()
        except OSError as error:
            raise CommandError(
                f"Cannot read the key file {options['key_file']}: {error.strerror}."
            ) from error
        try:
            datastore.set_recovery_key(key)
        except EngineError as error:
            raise CommandError(f"Datastore {datastore}: {error}. Nothing was changed.") from error
        AuditEvent.record("datastore.recovery_key_set", obj=datastore)
        self.stdout.write(f"Datastore {datastore} has its key again; it opens.")
