"""Steps the end-to-end browser tests share: signing in, watching a job finish on its page,
and protecting VMs through the 7-step wizard."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group
from playwright.sync_api import expect

from backupsite.core.models import ACTIVE_STATES, Job, JobKind, JobState
from backupsite.core.permissions import Role
from tests.browser.workers import WorkerCluster

PASSWORD = "an-end-to-end-browser-test-password"
JOB_TIMEOUT_MS = 40_000
FINISHED = re.compile(r"^(Succeeded|Failed|Cancelled)$")


class Clock:
    """Wall-clock seconds of each phase, printed at the end (``-s`` shows them)."""

    def __init__(self) -> None:
        self.begun = self.last = time.monotonic()
        self.phases: list[tuple[str, float]] = []
        self.figures: dict[str, object] = {}

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def report(self) -> str:
        lines = [f"  {phase:<42} {seconds:6.1f} s" for phase, seconds in self.phases]
        lines.append(f"  {'total (test body)':<42} {time.monotonic() - self.begun:6.1f} s")
        lines += [f"  {name} = {value}" for name, value in self.figures.items()]
        return "\n".join(lines)


@contextmanager
def reported_failure(page: Any, tmp_path: Path, clock: Clock) -> Iterator[None]:
    """On any failure inside, save a screenshot of the page and print the timings so far."""
    try:
        yield
    except BaseException:
        shot = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failure: {shot} (page {page.url})")
        except Exception as error:  # the browser itself may be what failed
            print(f"no screenshot: {error}")
        print(f"timings so far:\n{clock.report()}")
        raise


def sign_in(
    page: Any, live_server: Any, django_user_model: Any, username: str, role: Role, landing: str = "/"
) -> None:
    """Create a user with ``role``, sign in as them and wait for ``landing``."""
    user = django_user_model.objects.create_user(username=username, password=PASSWORD)
    # get_or_create: transactional tests flush the groups the roles migration made.
    user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    page.goto(f"{live_server.url}{landing}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}{landing}")


def sign_in_as_administrator(page: Any, live_server: Any, django_user_model: Any) -> None:
    sign_in(page, live_server, django_user_model, "e2e-admin", Role.ADMINISTRATOR)


def flashed_job_numbers(page: Any) -> list[int]:
    text = page.locator(".flash-success").first.inner_text()
    return [int(number) for number in re.findall(r"#(\d+)", text)]


def wait_for_job_page(page: Any, live_server: Any, job_id: int) -> str:
    """Open the job page and let htmx poll it until the job has finished; returns its message."""
    page.goto(f"{live_server.url}/protection/jobs/{job_id}/")
    state = page.locator("#job-status .state")
    expect(state).to_have_text(FINISHED, timeout=JOB_TIMEOUT_MS)
    if state.inner_text() != "Succeeded":
        error = page.get_by_test_id("job-error")
        details = error.inner_text() if error.count() else page.get_by_test_id("job-log").inner_text()
        raise AssertionError(f"job #{job_id} ended {state.inner_text()}: {details}")
    # Finished: the server answered "stop polling" and htmx stopped polling, so the section lost its trigger.
    expect(page.locator("#job-status")).not_to_have_attribute("hx-get", re.compile(".*"))
    return str(page.get_by_test_id("job-message").inner_text())


def reload_until(page: Any, locator: Any, timeout: float = 30.0) -> None:
    """Reload the page until ``locator`` matches something (pages without polling)."""
    deadline = time.monotonic() + timeout
    while not locator.count():
        if time.monotonic() > deadline:
            raise AssertionError(f"{locator} did not appear within {timeout:.0f} s on {page.url}")
        page.wait_for_timeout(500)
        page.reload()


def wait_until_idle(cluster: WorkerCluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while Job.objects.filter(state__in=ACTIVE_STATES).exists():
        cluster.check_alive()
        if time.monotonic() > deadline:
            active = list(
                Job.objects.filter(state__in=ACTIVE_STATES).values("pk", "kind", "state", "message")
            )
            raise AssertionError(f"jobs still active after {timeout:.0f} s: {active}")
        time.sleep(0.25)


def protect_with_wizard(page: Any, members: list[str], group: str, slot: datetime) -> None:
    """Create protection group ``group`` of ``members`` through the 7 wizard steps: disk
    protection on datastore "Default", a sync every 15 minutes, a recovery point every day at
    ``slot``, replicas over the network now. Ends on the new group's page."""
    page.get_by_role("link", name="Protection", exact=True).click()
    page.get_by_role("button", name="Create protection group").click()
    step = page.locator("#wizard h2")
    expect(step).to_have_text("Step 1 of 7: Select group members")
    for member in members:
        page.get_by_label(member).check()
    next_button = page.get_by_role("button", name="Next")
    next_button.click()

    expect(step).to_have_text("Step 2 of 7: Data protection method")
    page.get_by_label("Group name").fill(group)
    page.get_by_label("Short-term protection on disk").check()
    next_button.click()

    expect(step).to_have_text("Step 3 of 7: Short-term goals")
    page.get_by_label("Retention range (days)").fill("5")
    page.get_by_label("Synchronization frequency").select_option(label="Every 15 minutes")
    page.get_by_label("Recovery point times").fill(slot.strftime("%H:%M"))
    for day in page.locator("input[name=recovery_point_days]").all():
        day.check()
    next_button.click()

    expect(step).to_have_text("Step 4 of 7: Review disk allocation")
    # Each option says whether the datastore is shared, and with which groups.
    page.get_by_label("Datastore").select_option(label="Default (colocation on, no group yet)")
    expect(page.get_by_test_id("colocation")).to_contain_text("No other group uses datastore Default yet")
    # A change re-estimates over htmx and swaps only the figures.
    provision = page.get_by_test_id("provision")
    expect(provision).not_to_have_text("")
    before = provision.inner_text()
    page.get_by_label("Daily change rate (%)").fill("40")
    page.get_by_label("Daily change rate (%)").press("Tab")
    expect(provision).not_to_have_text(before)
    # Typing while a re-estimate is in flight is kept, and Next straight after typing moves on.
    page.get_by_label("Daily change rate (%)").fill("3")
    next_button.click()

    expect(step).to_have_text("Step 5 of 7: Replica creation method")
    page.get_by_label("Over the network, now").check()
    next_button.click()

    expect(step).to_have_text("Step 6 of 7: Consistency check options")
    page.get_by_label("Run a consistency check when a replica becomes inconsistent").check()
    page.get_by_label("Also run a consistency check every day at").fill("")
    next_button.click()

    expect(step).to_have_text("Step 7 of 7: Summary")
    for member in members:
        expect(page.get_by_test_id("summary-members")).to_contain_text(member)
    expect(page.get_by_test_id("summary-name")).to_have_text(group)
    expect(page.locator("section.summary")).to_contain_text(f"{slot:%H:%M} every day")
    expect(page.locator("section.summary")).to_contain_text("daily change rate 3.0 %")
    page.get_by_role("button", name="Create group").click()
    page.wait_for_url(re.compile(r"/protection/groups/\d+/$"))
    expect(page.locator(".flash-success")).to_contain_text(f"Protection group {group} created.")


# --------------------------------------------------------------------------- recovery wizard


def next_step(page: Any, heading: str) -> None:
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name=heading).wait_for()


def recover_and_wait(page: Any) -> tuple[Job, float]:
    started = time.monotonic()
    page.get_by_test_id("recover-button").click()
    page.wait_for_url("**/recovery/jobs/*/", timeout=60_000)
    page.wait_for_function("document.querySelector('.state').innerText === 'Succeeded'", timeout=60_000)
    elapsed = time.monotonic() - started
    job = Job.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[-1]))
    assert job.kind == JobKind.RECOVERY and job.state == JobState.SUCCEEDED, job.traceback
    return job, elapsed


def same_disk(left: Path, right: Path) -> None:
    subprocess.run(["cmp", str(left), str(right)], check=True)
    subprocess.run(["qemu-img", "compare", "-q", str(left), str(right)], check=True)
