"""What the live system says about a folder: its mount, file system, size and writability.

Pure (no Django): the storage pool's pages and checks call it every time, since a
volume can be unmounted, remounted read-only or replaced at any moment. The mount
table is ``/proc/self/mountinfo`` (this process's mount namespace, unlike
``/proc/mounts`` it names the device and the file system separately and escapes
spaces as ``\\040``).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
# A file system the kernel turned read-only after an error, while the mount itself stays
# "rw": ext4 (errors=remount-ro, Linux 6.x) says "emergency_ro" in its super options and
# statvfs does not report ST_RDONLY, yet every write fails with EROFS.
READ_ONLY_SUPER_OPTIONS = frozenset({"ro", "emergency_ro"})
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    device: str
    read_only: bool


@dataclass(frozen=True)
class Space:
    total: int
    used: int
    free: int  # available to this (unprivileged or not) process, like df's "Avail"


def unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mountinfo as octal escapes."""
    return _OCTAL.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts in the order the kernel lists them (a later mount on the same point hides an earlier one).

    Line format (proc(5)): ``id parent major:minor root mount-point options [optional...] -
    fstype source super-options``.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            mount_point, options = fields[4], fields[5]
            fs_type, device = fields[separator + 1], fields[separator + 2]
        except (ValueError, IndexError):
            continue  # a line this parser does not understand is skipped, not fatal
        super_options = fields[separator + 3].split(",") if len(fields) > separator + 3 else []
        mounts.append(
            Mount(
                mount_point=unescape(mount_point),
                fs_type=unescape(fs_type),
                device=unescape(device),
                read_only="ro" in options.split(",") or bool(READ_ONLY_SUPER_OPTIONS & set(super_options)),
            )
        )
    return mounts


def mount_table() -> list[Mount]:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            return parse_mountinfo(handle.read())
    except OSError:
        return []


def contains(outer: str, inner: str) -> bool:
    """True when ``inner`` is ``outer`` or lies under it (both absolute, normalised)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def mount_of(path: str, table: list[Mount] | None = None) -> Mount | None:
    """The mount holding ``path``: the longest mount point that contains it (the last one
    listed when several are stacked on the same point). Symbolic links are resolved."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for mount in mount_table() if table is None else table:
        if contains(mount.mount_point, real) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def disk_space(path: str) -> Space | None:
    """Size of the file system holding ``path``, or None when it cannot be reached."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return Space(usage.total, usage.used, usage.free)


def read_only(path: str) -> bool:
    """True on a read-only mount (statvfs says so even where access() would not tell root),
    or on a file system the kernel made read-only after an error (only mountinfo says so)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    mount = mount_of(path)
    return mount is not None and mount.read_only


def writable(path: str) -> bool:
    """False on a read-only mount even for root, or a folder this process cannot write."""
    try:
        os.statvfs(path)
    except OSError:
        return False
    if read_only(path):
        return False
    return os.access(path, os.W_OK | os.X_OK)
