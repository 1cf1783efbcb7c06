from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from backupsite.permissions import Role

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    def make(username: str, role: Role | None = None, **extra: Any) -> Any:
        user = django_user_model.objects.create_user(username=username, password=PASSWORD, **extra)
        if role is not None:
            # get_or_create: transactional tests flush the groups the migration made.
            user.groups.add(Group.objects.get_or_create(name=role.value)[0])
        return user

    return make


def _client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_user(make_user: Callable[..., Any]) -> Any:
    return make_user("admin", Role.ADMINISTRATOR)


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    return _client_for(admin_user)


@pytest.fixture
def operator_client(make_user: Callable[..., Any]) -> Client:
    return _client_for(make_user("operator", Role.BACKUP_OPERATOR))


@pytest.fixture
def recovery_client(make_user: Callable[..., Any]) -> Client:
    return _client_for(make_user("restorer", Role.RECOVERY_OPERATOR))


@pytest.fixture
def readonly_client(make_user: Callable[..., Any]) -> Client:
    return _client_for(make_user("viewer", Role.READ_ONLY))


@pytest.fixture
def outsider_client(make_user: Callable[..., Any]) -> Client:
    """Signed in, but with no role: must see nothing."""
    return _client_for(make_user("outsider"))
