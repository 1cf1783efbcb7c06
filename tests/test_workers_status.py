"""The dashboard says when the workers are down, told from the reaper schedule that only a
running cluster advances."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from backupsite.core.jobs.workers import REAPER_SCHEDULE, workers_status

pytestmark = pytest.mark.django_db


def reaper_due(at: datetime) -> None:
    Schedule.objects.update_or_create(
        name=REAPER_SCHEDULE,
        defaults={
            "func": "backupsite.core.jobs.reaper.reap_stale_jobs",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": at,
        },
    )


def test_status_from_the_reaper_schedule() -> None:
    assert workers_status() is None  # never set up: nothing to tell
    now = timezone.now()
    reaper_due(now + timedelta(seconds=30))
    status = workers_status(now)
    assert status is not None and status.running
    reaper_due(now - timedelta(minutes=2))  # a little late: a busy scheduler
    assert workers_status(now).running  # type: ignore[union-attr]
    reaper_due(now - timedelta(minutes=10))
    down = workers_status(now)
    assert down is not None and not down.running
    assert down.last_seen == now - timedelta(minutes=11)


PAGES = [reverse("home"), reverse("protection:job-list"), reverse("recovery:overview")]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_says_the_workers_are_down(readonly_client: Client, url: str) -> None:
    reaper_due(timezone.now() + timedelta(seconds=20))
    assert 'data-testid="workers-down"' not in readonly_client.get(url).content.decode()
    reaper_due(timezone.now() - timedelta(minutes=30))
    text = readonly_client.get(url).content.decode()
    assert 'data-testid="workers-down"' in text and "The workers are not running" in text
    assert "last seen 31\xa0minutes ago" in text
