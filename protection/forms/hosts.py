"""Registering a host: where it is, how to reach it, and the credentials to use.

The password is never rendered back into a page (PasswordInput without
render_value), so a refused form does not echo it into the HTML. Certificates
and keys arrive as uploaded PEM files, are checked with ``cryptography`` and are
stored with the rest of the credentials (encrypted); they are never shown again.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django import forms
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from protection.connectors.protocol import ConnectionTest
from protection.models import ConnectionKind, Host
from protection.services.hosts import NewHost, try_connection

AUTH_KINDS = [
    ("ntlm", "NTLM (user name and password)"),
    ("certificate", "Client certificate"),
    ("kerberos", "Kerberos (untested)"),
    ("credssp", "CredSSP (untested)"),
]
SCHEMES = [("https", "HTTPS (port 5986)"), ("http", "HTTP with message encryption (port 5985)")]
MAX_PEM_BYTES = 64 * 1024


def _read_pem(upload: UploadedFile | None, what: str) -> str:
    if upload is None:
        return ""
    if upload.size is not None and upload.size > MAX_PEM_BYTES:
        raise ValidationError(f"The {what} file is too large for a PEM file.")
    try:
        return upload.read().decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError(f"The {what} must be a PEM (text) file, not DER or PFX.") from None


def parse_certificates(text: str, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError:
        raise ValidationError(f"The {what} is not a PEM certificate (-----BEGIN CERTIFICATE-----).") from None
    return certificates


class ConnectionForm(forms.Form):
    """What is needed to reach a host: enough for "Test connection"."""

    connection_kind = forms.ChoiceField(
        label="Connection", choices=ConnectionKind.choices, initial=ConnectionKind.LAB
    )
    address = forms.CharField(
        label="Address",
        max_length=1024,
        help_text="Lab host: the host's folder on this server. Hyper-V: the host's DNS name or address.",
    )
    user_name = forms.CharField(
        label="User name",
        required=False,
        max_length=255,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    auth_kind = forms.ChoiceField(label="Authentication", choices=AUTH_KINDS, initial="ntlm")
    scheme = forms.ChoiceField(label="Protocol", choices=SCHEMES, initial="https", required=False)
    port = forms.IntegerField(
        label="Port",
        required=False,
        min_value=1,
        max_value=65535,
        help_text="Leave empty for WinRM's default (5986 for HTTPS, 5985 for HTTP).",
    )
    ca_certificate = forms.FileField(
        label="CA certificate (PEM)",
        required=False,
        help_text="The certificate of the CA that issued the host's WinRM certificate (or the "
        "self-signed certificate itself). Without it only public CAs are trusted (the bundle the WinRM "
        "client ships), so upload it for an enterprise or self-signed certificate.",
    )
    client_certificate = forms.FileField(label="Client certificate (PEM)", required=False)
    client_key = forms.FileField(
        label="Client certificate's private key (PEM, not encrypted)",
        required=False,
    )
    smb_user_name = forms.CharField(
        label="User name for the file shares",
        required=False,
        max_length=255,
        help_text="Only if reading disks over SMB needs another account (always with a client certificate).",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    smb_password = forms.CharField(
        label="Password for the file shares",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    smb_port = forms.IntegerField(
        label="Port for the file shares",
        required=False,
        min_value=1,
        max_value=65535,
        help_text="Leave empty for SMB's port 445.",
    )

    def clean_address(self) -> str:
        address = self.cleaned_data["address"].strip()
        if (
            self.data.get("connection_kind") == ConnectionKind.LAB
            and not PurePosixPath(address).is_absolute()
        ):
            raise ValidationError("A lab host's address is the absolute path of its folder on this server.")
        return address

    def clean_ca_certificate(self) -> str:
        text = _read_pem(self.cleaned_data.get("ca_certificate"), "CA certificate")
        if text:
            parse_certificates(text, "CA certificate")
        return text

    def clean_client_certificate(self) -> str:
        text = _read_pem(self.cleaned_data.get("client_certificate"), "client certificate")
        if text:
            parse_certificates(text, "client certificate")
        return text

    def clean_client_key(self) -> str:
        text = _read_pem(self.cleaned_data.get("client_key"), "private key")
        if not text:
            return ""
        try:
            serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except TypeError:
            raise ValidationError("The private key is encrypted; export it without a password.") from None
        except ValueError:
            raise ValidationError("The private key is not a PEM private key.") from None
        return text

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("connection_kind") == ConnectionKind.HYPERV:
            self._clean_hyperv(cleaned)
        return cleaned

    def _clean_hyperv(self, cleaned: dict[str, Any]) -> None:
        auth = cleaned.get("auth_kind")
        if auth == "certificate":
            if cleaned.get("scheme") == "http":
                self.add_error("scheme", "Certificate authentication works over HTTPS only.")
            if not cleaned.get("client_certificate"):
                self.add_error("client_certificate", "Upload the client certificate mapped on the host.")
            if not cleaned.get("client_key"):
                self.add_error("client_key", "Upload the client certificate's private key.")
            cert, key = cleaned.get("client_certificate"), cleaned.get("client_key")
            if cert and key and not _key_matches(cert, key):
                self.add_error("client_key", "This private key does not belong to the client certificate.")
            return
        if not cleaned.get("user_name"):
            self.add_error("user_name", "A Hyper-V host needs the user name to connect with.")
        if not cleaned.get("password"):
            self.add_error("password", "Enter the password (it is stored encrypted).")

    def credentials(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data.get("connection_kind") != ConnectionKind.HYPERV:
            if not data.get("user_name"):
                return {}
            return {
                "username": data["user_name"],
                "password": data.get("password", ""),
                "auth": data["auth_kind"],
            }
        certificate = data.get("auth_kind") == "certificate"
        values: dict[str, Any] = {
            "auth": data["auth_kind"],
            "scheme": data.get("scheme") or "https",
            "port": data.get("port"),
            "username": "" if certificate else data.get("user_name", ""),
            "password": "" if certificate else data.get("password", ""),
            "cert_pem": data.get("client_certificate", "") if certificate else "",
            "key_pem": data.get("client_key", "") if certificate else "",
            "ca_pem": data.get("ca_certificate", ""),
            "smb_username": data.get("smb_user_name", ""),
            "smb_password": data.get("smb_password", ""),
            "smb_port": data.get("smb_port"),
        }
        return {key: value for key, value in values.items() if value}

    def try_connection(self) -> ConnectionTest:
        return try_connection(
            self.cleaned_data["connection_kind"], self.cleaned_data["address"], self.credentials()
        )


class HostConnectionForm(ConnectionForm):
    """How to reach a host, saved only when the host answers with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection: ConnectionTest | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            # A host that does not answer now would only fail its inventory job later.
            self.connection = self.try_connection()
            if not self.connection.ok:
                raise ValidationError(f"The host did not answer: {self.connection.message}")
        return cleaned


class HostForm(HostConnectionForm):
    name = forms.CharField(label="Name", max_length=255, help_text="How the host is shown in this server.")

    field_order = [
        "name",
        "connection_kind",
        "address",
        "scheme",
        "port",
        "auth_kind",
        "user_name",
        "password",
        "client_certificate",
        "client_key",
        "ca_certificate",
        "smb_user_name",
        "smb_password",
        "smb_port",
    ]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Host.objects.filter(name__iexact=name).exists():
            raise ValidationError(f"A host named “{name}” is already registered.")
        return name

    def new_host(self) -> NewHost:
        return NewHost(
            name=self.cleaned_data["name"],
            connection_kind=self.cleaned_data["connection_kind"],
            address=self.cleaned_data["address"],
            credentials=self.credentials(),
        )


def _key_matches(cert_pem: str, key_pem: str) -> bool:
    certificate = x509.load_pem_x509_certificates(cert_pem.encode("ascii"))[0]
    key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    return bool(
        certificate.public_key().public_bytes(encoding, public)
        == key.public_key().public_bytes(encoding, public)
    )
