"""Backup engine: a content-addressed, deduplicated, compressed chunk store.

Pure Python, no Django. See docs/datastore-format.md.
"""

from .backup import Progress
from .datastore import Datastore, Usage
from .errors import (
    Busy,
    Cancelled,
    ChunkMissing,
    CorruptChunk,
    CorruptIndex,
    DatastoreExists,
    DatastoreNotFound,
    EngineError,
    FileNotInPoint,
    FormatVersionError,
    InvalidPolicy,
    InvalidSource,
    NoSpace,
    PointNotFound,
    ReadOnly,
    SourceReadError,
    WrongKey,
)
from .format import FORMAT_VERSION, Settings, check_chunk_size, read_settings
from .gc import GCReport
from .points import FileInfo, PointInfo, PointScan
from .reader import PointFileReader
from .restore import RateLimiter, RestoreResult
from .retention import RetentionPolicy
from .source import SourceFile
from .verify import VerifyProgress, VerifyReport

__all__ = [
    "FORMAT_VERSION",
    "Busy",
    "Cancelled",
    "ChunkMissing",
    "CorruptChunk",
    "CorruptIndex",
    "Datastore",
    "DatastoreExists",
    "DatastoreNotFound",
    "EngineError",
    "FileInfo",
    "FileNotInPoint",
    "FormatVersionError",
    "GCReport",
    "InvalidPolicy",
    "InvalidSource",
    "NoSpace",
    "PointFileReader",
    "PointInfo",
    "PointNotFound",
    "PointScan",
    "Progress",
    "RateLimiter",
    "ReadOnly",
    "RestoreResult",
    "RetentionPolicy",
    "Settings",
    "SourceFile",
    "SourceReadError",
    "Usage",
    "VerifyProgress",
    "VerifyReport",
    "WrongKey",
    "check_chunk_size",
    "read_settings",
]
