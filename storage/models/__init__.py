"""The storage app's models: pool volumes and the datastores on them."""

from storage.models.datastores import (
    MAX_LEVEL,
    MIN_LEVEL,
    Datastore,
    DatastoreKeyUnavailable,
    DatastoreMissing,
    DatastoreQuerySet,
    DatastoreReadOnly,
    DatastoreReplaced,
    DatastoreUnavailable,
    DiskSpace,
    new_recovery_key,
    validate_chunk_size,
    validate_compression_level,
)
from storage.models.volumes import Volume, VolumeQuerySet, VolumeStatus, format_bytes

__all__ = [
    "MAX_LEVEL",
    "MIN_LEVEL",
    "Datastore",
    "DatastoreKeyUnavailable",
    "DatastoreMissing",
    "DatastoreQuerySet",
    "DatastoreReadOnly",
    "DatastoreReplaced",
    "DatastoreUnavailable",
    "DiskSpace",
    "Volume",
    "VolumeQuerySet",
    "VolumeStatus",
    "format_bytes",
    "new_recovery_key",
    "validate_chunk_size",
    "validate_compression_level",
]
