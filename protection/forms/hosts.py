"""Registering a host: where it is, how to reach it, and the credentials to use.

The password is never rendered back into a page (PasswordInput without
render_value), so a refused form does not echo it into the HTML.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from protection.connectors.protocol import ConnectionTest
from protection.models import ConnectionKind, Host
from protection.services.hosts import NewHost, try_connection

AUTH_KINDS = [
    ("ntlm", "NTLM"),
    ("kerberos", "Kerberos"),
    ("credssp", "CredSSP"),
    ("certificate", "Certificate"),
]


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

    def clean_address(self) -> str:
        address = self.cleaned_data["address"].strip()
        if (
            self.data.get("connection_kind") == ConnectionKind.LAB
            and not PurePosixPath(address).is_absolute()
        ):
            raise ValidationError("A lab host's address is the absolute path of its folder on this server.")
        return address

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("connection_kind") == ConnectionKind.HYPERV:
            if not cleaned.get("user_name"):
                self.add_error("user_name", "A Hyper-V host needs the user name to connect with.")
            if cleaned.get("auth_kind") != "certificate" and not cleaned.get("password"):
                self.add_error("password", "Enter the password (it is stored encrypted).")
        return cleaned

    def credentials(self) -> dict[str, str]:
        if not self.cleaned_data.get("user_name"):
            return {}
        return {
            "username": self.cleaned_data["user_name"],
            "password": self.cleaned_data.get("password", ""),
            "auth": self.cleaned_data["auth_kind"],
        }

    def try_connection(self) -> ConnectionTest:
        return try_connection(
            self.cleaned_data["connection_kind"], self.cleaned_data["address"], self.credentials()
        )


class HostForm(ConnectionForm):
    name = forms.CharField(label="Name", max_length=255, help_text="How the host is shown in this server.")

    field_order = ["name", "connection_kind", "address", "user_name", "password", "auth_kind"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection: ConnectionTest | None = None

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Host.objects.filter(name__iexact=name).exists():
            raise ValidationError(f"A host named “{name}” is already registered.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            # A host that does not answer now would only fail its inventory job later.
            self.connection = self.try_connection()
            if not self.connection.ok:
                raise ValidationError(f"The host did not answer: {self.connection.message}")
        return cleaned

    def new_host(self) -> NewHost:
        return NewHost(
            name=self.cleaned_data["name"],
            connection_kind=self.cleaned_data["connection_kind"],
            address=self.cleaned_data["address"],
            credentials=self.credentials(),
        )
