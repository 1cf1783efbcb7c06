"""A VM's recovery points as a month calendar; a day's points by htmx."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from protection.models import VirtualMachine
from tests.factories import make_vm
from tests.recovery_web.conftest import make_point

pytestmark = pytest.mark.django_db


def at(year: int, month: int, day: int, hour: int = 20) -> datetime:
    return datetime(year, month, day, hour, 0, tzinfo=timezone.get_current_timezone())


@pytest.fixture
def vm() -> VirtualMachine:
    machine = make_vm("sql01")
    make_point(machine, at(2025, 10, 30))
    make_point(machine, at(2025, 11, 3, 8), consistency="crash")
    make_point(machine, at(2025, 11, 3, 20), verified_at=at(2025, 11, 4))
    make_point(machine, at(2025, 11, 18), location="online", damaged=True)
    return machine


def test_month_of_the_latest_point_with_days_highlighted(readonly_client: Client, vm: VirtualMachine) -> None:
    page = readonly_client.get(reverse("recovery:vm", args=[vm.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-testid="calendar-month">November 2025<' in text
    assert 'data-testid="day-2025-11-03"' in text and 'data-testid="day-2025-11-18"' in text
    assert "3 November 2025: 2 recovery points" in text
    assert 'data-testid="day-2025-11-04"' not in text
    assert 'data-testid="day-2025-10-30"' not in text  # October days shown greyed, not clickable


def test_month_navigation_renders_the_partial(readonly_client: Client, vm: VirtualMachine) -> None:
    fragment = readonly_client.get(
        reverse("recovery:vm", args=[vm.pk]), {"month": "2025-10"}, headers={"HX-Request": "true"}
    )
    text = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in text and 'id="calendar"' in text
    assert "October 2025" in text and 'data-testid="day-2025-10-30"' in text
    junk = readonly_client.get(reverse("recovery:vm", args=[vm.pk]), {"month": "nonsense"})
    assert junk.status_code == 200  # falls back to the latest point's month


def test_a_days_points_with_their_details(recovery_client: Client, vm: VirtualMachine) -> None:
    url = reverse("recovery:day", args=[vm.pk]) + "?date=2025-11-03"
    fragment = recovery_client.get(url, headers={"HX-Request": "true"})
    text = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in text
    assert "08:00:00" in text and "20:00:00" in text
    assert "Crash consistent" in text and "Application consistent" in text
    assert "Verified 2025-11-04" in text and "Not verified yet" in text
    assert "64.0\xa0MB" in text and text.count("Recover…") == 2
    damaged = recovery_client.get(
        reverse("recovery:day", args=[vm.pk]) + "?date=2025-11-18", headers={"HX-Request": "true"}
    )
    assert "Damaged" in damaged.content.decode() and "Online" in damaged.content.decode()
    assert "Recover…" not in damaged.content.decode()
    full = recovery_client.get(url)
    assert full.status_code == 302 and full["Location"].endswith("?month=2025-11&day=2025-11-03")
    page = recovery_client.get(full["Location"]).content.decode()
    assert "Monday 3 November 2025" in page


def test_read_only_sees_the_calendar_but_no_recover_button(
    readonly_client: Client, vm: VirtualMachine
) -> None:
    text = readonly_client.get(
        reverse("recovery:day", args=[vm.pk]) + "?date=2025-11-03", headers={"HX-Request": "true"}
    ).content.decode()
    assert "20:00:00" in text and "Recover…" not in text


def test_bad_day_and_outsiders(readonly_client: Client, outsider_client: Client, vm: VirtualMachine) -> None:
    assert readonly_client.get(reverse("recovery:day", args=[vm.pk]) + "?date=2025-13-40").status_code == 404
    assert outsider_client.get(reverse("recovery:vm", args=[vm.pk])).status_code == 404
    assert outsider_client.get(reverse("recovery:day", args=[vm.pk]) + "?date=2025-11-03").status_code == 404
    assert readonly_client.get(reverse("recovery:vm", args=[999999])).status_code == 404
    assert readonly_client.post(reverse("recovery:vm", args=[vm.pk])).status_code == 405
