"""Hosts: registering, testing, refreshing and removing them, and asking them about VMs.

Connector errors are part of normal life here (a host is down, a folder is gone,
a connector kind is not built yet), so they come back as values with a message
for the page, never as exceptions that would end in a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest

from backupsite.core.models import AuditEvent, Job, JobKind
from protection.connectors import Connector, ConnectorError, Finding, Severity
from protection.connectors.protocol import ConnectionTest
from protection.models import Host, HostStatus, ProtectedDataSource, RecoveryPoint, VirtualMachine


class HostError(Exception):
    """A host operation that is refused; the message is for the user."""


@dataclass(frozen=True)
class NewHost:
    name: str
    connection_kind: str
    address: str
    credentials: dict[str, Any] = field(default_factory=dict, repr=False)


def _transient_host(kind: str, address: str, credentials: dict[str, Any] | None = None) -> Host:
    host = Host(name="", connection_kind=kind, address=address)
    host.credentials = credentials or {}
    return host


def try_connection(kind: str, address: str, credentials: dict[str, Any] | None = None) -> ConnectionTest:
    """Ask the host whether it answers; a connector that cannot even be built says why."""
    try:
        return _transient_host(kind, address, credentials).connector().test_connection()
    except ConnectorError as error:
        return ConnectionTest(ok=False, message=str(error))
    except OSError as error:
        return ConnectionTest(ok=False, message=f"The host could not be reached: {error.strerror or error}")


def add_host(new: NewHost, user: Any, *, request: HttpRequest | None = None) -> tuple[Host, Job]:
    """Register a host and read its inventory in the background."""
    with transaction.atomic():
        host = Host(name=new.name, connection_kind=new.connection_kind, address=new.address)
        host.credentials = new.credentials
        try:
            with transaction.atomic():
                host.save()
        except IntegrityError:
            raise HostError(f"A host named “{new.name}” is already registered.") from None
        job = Job.submit(JobKind.INVENTORY, host=host, requested_by=user)
        # Never the credentials: the audit log is readable by every role.
        AuditEvent.record(
            "host.add",
            request=request,
            user=user,
            obj=host,
            connection_kind=host.connection_kind,
            address=host.address,
            job=job.pk,
        )
    return host, job


def change_connection(
    host: Host,
    connection_kind: str,
    address: str,
    credentials: dict[str, Any],
    user: Any,
    *,
    request: HttpRequest | None = None,
) -> Job:
    """New address or credentials for a registered host (a password changed, a host imported
    from a datastore without its credentials), then its inventory is read again. A host
    whose VMs were imported resumes their protection once that inventory succeeds."""
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        host.connection_kind = connection_kind
        host.address = address
        host.credentials = credentials
        host.status = HostStatus.UNKNOWN
        host.status_message = ""
        host.save()
        job = Job.submit(JobKind.INVENTORY, host=host, requested_by=user)
        # Never the credentials: the audit log is readable by every role.
        AuditEvent.record(
            "host.change_connection",
            request=request,
            user=user,
            obj=host,
            connection_kind=connection_kind,
            address=address,
            job=job.pk,
        )
    return job


def refresh_inventory(host: Host, user: Any, *, request: HttpRequest | None = None) -> Job:
    with transaction.atomic():
        job = Job.submit(JobKind.INVENTORY, host=host, requested_by=user)
        AuditEvent.record("host.refresh_inventory", request=request, user=user, obj=host, job=job.pk)
    return job


def remove_host(host: Host, user: Any, *, request: HttpRequest | None = None) -> None:
    """Forget a host and its VMs, unless protection or kept backups still need them."""
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        machines = VirtualMachine.objects.filter(host=host)
        protected = sorted(
            ProtectedDataSource.objects.filter(vm__host=host).values_list("vm__name", flat=True)
        )
        if protected:
            raise HostError(
                f"{host} cannot be removed while its virtual machines are protected "
                f"({', '.join(protected)}). Stop their protection first."
            )
        with_points = sorted(
            set(RecoveryPoint.objects.filter(vm__host=host).values_list("vm__name", flat=True))
        )
        if with_points:
            # RecoveryPoint -> VM -> Host are protected foreign keys: kept backups pin the host.
            raise HostError(
                f"{host} cannot be removed while recovery points of its virtual machines are kept "
                f"({', '.join(with_points)})."
            )
        names = list(machines.values_list("name", flat=True))
        machines.delete()
        AuditEvent.record("host.remove", request=request, user=user, obj=host, virtual_machines=names)
        host.delete()


@dataclass(frozen=True)
class PrerequisiteReport:
    findings: list[Finding]
    # Set when the host could not be asked at all (unreachable, unsupported kind).
    error: str = ""

    @property
    def blocking(self) -> list[str]:
        """Why the VM cannot be protected now; empty when it can."""
        reasons = [f"Prerequisites could not be checked: {self.error}"] if self.error else []
        return reasons + [f.message for f in self.findings if f.severity == Severity.ERROR]


def check_prerequisites(vms: Iterable[VirtualMachine]) -> dict[int, PrerequisiteReport]:
    """Findings per VM id; one connector per host, so a down host is asked once."""
    connectors: dict[int, Connector | str] = {}
    reports: dict[int, PrerequisiteReport] = {}
    for vm in vms:
        if vm.host_id not in connectors:
            try:
                connectors[vm.host_id] = vm.host.connector()
            except ConnectorError as error:
                connectors[vm.host_id] = str(error)
        connector = connectors[vm.host_id]
        if isinstance(connector, str):
            reports[vm.pk] = PrerequisiteReport([], error=connector)
            continue
        try:
            reports[vm.pk] = PrerequisiteReport(list(connector.prerequisites(vm.hyperv_id)))
        except ConnectorError as error:
            reports[vm.pk] = PrerequisiteReport([], error=str(error))
        except OSError as error:
            reports[vm.pk] = PrerequisiteReport([], error=str(error.strerror or error))
    return reports


def vm_prerequisites(vm: VirtualMachine) -> PrerequisiteReport:
    return check_prerequisites([vm])[vm.pk]
