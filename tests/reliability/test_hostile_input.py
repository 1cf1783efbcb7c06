"""Hostile input, generated: every page's query string and every protection wizard field.

Whatever a user (or a crafted link) sends, the answer is a page or a clear message, never a
500, and a wizard draft never ends up holding a value that breaks a later view of it.
Routes are enumerated from the URL configuration, so a new page is fuzzed without being
listed here. Values come from hypothesis, plus the ones that once broke a page (a NUL
character PostgreSQL refuses, ``nan``, a 30-digit id).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupsite.core.models import Job, JobKind
from protection.models import Host, ProtectedDataSource, ProtectionGroup, ProtectionGroupDraft, VirtualMachine
from storage.models import Datastore
from tests.protection.helpers import FakeConnector, vm_with_disk
from tests.recovery_web.conftest import make_point
from tests.reliability.report import repetitions

pytestmark = pytest.mark.django_db

# Values that broke pages before, or are known to be awkward for a database or a parser.
NASTY = [
    "\x00",
    "a\x00b",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "9" * 30,
    "-1",
    "0",
    "",
    " ",
    "\u202e",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "%00",
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "2026-02-30",
    "9999-99",
    "x" * 5000,
    "\\\\server\\share",
    "/",
]
# Query parameters that some view reads (grep request.GET), plus paging and filters.
PARAMETERS = [
    "q", "page", "state", "kind", "period", "group", "vm", "month", "day", "date",
    "disk", "volume", "path", "next",
]  # fmt: skip
HOSTILE_TEXT = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
FUZZ = settings(
    max_examples=repetitions(150, 2000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def _routes(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            namespace = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            yield from _routes(entry, namespace)
        elif entry.name:
            yield f"{prefix}{entry.name}", entry


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch) -> FakeConnector:
    fake = FakeConnector()
    monkeypatch.setattr(Host, "connector", lambda self: fake)
    return fake


@pytest.fixture
def estate(connector: FakeConnector, tmp_path: Any, operator_client: Client) -> dict[str, int]:
    """One object of each kind a URL can name, so every route resolves to a real page."""
    datastore = Datastore.objects.create_with_store("main", str(tmp_path / "datastore"))
    vm: VirtualMachine = vm_with_disk("sql01")
    group = ProtectionGroup.objects.create(name="Gold", datastore=datastore)
    ProtectedDataSource.objects.create(vm=vm, group=group)
    point = make_point(vm, timezone.now() - timedelta(hours=1))
    job = Job.objects.create(kind=JobKind.SYNCHRONIZATION, vm=vm, group=group)
    operator_client.post(reverse("protection:group-create"))
    draft = ProtectionGroupDraft.objects.get()
    return {
        "host": vm.host_id,
        "vm": vm.pk,
        "group": group.pk,
        "datastore": datastore.pk,
        "point": point.pk,
        "job": job.pk,
        "draft": draft.pk,
    }


def _pk_for(name: str, estate: dict[str, int]) -> int:
    """The object a route's <pk> means, by its name."""
    for prefix, key in [
        ("protection:host", "host"),
        ("protection:vm", "vm"),
        ("protection:group", "group"),
        ("protection:wizard", "draft"),
        ("protection:job", "job"),
        ("recovery:status", "job"),
        ("recovery:vm", "vm"),
        ("recovery:day", "vm"),
        ("recovery:start", "point"),
        ("recovery:download", "point"),
        ("storage:", "datastore"),
    ]:
        if name.startswith(prefix):
            return estate[key]
    return 1


def get_urls(estate: dict[str, int]) -> list[str]:
    urls = []
    for name, pattern in _routes(get_resolver()):
        converters = pattern.pattern.converters
        if set(converters) - {"pk"}:
            continue  # e.g. storage maintenance's <task>: POST only
        if name in {"logout"}:
            continue
        kwargs = {"pk": _pk_for(name, estate)} if "pk" in converters else {}
        urls.append(reverse(name, kwargs=kwargs))
    return urls


def test_every_page_answers_hostile_query_strings(operator_client: Client, estate: dict[str, int]) -> None:
    urls = get_urls(estate)
    assert len(urls) >= 20  # the enumeration found the product's pages
    operator_client.raise_request_exception = False
    failures: list[str] = []

    @FUZZ
    @given(
        url=st.sampled_from(urls),
        query=st.dictionaries(st.sampled_from(PARAMETERS), HOSTILE_TEXT, min_size=1, max_size=3),
        htmx=st.booleans(),
    )
    def probe(url: str, query: dict[str, str], htmx: bool) -> None:
        headers = {"HX-Request": "true"} if htmx else {}
        response = operator_client.get(url, query, headers=headers)
        if response.status_code >= 500:
            failures.append(f"GET {url} {query!r} -> {response.status_code}")

    probe()
    assert not failures, "\n".join(failures[:20])


# --------------------------------------------------------------------------- protection wizard

WIZARD_FIELDS: dict[str, list[str]] = {
    "members": ["vms"],
    "method": ["name", "description", "short_term_on_disk"],
    "goals": [
        "retention_days", "sync_frequency_minutes", "recovery_point_times", "recovery_point_days",
        "express_full_times", "express_full_days", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
    ],
    "allocation": ["datastore", "daily_churn_percent"],
    "replica": ["replica_creation_method", "replica_creation_at", "manual_import_path"],
    "consistency": ["consistency_check_if_inconsistent", "consistency_check_daily_at"],
}  # fmt: skip


def test_wizard_drafts_are_never_poisoned(operator_client: Client, estate: dict[str, int]) -> None:
    draft = estate["draft"]
    operator_client.raise_request_exception = False
    failures: list[str] = []

    @FUZZ
    @given(
        step=st.sampled_from(sorted(WIZARD_FIELDS)),
        data=st.data(),
        nav=st.sampled_from(["next", "back", "", "members", "summary", "\x00"]),
    )
    def probe(step: str, data: Any, nav: str) -> None:
        fields = data.draw(
            st.lists(st.sampled_from(WIZARD_FIELDS[step]), min_size=1, max_size=3, unique=True)
        )
        values = {field: data.draw(st.lists(HOSTILE_TEXT, min_size=1, max_size=2)) for field in fields}
        url = reverse(f"protection:wizard-{step}", args=[draft])
        posted = operator_client.post(url, {**values, "nav": nav})
        if posted.status_code >= 500:
            failures.append(f"POST {step} {values!r} nav={nav!r} -> {posted.status_code}")
        # Whatever was posted, every step of the draft still renders.
        for other in WIZARD_FIELDS:
            shown = operator_client.get(reverse(f"protection:wizard-{other}", args=[draft]))
            if shown.status_code >= 500:
                failures.append(f"GET {other} after POST {step} {values!r} -> {shown.status_code}")
        summary = operator_client.get(reverse("protection:wizard-summary", args=[draft]))
        if summary.status_code >= 500:
            failures.append(f"GET summary after POST {step} {values!r} -> {summary.status_code}")

    probe()
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize(
    ("step", "field", "value"),
    [
        ("allocation", "daily_churn_percent", "nan"),
        ("allocation", "daily_churn_percent", "inf"),
        ("method", "name", "Gold\x00"),
        ("method", "description", "\x00"),
        ("goals", "recovery_point_times", "20:00\x00"),
        ("replica", "manual_import_path", "/media\x00"),
    ],
)
def test_values_that_broke_the_wizard_get_a_message(
    operator_client: Client, estate: dict[str, int], step: str, field: str, value: str
) -> None:
    url = reverse(f"protection:wizard-{step}", args=[estate["draft"]])
    posted = operator_client.post(url, {field: value, "nav": "next"})
    assert posted.status_code == 200  # the step again, with its error shown
    assert 'class="error' in posted.content.decode() or "errorlist" in posted.content.decode()
    assert operator_client.get(url).status_code == 200
    saved = ProtectionGroupDraft.objects.get(pk=estate["draft"]).data
    assert "\x00" not in repr(saved)
