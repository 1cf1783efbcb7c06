"""Bring the catalog in line with what a host's connector reports.

Called by the inventory job, the lab command and a recovery that created a VM.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from protection.connectors import ConnectorError, HostInventory, VMInfo
from protection.models import (
    Cluster,
    ClusterSharedVolume,
    Host,
    HostStatus,
    ProtectedDataSource,
    ReplicaState,
    VirtualDisk,
    VirtualMachine,
)

RESUMED_AFTER_IMPORT = (
    "Imported from a datastore: the host answers again, but the change tracking of the "
    "previous server is lost. A consistency check reads every block once and stores what changed."
)


def sync_host_inventory(host: Host) -> list[VirtualMachine]:
    """Ask the host's connector what it runs now and bring the catalog in line.

    Upsert the host's VMs, disks, cluster and CSVs; mark vanished VMs removed.

    A VM that disappears is never deleted: its recovery points must stay restorable.
    An unreachable host is recorded on the host row and the error re-raised.
    """
    try:
        inventory = host.connector().inventory()
    except ConnectorError as error:
        Host.objects.filter(pk=host.pk).update(status=HostStatus.UNREACHABLE, status_message=str(error))
        raise
    with transaction.atomic():
        return _apply(host, inventory)


def _apply(host: Host, inventory: HostInventory) -> list[VirtualMachine]:
    now = timezone.now()
    cluster = None
    if inventory.cluster_name:
        cluster, _ = Cluster.objects.get_or_create(name=inventory.cluster_name)
        for csv in inventory.csvs:
            ClusterSharedVolume.objects.update_or_create(
                cluster=cluster,
                path=csv.path,
                defaults={
                    "name": csv.name,
                    "hardware_vss_provider": csv.hardware_vss_provider,
                    "capacity_bytes": csv.capacity_bytes,
                    "free_bytes": csv.free_bytes,
                },
            )
    host.cluster = cluster
    host.os_version = inventory.host.os_version
    host.integration_services_version = inventory.host.integration_services_version
    host.status = HostStatus.OK
    host.status_message = "; ".join(finding.message for finding in inventory.findings)[:2000]
    host.last_inventory_at = now
    host.save()

    seen: list[VirtualMachine] = [_upsert_vm(host, cluster, info, now) for info in inventory.vms]
    VirtualMachine.objects.filter(host=host, removed_at__isnull=True).exclude(
        pk__in=[vm.pk for vm in seen]
    ).update(removed_at=now)
    _resume_imported(seen)
    return seen


def _resume_imported(machines: list[VirtualMachine]) -> None:
    """The host answered with its credentials: protection of VMs imported from a datastore
    resumes. Their replicas are not known to match the host any more (and no reference
    point of the old server is known), so they are inconsistent: the scheduler's automatic
    consistency check, or the administrator's, brings them up to date."""
    ProtectedDataSource.objects.filter(
        vm__in=[vm.pk for vm in machines], replica_state=ReplicaState.IMPORTED
    ).update(replica_state=ReplicaState.INCONSISTENT, inconsistency_reason=RESUMED_AFTER_IMPORT)


def _upsert_vm(host: Host, cluster: Cluster | None, info: VMInfo, now: datetime) -> VirtualMachine:
    vm, _ = VirtualMachine.objects.update_or_create(
        hyperv_id=info.id.lower(),
        defaults={
            "name": info.name,
            "host": host,
            "cluster": cluster if info.cluster else None,
            "state": str(info.state),
            "generation": info.generation,
            "configuration_version": info.configuration_version,
            "integration_services_version": info.integration_services_version or "",
            "os_family": str(info.os_family),
            "vss_capable": info.vss_capable,
            "replication_role": str(info.replication.role),
            "replication_health": str(info.replication.health),
            "replication_state": info.replication.state,
            "storage_kind": str(info.storage_kind),
            "highly_available": info.highly_available,
            "configuration_path": info.path,
            "last_seen_at": now,
            "removed_at": None,
        },
    )
    kept = []
    for disk in info.disks:
        row, _ = VirtualDisk.objects.update_or_create(
            vm=vm,
            path=disk.path
            or f"pass-through:{disk.controller}:{disk.controller_number}:{disk.controller_location}",
            defaults={
                "format": str(disk.format) if disk.format else "",
                "dynamic": str(disk.type) in {"dynamic", "differencing"},
                "virtual_size_bytes": disk.virtual_size,
                "file_size_bytes": disk.file_size,
                "controller_type": str(disk.controller),
                "controller_number": disk.controller_number,
                "controller_location": disk.controller_location,
                "passthrough": disk.pass_through,
            },
        )
        kept.append(row.pk)
    vm.disks.exclude(pk__in=kept).delete()
    return vm
