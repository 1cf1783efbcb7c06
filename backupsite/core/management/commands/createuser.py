from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.core.models import AuditEvent
from backupsite.core.permissions import Role


class Command(BaseCommand):
    help = "Create a user with one of the roles (Administrator, Backup Operator, ...)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[role.value for role in Role])
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="Prompted for when omitted")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = options["username"]
        if users.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = options["password"] or getpass.getpass("Password: ")
        try:
            validate_password(password, users(username=username))
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        user = users.objects.create_user(username=username, email=options["email"], password=password)
        user.groups.add(Group.objects.get(name=options["role"]))
        AuditEvent.record("user.create", user=None, obj=user, role=options["role"])
        self.stdout.write(f"Created {username} ({options['role']}).")
