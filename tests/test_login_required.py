"""Every page is behind login, and users without a role see nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

PUBLIC = {"login"}


def _patterns(resolver: URLResolver, prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            child_ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            if entry.namespace == "admin":
                continue  # Django's admin has its own login
            found += _patterns(entry, prefix + str(entry.pattern), child_ns)
        elif isinstance(entry, URLPattern) and entry.name:
            found.append((namespace + entry.name, prefix + str(entry.pattern)))
    return found


def all_named_urls() -> list[str]:
    urls = []
    for name, pattern in _patterns(get_resolver()):
        if name.split(":")[-1] in PUBLIC:
            continue
        kwargs: dict[str, object] = {"pk": 1} if "<int:pk>" in pattern else {}
        if "<slug:task>" in pattern:
            kwargs["task"] = "verify"
        urls.append(reverse(name, kwargs=kwargs))
    return urls


def test_the_url_list_is_not_empty() -> None:
    urls = all_named_urls()
    assert "/" in urls and "/protection/jobs/1/" in urls and len(urls) >= 10


@pytest.mark.django_db
@pytest.mark.parametrize("url", all_named_urls())
def test_anonymous_is_sent_to_login(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize("url", [u for u in all_named_urls() if u != "/logout/"])
def test_user_without_role_sees_nothing(outsider_client: Client, url: str) -> None:
    response = outsider_client.get(url)
    assert response.status_code in {404, 405}


@pytest.mark.django_db
def test_login_page_and_sign_in(client: Client, make_user: Any) -> None:
    from tests.conftest import PASSWORD

    make_user("alice")
    assert client.get(reverse("login")).status_code == 200
    bad = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200 and b"do not match" in bad.content
    good = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert good.status_code == 302 and good["Location"] == reverse("home")


@pytest.mark.django_db
def test_logout_needs_post(admin_client: Client) -> None:
    assert admin_client.get(reverse("logout")).status_code == 405
    assert admin_client.post(reverse("logout")).status_code == 302
    assert admin_client.get(reverse("home")).status_code == 302
