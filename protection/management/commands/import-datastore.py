"""``manage.py import-datastore PATH [--name NAME] [--key-file FILE] [--dry-run]``.

Disaster recovery of the backup server: rebuild the catalog (hosts, VMs, disks,
protection groups, protected data sources, recovery points) from a datastore alone.
Running it again is harmless: it adds only points the catalog does not know yet.
See docs/operations.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from protection.services.catalog_import import ImportRefused, ImportReport, Tally, import_datastore


class Command(BaseCommand):
    help = "Rebuild the catalog from the datastore at PATH (disaster recovery); safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The datastore's folder (it holds format.json).")
        parser.add_argument("--name", help="Name of the new datastore row (default: the folder's name).")
        parser.add_argument("--key-file", help="File holding the key of an encrypted datastore.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be imported; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key = _read_key(options["key_file"]) if options["key_file"] else None
        try:
            report = import_datastore(
                options["path"], name=options["name"], key=key, dry_run=options["dry_run"]
            )
        except ImportRefused as error:
            raise CommandError(str(error)) from error
        self.stdout.write("\n".join(summary(report)))


def _read_key(path: str) -> bytes:
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise CommandError(f"The key file {path} cannot be read: {error.strerror or error}.") from error
    if not key:
        raise CommandError(f"The key file {path} is empty.")
    return key


def _line(label: str, tally: Tally) -> str:
    return f"  {label:<20} {len(tally.new):>5} new, {len(tally.existing):>5} already in the catalog"


def summary(report: ImportReport) -> list[str]:
    verb = "Would import" if report.dry_run else "Imported"
    state = "new" if report.datastore_new else "already registered"
    lines = [
        f"{verb} datastore {report.datastore!r} ({state}) from {report.datastore_path}:",
        _line("hosts", report.hosts),
        _line("virtual machines", report.vms),
        _line("disks", report.disks),
        _line("protection groups", report.groups),
        _line("protected VMs", report.sources),
        _line("recovery points", report.points),
        f"  {'skipped points':<20} {len(report.skipped):>5}",
    ]
    lines += [f"    {point}: {reason}" for point, reason in report.skipped]
    lines += [f"Note: {note}" for note in report.notes]
    if report.sources.new:
        lines.append(
            "Protection of the imported VMs waits for their hosts: check the datastore with a verify, "
            "then enter each Hyper-V host's credentials (Change connection on its page) or refresh "
            "a lab host's inventory; see docs/operations.md."
        )
    if report.dry_run:
        lines.append("Dry run: nothing was changed.")
    return lines
