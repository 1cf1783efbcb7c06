"""The email sent when a recovery finishes: what, where, result, duration, bytes.

Sent through Django 6.1's ``MAILERS`` ("default" mailer). A mail server that is
down must never turn a successful recovery into a failed job, so sending errors
are returned to the caller (who writes them to the job log) instead of raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.validators import validate_email

logger = logging.getLogger(__name__)
MAX_RECIPIENTS = 20


def parse_addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons or white space; ValueError names a bad one."""
    raw = [part.strip() for part in text.replace(";", ",").replace("\n", ",").split(",")]
    addresses: list[str] = []
    for part in raw:
        for address in part.split():
            if not address:
                continue
            try:
                validate_email(address)
            except Exception:
                raise ValueError(f"{address!r} is not a valid email address.") from None
            if address.lower() not in (a.lower() for a in addresses):
                addresses.append(address)
    if len(addresses) > MAX_RECIPIENTS:
        raise ValueError(f"At most {MAX_RECIPIENTS} addresses can be notified.")
    return addresses


@dataclass
class RecoveryReport:
    job_id: int
    vm_name: str
    point_time: str
    recovery_type: str
    destination: str
    state: str  # "succeeded", "failed" or "cancelled"
    duration_seconds: float
    bytes_recovered: int
    reason: str = ""
    items: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def subject(self) -> str:
        outcome = {"succeeded": "succeeded", "failed": "FAILED", "cancelled": "was cancelled"}.get(
            self.state, self.state
        )
        return f"Recovery of {self.vm_name} {outcome} (job #{self.job_id})"

    def body(self) -> str:
        lines = [
            f"Recovery job #{self.job_id} {self.state}.",
            "",
            f"What:        {self.vm_name}, recovery point of {self.point_time}",
            f"Type:        {self.recovery_type}",
            f"Where:       {self.destination}",
            f"Result:      {self.state}" + (f": {self.reason}" if self.reason else ""),
            f"Duration:    {timedelta(seconds=round(self.duration_seconds))}",
            f"Bytes:       {self.bytes_recovered:,} ({_human(self.bytes_recovered)})",
        ]
        if self.items:
            lines += ["", "Items:"] + [f"  - {item}" for item in self.items[:200]]
            if len(self.items) > 200:
                lines.append(f"  ... and {len(self.items) - 200} more")
        if self.url:
            lines += ["", f"Details: {self.url}"]
        return "\n".join(lines) + "\n"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "bytes" else f"{int(value)} bytes"
        value /= 1024
    return f"{size} bytes"


def send_recovery_report(report: RecoveryReport, recipients: list[str]) -> str:
    """Send the report; returns "" when sent, or why it could not be sent."""
    if not recipients:
        return ""
    message = EmailMessage(
        subject=report.subject,
        body=report.body(),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    try:
        message.send(using="default")
    except Exception as error:  # any SMTP/socket failure: report it, keep the recovery's outcome
        logger.warning("recovery email for job %s not sent: %s", report.job_id, error)
        return f"The notification email could not be sent: {error}"
    return ""
