"""A tiny handler for the endpoint's own tests: a "process" that echoes what it was given."""

from __future__ import annotations

import json

from tests.wsman.shell import CommandReply, CommandRequest

USERS = {"HOST\\backup": "Pa55w0rd-ü"}
USERNAME, PASSWORD = next(iter(USERS.items()))


def echo(request: CommandRequest) -> CommandReply:
    """stdout: stdin when there is some, else the command line as JSON; exit code 0."""
    if request.stdin:
        return CommandReply(stdout=request.stdin)
    line = {"executable": request.executable, "arguments": request.arguments, "user": request.user}
    return CommandReply(stdout=json.dumps(line).encode())
