"""``manage.py import-datastore``: the catalog rebuilt from a datastore alone.

The round trip runs real backups of a real lab host through the job runner, empties
the catalog, imports the datastore, and recovers from an imported point through the
recovery service and job the wizard uses: the recovered disk is byte-identical to the
disk as it was at backup time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import time, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DataError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backupsite.core.jobs.runner import run_job
from backupsite.core.models import AuditEvent, Job, JobKind, JobState, VMLock
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import write_host_json
from protection.models import (
    Alert,
    Cluster,
    ClusterSharedVolume,
    ConnectionKind,
    Host,
    HostStatus,
    ProtectedDataSource,
    ProtectionGroup,
    ProtectionGroupDraft,
    RecoveryPoint,
    ReplicaState,
    VirtualDisk,
    VirtualMachine,
)
from protection.scheduler import due_jobs
from protection.services.catalog_import import _Importer, import_datastore
from protection.services.catalog_rows import group_fields
from protection.services.inventory import sync_host_inventory
from protection.services.pointmeta import GROUP_POLICY_FIELDS, group_policy
from recovery.models import RecoveryDraft, RecoveryItemResult, WizardStep
from recovery.services.start import submit
from storage.engine import Datastore as EngineDatastore
from storage.engine import SourceFile
from storage.models import Datastore
from tests.protection.conftest import ProtectedLab, lab_template, protected_lab  # noqa: F401

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def run(kind: str, lab: ProtectedLab, vm: VirtualMachine) -> Job:
    job = Job.objects.create(kind=kind, vm=vm, group=lab.group)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    return job


def frozen(disk: Path, target: Path) -> Path:
    """The disk as it is now: the reference a recovery of the point just taken must match."""
    subprocess.run(["cp", "--sparse=always", str(disk), str(target)], check=True)
    return target


def same_disk(left: Path, right: Path) -> None:
    subprocess.run(["cmp", str(left), str(right)], check=True)
    subprocess.run(["qemu-img", "compare", "-q", str(left), str(right)], check=True)


def import_command(*args: str) -> str:
    out = StringIO()
    call_command("import-datastore", *args, stdout=out)
    return out.getvalue()


def empty_the_catalog() -> None:
    """What a new server has before the import: no rows for jobs, inventory, protection, storage."""
    for model in (
        RecoveryDraft,
        RecoveryItemResult,
        VMLock,
        Alert,
        Job,
        AuditEvent,
        RecoveryPoint,
        ProtectedDataSource,
        ProtectionGroupDraft,
        ProtectionGroup,
        VirtualDisk,
        VirtualMachine,
        Host,
        ClusterSharedVolume,
        Cluster,
        Datastore,
    ):
        model.objects.all().delete()
        assert not model.objects.exists()


def catalog() -> dict[str, Any]:
    """Everything the datastore is expected to give back, keyed so that pks do not matter."""
    return {
        "datastores": {(d.name, d.path, d.uuid, d.chunk_size, d.encrypted) for d in Datastore.objects.all()},
        "hosts": {(h.name, h.connection_kind, h.address) for h in Host.objects.all()},
        "vms": {
            (
                vm.hyperv_id,
                vm.name,
                vm.host.name,
                vm.generation,
                vm.os_family,
                vm.configuration_version,
                vm.configuration_path,
                vm.storage_kind,
                vm.highly_available,
                vm.vss_capable,
            )
            for vm in VirtualMachine.objects.filter(data_source__isnull=False)
        },
        "disks": {
            (
                d.vm.hyperv_id,
                d.path,
                d.format,
                d.dynamic,
                d.virtual_size_bytes,
                d.file_size_bytes,
                d.controller_type,
                d.controller_number,
                d.controller_location,
            )
            for d in VirtualDisk.objects.filter(vm__data_source__isnull=False)
        },
        "groups": {
            (g.name, json.dumps(group_policy(g), sort_keys=True)) for g in ProtectionGroup.objects.all()
        },
        "members": {(s.vm.hyperv_id, s.group.name) for s in ProtectedDataSource.objects.all()},
        "points": {
            (
                p.point_id,
                p.datastore.uuid,
                p.vm.hyperv_id,
                p.group.name if p.group else None,
                p.created,
                p.kind,
                p.consistency,
                p.size_bytes,
                p.stored_bytes,
                p.damaged,
            )
            for p in RecoveryPoint.objects.filter(deleted_at__isnull=True)
        },
    }


def second_host(tmp_path: Path) -> Host:
    folder = write_host_json(tmp_path / "LAB-HV02", "LAB-HV02")
    host = Host.objects.create(name="LAB-HV02", connection_kind=ConnectionKind.LAB, address=str(folder))
    sync_host_inventory(host)
    return host


@pytest.mark.slow
def test_import_on_an_empty_catalog_restores_it_and_a_recovery_from_it_is_byte_identical(
    protected_lab: ProtectedLab,  # noqa: F811
    tmp_path: Path,
    admin_user: Any,
    admin_client: Client,
) -> None:
    lab = protected_lab
    disk = lab.disk(lab.linux)
    initial = run(JobKind.INITIAL_REPLICA, lab, lab.linux)
    at_initial = frozen(disk, tmp_path / "at-initial.vhdx")
    assert churn(lab.connector.vm_config(lab.linux.hyperv_id), 1, seed=5).bytes_written > 0
    incremental = run(JobKind.SYNCHRONIZATION, lab, lab.linux)
    assert incremental.result["change_tracking_used"] is True
    at_incremental = frozen(disk, tmp_path / "at-incremental.vhdx")
    run(JobKind.INITIAL_REPLICA, lab, lab.windows)
    before = catalog()
    assert len(before["points"]) == 3 and len(before["vms"]) == 2 and len(before["disks"]) == 2
    store = lab.datastore.path

    empty_the_catalog()
    out = import_command(store, "--name", lab.datastore.name)

    assert "recovery points          3 new,     0 already in the catalog" in out, out
    assert "virtual machines         2 new" in out and "hosts                    1 new" in out
    assert "skipped points           0" in out and "Note:" not in out  # every point is self-describing
    assert catalog() == before
    host = Host.objects.get()
    assert host.status == HostStatus.UNKNOWN and "Refresh its inventory" in host.status_message
    assert host.credentials == {}
    sources = ProtectedDataSource.objects.all()
    assert {s.replica_state for s in sources} == {ReplicaState.IMPORTED}
    assert all(s.change_tracking_refs == {} for s in sources)
    # Nothing runs by itself, not even days later: the host must answer first.
    assert due_jobs(timezone.now() + timedelta(days=3)) == []
    event = AuditEvent.objects.get(action="datastore.import")
    assert event.details["points"] == {"new": 3, "existing": 0} and event.details["dry_run"] is False

    # Idempotent: nothing new the second time.
    again = import_datastore(store)
    assert again.points.new == [] and len(again.points.existing) == 3
    assert not (again.hosts.new or again.vms.new or again.disks.new or again.groups.new or again.sources.new)
    assert catalog() == before

    # Recover the incremental point as a new VM on another lab host, the wizard's way.
    point = RecoveryPoint.objects.get(point_id=incremental.result["recovery_point"])
    target = second_host(tmp_path)
    draft = RecoveryDraft.start(
        admin_user,
        point=point,
        step=WizardStep.SUMMARY,
        data={"type": "alternate", "target": {"host": target.pk, "path": "Restored/LNX"}, "options": {}},
    )
    job = submit(draft, admin_user)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    restored = Path(target.address) / "Restored" / "LNX" / "Virtual Hard Disks" / disk.name
    same_disk(restored, at_incremental)
    # The initial point restores too, as the disk was before the guest wrote.
    initial_row = RecoveryPoint.objects.get(point_id=initial.result["recovery_point"])
    initial_row.datastore.open_engine(write=False).restore(initial_row.point_id, tmp_path / "initial")
    same_disk(tmp_path / "initial" / "Virtual Hard Disks" / disk.name, at_initial)

    # The administrator confirms the host's connection on its page; once the host answers
    # the inventory, protection resumes with a consistency check (change tracking is lost).
    imported = Host.objects.get(name="LAB-HV01")
    form = {"connection_kind": "lab", "address": imported.address, "auth_kind": "ntlm"}
    response = admin_client.post(reverse("protection:host-connection", args=[imported.pk]), form)
    assert response.status_code == 302
    run_job(Job.objects.get(kind=JobKind.INVENTORY, host=imported).pk)
    imported.refresh_from_db()
    assert imported.status == HostStatus.OK
    assert {s.replica_state for s in ProtectedDataSource.objects.all()} == {ReplicaState.INCONSISTENT}
    due = due_jobs(timezone.now())
    assert {(d.kind, d.source.vm.name) for d in due} == {
        (JobKind.CONSISTENCY_CHECK, lab.linux.name),
        (JobKind.CONSISTENCY_CHECK, lab.windows.name),
    }
    vm = VirtualMachine.objects.get(hyperv_id=lab.linux.hyperv_id)
    check = Job.objects.create(kind=JobKind.CONSISTENCY_CHECK, vm=vm, group=ProtectionGroup.objects.get())
    run_job(check.pk)
    check.refresh_from_db()
    assert check.state == JobState.SUCCEEDED, check.traceback
    assert ProtectedDataSource.objects.get(vm=vm).replica_state == ReplicaState.OK
    # The backup cataloged its own point (and retention dropped the superseded
    # synchronization): a later import finds nothing new.
    later = import_datastore(store)
    in_store = {p.id for p in EngineDatastore.open(store).points()}
    assert check.result["recovery_point"] in in_store and incremental.result["recovery_point"] not in in_store
    assert later.points.new == [] and set(later.points.existing) == in_store


# --------------------------------------------------------------------------- older manifests


def old_point(engine: EngineDatastore, folder: Path, vm_id: str, name: str, metadata: dict[str, Any]) -> str:
    disk = folder / f"{name}.vhdx"
    disk.write_bytes(os.urandom(300_000))
    config = folder / "vm.json"
    config.write_text("{}")
    sources = [SourceFile(f"Virtual Hard Disks/{disk.name}", str(disk)), SourceFile("vm.json", str(config))]
    return engine.backup(vm_id, sources, vm_name=name, metadata=metadata).id


def test_points_without_catalog_metadata_import_with_fallbacks_and_a_corrupt_manifest_is_skipped(
    tmp_path: Path,
) -> None:
    store = tmp_path / "old"
    engine = EngineDatastore.create(store)
    files = tmp_path / "files"
    files.mkdir()
    first = old_point(
        engine,
        files,
        "11111111-aaaa-bbbb-cccc-000000000001",
        "OLD-SQL",
        {"host": "HV-OLD", "kind": "express_full"},
    )
    nameless = old_point(engine, files, "11111111-aaaa-bbbb-cccc-000000000002", "OLD-WEB", {})
    broken = store / "points" / "20240101T000000.000000Z-0badf00d"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    incomplete = store / "points" / "20240101T000000.000000Z-0000beef"
    incomplete.mkdir()
    (incomplete / "manifest.json").write_text('{"format": "hvbs-point", "version": 1, "id": "x"}')

    out = import_command(str(store))

    assert "recovery points          2 new" in out, out
    assert "skipped points           2" in out
    assert "20240101T000000.000000Z-0badf00d: unreadable manifest: " in out and "not valid JSON" in out
    assert "20240101T000000.000000Z-0000beef: unreadable manifest: " in out and "incomplete" in out
    assert "carry no catalog metadata" in out and "Traceback" not in out
    datastore = Datastore.objects.get()
    assert datastore.name == "old" and datastore.uuid == engine.settings.uuid
    old_host = Host.objects.get(name="HV-OLD")
    assert old_host.connection_kind == ConnectionKind.HYPERV and old_host.status == HostStatus.CREDENTIALS
    assert "Enter this host's credentials (Change connection)" in old_host.status_message
    assert Host.objects.get(name="imported-old").virtual_machines.get().name == "OLD-WEB"
    sql = VirtualMachine.objects.get(name="OLD-SQL")
    assert sql.host == old_host
    assert [d.path for d in sql.disks.all()] == ["Virtual Hard Disks/OLD-SQL.vhdx"]
    assert sql.disks.get().file_size_bytes == 300_000
    group = ProtectionGroup.objects.get()
    assert group.name == "Imported from old" and group.datastore == datastore
    assert group.recovery_point_times == [] and group.sync_frequency_minutes is None  # nothing scheduled
    points = {p.point_id: p for p in RecoveryPoint.objects.all()}
    assert points[first].kind == "express_full" and points[nameless].kind == "recovery_point"
    assert points[first].size_bytes == 300_002 and points[first].metadata["imported"] is True
    assert "cataloged as recovery points" in out

    # New points arrive (a backup written elsewhere): only they are added. (The engine's
    # backups refuse to run while any manifest is unreadable, so the damaged ones go first.)
    shutil.rmtree(broken)
    shutil.rmtree(incomplete)
    newer = old_point(
        engine, files, "11111111-aaaa-bbbb-cccc-000000000001", "OLD-SQL", {"host": "HV-OLD", "kind": "sync"}
    )
    report = import_datastore(str(store))
    assert report.points.new == [newer] and len(report.points.existing) == 2
    assert not (report.hosts.new or report.vms.new or report.groups.new or report.sources.new)
    assert RecoveryPoint.objects.get(point_id=newer).vm == sql


def test_values_the_catalog_cannot_hold_skip_only_their_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "odd"
    engine = EngineDatastore.create(store)
    files = tmp_path / "files"
    files.mkdir()
    long_id = old_point(engine, files, "x" * 40, "NOT-HYPERV", {})
    upper = old_point(engine, files, "33333333-AAAA-BBBB-CCCC-000000000001", "UPPER", {"host": "H" * 300})
    refused = old_point(engine, files, "33333333-aaaa-bbbb-cccc-000000000002", "REFUSED", {"host": "HV9"})
    disks = _Importer._disks

    def database_refuses(self: _Importer, vm: VirtualMachine, point: Any, catalog: Any) -> None:
        if vm.name == "REFUSED":
            raise DataError("value too long for type character varying(8)\nDETAIL: ...")
        disks(self, vm, point, catalog)

    monkeypatch.setattr(_Importer, "_disks", database_refuses)
    report = import_datastore(str(store))
    skipped = dict(report.skipped)
    assert "is not a Hyper-V VM id (more than 36 characters)" in skipped[long_id]
    assert skipped[refused] == "could not be cataloged: value too long for type character varying(8)"
    assert report.points.new == [upper] and report.vms.new == ["UPPER"] and report.hosts.new == ["H" * 255]
    vm = VirtualMachine.objects.get()
    assert vm.hyperv_id == "33333333-aaaa-bbbb-cccc-000000000001" and vm.host.name == "H" * 255
    assert not Host.objects.filter(name="HV9").exists()  # rolled back with the VM that failed


def test_group_policy_snapshot_round_trips() -> None:
    datastore = Datastore(name="x", path="/x")
    group = ProtectionGroup(
        name="Gold",
        datastore=datastore,
        description="SQL servers",
        retention_days=30,
        keep_daily=7,
        keep_weekly=4,
        keep_monthly=12,
        keep_yearly=2,
        sync_frequency_minutes=60,
        recovery_point_times=["08:00", "20:00"],
        recovery_point_days=[0, 2, 4],
        express_full_times=["22:30"],
        express_full_days=[6],
        consistency_check_if_inconsistent=False,
        online_protection=True,
    )
    group.consistency_check_daily_at = time(3, 15)
    fields = group_fields(group_policy(group))
    assert set(GROUP_POLICY_FIELDS) <= set(fields)  # every policy field written is read back
    for name, value in fields.items():
        assert getattr(group, name) == value, name
    # Hand-edited nonsense falls back to the defaults instead of failing the import.
    assert group_fields(
        {"retention_days": 0, "recovery_point_times": ["25:00", "07:30"], "keep_daily": "x"}
    ) == {"recovery_point_times": ["07:30"]}


# --------------------------------------------------------------------------- refusals


def nothing_imported() -> None:
    assert not RecoveryPoint.objects.exists() and not Host.objects.exists()
    assert not AuditEvent.objects.filter(action="datastore.import").exists()


def test_missing_path_and_a_folder_that_is_no_datastore_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="does not exist or is not a folder"):
        import_command(str(tmp_path / "nowhere"))
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("hello")
    with pytest.raises(CommandError, match=r"is not a datastore: it has no format\.json"):
        import_command(str(tmp_path / "stuff"))
    (tmp_path / "stuff" / "format.json").write_text('{"format": "something-else"}')
    with pytest.raises(CommandError, match="not a datastore this server can read"):
        import_command(str(tmp_path / "stuff"))
    assert not Datastore.objects.exists()
    nothing_imported()


def test_a_path_registered_as_another_datastore_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    row = Datastore.objects.create_with_store("main", str(path))
    shutil.rmtree(path)
    EngineDatastore.create(path)  # another store now sits where "main" was
    with pytest.raises(CommandError, match=f"registered as datastore 'main' with id {row.uuid}"):
        import_command(str(path))
    assert list(Datastore.objects.values_list("uuid", flat=True)) == [row.uuid]
    nothing_imported()


def test_a_copy_of_a_registered_datastore_is_refused_and_a_moved_one_follows(tmp_path: Path) -> None:
    original = tmp_path / "a"
    row = Datastore.objects.create_with_store("main", str(original))
    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    with pytest.raises(CommandError, match="still holds it"):
        import_command(str(copy))
    nothing_imported()
    shutil.rmtree(copy)
    original.rename(copy)  # the volume is mounted somewhere else now
    out = import_command(str(copy))
    assert f"moved from {original} to {copy}" in out
    row.refresh_from_db()
    assert row.path == str(copy) and Datastore.objects.count() == 1
    row.open_engine()  # the row names the store again


def test_a_taken_name_is_refused(tmp_path: Path) -> None:
    Datastore.objects.create_with_store("main", str(tmp_path / "a"))
    EngineDatastore.create(tmp_path / "b")
    with pytest.raises(CommandError, match="A datastore named 'main' already exists"):
        import_command(str(tmp_path / "b"), "--name", "main")
    assert Datastore.objects.count() == 1


def test_an_encrypted_datastore_is_imported_with_its_key_and_the_server_keeps_it(tmp_path: Path) -> None:
    store = tmp_path / "secret"
    engine = EngineDatastore.create(store, key=b"right key")
    payload = tmp_path / "disk.vhdx"
    payload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    point = engine.backup("9d2f1c4e-0000-4000-8000-000000000001", [SourceFile("disk.vhdx", str(payload))],
                          vm_name="sql01")  # fmt: skip
    with pytest.raises(CommandError, match="is encrypted: give --key-file FILE"):
        import_command(str(store))
    wrong = tmp_path / "wrong.key"
    wrong.write_text("wrong key\n")
    with pytest.raises(CommandError, match="Wrong key"):
        import_command(str(store), "--key-file", str(wrong))
    with pytest.raises(CommandError, match="cannot be read"):
        import_command(str(store), "--key-file", str(tmp_path / "no.key"))
    assert not Datastore.objects.exists()
    nothing_imported()

    right = tmp_path / "right.key"
    right.write_text("right key\n")  # as saved from the recovery key page, with a newline
    import_command(str(store), "--key-file", str(right))
    row = Datastore.objects.get()
    assert row.encrypted and row.uuid == engine.settings.uuid
    assert b"right key" not in row.key_token.encode()  # kept encrypted, never in clear
    assert RecoveryPoint.objects.get().point_id == point.id
    # The server reads the store with the key it kept: a restore is byte-identical.
    row.open_engine(write=False).restore(point.id, tmp_path / "restored")
    subprocess.run(["cmp", str(payload), str(tmp_path / "restored" / "disk.vhdx")], check=True)
    # Again with the key: idempotent, the key kept as it was.
    import_command(str(store), "--key-file", str(right))
    assert RecoveryPoint.objects.count() == 1 and Datastore.objects.count() == 1
    assert Datastore.objects.get().open_engine(write=False).point(point.id).id == point.id


def test_a_key_for_a_datastore_that_is_not_encrypted_is_not_used(tmp_path: Path) -> None:
    EngineDatastore.create(tmp_path / "plain")
    key = tmp_path / "k"
    key.write_text("some key")
    out = import_command(str(tmp_path / "plain"), "--key-file", str(key))
    assert "the key was not used" in out and Datastore.objects.get().encrypted is False


def test_a_row_from_before_datastores_had_ids_adopts_the_store(tmp_path: Path) -> None:
    engine = EngineDatastore.create(tmp_path / "store")
    row = Datastore.objects.create(name="legacy", path=str(tmp_path / "store"))
    out = import_command(str(tmp_path / "store"))
    assert "moved" not in out and "'legacy' (already registered)" in out
    row.refresh_from_db()
    assert row.uuid == engine.settings.uuid and Datastore.objects.count() == 1


def test_dry_run_reports_and_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "old"
    engine = EngineDatastore.create(store)
    files = tmp_path / "files"
    files.mkdir()
    old_point(
        engine, files, "22222222-aaaa-bbbb-cccc-000000000001", "VM1", {"host": "HV1", "kind": "initial"}
    )
    out = import_command(str(store), "--dry-run")
    assert out.startswith("Would import datastore 'old' (new)")
    assert "recovery points          1 new" in out and "Dry run: nothing was changed." in out
    assert not Datastore.objects.exists()
    nothing_imported()


def test_the_command_line_exits_1_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "import-datastore", str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "does not exist or is not a folder" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
