"""``manage.py lab``: lab Hyper-V hosts emulated on this server's disk.

manage.py lab create --name LAB-HV01 --vms 3 --size-gib 2
manage.py lab churn LAB-HV01-WIN00 --percent 5
manage.py lab demo      (the first-run demo hosts; does nothing when a lab host exists)
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from protection.connectors.lab.config import HOST_FILE
from protection.connectors.lab.connector import LabConnector
from protection.connectors.lab.guest import churn
from protection.connectors.lab.host import DEFAULT_OS, HOST_DEFAULTS, create_lab_host
from protection.connectors.protocol import ConnectorError
from protection.models import Host
from protection.services.inventory import sync_host_inventory
from storage.vdisk.builder import MiB, qemu_img_check
from storage.vdisk.errors import ToolError


def lab_root() -> Path:
    return Path(settings.BACKUPSITE_DATA_DIR) / "lab"


class Command(BaseCommand):
    help = "Create lab Hyper-V hosts (emulated on this server) and make their guests write."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a lab host with VMs and register it")
        create.add_argument("--name", required=True, help="host name, e.g. LAB-HV01")
        create.add_argument("--vms", type=int, default=3, help="number of VMs (default 3)")
        create.add_argument("--size-gib", type=float, default=1.0, help="virtual size of each VM's disk")
        create.add_argument("--os", default=DEFAULT_OS, choices=sorted(HOST_DEFAULTS))
        sub.add_parser(
            "demo",
            help="first run: create DEMO-HV01 (3 VMs) and an empty DEMO-HV02 unless a lab host exists",
        )
        churn_p = sub.add_parser("churn", help="let a lab VM's guest write into its first disk")
        churn_p.add_argument("vm_name")
        churn_p.add_argument("--percent", type=float, required=True)
        churn_p.add_argument("--host", help="lab host name when several VMs share the name")
        churn_p.add_argument("--seed", type=int)

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            if opts["action"] == "create":
                self.create(opts["name"], opts["vms"], opts["size_gib"], opts["os"])
            elif opts["action"] == "demo":
                self.demo()
            else:
                self.churn(opts["vm_name"], opts["percent"], opts.get("host"), opts.get("seed"))
        except (ConnectorError, ToolError) as exc:
            raise CommandError(str(exc)) from exc

    def create(self, name: str, vm_count: int, size_gib: float, os_version: str) -> None:
        name = name.strip()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise CommandError(f"{name!r} is not a usable host name")
        if Host.objects.filter(name__iexact=name).exists():
            raise CommandError(f"A host named {name} is already registered.")
        folder = lab_root() / name
        if (folder / HOST_FILE).exists() or (folder.exists() and any(folder.iterdir())):
            raise CommandError(f"A lab host folder already exists at {folder}.")
        size = max(64 * MiB, math.ceil(size_gib * 1024) * MiB)
        self.stdout.write(f"Building {vm_count} VM(s) of {size // MiB} MiB in {folder} ...")
        create_lab_host(folder, name, vm_count, size, os_version=os_version)
        try:
            with transaction.atomic():
                host = Host.objects.create(name=name, connection_kind="lab", address=str(folder))
                vms = sync_host_inventory(host)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no unregistered host left behind
            raise
        for vm in vms:
            self.stdout.write(f"  {vm.name}  {vm.hyperv_id}  {vm.os_family}")
        self.stdout.write(self.style.SUCCESS(f"Lab host {name} registered with {len(vms)} VM(s)."))

    def demo(self) -> None:
        """Idempotent: `make run` calls it at every start."""
        if Host.objects.filter(connection_kind="lab").exists():
            return
        self.create("DEMO-HV01", 3, 1.0, DEFAULT_OS)
        # An empty second host: a destination for "recover to another host".
        self.create("DEMO-HV02", 0, 1.0, DEFAULT_OS)

    def churn(self, vm_name: str, percent: float, host_name: str | None, seed: int | None) -> None:
        folders = {Path(h.address) for h in Host.objects.filter(connection_kind="lab")}
        if lab_root().is_dir():
            folders |= {p for p in lab_root().iterdir() if (p / HOST_FILE).exists()}
        matches = []
        for folder in sorted(folders):
            conn = LabConnector(folder)
            try:
                if host_name and conn.host_config().name.lower() != host_name.lower():
                    continue
                configs, _findings = conn.vm_configs()
            except ConnectorError:
                continue  # a lab host whose folder is gone is not a candidate
            matches += [(conn, c) for c in configs if c.name.lower() == vm_name.lower()]
        if not matches:
            raise CommandError(f"No lab VM named {vm_name}.")
        if len(matches) > 1:
            raise CommandError(f"{len(matches)} lab VMs are named {vm_name}; add --host.")
        conn, cfg = matches[0]
        history = conn.host_config().rct_history
        result = churn(cfg, percent, seed=seed, history=history)
        ok, output = qemu_img_check(result.disk)
        if not ok:
            raise CommandError(f"qemu-img check failed after the writes: {output}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{cfg.name}: {result.writes} writes, {result.bytes_written // 1024} KiB changed "
                f"in {result.disk.name} (recorded for change tracking)."
            )
        )
