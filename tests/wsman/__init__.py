"""A WS-Management endpoint for tests: pywinrm's real requests on the wire, Windows emulated.

Only what a command does is emulated: a `Handler` gets a `CommandRequest` (executable,
arguments, all of stdin, the authenticated user, the shell's codepage) and returns a
`CommandReply` (stdout, stderr, exit code, `delay_seconds`). Everything else is the protocol
as pywinrm 0.5 speaks it to Windows::

    from tests.wsman import CommandReply, CommandRequest, WSManEndpoint

    with WSManEndpoint(handler, tls=True, users={"HOST\\\\backup": "secret"}) as endpoint:
        Protocol(endpoint.url, transport="ntlm", username="HOST\\\\backup", password="secret",
                 ca_trust_path=str(endpoint.ca_file))  # or endpoint.ca_pem, written to a file

In pytest, `tests.wsman.fixtures.wsman_endpoint` is a factory that stops what it started.

- `tls=True`: HTTPS with a certificate for 127.0.0.1/localhost from a CA made for this
  endpoint. NTLM channel bindings are checked when the client sends them (Windows'
  default CbtHardeningLevel=Relaxed). `tls=False`: plain HTTP where every SOAP body must be
  NTLM-sealed (`message_encryption="auto"`/"always"); a readable body gets an empty 500.
- `users`: `{"DOMAIN\\\\user" or "user": password}`; names match exactly (domain included).
- `client_cert_users`: None disables certificate authentication; else `{thumbprint (SHA-1)
  or subject CN: user}`. `endpoint.client_cert(user)` issues a certificate from the
  endpoint's CA and maps it; pywinrm wants both PEMs as files.
- Receive: a command's output is ready when the handler has returned and `delay_seconds`
  have passed. Until then each Receive waits for the client's OperationTimeout and answers
  the w:TimedOut fault (2150858793), which pywinrm's `get_command_output` retries forever:
  a slow command never becomes a read timeout by itself. `stall_seconds` (a host that does
  not answer) is what produces `requests.exceptions.ReadTimeout`.
- A command that got stdin without `End="true"` never finishes (the bootstrap would wait
  for the rest of its input on Windows).
- Knobs: `refuse_all` (connections reset: `requests.exceptions.ConnectionError`),
  `access_denied` / `access_denied_users` (HTTP 500, WSManFault code 5),
  `stall_seconds`, `max_envelope_kb` (500 as on Windows; bigger requests get HTTP 413).
- Logs for assertions: `requests` (CommandRequests), `exchanges` (every HTTP request: its
  connection, status, auth scheme, encrypted or not, SOAP action), `handler_errors`,
  `connection_errors`, `open_shells()`.
"""

from tests.wsman.server import Exchange, WSManEndpoint
from tests.wsman.shell import CommandReply, CommandRequest, Handler

__all__ = ["CommandReply", "CommandRequest", "Exchange", "Handler", "WSManEndpoint"]
