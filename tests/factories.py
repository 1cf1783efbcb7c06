"""Small helpers that make catalog rows for tests (no lab disks involved)."""

from __future__ import annotations

import uuid
from typing import Any

from backupsite.core.models import Job, JobKind
from protection.models import ConnectionKind, Host, VirtualMachine


def make_host(name: str = "hv01", **fields: Any) -> Host:
    return Host.objects.create(
        name=name,
        connection_kind=fields.pop("connection_kind", ConnectionKind.LAB),
        address=fields.pop("address", f"/nonexistent/{name}"),
        **fields,
    )


def make_vm(name: str = "vm01", host: Host | None = None, **fields: Any) -> VirtualMachine:
    host = host or Host.objects.first() or make_host()
    return VirtualMachine.objects.create(name=name, host=host, hyperv_id=str(uuid.uuid4()), **fields)


def make_job(kind: str = JobKind.VERIFY, **fields: Any) -> Job:
    return Job.objects.create(kind=kind, **fields)
