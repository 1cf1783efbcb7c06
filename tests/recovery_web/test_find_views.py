"""Finding the VM to recover: by name (htmx live search) or by group and host."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from protection.models import ProtectedDataSource, ProtectionGroup
from storage.models import Datastore
from tests.factories import make_host, make_vm
from tests.recovery_web.conftest import make_point

pytestmark = pytest.mark.django_db
URL = reverse("recovery:overview")


@pytest.fixture
def estate() -> dict[str, object]:
    now = timezone.now()
    hv1, hv2 = make_host("HV-A"), make_host("HV-B")
    sql = make_vm("sql01", host=hv1)
    web = make_vm("web01", host=hv2, removed_at=now)
    never = make_vm("never-backed-up", host=hv1)
    group = ProtectionGroup.objects.create(
        name="Gold", datastore=Datastore.objects.create(name="d", path="/d")
    )
    ProtectedDataSource.objects.create(group=group, vm=sql)
    make_point(sql, now - timedelta(days=1))
    make_point(sql, now)
    make_point(web, now - timedelta(days=3))
    make_point(never, now, damaged=True)  # damaged points do not make a VM recoverable
    return {"sql": sql, "web": web, "never": never}


def test_tree_by_group_and_host(readonly_client: Client, estate: dict[str, object]) -> None:
    page = readonly_client.get(URL)
    assert page.status_code == 200
    text = page.content.decode()
    assert "By protection group" in text and "By host" in text
    assert text.count(">sql01</a>") == 2 and text.count(">web01</a>") == 2  # once per tree
    assert "Gold" in text and "Not protected any more" in text and "HV-B" in text
    assert "never-backed-up" not in text


def test_live_search_renders_only_the_results(readonly_client: Client, estate: dict[str, object]) -> None:
    fragment = readonly_client.get(URL, {"q": "SQL"}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    text = fragment.content.decode()
    assert "<html" not in text and 'id="vm-results"' in text
    assert ">sql01</a>" in text and "web01" not in text and "<td>2</td>" in text
    nothing = readonly_client.get(URL, {"q": "zzz"}, headers={"HX-Request": "true"}).content.decode()
    assert "No virtual machine with recovery points matches" in nothing
    removed = readonly_client.get(URL, {"q": "web"}).content.decode()
    assert "no longer on its host" in removed and "<html" in removed


def test_outsiders_see_nothing(outsider_client: Client, estate: dict[str, object]) -> None:
    assert outsider_client.get(URL).status_code == 404


def test_wrong_method(readonly_client: Client) -> None:
    assert readonly_client.post(URL).status_code == 405


@pytest.mark.parametrize("headers", [{}, {"HX-Request": "true"}])
def test_a_nul_character_or_an_overlong_search_is_refused_with_a_message(
    readonly_client: Client, estate: dict[str, object], headers: dict[str, str]
) -> None:
    # PostgreSQL cannot compare text with NUL: this was a 500 (DataError).
    page = readonly_client.get(URL, {"q": "sql\x00"}, headers=headers)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Search not run: Null characters are not allowed." in text
    assert "No virtual machine with recovery points matches" not in text
    long = readonly_client.get(URL, {"q": "s" * 256}, headers=headers).content.decode()
    assert "Search not run: Ensure this value has at most 255 characters" in long
