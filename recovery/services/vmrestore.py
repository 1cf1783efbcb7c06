"""Recover a whole VM: to its original instance, or as a new VM on any host.

The point's files are streamed to the connector through ``engine.open_file``
readers rather than restored to a staging folder first: that needs no scratch
space next to the destination, writes every byte once, and works the same when
the destination is a remote Hyper-V host reached over SMB. The throttle and the
progress meter sit on those readers, so they count exactly the bytes handed to
the host.
"""

from __future__ import annotations

import io
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from backupsite.core.jobs.context import JobContext, JobError
from protection.connectors import ConnectorError, Finding, RestoreTarget, Severity
from protection.models import Host, ProtectedDataSource, RecoveryPoint, VirtualMachine
from protection.services.inventory import sync_host_inventory
from recovery.models import ItemKind, ItemState, RecoveryItemResult, RecoveryType
from recovery.services.browse import PointUnavailable, open_point
from recovery.throttle import Throttle
from storage.engine import EngineError

POINT_UNREADABLE = "point-unreadable"
MAX_PATH = 260  # Hyper-V cannot register a VM whose file paths reach this length


@dataclass(frozen=True)
class VMTarget:
    host: Host
    target: RestoreTarget

    def describe(self) -> str:
        if self.target.mode == "original":
            return f"original instance on {self.host}"
        return f"{self.target.path} on {self.host} (new virtual machine)"


def restore_target(vm: VirtualMachine, recovery_type: str, target: dict[str, Any]) -> VMTarget:
    if recovery_type == RecoveryType.ORIGINAL:
        return VMTarget(vm.host, RestoreTarget("original"))
    host = Host.objects.filter(pk=int(target.get("host") or 0)).first()
    if host is None:
        raise JobError("The destination host no longer exists.")
    return VMTarget(host, RestoreTarget("alternate", host.address, str(target.get("path", ""))))


def point_file_names(point: RecoveryPoint) -> list[str]:
    return [f.name for f in open_point(point)[1].files]


def check_target(vm: VirtualMachine, point: RecoveryPoint, where: VMTarget) -> list[Finding]:
    """The connector's findings about restoring ``point`` there; any ERROR means refuse."""
    if where.target.mode == "alternate" and len(where.target.path) >= MAX_PATH:
        return [
            Finding(
                "recovery-path-too-long",
                Severity.ERROR,
                f"The destination path has {len(where.target.path)} characters; Hyper-V needs "
                f"paths shorter than {MAX_PATH}.",
                "Choose a shorter destination folder.",
            )
        ]
    try:
        names = point_file_names(point)
    except PointUnavailable as error:
        return [Finding(POINT_UNREADABLE, Severity.ERROR, str(error), "Choose another recovery point.")]
    try:
        return where.host.connector().check_restore_target(vm.hyperv_id, where.target, names)
    except ConnectorError as error:
        return [Finding("target-unreachable", Severity.ERROR, str(error), "Check the host, or pick another.")]


def refusal(findings: list[Finding], recovery_type: str) -> str:
    """The explanation shown (and logged) when a destination is refused."""
    errors = [f for f in findings if f.severity == Severity.ERROR]
    text = " ".join(f"{f.message} {f.fix}".strip() for f in errors)
    # Another location does not help when the point itself cannot be read.
    point_unreadable = any(f.code == POINT_UNREADABLE for f in errors)
    if recovery_type == RecoveryType.ORIGINAL and "alternate" not in text.lower() and not point_unreadable:
        text += " You can recover the VM to an alternate location (any host) instead."
    return text


class _MeteredReader(io.RawIOBase):
    """A point file reader that reports every byte it hands out (throttle, progress, cancel)."""

    def __init__(self, reader: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._reader = reader
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._reader.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._on_bytes(n)
        return n

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class Meter:
    """Counts bytes across all files, applies the throttle, keeps the job page current."""

    def __init__(self, context: JobContext, total: int, throttle: Throttle | None) -> None:
        self.context = context
        self.total = total
        self.throttle = throttle
        self.done = 0

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        if self.throttle is not None:
            self.throttle(nbytes)
        self.context.progress(self.done, self.total)
        self.context.check_cancel()


def run_vm_recovery(
    context: JobContext,
    vm: VirtualMachine,
    point: RecoveryPoint,
    recovery_type: str,
    target: dict[str, Any],
    throttle: Throttle | None,
) -> dict[str, Any]:
    where = restore_target(vm, recovery_type, target)
    context.message(f"Checking the destination: {where.describe()}")
    findings = check_target(vm, point, where)
    for finding in findings:
        context.log(f"{finding.severity}: {finding.message}")
    if any(f.severity == Severity.ERROR for f in findings):
        raise JobError(refusal(findings, recovery_type))

    engine, info = open_point(point)
    meter = Meter(context, info.total_bytes, throttle)
    context.progress(
        0, info.total_bytes, message=f"Recovering {len(info.files)} file(s) to {where.describe()}"
    )

    def opener(name: str) -> Callable[[], BinaryIO]:
        def open_file() -> BinaryIO:
            reader: Any = engine.open_file(point.point_id, name)
            return _MeteredReader(reader, meter)  # type: ignore[return-value]

        return open_file

    files = {f.name: opener(f.name) for f in info.files}
    connector = where.host.connector()
    started = time.monotonic()
    try:
        result = connector.restore_vm(vm.hyperv_id, files, where.target)
    except ConnectorError as error:
        raise JobError(f"The host refused the recovery: {error}") from error
    except EngineError as error:
        raise JobError(f"The recovery point could not be read: {error}") from error
    transfer_seconds = time.monotonic() - started
    for position, f in enumerate(info.files):
        RecoveryItemResult.objects.create(
            job=context.job,
            position=position,
            kind=ItemKind.VM_FILE,
            source=f.name,
            destination=posixpath.join(result.vm.path, f.name) if result.vm.path else f.name,
            state=ItemState.COPIED if f.name in result.files_written else ItemState.SKIPPED,
            size_bytes=f.size,
        )
    context.log(
        f"{len(result.files_written)} file(s) written to {result.vm.path}; "
        + ("registered as a new virtual machine" if result.new_registration else "registered again")
        + f" ({result.vm.name}, id {result.vm.id})"
    )
    if recovery_type == RecoveryType.ORIGINAL:
        # The disks changed under change tracking: the next backup must compare every block.
        source = ProtectedDataSource.objects.filter(vm=vm).first()
        if source is not None and source.change_tracking_refs:
            refs = dict(source.change_tracking_refs)
            refs["refs"] = {}
            ProtectedDataSource.objects.filter(pk=source.pk).update(change_tracking_refs=refs)
    context.message(f"Refreshing the inventory of {where.host}")
    try:
        sync_host_inventory(where.host)
    except ConnectorError as error:
        context.log(f"The inventory of {where.host} could not be refreshed: {error}")
    return {
        "destination": where.describe(),
        "vm_id": result.vm.id,
        "vm_name": result.vm.name,
        "vm_path": result.vm.path,
        "new_registration": result.new_registration,
        "files": list(result.files_written),
        "bytes": meter.done,
        "transfer_seconds": round(transfer_seconds, 3),
    }
