"""A Recovery Operator in Debian's Chromium: find the VM, pick a point in the calendar,
recover it to its original instance, to another host, and item by item; download a file;
throttling and the email at the end, all for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from backupsite.core.permissions import Role
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import write_host_json
from protection.models import ConnectionKind, Host, VirtualMachine
from recovery.services.browse import volumes
from tests.browser.helpers import next_step, recover_and_wait, same_disk, sign_in
from tests.recovery_web.conftest import (
    BackedUpLab,
    SMTPServer,
    engine_restore,
    extract_partition,
    ntfscat,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def sign_in_as_restorer(page: Any, live_server: Any, django_user_model: Any) -> None:
    sign_in(page, live_server, django_user_model, "restorer", Role.RECOVERY_OPERATOR, landing="/recovery/")


def open_point_in_calendar(page: Any, vm: VirtualMachine, lab: BackedUpLab) -> None:
    """Find the VM by typing its name, then click the point's day and its Recover button."""
    page.get_by_label("Find a virtual machine").fill(vm.name[-5:])
    page.locator("#vm-results").get_by_role("link", name=vm.name).click()
    page.wait_for_url(f"**/recovery/vms/{vm.pk}/")
    point = lab.windows_point if vm == lab.windows else lab.linux_point
    day = timezone.localtime(point.created).date()
    page.get_by_test_id(f"day-{day:%Y-%m-%d}").click()
    row = page.get_by_test_id(f"point-{point.pk}")
    row.wait_for()
    assert "Not verified yet" in row.inner_text()
    row.get_by_role("button", name="Recover").click()
    page.wait_for_url("**/recovery/drafts/*/")
    assert vm.name in page.get_by_test_id("review-vm").inner_text()


def test_recover_to_the_original_instance(
    page: Any,
    live_server: Any,
    django_user_model: Any,
    backed_up_lab: BackedUpLab,
    tmp_path: Path,
) -> None:
    lab = backed_up_lab
    vm = lab.windows
    disk = lab.lab.disk(vm)
    churn(lab.lab.connector.vm_config(vm.hyperv_id), 5, seed=21)  # the guest wrote since the backup
    reference = engine_restore(lab.windows_point, tmp_path / "reference") / lab.disk_name(vm)
    assert disk.read_bytes() != reference.read_bytes()

    sign_in_as_restorer(page, live_server, django_user_model)
    open_point_in_calendar(page, vm, lab)
    next_step(page, "Select the recovery type")
    page.get_by_label("Recover to original instance").check()
    next_step(page, "Recover to the original instance")
    assert page.get_by_test_id("target-ok").is_visible()
    next_step(page, "Recovery options")
    assert page.get_by_label("Enable SAN-based recovery using hardware snapshots").is_disabled()
    next_step(page, "Summary")
    assert "Original instance on LAB-HV01" in page.get_by_test_id("summary-destination").inner_text()
    job, _elapsed = recover_and_wait(page)

    same_disk(disk, reference)
    assert job.result["new_registration"] is False
    assert "registered again" in job.log
    items = page.get_by_test_id("item-results").inner_text()
    assert lab.disk_name(vm) in items and "Recovered" in items


def test_recover_as_a_new_vm_on_another_host(
    page: Any,
    live_server: Any,
    django_user_model: Any,
    backed_up_lab: BackedUpLab,
    tmp_path: Path,
) -> None:
    lab = backed_up_lab
    folder = write_host_json(tmp_path / "LAB-HV02", "LAB-HV02")
    host = Host.objects.create(name="LAB-HV02", connection_kind=ConnectionKind.LAB, address=str(folder))
    vm = lab.linux

    sign_in_as_restorer(page, live_server, django_user_model)
    open_point_in_calendar(page, vm, lab)
    next_step(page, "Select the recovery type")
    page.get_by_label("Recover as virtual machine to any host").check()
    next_step(page, "Recover as a virtual machine to any host")
    page.get_by_label("Destination host").select_option(label="LAB-HV02")
    page.get_by_label("Folder on the host").fill("x" * 300)
    page.get_by_role("button", name="Next").click()
    page.get_by_text("Hyper-V cannot use paths of 260 characters or more").wait_for()
    page.get_by_label("Folder on the host").fill("Recovered/LNX")
    next_step(page, "Recovery options")
    next_step(page, "Summary")
    job, _elapsed = recover_and_wait(page)

    recovered = VirtualMachine.objects.get(hyperv_id=job.result["vm_id"])
    assert recovered.host == host and recovered.hyperv_id != vm.hyperv_id and not recovered.highly_available
    reference = engine_restore(lab.linux_point, tmp_path / "reference") / lab.disk_name(vm)
    same_disk(folder / "Recovered" / "LNX" / lab.disk_name(vm), reference)


def test_item_level_copy_download_throttle_and_email(
    page: Any,
    live_server: Any,
    django_user_model: Any,
    backed_up_lab: BackedUpLab,
    recovery_root: Path,
    smtp_server: SMTPServer,
    tmp_path: Path,
) -> None:
    lab = backed_up_lab
    vm = lab.windows
    disk_name = lab.disk_name(vm)
    ntfs = next(v for v in volumes(lab.windows_point, disk_name)[0] if v.filesystem_name == "NTFS")
    partition = extract_partition(
        engine_restore(lab.windows_point, tmp_path / "reference") / disk_name,
        ntfs.offset,
        ntfs.size,
        tmp_path,
    )
    chosen = ["database.mdf", "pagefile.sys"]  # 8 MiB of incompressible data
    size = sum(len(ntfscat(partition, f"/{name}")) for name in chosen)
    rate_mbps = round(size * 8 / 1_000_000 / 3.0, 3)  # about 3 s at this rate
    destination = recovery_root / "ticket-42"

    with override_settings(MAILERS=smtp_server.mailers()):
        sign_in_as_restorer(page, live_server, django_user_model)
        open_point_in_calendar(page, vm, lab)
        next_step(page, "Select the recovery type")
        page.get_by_label("Copy to a network folder (item-level recovery)").check()
        next_step(page, "Select the items to recover")
        page.get_by_test_id("open-disk").click()
        page.get_by_test_id(f"open-volume-{ntfs.index + 1}").click()
        for name in chosen:
            page.get_by_role("checkbox", name=f"Select {name}").check()

        # A single file straight to the browser.
        with page.expect_download() as info:
            page.get_by_role("link", name="Download report.docx").click()
        download = info.value
        assert download.suggested_filename == "report.docx"
        assert Path(download.path()).read_bytes() == ntfscat(partition, "/report.docx")

        next_step(page, "Where to copy the items")
        page.get_by_label("A folder on this server").check()
        page.get_by_label("Folder on this server", exact=True).fill("/etc")
        page.get_by_role("button", name="Next").click()
        page.get_by_text("is outside the folders recovered items may be written to").wait_for()
        page.get_by_label("Folder on this server", exact=True).fill(str(destination))
        next_step(page, "Recovery options")
        page.get_by_label("Throttle to one rate").check()
        page.get_by_label("Rate (Mbit/s)").fill(str(rate_mbps))
        page.get_by_label("Send an email when the recovery completes to").fill("ops@example.com")
        page.get_by_role("button", name="Back").click()  # back and forth keeps what was typed
        page.get_by_role("heading", name="Where to copy the items").wait_for()
        next_step(page, "Recovery options")
        assert page.get_by_label("Rate (Mbit/s)").input_value() == str(rate_mbps)
        next_step(page, "Summary")
        summary = page.get_by_test_id("summary").inner_text()
        assert (
            f"{rate_mbps:g} Mbit/s" in summary and "ops@example.com" in summary and "/database.mdf" in summary
        )
        job, elapsed = recover_and_wait(page)
        wait_until(lambda: len(smtp_server.messages) == 1)

    for name in chosen:
        assert (destination / name).read_bytes() == ntfscat(partition, f"/{name}"), name
    expected = size / (rate_mbps * 1_000_000 / 8)
    transfer = job.result["transfer_seconds"]
    print(
        f"browser throttled copy: {size} bytes at {rate_mbps} Mbit/s, expected {expected:.2f} s, "
        f"transfer {transfer:.2f} s, job {job.duration_seconds:.2f} s, click to status page {elapsed:.2f} s"
    )
    assert job.result["bytes"] == size
    assert abs(transfer - expected) <= 0.2 * expected
    # The whole job and the page round trip add opening the point, the catalog writes and the email.
    assert job.duration_seconds is not None
    assert abs(job.duration_seconds - expected) <= 0.2 * expected + 0.5
    assert abs(elapsed - expected) <= 0.2 * expected + 1.5
    mail = smtp_server.messages[0]
    assert mail["To"] == "ops@example.com" and "succeeded" in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    assert str(destination) in body and f"Bytes:       {size:,}" in body
    results = page.get_by_test_id("item-results").inner_text()
    assert results.count("Recovered") >= 2
