"""Errors of the virtual-disk package.

Every message says in plain words what is wrong with which file, so a caller may
show it as is. Callers that need their own error classes map these in one place.
"""

from __future__ import annotations


class VdiskError(Exception):
    """Base class of every error raised on purpose by storage.vdisk."""


class UnreadableDisk(VdiskError):
    """The file is missing, unreadable, damaged, truncated or not of the expected format."""


class UnsupportedDisk(VdiskError):
    """A disk format or feature this package does not open."""


class ParentDiskMissing(UnreadableDisk):
    """A differencing disk's parent cannot be found."""


class InvalidRange(VdiskError, ValueError):
    """A virtual-disk range lies outside the disk."""


class NotBrowsable(VdiskError):
    """The volume holds no file system that can be browsed (unknown, encrypted, ...)."""


class EncryptedVolume(NotBrowsable):
    """BitLocker protects the volume."""


class UnreadableFileSystem(VdiskError):
    """The volume's file system is recognised but damaged or inconsistent."""


class ToolError(RuntimeError):
    """An external disk tool (qemu-img, sgdisk, mkntfs...) is missing or failed; the message
    carries its stderr."""
