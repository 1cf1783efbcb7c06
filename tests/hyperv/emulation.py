"""Drive the emulated host's scripts directly (no WS-Management): a transport whose
``run_script`` calls the functions of tests/hyperv/windows/{backup,restore}.py.

The parameters and results go through JSON both ways, as they would on the wire, and a
known failure becomes the connector error the real transport raises for its kind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protection.connectors.protocol import (
    BackupRefused,
    ChangeTrackingLost,
    ConnectorError,
    InvalidVMConfig,
    RestoreRefused,
    VMNotFound,
)
from tests.hyperv.windows import backup, restore
from tests.hyperv.windows.hoststate import ScriptFailure

KIND_ERRORS: dict[str, type[ConnectorError]] = {
    "VMNotFound": VMNotFound,
    "ChangeTrackingLost": ChangeTrackingLost,
    "BackupRefused": BackupRefused,
    "RestoreRefused": RestoreRefused,
    "InvalidArgument": InvalidVMConfig,
}

SCRIPTS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {**backup.SCRIPTS, **restore.SCRIPTS}


@dataclass
class FakeHost:
    """The attributes of helper winrm's ``EmulatedHyperV`` that the scripts use."""

    lab_root: Path
    drive_root: Path
    fail_next: dict[str, Any] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)


class DirectTransport:
    def __init__(self, host: FakeHost):
        self.host = host
        self.calls: list[str] = []

    def run_script(self, name: str, params: dict[str, Any]) -> Any:
        self.calls.append(name)
        params = json.loads(json.dumps(params))
        if name in self.host.delay:
            time.sleep(self.host.delay[name])
        try:
            failure = self.host.fail_next.pop(name, None)
            if callable(failure):
                failure(self.host, params)
            elif failure is not None:
                raise ScriptFailure(*failure)
            result = SCRIPTS[name](self.host, params)
        except ScriptFailure as exc:
            raise KIND_ERRORS.get(exc.kind, ConnectorError)(exc.message) from None
        return json.loads(json.dumps(result))
