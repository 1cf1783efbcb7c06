"""Settings come from the environment; a bad value must stop the server at start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backupsite.core.env import (
    env_bool,
    env_int,
    env_list,
    parse_database_url,
)

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "a-good-test-key-with-enough-different-characters-0123456789"


def run_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update({"BACKUPSITE_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": GOOD_KEY})
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("BACKUPSITE_WORKERS", "two", "BACKUPSITE_WORKERS must be a whole number"),
        ("BACKUPSITE_WORKERS", "0", "BACKUPSITE_WORKERS must be at least 1"),
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL must start with postgres:// or sqlite://"),
        ("DATABASE_URL", "postgres://host", "DATABASE_URL must name a database"),
        ("REDIS_URL", "http://localhost", "REDIS_URL must start with redis://"),
        ("EMAIL_PORT", "70000", "EMAIL_PORT must be at most 65535"),
        ("ALLOWED_HOSTS", "a,,b", "ALLOWED_HOSTS is a comma-separated list"),
        ("BACKUPSITE_CREDENTIALS_KEY", "not-a-key", "BACKUPSITE_CREDENTIALS_KEY must be a Fernet key"),
        ("BACKUPSITE_RECOVERY_ROOTS", "/srv,relative/dir", "BACKUPSITE_RECOVERY_ROOTS holds absolute paths"),
        ("SITE_URL", "backup.example.com", "SITE_URL must start with http"),
    ],
)
def test_bad_value_fails_at_start(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    result = run_check(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert expected in result.stderr


def test_default_secret_key_refused_outside_debug(tmp_path: Path) -> None:
    result = run_check(tmp_path, SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_secret_key_file_in_the_data_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret_key").write_text(secrets.token_urlsafe(64) + "\n")
    assert run_check(tmp_path, SECRET_KEY="").returncode == 0
    (tmp_path / "data" / "secret_key").write_text("too-short\n")
    result = run_check(tmp_path, SECRET_KEY="")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_weak_secret_key_refused(tmp_path: Path) -> None:
    result = run_check(tmp_path, SECRET_KEY="ab" * 40)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_default_secret_key_allowed_in_debug(tmp_path: Path) -> None:
    result = run_check(tmp_path, SECRET_KEY="", DEBUG="1")
    assert result.returncode == 0, result.stderr
    # With no DATABASE_URL the first-run default is SQLite inside the data directory.
    assert (tmp_path / "data").is_dir()


def test_deploy_check_passes_with_production_settings(tmp_path: Path) -> None:
    environment = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/hvbackup"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE for their own process only.
            **{
                key: value
                for key, value in os.environ.items()
                if key not in {"BACKUPSITE_HTTPS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
            },
            **environment,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "backupsite.settings",
            "BACKUPSITE_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_env_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOL", "Yes")
    assert env_bool("X_BOOL", False) is True
    monkeypatch.setenv("X_INT", " 42 ")
    assert env_int("X_INT", 1, minimum=1, maximum=50) == 42
    monkeypatch.setenv("X_LIST", "a, b")
    assert env_list("X_LIST", []) == ["a", "b"]
    monkeypatch.delenv("X_UNSET", raising=False)
    assert env_int("X_UNSET", 7) == 7
    with pytest.raises(ImproperlyConfigured):
        env_int("X_LIST", 1)


def test_database_urls() -> None:
    postgres = parse_database_url(
        "DATABASE_URL", "postgres://u:p%40ss@db.example:6543/backups?sslmode=require"
    )
    assert postgres["ENGINE"] == "django.db.backends.postgresql"
    assert (postgres["USER"], postgres["PASSWORD"], postgres["HOST"], postgres["PORT"]) == (
        "u",
        "p@ss",
        "db.example",
        "6543",
    )
    assert postgres["OPTIONS"] == {"sslmode": "require"}
    sqlite = parse_database_url("DATABASE_URL", "sqlite:////var/lib/backup/db.sqlite3")
    assert sqlite["NAME"] == "/var/lib/backup/db.sqlite3"
    assert "journal_mode=WAL" in sqlite["OPTIONS"]["init_command"]
    with pytest.raises(ImproperlyConfigured):
        parse_database_url("DATABASE_URL", "postgres://db:notaport/x")
