"""Encrypted datastores: the server generates the key, keeps it encrypted with its
credentials key, shows it once as the recovery key, and takes it back to register a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from backupsite.core import credentials
from backupsite.core.models import AuditEvent
from storage.engine import Datastore as EngineDatastore
from storage.engine import EngineError, SourceFile, WrongKey
from storage.models import Datastore, DatastoreKeyUnavailable, Volume, new_recovery_key
from storage.services import add_volume

pytestmark = pytest.mark.django_db
KiB = 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    (tmp_path / "pool").mkdir()
    return add_volume(str(tmp_path / "pool"), "Pool")


@pytest.fixture
def lose_credentials_key(settings) -> Iterator[Callable[[], None]]:  # type: ignore[no-untyped-def]
    """Calling it switches to another credentials key, as after losing credentials.key."""

    def lose() -> None:
        settings.BACKUPSITE_CREDENTIALS_KEY = Fernet.generate_key().decode()
        credentials._fernet.cache_clear()

    yield lose
    credentials._fernet.cache_clear()


def test_recovery_keys_are_random_and_readable() -> None:
    key = new_recovery_key()
    assert key != new_recovery_key()
    groups = key.split("-")
    assert len(groups) == 13 and all(len(group) == 4 for group in groups)  # 52 base32 = 256 bits + 4 pad
    assert key.upper() == key


def test_an_encrypted_datastore_through_the_pages_round_trip(
    admin_client: Client, volume: Volume, tmp_path: Path
) -> None:
    response = admin_client.post(
        reverse("storage:datastore-add", args=[volume.pk]),
        {
            "name": "Vault",
            "folder": "vault",
            "chunk_size": 256 * KiB,
            "compression_level": 3,
            "encrypt": "on",
        },
    )
    datastore = Datastore.objects.get(name="Vault")
    key_url = reverse("storage:datastore-recovery-key", args=[datastore.pk])
    assert response.status_code == 302 and response["Location"] == key_url
    assert datastore.encrypted and datastore.recovery_key_pending

    # The key page shows the key, says why it matters, and is not cached.
    page = admin_client.get(key_url)
    key = page.context["key"]
    text = page.content.decode()
    assert key in text and "cannot be read if the server's database or its credentials key is lost" in text
    assert "no-store" in page["Cache-Control"]

    # format.json says encrypted; the row never holds the key in clear.
    doc = json.loads(Path(datastore.path, "format.json").read_text())
    assert doc["encryption"]["algorithm"] == "aes-256-gcm" and doc["compression"]["level"] == 3
    assert key not in datastore.key_token and key.encode().hex() not in datastore.key_token
    row = Datastore.objects.filter(pk=datastore.pk).values()[0]
    assert not any(key in str(value) or key.encode().hex() in str(value) for value in row.values())

    # Back up and restore through the row's engine: byte-identical.
    source = tmp_path / "disk.vhdx"
    source.write_bytes(os.urandom(700 * KiB) + b"\0" * 300 * KiB)
    point = datastore.open_engine().backup("vm-1", [SourceFile(name="disk.vhdx", source=source)])
    Datastore.objects.get(pk=datastore.pk).open_engine(write=False).restore(point.id, tmp_path / "out")
    assert (tmp_path / "out" / "disk.vhdx").read_bytes() == source.read_bytes()
    # The chunks really are encrypted with that key: another key is refused, the recovery key opens it.
    with pytest.raises(WrongKey):
        EngineDatastore.open(datastore.path, key="not-the-key")
    assert [p.id for p in EngineDatastore.open(datastore.path, key=key).points()] == [point.id]

    # Not ticked: still shown. Ticked: never shown again.
    again = admin_client.post(key_url, {})
    assert (
        again.status_code == 200
        and "Tick the box once you have saved the recovery key." in again.content.decode()
    )
    assert Datastore.objects.get(pk=datastore.pk).recovery_key_pending
    done = admin_client.post(key_url, {"saved": "on"})
    assert done.status_code == 302 and done["Location"] == datastore.get_absolute_url()
    assert not Datastore.objects.get(pk=datastore.pk).recovery_key_pending
    assert AuditEvent.objects.filter(action="datastore.recovery_key_saved").count() == 1
    after = admin_client.get(key_url).content.decode()
    assert key not in after and "it is never shown again" in after
    assert key not in admin_client.get(datastore.get_absolute_url()).content.decode()


def test_the_datastore_page_reminds_administrators_of_an_unsaved_key(
    admin_client: Client, readonly_client: Client, volume: Volume
) -> None:
    datastore = Datastore.objects.create_with_store("Vault", f"{volume.path}/vault", key=new_recovery_key())
    assert b"Show the recovery key" in admin_client.get(datastore.get_absolute_url()).content
    assert b"Show the recovery key" not in readonly_client.get(datastore.get_absolute_url()).content
    assert (
        readonly_client.get(reverse("storage:datastore-recovery-key", args=[datastore.pk])).status_code == 403
    )


def test_create_datastore_command_prints_the_key_once(tmp_path: Path) -> None:
    out = StringIO()
    call_command("create-datastore", "Vault", str(tmp_path / "vault"), "--encrypt", "--dedicated", stdout=out)
    datastore = Datastore.objects.get()
    key = out.getvalue().split("Recovery key (shown only now): ")[1].split()[0]
    assert datastore.encrypted and not datastore.colocate and not datastore.recovery_key_pending
    EngineDatastore.open(tmp_path / "vault", key=key)  # the printed key opens the store
    assert datastore.open_engine().encrypted


def test_the_recovery_key_in_a_file_opens_the_store_with_the_engine_cli(tmp_path: Path) -> None:
    key = new_recovery_key()
    Datastore.objects.create_with_store("Vault", str(tmp_path / "vault"), key=key)
    (tmp_path / "key.txt").write_text(key + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "storage.engine",
            "--key-file",
            str(tmp_path / "key.txt"),
            "usage",
            str(tmp_path / "vault"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0 points" in result.stdout


def test_register_existing_with_its_recovery_key(tmp_path: Path) -> None:
    key = new_recovery_key()
    EngineDatastore.create(tmp_path / "vault", key=key)  # e.g. from a server that was lost
    with pytest.raises(WrongKey, match="is encrypted: give its recovery key"):
        Datastore.objects.register_existing("Vault", str(tmp_path / "vault"))
    with pytest.raises(WrongKey, match="wrong encryption key"):
        Datastore.objects.register_existing("Vault", str(tmp_path / "vault"), key=new_recovery_key())
    assert not Datastore.objects.exists()
    # As read from a key file: bytes with a newline, like the engine's --key-file takes it.
    datastore = Datastore.objects.register_existing("Vault", str(tmp_path / "vault"), key=f"{key}\n".encode())
    assert datastore.encrypted and not datastore.recovery_key_pending  # the administrator has it
    assert Datastore.objects.get().open_engine().encrypted


def test_register_existing_refuses_a_key_for_a_plain_store(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "plain")
    with pytest.raises(EngineError, match="is not encrypted; it needs no key"):
        Datastore.objects.register_existing("Plain", str(tmp_path / "plain"), key="something")
    assert not Datastore.objects.exists()


def test_a_lost_credentials_key_makes_the_store_unavailable_until_the_key_is_entered_again(
    tmp_path: Path, lose_credentials_key: Callable[[], None]
) -> None:
    key = new_recovery_key()
    datastore = Datastore.objects.create_with_store("Vault", str(tmp_path / "vault"), key=key)
    lose_credentials_key()
    token = datastore.key_token
    with pytest.raises(
        DatastoreKeyUnavailable, match="cannot be decrypted with this server's credentials key"
    ):
        Datastore.objects.get(pk=datastore.pk).open_engine()
    with pytest.raises(WrongKey):
        datastore.set_recovery_key(new_recovery_key())
    assert Datastore.objects.get(pk=datastore.pk).key_token == token  # nothing changed
    datastore.set_recovery_key(key)
    assert Datastore.objects.get(pk=datastore.pk).open_engine().encrypted


def test_set_recovery_key_command(tmp_path: Path, lose_credentials_key: Callable[[], None]) -> None:
    key = new_recovery_key()
    datastore = Datastore.objects.create_with_store("Vault", str(tmp_path / "vault"), key=key)
    lose_credentials_key()
    with pytest.raises(DatastoreKeyUnavailable, match=r"manage\.py set-recovery-key 'Vault' --key-file FILE"):
        Datastore.objects.get(pk=datastore.pk).open_engine()
    (tmp_path / "wrong.txt").write_text(new_recovery_key())
    with pytest.raises(CommandError, match=r"wrong encryption key.*Nothing was changed"):
        call_command(
            "set-recovery-key", "Vault", "--key-file", str(tmp_path / "wrong.txt"), stdout=StringIO()
        )
    with pytest.raises(CommandError, match="No datastore is named 'Nope'"):
        call_command("set-recovery-key", "Nope", "--key-file", str(tmp_path / "wrong.txt"), stdout=StringIO())
    with pytest.raises(CommandError, match="Cannot read the key file"):
        call_command("set-recovery-key", "Vault", "--key-file", str(tmp_path / "missing"), stdout=StringIO())
    (tmp_path / "key.txt").write_text(key + "\n")
    out = StringIO()
    call_command("set-recovery-key", "Vault", "--key-file", str(tmp_path / "key.txt"), stdout=out)
    assert "has its key again" in out.getvalue()
    assert Datastore.objects.get(pk=datastore.pk).open_engine().encrypted
    assert AuditEvent.objects.filter(action="datastore.recovery_key_set").count() == 1
