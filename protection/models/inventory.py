"""What the server knows about the Hyper-V estate: clusters, hosts, CSVs, VMs, disks."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.urls import reverse
from django.utils import timezone

from backupsite.core.credentials import decrypt_json, encrypt_json
from protection.connectors.protocol import Connector
from protection.connectors.registry import get_connector


class ConnectionKind(models.TextChoices):
    LAB = "lab", "Lab host (emulated on this server)"
    HYPERV = "hyperv", "Hyper-V over WinRM"


class HostStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    OK = "ok", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"
    # Rebuilt from a datastore (import-datastore): the host's credentials are not in it.
    CREDENTIALS = "credentials", "Enter credentials"


class Cluster(models.Model):
    name = models.CharField(max_length=255, unique=True)
    fqdn = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Host(models.Model):
    name = models.CharField(max_length=255, unique=True)
    connection_kind = models.CharField(max_length=16, choices=ConnectionKind.choices)
    # For hyperv: host name or address for WinRM; for lab: the host folder.
    address = models.CharField(max_length=1024)
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="nodes"
    )
    credentials_encrypted = models.TextField(blank=True, editable=False)
    os_version = models.CharField(max_length=128, blank=True)
    integration_services_version = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    status_message = models.TextField(blank=True)
    last_inventory_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("protection:host-detail", args=[self.pk])

    @property
    def credentials(self) -> dict[str, Any]:
        return decrypt_json(self.credentials_encrypted) if self.credentials_encrypted else {}

    @credentials.setter
    def credentials(self, value: dict[str, Any]) -> None:
        self.credentials_encrypted = encrypt_json(value) if value else ""

    def connector(self) -> Connector:
        return get_connector(self.connection_kind, self.address, self.credentials or None)


class ClusterSharedVolume(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="shared_volumes")
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=1024)
    hardware_vss_provider = models.BooleanField(default=False)
    capacity_bytes = models.BigIntegerField(default=0)
    free_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["cluster", "name"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "path"], name="csv_unique_path_per_cluster")
        ]

    def __str__(self) -> str:
        return f"{self.cluster}: {self.path}"


class VMState(models.TextChoices):
    RUNNING = "Running"
    OFF = "Off"
    SAVED = "Saved"
    PAUSED = "Paused"
    OTHER = "Other"


class ReplicationRole(models.TextChoices):
    NONE = "none", "Not replicated"
    PRIMARY = "primary", "Primary"
    REPLICA = "replica", "Replica"


class StorageKind(models.TextChoices):
    LOCAL = "local", "Local volume"
    CSV = "csv", "Cluster Shared Volume"
    SMB = "smb", "SMB 3 share"


class OSFamily(models.TextChoices):
    WINDOWS = "windows", "Windows"
    LINUX = "linux", "Linux"
    OTHER = "other", "Other"


class VirtualMachineQuerySet(models.QuerySet["VirtualMachine"]):
    def present(self) -> VirtualMachineQuerySet:
        return self.filter(removed_at__isnull=True)

    def protected(self) -> VirtualMachineQuerySet:
        return self.filter(data_source__isnull=False).exclude(data_source__replica_state="stopped")


class VirtualMachine(models.Model):
    hyperv_id = models.CharField("Hyper-V VM id", max_length=36, unique=True)
    name = models.CharField(max_length=255)
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="virtual_machines")
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="virtual_machines"
    )
    state = models.CharField(max_length=16, choices=VMState.choices, default=VMState.OTHER)
    generation = models.PositiveSmallIntegerField(default=2)
    configuration_version = models.CharField(max_length=16, blank=True)
    integration_services_version = models.CharField(max_length=64, blank=True)
    os_family = models.CharField(max_length=16, choices=OSFamily.choices, default=OSFamily.OTHER)
    vss_capable = models.BooleanField(default=False)
    replication_role = models.CharField(
        max_length=16, choices=ReplicationRole.choices, default=ReplicationRole.NONE
    )
    replication_health = models.CharField(max_length=32, blank=True)
    replication_state = models.CharField(max_length=64, blank=True)
    storage_kind = models.CharField(max_length=8, choices=StorageKind.choices, default=StorageKind.LOCAL)
    highly_available = models.BooleanField(default=False)
    configuration_path = models.CharField(max_length=1024, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Set when the VM no longer shows up in the host's inventory; its backups stay.
    removed_at = models.DateTimeField(null=True, blank=True)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["name"])]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("protection:vm-detail", args=[self.pk])

    @property
    def is_protected(self) -> bool:
        source = getattr(self, "data_source", None)
        return source is not None and source.replica_state != "stopped"


class DiskFormat(models.TextChoices):
    VHDX = "vhdx"
    VHD = "vhd"
    AVHDX = "avhdx"


class ControllerType(models.TextChoices):
    IDE = "IDE"
    SCSI = "SCSI"


class VirtualDisk(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    path = models.CharField(max_length=1024)
    format = models.CharField(max_length=8, choices=DiskFormat.choices, blank=True, default=DiskFormat.VHDX)
    dynamic = models.BooleanField(default=True)
    virtual_size_bytes = models.BigIntegerField(default=0)
    file_size_bytes = models.BigIntegerField(default=0)
    controller_type = models.CharField(
        max_length=8, choices=ControllerType.choices, default=ControllerType.SCSI
    )
    controller_number = models.PositiveSmallIntegerField(default=0)
    controller_location = models.PositiveSmallIntegerField(default=0)
    passthrough = models.BooleanField(default=False)

    class Meta:
        ordering = ["vm", "controller_type", "controller_number", "controller_location"]
        constraints = [models.UniqueConstraint(fields=["vm", "path"], name="disk_unique_path_per_vm")]

    def __str__(self) -> str:
        return self.path
