"""Whole-VM recovery jobs on real lab hosts: original instance, another host, refusals, throttling."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import AuditEvent, Job, JobKind, JobState
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import write_host_json
from protection.models import Alert, AlertKind, ConnectionKind, Host, VirtualMachine
from protection.services.inventory import sync_host_inventory
from recovery.models import ItemState, RecoveryItemResult
from recovery.services.vmrestore import MAX_PATH
from tests.recovery_web.conftest import BackedUpLab

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def recover(lab: BackedUpLab, vm: VirtualMachine, kind: str, **parameters: object) -> Job:
    point = lab.windows_point if vm == lab.windows else lab.linux_point
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=vm,
        parameters={"point": point.pk, "type": kind, "options": {}, **parameters},
    )
    run_job(job.pk)
    job.refresh_from_db()
    return job


def engine_copy(lab: BackedUpLab, vm: VirtualMachine, target: Path) -> Path:
    """The disk as the point holds it, restored by the engine itself: the reference."""
    point = lab.windows_point if vm == lab.windows else lab.linux_point
    point.datastore.open_engine().restore(point.point_id, target)
    return target / lab.disk_name(vm)


def same_disk(left: Path, right: Path) -> None:
    subprocess.run(["cmp", str(left), str(right)], check=True)
    subprocess.run(["qemu-img", "compare", "-q", str(left), str(right)], check=True)


def second_host(tmp_path: Path) -> Host:
    folder = write_host_json(tmp_path / "LAB-HV02", "LAB-HV02")
    host = Host.objects.create(name="LAB-HV02", connection_kind=ConnectionKind.LAB, address=str(folder))
    sync_host_inventory(host)
    return host


def test_original_instance_gets_the_points_disk_back(backed_up_lab: BackedUpLab, tmp_path: Path) -> None:
    lab = backed_up_lab
    vm = lab.windows
    disk = lab.lab.disk(vm)
    churn(lab.lab.connector.vm_config(vm.hyperv_id), 5, seed=3)
    reference = engine_copy(lab, vm, tmp_path / "reference")
    assert disk.read_bytes() != reference.read_bytes()

    job = recover(lab, vm, "original")

    assert job.state == JobState.SUCCEEDED, job.traceback
    same_disk(disk, reference)
    assert job.result["new_registration"] is False and job.result["vm_id"] == vm.hyperv_id
    assert job.result["bytes"] == lab.windows_point.size_bytes
    vm.refresh_from_db()
    assert vm.removed_at is None and vm.state == "Off"  # registered again, inventory refreshed
    rows = list(RecoveryItemResult.objects.filter(job=job))
    assert {row.source for row in rows} == {lab.disk_name(vm), "vm.json"}
    assert all(row.state == ItemState.COPIED for row in rows)
    assert AuditEvent.objects.filter(action="recovery.succeeded", object_id=str(job.pk)).exists()
    # Change tracking restarts: the next backup compares every block.
    assert lab.lab.source(vm).change_tracking_refs["refs"] == {}


def test_another_host_gets_a_new_vm(backed_up_lab: BackedUpLab, tmp_path: Path) -> None:
    lab = backed_up_lab
    host = second_host(tmp_path)
    job = recover(lab, lab.linux, "alternate", target={"host": host.pk, "path": "Restored/LNX"})
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.result["new_registration"] is True and job.result["vm_id"] != lab.linux.hyperv_id
    restored = VirtualMachine.objects.get(hyperv_id=job.result["vm_id"])
    assert restored.host == host and not restored.highly_available
    folder = Path(host.address) / "Restored" / "LNX"
    same_disk(folder / lab.disk_name(lab.linux), engine_copy(lab, lab.linux, tmp_path / "reference"))
    assert json.loads((folder / "vm.json").read_text())["highly_available"] is False
    # The original VM is untouched and still the protected one.
    assert VirtualMachine.objects.get(pk=lab.linux.pk).host == lab.lab.host


def test_missing_original_host_is_refused_with_advice_alert_and_email(
    backed_up_lab: BackedUpLab, mailoutbox: list
) -> None:
    lab = backed_up_lab
    folder = Path(lab.lab.host.address)
    folder.rename(folder.with_name("gone"))
    job = Job.objects.create(
        kind=JobKind.RECOVERY,
        vm=lab.windows,
        parameters={
            "point": lab.windows_point.pk,
            "type": "original",
            "options": {"notify": ["ops@example.com"]},
            "destination_text": "original instance on LAB-HV01",
        },
    )
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "original host is gone" in job.error and "alternate location" in job.error
    alert = Alert.objects.active().get(vm=lab.windows, kind=AlertKind.RECOVERY_FAILED)
    assert alert.job == job
    assert AuditEvent.objects.filter(action="recovery.failed", object_id=str(job.pk)).exists()
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert "FAILED" in mail.subject and mail.to == ["ops@example.com"]
    assert "original host is gone" in mail.body and "Result:      failed" in mail.body


def test_a_later_successful_recovery_resolves_the_alert(backed_up_lab: BackedUpLab, tmp_path: Path) -> None:
    lab = backed_up_lab
    host = second_host(tmp_path)
    too_long = "x" * MAX_PATH
    failed = recover(lab, lab.linux, "alternate", target={"host": host.pk, "path": too_long})
    assert failed.state == JobState.FAILED and "260" in failed.error
    assert not (Path(host.address) / too_long[:100]).exists()
    assert Alert.objects.active().filter(vm=lab.linux, kind=AlertKind.RECOVERY_FAILED).exists()
    ok = recover(lab, lab.linux, "alternate", target={"host": host.pk, "path": "R1"})
    assert ok.state == JobState.SUCCEEDED, ok.traceback
    assert not Alert.objects.active().filter(vm=lab.linux, kind=AlertKind.RECOVERY_FAILED).exists()


def test_alternate_destination_outside_the_host_is_refused(
    backed_up_lab: BackedUpLab, tmp_path: Path
) -> None:
    lab = backed_up_lab
    host = second_host(tmp_path)
    outside = tmp_path / "outside"
    job = recover(lab, lab.linux, "alternate", target={"host": host.pk, "path": str(outside)})
    assert job.state == JobState.FAILED and "is not a folder of lab host" in job.error
    assert not outside.exists()
    escape = recover(lab, lab.linux, "alternate", target={"host": host.pk, "path": "../escaped"})
    assert escape.state == JobState.FAILED
    assert not (tmp_path / "escaped").exists()


def test_throttled_recovery_takes_as_long_as_the_rate_implies(
    backed_up_lab: BackedUpLab, tmp_path: Path
) -> None:
    lab = backed_up_lab
    host = second_host(tmp_path)
    size = lab.windows_point.size_bytes
    rate_mbps = size * 8 / 1_000_000 / 3.0  # about 3 s for the whole point
    started = time.monotonic()
    job = recover(
        lab,
        lab.windows,
        "alternate",
        target={"host": host.pk, "path": "Throttled"},
        options={"throttle": "rate", "rate_mbps": rate_mbps},
    )
    elapsed = time.monotonic() - started
    assert job.state == JobState.SUCCEEDED, job.traceback
    expected = job.result["bytes"] / (rate_mbps * 1_000_000 / 8)
    assert job.result["bytes"] == size
    print(f"throttled VM recovery: {size} bytes, expected {expected:.2f} s, took {elapsed:.2f} s")
    assert abs(job.result["transfer_seconds"] - expected) <= 0.2 * expected
    assert abs(elapsed - expected) <= 0.2 * expected + 0.5  # plus opening the point and catalog writes
    assert "Throttling: " in job.log and "Mbit/s" in job.log


def test_vanished_point_fails_cleanly(backed_up_lab: BackedUpLab) -> None:
    lab = backed_up_lab
    shutil.rmtree(Path(lab.lab.datastore.path) / "points" / lab.windows_point.point_id)
    job = recover(lab, lab.windows, "original")
    assert job.state == JobState.FAILED and "missing from its datastore" in job.error
    assert "alternate location" not in job.error  # another host would not help
    assert lab.lab.disk(lab.windows).exists()  # nothing was deleted on the host
    lab.windows_point.refresh_from_db()
    assert lab.windows_point.missing  # every page says so from now on, before any verify
