"""The emulated Windows side of a Hyper-V host, for tests (test code).

``EmulatedHyperV(lab_root)`` is the handler a ``tests.wsman`` endpoint calls for
each command: it checks that the command line is our bootstrap, reads the
script from stdin with ``envelope.parse_script`` (exactly what the real host
would run), and answers what that script would print on Windows, acting on a
lab host folder (see protection/connectors/labconfig.py).

Script functions ``(host, params) -> result`` come from ``SCRIPTS`` in
``control.py`` (test-connection, inventory; helper "winrm") and ``backup.py`` /
``restore.py`` (helper "hvbackup"). A function reports an expected failure by
raising an exception with ``kind`` and ``message`` attributes (it becomes
``{"ok": false, "error": ...}``); anything else it raises becomes a PowerShell
error record in CLIXML on stderr with exit code 1, as an unexpected exception
does on Windows.

Failure and delay injection, per script name:
- ``host.fail_next[name] = ("AccessDenied", "message")``: the next run reports it;
- ``host.fail_next[name] = callable(request) -> CommandReply``: the next run answers that;
- ``host.delay[name] = seconds``: every run "runs" that long before answering.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from protection.connectors.hyperv import envelope
from tests.wsman.shell import CommandReply, CommandRequest

ScriptFunction = Callable[[Any, dict[str, Any]], Any]
Injected = tuple[str, str] | Callable[[CommandRequest], CommandReply]
SCRIPT_MODULES = ("control", "backup", "restore")


def load_scripts() -> dict[str, ScriptFunction]:
    """Every script the emulated host knows, from the modules that exist in this build."""
    scripts: dict[str, ScriptFunction] = {}
    for module_name in SCRIPT_MODULES:
        qualified = f"{__name__}.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:  # a module that is there but broken must fail loudly
                raise
            continue
        scripts.update(module.SCRIPTS)
    return scripts


def _ps_escape(text: str) -> str:
    """PowerShell's CLIXML escaping: XML entities, _x005F_ for '_x', _xHHHH_ for controls."""
    text = text.replace("_x", "_x005F_x")
    out = []
    for char in escape(text):
        out.append(f"_x{ord(char):04X}_" if ord(char) < 32 else char)
    return "".join(out)


def clixml_error(message: str, *, command: str = "") -> bytes:
    """stderr of powershell.exe after an uncaught error, as Windows PowerShell 5.1 writes it:
    a progress record first (ignored by clients), then the error lines."""
    lines = [
        f"{message}\r\n",
        "At line:1 char:1\r\n",
        f"+ {command or 'Invoke-Script'}\r\n",
        "+ ~~~~~~~~~~~~~\r\n",
        "    + CategoryInfo          : NotSpecified: (:) [], RuntimeException\r\n",
        "    + FullyQualifiedErrorId : RuntimeException\r\n",
        " \r\n",
    ]
    progress = (
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
        '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for '
        "first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR>"
        "</MS></Obj>"
    )
    errors = "".join(f'<S S="Error">{_ps_escape(line)}</S>' for line in lines)
    objs = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    return f"#< CLIXML\r\n{objs}{progress}</Objs>#< CLIXML\r\n{objs}{errors}</Objs>".encode()


def error_reply(message: str, delay: float = 0.0) -> CommandReply:
    return CommandReply(stderr=clixml_error(message), exit_code=1, delay_seconds=delay)


def failure_reply(kind: str, message: str, delay: float = 0.0) -> CommandReply:
    document = {"ok": False, "error": {"kind": kind, "message": message}}
    return CommandReply(stdout=json.dumps(document).encode(), delay_seconds=delay)


class EmulatedHyperV:
    """A Hyper-V host answering our scripts from a lab host folder."""

    def __init__(
        self,
        lab_root: Path,
        *,
        drive_root: Path | None = None,
        administrators: set[str] | None = None,
        hyperv_administrators: set[str] | None = None,
    ):
        self.lab_root = Path(lab_root)
        # The folder that is this host's C:\ (Samba serves it as C$); the lab root by default.
        self.drive_root = Path(drive_root) if drive_root else self.lab_root
        # None: every account that gets through WinRM is a local Administrator.
        self.administrators = administrators
        self.hyperv_administrators = set(hyperv_administrators or ())
        self.hyperv_installed = True
        self.fail_next: dict[str, Injected] = {}
        self.delay: dict[str, float] = {}
        self.runs: list[tuple[str, dict[str, Any], str]] = []  # (script, params, user)
        self.current_user = ""
        self.scripts = load_scripts()
        self._lock = threading.Lock()

    def is_admin(self, user: str) -> bool:
        return self.administrators is None or user.lower() in {u.lower() for u in self.administrators}

    def is_hyperv_admin(self, user: str) -> bool:
        return user.lower() in {u.lower() for u in self.hyperv_administrators}

    def handle(self, request: CommandRequest) -> CommandReply:
        if (
            request.executable.lower() != envelope.EXECUTABLE
            or request.arguments != envelope.command_arguments()
        ):
            return error_reply(f"The term '{request.executable}' with these arguments is not our bootstrap.")
        try:
            name, params, _body = envelope.parse_script(request.stdin.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return error_reply(f"The script on stdin could not be parsed: {exc}")
        with self._lock:  # one script at a time, as the lab folder is shared state
            self.runs.append((name, params, request.user))
            delay = self.delay.get(name, 0.0)
            injected = self.fail_next.pop(name, None)
            if callable(injected):
                reply = injected(request)
                reply.delay_seconds = max(reply.delay_seconds, delay)
                return reply
            if injected is not None:
                return failure_reply(*injected, delay=delay)
            function = self.scripts.get(name)
            if function is None:
                return error_reply(f"No script named '{name}' on this host.", delay)
            self.current_user = request.user
            try:
                result = function(self, params)
            except Exception as exc:  # what an uncaught PowerShell exception would be
                kind = getattr(exc, "kind", None)
                if isinstance(kind, str):
                    return failure_reply(kind, str(getattr(exc, "message", exc)), delay)
                return error_reply(f"{type(exc).__name__}: {exc}", delay)
        document = {"ok": True, "result": result}
        return CommandReply(
            stdout=json.dumps(document, ensure_ascii=False).encode("utf-8"), delay_seconds=delay
        )
