"""Connector kinds: which class a host row gets, and clear errors for the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protection.connectors import registry
from protection.connectors.lab.connector import LabConnector
from protection.connectors.protocol import Connector, ConnectorError, UnsupportedConnector
from protection.connectors.registry import ConnectorKind, get_connector
from tests.connectors.conftest import Lab


def test_get_connector_gives_lab_connector_that_satisfies_the_protocol(lab: Lab) -> None:
    conn = get_connector("lab", str(lab.folder), None)
    assert isinstance(conn, LabConnector)
    assert isinstance(conn, Connector)
    hyperv = get_connector("hyperv", "hv01.example.com", {"username": "x", "password": "y"})
    assert hyperv.kind == "hyperv" and isinstance(hyperv, Connector)
    with pytest.raises(ConnectorError, match="needs a user name and a password"):
        get_connector("hyperv", "hv01.example.com", {"username": "x"})
    with pytest.raises(UnsupportedConnector, match="Unknown connector kind"):
        get_connector("vmware", "x", None)


def test_lab_connector_ignores_credentials(lab: Lab) -> None:
    conn = get_connector("lab", str(lab.folder), {"username": "x", "password": "y"})
    assert conn.inventory().host.name == "LAB-HV01"


def test_messages_name_the_kinds() -> None:
    with pytest.raises(UnsupportedConnector) as unknown:
        get_connector("vmware", "x")
    assert str(unknown.value) == "Unknown connector kind 'vmware'; expected 'lab' or 'hyperv'."


def test_a_missing_dependency_inside_a_connector_is_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the connector's own module being absent means "not in this build"."""
    (tmp_path / "broken_connector_module.py").write_text("import no_such_dependency_for_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        registry.CONNECTOR_KINDS, "broken", ConnectorKind("broken_connector_module.Broken", "broken")
    )
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_for_tests"):
        get_connector("broken", "x")
    monkeypatch.setitem(
        registry.CONNECTOR_KINDS,
        "absent",
        ConnectorKind("protection.connectors.absent.connector.Absent", "Absent"),
    )
    with pytest.raises(UnsupportedConnector, match="The Absent connector is not part of this build"):
        get_connector("absent", "x")


def test_importing_the_registry_or_the_protocol_loads_no_connector() -> None:
    """The registry resolves classes on first use, so nothing below it is imported early."""
    code = (
        "import sys\n"
        "import protection.connectors.registry\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('protection.connectors.'))\n"
        "print(loaded)\n"
        "assert loaded == ['protection.connectors.protocol', 'protection.connectors.ranges',"
        " 'protection.connectors.registry'], loaded\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
