"""Turning guest file names into names that are safe to create in a destination folder.

A guest file system is untrusted input: a damaged or hostile image can hold names
such as ``..``, ``../../etc/x``, ``C:\\x`` or names with NUL bytes. Every name is
mapped here to exactly one path *component* (never a path) that is valid on the
destination, and every change is reported so the administrator can find the file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

MAX_NAME_BYTES = 255  # NAME_MAX on Linux file systems; also bounds the 255 UTF-16 units of NTFS/SMB
_HASH_LEN = 8
_MAX_KEPT_EXTENSION = 16

_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in ("1", "2", "3", "4", "5", "6", "7", "8", "9")]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in ("\u00b9", "\u00b2", "\u00b3")]
)
_SURROGATE = re.compile("[\ud800-\udfff]")


class NameStyle(StrEnum):
    """The rules of the file system the items are restored to."""

    POSIX = "posix"  # a local Linux folder: any bytes but '/' and NUL, 255 bytes per name
    WINDOWS = "windows"  # an SMB share / Windows folder: also <>:"|?*, device names, no trailing dot/space


@dataclass(frozen=True)
class SafeName:
    name: str
    original: str
    reasons: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.name != self.original

    def note(self) -> str:
        """A sentence for the item result, or "" when the name was kept."""
        if not self.changed:
            return ""
        return f"saved as {printable(self.name)!r}: the name {'; '.join(self.reasons)}"


def printable(name: str) -> str:
    """The name with undecodable parts shown as U+FFFD, safe to put in UTF-8 text (HTML, JSON, logs)."""
    return _SURROGATE.sub("\ufffd", name)


def name_hash(original: str) -> str:
    """A short, stable digest of the original name, used to keep shortened/renamed names distinct."""
    return hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def encoded_len(name: str) -> int:
    # surrogateescape: undecodable bytes of an ext file name go back to their original single byte.
    return len(name.encode("utf-8", "surrogateescape"))


def _is_escaped_byte(ch: str) -> bool:
    return "\udc80" <= ch <= "\udcff"


def safe_name(original: str, style: NameStyle = NameStyle.POSIX) -> SafeName:
    """Map one guest name to one valid destination name (never a path).

    The mapping is deterministic, so restoring the same item twice gives the same name.
    """
    style = NameStyle(style)
    reasons: list[str] = []
    out: list[str] = []
    seen: set[str] = set()

    def because(reason: str) -> None:
        if reason not in seen:
            seen.add(reason)
            reasons.append(reason)

    for ch in original:
        code = ord(ch)
        if ch in "/\\":
            out.append("_")
            because("contains a path separator ('/' or '\\')")
        elif code == 0:
            out.append("_")
            because("contains a NUL character")
        elif code < 32 or code == 127:
            out.append("_")
            because("contains control characters")
        elif 0xD800 <= code <= 0xDFFF:
            # An ext name that is not UTF-8 keeps its original bytes on a POSIX destination
            # (lossless); anything else undecodable cannot be written at all.
            if style is NameStyle.POSIX and _is_escaped_byte(ch):
                out.append(ch)
            else:
                out.append("_")
                because("is not valid Unicode")
        elif style is NameStyle.WINDOWS and ch in _WINDOWS_FORBIDDEN:
            out.append("_")
            because('contains characters Windows does not allow (<>:"|?*)')
        else:
            out.append(ch)
    name = "".join(out)

    if name in ("", ".", ".."):
        name = "_" * max(1, len(name))
        because("is empty, '.' or '..'")
    if style is NameStyle.WINDOWS:
        stripped = name.rstrip(". ")
        if stripped != name:
            name = stripped + "_" * (len(name) - len(stripped))
            because("ends with a dot or a space")
        stem = name.split(".", 1)[0].rstrip(" ").upper()
        if stem in _WINDOWS_RESERVED:
            name = "_" + name
            because("is a reserved device name on Windows")
    if encoded_len(name) > MAX_NAME_BYTES:
        name = shorten(name, original)
        because(f"is longer than {MAX_NAME_BYTES} bytes")
    return SafeName(name, original, tuple(reasons))


def _split_extension(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    ext = name[dot:]
    if encoded_len(ext) > _MAX_KEPT_EXTENSION or " " in ext:
        return name, ""
    return name[:dot], ext


def shorten(name: str, original: str, budget: int = MAX_NAME_BYTES) -> str:
    """Cut ``name`` to ``budget`` bytes, keeping its extension, adding ``~hash`` of the original."""
    stem, ext = _split_extension(name)
    suffix = f"~{name_hash(original)}{ext}"
    room = budget - encoded_len(suffix)
    cut = stem
    while encoded_len(cut) > room:
        # Drop whole characters only, so a multi-byte character is never split.
        over = encoded_len(cut) - room
        cut = cut[: max(0, len(cut) - max(1, over // 4))]
    return cut + suffix


class NameRegistry:
    """The names already given inside one destination folder during one copy.

    Two guest names can map to the same safe name (``a:b`` and ``a?b`` on Windows,
    ``A.txt`` and ``a.txt`` on a case-insensitive share); the second one gets a
    numbered, still-valid variant instead of overwriting the first.
    """

    def __init__(self, style: NameStyle) -> None:
        self.style = style
        self._taken: set[str] = set()
        self._given: dict[str, SafeName] = {}

    def _key(self, name: str) -> str:
        return name.upper() if self.style is NameStyle.WINDOWS else name

    def claim(self, safe: SafeName) -> SafeName:
        """The name for ``safe.original`` in this folder (the same one when asked again)."""
        given = self._given.get(safe.original)
        if given is not None:
            return given
        if self._key(safe.name) not in self._taken:
            self._taken.add(self._key(safe.name))
            self._given[safe.original] = safe
            return safe
        return self.variant(safe, "clashes with another name in the same folder on this destination")

    def variant(self, safe: SafeName, reason: str) -> SafeName:
        """A numbered variant of ``safe`` (``name~2.ext``) not given yet in this folder."""
        stem, ext = _split_extension(safe.name)
        n = 2
        while True:
            candidate = f"{stem}~{n}{ext}"
            if encoded_len(candidate) > MAX_NAME_BYTES:
                candidate = shorten(candidate, f"{safe.original}\0{n}")
            if self._key(candidate) not in self._taken:
                self._taken.add(self._key(candidate))
                result = SafeName(candidate, safe.original, (*safe.reasons, reason))
                self._given[safe.original] = result
                return result
            n += 1
