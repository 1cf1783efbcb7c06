"""Hostile input in the recovery wizard, generated, on a real recovery point.

Every step of the wizard is posted hypothesis-made values (and the ones known to be
awkward: NUL, nan, huge numbers, UNC paths, JSON that is not an item); the answer is
always a page (the step with its error), never a 500, and the draft stays usable: the
wizard and the file browser still render afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from recovery.models import RecoveryDraft, RecoveryType, WizardStep
from tests.recovery_web.conftest import (  # noqa: F401 - fixtures
    BackedUpLab,
    backed_up_lab,
    lab_template,
    make_draft,
    protected_lab,
    user_of,
)
from tests.reliability.test_hostile_input import FUZZ, HOSTILE_TEXT

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

FIELDS: dict[str, list[str]] = {
    WizardStep.REVIEW: [],
    WizardStep.TYPE: ["recovery_type"],
    WizardStep.TARGET: ["host", "path", "kind", "folder", "unc", "port", "username", "password"],
    WizardStep.ITEMS: ["item"],
    WizardStep.OPTIONS: [
        "throttle", "rate_mbps", "work_rate_mbps", "off_rate_mbps", "work_start", "work_end",
        "work_days", "san", "notify",
    ],
    WizardStep.SUMMARY: [],
}  # fmt: skip
ITEM_VALUES = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from(
        [
            '{"disk": "Virtual Hard Disks/x.vhdx", "volume": 0, "path": "/"}',
            '{"disk": "../../etc/passwd"}',
            '{"disk": 5, "volume": "a", "path": null}',
            "[1, 2, 3]",
            '{"volume": 99999999999999999999}',
        ]
    ),
)


def test_recovery_wizard_drafts_are_never_poisoned(
    recovery_client: Client,
    backed_up_lab: BackedUpLab,  # noqa: F811 - the fixture imported above
) -> None:
    client = recovery_client
    client.raise_request_exception = False
    point = backed_up_lab.windows_point
    draft = make_draft(user_of(client), point, WizardStep.REVIEW, type=RecoveryType.ITEMS)
    url = reverse("recovery:wizard", args=[draft.pk])
    browse = reverse("recovery:browse", args=[draft.pk])
    failures: list[str] = []

    @FUZZ
    @given(
        step=st.sampled_from(list(FIELDS)),
        data=st.data(),
        action=st.sampled_from(["next", "back", "", "\x00", "recover", "summary"]),
        recovery_type=st.sampled_from([*RecoveryType.values, "nan", "\x00"]),
    )
    def probe(step: str, data: Any, action: str, recovery_type: str) -> None:
        # Any step, even one the draft's type does not walk (the view must cope).
        RecoveryDraft.objects.filter(pk=draft.pk).update(step=step)
        fields = data.draw(st.lists(st.sampled_from(FIELDS[step] or ["x"]), max_size=4, unique=True))
        values: dict[str, Any] = {
            field: data.draw(
                st.lists(ITEM_VALUES if field == "item" else HOSTILE_TEXT, min_size=1, max_size=3)
            )
            for field in fields
        }
        if step == WizardStep.TYPE and "recovery_type" not in values:
            values["recovery_type"] = recovery_type
        posted = client.post(url, {**values, "step": step, "action": action})
        if posted.status_code >= 500:
            failures.append(f"POST {step} {values!r} action={action!r} -> {posted.status_code}")
        for answer, what in [
            (client.get(url), "wizard"),
            (client.get(url, headers={"HX-Request": "true"}), "wizard fragment"),
            (client.get(browse, {"disk": backed_up_lab.disk_name(backed_up_lab.windows)}), "browser"),
        ]:
            if answer.status_code >= 500:
                failures.append(f"GET {what} after POST {step} {values!r} -> {answer.status_code}")

    probe()
    assert not failures, "\n".join(failures[:20])
    draft.refresh_from_db()
    assert "\x00" not in repr(draft.data)
