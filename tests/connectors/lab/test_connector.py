"""The lab connector as the jobs see it: connection test and VM lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from protection.connectors.lab.connector import LabConnector
from protection.connectors.protocol import ConnectorError, Consistency, HostUnreachable, VMNotFound
from tests.connectors.conftest import Lab


def test_get_vm_and_lookup_errors(lab: Lab) -> None:
    vm = lab.connector.get_vm(lab.ids["LNX01"].upper())
    assert vm.name == "LNX01"
    assert lab.connector.vm_config_by_name("lnx01").id == lab.ids["LNX01"]
    with pytest.raises(VMNotFound):
        lab.connector.get_vm("00000000-0000-0000-0000-000000000000")
    with pytest.raises(VMNotFound):
        lab.connector.vm_config_by_name("nope")


def test_missing_host_folder_is_unreachable(tmp_path: Path) -> None:
    conn = LabConnector(tmp_path / "gone")
    with pytest.raises(HostUnreachable, match="does not exist"):
        conn.inventory()
    result = conn.test_connection()
    assert not result.ok and "does not exist" in result.message


def test_test_connection_ok(lab: Lab) -> None:
    result = lab.connector.test_connection()
    assert result.ok and result.host_name == "LAB-HV01"


def test_end_backup_refuses_a_session_it_did_not_open(lab: Lab, make_lab) -> None:  # type: ignore[no-untyped-def]
    other = make_lab("LAB-HV02")
    session = lab.connector.begin_backup(lab.ids["WIN01"], Consistency.APPLICATION)
    try:
        with pytest.raises(ConnectorError, match="not opened by a lab connector"):
            other.connector.end_backup(object(), ok=True)  # type: ignore[arg-type]
        assert other.connector.end_backup(session, ok=False) == {}  # any lab connector may end it
    finally:
        assert session.ended
