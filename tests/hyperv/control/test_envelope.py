"""What goes to the host on stdin and how its answers (JSON, CLIXML) are read."""

from __future__ import annotations

import base64
import json
import re

import pytest

from protection.connectors.hyperv import envelope
from protection.connectors.hyperv.errors import (
    AccessDenied,
    CheckpointFailed,
    InvalidArgument,
    NotHyperVHost,
    ProtocolError,
    ScriptError,
)
from protection.connectors.protocol import BackupRefused, ChangeTrackingLost, RestoreRefused, VMNotFound
from tests.hyperv.windows import clixml_error


def test_the_command_line_is_a_short_bootstrap_that_reads_stdin() -> None:
    args = envelope.command_arguments()
    assert args[:6] == [
        "-NoLogo",
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
    ]
    bootstrap = base64.b64decode(args[6]).decode("utf-16-le")
    assert bootstrap == envelope.BOOTSTRAP
    assert (
        "[Console]::In.ReadToEnd()" in bootstrap and "$ProgressPreference = 'SilentlyContinue'" in bootstrap
    )
    assert "UTF8Encoding $false" in bootstrap  # UTF-8 both ways, without a byte order mark
    assert len(" ".join(args)) < 1000  # far below Windows' 8,191-character command line


def test_script_round_trip_keeps_parameters_exactly() -> None:
    params = {
        "vm_id": "0b9c8a2e-2f1e-4d0b-9f3e-2a1b3c4d5e6f",
        "name": "Büro-Server ✓ 😀",
        "n": [1, None, True],
    }
    text = envelope.build_script("inventory", params)
    lines = text.split("\n")
    assert lines[0] == "# hvbackup-script: inventory"
    assert lines[1] == "$Params = ConvertFrom-Json @'" and lines[3] == "'@"
    assert lines[2].isascii()  # escaped, so the host's code page cannot garble it
    name, parsed, body = envelope.parse_script(text)
    assert (name, parsed) == ("inventory", params)
    assert "function Write-Result" in body and "Get-VMHardDiskDrive" in body


def test_a_parameter_cannot_close_the_here_string() -> None:
    text = envelope.build_script("inventory", {"name": "x\n'@\nRemove-Item C:\\ -Recurse"})
    assert text.split("\n")[3] == "'@"
    assert envelope.parse_script(text)[1] == {"name": "x\n'@\nRemove-Item C:\\ -Recurse"}


@pytest.mark.parametrize("name", ["../inventory", "Inventory", "no-such-script", ""])
def test_only_our_scripts_can_be_built(name: str) -> None:
    with pytest.raises(ValueError, match="script"):
        envelope.build_script(name, {})


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Get-VM", "header"),
        ("# hvbackup-script: inventory\n$Params = 1\n{}\n'@\n", "parameter block"),
        ("# hvbackup-script: inventory\n$Params = ConvertFrom-Json @'\n{x\n'@\n", "not JSON"),
        ("# hvbackup-script: inventory\n$Params = ConvertFrom-Json @'\n[1]\n'@\n", "JSON object"),
    ],
)
def test_parse_script_refuses_anything_else(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        envelope.parse_script(text)


def test_every_script_is_valid_ascii_and_ends_by_writing_json() -> None:
    for path in envelope.SCRIPTS_DIR.glob("*.ps1"):
        text = path.read_text(encoding="utf-8")
        assert text.isascii(), path.name
        if path.stem != envelope.COMMON_SCRIPT:
            assert "Write-Result" in text, path.name
    common = (envelope.SCRIPTS_DIR / "_common.ps1").read_text()
    assert "ConvertTo-Json -Depth 5 -Compress -InputObject" in common


def test_no_script_redefines_a_shared_helper() -> None:
    """A helper in _common.ps1 is sent with every script: a script's own copy would shadow it."""
    common = (envelope.SCRIPTS_DIR / "_common.ps1").read_text()
    shared = set(re.findall(r"^function ([\w-]+)", common, re.MULTILINE))
    assert {"Invoke-HyperVMethod", "Wait-HyperVJob", "Stop-IfHyperVAccessDenied"} <= shared
    for path in envelope.SCRIPTS_DIR.glob("*.ps1"):
        if path.stem != envelope.COMMON_SCRIPT:
            own = set(re.findall(r"^function ([\w-]+)", path.read_text(), re.MULTILINE))
            assert not own & shared, path.name


# --------------------------------------------------------------------------- CLIXML

REAL_CLIXML = (
    '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<S S="Error">Get-VM : You do not have the required permission to complete this task. Contact the '
    "administrator of the authorization policy for the computer 'HV07'._x000D__x000A_</S>"
    '<S S="Error">At line:1 char:1_x000D__x000A_</S>'
    '<S S="Error">+ Get-VM_x000D__x000A_</S><S S="Error">+ ~~~~~~_x000D__x000A_</S>'
    '<S S="Error">    + CategoryInfo          : PermissionDenied: (:) [Get-VM], '
    "VirtualizationException_x000D__x000A_</S>"
    '<S S="Error">    + FullyQualifiedErrorId : Unspecified,'
    "Microsoft.HyperV.PowerShell.Commands.GetVM_x000D__x000A_</S>"
    '<S S="Error"> _x000D__x000A_</S></Objs>'
)


def test_clixml_error_lines_are_decoded_in_order() -> None:
    lines = envelope.decode_clixml(REAL_CLIXML)
    assert lines[0].startswith("Get-VM : You do not have the required permission") and lines[0].endswith(
        "\r\n"
    )
    assert lines[1] == "At line:1 char:1\r\n"
    message, full = envelope.clixml_message(REAL_CLIXML)
    assert message == (
        "Get-VM : You do not have the required permission to complete this task. Contact the "
        "administrator of the authorization policy for the computer 'HV07'."
    )
    assert "FullyQualifiedErrorId" in full and "_x000D_" not in full


def test_clixml_escapes_underscores_non_bmp_and_markup() -> None:
    text = (
        '#< CLIXML\r\n<Objs xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<S S="Error">VM my_x005F_x000D_vm &lt;b&gt; _xD83D__xDE00_ done_x000A_</S>'
        '<S S="warning">ignored</S><S S="Error">second line_x000A_</S></Objs>'
    )
    assert envelope.decode_clixml(text) == ["VM my_x000D_vm <b> 😀 done\n", "second line\n"]


def test_several_clixml_documents_and_progress_records() -> None:
    stderr = clixml_error("Something broke: the file C:\\VMs\\a.vhdx is in use.").decode()
    assert stderr.count("#< CLIXML") == 2 and 'S="progress"' in stderr
    assert envelope.clixml_message(stderr)[0] == "Something broke: the file C:\\VMs\\a.vhdx is in use."


def test_plain_stderr_is_kept_as_it_is() -> None:
    assert envelope.decode_clixml("  'powershell.exe' is not recognized\r\n") == [
        "'powershell.exe' is not recognized"
    ]
    assert envelope.decode_clixml("") == []


def test_clixml_message_keeps_a_multi_line_message_up_to_the_position() -> None:
    stderr = clixml_error("first part\r\nsecond part").decode()
    assert envelope.clixml_message(stderr)[0] == "first part second part"


# --------------------------------------------------------------------------- replies


def ok(result: object) -> bytes:
    return json.dumps({"ok": True, "result": result}).encode()


def failed(kind: str, message: str) -> bytes:
    return json.dumps({"ok": False, "error": {"kind": kind, "message": message}}).encode()


def test_a_successful_reply_gives_its_result() -> None:
    assert envelope.parse_reply(ok({"a": [1, "é"]}), b"", 0) == {"a": [1, "é"]}
    # A BOM and a trailing newline from the host do not matter.
    assert envelope.parse_reply(b"\xef\xbb\xbf" + ok([]) + b"\r\n", b"", 0) == []


def test_warnings_on_stderr_do_not_fail_a_successful_reply() -> None:
    stderr = b'#< CLIXML\r\n<Objs xmlns="x"><S S="warning">careful</S></Objs>'
    assert envelope.parse_reply(ok(1), stderr, 0) == 1


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("AccessDenied", AccessDenied),
        ("NotHyperV", NotHyperVHost),
        ("VMNotFound", VMNotFound),
        ("CheckpointFailed", CheckpointFailed),
        ("ChangeTrackingLost", ChangeTrackingLost),
        ("BackupRefused", BackupRefused),
        ("RestoreRefused", RestoreRefused),
        ("InvalidArgument", InvalidArgument),
    ],
)
def test_each_known_failure_kind_becomes_its_typed_error(kind: str, error_class: type[Exception]) -> None:
    with pytest.raises(error_class, match=r"^the host says why$"):
        envelope.parse_reply(failed(kind, "the host says why"), b"", 0)


def test_an_unknown_failure_kind_is_still_a_script_error() -> None:
    with pytest.raises(ScriptError, match=r"unknown failure \(Gremlins\): it broke"):
        envelope.parse_reply(failed("Gremlins", "it broke"), b"", 0)


def test_an_unexpected_powershell_error_is_decoded_from_clixml() -> None:
    with pytest.raises(ScriptError) as caught:
        envelope.parse_reply(b"", REAL_CLIXML.encode(), 1, script="inventory")
    assert str(caught.value).startswith("PowerShell failed running inventory: Get-VM : You do not have")
    assert "At line:1" not in str(caught.value) and "FullyQualifiedErrorId" in caught.value.details


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "error_class", "match"),
    [
        (b"", b"", 3, ScriptError, "exited with code 3"),
        (b"", b"", 0, ProtocolError, "without an answer"),
        (b"Hello from cmd", b"", 0, ProtocolError, "not its JSON result: 'Hello from cmd'"),
        (b'{"ok": false}', b"", 0, ProtocolError, "without saying which"),
        (b'{"ok": "yes"}', b"", 0, ProtocolError, "not its JSON"),
    ],
)
def test_malformed_replies(stdout: bytes, stderr: bytes, code: int, error_class: type, match: str) -> None:
    with pytest.raises(error_class, match=match):
        envelope.parse_reply(stdout, stderr, code)
