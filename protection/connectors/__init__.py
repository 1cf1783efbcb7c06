"""Connectors: how the server talks to Hyper-V hosts (real ones, or lab emulations).

What lives where:

- ``protocol.py``: the values, the errors and the ``Connector`` Protocol; the only
  connector names jobs, services and views use (re-exported here for convenience).
- ``registry.py``: kind -> class, and ``get_connector(kind, address, credentials)``.
- ``ranges.py``: ``(offset, length)`` range arithmetic shared by every connector.
- ``prerequisites.py``: the MABS prerequisite rules over protocol values, shared by
  every connector.
- ``lab/``: the lab connector, a Hyper-V host emulated in a local folder.
- ``hyperv/`` (not part of this build yet): the WinRM + SMB connector.

Connector subpackages import the modules above, never the registry nor each other;
this ``__init__`` imports only the protocol, so importing any connector module never
loads an implementation it does not use.
"""

from protection.connectors.protocol import (
    BackupFile,
    BackupRefused,
    BackupSession,
    ChangeTrackingLost,
    Connector,
    ConnectorError,
    Consistency,
    Finding,
    HostInventory,
    HostUnreachable,
    InvalidVMConfig,
    RestoreRefused,
    RestoreTarget,
    Severity,
    VMInfo,
    VMNotFound,
)

__all__ = [
    "BackupFile",
    "BackupRefused",
    "BackupSession",
    "ChangeTrackingLost",
    "Connector",
    "ConnectorError",
    "Consistency",
    "Finding",
    "HostInventory",
    "HostUnreachable",
    "InvalidVMConfig",
    "RestoreRefused",
    "RestoreTarget",
    "Severity",
    "VMInfo",
    "VMNotFound",
]
