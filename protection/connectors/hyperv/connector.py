"""HyperVConnector: the connector protocol for a real Hyper-V host.

Control goes over WinRM (``transport.py`` running ``scripts/*.ps1``); the data of
backups and restores goes over SMB (``session.py``, ``restore.py``, ``smb.py``).

The host's stored credentials (``Host.credentials``, encrypted at rest) are a dict:

    auth          "ntlm" | "certificate" | "kerberos" | "credssp"
    scheme, port  "https" and 5986 unless set; "http" (5985) only with message encryption
    username, password       for ntlm, kerberos and credssp
    cert_pem, key_pem        the client certificate and its key, for certificate auth
    ca_pem                   the CA that issued the host's WinRM certificate (else the system's)
    smb_username, smb_password   for the admin share when they differ (always needed
                             with certificate auth, which WinRM maps but SMB cannot use)
    smb_port                 the file shares' port when it is not 445
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protection.connectors import prerequisites
from protection.connectors.hyperv import restore, session
from protection.connectors.hyperv.errors import STEP_AUTHENTICATE
from protection.connectors.hyperv.inventory import parse_inventory, windows_server_name
from protection.connectors.hyperv.smb import SMBSettings
from protection.connectors.hyperv.transport import Step, WinRMSettings, WinRMTransport
from protection.connectors.protocol import (
    BackupSession,
    ConnectionTest,
    ConnectorError,
    Consistency,
    FileSource,
    Finding,
    HostInventory,
    RestoreResult,
    RestoreTarget,
    Severity,
    VMInfo,
    VMNotFound,
)


@dataclass(frozen=True, slots=True)
class HyperVConnectionTest(ConnectionTest):
    """A connection test that also says which step failed (for the add-host page)."""

    steps: tuple[Step, ...] = ()


def cluster_auth_findings(cluster_name: str | None, auth: str) -> list[Finding]:
    """MABS: from outside the host's domain (as this server is), a cluster can be
    protected with certificate authentication only; NTLM serves single hosts."""
    if not cluster_name or auth in ("certificate", "kerberos"):
        return []
    return [
        Finding(
            "cluster-needs-certificate",
            Severity.WARNING,
            f"This host is a node of cluster {cluster_name}, reached with {auth.upper()}. A cluster in a "
            "workgroup or an untrusted domain can only be protected with certificate authentication "
            "(VMs move between nodes, and every node must accept this server).",
            "Switch the host to certificate authentication (or Kerberos in a trusted domain), and "
            "register every node of the cluster with it.",
        )
    ]


class HyperVConnector:
    kind = "hyperv"

    def __init__(
        self,
        address: str,
        credentials: Mapping[str, Any] | None = None,
        *,
        transport: WinRMTransport | None = None,
    ):
        self.address = address
        creds = dict(credentials or {})
        self.transport = transport or WinRMTransport(WinRMSettings.from_credentials(address, creds))
        self.settings = self.transport.settings
        self.smb = smb_settings(address, creds)

    def __repr__(self) -> str:
        s = self.settings
        return f"HyperVConnector({self.address!r}, {s.scheme}:{s.port}, {s.auth})"

    # ------------------------------------------------------------------ connection

    def test_steps(self) -> list[Step]:
        return list(self.test_connection().steps)

    def test_connection(self) -> HyperVConnectionTest:
        steps, facts = self.transport.check_connection()
        if facts is not None:
            steps = self._judge_auth(steps, facts)
        failed = next((step for step in steps if step.status == "failed"), None)
        if failed is not None or facts is None:
            failed = failed or Step(STEP_AUTHENTICATE, "Test connection", "failed", "no answer")
            message = f"{failed.label} failed: {failed.message} {failed.hint}".strip()
            return HyperVConnectionTest(ok=False, message=message, steps=tuple(steps))
        warnings = " ".join(
            f"{step.message} {step.hint}".strip() for step in steps if step.status == "warning"
        )
        name = str(facts.get("computer_name") or self.address)
        build = facts.get("os_build")
        os_version = windows_server_name(
            build if isinstance(build, int) else 0, str(facts.get("os_caption") or "")
        )
        message = (
            f"Hyper-V host {name} ({os_version}) answered as {facts.get('user') or self.settings.username}."
        )
        return HyperVConnectionTest(
            ok=True,
            message=f"{message} {warnings}".strip(),
            host_name=name,
            os_version=os_version,
            steps=tuple(steps),
        )

    def _judge_auth(self, steps: list[Step], facts: dict[str, Any]) -> list[Step]:
        cluster = facts.get("cluster_name")
        findings = cluster_auth_findings(cluster if isinstance(cluster, str) else None, self.settings.auth)
        if not findings:
            return steps
        return [
            Step(step.key, step.label, "warning", findings[0].message, findings[0].fix)
            if step.key == STEP_AUTHENTICATE and step.status == "ok"
            else step
            for step in steps
        ]

    # ------------------------------------------------------------------ inventory

    def _inventory(self, vm_id: str | None = None) -> HostInventory:
        params = {"vm_id": vm_id} if vm_id else {}
        inventory = parse_inventory(self.transport.run_script("inventory", params))
        extra = cluster_auth_findings(inventory.cluster_name, self.settings.auth)
        if not extra:
            return inventory
        return HostInventory(
            host=inventory.host,
            cluster_name=inventory.cluster_name,
            csvs=inventory.csvs,
            vms=inventory.vms,
            findings=(*inventory.findings, *extra),
        )

    def inventory(self) -> HostInventory:
        return self._inventory()

    def _one_vm(self, vm_id: str) -> tuple[VMInfo, HostInventory]:
        try:
            wanted = str(uuid.UUID(vm_id.strip().strip("{}")))
        except ValueError:
            raise VMNotFound(f"{vm_id!r} is not a Hyper-V VM id (a GUID).") from None
        inventory = self._inventory(wanted)
        for vm in inventory.vms:
            if vm.id == wanted:
                return vm, inventory
        raise VMNotFound(f"No VM with id {wanted} on {self.address}.")

    def get_vm(self, vm_id: str) -> VMInfo:
        return self._one_vm(vm_id)[0]

    def prerequisites(
        self,
        vm_id: str,
        *,
        churn_rate: float = prerequisites.DEFAULT_CHURN_RATE,
        backup_window_hours: float = prerequisites.DEFAULT_BACKUP_WINDOW_HOURS,
        recovery_path: str | None = None,
    ) -> list[Finding]:
        vm, inventory = self._one_vm(vm_id)
        return prerequisites.check_vm_on_host(
            vm,
            inventory.host,
            inventory.csvs,
            churn_rate=churn_rate,
            backup_window_hours=backup_window_hours,
            recovery_path=recovery_path,
        )

    # ------------------------------------------------------------------ backup and restore

    def begin_backup(self, vm_id: str, consistency_wanted: Consistency) -> BackupSession:
        vm = self.get_vm(vm_id)
        return session.begin_hyperv_backup(
            self.transport, self.smb, vm.id, Consistency(consistency_wanted), vm=vm
        )

    def end_backup(self, backup: BackupSession, ok: bool) -> dict[str, str]:
        if not isinstance(backup, session.HyperVBackupSession):
            raise ConnectorError("This backup session was not started by a Hyper-V connector.")
        return session.end_hyperv_backup(backup, ok)

    def release_references(self, vm_id: str, references: Mapping[str, str]) -> list[str]:
        """Destroy the reference point(s) behind the previous backup's RCT ids.

        One reference point covers every disk of the VM, so the distinct points are
        destroyed once each. A reference point left behind costs the host a little RCT
        bookkeeping, never a backup: failures become warning notes."""
        notes: list[str] = []
        points: dict[str, str] = {}  # reference point id -> one reference naming it
        for name, reference in sorted(references.items()):
            try:
                points.setdefault(session.Reference.decode(reference).reference_point_id, reference)
            except ConnectorError:
                notes.append(f"Warning: {name}: {reference!r} names no reference point of this host; kept.")
        for point_id, reference in points.items():
            try:
                destroyed = session.destroy_reference(self.transport, vm_id, reference)
            except ConnectorError as error:
                notes.append(
                    f"Warning: the previous reference point {point_id} could not be destroyed ({error}); "
                    "it is harmless and can be removed later."
                )
                continue
            if destroyed:
                notes.append(f"Previous reference point {point_id} destroyed.")
            else:
                notes.append(f"Previous reference point {point_id} was already gone.")
        return notes

    def check_restore_target(
        self, vm_id: str, target: RestoreTarget, file_names: Sequence[str]
    ) -> list[Finding]:
        return restore.check_restore_target(self.transport, self.smb, vm_id, target, file_names)

    def restore_vm(self, vm_id: str, files: Mapping[str, FileSource], target: RestoreTarget) -> RestoreResult:
        return restore.restore_vm(self.transport, self.smb, vm_id, files, target)


def smb_settings(address: str, credentials: Mapping[str, Any]) -> SMBSettings | None:
    """The admin-share credentials: the SMB ones when given, else the WinRM account's.
    None when there are none (certificate auth without SMB credentials)."""
    username = str(credentials.get("smb_username") or "")
    password = str(credentials.get("smb_password") or "")
    if not username and credentials.get("auth", "ntlm") != "certificate":
        username = str(credentials.get("username") or "")
        password = str(credentials.get("password") or "")
    if not username or not password:
        return None
    port = int(credentials.get("smb_port") or 445)
    return SMBSettings(server=address, username=username, password=password, port=port)
