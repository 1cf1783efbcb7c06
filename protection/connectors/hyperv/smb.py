"""STUB in branch ``winrm`` only: helper "hvbackup" writes the real module (the SMB
data path); these are the fields of its ``SMBSettings`` that ``connector.py`` sets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SMBSettings:
    server: str
    username: str
    password: str = field(repr=False)
    port: int = 445
