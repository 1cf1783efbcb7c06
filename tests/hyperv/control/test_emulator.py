"""The emulated Windows side answers like the real scripts, and injects failures on demand."""

from __future__ import annotations

import json

from protection.connectors.hyperv import envelope
from tests.hyperv.control.conftest import USERNAME
from tests.hyperv.windows import EmulatedHyperV, error_reply, load_scripts
from tests.wsman.shell import CommandReply, CommandRequest


def request(name: str, params: dict | None = None, **changes: object) -> CommandRequest:
    values: dict = {
        "executable": "powershell.exe",
        "arguments": envelope.command_arguments(),
        "stdin": envelope.build_script(name, params or {}).encode(),
        "user": USERNAME,
        "codepage": 65001,
    }
    values.update(changes)
    return CommandRequest(**values)


def reply_json(reply: CommandReply) -> dict:
    assert reply.exit_code == 0 and reply.stderr == b"", reply.stderr
    return dict(json.loads(reply.stdout))


def test_scripts_of_this_build_are_known() -> None:
    assert {"test-connection", "inventory"} <= set(load_scripts())


def test_answers_are_what_the_client_parses(emulated: EmulatedHyperV) -> None:
    facts = envelope.parse_reply(*_triple(emulated.handle(request("test-connection"))))
    assert facts["computer_name"] == "HV07" and facts["user"] == USERNAME and facts["is_admin"]
    assert emulated.runs == [("test-connection", {}, USERNAME)]


def _triple(reply: CommandReply) -> tuple[bytes, bytes, int]:
    return reply.stdout, reply.stderr, reply.exit_code


def test_a_command_that_is_not_our_bootstrap_fails_like_powershell(emulated: EmulatedHyperV) -> None:
    reply = emulated.handle(request("inventory", arguments=["-Command", "Get-VM"]))
    assert reply.exit_code == 1 and b"not our bootstrap" in reply.stderr
    reply = emulated.handle(request("inventory", stdin=b"Get-VM | ConvertTo-Json"))
    assert reply.exit_code == 1 and envelope.clixml_message(reply.stderr.decode())[0].startswith(
        "The script on stdin could not be parsed"
    )
    assert emulated.runs == []


def test_failures_are_injected_once(emulated: EmulatedHyperV) -> None:
    emulated.fail_next["inventory"] = ("CheckpointFailed", "no")
    assert reply_json(emulated.handle(request("inventory"))) == {
        "ok": False,
        "error": {"kind": "CheckpointFailed", "message": "no"},
    }
    assert reply_json(emulated.handle(request("inventory")))["ok"] is True
    emulated.fail_next["inventory"] = lambda req: error_reply(f"for {req.user}")
    assert emulated.handle(request("inventory")).exit_code == 1


def test_delay_is_passed_to_the_endpoint(emulated: EmulatedHyperV) -> None:
    emulated.delay["test-connection"] = 7.5
    assert emulated.handle(request("test-connection")).delay_seconds == 7.5
    emulated.fail_next["test-connection"] = ("AccessDenied", "no")
    assert emulated.handle(request("test-connection")).delay_seconds == 7.5


def test_unknown_script_and_script_failures(emulated: EmulatedHyperV) -> None:
    stdin = envelope.build_script("inventory", {}).replace("inventory", "no-such-thing", 1).encode()
    reply = emulated.handle(request("inventory", stdin=stdin))
    assert reply.exit_code == 1 and b"No script named" in reply.stderr
    reply = emulated.handle(request("inventory", {"vm_id": "00000000-0000-4000-8000-000000000000"}))
    assert reply_json(reply)["error"]["kind"] == "VMNotFound"
