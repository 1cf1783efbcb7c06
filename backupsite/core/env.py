"""Strict readers for settings that come from environment variables.

Every helper raises ``ImproperlyConfigured`` naming the variable and the bad
value, so a typo in a deployment fails at start instead of at 3 a.m.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}; got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(item == "" for item in items):
        raise ImproperlyConfigured(f"{name} is a comma-separated list without empty items; got {value!r}")
    return items


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    path = default if value is None else Path(value)
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name} must be a directory; {path} is a file")
    return path


def parse_database_url(name: str, url: str) -> dict[str, Any]:
    """Turn ``postgres://user:pw@host:port/db?sslmode=require`` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ImproperlyConfigured(f"{name} must name a database, e.g. postgres://user@host/backups")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name} has a bad port: {url!r}") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        # sqlite:////absolute/path.db (four slashes) or sqlite:///relative.db
        path = unquote(url[len("sqlite://") :]).removeprefix("/") if url.startswith("sqlite:///") else ""
        if not path:
            raise ImproperlyConfigured(f"{name} must be sqlite:////absolute/path/file.sqlite3")
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        return sqlite_database(Path(path))
    raise ImproperlyConfigured(
        f"{name} must start with postgres:// or sqlite://; got {parts.scheme or 'no scheme'!s}"
    )


def sqlite_database(path: Path) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # WAL lets the web server read while a worker writes; IMMEDIATE avoids
        # "database is locked" on lock upgrades inside transactions.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
