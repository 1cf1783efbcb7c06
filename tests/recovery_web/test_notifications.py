"""The recovery email: addresses, content, delivery to a real SMTP server, and failures."""

from __future__ import annotations

import pytest
from django.test import override_settings

from recovery.notifications import RecoveryReport, parse_addresses, send_recovery_report
from tests.recovery_web.conftest import SMTPServer, wait_until
from tests.samba import free_port


def report(**changes: object) -> RecoveryReport:
    values: dict[str, object] = {
        "job_id": 7,
        "vm_name": "WIN01",
        "point_time": "2025-11-20 20:00:00",
        "recovery_type": "Copy to a network folder (item-level recovery)",
        "destination": "/srv/restores/t1",
        "state": "succeeded",
        "duration_seconds": 3.4,
        "bytes_recovered": 5 * 1024 * 1024,
        "items": ["notes.txt -> /srv/restores/t1/notes.txt: Recovered"],
        "url": "/recovery/jobs/7/",
    }
    values.update(changes)
    return RecoveryReport(**values)  # type: ignore[arg-type]


def test_addresses_are_validated_and_deduplicated() -> None:
    assert parse_addresses("a@example.com; b@example.com,\nA@example.com  c@example.org") == [
        "a@example.com",
        "b@example.com",
        "c@example.org",
    ]
    assert parse_addresses("  ") == []
    with pytest.raises(ValueError, match="not-an-address"):
        parse_addresses("a@example.com, not-an-address")
    with pytest.raises(ValueError, match="At most"):
        parse_addresses(", ".join(f"u{i}@example.com" for i in range(21)))


def test_report_says_what_where_result_duration_and_bytes() -> None:
    body = report().body()
    assert "WIN01, recovery point of 2025-11-20 20:00:00" in body
    assert "Where:       /srv/restores/t1" in body
    assert "Result:      succeeded" in body
    assert "Duration:    0:00:03" in body
    assert "5,242,880 (5.0 MiB)" in body
    assert report().subject == "Recovery of WIN01 succeeded (job #7)"
    failed = report(state="failed", reason="the original host is gone")
    assert "FAILED" in failed.subject and "Result:      failed: the original host is gone" in failed.body()


def test_sent_with_the_default_mailer(mailoutbox: list) -> None:
    assert send_recovery_report(report(), ["ops@example.com"]) == ""
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["ops@example.com"]
    assert send_recovery_report(report(), []) == "" and len(mailoutbox) == 1


@pytest.mark.slow
def test_delivered_to_a_real_smtp_server(smtp_server: SMTPServer) -> None:
    with override_settings(MAILERS=smtp_server.mailers()):
        assert send_recovery_report(report(), ["ops@example.com", "dba@example.com"]) == ""
    wait_until(lambda: len(smtp_server.messages) == 1)
    message = smtp_server.messages[0]
    assert message["To"] == "ops@example.com, dba@example.com"
    assert message["Subject"] == "Recovery of WIN01 succeeded (job #7)"
    assert "Bytes:       5,242,880" in message.get_payload(decode=True).decode()


def test_an_unreachable_mail_server_is_reported_not_raised() -> None:
    mailers = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": free_port(), "timeout": 2},
        }
    }
    with override_settings(MAILERS=mailers):
        problem = send_recovery_report(report(), ["ops@example.com"])
    assert problem.startswith("The notification email could not be sent")
