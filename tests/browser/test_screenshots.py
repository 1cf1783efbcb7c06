"""Screenshots of the pages a backup administrator uses, taken in Debian's Chromium.

Each test opens one or two pages over a realistic data set (a lab host with two backed-up
VMs in a protection group, a Hyper-V host with VMs of its own, succeeded, failed and running
jobs), checks what the page must show, and saves a full-page PNG (1280 px wide). The PNGs go
to pytest's temporary directory; with ``UPDATE_SCREENSHOTS=1`` they are also copied to
``docs/screenshots/`` (see the README there), so a normal run never changes the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from backupsite.core.models import Job, JobKind, JobState
from backupsite.core.permissions import Role
from protection.connectors import Finding, Severity
from protection.models import (
    Alert,
    AlertKind,
    CapacitySample,
    ConnectionKind,
    Host,
    HostStatus,
    ProtectedDataSource,
    ProtectionGroup,
    ProtectionGroupDraft,
    VirtualDisk,
    VirtualMachine,
    VMState,
)
from protection.services.capacity import refresh_assigned
from protection.services.catalog_import import import_datastore
from protection.services.groups import start_draft
from recovery.models import WizardStep
from storage.engine import Datastore as EngineDatastore
from storage.engine import SourceFile
from storage.models import Datastore
from storage.services import add_volume, create_datastore
from tests.factories import make_host, make_vm
from tests.hyperv.control.conftest import PASSWORD as HYPERV_PASSWORD
from tests.hyperv.control.conftest import USERNAME as HYPERV_USER
from tests.hyperv.control.conftest import Wired, emulated, lab_host, wire, wsman_endpoint  # noqa: F401
from tests.protection.helpers import FakeConnector
from tests.recovery_web.conftest import (  # noqa: F401
    BackedUpLab,
    backed_up_lab,
    lab_template,
    make_draft,
    protected_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
PASSWORD = "a-long-screenshot-test-password"
GIB = 1024**3
# Text that must never reach a page: Django's error pages, tracebacks, unrendered templates.
BROKEN = ("Server Error", "Traceback (most recent call last)", "{{", "}}", "{%", "%}")


Shoot = Callable[[Any, str], Path]


@dataclass
class Scene:
    lab: BackedUpLab
    hyperv: Host
    failed: Job
    running: Job


@pytest.fixture
def scene(backed_up_lab: BackedUpLab, monkeypatch: pytest.MonkeyPatch) -> Scene:  # noqa: F811
    """The backed-up lab host plus a Hyper-V host and the jobs an ordinary day leaves behind."""
    lab = backed_up_lab
    Datastore.objects.filter(pk=lab.lab.datastore.pk).update(name="Primary")
    lab.lab.datastore.refresh_from_db()
    # HV02 is not reachable from the test: its prerequisites come from a stand-in connector
    # (the live server runs in this process, so the patch reaches its request threads).
    hyperv_connector = FakeConnector()
    lab_connector = Host.connector
    monkeypatch.setattr(
        Host,
        "connector",
        lambda host: (
            hyperv_connector if host.connection_kind == ConnectionKind.HYPERV else lab_connector(host)
        ),
    )
    now = timezone.now()
    hyperv = make_host(
        "HV02",
        connection_kind=ConnectionKind.HYPERV,
        address="hv02.corp.example",
        status=HostStatus.OK,
        os_version="Windows Server 2022 Datacenter",
        last_inventory_at=now - timedelta(hours=3),
    )
    for name, size in (("SQL01", 120), ("WEB01", 40), ("FILES01", 500)):
        vm = make_vm(name, host=hyperv, os_family="windows", state=VMState.RUNNING)
        VirtualDisk.objects.create(
            vm=vm,
            path=f"D:\\Hyper-V\\{name}\\{name}-disk0.vhdx",
            file_size_bytes=size * GIB // 3,
            virtual_size_bytes=size * GIB,
        )
        if name == "FILES01":
            hyperv_connector.findings[vm.hyperv_id] = [
                Finding(
                    "integration-services",
                    Severity.WARNING,
                    "Integration services are older than the host's: backups fall back to a saved state.",
                    "Update the integration services in the guest.",
                )
            ]
    Job.objects.create(
        kind=JobKind.INVENTORY,
        host=lab.lab.host,
        state=JobState.SUCCEEDED,
        created=now - timedelta(minutes=1),
        started=now - timedelta(minutes=1),
        finished=now - timedelta(minutes=1) + timedelta(seconds=1),
        duration_seconds=1,
        message="2 virtual machines",
    )
    Job.objects.create(
        kind=JobKind.INVENTORY,
        host=hyperv,
        state=JobState.SUCCEEDED,
        created=now - timedelta(hours=3),
        started=now - timedelta(hours=3),
        finished=now - timedelta(hours=3) + timedelta(seconds=4),
        duration_seconds=4,
        message="3 virtual machines",
    )
    failed = Job.objects.create(
        kind=JobKind.SYNCHRONIZATION,
        vm=lab.linux,
        group=lab.lab.group,
        state=JobState.FAILED,
        created=now - timedelta(seconds=15),
        started=now - timedelta(seconds=14),
        finished=now - timedelta(seconds=2),
        duration_seconds=12,
        message="Could not read the disk",
        error="The host did not answer within 30 s while the checkpoint was being created.",
        log="Creating a reference point\nWaiting for the host\n",
    )
    running = Job.objects.create(
        kind=JobKind.SYNCHRONIZATION,
        vm=lab.windows,
        group=lab.lab.group,
        state=JobState.RUNNING,
        created=now - timedelta(minutes=2),
        started=now - timedelta(minutes=2),
        bytes_total=64 * 1024 * 1024,
        bytes_done=40 * 1024 * 1024,
        rate_bytes_per_second=3.5 * 1024 * 1024,
        message="Reading LAB-HV01-WIN00.vhdx",
    )
    # What the job runner does when a backup fails: the dashboard shows it until a job succeeds.
    Alert.raise_alert(AlertKind.BACKUP_FAILED, failed.error, vm=lab.linux, group=lab.lab.group, job=failed)
    return Scene(lab, hyperv, failed, running)


@pytest.fixture
def signed_in(page: Any, live_server: Any, django_user_model: Any) -> Any:
    """A browser tab of 1280x800, signed in as an administrator (who sees every page)."""
    user = django_user_model.objects.create_user(username="admin", password=PASSWORD)
    # get_or_create: transactional tests flush the groups the roles migration made.
    user.groups.add(Group.objects.get_or_create(name=Role.ADMINISTRATOR.value)[0])
    page.set_viewport_size(VIEWPORT)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.user = user
    return page


@pytest.fixture
def shoot(tmp_path: Path) -> Shoot:
    """Check the page is not broken, then save its full-page PNG (and publish it if asked)."""

    def take(page: Any, name: str) -> Path:
        text = page.locator("body").inner_text()
        for broken in BROKEN:
            assert broken not in text, f"{name}: {broken!r} on {page.url}"
        assert "None" not in text.split(), f"{name}: a bare None on {page.url}"
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    return take


def visit(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, f"{url}: {response and response.status}"


def heading(page: Any) -> str:
    return str(page.locator("main h1").first.inner_text())


# --------------------------------------------------------------------------- dashboard and protection


def test_dashboard(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/")
    assert heading(page) == "Dashboard"
    assert page.get_by_test_id("protected-vms").inner_text() == "2"
    assert page.get_by_test_id("jobs-failed").inner_text() == "1"
    assert "Backup failed" in page.get_by_test_id("alerts").inner_text()
    shoot(page, "dashboard")


def test_protection_overview(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/")
    assert heading(page) == "Protection"
    main = page.locator("main").inner_text()
    for name in ("LAB-HV01", "HV02", "Gold", "SQL01", scene.lab.windows.name):
        assert name in main
    shoot(page, "protection-overview")


def test_host_page(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}{scene.lab.lab.host.get_absolute_url()}")
    assert "LAB-HV01" in heading(page)
    main = page.locator("main").inner_text()
    assert scene.lab.windows.name in main and scene.lab.linux.name in main
    shoot(page, "host")


def test_vm_page(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    vm = scene.lab.linux
    visit(page, f"{live_server.url}{vm.get_absolute_url()}")
    assert vm.name in heading(page)
    main = page.locator("main").inner_text()
    assert "Gold" in main and "Failed" in main
    shoot(page, "vm")


def test_protection_group_wizard(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    draft: ProtectionGroupDraft = start_draft(page.user)
    visit(page, f"{live_server.url}/protection/wizard/{draft.pk}/members/")
    wizard = page.locator("#wizard")
    for name in ("SQL01", "WEB01", "FILES01"):
        assert name in wizard.inner_text()
    shoot(page, "group-wizard-1-members")

    sql, web = VirtualMachine.objects.filter(name__in=("SQL01", "WEB01"))
    draft.save_progress("members", members={"vms": [str(sql.pk), str(web.pk)]})
    draft.save_progress(
        "method", method={"name": "Silver", "description": "SQL and web", "short_term_on_disk": "on"}
    )
    visit(page, f"{live_server.url}/protection/wizard/{draft.pk}/allocation/")
    text = page.locator("#wizard").inner_text()
    assert "Allocation" in text or "allocation" in text
    assert scene.lab.lab.datastore.name in text
    assert "Colocated: this group will share datastore Primary with Gold." in text
    shoot(page, "group-wizard-4-allocation")


# --------------------------------------------------------------------------- capacity


def colocated_silver_with_growth(scene: Scene) -> ProtectionGroup:
    """HV02's SQL01 and WEB01 in a second group on the lab's datastore (no backup yet: the
    plan), and three days of hourly samples of a volume that fills in about a month."""
    datastore = scene.lab.lab.datastore
    silver = ProtectionGroup.objects.create(
        name="Silver", datastore=datastore, retention_days=7, planned_daily_churn_percent=3.0
    )
    for vm in VirtualMachine.objects.filter(name__in=("SQL01", "WEB01")):
        ProtectedDataSource.objects.create(group=silver, vm=vm)
    space = datastore.disk_space()
    assert space is not None
    now = timezone.now()
    per_hour = space.free // (30 * 24)
    CapacitySample.objects.bulk_create(
        CapacitySample(
            datastore=datastore,
            taken_at=now - timedelta(hours=hours),
            used_bytes=datastore.used_bytes,
            volume_total_bytes=space.total,
            volume_used_bytes=space.used - hours * per_hour,
            volume_free_bytes=space.free + hours * per_hour,
        )
        for hours in range(72, -1, -1)
    )
    refresh_assigned(datastore)
    return silver


def test_capacity(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    silver = colocated_silver_with_growth(scene)
    visit(page, f"{live_server.url}/protection/capacity/")
    assert heading(page) == "Capacity"
    datastores = page.get_by_test_id("datastores").inner_text()
    assert "Primary" in datastores and "Gold, Silver" in datastores
    assert "not known yet" not in datastores and "/day" in datastores
    groups = page.get_by_test_id("groups").inner_text()
    assert "planned 3 %" in groups and "Gold" in groups
    assert page.get_by_test_id("capacity-bar").count() == 1
    shoot(page, "capacity")

    visit(page, f"{live_server.url}{silver.get_absolute_url()}")
    section = page.get_by_test_id("group-capacity").inner_text()
    assert "its 2 colocated groups" in section and "volume full around" in section
    shoot(page, "group")


# --------------------------------------------------------------------------- adding a Hyper-V host


def test_add_host_form_shows_only_the_fields_that_apply(
    signed_in: Any, live_server: Any, shoot: Shoot
) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/hosts/add/")
    assert heading(page) == "Add host"
    # A lab host is a folder on this server: nothing about WinRM or credentials applies.
    assert page.get_by_label("Connection").input_value() == "lab"
    assert page.get_by_label("Address").is_visible()
    for label in ("Protocol", "CA certificate (PEM)", "Authentication", "User name", "Password"):
        assert page.get_by_label(label, exact=True).is_hidden(), label
    shoot(page, "host-add-lab")

    page.get_by_label("Connection").select_option("hyperv")
    password_fields = ("User name", "Password")
    certificate_fields = ("Client certificate (PEM)", "Client certificate's private key (PEM, not encrypted)")
    for label in ("Address", "Protocol", "Port", "CA certificate (PEM)", "Authentication", *password_fields):
        assert page.get_by_label(label, exact=True).is_visible(), label
    for label in certificate_fields:
        assert page.get_by_label(label, exact=True).is_hidden(), label
    shoot(page, "host-add-hyperv")

    page.get_by_label("Authentication").select_option("certificate")
    for label in certificate_fields:
        assert page.get_by_label(label, exact=True).is_visible(), label
    for label in password_fields:
        assert page.get_by_label(label, exact=True).is_hidden(), label
    shoot(page, "host-add-hyperv-certificate")


def fill_hyperv_form(page: Any, w: Wired, password: str) -> None:
    page.get_by_label("Name", exact=True).fill("HV07")
    page.get_by_label("Connection").select_option("hyperv")
    page.get_by_label("Address").fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(w.endpoint.port))
    page.get_by_label("CA certificate (PEM)").set_input_files(
        files=[{"name": "ca.pem", "mimeType": "application/x-pem-file", "buffer": w.endpoint.ca_pem.encode()}]
    )
    page.get_by_label("User name", exact=True).fill(HYPERV_USER)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Test connection").click()
    page.get_by_test_id("connection-steps").wait_for()


def test_hyperv_connection_works(
    signed_in: Any,
    live_server: Any,
    wire: Callable[..., Wired],  # noqa: F811
    shoot: Shoot,
) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/hosts/add/")
    fill_hyperv_form(page, wire(), HYPERV_PASSWORD)
    result = page.get_by_test_id("connection-result").inner_text()
    assert "Connection works" in result and HYPERV_PASSWORD not in page.content()
    assert page.locator('[data-status="ok"]').count() == 7
    shoot(page, "host-add-hyperv-test-ok")


def test_hyperv_connection_with_a_wrong_password(
    signed_in: Any,
    live_server: Any,
    wire: Callable[..., Wired],  # noqa: F811
    shoot: Shoot,
) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/hosts/add/")
    fill_hyperv_form(page, wire(), HYPERV_PASSWORD + "-old")
    result = page.get_by_test_id("connection-result").inner_text()
    assert "Connection failed" in result and "What to do:" in result
    assert page.locator('[data-step="authenticate"][data-status="failed"]').count() == 1
    shoot(page, "host-add-hyperv-test-failed")


# --------------------------------------------------------------------------- monitoring


def test_job_list(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/jobs/")
    assert heading(page) == "Monitoring: jobs"
    main = page.locator("main").inner_text()
    for state in ("Succeeded", "Failed", "Running"):
        assert state in main
    shoot(page, "job-list")


def test_job_detail(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/protection/jobs/{scene.failed.pk}/")
    assert page.locator("#job-status .state").inner_text() == "Failed"
    assert "did not answer within 30 s" in page.locator("main").inner_text()
    shoot(page, "job-detail-failed")
    visit(page, f"{live_server.url}/protection/jobs/{scene.running.pk}/")
    assert page.get_by_test_id("job-progress").get_attribute("value") == "62"
    shoot(page, "job-detail-running")


# --------------------------------------------------------------------------- recovery and storage


def test_recovery_overview(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/recovery/")
    assert heading(page) == "Recovery"
    shoot(page, "recovery-overview")
    visit(page, f"{live_server.url}/recovery/vms/{scene.lab.windows.pk}/")
    assert scene.lab.windows.name in heading(page)
    day = timezone.localtime(scene.lab.windows_point.created).date()
    page.get_by_test_id(f"day-{day:%Y-%m-%d}").click()
    page.get_by_test_id(f"point-{scene.lab.windows_point.pk}").wait_for()
    shoot(page, "recovery-calendar")


def test_recovery_wizard(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    draft = make_draft(page.user, scene.lab.windows_point, step=WizardStep.REVIEW)
    visit(page, f"{live_server.url}/recovery/drafts/{draft.pk}/")
    assert scene.lab.windows.name in page.get_by_test_id("review-vm").inner_text()
    shoot(page, "recovery-wizard-review")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Recovery type").wait_for()
    shoot(page, "recovery-wizard-type")


@pytest.fixture
def pool_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Path]]:
    """tmpfs mounts outside the scene's folder (which becomes a volume itself); unmounted at the end."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        while os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the storage pool scene mounts tmpfs volumes (CI runs as root)")
def test_storage(
    signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot, pool_mounts: Callable[[str, str], Path]
) -> None:
    page = signed_in
    primary = scene.lab.lab.datastore
    data_dir = add_volume(str(Path(primary.path).parent), "Data directory")
    usb = add_volume(str(pool_mounts("usb", "2t")), "USB disk 2")
    offsite = create_datastore(usb, "Offsite", "offsite", compression_level=3, colocate=False, encrypt=True)
    offsite.datastore.confirm_recovery_key_saved()
    create_datastore(usb, "Archive", "archive", chunk_size=4 * 1024 * 1024, compression_level=9)
    # What capacity planning leaves on the rows (the new datastores have no group yet).
    refresh_assigned(primary)
    nas_path = pool_mounts("nas", "500g")
    add_volume(str(nas_path), "NAS (iSCSI)")
    subprocess.run(["umount", str(nas_path)], check=True)  # the NAS is offline today

    visit(page, f"{live_server.url}/storage/")
    assert heading(page) == "Storage"
    main = page.locator("main").inner_text()
    assert primary.name in main and "Offsite" in main and "Not mounted:" in main
    shoot(page, "storage")
    visit(page, f"{live_server.url}{usb.get_absolute_url()}")
    assert "tmpfs" in page.locator("main").inner_text()
    shoot(page, "volume")
    visit(page, f"{live_server.url}{reverse('storage:datastore-add', args=[usb.pk])}")
    shoot(page, "datastore-create")
    visit(page, f"{live_server.url}/storage/{primary.pk}/")
    assert data_dir.label in page.locator("main").inner_text()
    shoot(page, "datastore")
    vault = create_datastore(usb, "Vault", "vault", encrypt=True)
    visit(page, f"{live_server.url}{reverse('storage:datastore-recovery-key', args=[vault.datastore.pk])}")
    assert (
        vault.recovery_key is not None
        and vault.recovery_key in page.get_by_test_id("recovery-key").inner_text()
    )
    shoot(page, "recovery-key")


def test_management(signed_in: Any, live_server: Any, scene: Scene, shoot: Shoot) -> None:
    page = signed_in
    visit(page, f"{live_server.url}/management/")
    assert heading(page) == "Management"
    shoot(page, "management")


# --------------------------------------------------------------------------- after import-datastore


def test_host_imported_from_a_datastore_asks_for_its_credentials(
    signed_in: Any, live_server: Any, shoot: Shoot, tmp_path: Path
) -> None:
    """A datastore from a lost server, imported: its Hyper-V host waits for credentials."""
    page = signed_in
    engine = EngineDatastore.create(tmp_path / "Backups")
    disk = tmp_path / "SQL01.vhdx"
    disk.write_bytes(os.urandom(256 * 1024))
    engine.backup(
        "5e1c1d5e-0000-4000-8000-00000000a001",
        [SourceFile("Virtual Hard Disks/SQL01.vhdx", str(disk))],
        vm_name="SQL01",
        metadata={"host": "HV03", "kind": "recovery_point"},
    )
    import_datastore(str(tmp_path / "Backups"))
    host = Host.objects.get(name="HV03")
    visit(page, f"{live_server.url}{host.get_absolute_url()}")
    main = page.locator("main").inner_text()
    assert "Enter credentials: Imported from datastore Backups" in main and "SQL01" in main
    shoot(page, "host-imported")

    group = ProtectionGroup.objects.get()
    visit(page, f"{live_server.url}{group.get_absolute_url()}")
    assert "Imported: waiting for the host" in page.locator("main").inner_text()
    shoot(page, "group-imported")

    visit(page, f"{live_server.url}{host.get_absolute_url()}")
    page.get_by_role("button", name="Change connection").click()
    page.wait_for_url(f"{live_server.url}/protection/hosts/{host.pk}/connection/")
    assert heading(page) == "Connection of HV03"
    assert page.get_by_label("Connection").input_value() == "hyperv"
    assert page.get_by_label("Address").input_value() == "HV03"
    for label in ("Protocol", "Authentication", "User name", "Password"):
        assert page.get_by_label(label, exact=True).is_visible(), label
    shoot(page, "host-connection")
