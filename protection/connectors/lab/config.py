"""The lab host folder format: ``host.json`` and each VM's ``vm.json``.

Every value read from disk is validated here, so the rest of the lab code can
trust it; a bad value becomes an InvalidVMConfig / HostUnreachable whose message
names the file and the field, never a KeyError or TypeError further down.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from protection.connectors.protocol import (
    ControllerKind,
    HostUnreachable,
    InvalidVMConfig,
    OSFamily,
    ReplicationHealth,
    ReplicationRole,
    StorageKind,
    VMState,
)

HOST_FILE = "host.json"
VM_FILE = "vm.json"
FORMAT_VERSION = 1
# Where ``lab create`` puts VM folders; inventory finds vm.json files anywhere
# under the host folder, like Hyper-V can keep VMs on any path of the host.
VMS_DIR = "Virtual Machines"
DISKS_DIR = "Virtual Hard Disks"
_VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Temp file + fsync + rename: a crash leaves the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, error: type[Exception]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path} cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data


class _Fields:
    """Typed accessors that name the file and the field in every complaint."""

    def __init__(self, data: dict[str, Any], where: str, error: type[Exception]):
        self.data, self.where, self.error = data, where, error

    def fail(self, name: str, why: str) -> Exception:
        return self.error(f"{self.where}: '{name}' {why}")

    def text(self, name: str, default: str | None = None, *, optional: bool = False) -> Any:
        value = self.data.get(name, default)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "must be a non-empty string")
        return value.strip()

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "must be an integer")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, not {value}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def choice[E](self, name: str, enum: type[E], default: Any = None) -> E:
        value = self.data.get(name, default)
        try:
            return enum(value)  # type: ignore[call-arg]
        except ValueError:
            allowed = ", ".join(str(m) for m in enum)  # type: ignore[attr-defined]
            raise self.fail(name, f"must be one of {allowed}, not {value!r}") from None

    def version(self, name: str, *, optional: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not _VERSION_RE.match(value):
            raise self.fail(name, f"must be a version like '10.0', not {value!r}")
        return value

    def seq(self, name: str) -> list[Any]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, "must be a list")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.data.get(name) or {}
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        return value


@dataclass(frozen=True, slots=True)
class LabCSV:
    name: str
    path: str  # relative to the host folder
    owner_node: str
    hardware_vss_provider: bool


@dataclass(frozen=True, slots=True)
class LabHostConfig:
    name: str
    os_version: str
    integration_services_version: str
    cluster_name: str | None
    nodes: tuple[str, ...]
    csvs: tuple[LabCSV, ...]
    free_bytes: int | None  # None: report the real free space of the folder's volume
    hardware_vss_provider: bool
    rct_history: int  # how many reference points a disk's RCT journal remembers
    # The speed a backup reads the host's files at (a link or disk slower than the lab's
    # folder); None: as fast as the folder. For demos of progress and for fault tests
    # that must catch a backup in the middle.
    read_bytes_per_second: int | None = None


def load_host_config(folder: Path) -> LabHostConfig:
    if not folder.is_dir():
        raise HostUnreachable(f"The lab host folder {folder} does not exist.")
    path = folder / HOST_FILE
    f = _Fields(_load(path, HostUnreachable), str(path), HostUnreachable)
    name = f.text("name")
    cluster = f.text("cluster_name", optional=True)
    nodes = tuple(str(n) for n in f.seq("nodes")) or (name,)
    csvs = []
    for i, raw in enumerate(f.seq("csvs")):
        if not isinstance(raw, dict):
            raise f.fail(f"csvs[{i}]", "must be an object")
        c = _Fields(raw, f"{path} csvs[{i}]", HostUnreachable)
        csvs.append(
            LabCSV(
                name=c.text("name"),
                path=c.text("path"),
                owner_node=c.text("owner_node", name),
                hardware_vss_provider=c.flag("hardware_vss_provider", f.flag("hardware_vss_provider")),
            )
        )
    free = f.data.get("free_bytes")
    return LabHostConfig(
        name=name,
        os_version=f.text("os_version"),
        integration_services_version=str(f.version("integration_services_version")),
        cluster_name=cluster,
        nodes=nodes,
        csvs=tuple(csvs),
        free_bytes=None if free is None else f.integer("free_bytes"),
        hardware_vss_provider=f.flag("hardware_vss_provider"),
        rct_history=f.integer("rct_history", 16, minimum=1),
        read_bytes_per_second=(
            None
            if f.data.get("read_bytes_per_second") is None
            else f.integer("read_bytes_per_second", minimum=1)
        ),
    )


@dataclass(frozen=True, slots=True)
class LabDisk:
    path: str  # relative to the VM folder; "" for pass-through
    controller: ControllerKind
    controller_number: int
    controller_location: int
    pass_through: bool
    physical_size: int  # pass-through only: the size of the physical disk


@dataclass(frozen=True, slots=True)
class LabSMB:
    path: str
    smb_version: str
    host_has_full_control: bool


@dataclass(frozen=True, slots=True)
class LabVMConfig:
    folder: Path
    id: str
    name: str
    generation: int
    state: VMState
    configuration_version: str
    integration_services_version: str | None
    os_family: OSFamily
    vss_capable: bool
    owner_node: str | None
    highly_available: bool
    cluster: str | None
    controllers: tuple[tuple[ControllerKind, int], ...]
    disks: tuple[LabDisk, ...]
    replication_role: ReplicationRole
    replication_health: ReplicationHealth
    replication_state: str
    storage_kind: StorageKind
    csv: str | None
    smb: LabSMB | None
    raw: dict[str, Any] = field(repr=False, compare=False)


def _relative_inside(value: str, where: str) -> str:
    """Disk paths stay inside the VM folder, so a vm.json can't point the
    backup (or a restore) at arbitrary files of the server."""
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise InvalidVMConfig(f"{where}: disk path {value!r} must be relative to the VM folder")
    return str(p)


def _disks(f: _Fields, where: str) -> tuple[LabDisk, ...]:
    disks = []
    for i, raw in enumerate(f.seq("disks")):
        if not isinstance(raw, dict):
            raise f.fail(f"disks[{i}]", "must be an object")
        d = _Fields(raw, f"{where} disks[{i}]", InvalidVMConfig)
        pass_through = d.flag("pass_through")
        disks.append(
            LabDisk(
                path="" if pass_through else _relative_inside(d.text("path"), d.where),
                controller=d.choice("controller", ControllerKind, "SCSI"),
                controller_number=d.integer("controller_number", 0),
                controller_location=d.integer("location", i),
                pass_through=pass_through,
                physical_size=d.integer("size", 0) if pass_through else 0,
            )
        )
    return tuple(disks)


def parse_vm_config(folder: Path) -> LabVMConfig:
    path = folder / VM_FILE
    where = str(path)
    data = _load(path, InvalidVMConfig)
    f = _Fields(data, where, InvalidVMConfig)
    try:
        vm_id = str(uuid.UUID(f.text("id")))
    except ValueError:
        raise f.fail("id", f"must be a GUID, not {data.get('id')!r}") from None
    name = f.text("name")
    if len(name) > 100:
        raise f.fail("name", "is longer than Hyper-V's 100 characters")
    generation = f.integer("generation")
    if generation not in (1, 2):
        raise f.fail("generation", f"must be 1 or 2, not {generation}")
    controllers = []
    for i, raw in enumerate(f.seq("controllers")):
        if not isinstance(raw, dict):
            raise f.fail(f"controllers[{i}]", "must be an object")
        c = _Fields(raw, f"{where} controllers[{i}]", InvalidVMConfig)
        controllers.append((c.choice("type", ControllerKind), c.integer("number", 0)))
    disks = _disks(f, where)
    uses_ide = any(k == ControllerKind.IDE for k, _n in controllers) or any(
        d.controller == ControllerKind.IDE for d in disks
    )
    if generation == 2 and uses_ide:
        raise f.fail("controllers", "a generation 2 VM has no IDE controller")
    rep = _Fields(f.mapping("replication"), f"{where} replication", InvalidVMConfig)
    role = rep.choice("role", ReplicationRole, "none")
    smb_raw = f.mapping("smb")
    smb = None
    if smb_raw:
        s = _Fields(smb_raw, f"{where} smb", InvalidVMConfig)
        smb = LabSMB(s.text("path"), s.text("smb_version", "3.1.1"), s.flag("host_full_control"))
    storage = f.choice("storage_kind", StorageKind, "local")
    return LabVMConfig(
        folder=folder,
        id=vm_id,
        name=name,
        generation=generation,
        state=f.choice("state", VMState),
        configuration_version=str(f.version("configuration_version")),
        integration_services_version=f.version("integration_services_version", optional=True),
        os_family=f.choice("os_family", OSFamily),
        vss_capable=f.flag("vss_capable"),
        owner_node=f.text("owner_node", optional=True),
        highly_available=f.flag("highly_available"),
        cluster=f.text("cluster", optional=True),
        controllers=tuple(controllers),
        disks=disks,
        replication_role=role,
        replication_health=rep.choice(
            "health",
            ReplicationHealth,
            "NotApplicable" if role == ReplicationRole.NONE else "Normal",
        ),
        replication_state=rep.text("state", "Disabled" if role == ReplicationRole.NONE else "Replicating"),
        storage_kind=storage,
        csv=f.text("csv", optional=True) if storage == StorageKind.CSV else None,
        smb=smb,
        raw=data,
    )


def find_vm_folders(host_folder: Path, max_depth: int = 5) -> list[Path]:
    """Every folder under the host that holds a vm.json (hidden folders skipped)."""
    found = []
    for root, dirs, files in os.walk(host_folder):
        depth = len(Path(root).relative_to(host_folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
        if VM_FILE in files:
            found.append(Path(root))
            dirs[:] = []  # a VM folder does not contain other VMs
    return sorted(found)


def update_vm_json(folder: Path, **changes: Any) -> dict[str, Any]:
    data = _load(folder / VM_FILE, InvalidVMConfig)
    data.update(changes)
    write_json_atomic(folder / VM_FILE, data)
    return data
