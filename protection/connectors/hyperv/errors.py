"""Typed errors of the Hyper-V connector.

Every failure on the way to a Hyper-V host becomes one of these, with a plain
message (what went wrong) and a hint (what the administrator can do about it).
``step`` names the step of "Test connection" the failure belongs to, so the
add-host page can show where the chain broke. Messages never carry credentials.
"""

from __future__ import annotations

from protection.connectors.protocol import (
    BackupRefused,
    ChangeTrackingLost,
    ConnectorError,
    HostUnreachable,
    RestoreRefused,
    VMNotFound,
)

# The steps of "Test connection", in order; error classes name theirs.
STEP_RESOLVE = "resolve"
STEP_CONNECT = "connect"
STEP_TLS = "tls"
STEP_AUTHENTICATE = "authenticate"
STEP_POWERSHELL = "powershell"
STEP_HYPERV = "hyperv"
STEP_RIGHTS = "rights"
STEPS: tuple[tuple[str, str], ...] = (
    (STEP_RESOLVE, "Resolve the host name"),
    (STEP_CONNECT, "Connect to WinRM"),
    (STEP_TLS, "Check the host's certificate"),
    (STEP_AUTHENTICATE, "Authenticate"),
    (STEP_POWERSHELL, "Run PowerShell"),
    (STEP_HYPERV, "Find Hyper-V"),
    (STEP_RIGHTS, "Check the account's rights"),
)


class HyperVError(ConnectorError):
    """A Hyper-V connector failure: ``str()`` is the message, ``hint`` the fix."""

    step = STEP_POWERSHELL
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = self.default_hint if hint is None else hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def with_hint(self) -> str:
        return f"{self.message} {self.hint}".strip()


class HostNotFound(HyperVError, HostUnreachable):
    step = STEP_RESOLVE
    default_hint = (
        "Check the spelling of the host name, or enter its IP address; this server's DNS "
        "must be able to resolve it."
    )


class ConnectionRefused(HyperVError, HostUnreachable):
    step = STEP_CONNECT
    default_hint = (
        "Enable WinRM on the host (Enable-PSRemoting, or winrm quickconfig -transport:https for "
        "HTTPS) and allow the port through the Windows firewall (TCP 5986 for HTTPS, 5985 for HTTP)."
    )


class ConnectionFailed(HyperVError, HostUnreachable):
    """The network path to the host is broken (no route, reset, unreachable network)."""

    step = STEP_CONNECT
    default_hint = "Check that the host is on and that this server can reach it (routing, firewall)."


class InvalidConnectionSettings(HyperVError):
    """The host's connection settings cannot work (refused before anything is sent)."""

    step = STEP_CONNECT
    default_hint = "Edit the host's connection settings."


class WinRMNotEnabled(HyperVError, HostUnreachable):
    step = STEP_CONNECT
    default_hint = (
        "Something answers on that port, but not WinRM: check the port and scheme, and that a "
        "WinRM listener exists (winrm enumerate winrm/config/Listener)."
    )


class TLSError(HyperVError, HostUnreachable):
    step = STEP_TLS
    default_hint = (
        "Upload the certificate of the CA that issued the host's WinRM certificate, and make "
        "sure that certificate names the address you entered (subject or subject alternative name)."
    )


class AuthenticationFailed(HyperVError):
    step = STEP_AUTHENTICATE
    default_hint = (
        "Check the user name (DOMAIN\\user or HOST\\user for a local account) and the password; "
        "for certificate authentication, check the client certificate mapping on the host "
        "(WSMan:\\localhost\\ClientCertificate)."
    )


class AccessDenied(HyperVError):
    step = STEP_RIGHTS
    default_hint = (
        "Use an account that is a local Administrator of the host (Hyper-V Administrators is "
        "not enough for WinRM and the admin share), or add it to those groups."
    )


class NotHyperVHost(HyperVError):
    step = STEP_HYPERV
    default_hint = (
        "Install the Hyper-V role and its PowerShell module (Install-WindowsFeature Hyper-V "
        "-IncludeManagementTools), or enter the address of a Hyper-V host."
    )


class ScriptError(HyperVError):
    """PowerShell failed in a way the script did not expect (message from the CLIXML)."""

    step = STEP_POWERSHELL
    default_hint = "See the message above; the host's event log (Hyper-V-VMMS) may say more."

    def __init__(self, message: str, hint: str | None = None, details: str = ""):
        super().__init__(message, hint)
        self.details = details


class InvalidArgument(ScriptError):
    default_hint = "This is a bug in the backup server; please report it with the job log."


class CheckpointFailed(HyperVError):
    step = STEP_POWERSHELL
    default_hint = (
        "Check the VM's integration services and the free space on its volume, then retry; "
        "Hyper-V Manager and the Hyper-V-VMMS event log show why the checkpoint failed."
    )


class HostTimeout(HyperVError, HostUnreachable):
    default_hint = (
        "The host is slow or busy; retry later, or raise the timeout if this operation is "
        "expected to take long on this host."
    )


class ProtocolError(HyperVError):
    """The host answered something our scripts never produce."""

    default_hint = "Check that the address really is a Windows host running WinRM."


# What a script's {"ok": false, "error": {"kind": ...}} becomes. The protocol's
# own errors (VMNotFound, ...) are kept so jobs handle them the same for every connector.
SCRIPT_FAILURES: dict[str, type[ConnectorError]] = {
    "AccessDenied": AccessDenied,
    "NotHyperV": NotHyperVHost,
    "VMNotFound": VMNotFound,
    "CheckpointFailed": CheckpointFailed,
    "ChangeTrackingLost": ChangeTrackingLost,
    "BackupRefused": BackupRefused,
    "RestoreRefused": RestoreRefused,
    "InvalidArgument": InvalidArgument,
}


def script_failure(kind: str, message: str) -> ConnectorError:
    """The typed error for a failure a script reported on purpose."""
    error_class = SCRIPT_FAILURES.get(kind)
    if error_class is None:
        return ScriptError(f"The host reported an unknown failure ({kind}): {message}")
    return error_class(message)


def hint_of(error: BaseException) -> str:
    return getattr(error, "hint", "") or ""


def step_of(error: BaseException) -> str:
    return getattr(error, "step", STEP_POWERSHELL)
