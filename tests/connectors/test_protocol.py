"""The protocol's values and errors: what jobs and views rely on."""

from __future__ import annotations

import dataclasses
import io

import pytest

from protection.connectors import protocol


def test_error_hierarchy() -> None:
    for cls in (
        protocol.HostUnreachable,
        protocol.VMNotFound,
        protocol.ChangeTrackingLost,
        protocol.BackupRefused,
        protocol.InvalidVMConfig,
        protocol.RestoreRefused,
        protocol.UnsupportedConnector,
    ):
        assert issubclass(cls, protocol.ConnectorError)


def test_values_are_immutable_and_enums_are_strings() -> None:
    finding = protocol.Finding("x", protocol.Severity.ERROR, "message", "fix")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "y"  # type: ignore[misc]
    assert protocol.Severity.ERROR == "error" and str(protocol.Consistency.FILE) == "file"
    assert protocol.VMState("Saved") is protocol.VMState.SAVED
    assert {m.value for m in protocol.ReplicationRole} == {"none", "primary", "replica"}
    assert {m.value for m in protocol.StorageKind} == {"local", "csv", "smb"}


def test_backup_file_open_uses_its_opener() -> None:
    f = protocol.BackupFile("vm.json", 2, "config", lambda: io.BytesIO(b"{}"))
    assert f.open().read() == b"{}"
