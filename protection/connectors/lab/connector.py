"""The lab connector: a Hyper-V host emulated in a folder of the server's own disk.

A host is a folder with ``host.json``; each VM is a folder (anywhere below it)
with ``vm.json`` and real VHDX files. See docs/connectors.md for the format.
``LabConnector`` is the Connector protocol over the modules of this package; the
work itself happens in ``inventory``, ``session`` and ``restore``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protection.connectors import prerequisites
from protection.connectors.lab import config
from protection.connectors.lab import inventory as lab_inventory
from protection.connectors.lab import restore as lab_restore
from protection.connectors.lab import session as lab_session
from protection.connectors.lab.config import LabHostConfig, LabVMConfig
from protection.connectors.lab.session import LabBackupSession
from protection.connectors.protocol import (
    BackupSession,
    ConnectionTest,
    ConnectorError,
    Consistency,
    FileSource,
    Finding,
    HostInfo,
    HostInventory,
    RestoreResult,
    RestoreTarget,
    VMInfo,
)


class LabConnector:
    kind = "lab"

    def __init__(
        self,
        address: str | Path,
        credentials: Mapping[str, Any] | None = None,
        *,
        lock_wait_seconds: float = 10.0,
    ):
        # A lab host is a local folder: it needs no credentials, but the registry
        # builds every connector kind the same way.
        del credentials
        self.address = str(address)
        self.folder = Path(address)
        # How long begin_backup / restore wait for guest writes to finish.
        self.lock_wait_seconds = lock_wait_seconds

    # ------------------------------------------------------------------ inventory

    def host_config(self) -> LabHostConfig:
        return config.load_host_config(self.folder)

    def host_info(self, host: LabHostConfig | None = None) -> HostInfo:
        return lab_inventory.host_info(self.folder, host or self.host_config())

    def test_connection(self) -> ConnectionTest:
        try:
            info = self.host_info()
        except ConnectorError as exc:
            return ConnectionTest(ok=False, message=str(exc))
        return ConnectionTest(
            ok=True,
            message=f"Lab host {info.name} ({info.os_version}) answered.",
            host_name=info.name,
            os_version=info.os_version,
        )

    def vm_configs(self) -> tuple[list[LabVMConfig], list[Finding]]:
        return lab_inventory.vm_configs(self.folder)

    def inventory(self) -> HostInventory:
        return lab_inventory.host_inventory(self.folder)

    def vm_config(self, vm_id: str) -> LabVMConfig:
        return lab_inventory.find_vm_config(self.folder, vm_id)

    def vm_config_by_name(self, name: str) -> LabVMConfig:
        return lab_inventory.find_vm_config_by_name(self.folder, name)

    def get_vm(self, vm_id: str) -> VMInfo:
        return lab_inventory.vm_info(self.vm_config(vm_id), self.host_config())

    # ------------------------------------------------------------------ checks

    def prerequisites(
        self,
        vm_id: str,
        *,
        churn_rate: float = prerequisites.DEFAULT_CHURN_RATE,
        backup_window_hours: float = prerequisites.DEFAULT_BACKUP_WINDOW_HOURS,
        recovery_path: str | None = None,
    ) -> list[Finding]:
        return prerequisites.check_vm_on_host(
            self.get_vm(vm_id),
            self.host_info(),
            lab_inventory.csv_infos(self.folder, self.host_config()),
            churn_rate=churn_rate,
            backup_window_hours=backup_window_hours,
            recovery_path=recovery_path,
        )

    # ------------------------------------------------------------------ backup

    def begin_backup(self, vm_id: str, consistency_wanted: Consistency) -> LabBackupSession:
        return lab_session.begin_lab_backup(
            self.folder, vm_id, Consistency(consistency_wanted), lock_wait_seconds=self.lock_wait_seconds
        )

    def end_backup(self, session: BackupSession, ok: bool) -> dict[str, str]:
        if not isinstance(session, LabBackupSession):
            raise ConnectorError("This session was not opened by a lab connector.")
        return session.finish(ok)

    def release_references(self, vm_id: str, references: Mapping[str, str]) -> list[str]:
        """Drop the journal generations up to each previous reference (see rct.py):
        the lab's journal then holds only what the newest reference needs, as Hyper-V
        keeps RCT data only for the reference points that still exist."""
        try:
            return lab_session.release_lab_references(
                self.vm_config(vm_id), references, self.host_config().rct_history, self.lock_wait_seconds
            )
        except ConnectorError as error:
            return [f"Warning: the previous change-tracking references were kept: {error}"]

    # ------------------------------------------------------------------ restore

    def check_restore_target(
        self, vm_id: str, target: RestoreTarget, file_names: Sequence[str]
    ) -> list[Finding]:
        return lab_restore.check_restore_target(self.folder, vm_id, target, file_names)

    def restore_vm(self, vm_id: str, files: Mapping[str, FileSource], target: RestoreTarget) -> RestoreResult:
        return lab_restore.restore_vm(
            self.folder, vm_id, files, target, lock_wait_seconds=self.lock_wait_seconds
        )
