"""Host credentials are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from BACKUPSITE_CREDENTIALS_KEY, or from a key file created in the
data directory with mode 0600 on first use, so a database dump alone never holds
a usable password.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class CredentialsError(Exception):
    pass


@cache
def _fernet() -> Fernet:
    key = settings.BACKUPSITE_CREDENTIALS_KEY
    if key is None:
        key_file = settings.BACKUPSITE_DATA_DIR / "credentials.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
        key = key_file.read_text().strip()
    return Fernet(key.encode() if isinstance(key, str) else key)


def encrypt_json(value: dict[str, Any]) -> str:
    return _fernet().encrypt(json.dumps(value).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    try:
        return dict(json.loads(_fernet().decrypt(token.encode())))
    except InvalidToken:
        raise CredentialsError(
            "Stored credentials cannot be decrypted with the current credentials key; "
            "enter the host's credentials again."
        ) from None
