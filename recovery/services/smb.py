"""Writing recovered items to an SMB share with smbprotocol's ``smbclient``.

Item-level copies are made into a local staging folder first (the item-level
module writes through directory descriptors, which only a local file system
has), then uploaded here. Every name uploaded is a single, Windows-safe path
component that the item-level copy already produced; it is checked again
before it is joined to the share path, so no name can climb out of the
destination folder. Existing items on the share are never overwritten: a
clashing name gets a ``~2`` style suffix.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import smbclient
from smbprotocol.exceptions import SMBException, SMBOSError

from recovery.services.destinations import SMBLocation

BLOCK = 1024 * 1024
_ZERO = bytes(BLOCK)
_BAD_COMPONENT = set('\\/:*?"<>|\x00')

OnBytes = Callable[[int], None]


class SMBDestinationError(Exception):
    """The share cannot be reached or written; the message says what happened."""


@dataclass
class Uploaded:
    relative: str  # "/"-joined path under the staging folder
    unc: str  # where it went on the share
    renamed: bool
    error: str = ""  # why it could not be written; "" when it was


def _check_component(name: str) -> str:
    if not name or name in (".", "..") or _BAD_COMPONENT & set(name) or len(name) > 255:
        raise SMBDestinationError(f"refusing to write an item named {name!r} to the share")
    return name


@contextlib.contextmanager
def session(location: SMBLocation, username: str, password: str) -> Iterator[dict[str, Any]]:
    """Register an authenticated session for the recovery; yields the kwargs every call needs."""
    kwargs: dict[str, Any] = {"port": location.port}
    try:
        smbclient.register_session(
            location.server,
            username=username or None,
            password=password or None,
            port=location.port,
            connection_timeout=30,
        )
    except (SMBException, OSError, ValueError) as error:
        raise SMBDestinationError(f"cannot connect to {location.unc}: {error}") from error
    try:
        yield kwargs
    finally:
        with contextlib.suppress(Exception):
            smbclient.delete_session(location.server, port=location.port)


def ensure_folder(unc: str, kwargs: dict[str, Any]) -> None:
    try:
        smbclient.makedirs(unc, exist_ok=True, **kwargs)
    except (SMBException, OSError) as error:
        raise SMBDestinationError(f"cannot create the folder {unc}: {error}") from error


def _exists(unc: str, kwargs: dict[str, Any]) -> bool:
    try:
        smbclient.lstat(unc, **kwargs)
    except SMBOSError as error:
        if error.errno == 2:
            return False
        raise
    except FileNotFoundError:
        return False
    return True


def free_name(folder: str, name: str, kwargs: dict[str, Any]) -> tuple[str, bool]:
    """``name``, or ``stem~N.ext`` when the share already has an item with that name."""
    _check_component(name)
    candidate, n = name, 1
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    while _exists(f"{folder}\\{candidate}", kwargs):
        n += 1
        candidate = f"{stem}~{n}{dot}{ext}"
    return candidate, candidate != name


def write_stream(
    src: BinaryIO, size: int, unc: str, kwargs: dict[str, Any], on_bytes: OnBytes | None = None
) -> int:
    """Copy ``size`` bytes of ``src`` to a new file ``unc``; zero blocks are skipped (left sparse)."""
    # A short temporary name: the final one may already be as long as the share allows.
    folder = unc.rsplit("\\", 1)[0]
    tmp = f"{folder}\\.hvbs-partial-{uuid.uuid4().hex[:12]}"
    try:
        with smbclient.open_file(tmp, mode="xb", **kwargs) as out:
            pos = 0
            while pos < size:
                data = src.read(min(BLOCK, size - pos))
                if not data:
                    raise SMBDestinationError(f"the data ended after {pos} of {size} bytes")
                if data != _ZERO[: len(data)]:
                    out.seek(pos)
                    out.write(data)
                    if on_bytes is not None:
                        on_bytes(len(data))
                pos += len(data)
            out.truncate(size)
        smbclient.rename(tmp, unc, **kwargs)
    except BaseException:
        with contextlib.suppress(Exception):
            smbclient.remove(tmp, **kwargs)
        raise
    return size


def upload_tree(
    staging: Path, folder_unc: str, kwargs: dict[str, Any], on_bytes: OnBytes | None = None
) -> list[Uploaded]:
    """Upload the staging folder's contents into ``folder_unc``, keeping names and times."""
    ensure_folder(folder_unc, kwargs)
    uploaded: list[Uploaded] = []
    folder_times: list[tuple[str, os.stat_result]] = []
    mapped: dict[str, str] = {"": folder_unc}
    for root, dirs, files in os.walk(staging, followlinks=False):
        rel_root = os.path.relpath(root, staging)
        rel_root = "" if rel_root == "." else rel_root
        parent_unc = mapped[rel_root]
        dirs.sort()
        for name in list(dirs):
            local = Path(root) / name
            rel = f"{rel_root}/{name}" if rel_root else name
            if local.is_symlink():
                continue  # the item-level copy never makes links; one here was not made by it
            try:
                target, renamed = free_name(parent_unc, name, kwargs)
                unc = f"{parent_unc}\\{target}"
                ensure_folder(unc, kwargs)
            except (SMBException, SMBDestinationError) as error:
                uploaded.append(Uploaded(rel, "", False, f"cannot be created on the share: {error}"))
                dirs.remove(name)  # its contents have nowhere to go
                continue
            mapped[rel] = unc
            folder_times.append((unc, local.stat()))
            uploaded.append(Uploaded(rel, unc, renamed))
        for name in sorted(files):
            local = Path(root) / name
            if local.is_symlink() or not local.is_file():
                continue
            rel = f"{rel_root}/{name}" if rel_root else name
            try:
                target, renamed = free_name(parent_unc, name, kwargs)
                unc = f"{parent_unc}\\{target}"
                info = local.stat()
                with local.open("rb") as src:
                    write_stream(src, info.st_size, unc, kwargs, on_bytes)
            except (SMBException, SMBDestinationError) as error:
                uploaded.append(Uploaded(rel, "", False, f"cannot be written to the share: {error}"))
                continue
            _set_times(unc, info, kwargs)
            uploaded.append(Uploaded(rel, unc, renamed))
    for unc, info in reversed(folder_times):  # deepest first: writing children changes a folder's time
        _set_times(unc, info, kwargs)
    return uploaded


def _set_times(unc: str, info: os.stat_result, kwargs: dict[str, Any]) -> None:
    with contextlib.suppress(SMBException, OSError):
        # A share that refuses timestamps still gets the data.
        smbclient.utime(unc, ns=(info.st_atime_ns, info.st_mtime_ns), **kwargs)
