"""STUB in branch ``winrm`` only, so ``connector.py`` imports: helper "hvbackup"
writes the real module (the recovery checkpoint, RCT, reads over SMB)."""

from __future__ import annotations

from typing import Any

from protection.connectors.base import BackupSession, Consistency, VMInfo


def begin_hyperv_backup(
    transport: Any, smb: Any, vm_id: str, consistency_wanted: Consistency, *, vm: VMInfo | None = None
) -> BackupSession:
    raise NotImplementedError("Hyper-V backup sessions come from the hvbackup branch")


def end_hyperv_backup(session: BackupSession, ok: bool) -> dict[str, str]:
    raise NotImplementedError("Hyper-V backup sessions come from the hvbackup branch")
