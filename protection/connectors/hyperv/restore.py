"""STUB in branch ``winrm`` only, so ``connector.py`` imports: helper "hvbackup"
writes the real module (files written over SMB, the VM registered)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protection.connectors.base import FileSource, Finding, RestoreResult, RestoreTarget


def check_restore_target(
    transport: Any, smb: Any, vm_id: str, target: RestoreTarget, file_names: Sequence[str]
) -> list[Finding]:
    raise NotImplementedError("Hyper-V restores come from the hvbackup branch")


def restore_vm(
    transport: Any, smb: Any, vm_id: str, files: Mapping[str, FileSource], target: RestoreTarget
) -> RestoreResult:
    raise NotImplementedError("Hyper-V restores come from the hvbackup branch")
