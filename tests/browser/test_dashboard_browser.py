"""Sign in with a real browser, see the dashboard, and watch a job page update live."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from backupsite.core.models import Job, JobKind, JobState
from backupsite.core.permissions import Role
from tests.factories import make_vm

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-browser-test-password"


def sign_in(page: Any, live_server: Any, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="operator", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=Role.BACKUP_OPERATOR.value)[0])
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url  # every page is behind login
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_sign_in_and_home_page_shows_real_counts(page: Any, live_server: Any, django_user_model: Any) -> None:
    Job.objects.create(kind=JobKind.VERIFY, state=JobState.FAILED, message="disk full")
    sign_in(page, live_server, django_user_model)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.get_by_test_id("jobs-failed").inner_text() == "1"
    assert page.get_by_test_id("protected-vms").inner_text() == "0"
    # The stylesheet is served by WhiteNoise, not a CDN.
    css = page.request.get(f"{live_server.url}/static/vendor/pico/pico.min.css")
    assert css.ok and len(css.body()) > 10_000
    for section in ("Protection", "Recovery", "Monitoring", "Storage", "Management"):
        assert page.get_by_role("link", name=section).is_visible()


def test_job_page_updates_live_and_stops_polling(page: Any, live_server: Any, django_user_model: Any) -> None:
    vm = make_vm("fileserver01")
    job = Job.objects.create(
        kind=JobKind.SYNCHRONIZATION,
        vm=vm,
        state=JobState.RUNNING,
        started=timezone.now(),
        bytes_total=1000,
        bytes_done=100,
        message="Reading disk0.vhdx",
    )
    sign_in(page, live_server, django_user_model)
    page.goto(f"{live_server.url}/protection/jobs/{job.pk}/")
    progress = page.get_by_test_id("job-progress")
    assert progress.get_attribute("value") == "10"
    assert page.get_by_test_id("job-message").inner_text() == "Reading disk0.vhdx"

    Job.objects.filter(pk=job.pk).update(bytes_done=600, message="Reading disk1.vhdx")
    page.wait_for_function(
        "document.querySelector('[data-testid=job-progress]').getAttribute('value') === '60'"
    )
    assert page.get_by_test_id("job-message").inner_text() == "Reading disk1.vhdx"

    Job.objects.filter(pk=job.pk).update(
        state=JobState.SUCCEEDED, bytes_done=1000, finished=timezone.now(), message="Completed"
    )
    page.wait_for_function("document.querySelector('.state').innerText === 'Succeeded'")
    assert page.get_by_test_id("job-progress").get_attribute("value") == "100"

    # Polling stopped: the server answered "stop polling" and htmx removed the trigger.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.wait_for_timeout(2500)
    assert not [url for url in requests if f"/jobs/{job.pk}/" in url]


def test_cancel_from_the_job_page(page: Any, live_server: Any, django_user_model: Any) -> None:
    job = Job.objects.create(kind=JobKind.SYNCHRONIZATION, state=JobState.RUNNING, started=timezone.now())
    sign_in(page, live_server, django_user_model)
    page.goto(f"{live_server.url}/protection/jobs/{job.pk}/")
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_load_state()
    assert page.get_by_text("Cancellation requested").first.is_visible()
    job.refresh_from_db()
    assert job.cancel_requested
