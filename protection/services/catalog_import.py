"""Rebuild the catalog from a datastore alone: disaster recovery of the backup server.

``import_datastore(path)`` registers the store (or finds its row by the store's id),
then turns every recovery point's manifest into catalog rows: hosts, VMs, disks,
protection groups, protected data sources and recovery points. Everything comes from
the manifests (``metadata["catalog"]``, see ``protection.services.pointmeta``); points
written before manifests carried it fall back to what they have (the VM id and name,
the files, ``metadata.host`` and ``metadata.kind``), and the report says so.

Idempotent: rows are looked up before they are made and never changed, so a second
import creates nothing, and an import after new points arrived adds only those.
All in one transaction; every refusal is an ``ImportRefused`` raised before anything
is written. Protection never starts by itself: imported data sources wait in
``ReplicaState.IMPORTED`` until the host answers an inventory (``services/inventory``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone

from backupsite.core.models import AuditEvent
from protection.models import (
    MAX_RETENTION_DAYS,
    Cluster,
    ConnectionKind,
    Consistency,
    Host,
    HostStatus,
    ProtectedDataSource,
    ProtectionGroup,
    RecoveryPoint,
    RecoveryPointKind,
    ReplicaState,
    VirtualDisk,
    VirtualMachine,
)
from protection.services.catalog_rows import disk_fields, group_fields, vm_fields
from storage.engine import Datastore as EngineDatastore
from storage.engine import (
    DatastoreNotFound,
    EngineError,
    FormatVersionError,
    PointInfo,
    WrongKey,
    read_settings,
)
from storage.models import Datastore

IMPORTED_REASON = (
    "Imported from datastore {datastore}. No backup runs until the host answers an inventory "
    "(a Hyper-V host needs its credentials first: Change connection on the host's page); a "
    "consistency check then brings the replica up to date."
)


VM_ID_LENGTH = VirtualMachine._meta.get_field("hyperv_id").max_length or 36
POINT_ID_LENGTH = RecoveryPoint._meta.get_field("point_id").max_length or 64


class ImportRefused(Exception):
    """The import cannot run; the message says why and what to do. Nothing was changed."""


@dataclass
class Tally:
    new: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    def add(self, label: str, created: bool) -> None:
        (self.new if created else self.existing).append(label)


@dataclass
class ImportReport:
    datastore: str = ""
    datastore_path: str = ""
    datastore_new: bool = False
    dry_run: bool = False
    hosts: Tally = field(default_factory=Tally)
    vms: Tally = field(default_factory=Tally)
    disks: Tally = field(default_factory=Tally)
    groups: Tally = field(default_factory=Tally)
    sources: Tally = field(default_factory=Tally)
    points: Tally = field(default_factory=Tally)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (point, reason)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {
            name: {"new": len(tally.new), "existing": len(tally.existing)}
            for name, tally in (
                ("hosts", self.hosts),
                ("vms", self.vms),
                ("disks", self.disks),
                ("groups", self.groups),
                ("sources", self.sources),
                ("points", self.points),
            )
        } | {"skipped": len(self.skipped)}


# --------------------------------------------------------------------------- the datastore


def _settings_at(path: str) -> Any:
    if not os.path.isdir(path):
        raise ImportRefused(f"{path} does not exist or is not a folder. Is the datastore's volume mounted?")
    try:
        return read_settings(path)
    except DatastoreNotFound:
        raise ImportRefused(
            f"{path} is not a datastore: it has no format.json. Give the datastore's folder "
            "(the one holding format.json, chunks/ and points/)."
        ) from None
    except FormatVersionError as error:
        raise ImportRefused(f"{path} is not a datastore this server can read: {error}") from None
    except EngineError as error:
        raise ImportRefused(f"{path} cannot be read: {error}") from None


def _find_row(path: str, uuid: str, name: str | None) -> Datastore | None:
    """The row that already means this store, or None; refusals for rows in the way."""
    at_path = Datastore.objects.filter(path=path).first()
    if at_path is not None and at_path.uuid and at_path.uuid != uuid:
        raise ImportRefused(
            f"{path} is registered as datastore {at_path.name!r} with id {at_path.uuid}, but the "
            f"store there now has id {uuid}: another volume is mounted there, or the store was "
            "replaced. Mount the right volume, or remove that datastore first."
        )
    row = Datastore.objects.filter(uuid=uuid).first() or at_path
    if row is not None and row.path != path:
        try:
            still_there = read_settings(row.path).uuid == uuid
        except EngineError:
            still_there = False
        if still_there:
            raise ImportRefused(
                f"This datastore (id {uuid}) is already registered as {row.name!r} at {row.path}, "
                f"which still holds it: {path} is a copy. Import the original, or remove the copy."
            )
    if row is None and name and Datastore.objects.filter(name=name).exists():
        raise ImportRefused(f"A datastore named {name!r} already exists; choose another --name.")
    return row


def _open_engine(path: str, encrypted: bool, key: bytes | None) -> EngineDatastore:
    if encrypted and key is None:
        raise ImportRefused(f"The datastore at {path} is encrypted: give --key-file FILE with its key.")
    try:
        return EngineDatastore.open(path, key=key)
    except WrongKey as error:
        raise ImportRefused(f"Wrong key: {error}.") from None
    except EngineError as error:
        raise ImportRefused(f"{path} cannot be opened: {error}") from None


def _register(name: str, path: str, key: bytes | None) -> Datastore:
    """A new row for the store; an encrypted store's key (already checked) is kept by the
    server, encrypted with its credentials key, as for a datastore created here."""
    try:
        return Datastore.objects.register_existing(name, path, key=key)
    except ValidationError as error:
        raise ImportRefused(" ".join(error.messages)) from None
    except EngineError as error:
        raise ImportRefused(f"{path} cannot be registered: {error}") from None


def _keep_key(row: Datastore, key: bytes | None) -> None:
    """A known row whose key the server lost (e.g. its credentials key did not survive)."""
    if key is None or not row.encrypted:
        return
    try:
        row.set_recovery_key(key)
    except EngineError as error:
        raise ImportRefused(f"The key cannot be kept for datastore {row.name!r}: {error}") from None


def _unique_name(base: str) -> str:
    name, number = base, 2
    while Datastore.objects.filter(name=name).exists():
        name, number = f"{base} ({number})", number + 1
    return name


# --------------------------------------------------------------------------- the import


def import_datastore(
    path: str, name: str | None = None, key: bytes | None = None, dry_run: bool = False
) -> ImportReport:
    """Register the datastore at ``path`` (or find its row) and catalog its points."""
    path = str(Path(path).absolute())
    settings = _settings_at(path)
    row = _find_row(path, settings.uuid, name)
    report = ImportReport(datastore_path=path, dry_run=dry_run)
    if key is not None and not settings.encrypted:
        report.notes.append("The datastore is not encrypted; the key was not used.")
        key = None
    engine = _open_engine(path, settings.encrypted, key)
    scan = engine.scan_points()
    report.skipped = [(point, f"unreadable manifest: {reason}") for point, reason in scan.unreadable]
    with transaction.atomic():
        if row is None:
            row = _register(name or _unique_name(Path(path).name or "imported"), path, key)
            report.datastore_new = True
        elif row.path != path or not row.uuid:
            if row.path != path:
                report.notes.append(f"Datastore {row.name!r} moved from {row.path} to {path}.")
            Datastore.objects.filter(pk=row.pk).update(path=path, uuid=settings.uuid)
            row.path, row.uuid = path, settings.uuid
        if not report.datastore_new:
            _keep_key(row, key)
        report.datastore = row.name
        _Importer(row, report).run(scan.points)
        AuditEvent.record("datastore.import", obj=row, path=path, dry_run=dry_run, **report.counts())
        if dry_run:
            transaction.set_rollback(True)
    return report


class _Importer:
    def __init__(self, datastore: Datastore, report: ImportReport) -> None:
        self.datastore = datastore
        self.report = report
        self.now = timezone.now()
        self.fallback_host = f"imported-{datastore.name}"
        self.fallback_group = f"Imported from {datastore.name}"
        self.noted: set[str] = set()

    def note(self, text: str) -> None:
        if text not in self.noted:
            self.noted.add(text)
            self.report.notes.append(text)

    def run(self, points: list[PointInfo]) -> None:
        by_vm: dict[str, list[PointInfo]] = defaultdict(list)
        for point in points:
            problem = _unusable(point)
            if problem:
                self.report.skipped.append((point.id, problem))
                continue
            by_vm[point.vm_id.lower()].append(point)  # inventory stores Hyper-V ids in lower case
        for vm_points in by_vm.values():
            # A savepoint per VM: a value the database refuses skips that VM's points, with
            # the reason, instead of ending the import with a traceback.
            tallies = _copy_tallies(self.report)
            try:
                with transaction.atomic():
                    self._import_vm(vm_points)  # oldest first: the newest describes the VM
            except DatabaseError as error:
                _restore_tallies(self.report, tallies)
                reason = f"could not be cataloged: {str(error).strip().splitlines()[0]}"
                self.report.skipped += [(point.id, reason) for point in vm_points]

    def _import_vm(self, points: list[PointInfo]) -> None:
        newest = points[-1]
        catalog = _catalog(newest)
        if not catalog:
            self.note(
                f"Points of {newest.vm_name} carry no catalog metadata (written by an older "
                "version): host, VM details, disks and group were filled in with defaults."
            )
        vm = self._vm(newest, catalog)
        groups: dict[str, ProtectionGroup] = {}
        for point in points:
            snapshot = _catalog(point).get("group") or {}
            group_name = str(snapshot.get("name") or self.fallback_group)[:200]
            if group_name not in groups:
                groups[group_name] = self._group(group_name, snapshot, points)
            self._point(point, vm, groups[group_name])
        newest_group = _catalog(newest).get("group") or {}
        self._source(vm, groups[str(newest_group.get("name") or self.fallback_group)[:200]], points)

    # -- rows, each looked up first and never changed -----------------------

    def _host(self, point: PointInfo, catalog: dict[str, Any]) -> Host:
        entry = catalog.get("host") or {}
        name = str(entry.get("name") or point.metadata.get("host") or self.fallback_host)[:255]
        host = Host.objects.filter(name=name).first()
        if host is not None:
            if name not in self.report.hosts.existing + self.report.hosts.new:
                self.report.hosts.add(name, False)
            return host
        kind = str(entry.get("kind") or "")
        if kind not in ConnectionKind.values:
            kind = ConnectionKind.HYPERV
            self.note(f"Host {name}: its connection is not recorded; added as a Hyper-V host named {name}.")
        if name == self.fallback_host:
            self.note(f"Points without a host name were put on the host {name}.")
        cluster = _cluster(entry.get("cluster"))
        needs_credentials = kind != ConnectionKind.LAB
        host = Host.objects.create(
            name=name,
            connection_kind=kind,
            address=str(entry.get("address") or name)[:1024],
            cluster=cluster,
            status=HostStatus.CREDENTIALS if needs_credentials else HostStatus.UNKNOWN,
            status_message=(
                f"Imported from datastore {self.datastore.name}. "
                + (
                    "Enter this host's credentials (Change connection)"
                    if needs_credentials
                    else "Refresh its inventory"
                )
                + "; backups of its VMs resume once it answers."
            ),
        )
        self.report.hosts.add(name, True)
        return host

    def _vm(self, point: PointInfo, catalog: dict[str, Any]) -> VirtualMachine:
        vm = VirtualMachine.objects.filter(hyperv_id=point.vm_id.lower()).first()
        if vm is not None:
            self.report.vms.add(vm.name, False)
            return vm
        host = self._host(point, catalog)
        entry = catalog.get("vm") or {}
        vm = VirtualMachine.objects.create(
            hyperv_id=point.vm_id.lower(),
            name=str(entry.get("name") or point.vm_name or point.vm_id)[:255],
            host=host,
            cluster=_cluster(entry.get("cluster")),
            **vm_fields(entry),
        )
        self.report.vms.add(vm.name, True)
        self._disks(vm, point, catalog)
        return vm

    def _disks(self, vm: VirtualMachine, point: PointInfo, catalog: dict[str, Any]) -> None:
        entries = catalog.get("disks")
        if entries is None:
            # An older point: its disk files are the disks (config files are not).
            entries = [
                {"file": f.name, "path": f.name, "virtual_size": 0, "file_size": f.size}
                for f in point.files
                if f.name.lower().endswith((".vhdx", ".vhd", ".avhdx"))
            ]
        for location, entry in enumerate(entries):
            disk_path = str(entry.get("path") or entry.get("file") or "")[:1024]
            if not disk_path:
                continue
            _, created = VirtualDisk.objects.get_or_create(
                vm=vm, path=disk_path, defaults=_disk_fields(entry, point, location)
            )
            self.report.disks.add(f"{vm.name}: {disk_path}", created)

    def _group(self, name: str, snapshot: dict[str, Any], points: list[PointInfo]) -> ProtectionGroup:
        group = ProtectionGroup.objects.filter(name=name).first()
        if group is not None and group.datastore_id != self.datastore.pk:
            renamed = f"{name} ({self.datastore.name})"[:255]
            self.note(f"A group named {name!r} uses another datastore; this one's is {renamed!r}.")
            name, group = renamed, ProtectionGroup.objects.filter(name=renamed).first()
        if group is not None:
            if name not in self.report.groups.existing + self.report.groups.new:
                self.report.groups.add(name, False)
            return group
        fields = group_fields(snapshot)
        if not snapshot:
            # Keep every imported point until an administrator sets the policy: the default
            # range would let the first backup's retention delete the older ones.
            oldest = min(p.created for p in points)
            days = (self.now - oldest) // timedelta(days=1) + 2
            fields["retention_days"] = max(5, min(MAX_RETENTION_DAYS, days))
            self.note(
                f"Group {name!r} has no recorded policy: retention is {fields['retention_days']} days "
                "(all imported points) and nothing is scheduled. Set its policy before resuming."
            )
        group = ProtectionGroup.objects.create(name=name, datastore=self.datastore, **fields)
        self.report.groups.add(name, True)
        return group

    def _source(self, vm: VirtualMachine, group: ProtectionGroup, points: list[PointInfo]) -> None:
        source = ProtectedDataSource.objects.filter(vm=vm).first()
        if source is not None:
            self.report.sources.add(f"{vm.name} in {source.group}", False)
            return
        last = {kind: _last(points, kinds) for kind, kinds in _SOURCE_TIMES.items()}
        ProtectedDataSource.objects.create(
            vm=vm,
            group=group,
            replica_state=ReplicaState.IMPORTED,
            inconsistency_reason=IMPORTED_REASON.format(datastore=self.datastore.name),
            change_tracking_refs={},  # the old server's reference points are unknown: full read next
            added=self.now,
            **last,
        )
        self.report.sources.add(f"{vm.name} in {group}", True)

    def _point(self, point: PointInfo, vm: VirtualMachine, group: ProtectionGroup) -> None:
        kind = str(point.metadata.get("kind") or "")
        if kind not in RecoveryPointKind.values:
            kind = RecoveryPointKind.RECOVERY_POINT
            self.note("Points without a recorded kind were cataloged as recovery points.")
        consistency = point.consistency if point.consistency in Consistency.values else Consistency.CRASH
        _, created = RecoveryPoint.objects.get_or_create(
            datastore=self.datastore,
            point_id=point.id,
            defaults={
                "vm": vm,
                "group": group,
                "created": point.created,
                "kind": kind,
                "consistency": consistency,
                "size_bytes": point.total_bytes,
                "stored_bytes": point.bytes_new,
                "damaged": point.damaged,
                "verified_at": point.verified,
                "metadata": {
                    "imported": True,
                    "full_scan": point.metadata.get("full_scan"),
                    "original_job": point.metadata.get("job"),
                },
            },
        )
        self.report.points.add(point.id, created)


# When each kind of point last happened, so the scheduler does not think all is overdue.
_SOURCE_TIMES: dict[str, tuple[str, ...]] = {
    "last_sync_at": tuple(RecoveryPointKind.values),
    "last_recovery_point_at": (
        RecoveryPointKind.INITIAL,
        RecoveryPointKind.RECOVERY_POINT,
        RecoveryPointKind.EXPRESS_FULL,
    ),
    "last_express_full_at": (RecoveryPointKind.EXPRESS_FULL,),
    "last_consistency_check_at": (RecoveryPointKind.CONSISTENCY_CHECK,),
}


def _last(points: list[PointInfo], kinds: tuple[str, ...]) -> datetime | None:
    times = [p.created for p in points if p.metadata.get("kind", RecoveryPointKind.RECOVERY_POINT) in kinds]
    return max(times) if times else None


def _unusable(point: PointInfo) -> str:
    """Why a readable manifest still cannot become a catalog row, or ""."""
    if not point.vm_id:
        return "the manifest names no VM id"
    if len(point.vm_id) > VM_ID_LENGTH:
        return f"the VM id {point.vm_id[:60]!r} is not a Hyper-V VM id (more than {VM_ID_LENGTH} characters)"
    if len(point.id) > POINT_ID_LENGTH:
        return f"the point id is longer than {POINT_ID_LENGTH} characters"
    return ""


def _copy_tallies(report: ImportReport) -> dict[str, Tally]:
    return {
        name: Tally(list(t.new), list(t.existing)) for name, t in vars(report).items() if isinstance(t, Tally)
    }


def _restore_tallies(report: ImportReport, tallies: dict[str, Tally]) -> None:
    for name, tally in tallies.items():
        setattr(report, name, tally)


def _catalog(point: PointInfo) -> dict[str, Any]:
    catalog = point.metadata.get("catalog")
    return catalog if isinstance(catalog, dict) else {}


def _cluster(name: object) -> Cluster | None:
    if not name or not isinstance(name, str):
        return None
    cluster, _ = Cluster.objects.get_or_create(name=name[:255])
    return cluster


def _disk_fields(entry: dict[str, Any], point: PointInfo, location: int) -> dict[str, Any]:
    stored = point.file(str(entry.get("file") or ""))
    fields = disk_fields(entry)
    if not fields.get("file_size_bytes") and stored is not None:
        fields["file_size_bytes"] = stored.size
    fields.setdefault("controller_location", location)
    return fields
