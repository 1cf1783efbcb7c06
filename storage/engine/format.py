"""``format.json``: datastore identity, version, settings and key parameters."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import (
    DatastoreExists,
    DatastoreNotFound,
    EngineError,
    FormatVersionError,
    WrongKey,
    wrap_oserror,
)
from .util import atomic_write, fsync_dir, utcnow

FORMAT_NAME = "hvbs-datastore"
FORMAT_VERSION = 1
MIN_CHUNK = 256 * 1024
MAX_CHUNK = 4 * 1024 * 1024
DEFAULT_CHUNK = 1024 * 1024
DEFAULT_LEVEL = 1  # measured: as small as level 3 on VM disks, ~30% faster

_KEY_CHECK_PLAINTEXT = b"hvbs datastore key check v1"
_CTX_ENC = "hvbs datastore v1 2025 chunk encryption key"
_CTX_ID = "hvbs datastore v1 2025 chunk digest key"


@dataclass(frozen=True)
class Keys:
    enc_key: bytes  # AES-256-GCM key
    id_key: bytes  # BLAKE3 key for chunk digests


@dataclass(frozen=True)
class Settings:
    uuid: str
    chunk_size: int
    compression_level: int
    encryption: dict[str, object] | None

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None


def check_chunk_size(chunk_size: object) -> int:
    """The one rule for a chunk size: a power of two from 256 KiB to 4 MiB.

    Returns it; raises EngineError otherwise. The Django model validates with this too.
    """
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not MIN_CHUNK <= chunk_size <= MAX_CHUNK
        or chunk_size & (chunk_size - 1)
    ):
        raise EngineError(f"chunk size {chunk_size} must be a power of two between 256 KiB and 4 MiB")
    return chunk_size


def _derive(user_key: bytes, params: dict[str, object]) -> Keys:
    salt = bytes.fromhex(str(params["salt"]))
    kdf = Scrypt(
        salt=salt,
        length=32,
        n=int(params["n"]),  # type: ignore[call-overload]
        r=int(params["r"]),  # type: ignore[call-overload]
        p=int(params["p"]),  # type: ignore[call-overload]
    )
    master = kdf.derive(user_key)
    # Two independent subkeys from one master: knowing digests (id key) never
    # helps against the cipher key and vice versa.
    enc = blake3.blake3(master, derive_key_context=_CTX_ENC).digest()
    ident = blake3.blake3(master, derive_key_context=_CTX_ID).digest()
    return Keys(enc_key=enc, id_key=ident)


def normalise_key(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not key:
        raise WrongKey("the encryption key is empty")
    return key


def create(
    path: str, *, chunk_size: int, compression_level: int, key: bytes | None
) -> tuple[Settings, Keys | None]:
    check_chunk_size(chunk_size)
    if not 1 <= compression_level <= 22:
        raise EngineError(f"zstd level {compression_level} must be between 1 and 22")
    if os.path.exists(os.path.join(path, "format.json")):
        raise DatastoreExists(f"a datastore already exists at {path}")
    try:
        os.makedirs(path, exist_ok=True)
        if any(e for e in os.listdir(path) if not e.startswith(".")):
            raise DatastoreExists(f"{path} is not empty; refusing to create a datastore there")
        for sub in ("chunks", "points", "in-progress"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
    except OSError as exc:
        raise wrap_oserror(exc, f"creating the datastore at {path}") from exc
    keys: Keys | None = None
    encryption: dict[str, object] | None = None
    if key is not None:
        params: dict[str, object] = {
            "algorithm": "aes-256-gcm",
            "digest": "blake3-keyed",
            "kdf": "scrypt",
            "salt": secrets.token_hex(16),
            "n": 2**15,
            "r": 8,
            "p": 1,
        }
        keys = _derive(key, params)
        nonce = secrets.token_bytes(12)
        check = AESGCM(keys.enc_key).encrypt(nonce, _KEY_CHECK_PLAINTEXT, None)
        params["key_check"] = (nonce + check).hex()
        encryption = params
    settings = Settings(
        uuid=str(uuid.uuid4()),
        chunk_size=chunk_size,
        compression_level=compression_level,
        encryption=encryption,
    )
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "uuid": settings.uuid,
        "created": utcnow().isoformat(),
        "chunk_size": chunk_size,
        "compression": {"algorithm": "zstd", "level": compression_level},
        "encryption": encryption,
    }
    atomic_write(
        os.path.join(path, "format.json"),
        (json.dumps(doc, indent=2) + "\n").encode(),
        what="writing format.json",
    )
    fsync_dir(path)
    return settings, keys


def read_settings(path: str) -> Settings:
    """What ``format.json`` says, without a key: enough to know how a store is set up."""
    fpath = os.path.join(path, "format.json")
    try:
        with open(fpath, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError as exc:
        raise DatastoreNotFound(f"no datastore at {path} (format.json missing)") from exc
    except OSError as exc:
        raise wrap_oserror(exc, f"reading {fpath}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise FormatVersionError(f"{fpath} is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FormatVersionError(f"{path} is not a datastore of this program")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"datastore {path} has format version {version}; this engine reads version {FORMAT_VERSION} only"
        )
    try:
        chunk_size = int(doc["chunk_size"])
        level = int(doc["compression"]["level"])
        encryption = doc.get("encryption")
        settings = Settings(str(doc["uuid"]), chunk_size, level, encryption)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatVersionError(f"{fpath} is missing required settings") from exc
    try:
        check_chunk_size(chunk_size)
    except EngineError as exc:
        raise FormatVersionError(f"{fpath} has an invalid chunk size {chunk_size}") from exc
    return settings


def load(path: str, key: bytes | None) -> tuple[Settings, Keys | None]:
    settings = read_settings(path)
    encryption = settings.encryption
    if encryption is None:
        return settings, None
    if key is None:
        raise WrongKey(f"datastore {path} is encrypted; a key is required")
    keys = _derive(key, encryption)
    blob = bytes.fromhex(str(encryption["key_check"]))
    try:
        AESGCM(keys.enc_key).decrypt(blob[:12], blob[12:], None)
    except InvalidTag as exc:
        raise WrongKey(f"wrong encryption key for datastore {path}") from exc
    return settings, keys
