"""Errors of item-level recovery.

Every message is meant to be shown to an administrator as is: it names the
thing that failed in plain words and says what to do instead, and never carries
a parser's traceback text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from storage import vdisk
from storage.engine.errors import EngineError

if TYPE_CHECKING:
    from .extract import ItemResult


class ItemLevelError(Exception):
    """Base class of every error raised on purpose by item-level recovery."""


class UnreadableDisk(ItemLevelError):
    """The virtual disk file cannot be parsed (damaged, or not a VHD/VHDX)."""


class UnsupportedDisk(ItemLevelError):
    """A disk format or feature that item-level recovery cannot open."""


class ParentDiskMissing(UnreadableDisk):
    """A differencing disk's parent is not in the recovery point."""


class NotBrowsable(ItemLevelError):
    """The volume has no file system that can be browsed (unknown, encrypted...)."""


class EncryptedVolume(NotBrowsable):
    """BitLocker (or another encryption) protects the volume."""


class UnreadableFileSystem(ItemLevelError):
    """The volume's file system is recognised but damaged or inconsistent."""


class ItemNotFound(ItemLevelError):
    """No file or folder at that path."""


class NotADirectory(ItemLevelError):
    """A folder was expected."""


class IsADirectory(ItemLevelError):
    """A file was expected."""


class DestinationError(ItemLevelError):
    """The destination cannot be written (not a folder, exists, full...); ``results`` holds what was done."""

    def __init__(self, message: str, results: list[ItemResult] | None = None) -> None:
        super().__init__(message)
        self.results: list[ItemResult] = results or []


class CopyCancelled(ItemLevelError):
    """The copy was cancelled; ``results`` holds what was finished before."""

    def __init__(self, message: str, results: list[ItemResult] | None = None) -> None:
        super().__init__(message)
        self.results: list[ItemResult] = results or []


# Most specific first: the first class an error is an instance of decides.
_ITEM_ERRORS: list[tuple[type[vdisk.VdiskError], type[ItemLevelError]]] = [
    (vdisk.ParentDiskMissing, ParentDiskMissing),
    (vdisk.UnreadableDisk, UnreadableDisk),
    (vdisk.UnsupportedDisk, UnsupportedDisk),
    (vdisk.EncryptedVolume, EncryptedVolume),
    (vdisk.NotBrowsable, NotBrowsable),
    (vdisk.UnreadableFileSystem, UnreadableFileSystem),
]


@contextlib.contextmanager
def item_errors(what: str) -> Iterator[None]:
    """storage.vdisk's errors as item-level errors; the backup store's read errors named as such."""
    try:
        yield
    except vdisk.VdiskError as exc:
        mapped = next((item for lib, item in _ITEM_ERRORS if isinstance(exc, lib)), UnreadableDisk)
        raise mapped(str(exc)) from exc
    except EngineError as exc:
        raise UnreadableDisk(f"the backup data of {what} cannot be read: {exc}") from exc
