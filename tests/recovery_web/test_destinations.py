"""Where item-level recovery may write: server folders inside the allowed roots, SMB paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery.services.destinations import DestinationInvalid, parse_unc, validate_server_folder
from storage.models import Datastore

pytestmark = pytest.mark.django_db


def test_a_folder_inside_the_roots_is_accepted(recovery_root: Path) -> None:
    assert validate_server_folder(str(recovery_root / "new" / "folder")) == recovery_root / "new" / "folder"
    assert validate_server_folder(f"  {recovery_root}  ") == recovery_root


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("", "Enter the folder"),
        ("relative/path", "not an absolute path"),
        ("//server/share", "not an absolute path"),
        ("{root}/../../etc", "contains '.' or '..'"),
        ("{root}/./x", "contains '.' or '..'"),
        ("/etc/passwd", "outside the folders"),
        ("/etc", "outside the folders"),
        ("{root}/a\x00b", "not valid"),
    ],
)
def test_bad_folders_are_refused(recovery_root: Path, folder: str, reason: str) -> None:
    with pytest.raises(DestinationInvalid, match=reason.replace(".", r"\.").replace("(", r"\(")):
        validate_server_folder(folder.format(root=recovery_root))


def test_a_link_out_of_the_roots_is_refused(recovery_root: Path, tmp_path: Path) -> None:
    (recovery_root / "sneaky").symlink_to(tmp_path)
    with pytest.raises(DestinationInvalid, match="outside the folders"):
        validate_server_folder(str(recovery_root / "sneaky" / "x"))


def test_backup_data_is_off_limits(recovery_root: Path, settings) -> None:  # type: ignore[no-untyped-def]
    store = recovery_root / "store"
    Datastore.objects.create(name="inside", path=str(store))
    for folder in (store, store / "chunks", recovery_root):  # the store itself, inside it, around it
        with pytest.raises(DestinationInvalid, match="backup data"):
            validate_server_folder(str(folder))
    settings.RECOVERY_ROOTS = [str(Path(settings.BACKUPSITE_DATA_DIR).parent)]
    with pytest.raises(DestinationInvalid, match="backup data"):
        validate_server_folder(str(Path(settings.BACKUPSITE_DATA_DIR) / "restores"))


def test_a_file_in_the_way_is_refused(recovery_root: Path) -> None:
    (recovery_root / "file").write_text("x")
    with pytest.raises(DestinationInvalid, match="not a folder"):
        validate_server_folder(str(recovery_root / "file" / "below"))


def test_unc_paths() -> None:
    location = parse_unc("\\\\fs01.example.com\\Restores\\Ticket 42\\", 4455)
    assert (location.server, location.share, location.path, location.port) == (
        "fs01.example.com", "Restores", "Ticket 42", 4455,
    )  # fmt: skip
    assert location.unc == r"\\fs01.example.com\Restores\Ticket 42"
    assert parse_unc(r"\\10.0.0.5\share").path == ""
    for bad in (
        r"C:\share",
        r"\\server",
        r"\\server\share\..\x",
        r"\\ser ver\share",
        r"\\s\sh\a:b",
        "\\\\s\\" + "x" * 260,
    ):
        with pytest.raises(DestinationInvalid):
            parse_unc(bad)
    with pytest.raises(DestinationInvalid, match="port"):
        parse_unc(r"\\s\share", 0)
