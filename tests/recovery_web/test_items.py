"""Item-level recovery jobs: files, folders, volume images and whole disks to a server folder,
hostile guest names, damaged and encrypted volumes, and throttling."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import Job, JobKind, JobState
from protection.models import Alert, AlertKind, RecoveryPoint
from recovery.models import ItemState, RecoveryItemResult
from recovery.services.browse import ItemRef, volumes
from storage.models import Datastore
from tests.factories import make_host, make_vm
from tests.recovery.conftest import Image
from tests.recovery_web.conftest import BackedUpLab, engine_restore, extract_partition, ntfscat, tree

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def run_items(point: RecoveryPoint, items: list[ItemRef], destination: dict[str, Any], **options: Any) -> Job:
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=point.vm,
        parameters={
            "point": point.pk,
            "type": "items",
            "items": [item.as_dict() for item in items],
            "destination": destination,
            "options": options,
            "destination_text": str(destination.get("folder") or destination.get("unc")),
        },
    )
    run_job(job.pk)
    job.refresh_from_db()
    return job


def catalog_point(image: Image, name: str) -> RecoveryPoint:
    """Catalog rows over a point of the item-level tests' datastore."""
    row = Datastore.objects.get_or_create(name="itemlevel", defaults={"path": image.ds.root})[0]
    vm = make_vm(name, host=make_host(f"{name}-host"))
    return RecoveryPoint.objects.create(
        point_id=image.point_id, datastore=row, vm=vm, created=timezone.now(), kind="recovery_point",
        consistency="crash", size_bytes=image.vhdx.stat().st_size,
    )  # fmt: skip


def ntfs_volume(lab: BackedUpLab) -> int:
    found, _ = volumes(lab.windows_point, lab.disk_name(lab.windows))
    return next(v.index for v in found if v.filesystem_name == "NTFS")


def test_files_from_ntfs_match_ntfscat_and_keep_times(
    backed_up_lab: BackedUpLab, recovery_root: Path, tmp_path: Path
) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    index = ntfs_volume(lab)
    names = ["database.mdf", "ledger.csv", "notes.txt"]
    items = [ItemRef("file", disk, index, f"/{name}") for name in names]
    job = run_items(lab.windows_point, items, {"kind": "server", "folder": str(recovery_root / "t1")})
    assert job.state == JobState.SUCCEEDED, job.traceback

    volume = next(v for v in volumes(lab.windows_point, disk)[0] if v.index == index)
    vhdx = engine_restore(lab.windows_point, tmp_path / "ref") / disk
    partition = extract_partition(vhdx, volume.offset, volume.size, tmp_path)
    for name in names:
        restored = recovery_root / "t1" / name
        assert restored.read_bytes() == ntfscat(partition, f"/{name}"), name
    entries = {e.name: e for e in __import__("recovery.services.browse", fromlist=["folder"]).folder(
        lab.windows_point, disk, index, "/")}  # fmt: skip
    mtime = entries["notes.txt"].mtime
    assert mtime is not None
    assert abs(os.stat(recovery_root / "t1" / "notes.txt").st_mtime - mtime.timestamp()) < 1e-3
    rows = RecoveryItemResult.objects.filter(job=job)
    assert rows.count() == 3 and all(row.state == ItemState.COPIED for row in rows)
    assert job.result["bytes"] == sum(len(ntfscat(partition, f"/{n}")) for n in names)


def test_volume_image_and_whole_disk(backed_up_lab: BackedUpLab, recovery_root: Path, tmp_path: Path) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    index = ntfs_volume(lab)
    items = [ItemRef("volume", disk, index), ItemRef("disk", disk)]
    job = run_items(lab.windows_point, items, {"kind": "server", "folder": str(recovery_root)})
    assert job.state == JobState.SUCCEEDED, job.traceback
    reference = engine_restore(lab.windows_point, tmp_path / "ref") / disk
    whole = recovery_root / Path(disk).name
    subprocess.run(["cmp", str(whole), str(reference)], check=True)
    volume = next(v for v in volumes(lab.windows_point, disk)[0] if v.index == index)
    image = recovery_root / f"{Path(disk).stem}-volume{index + 1}.img"
    subprocess.run(
        ["cmp", str(image), str(extract_partition(reference, volume.offset, volume.size, tmp_path))]
    )
    assert ntfscat(image, "/notes.txt")  # a usable NTFS image

    again = run_items(lab.windows_point, items[1:], {"kind": "server", "folder": str(recovery_root)})
    assert again.state == JobState.SUCCEEDED
    second = recovery_root / f"{Path(disk).stem}~2.vhdx"
    assert second.exists()  # never overwrites what is there
    subprocess.run(["cmp", str(whole), str(second)], check=True)


def test_destination_outside_the_roots_is_refused_at_run_time(
    backed_up_lab: BackedUpLab, recovery_root: Path, tmp_path: Path
) -> None:
    lab = backed_up_lab
    item = ItemRef("file", lab.disk_name(lab.windows), ntfs_volume(lab), "/notes.txt")
    for folder in (
        str(tmp_path / "elsewhere"),
        lab.lab.datastore.path,
        str(recovery_root / ".." / "x"),
        "rel",
    ):
        job = run_items(lab.windows_point, [item], {"kind": "server", "folder": folder})
        assert job.state == JobState.FAILED, folder
        assert job.error
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "x").exists()
    assert Alert.objects.active().filter(kind=AlertKind.RECOVERY_FAILED, vm=lab.windows).exists()


def test_hostile_names_never_escape_the_destination(
    ntfs_image: Image, recovery_root: Path, tmp_path: Path
) -> None:
    point = catalog_point(ntfs_image, "web01")
    dest = recovery_root / "evil-out"
    before = tree(tmp_path)
    job = run_items(
        point, [ItemRef("folder", ntfs_image.name, 1, "/evil")], {"kind": "server", "folder": str(dest)}
    )
    assert job.state == JobState.SUCCEEDED, job.traceback
    after = tree(tmp_path)
    outside = {p for p in after - before if not p.startswith(str(dest) + os.sep) and p != str(dest)}
    assert not outside, f"written outside the destination: {sorted(outside)}"
    written = {p.name for p in (dest / "evil").iterdir()}
    assert "pwned" not in written and not (tmp_path / "pwned").exists() and not Path("/etc/pwned3").exists()
    rows = {row.source.rsplit(": ", 1)[-1]: row for row in RecoveryItemResult.objects.filter(job=job)}
    traversal = rows["/evil/../../pwned"]
    assert traversal.state == ItemState.COPIED and "saved as" in traversal.message
    assert traversal.destination.startswith(str(dest) + "/evil/")
    backslash = rows["/evil/..\\..\\pwn2"]
    assert backslash.state == ItemState.COPIED and Path(backslash.destination).parent == dest / "evil"
    long_row = next(row for source, row in rows.items() if source.startswith("/evil/éééé"))
    assert long_row.state == ItemState.COPIED and "longer than" in long_row.message
    assert Path(long_row.destination).read_bytes() == b"long name\n"


def test_damaged_and_encrypted_volumes_give_clear_messages(
    special_image: Image,
    recovery_root: Path,
) -> None:
    point = catalog_point(special_image, "special01")
    dest = recovery_root / "special"
    job = run_items(
        point,
        [
            ItemRef("file", special_image.name, 0, "/secret.txt"),
            ItemRef("folder", special_image.name, 1, "/"),
        ],
        {"kind": "server", "folder": str(dest)},
    )
    assert job.state == JobState.FAILED
    rows = list(RecoveryItemResult.objects.filter(job=job))
    assert len(rows) == 2 and all(row.state == ItemState.FAILED for row in rows)
    messages = " ".join(row.message for row in rows)
    assert "BitLocker" in messages and "raw volume image" in messages
    assert "damaged" in messages
    assert "No item could be recovered" in job.error
    assert not any(dest.rglob("*"))  # nothing half-written

    image = run_items(
        point, [ItemRef("volume", special_image.name, 0)], {"kind": "server", "folder": str(dest)}
    )
    assert image.state == JobState.SUCCEEDED, image.traceback
    written = dest / "special-volume1.img"
    assert written.read_bytes()[3:11] == b"-FVE-FS-"  # the encrypted volume, as raw bytes


def test_throttled_item_copy_takes_as_long_as_the_rate_implies(
    backed_up_lab: BackedUpLab, recovery_root: Path
) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    index = ntfs_volume(lab)
    items = [ItemRef("file", disk, index, "/database.mdf"), ItemRef("file", disk, index, "/pagefile.sys")]
    size = 8 * 1024 * 1024
    rate_mbps = size * 8 / 1_000_000 / 2.5
    started = time.monotonic()
    job = run_items(
        lab.windows_point,
        items,
        {"kind": "server", "folder": str(recovery_root / "slow")},
        throttle="rate",
        rate_mbps=rate_mbps,
    )
    elapsed = time.monotonic() - started
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.result["bytes"] == size
    expected = size / (rate_mbps * 1_000_000 / 8)
    print(f"throttled item copy: {size} bytes, expected {expected:.2f} s, took {elapsed:.2f} s")
    assert abs(job.result["transfer_seconds"] - expected) <= 0.2 * expected
    assert abs(elapsed - expected) <= 0.2 * expected + 0.5  # plus opening the point and catalog writes


@pytest.mark.django_db(transaction=True)
def test_cancelled_copy_lists_what_was_done_and_leaves_no_partial_file(
    backed_up_lab: BackedUpLab, recovery_root: Path
) -> None:
    lab = backed_up_lab
    disk = lab.disk_name(lab.windows)
    index = ntfs_volume(lab)
    items = [ItemRef("file", disk, index, "/notes.txt"), ItemRef("file", disk, index, "/database.mdf")]
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=lab.windows,
        parameters={
            "point": lab.windows_point.pk,
            "type": "items",
            "items": [item.as_dict() for item in items],
            "destination": {"kind": "server", "folder": str(recovery_root / "c")},
            "options": {"throttle": "rate", "rate_mbps": 8},  # 1 MB/s: database.mdf needs 4 s
        },
    )

    def cancel() -> None:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        connection.close()  # this thread's own connection, or the test database cannot be dropped

    timer = threading.Timer(1.0, cancel)
    timer.start()
    try:
        run_job(job.pk)
    finally:
        timer.join()
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    rows = {row.source.rsplit(": ", 1)[-1]: row for row in RecoveryItemResult.objects.filter(job=job)}
    assert rows["/notes.txt"].state == ItemState.COPIED
    assert sorted(p.name for p in (recovery_root / "c").iterdir()) == ["notes.txt"]


def test_a_full_destination_stops_the_copy_with_a_clear_message(
    backed_up_lab: BackedUpLab, recovery_root: Path
) -> None:
    lab = backed_up_lab
    small = recovery_root / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        disk = lab.disk_name(lab.windows)
        index = ntfs_volume(lab)
        items = [ItemRef("file", disk, index, "/notes.txt"), ItemRef("file", disk, index, "/database.mdf")]
        job = run_items(lab.windows_point, items, {"kind": "server", "folder": str(small)})
        assert job.state == JobState.FAILED
        assert "The destination cannot be written" in job.error and "full" in job.error
        assert (small / "notes.txt").exists() and not (small / "database.mdf").exists()
        assert not [p for p in small.iterdir() if p.name.startswith(".")]  # no partial file left
        assert (
            RecoveryItemResult.objects.get(job=job, source__endswith="/notes.txt").state == ItemState.COPIED
        )
    finally:
        subprocess.run(["umount", str(small)], check=True)
