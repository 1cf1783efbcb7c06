from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from backupsite.core.permissions import Role
from storage.vdisk import builder
from tests.fixtures.build_vhdx import build_all

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


@pytest.fixture(scope="session")
def disk_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real VHDX fixtures (tests/fixtures/build_vhdx.py), built once per test session (about 4 s)."""
    missing = builder.missing_tools()
    if missing:
        pytest.fail(f"tools needed to build VHDX fixtures are missing: {missing}")
    return build_all(tmp_path_factory.mktemp("vhdx-fixtures"))


# --------------------------------------------------------------------------- browser
# One Chromium for the whole session: Playwright's sync API allows one per thread.

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls
    # made by the test itself are still synchronous and safe.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    tab = browser.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        tab.close()
