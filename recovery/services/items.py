"""Item-level recovery: files, folders, raw volume images and whole disks, copied
to a folder on this server or to an SMB share.

The item-level module does the reading and the safe writing; this module groups
the selection by volume, points it at the destination, turns its results into
``RecoveryItemResult`` rows and keeps the job page moving. An SMB destination
is written through a private staging folder (see ``smb.py``); the throttle is
applied where bytes leave for the destination: on the local writes for a server
folder, on the upload for a share.
"""

from __future__ import annotations

import posixpath
import shutil
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from backupsite.core.credentials import decrypt_json
from backupsite.core.jobs.context import JobCancelled, JobContext, JobError
from protection.models import RecoveryPoint
from recovery.itemlevel import (
    Conflict,
    CopyCancelled,
    CopyProgress,
    DestinationError,
    ItemLevelError,
    ItemResult,
    ItemStatus,
    NameStyle,
    copy_disk,
    copy_items,
    copy_volume_image,
    find_volume,
    list_volumes,
    safe_name,
)
from recovery.itemlevel.names import printable
from recovery.models import ItemKind, ItemState, RecoveryItemResult
from recovery.services import smb
from recovery.services.browse import ItemRef, disk_names, open_disk, open_point, parse_item
from recovery.services.destinations import SMB_DEFAULT_PORT, parse_unc, validate_server_folder
from recovery.throttle import Throttle
from storage.engine import EngineError

STATE = {
    ItemStatus.OK: ItemState.COPIED,
    ItemStatus.SKIPPED: ItemState.SKIPPED,
    ItemStatus.FAILED: ItemState.FAILED,
}
KIND = {"file": ItemKind.FILE, "dir": ItemKind.FOLDER, "link": ItemKind.FILE, "other": ItemKind.FILE}


@dataclass
class Destination:
    """Where the items go: ``folder`` is written by the item-level copy; for a share it
    is the staging folder, uploaded afterwards to ``unc``."""

    folder: Path
    display: str
    style: NameStyle
    unc: str = ""
    smb_kwargs: dict[str, Any] | None = None

    def shown(self, relative: str) -> str:
        if self.unc:
            return f"{self.unc}\\{relative.replace('/', chr(92))}" if relative else self.unc
        return posixpath.join(str(self.folder), relative) if relative else str(self.folder)


class _Progress:
    """One progress line across every group of the selection."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.finished = 0  # bytes of the groups already done
        self.current = 0
        self.total = 0

    def group(self, report: CopyProgress) -> None:
        self.current = report.bytes_done
        self.total = max(self.total, self.finished + report.bytes_total)
        self.context.progress(self.finished + self.current, self.total)

    def close_group(self) -> None:
        self.finished += self.current
        self.current = 0

    def add(self, nbytes: int) -> None:
        self.finished += nbytes
        self.total = max(self.total, self.finished)
        self.context.progress(self.finished, self.total)


def run_item_recovery(
    context: JobContext, point: RecoveryPoint, params: dict[str, Any], throttle: Throttle | None
) -> dict[str, Any]:
    disks = disk_names(point)
    try:
        items = [parse_item(raw, disks) for raw in params.get("items") or []]
    except ValueError as error:
        raise JobError(str(error)) from error
    if not items:
        raise JobError("No item was selected.")
    spec = params.get("destination") or {}
    rows: list[RecoveryItemResult] = []
    try:
        with ExitStack() as stack:
            destination = _destination(context, spec, stack)
            # A share gets its bytes on upload: throttling the local staging copy would count twice.
            copy_throttle = None if destination.unc else throttle
            started = time.monotonic()
            _copy(context, point, items, destination, copy_throttle, _Progress(context), rows)
            if destination.unc:
                _upload(context, destination, rows, throttle)
            transfer_seconds = time.monotonic() - started
    finally:
        # Whatever was recovered before a failure or a cancellation is listed too.
        for position, row in enumerate(rows):
            row.job = context.job
            row.position = position
        RecoveryItemResult.objects.bulk_create(rows, batch_size=500)
    results = rows
    copied = sum(r.size_bytes for r in results if r.state == ItemState.COPIED)
    failed = [r for r in results if r.state == ItemState.FAILED]
    context.log(
        f"{sum(1 for r in results if r.state == ItemState.COPIED)} item(s) recovered, "
        f"{sum(1 for r in results if r.state == ItemState.SKIPPED)} skipped, {len(failed)} failed"
    )
    if failed and not any(r.state == ItemState.COPIED for r in results):
        raise JobError(f"No item could be recovered: {failed[0].source}: {failed[0].message}")
    if failed:
        context.log(f"First failure: {failed[0].source}: {failed[0].message}")
    return {
        "destination": destination.display,
        "items": len(results),
        "failed": len(failed),
        "bytes": copied,
        "transfer_seconds": round(transfer_seconds, 3),
    }


def _destination(context: JobContext, spec: dict[str, Any], stack: ExitStack) -> Destination:
    if spec.get("kind") == "server":
        try:
            folder = validate_server_folder(str(spec.get("folder", "")))
        except ValueError as error:
            raise JobError(str(error)) from error
        return Destination(folder, str(folder), NameStyle.POSIX)
    if spec.get("kind") != "smb":
        raise JobError("The recovery has no destination.")
    try:
        location = parse_unc(str(spec.get("unc", "")), int(spec.get("port") or SMB_DEFAULT_PORT))
        password = decrypt_json(spec["password"])["password"] if spec.get("password") else ""
    except Exception as error:
        raise JobError(f"The SMB destination cannot be used: {error}") from error
    context.message(f"Connecting to {location.unc}")
    try:
        kwargs = stack.enter_context(smb.session(location, str(spec.get("username", "")), password))
        smb.ensure_folder(location.unc, kwargs)
    except smb.SMBDestinationError as error:
        raise JobError(str(error)) from error
    staging = Path(settings.BACKUPSITE_DATA_DIR) / "recovery-staging" / f"job-{context.job.pk}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stack.callback(shutil.rmtree, staging, True)
    return Destination(staging, location.unc, NameStyle.WINDOWS, location.unc, kwargs)


def _groups(items: Iterable[ItemRef]) -> dict[tuple[str, int | None], list[ItemRef]]:
    groups: dict[tuple[str, int | None], list[ItemRef]] = {}
    for item in items:
        key = (item.disk, None if item.kind == ItemKind.DISK else item.volume)
        groups.setdefault(key, []).append(item)
    return groups


def _copy(
    context: JobContext,
    point: RecoveryPoint,
    items: list[ItemRef],
    destination: Destination,
    throttle: Throttle | None,
    progress: _Progress,
    rows: list[RecoveryItemResult],
) -> None:
    """Copy every item, appending one row per item (or per file and folder) to ``rows``."""
    taken: set[str] = set()
    engine, _ = open_point(point)
    for (disk, volume_index), group in _groups(items).items():
        context.check_cancel()
        try:
            if volume_index is None:  # whole disks: the stored VHDX bytes, no parsing needed
                for item in group:
                    rows.append(
                        _copy_disk(context, engine, point, item, destination, throttle, progress, taken)
                    )
                continue
            with open_disk(point, disk) as opened:
                volume = find_volume(list_volumes(opened), volume_index)
                for warning in opened.warnings:
                    context.log(f"{disk}: {warning}")
                images = [i for i in group if i.kind == ItemKind.VOLUME]
                paths = [i.path for i in group if i.kind in (ItemKind.FILE, ItemKind.FOLDER)]
                for item in images:
                    rows.append(_copy_image(context, volume, item, destination, throttle, progress, taken))
                if paths:
                    _copy_paths(
                        context, volume, disk, volume_index, paths, destination, throttle, progress, rows
                    )
        except DestinationError as error:
            # A full or read-only destination fails every later item too: stop.
            raise JobError(f"The destination cannot be written: {error}") from error
        except (ItemLevelError, EngineError) as error:
            rows += [
                _row(item, ItemState.FAILED, "", 0, str(error)) for item in group if not _has_row(rows, item)
            ]


def _has_row(rows: list[RecoveryItemResult], item: ItemRef) -> bool:
    return any(r.source == item.describe() for r in rows)


def _text(value: str, limit: int = 2048) -> str:
    """Guest names may hold NUL or undecodable bytes; the database takes neither."""
    return printable(value).replace("\x00", "\\0")[:limit]


def _row(item: ItemRef, state: str, destination: str, size: int, message: str = "") -> RecoveryItemResult:
    return RecoveryItemResult(
        kind=item.kind,
        source=_text(item.describe()),
        destination=_text(destination),
        state=state,
        size_bytes=size,
        message=_text(message, 10_000),
    )


def _file_name(name: str, destination: Destination, taken: set[str]) -> str:
    """A safe, unused file name at the top of the destination for an image or a disk."""
    base = safe_name(name, destination.style).name
    stem, dot, ext = base.rpartition(".")
    if not stem:
        stem, dot, ext = base, "", ""
    candidate, n = base, 1
    while candidate.lower() in taken or (destination.folder / candidate).exists():
        n += 1
        candidate = f"{stem}~{n}{dot}{ext}"
    taken.add(candidate.lower())
    return candidate


def _copy_image(
    context: JobContext,
    volume: Any,
    item: ItemRef,
    destination: Destination,
    throttle: Throttle | None,
    progress: _Progress,
    taken: set[str],
) -> RecoveryItemResult:
    stem = posixpath.splitext(posixpath.basename(item.disk))[0]
    name = _file_name(f"{stem}-volume{volume.index + 1}.img", destination, taken)
    context.message(f"Writing an image of {volume.describe()} of {item.disk}")
    try:
        size = copy_volume_image(
            volume,
            destination.folder / name,
            progress=progress.group,
            cancel=context.is_cancelled,
            throttle=throttle,
        )
    except CopyCancelled as error:
        raise JobCancelled() from error
    progress.close_group()
    return _row(item, ItemState.COPIED, destination.shown(name), size)


def _copy_disk(
    context: JobContext,
    engine: Any,
    point: RecoveryPoint,
    item: ItemRef,
    destination: Destination,
    throttle: Throttle | None,
    progress: _Progress,
    taken: set[str],
) -> RecoveryItemResult:
    name = _file_name(posixpath.basename(item.disk), destination, taken)
    context.message(f"Writing the virtual disk {item.disk}")
    try:
        with engine.open_file(point.point_id, item.disk) as reader:
            size = copy_disk(
                reader,
                destination.folder / name,
                progress=progress.group,
                cancel=context.is_cancelled,
                throttle=throttle,
            )
    except CopyCancelled as error:
        raise JobCancelled() from error
    progress.close_group()
    return _row(item, ItemState.COPIED, destination.shown(name), size)


def _copy_paths(
    context: JobContext,
    volume: Any,
    disk: str,
    volume_index: int,
    paths: list[str],
    destination: Destination,
    throttle: Throttle | None,
    progress: _Progress,
    rows: list[RecoveryItemResult],
) -> None:
    context.message(f"Copying {len(paths)} item(s) from {volume.describe()} of {disk}")
    prefix = f"{posixpath.basename(disk)}, volume {volume_index + 1}: "
    try:
        results = copy_items(
            volume,
            paths,
            destination.folder,
            style=destination.style,
            on_conflict=Conflict.RENAME,
            progress=progress.group,
            cancel=context.is_cancelled,
            throttle=throttle,
        )
    except (CopyCancelled, DestinationError) as error:
        rows += [_result_row(prefix, result, destination) for result in getattr(error, "results", [])]
        if isinstance(error, CopyCancelled):
            raise JobCancelled() from error
        raise
    progress.close_group()
    rows += [_result_row(prefix, result, destination) for result in results]


def _result_row(prefix: str, result: ItemResult, destination: Destination) -> RecoveryItemResult:
    message = "; ".join(part for part in (result.reason, *result.notes) if part)
    return RecoveryItemResult(
        kind=KIND.get(result.kind, ItemKind.FILE),
        source=_text(prefix + result.source),
        destination=_text(destination.shown(result.target)) if result.target is not None else "",
        state=STATE[result.status],
        size_bytes=result.bytes,
        message=_text(message, 10_000),
    )


def _upload(
    context: JobContext, destination: Destination, rows: list[RecoveryItemResult], throttle: Throttle | None
) -> None:
    """Send the staged copy to the share; each row's destination becomes the name it got there."""
    total = sum(p.stat().st_size for p in destination.folder.rglob("*") if p.is_file() and not p.is_symlink())
    context.progress(0, total, message=f"Writing to {destination.unc}")
    done = 0

    def on_bytes(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if throttle is not None:
            throttle(nbytes)
        context.progress(done, total)
        context.check_cancel()

    assert destination.smb_kwargs is not None
    try:
        uploaded = smb.upload_tree(destination.folder, destination.unc, destination.smb_kwargs, on_bytes)
    except smb.SMBDestinationError as error:
        raise JobError(str(error)) from error
    except OSError as error:
        raise JobError(f"Writing to {destination.unc} failed: {error}") from error
    by_path = {entry.relative: entry for entry in uploaded}
    staged_prefix = f"{destination.unc}\\"
    for row in rows:
        if not row.destination.startswith(staged_prefix):
            continue
        relative = row.destination[len(staged_prefix) :].replace("\\", "/")
        entry = by_path.get(relative)
        if entry is None or entry.error:
            row.state = ItemState.FAILED
            row.destination = ""
            reason = entry.error if entry is not None else "its folder could not be created on the share"
            row.message = _text("; ".join(filter(None, [row.message, reason])), 10_000)
            continue
        row.destination = _text(entry.unc)
        if entry.renamed:
            row.message = "; ".join(filter(None, [row.message, "renamed: the name was taken on the share"]))
