"""First-run setup: the default datastore and the first administrator.

Safe to run at every start: it only creates what is missing.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django_q.models import Schedule

from backupsite.core.models import AuditEvent
from storage.models import Datastore

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
                datastore = Datastore.objects.register_existing("Default", str(path))
                AuditEvent.record("datastore.register", obj=datastore, path=str(path))
                self.stdout.write(f"Registered the existing datastore at {path} as 'Default'")
            else:
                # Created explicitly here, once: jobs never create a store (see storage.models).
                datastore = Datastore.objects.create_with_store("Default", str(path))
                AuditEvent.record("datastore.create", obj=datastore, path=str(path))
                self.stdout.write(f"Created datastore 'Default' at {path}")

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
