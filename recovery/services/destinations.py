"""Where item-level recovery may write: a folder on this server, or an SMB share.

A folder on the server is checked hard, because the web form is the only thing
between a recovery operator and the server's file system: the path must be
absolute and plain (no ``.``/``..`` parts: they are refused, not normalised, so
what is shown is what is written), it must lie inside one of the configured
recovery roots once symbolic links are resolved, and it must neither be nor hold
backup data (a datastore or the data directory).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from storage.models import Datastore

# Where recovered items may be written when the settings name no roots.
DEFAULT_RECOVERY_ROOTS = ("/srv", "/mnt", "/media")
MAX_PATH_LENGTH = 1024
SMB_DEFAULT_PORT = 445
_SERVER_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,253})$|^\[[0-9A-Fa-f:]+\]$")
_SMB_FORBIDDEN = set('<>:"|?*')


class DestinationInvalid(ValueError):
    """The destination the user gave cannot be used; the message says why."""


def recovery_roots() -> list[Path]:
    roots = getattr(settings, "RECOVERY_ROOTS", None) or DEFAULT_RECOVERY_ROOTS
    return [Path(os.path.realpath(root)) for root in roots]


def protected_folders() -> list[Path]:
    """Folders that hold backup data: recovered items must never land there."""
    folders = [Path(os.path.realpath(settings.BACKUPSITE_DATA_DIR))]
    folders += [Path(os.path.realpath(path)) for path in Datastore.objects.values_list("path", flat=True)]
    return folders


def _overlaps(path: Path, others: Iterable[Path]) -> Path | None:
    for other in others:
        if path == other or path.is_relative_to(other) or other.is_relative_to(path):
            return other
    return None


def validate_server_folder(text: str) -> Path:
    """The folder as a Path, or DestinationInvalid saying what is wrong with it."""
    text = text.strip()
    if not text:
        raise DestinationInvalid("Enter the folder on this server to copy the items to.")
    if "\x00" in text or len(text) > MAX_PATH_LENGTH:
        raise DestinationInvalid("The folder path is not valid.")
    pure = PurePosixPath(text)
    if not pure.is_absolute() or text.startswith("//"):
        raise DestinationInvalid(f"{text} is not an absolute path; give a folder such as /srv/restores.")
    if any(part in (".", "..") for part in text.split("/")):
        raise DestinationInvalid(f"{text} contains '.' or '..'; give the folder's plain absolute path.")
    real = Path(os.path.realpath(text))
    roots = recovery_roots()
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise DestinationInvalid(
            f"{text} is outside the folders recovered items may be written to ({allowed}); "
            "an administrator can change them (setting RECOVERY_ROOTS)."
        )
    clash = _overlaps(real, protected_folders())
    if clash is not None:
        raise DestinationInvalid(
            f"{text} is or holds backup data ({clash}); choose a folder outside the datastores "
            "and the server's data directory."
        )
    existing = real
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DestinationInvalid(f"{existing} exists and is not a folder.")
    return Path(text)


@dataclass(frozen=True)
class SMBLocation:
    """``\\\\server\\share\\path`` split into its parts; ``path`` uses backslashes, no leading one."""

    server: str
    share: str
    path: str
    port: int = SMB_DEFAULT_PORT

    @property
    def unc(self) -> str:
        base = f"\\\\{self.server}\\{self.share}"
        return f"{base}\\{self.path}" if self.path else base

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "share": self.share, "path": self.path, "port": self.port}


def parse_unc(text: str, port: int = SMB_DEFAULT_PORT) -> SMBLocation:
    text = text.strip()
    if not text.startswith("\\\\"):
        raise DestinationInvalid(r"An SMB destination looks like \\server\share\folder.")
    parts = text[2:].rstrip("\\").split("\\")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DestinationInvalid(r"An SMB destination needs a server and a share: \\server\share\folder.")
    server, share, rest = parts[0], parts[1], parts[2:]
    if not _SERVER_NAME.match(server):
        raise DestinationInvalid(f"{server!r} is not a valid server name or address.")
    for part in [share, *rest]:
        if not part or part in (".", "..") or part.endswith((".", " ")):
            raise DestinationInvalid(f"{text} contains an empty, '.', '..' or badly ended folder name.")
        if _SMB_FORBIDDEN & set(part) or "/" in part or any(ord(ch) < 32 for ch in part):
            raise DestinationInvalid(f"{part!r} contains characters SMB does not allow.")
    if len(text) >= 260:
        raise DestinationInvalid("The SMB path must be shorter than 260 characters.")
    if not 1 <= port <= 65535:
        raise DestinationInvalid("The SMB port must be between 1 and 65535.")
    return SMBLocation(server, share, "\\".join(rest), port)
