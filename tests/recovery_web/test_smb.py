"""Item-level recovery to an SMB share served by a real smbd on a loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import smbclient

from backupsite.core.credentials import encrypt_json
from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.models import RecoveryPoint
from recovery.models import ItemState, RecoveryItemResult
from recovery.services import smb
from recovery.services.browse import ItemRef, folder, open_download, volumes
from recovery.services.destinations import parse_unc
from tests.recovery.conftest import Image
from tests.recovery_web.conftest import BackedUpLab, SambaShare, tree
from tests.recovery_web.test_items import catalog_point

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def smb_destination(share: SambaShare, sub: str, password: str | None = None) -> dict[str, object]:
    return {
        "kind": "smb",
        "unc": f"{share.unc}\\{sub}",
        "port": share.port,
        "username": share.username,
        "password": encrypt_json({"password": share.password if password is None else password}),
    }


def run_to_share(point: RecoveryPoint, items: list[ItemRef], destination: dict[str, object]) -> Job:
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=point.vm,
        parameters={
            "point": point.pk,
            "type": "items",
            "items": [item.as_dict() for item in items],
            "destination": destination,
            "options": {},
            "destination_text": destination["unc"],
        },
    )
    run_job(job.pk)
    job.refresh_from_db()
    return job


def test_files_reach_the_share_with_their_times(
    backed_up_lab: BackedUpLab, samba: SambaShare, settings
) -> None:  # type: ignore[no-untyped-def]
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    index = next(v.index for v in volumes(lab.windows_point, disk)[0] if v.filesystem_name == "NTFS")
    entries = {e.name: e for e in folder(lab.windows_point, disk, index, "/")}
    (samba.path / "t1").mkdir()
    (samba.path / "t1" / "notes.txt").write_bytes(b"already here")  # must not be overwritten
    items = [ItemRef("file", disk, index, "/notes.txt"), ItemRef("file", disk, index, "/report.docx")]

    job = run_to_share(lab.windows_point, items, smb_destination(samba, "t1"))

    assert job.state == JobState.SUCCEEDED, job.traceback
    assert (samba.path / "t1" / "notes.txt").read_bytes() == b"already here"
    for name, on_share in (("notes.txt", "notes~2.txt"), ("report.docx", "report.docx")):
        with open_download(lab.windows_point, disk, index, f"/{name}") as reader:
            assert (samba.path / "t1" / on_share).read_bytes() == reader.read()
        mtime = entries[name].mtime
        assert mtime is not None
        assert abs(os.stat(samba.path / "t1" / on_share).st_mtime - mtime.timestamp()) < 1
    rows = {row.source.rsplit(": ", 1)[-1]: row for row in RecoveryItemResult.objects.filter(job=job)}
    assert rows["/notes.txt"].destination == f"{samba.unc}\\t1\\notes~2.txt"
    assert "taken on the share" in rows["/notes.txt"].message
    assert not list((Path(settings.BACKUPSITE_DATA_DIR) / "recovery-staging").glob(f"job-{job.pk}"))


def test_hostile_names_stay_inside_the_share_folder(ntfs_image: Image, samba: SambaShare) -> None:
    point = catalog_point(ntfs_image, "web02")
    before = tree(samba.path)
    job = run_to_share(
        point, [ItemRef("folder", ntfs_image.name, 1, "/evil")], smb_destination(samba, "evil")
    )
    assert job.state == JobState.SUCCEEDED, job.traceback
    new = tree(samba.path) - before
    dest = str(samba.path / "evil")
    assert new and all(p == dest or p.startswith(dest + os.sep) for p in new)
    names = {Path(p).name for p in new}
    assert not any(ch in name for name in names for ch in '<>:"|?*\\')  # valid on Windows
    assert "CON" not in names and "_CON" in names
    rows = list(RecoveryItemResult.objects.filter(job=job))
    assert all(row.destination.startswith(f"{samba.unc}\\evil\\") for row in rows if row.destination)
    assert any(row.state == ItemState.COPIED for row in rows)


def test_wrong_password_fails_with_a_clear_message(backed_up_lab: BackedUpLab, samba: SambaShare) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    job = run_to_share(
        lab.windows_point, [ItemRef("disk", disk)], smb_destination(samba, "nope", password="wrong-password")
    )
    assert job.state == JobState.FAILED
    assert "cannot connect to" in job.error.lower() or "logon" in job.error.lower()
    assert not (samba.path / "nope").exists()


def test_whole_disk_reaches_the_share(backed_up_lab: BackedUpLab, samba: SambaShare, tmp_path: Path) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.linux)
    job = run_to_share(lab.linux_point, [ItemRef("disk", disk)], smb_destination(samba, "disks"))
    assert job.state == JobState.SUCCEEDED, job.traceback
    lab.linux_point.datastore.open_engine().restore(lab.linux_point.point_id, tmp_path / "ref")
    assert (samba.path / "disks" / Path(disk).name).read_bytes() == (tmp_path / "ref" / disk).read_bytes()


def test_upload_refuses_names_that_could_climb(samba: SambaShare, tmp_path: Path) -> None:
    location = parse_unc(f"{samba.unc}\\direct", samba.port)
    with smb.session(location, samba.username, samba.password) as kwargs:
        smb.ensure_folder(location.unc, kwargs)
        for bad in ("..", "a\\b", "c:d", ""):
            with pytest.raises(smb.SMBDestinationError):
                smb.free_name(location.unc, bad, kwargs)
        assert smbclient.listdir(location.unc, **kwargs) == []
