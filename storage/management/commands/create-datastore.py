"""``manage.py create-datastore NAME PATH [--chunk-size BYTES]``: make a new datastore.

The only ways a store comes to exist are this command, first-run ``bootstrap`` and
the engine's own CLI: jobs never create one, so an unmounted volume is an error,
not a fresh empty store.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.core.models import AuditEvent
from storage.engine import EngineError
from storage.engine.format import DEFAULT_CHUNK
from storage.models import Datastore


class Command(BaseCommand):
    help = "Create a datastore: a new, empty store in PATH (an empty or missing folder) and its row."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path", help="An empty or missing folder, typically on a mounted volume.")
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=DEFAULT_CHUNK,
            help="Bytes; a power of two from 262144 (256 KiB) to 4194304 (4 MiB). Default 1 MiB.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            datastore = Datastore.objects.create_with_store(
                options["name"], options["path"], chunk_size=options["chunk_size"]
            )
        except ValidationError as error:
            raise CommandError(" ".join(_messages(error))) from error
        except EngineError as error:
            raise CommandError(str(error)) from error
        AuditEvent.record("datastore.create", obj=datastore, path=datastore.path)
        self.stdout.write(
            f"Created datastore {datastore.name!r} at {datastore.path} "
            f"({datastore.chunk_size // 1024} KiB chunks, id {datastore.uuid})."
        )


def _messages(error: ValidationError) -> list[str]:
    if hasattr(error, "message_dict"):
        return [f"{field}: {text}" for field, texts in error.message_dict.items() for text in texts]
    return list(error.messages)
