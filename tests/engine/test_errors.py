"""OSErrors become engine errors an administrator can act on, naming the right device."""

from __future__ import annotations

import errno

from storage.engine import EngineError, NoSpace, ReadOnly
from storage.engine.errors import wrap_oserror


def test_a_read_only_file_system_says_the_datastore_is_read_only() -> None:
    error = wrap_oserror(OSError(errno.EROFS, "Read-only file system"), "writing chunk ab12")
    assert isinstance(error, ReadOnly)
    assert str(error).startswith("the datastore is read-only (writing chunk ab12 failed)")
    assert "mount it read-write" in str(error)


def test_a_restore_target_is_named_as_such() -> None:
    full = wrap_oserror(
        OSError(errno.ENOSPC, "No space left"), "restoring disk.vhdx", device="the restore target"
    )
    assert isinstance(full, NoSpace) and "no space left on the restore target device" in str(full)
    read_only = wrap_oserror(OSError(errno.EROFS, "Read-only"), "creating /x", device="the restore target")
    assert isinstance(read_only, ReadOnly) and str(read_only).startswith("the restore target is read-only")


def test_other_errors_keep_the_system_detail() -> None:
    error = wrap_oserror(OSError(errno.EIO, "Input/output error"), "reading chunk ab12")
    assert type(error) is EngineError
    assert str(error) == "I/O error while reading chunk ab12: Input/output error"
