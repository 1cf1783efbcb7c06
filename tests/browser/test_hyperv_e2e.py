"""Issue 10 end to end: a Hyper-V host added and protected through the dashboard, every job
on the real django-q2 worker cluster, every control call over WS-Management and every
byte of data over SMB.

The host is ``EmulatedHyperV`` (tests/hyperv/windows) over a lab host folder with two
VMs, behind the test WS-Management endpoint (HTTPS with a test CA, NTLM); Samba serves
the folder as the host's ``C$``. In Chromium: add the host as kind Hyper-V with the CA
uploaded, Test connection (every step ok), save; the inventory runs on the worker;
protect both VMs through the wizard; the initial replicas run; the guest writes; the
VM page's "Synchronize now" reads only the changed ranges over SMB (the job page says
how many bytes crossed the wire); then the VM is recovered to its original instance and
as a new VM on a second Hyper-V host, and a file item by item. Every restored file is
compared with the frozen source. At the end no recovery checkpoint is left on the host,
and only the newest reference point of each VM remains.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from backupsite.core.models import Job, JobKind, JobState
from protection.connectors.hyperv.session import PLAN_ALIGN, Reference
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import copy_sparse, create_lab_host
from protection.connectors.ranges import normalize
from protection.models import ConnectionKind, Host, ProtectedDataSource, RecoveryPoint, VirtualMachine
from recovery.services.browse import volumes
from storage.models import Datastore
from storage.vdisk import read_layout
from tests.browser.helpers import (
    Clock,
    flashed_job_numbers,
    next_step,
    protect_with_wizard,
    recover_and_wait,
    reload_until,
    reported_failure,
    same_disk,
    sign_in_as_administrator,
    wait_for_job_page,
)
from tests.browser.workers import WorkerCluster
from tests.hyperv.fixtures import SambaServer, hyperv_samba
from tests.hyperv.windows.hoststate import checkpoints_of, reference_points
from tests.hyperv.wired import WINRM_PASSWORD, WINRM_USER, WiredHost, wired_host
from tests.recovery_web.conftest import extract_partition, ntfscat
from tests.wsman.fixtures import EndpointFactory, wsman_endpoint

__all__ = ["hyperv_samba", "wsman_endpoint"]

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
HOST = "HV-E2E"
OTHER = "HV-E2E2"
WINDOWS = f"{HOST}-WIN00"
LINUX = f"{HOST}-LNX01"
GROUP = "Hyper-V E2E"
CHURN_PERCENT = 0.25  # of the Linux disk's allocated data, in 64 KiB writes (3 at most)
CONNECTION_STEPS = ("resolve", "connect", "tls", "authenticate", "powershell", "hyperv", "rights")
ITEM = "report.docx"


@pytest.fixture
def recovery_root(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where item-level recovery may write, for the live server and for the worker cluster
    (which reads it from the environment when it starts: request this fixture before it)."""
    root = tmp_path / "restores"
    root.mkdir()
    settings.RECOVERY_ROOTS = [str(root)]
    monkeypatch.setenv("BACKUPSITE_RECOVERY_ROOTS", str(root))
    return root


def test_hyperv_host_protected_and_recovered_end_to_end(
    page: Any,
    live_server: Any,
    recovery_root: Path,
    worker_cluster: WorkerCluster,
    wsman_endpoint: EndpointFactory,
    hyperv_samba: SambaServer,
    django_user_model: Any,
    tmp_path: Path,
) -> None:
    clock = Clock()
    suffix = uuid.uuid4().hex[:8]
    source = wired_host(wsman_endpoint, hyperv_samba, f"hv-e2e-{suffix}", HOST)
    other = wired_host(wsman_endpoint, hyperv_samba, f"hv-e2e2-{suffix}", OTHER)
    with reported_failure(page, tmp_path, clock):
        scenario(
            page,
            live_server,
            worker_cluster,
            source,
            other,
            recovery_root,
            django_user_model,
            tmp_path,
            clock,
        )
    print(f"Hyper-V end-to-end timings and figures:\n{clock.report()}")


def add_hyperv_host(page: Any, host: WiredHost, ca_file: Path) -> None:
    """The add-host form, kind Hyper-V, with Test connection; ends on the host's page."""
    page.get_by_role("link", name="Protection", exact=True).click()
    page.get_by_role("button", name="Add host").click()
    expect(page.get_by_role("heading", name="Add host")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(HOST)
    page.get_by_label("Connection", exact=True).select_option("hyperv")
    page.get_by_label("Address", exact=True).fill("127.0.0.1")
    page.get_by_label("Protocol", exact=True).select_option("https")
    page.get_by_label("Port", exact=True).fill(str(host.endpoint.port))
    page.get_by_label("Authentication", exact=True).select_option("ntlm")
    page.get_by_label("User name", exact=True).fill(WINRM_USER)
    page.get_by_label("Password", exact=True).fill(WINRM_PASSWORD)
    page.get_by_label("CA certificate (PEM)").set_input_files(str(ca_file))
    page.get_by_label("User name for the file shares").fill(host.samba.username)
    page.get_by_label("Password for the file shares").fill(host.samba.password)
    page.get_by_label("Port for the file shares").fill(str(host.samba.port))
    page.get_by_role("button", name="Test connection").click()
    result = page.get_by_test_id("connection-result")
    expect(result).to_contain_text("Connection works", timeout=30_000)
    for step in CONNECTION_STEPS:
        expect(result.locator(f'[data-step="{step}"]')).to_have_attribute("data-status", "ok")
    assert WINRM_PASSWORD not in page.content()
    page.get_by_role("button", name="Save and read inventory").click()
    page.wait_for_url(re.compile(r"/protection/hosts/\d+/$"), timeout=30_000)
    expect(page.locator(".flash-success")).to_contain_text("its inventory is being read")


def open_point_for_recovery(page: Any, live_server: Any, vm: VirtualMachine, point: RecoveryPoint) -> None:
    page.goto(f"{live_server.url}/recovery/vms/{vm.pk}/")
    page.get_by_test_id(f"day-{timezone.localtime(point.created).date():%Y-%m-%d}").click()
    row = page.get_by_test_id(f"point-{point.pk}")
    row.wait_for()
    row.get_by_role("button", name="Recover").click()
    page.wait_for_url("**/recovery/drafts/*/")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lab_name(name: str) -> str:
    """Where a file of a Hyper-V backup lives in a lab VM folder (the configuration file is
    "Virtual Machines/vm.json" in the backup, as Hyper-V's .vmcx would be)."""
    return "vm.json" if name == "Virtual Machines/vm.json" else name


def freeze(folder: Path, point: RecoveryPoint, target: Path) -> dict[str, Path]:
    """Sparse copies of the VM's files that ``point`` holds, by their names in the VM folder."""
    frozen = {}
    for item in point.datastore.open_engine().point(point.point_id).files:
        name = lab_name(item.name)
        copy = target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy_sparse(folder / name, copy)
        frozen[name] = copy
    return frozen


# What registering a restored VM changes in its configuration (the lab's vm.json stands for
# Hyper-V's .vmcx): it is registered Off, and as a new VM on another host it gets a new id and
# loses its cluster and replication settings.
REGISTERED_IN_PLACE = {"state"}
REGISTERED_ANEW = REGISTERED_IN_PLACE | {
    "id", "highly_available", "cluster", "owner_node", "storage_kind", "csv", "smb", "replication",
}  # fmt: skip


def compare_restored(frozen: dict[str, Path], restored_folder: Path, *, registered_anew: bool) -> None:
    """Disks with cmp and qemu-img compare, other files by digest; the configuration key by key,
    apart from what the registration changes."""
    for name, copy in frozen.items():
        restored = restored_folder / name
        if name.endswith(".vhdx"):
            same_disk(restored, copy)
        elif name == "vm.json":
            before, after = json.loads(copy.read_text()), json.loads(restored.read_text())
            changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
            assert changed <= (REGISTERED_ANEW if registered_anew else REGISTERED_IN_PLACE), changed
            assert after["state"] == "Off" and (after["id"] != before["id"]) is registered_anew
        else:
            assert digest(restored) == digest(copy), name


def scenario(
    page: Any,
    live_server: Any,
    cluster: WorkerCluster,
    source: WiredHost,
    other: WiredHost,
    recovery_root: Path,
    django_user_model: Any,
    tmp_path: Path,
    clock: Clock,
) -> None:
    # The source host: two VMs on a lab folder the emulated Hyper-V answers from.
    (source.folder / "host.json").unlink()
    create_lab_host(source.folder, HOST, 2, 64 * MiB, seed="hv-e2e")
    Datastore.objects.create_with_store(name="Default", path=str(tmp_path / "datastore"))
    ca_file = tmp_path / "winrm-ca.pem"
    ca_file.write_text(source.endpoint.ca_pem)
    clock.lap("lab host, endpoints, datastore")

    # --- Add the host as Hyper-V; the inventory runs on the worker -----------------------
    sign_in_as_administrator(page, live_server, django_user_model)
    add_hyperv_host(page, source, ca_file)
    reload_until(page, page.get_by_role("link", name=LINUX))
    expect(page.get_by_role("link", name=WINDOWS)).to_be_visible()
    host = Host.objects.get(name=HOST)
    assert host.connection_kind == ConnectionKind.HYPERV
    assert host.credentials["smb_port"] == source.samba.port and host.credentials["ca_pem"]
    inventory = Job.objects.get(kind=JobKind.INVENTORY)
    assert inventory.state == JobState.SUCCEEDED, inventory.error
    assert "inventory" in [name for name, _params, _user in source.emulated.runs]
    clock.lap("add Hyper-V host, test connection, inventory")

    # --- Protect both VMs; initial replicas over WinRM + SMB --------------------------------
    slot = timezone.localtime(timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
    protect_with_wizard(page, [WINDOWS, LINUX], GROUP, slot)
    initial_ids = sorted(Job.objects.filter(kind=JobKind.INITIAL_REPLICA).values_list("pk", flat=True))
    assert len(initial_ids) == 2
    for job_id in initial_ids:
        message = wait_for_job_page(page, live_server, job_id)
        assert message.startswith("Initial replica created: read "), message
        assert "over the network" in message, message
    linux = VirtualMachine.objects.get(name=LINUX)
    windows = VirtualMachine.objects.get(name=WINDOWS)
    linux_folder = source.vm_folder(LINUX)
    linux_disk = linux_folder / "Virtual Hard Disks" / f"{LINUX}.vhdx"
    initial = Job.objects.get(kind=JobKind.INITIAL_REPLICA, vm=linux)
    assert initial.result["bytes_read_from_host"] >= initial.result["bytes_total"]
    clock.figures["initial replica bytes over SMB (Linux)"] = initial.result["bytes_read_from_host"]
    clock.lap("wizard and initial replicas")

    # --- The guest writes; "Synchronize now" reads only the changed ranges ----------------
    written = churn(LabConnector(source.folder).vm_config(linux.hyperv_id), CHURN_PERCENT, seed=5)
    assert 0 < written.writes <= 3
    page.goto(f"{live_server.url}{linux.get_absolute_url()}")
    page.get_by_role("button", name="Synchronize now").click()
    expect(page.locator(".flash-success")).to_contain_text("Synchronization of")
    (sync_id,) = flashed_job_numbers(page)
    message = wait_for_job_page(page, live_server, sync_id)
    assert "(change tracking)" in message and "over the network" in message, message
    shown = int(page.get_by_test_id("bytes-read-from-host").inner_text())
    sync = Job.objects.get(pk=sync_id)
    assert sync.result["change_tracking_used"] is True and sync.result["full_scan"] is False
    over_wire = sync.result["bytes_read_from_host"]
    assert shown == over_wire and f"Read {over_wire} bytes" in sync.log
    # What an RCT synchronization may read over SMB: the 4 MiB-aligned read-ahead windows
    # around the changed ranges and the VHDX structure (header, log, BAT, metadata region:
    # re-read as changed ranges every time), which hold the engine's chunks; the structure
    # once more to map the RCT ranges through the BAT; the configuration file; and up to
    # 1 MiB of guest partition tables and file-system records probed for paging files.
    layout = read_layout(linux_disk)
    structure = normalize(layout.metadata_ranges())
    changed_in_file = normalize(layout.virtual_to_file(written.virtual_ranges))
    read_windows = {
        index
        for offset, length in [*changed_in_file, *structure]
        for index in range(offset // PLAN_ALIGN, (offset + length - 1) // PLAN_ALIGN + 1)
    }
    config_size = (linux_folder / "vm.json").stat().st_size
    structure_bytes = sum(n for _o, n in structure)
    bound = len(read_windows) * PLAN_ALIGN + structure_bytes + config_size + MiB
    file_size = linux_disk.stat().st_size
    clock.figures["guest writes (64 KiB each)"] = written.writes
    clock.figures["changed bytes"] = written.bytes_written
    clock.figures["sync bytes over SMB"] = over_wire
    clock.figures["sync engine bytes_read"] = sync.result["bytes_read"]
    clock.figures["VHDX structure bytes"] = structure_bytes
    clock.figures["4 MiB windows read"] = len(read_windows)
    clock.figures["bound"] = bound
    clock.figures["disk: virtual size / file size"] = f"{layout.virtual_size} / {file_size}"
    assert over_wire <= bound, (over_wire, bound)
    assert over_wire < file_size / 3 and over_wire < initial.result["bytes_read_from_host"] / 3
    reference_ids = [
        Reference.decode(r).reference_point_id
        for r in ProtectedDataSource.objects.get(vm=linux).change_tracking_refs["refs"].values()
    ]
    assert list(reference_points(linux_folder)) == sorted(set(reference_ids))  # the previous one destroyed
    clock.lap("churn and synchronization")

    # The frozen source: the VM's files as the synchronization point holds them.
    sync_point = RecoveryPoint.objects.get(point_id=sync.result["recovery_point"])
    frozen = freeze(linux_folder, sync_point, tmp_path / "frozen")

    # --- Recover to the original instance (the guest wrote since) ---------------------------
    churn(LabConnector(source.folder).vm_config(linux.hyperv_id), 5, seed=9)
    assert digest(linux_disk) != digest(frozen[f"Virtual Hard Disks/{LINUX}.vhdx"])
    open_point_for_recovery(page, live_server, linux, sync_point)
    next_step(page, "Select the recovery type")
    page.get_by_label("Recover to original instance").check()
    next_step(page, "Recover to the original instance")
    assert page.get_by_test_id("target-ok").is_visible()
    next_step(page, "Recovery options")
    next_step(page, "Summary")
    assert f"Original instance on {HOST}" in page.get_by_test_id("summary-destination").inner_text()
    job, _elapsed = recover_and_wait(page)
    assert job.result["new_registration"] is False
    compare_restored(frozen, linux_folder, registered_anew=False)
    clock.lap("recovery to the original instance")

    # --- Recover as a new VM on another Hyper-V host ----------------------------------------
    second = Host.objects.create(name=OTHER, connection_kind=ConnectionKind.HYPERV, address="127.0.0.1")
    second.credentials = other.credentials()
    second.save()
    open_point_for_recovery(page, live_server, linux, sync_point)
    next_step(page, "Select the recovery type")
    page.get_by_label("Recover as virtual machine to any host").check()
    next_step(page, "Recover as a virtual machine to any host")
    page.get_by_label("Destination host").select_option(label=OTHER)
    page.get_by_label("Folder on the host").fill(other.windows_path("Recovered", "LNX"))
    next_step(page, "Recovery options")
    next_step(page, "Summary")
    job, _elapsed = recover_and_wait(page)
    recovered = VirtualMachine.objects.get(hyperv_id=job.result["vm_id"])
    assert recovered.host == second and recovered.hyperv_id != linux.hyperv_id
    compare_restored(frozen, other.folder / "Recovered" / "LNX", registered_anew=True)
    assert "restore-vm" in [name for name, _params, _user in other.emulated.runs]
    clock.lap("recovery to another Hyper-V host")

    # --- Item-level recovery of one file of the Windows VM to a folder ----------------------
    windows_point = RecoveryPoint.objects.get(vm=windows, deleted_at__isnull=True)
    disk_name = f"Virtual Hard Disks/{WINDOWS}.vhdx"
    ntfs = next(v for v in volumes(windows_point, disk_name)[0] if v.filesystem_name == "NTFS")
    partition = extract_partition(
        source.vm_folder(WINDOWS) / disk_name, ntfs.offset, ntfs.size, tmp_path
    )  # the live disk: the Windows guest has not written since its backup
    destination = recovery_root / "ticket-10"
    open_point_for_recovery(page, live_server, windows, windows_point)
    next_step(page, "Select the recovery type")
    page.get_by_label("Copy to a network folder (item-level recovery)").check()
    next_step(page, "Select the items to recover")
    page.get_by_test_id("open-disk").click()
    page.get_by_test_id(f"open-volume-{ntfs.index + 1}").click()
    page.get_by_role("checkbox", name=f"Select {ITEM}").check()
    next_step(page, "Where to copy the items")
    page.get_by_label("A folder on this server").check()
    page.get_by_label("Folder on this server", exact=True).fill(str(destination))
    next_step(page, "Recovery options")
    next_step(page, "Summary")
    job, _elapsed = recover_and_wait(page)
    assert digest(destination / ITEM) == hashlib.sha256(ntfscat(partition, f"/{ITEM}")).hexdigest()
    clock.lap("item-level recovery")

    # --- Nothing left behind on the host ----------------------------------------------------
    for vm in (linux, windows):
        assert checkpoints_of(source.emulated, vm.hyperv_id) == []
    assert len(reference_points(source.vm_folder(WINDOWS))) == 1
    assert not list(source.folder.rglob("Snapshots/*/checkpoint.json"))
    subprocess.run(["qemu-img", "check", "-q", str(linux_disk)], check=True)
    cluster.check_alive()
