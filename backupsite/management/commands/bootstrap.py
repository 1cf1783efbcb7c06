"""First-run setup: the default datastore, the data directory as the storage pool's
first volume, and the first administrator.

Safe to run at every start: it only creates what is missing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser
from django_q.models import Schedule

from backupsite.core.models import AuditEvent
from storage.engine import WrongKey
from storage.models import Datastore, Volume
from storage.services import add_volume

# Every minute: the protection scheduler decides what is due from the policies, and
# the reaper fails jobs whose worker died so their VM locks are freed. Hourly: daily
# garbage collection and weekly verification of every datastore, when due; and the
# capacity task (a sample of every datastore's volume, the planned space, the
# "volume filling up" alert).
SCHEDULES = {
    "protection-scheduler": ("protection.scheduler.tick", 1),
    "reap-stale-jobs": ("backupsite.core.jobs.reaper.reap_stale_jobs", 1),
    "datastore-maintenance": ("storage.maintenance.schedule_maintenance", 60),
    "capacity": ("protection.services.capacity_watch.refresh_capacity", 60),
}


class Command(BaseCommand):
    help = "Create the default datastore and the first administrator when they are missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-username", default=os.environ.get("ADMIN_USERNAME", "admin"))

    def handle(self, *args: Any, **options: Any) -> None:
        settings.BACKUPSITE_DATA_DIR.mkdir(parents=True, exist_ok=True)
        if not Datastore.objects.exists():
            path = settings.BACKUPSITE_DATA_DIR / "datastore"
            if (path / "format.json").exists():
                # The database was reset but the store survived: use it, never a second one.
                self._register_default(path)
            else:
                # Created explicitly here, once: jobs never create a store (see storage.models).
                datastore = Datastore.objects.create_with_store("Default", str(path))
                AuditEvent.record("datastore.create", obj=datastore, path=str(path))
                self.stdout.write(f"Created datastore 'Default' at {path}")
        if not Volume.objects.exists():
            self._add_data_directory_volume()

        for name, (func, minutes) in SCHEDULES.items():
            Schedule.objects.update_or_create(
                name=name,
                defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
            )

        users = get_user_model()
        if not users.objects.filter(is_superuser=True).exists():
            username = options["admin_username"]
            password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            admin = users.objects.create_superuser(username=username, email="", password=password)
            AuditEvent.record("user.create", obj=admin, role="Administrator")
            if os.environ.get("ADMIN_PASSWORD"):
                self.stdout.write(
                    f"Created administrator '{username}' with the password from ADMIN_PASSWORD."
                )
            else:
                self.stdout.write(
                    self.style.WARNING(
                        f"Created administrator '{username}' with one-time password: {password}\n"
                        "It is shown only now; change it after signing in (manage.py changepassword)."
                    )
                )

    def _register_default(self, path: Path) -> None:
        try:
            datastore = Datastore.objects.register_existing("Default", str(path))
        except WrongKey as error:
            # An encrypted store needs its recovery key, which only an administrator has:
            # start without a datastore rather than not at all.
            self.stdout.write(
                self.style.WARNING(
                    f"The datastore at {path} was not registered: {error}. Register it with its "
                    "recovery key (Datastore.objects.register_existing(name, path, key=...))."
                )
            )
            return
        AuditEvent.record("datastore.register", obj=datastore, path=str(path))
        self.stdout.write(f"Registered the existing datastore at {path} as 'Default'")

    def _add_data_directory_volume(self) -> None:
        """The data directory (which holds the default datastore) becomes the pool's first
        volume, so the storage page shows its file system and free space from the start."""
        path = str(settings.BACKUPSITE_DATA_DIR.absolute())
        try:
            volume = add_volume(path, "Data directory")
        except ValidationError as error:
            # Never fatal at start-up: the pool page lets an administrator add volumes later.
            self.stdout.write(
                self.style.WARNING(
                    f"The data directory was not added as a volume: {' '.join(error.messages)}"
                )
            )
            return
        AuditEvent.record("volume.add", obj=volume, path=volume.path)
        self.stdout.write(f"Added the data directory {path} to the storage pool as a volume")
