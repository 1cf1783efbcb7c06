"""Which class implements each connector kind, and ``get_connector`` to build one.

The table maps a kind (``Host.connection_kind``) to the dotted path of its class,
imported on first use. Why a table of paths rather than subpackages registering
themselves with a decorator: self-registration only works once something has
imported every subpackage (this package's ``__init__`` or an app's ``ready()``),
which puts the implementations back above the protocol, makes the lookup depend on
import order, and hides which kinds exist. Here the whole list is readable in one
place, nothing below this module imports it, and a connector whose package is not
part of the build is reported as such instead of breaking the import of everything.
Every class is built as ``cls(address, credentials=...)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from protection.connectors.protocol import Connector, UnsupportedConnector


@dataclass(frozen=True, slots=True)
class ConnectorKind:
    path: str  # "package.module.Class"
    label: str  # what the administrator calls it, for messages


CONNECTOR_KINDS: dict[str, ConnectorKind] = {
    "lab": ConnectorKind("protection.connectors.lab.connector.LabConnector", "lab"),
    "hyperv": ConnectorKind("protection.connectors.hyperv.connector.HyperVConnector", "Hyper-V (WinRM/SMB)"),
}


def connector_class(kind: str) -> Callable[..., Connector]:
    """The class registered for ``kind``; UnsupportedConnector when there is none."""
    try:
        entry = CONNECTOR_KINDS[kind]
    except KeyError:
        expected = " or ".join(repr(k) for k in CONNECTOR_KINDS)
        raise UnsupportedConnector(f"Unknown connector kind {kind!r}; expected {expected}.") from None
    module_name, _, class_name = entry.path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the connector's own module being absent means "not in this build"; a
        # dependency missing inside a connector that is present is a real fault.
        missing = exc.name or ""
        if not (missing.startswith(f"{__package__}.") and f"{module_name}.".startswith(f"{missing}.")):
            raise
        raise UnsupportedConnector(
            f"The {entry.label} connector is not part of this build yet; "
            "use a lab host to evaluate the product."
        ) from exc
    return cast("Callable[..., Connector]", getattr(module, class_name))


def get_connector(kind: str, address: str, credentials: Mapping[str, Any] | None = None) -> Connector:
    """The connector for a host row (``Host.connection_kind``, ``Host.address``)."""
    return connector_class(kind)(address, credentials=credentials)
