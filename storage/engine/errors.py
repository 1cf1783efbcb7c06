"""One exception hierarchy for everything the engine raises.

Callers (Django jobs, the CLI) catch ``EngineError`` and show ``str(exc)``: every
message is written to be shown to an administrator as one line.
"""

from __future__ import annotations

import errno


class EngineError(Exception):
    """Base class of every error raised on purpose by the engine."""


class DatastoreNotFound(EngineError):
    pass


class DatastoreExists(EngineError):
    pass


class FormatVersionError(EngineError):
    pass


class WrongKey(EngineError):
    """Missing or wrong encryption key."""


class CorruptChunk(EngineError):
    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"chunk {digest} is damaged: {reason}")
        self.digest = digest
        self.reason = reason


class ChunkMissing(CorruptChunk):
    def __init__(self, digest: str) -> None:
        super().__init__(digest, "missing from the datastore")


class CorruptIndex(EngineError):
    pass


class NoSpace(EngineError):
    pass


class ReadOnly(EngineError):
    """The device refused a write because it is read-only (EROFS): typically a volume
    the kernel remounted read-only after a disk error, under a running backup."""


class SourceReadError(EngineError):
    pass


class InvalidSource(EngineError):
    """Bad input from the caller: unsafe file name, bad changed range, ..."""


class Cancelled(EngineError):
    pass


class PointNotFound(EngineError):
    pass


class FileNotInPoint(EngineError):
    pass


class Busy(EngineError):
    """Another exclusive operation (GC) holds the datastore lock."""


class InvalidPolicy(EngineError):
    pass


_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def wrap_oserror(exc: OSError, what: str, *, device: str = "the datastore") -> EngineError:
    """Turn an OSError into the engine error a caller can act on.

    ``device`` names what was being written: the datastore, or a restore's target.
    """
    if exc.errno in _SPACE_ERRNOS:
        return NoSpace(f"no space left on {device} device while {what}")
    if exc.errno == errno.EROFS:
        # An administrator acts on this one (check the volume, mount it read-write
        # again), not on a bare "I/O error: Read-only file system".
        return ReadOnly(
            f"{device} is read-only ({what} failed). Its volume was mounted "
            "read-only, or remounted read-only by the kernel after a disk error: check the "
            "volume, then mount it read-write"
        )
    detail = exc.strerror or str(exc)
    return EngineError(f"I/O error while {what}: {detail}")
