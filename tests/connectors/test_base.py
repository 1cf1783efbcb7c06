"""The protocol's values and errors: what jobs and views rely on."""

from __future__ import annotations

import dataclasses

import pytest

from protection.connectors import base


def test_error_hierarchy() -> None:
    for cls in (
        base.HostUnreachable,
        base.VMNotFound,
        base.ChangeTrackingLost,
        base.BackupRefused,
        base.InvalidVMConfig,
        base.RestoreRefused,
        base.UnsupportedConnector,
    ):
        assert issubclass(cls, base.ConnectorError)


def test_values_are_immutable_and_enums_are_strings() -> None:
    finding = base.Finding("x", base.Severity.ERROR, "message", "fix")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "y"  # type: ignore[misc]
    assert base.Severity.ERROR == "error" and str(base.Consistency.FILE) == "file"
    assert base.VMState("Saved") is base.VMState.SAVED
    assert {m.value for m in base.ReplicationRole} == {"none", "primary", "replica"}
    assert {m.value for m in base.StorageKind} == {"local", "csv", "smb"}


def test_backup_file_open_uses_its_opener() -> None:
    import io

    f = base.BackupFile("vm.json", 2, "config", lambda: io.BytesIO(b"{}"))
    assert f.open().read() == b"{}"
