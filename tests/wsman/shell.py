"""The Windows Remote Shell resource (`.../windows/shell/cmd`): shells, commands, stdin, output.

What a process does is the pluggable `Handler`; this module only keeps the state WinRM keeps:
a shell per transfer Create, a command per shell Command, stdin collected from Send until
`End="true"`, output handed out by Receive, then Signal (terminate) and transfer Delete.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from tests.wsman import soap

# Raw output bytes per Receive reply. pywinrm announces MaxEnvelopeSize 153600 and Windows
# keeps each reply under it, so long output arrives over several Receives.
RECEIVE_CHUNK = 64 * 1024

_STATE = f"{soap.SHELL}/CommandState"


@dataclass
class CommandRequest:
    executable: str  # "powershell.exe"
    arguments: list[str]
    stdin: bytes  # everything received by Send
    user: str  # "DOMAIN\\user" (NTLM) or the client certificate's mapped user
    codepage: int = 437  # WINRS_CODEPAGE of the shell (pywinrm's default is 437)


@dataclass
class CommandReply:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    delay_seconds: float = 0.0  # the host is slow: Receive answers "still running" until then


Handler = Callable[[CommandRequest], CommandReply]


@dataclass
class Answer:
    """What the HTTP layer sends back: a status and a SOAP envelope."""

    status: int
    body: bytes


@dataclass
class _Command:
    id: str
    executable: str
    arguments: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_opened: bool = False  # a Send arrived
    stdin_closed: bool = False  # a Send with End="true" arrived
    process: threading.Thread | None = None
    start_lock: threading.Lock = field(default_factory=threading.Lock)
    finished: threading.Event = field(default_factory=threading.Event)
    reply: CommandReply | None = None
    finishes_at: float = 0.0  # time.monotonic() when the "process" exits
    stdout_sent: int = 0
    stderr_sent: int = 0


@dataclass
class _Shell:
    id: str
    user: str
    codepage: int
    commands: dict[str, _Command] = field(default_factory=dict)


def split_command_line(text: str) -> list[str]:
    """Split like CommandLineToArgvW: whitespace separates, double quotes group, `\\"` is a quote."""
    words: list[str] = []
    current: list[str] = []
    in_word = in_quotes = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == '"':
            current.append('"')
            in_word = True
            index += 2
            continue
        if char == '"':
            in_quotes = not in_quotes
            in_word = True
        elif char.isspace() and not in_quotes:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
        index += 1
    if in_word:
        words.append("".join(current))
    return words


class ShellService:
    """The shells of one endpoint; thread-safe (one HTTP thread per client connection)."""

    def __init__(self, handler: Handler, stopping: threading.Event) -> None:
        self._handler = handler
        self._stopping = stopping
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self.requests: list[CommandRequest] = []
        self.handler_errors: list[str] = []

    def open_shells(self) -> int:
        with self._lock:
            return len(self._shells)

    def dispatch(self, request: soap.SoapRequest, user: str) -> Answer:
        actions: dict[str, Callable[[soap.SoapRequest, str], Answer]] = {
            soap.ACTION_CREATE: self._create,
            soap.ACTION_COMMAND: self._command,
            soap.ACTION_SEND: self._send,
            soap.ACTION_RECEIVE: self._receive,
            soap.ACTION_SIGNAL: self._signal,
            soap.ACTION_DELETE: self._delete,
        }
        action = actions.get(request.action)
        if action is None or request.resource_uri != soap.RESOURCE_CMD:
            return Answer(
                500,
                soap.fault(
                    request.message_id,
                    code="s:Sender",
                    subcode="a:ActionNotSupported",
                    reason=f"The action {request.action} on {request.resource_uri} is not supported.",
                    wsman_code=soap.CODE_ACTION_NOT_SUPPORTED,
                ),
            )
        return action(request, user)

    # -- helpers -----------------------------------------------------------------------

    def _reply(self, request: soap.SoapRequest, action: str, body: str) -> Answer:
        return Answer(200, soap.envelope(action, request.message_id, body))

    def _not_found(self, request: soap.SoapRequest, what: str) -> Answer:
        return Answer(
            500,
            soap.fault(
                request.message_id,
                code="s:Sender",
                subcode="w:InvalidSelectors",
                reason=f"The request for the Windows Remote Shell failed because the {what} was not found.",
                wsman_code=soap.CODE_SHELL_NOT_FOUND,
            ),
        )

    def _bad_request(self, request: soap.SoapRequest, reason: str) -> Answer:
        return Answer(
            500,
            soap.fault(
                request.message_id,
                code="s:Sender",
                subcode="w:SchemaValidationError",
                reason=reason,
                wsman_code=soap.CODE_INVALID_XML,
            ),
        )

    def _shell(self, request: soap.SoapRequest, user: str) -> _Shell | None:
        with self._lock:
            shell = self._shells.get(request.shell_id or "")
        # A shell belongs to the user who created it, as on Windows.
        return shell if shell is not None and shell.user == user else None

    def _command_of(self, shell: _Shell, command_id: str | None) -> _Command | None:
        with self._lock:
            return shell.commands.get(command_id or "")

    # -- actions -----------------------------------------------------------------------

    def _create(self, request: soap.SoapRequest, user: str) -> Answer:
        try:
            codepage = int(request.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            return self._bad_request(request, "WINRS_CODEPAGE is not a number.")
        shell = _Shell(id=str(uuid.uuid4()).upper(), user=user, codepage=codepage)
        with self._lock:
            self._shells[shell.id] = shell
        body = (
            "<x:ResourceCreated>"
            "<a:Address>http://127.0.0.1/wsman</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{soap.RESOURCE_CMD}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters>"
            "</x:ResourceCreated>"
            "<rsp:Shell>"
            f"<rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"<rsp:Owner>{escape(user)}</rsp:Owner>"
            "<rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
            "</rsp:Shell>"
        )
        return self._reply(request, f"{soap.TRANSFER}/CreateResponse", body)

    def _command(self, request: soap.SoapRequest, user: str) -> Answer:
        shell = self._shell(request, user)
        if shell is None:
            return self._not_found(request, "shell")
        command_element = soap.find(request.body, "CommandLine", "Command")
        if command_element is None or not (command_element.text or "").strip():
            return self._bad_request(request, "The command line is empty.")
        # With no rsp:Arguments, rsp:Command is a whole command line (pywinrm's run_ps sends
        # "powershell -encodedcommand ..." that way); Windows joins everything into one line.
        words = split_command_line(command_element.text or "")
        for argument in soap.find_all(request.body, "CommandLine", "Arguments"):
            words.extend(split_command_line(argument.text or ""))
        command = _Command(id=str(uuid.uuid4()).upper(), executable=words[0], arguments=words[1:])
        with self._lock:
            shell.commands[command.id] = command
        body = f"<rsp:CommandResponse><rsp:CommandId>{command.id}</rsp:CommandId></rsp:CommandResponse>"
        return self._reply(request, f"{soap.SHELL}/CommandResponse", body)

    def _send(self, request: soap.SoapRequest, user: str) -> Answer:
        shell = self._shell(request, user)
        if shell is None:
            return self._not_found(request, "shell")
        streams = soap.find_all(request.body, "Send", "Stream")
        if not streams:
            return self._bad_request(request, "Send carries no rsp:Stream.")
        for stream in streams:
            command = self._command_of(shell, stream.get("CommandId"))
            if command is None:
                return self._not_found(request, "command")
            if stream.get("Name") != "stdin":
                return self._bad_request(request, f"Unknown input stream {stream.get('Name')!r}.")
            if command.stdin_closed:
                return self._bad_request(request, "The input stream of the command is closed.")
            try:
                command.stdin += base64.b64decode((stream.text or "").strip(), validate=True)
            except binascii.Error:
                return self._bad_request(request, "The stdin stream is not valid base64.")
            command.stdin_opened = True
            if stream.get("End", "").lower() == "true":
                command.stdin_closed = True
                self._start(shell, command)
        return self._reply(request, f"{soap.SHELL}/SendResponse", "<rsp:SendResponse/>")

    def _start(self, shell: _Shell, command: _Command) -> None:
        """Start the "process" once: at the end of stdin, or at the first Receive.

        The handler runs on its own thread, as a process runs beside WinRM: Send answers at
        once and Receive waits for the output, so a long emulated operation cannot push the
        Send past the client's read timeout.
        """
        with command.start_lock:
            if command.process is not None:
                return
            command_request = CommandRequest(
                executable=command.executable,
                arguments=list(command.arguments),
                stdin=bytes(command.stdin),
                user=shell.user,
                codepage=shell.codepage,
            )
            with self._lock:
                self.requests.append(command_request)
            command.process = threading.Thread(
                target=self._run,
                args=(command, command_request),
                name=f"wsman-command-{command.id}",
                daemon=True,
            )
            command.process.start()

    def _run(self, command: _Command, command_request: CommandRequest) -> None:
        try:
            reply = self._handler(command_request)
        except Exception:
            # A broken handler is a test bug: make it loud on the client side too.
            details = traceback.format_exc()
            with self._lock:
                self.handler_errors.append(details)
            reply = CommandReply(stderr=details.encode(), exit_code=1)
        command.finishes_at = time.monotonic() + max(reply.delay_seconds, 0.0)
        command.reply = reply
        command.finished.set()

    def _wait(self, until: Callable[[], bool], seconds: float) -> bool:
        """Wait until `until()` holds or `seconds` pass; False when the endpoint stops first."""
        deadline = time.monotonic() + seconds
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self._stopping.wait(min(left, 0.05)):
                return False
        return True

    def _receive(self, request: soap.SoapRequest, user: str) -> Answer:
        shell = self._shell(request, user)
        if shell is None:
            return self._not_found(request, "shell")
        desired = soap.find(request.body, "Receive", "DesiredStream")
        command = self._command_of(shell, desired.get("CommandId") if desired is not None else None)
        if command is None:
            return self._not_found(request, "command")
        # Windows holds a Receive until there is output or OperationTimeout passes, then
        # faults with w:TimedOut; pywinrm's get_command_output retries that silently.
        deadline = time.monotonic() + (request.operation_timeout or 60.0)
        if command.stdin_opened and not command.stdin_closed:
            # The process still waits for the rest of its input (a script reading stdin to
            # the end never finishes when the client forgets End="true").
            if not self._wait(lambda: False, deadline - time.monotonic()):
                return Answer(503, b"")
            return self._timed_out(request)
        self._start(shell, command)
        if not self._wait(command.finished.is_set, deadline - time.monotonic()):
            return Answer(503, b"")
        if not command.finished.is_set():
            return self._timed_out(request)
        if not self._wait(lambda: time.monotonic() >= command.finishes_at, deadline - time.monotonic()):
            return Answer(503, b"")
        if time.monotonic() < command.finishes_at:
            return self._timed_out(request)
        return self._reply(request, f"{soap.SHELL}/ReceiveResponse", self._output(command))

    def _timed_out(self, request: soap.SoapRequest) -> Answer:
        return Answer(
            500,
            soap.fault(
                request.message_id,
                code="s:Receiver",
                subcode="w:TimedOut",
                reason="The WS-Management service cannot complete the operation within "
                "the time specified in OperationTimeout.",
                wsman_code=soap.CODE_OPERATION_TIMEOUT,
            ),
        )

    def _output(self, command: _Command) -> str:
        reply = command.reply
        assert reply is not None
        budget = RECEIVE_CHUNK
        parts: list[str] = []
        ended = True
        for name, data, offset_name in (
            ("stdout", reply.stdout, "stdout_sent"),
            ("stderr", reply.stderr, "stderr_sent"),
        ):
            offset = getattr(command, offset_name)
            chunk = data[offset : offset + budget]
            budget -= len(chunk)
            setattr(command, offset_name, offset + len(chunk))
            if chunk:
                encoded = base64.b64encode(chunk).decode()
                parts.append(f'<rsp:Stream Name="{name}" CommandId="{command.id}">{encoded}</rsp:Stream>')
            if offset + len(chunk) < len(data):
                ended = False
            else:
                parts.append(f'<rsp:Stream Name="{name}" CommandId="{command.id}" End="true"></rsp:Stream>')
        if ended:
            parts.append(
                f'<rsp:CommandState CommandId="{command.id}" State="{_STATE}/Done">'
                f"<rsp:ExitCode>{reply.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId="{command.id}" State="{_STATE}/Running"/>')
        return f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>"

    def _signal(self, request: soap.SoapRequest, user: str) -> Answer:
        shell = self._shell(request, user)
        if shell is None:
            return self._not_found(request, "shell")
        signal = soap.find(request.body, "Signal")
        command_id = signal.get("CommandId") if signal is not None else None
        code = soap.find(signal, "Code")
        if command_id is None or code is None:
            return self._bad_request(request, "Signal needs a CommandId and a Code.")
        with self._lock:
            command = shell.commands.get(command_id)
            if command is not None and (code.text or "").strip().endswith("/signal/terminate"):
                del shell.commands[command_id]
        if command is None:
            return self._not_found(request, "command")
        return self._reply(request, f"{soap.SHELL}/SignalResponse", "<rsp:SignalResponse/>")

    def _delete(self, request: soap.SoapRequest, user: str) -> Answer:
        if self._shell(request, user) is None:
            return self._not_found(request, "shell")
        with self._lock:
            self._shells.pop(request.shell_id or "", None)
        return self._reply(request, f"{soap.TRANSFER}/DeleteResponse", "")
