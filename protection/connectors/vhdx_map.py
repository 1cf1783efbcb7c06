"""Virtual-disk ranges (what RCT reports) -> VHDX file ranges (what the engine reads).

The backup engine owns the canonical implementation in ``storage.engine.vhdx``
(``virtual_to_file_ranges`` / ``metadata_ranges``) and it is used when present,
so the connector and the engine can never disagree about a file's layout. The
fallback is this package's own parser (vhdxfile.py), which also validates the
file strictly; tests compare the two when both exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import BinaryIO

from protection.connectors.ranges import Range, normalize
from protection.connectors.vhdxfile import DiskFileError, read_vhdx_layout

Source = BinaryIO | str | os.PathLike[str]


def _engine() -> tuple[Callable[..., list[Range]], Callable[..., list[Range]]] | None:
    try:
        from storage.engine.vhdx import (  # type: ignore[import-not-found,unused-ignore]
            metadata_ranges,
            virtual_to_file_ranges,
        )
    except ImportError:
        return None
    return virtual_to_file_ranges, metadata_ranges


def own_virtual_to_file_ranges(source: Source, virtual: Iterable[Range]) -> list[Range]:
    return read_vhdx_layout(source).virtual_to_file(virtual)


def own_metadata_ranges(source: Source) -> list[Range]:
    return read_vhdx_layout(source).metadata_ranges()


def virtual_to_file_ranges(source: Source, virtual: Iterable[Range]) -> list[Range]:
    engine = _engine()
    if engine is None:
        return own_virtual_to_file_ranges(source, virtual)
    if not isinstance(source, str | os.PathLike):
        source.seek(0)
    try:
        # include_metadata=False: callers add structure ranges themselves, and an
        # exclusion list (pagefile) must never contain the header, log or BAT.
        return normalize(engine[0](source, list(virtual), include_metadata=False))
    except Exception as exc:  # the engine's own error types; keep one error type here
        raise DiskFileError(str(exc)) from exc


def metadata_ranges(source: Source) -> list[Range]:
    engine = _engine()
    if engine is None:
        return own_metadata_ranges(source)
    if not isinstance(source, str | os.PathLike):
        source.seek(0)
    try:
        return normalize(engine[1](source))
    except Exception as exc:
        raise DiskFileError(str(exc)) from exc
