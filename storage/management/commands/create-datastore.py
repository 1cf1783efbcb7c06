"""``manage.py create-datastore NAME PATH [--chunk-size BYTES] [--compression-level N]
[--dedicated] [--encrypt]``: make a new datastore.

The only ways a store comes to exist are this command, the storage pages, first-run
``bootstrap`` and the engine's own CLI: jobs never create one, so an unmounted volume
is an error, not a fresh empty store. The datastore joins the registered pool volume
holding PATH, if any. With ``--encrypt`` the server generates the key and prints it
once, as the recovery key.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.core.models import AuditEvent
from storage.engine import EngineError
from storage.engine.format import DEFAULT_CHUNK, DEFAULT_LEVEL
from storage.models import MAX_LEVEL, MIN_LEVEL, Datastore, new_recovery_key


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
        parser.add_argument(
            "--compression-level",
            type=int,
            default=DEFAULT_LEVEL,
            help=f"zstd level {MIN_LEVEL}-{MAX_LEVEL}; default {DEFAULT_LEVEL} (fast).",
        )
        parser.add_argument(
            "--dedicated",
            action="store_true",
            help="No colocation: the datastore serves one protection group only.",
        )
        parser.add_argument(
            "--encrypt",
            action="store_true",
            help="Encrypt with a key the server generates; the recovery key is printed once.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key = new_recovery_key() if options["encrypt"] else None
        try:
            datastore = Datastore.objects.create_with_store(
                options["name"],
                options["path"],
                chunk_size=options["chunk_size"],
                compression_level=options["compression_level"],
                colocate=not options["dedicated"],
                key=key,
            )
        except ValidationError as error:
            raise CommandError(" ".join(_messages(error))) from error
        except EngineError as error:
            raise CommandError(str(error)) from error
        AuditEvent.record(
            "datastore.create", obj=datastore, path=datastore.path, encrypted=datastore.encrypted
        )
        volume = f", volume {datastore.volume}" if datastore.volume else ""
        self.stdout.write(
            f"Created datastore {datastore.name!r} at {datastore.path} "
            f"({datastore.chunk_size // 1024} KiB chunks, zstd level {datastore.compression_level}, "
            f"{'shared' if datastore.colocate else 'dedicated'}{volume}, id {datastore.uuid})."
        )
        if key is not None:
            # Printed is shown: the pages will not offer it again.
            datastore.confirm_recovery_key_saved()
            self.stdout.write(
                self.style.WARNING(
                    f"Recovery key (shown only now): {key}\n"
                    "Save it away from this server. Without it the datastore cannot be read if the "
                    "server's database or its credentials key is lost."
                )
            )


def _messages(error: ValidationError) -> list[str]:
    if hasattr(error, "message_dict"):
        return [f"{field}: {text}" for field, texts in error.message_dict.items() for text in texts]
    return list(error.messages)
