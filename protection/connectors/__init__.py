"""Connectors: how the server talks to Hyper-V hosts (real ones, or lab emulations).

Jobs import from here only; see ``base.py`` for the protocol.
"""

from protection.connectors.base import (
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
    get_connector,
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
    "get_connector",
]
