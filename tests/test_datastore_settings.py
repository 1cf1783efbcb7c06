"""Datastore rows and the engine's format.json: one source of truth for the settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from storage.engine import Datastore as EngineDatastore
from storage.engine import WrongKey
from storage.models import Datastore, DatastoreKeyUnavailable, DatastoreUnavailable

pytestmark = pytest.mark.django_db
KiB, MiB = 1024, 1024 * 1024


def row(tmp_path: Path, **fields: object) -> Datastore:
    return Datastore(name="Primary", path=str(tmp_path / "ds"), **fields)


@pytest.mark.parametrize("size", [256 * KiB, 2 * MiB, 4 * MiB])
def test_chunk_sizes_the_engine_accepts_are_valid(tmp_path: Path, size: int) -> None:
    row(tmp_path, chunk_size=size).full_clean()


@pytest.mark.parametrize("size", [3 * MiB, 768 * KiB, 128 * KiB, 8 * MiB])
def test_chunk_sizes_the_engine_refuses_are_invalid(tmp_path: Path, size: int) -> None:
    # 3 MiB and 768 KiB are inside the old 256K-4M bounds: the engine refused them later.
    with pytest.raises(ValidationError, match="power of two between 256 KiB and 4 MiB") as caught:
        row(tmp_path, chunk_size=size).full_clean()
    assert set(caught.value.message_dict) == {"chunk_size"}


def test_created_store_gets_the_rows_chunk_size(tmp_path: Path) -> None:
    datastore = Datastore.objects.create_with_store("Primary", str(tmp_path / "ds"), chunk_size=512 * KiB)
    assert datastore.open_engine().chunk_size == 512 * KiB
    assert json.loads((tmp_path / "ds" / "format.json").read_text())["chunk_size"] == 512 * KiB
    assert json.loads((tmp_path / "ds" / "format.json").read_text())["encryption"] is None


def test_row_mirrors_format_json_when_opened(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "ds", chunk_size=256 * KiB)  # made by the CLI, say
    datastore = Datastore.objects.create(name="Primary", path=str(tmp_path / "ds"))  # default 1 MiB
    assert datastore.open_engine().chunk_size == 256 * KiB
    assert datastore.chunk_size == 256 * KiB
    assert Datastore.objects.get(pk=datastore.pk).chunk_size == 256 * KiB


def test_existing_store_settings_cannot_be_changed_on_the_row(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "ds", chunk_size=256 * KiB)
    with pytest.raises(ValidationError, match="uses 256 KiB chunks") as caught:
        row(tmp_path, chunk_size=MiB).full_clean()
    assert set(caught.value.message_dict) == {"chunk_size"}
    row(tmp_path, chunk_size=256 * KiB).full_clean()


def test_an_encrypted_row_without_a_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        row(tmp_path, encrypted=True).full_clean()
    assert caught.value.message_dict == {"encrypted": ["An encrypted datastore needs a key."]}


def test_compression_level_is_the_engines_and_mirrored(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="between 1 and 22"):
        row(tmp_path, compression_level=0).full_clean()
    EngineDatastore.create(tmp_path / "ds", compression_level=9)
    with pytest.raises(ValidationError, match="uses zstd level 9"):
        row(tmp_path).full_clean()
    datastore = Datastore.objects.create(name="Primary", path=str(tmp_path / "ds"))
    datastore.open_engine()
    assert Datastore.objects.get(pk=datastore.pk).compression_level == 9


def test_an_encrypted_store_is_mirrored_and_needs_its_key(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "ds", key=b"k" * 32)
    datastore = Datastore.objects.create(name="Primary", path=str(tmp_path / "ds"))
    with pytest.raises(ValidationError, match="is encrypted; that cannot change"):
        datastore.full_clean()
    with pytest.raises(DatastoreKeyUnavailable, match="is encrypted and a key is required") as caught:
        datastore.open_engine()
    # Jobs treat it like any unavailable store (an alert), callers of the engine like a wrong key.
    assert isinstance(caught.value, DatastoreUnavailable) and isinstance(caught.value, WrongKey)
    assert Datastore.objects.get(pk=datastore.pk).encrypted is True


def test_unreadable_format_json_is_a_path_error(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "format.json").write_text("{not json")
    with pytest.raises(ValidationError) as caught:
        row(tmp_path).full_clean()
    assert set(caught.value.message_dict) == {"path"}
