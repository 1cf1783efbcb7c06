"""What goes to the host on stdin, and how its answer is read.

The command line carries only a short bootstrap (Windows limits a command line
to about 8,000 characters, and pywinrm's ``run_ps`` would put the whole script
there). The bootstrap reads the real script from stdin, which has no limit:

    # hvbackup-script: <name>
    $Params = ConvertFrom-Json @'
    <parameters as compact JSON, one line>
    '@
    <scripts/_common.ps1, then scripts/<name>.ps1>

The script writes ONE JSON document to stdout: ``{"ok": true, "result": ...}``,
or ``{"ok": false, "error": {"kind": ..., "message": ...}}`` for a failure it
expected. Anything it did not expect reaches stderr as a CLIXML error record.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from defusedxml import ElementTree as SafeET

from protection.connectors.hyperv.errors import ProtocolError, ScriptError, script_failure

SCRIPTS_DIR = Path(__file__).parent / "scripts"
COMMON_SCRIPT = "_common"
HEADER_PREFIX = "# hvbackup-script: "
EXECUTABLE = "powershell.exe"
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")

# Runs before anything of ours: no progress records on stderr, UTF-8 both ways
# (without a byte order mark, which PowerShell 5.1 would otherwise put in front
# of the output), then the whole of stdin as one script block.
BOOTSTRAP = (
    "$ProgressPreference = 'SilentlyContinue'; "
    "$utf8 = New-Object System.Text.UTF8Encoding $false; "
    "[Console]::InputEncoding = $utf8; [Console]::OutputEncoding = $utf8; "
    "$script = [Console]::In.ReadToEnd(); "
    "& ([ScriptBlock]::Create($script))"
)


def encode_command(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of the UTF-16LE text."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def command_arguments() -> list[str]:
    return [
        "-NoLogo",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
        encode_command(BOOTSTRAP),
    ]


@cache
def script_body(name: str) -> str:
    """The PowerShell of one operation, with the shared helpers in front."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid script name {name!r}")
    path = SCRIPTS_DIR / f"{name}.ps1"
    if not path.is_file():
        raise ValueError(f"no script named {name!r} in {SCRIPTS_DIR}")
    common = (SCRIPTS_DIR / f"{COMMON_SCRIPT}.ps1").read_text(encoding="utf-8")
    return common.rstrip("\n") + "\n\n" + path.read_text(encoding="utf-8")


def build_script(name: str, params: dict[str, Any]) -> str:
    """Everything sent on stdin for one run of script ``name``."""
    # ASCII-only JSON: ConvertFrom-Json restores \\uXXXX escapes, and the here-string
    # cannot be closed early because a one-line JSON object never starts a line with '@.
    encoded = json.dumps(params, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return f"{HEADER_PREFIX}{name}\n$Params = ConvertFrom-Json @'\n{encoded}\n'@\n{script_body(name)}"


def parse_script(text: str) -> tuple[str, dict[str, Any], str]:
    """(name, params, body) of a script built by ``build_script``; ValueError otherwise."""
    lines = text.replace("\r\n", "\n").split("\n", 4)
    if len(lines) < 4 or not lines[0].startswith(HEADER_PREFIX):
        raise ValueError("not a backup-server script (no '# hvbackup-script:' header)")
    name = lines[0][len(HEADER_PREFIX) :].strip()
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid script name {name!r}")
    if lines[1] != "$Params = ConvertFrom-Json @'" or lines[3] != "'@":
        raise ValueError("the parameter block is malformed")
    try:
        params = json.loads(lines[2])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the parameters are not JSON: {exc.msg}") from None
    if not isinstance(params, dict):
        raise ValueError("the parameters must be a JSON object")
    return name, params, lines[4] if len(lines) > 4 else ""


# --------------------------------------------------------------------------- CLIXML

CLIXML_MARKER = "#< CLIXML"
_ESCAPE_RE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_OBJS_RE = re.compile(r"<Objs\b.*?</Objs>", re.DOTALL)
# PowerShell's position lines: "At line:1 char:1", "At C:\\x.ps1:12 char:5", "+ CategoryInfo ...".
_POSITION_RE = re.compile(r"^(At (line:)?.*\d+ char:\d+|\+ )")


def _unescape(text: str) -> str:
    """PowerShell's XML escapes: _x000D__x000A_ is CR LF, _x005F_ an underscore."""
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Characters outside the BMP come as two escaped surrogates; join them.
    return raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_clixml(text: str) -> list[str]:
    """The error lines of a CLIXML stream (``<S S="Error">``), in order, unescaped.

    PowerShell may write several ``#< CLIXML`` documents in one stream; progress
    and other records are ignored. Text that is not CLIXML is returned as is.
    """
    if CLIXML_MARKER not in text:
        stripped = text.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    for document in _OBJS_RE.findall(text):
        try:
            root = SafeET.fromstring(document)
        except SafeET.ParseError:
            continue
        for element in root.iter():
            if element.tag.rsplit("}", 1)[-1] == "S" and element.get("S") == "Error":
                out.append(_unescape(element.text or ""))
    return out


def clixml_message(text: str) -> tuple[str, str]:
    """(short message, full text) of an error stream.

    The short message is the error itself, without PowerShell's position lines
    ("At line:1 char:1", "+ CategoryInfo ...") that mean nothing to an administrator.
    """
    full = "".join(decode_clixml(text)).replace("\r\n", "\n").strip()
    kept: list[str] = []
    for line in full.split("\n"):
        stripped = line.strip()
        if not stripped or _POSITION_RE.match(stripped):
            if kept:
                break
            continue
        kept.append(stripped)
    message = " ".join(kept) or full
    return message, full


# --------------------------------------------------------------------------- replies


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace").lstrip("\ufeff")


def parse_reply(stdout: bytes, stderr: bytes, exit_code: int, *, script: str = "the script") -> Any:
    """The ``result`` of a script run, or the typed error it stands for."""
    out, err = _decode(stdout).strip(), _decode(stderr)
    message, details = clixml_message(err) if err.strip() else ("", "")
    document: Any = None
    if out:
        try:
            document = json.loads(out)
        except json.JSONDecodeError:
            document = None
    if isinstance(document, dict) and isinstance(document.get("ok"), bool):
        if document["ok"]:
            return document.get("result")
        error = document.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("kind"), str):
            raise ProtocolError(f"{script} reported a failure without saying which.")
        raise script_failure(error["kind"], str(error.get("message") or "no message"))
    if message:
        raise ScriptError(f"PowerShell failed running {script}: {message}", details=details)
    if exit_code != 0:
        raise ScriptError(f"PowerShell exited with code {exit_code} running {script} and said nothing.")
    if not out:
        raise ProtocolError(f"{script} finished without an answer.")
    raise ProtocolError(f"{script} answered something that is not its JSON result: {out[:200]!r}")
