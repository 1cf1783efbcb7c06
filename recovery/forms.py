"""One form per wizard step. Each cleans to the dict stored in the draft."""

from __future__ import annotations

from typing import Any

from django import forms

from backupsite.core.credentials import encrypt_json
from protection.forms.fields import TimeOfDayField
from protection.models import Host
from recovery.models import RecoveryType
from recovery.notifications import parse_addresses
from recovery.services.browse import InvalidItem, parse_item
from recovery.services.destinations import (
    SMB_DEFAULT_PORT,
    DestinationInvalid,
    parse_unc,
    validate_server_folder,
)
from recovery.services.options import SAN_UNAVAILABLE, WEEKDAYS
from recovery.services.vmrestore import MAX_PATH

MAX_RATE_MBPS = 100_000.0


class FindForm(forms.Form):
    """The recovery page's name search. A CharField refuses NUL characters (which
    PostgreSQL cannot compare) with Django's own message instead of a database error."""

    q = forms.CharField(max_length=255, required=False)

    def query(self) -> str:
        return str(self.cleaned_data.get("q") or "") if self.is_valid() else ""

    def problem(self) -> str:
        return " ".join(str(message) for message in self.errors.get("q", []))


class WizardForm(forms.Form):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")  # labels read as plain text, also for screen readers
        super().__init__(*args, **kwargs)


class TypeForm(WizardForm):
    recovery_type = forms.ChoiceField(
        label="Recovery type", choices=RecoveryType.choices, widget=forms.RadioSelect
    )


class AlternateTargetForm(WizardForm):
    host = forms.ModelChoiceField(queryset=Host.objects.all(), label="Destination host", empty_label=None)
    path = forms.CharField(
        label="Folder on the host",
        max_length=1024,
        help_text="Where the VM's files go; Hyper-V needs paths shorter than 260 characters.",
    )

    def clean_path(self) -> str:
        path = str(self.cleaned_data["path"]).strip()
        if len(path) >= MAX_PATH:
            raise forms.ValidationError(
                f"The path has {len(path)} characters; Hyper-V cannot use paths of {MAX_PATH} "
                "characters or more. Choose a shorter folder."
            )
        if "\x00" in path:
            raise forms.ValidationError("The path is not valid.")
        return path

    def to_data(self) -> dict[str, Any]:
        return {"host": self.cleaned_data["host"].pk, "path": self.cleaned_data["path"]}


class ItemsForm(WizardForm):
    """Items are checkbox values (JSON); each is checked against the point's disks."""

    def __init__(self, *args: Any, disks: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.disks = disks
        self.items: list[dict[str, Any]] = []

    def clean(self) -> dict[str, Any]:
        raw = self.data.getlist("item") if hasattr(self.data, "getlist") else self.data.get("item", [])
        items: list[dict[str, Any]] = []
        for value in raw:
            try:
                item = parse_item(value, self.disks).as_dict()
            except InvalidItem as error:
                raise forms.ValidationError(str(error)) from None
            if item not in items:
                items.append(item)
        if not items:
            raise forms.ValidationError("Select at least one file, folder, volume or disk to recover.")
        if len(items) > 1000:
            raise forms.ValidationError("Select at most 1000 items; select their folder instead.")
        self.items = items
        return self.cleaned_data


class DestinationForm(WizardForm):
    kind = forms.ChoiceField(
        label="Copy to",
        choices=[("server", "A folder on this server"), ("smb", "A network share (SMB)")],
        widget=forms.RadioSelect,
        initial="server",
    )
    folder = forms.CharField(label="Folder on this server", required=False, max_length=1024)
    unc = forms.CharField(label=r"Share path (\\server\share\folder)", required=False, max_length=259)
    port = forms.IntegerField(
        label="SMB port", required=False, min_value=1, max_value=65535, initial=SMB_DEFAULT_PORT
    )
    username = forms.CharField(label="User name", required=False, max_length=256)
    password = forms.CharField(
        label="Password",
        required=False,
        max_length=256,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the password entered before.",
    )

    def __init__(self, *args: Any, previous: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.previous = previous or {}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("kind") == "server":
                validate_server_folder(data.get("folder") or "")
            elif data.get("kind") == "smb":
                parse_unc(data.get("unc") or "", data.get("port") or SMB_DEFAULT_PORT)
        except DestinationInvalid as error:
            field = "folder" if data.get("kind") == "server" else "unc"
            self.add_error(field, str(error))
        return data

    def to_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data["kind"] == "server":
            return {"kind": "server", "folder": data["folder"].strip()}
        password = data.get("password") or ""
        token = encrypt_json({"password": password}) if password else self.previous.get("password", "")
        return {
            "kind": "smb",
            "unc": data["unc"].strip(),
            "port": data.get("port") or SMB_DEFAULT_PORT,
            "username": data.get("username", ""),
            "password": token,
        }


class OptionsForm(WizardForm):
    throttle = forms.ChoiceField(
        label="Network bandwidth usage throttling",
        choices=[
            ("none", "Do not throttle"),
            ("rate", "Throttle to one rate"),
            ("schedule", "Different rates during and outside work hours"),
        ],
        widget=forms.RadioSelect,
        initial="none",
    )
    rate_mbps = forms.FloatField(
        label="Rate (Mbit/s)", required=False, min_value=0.01, max_value=MAX_RATE_MBPS
    )
    work_rate_mbps = forms.FloatField(
        label="Work hours rate (Mbit/s, empty = unthrottled)",
        required=False,
        min_value=0.01,
        max_value=MAX_RATE_MBPS,
    )
    off_rate_mbps = forms.FloatField(
        label="Non-work hours rate (Mbit/s, empty = unthrottled)",
        required=False,
        min_value=0.01,
        max_value=MAX_RATE_MBPS,
    )
    # "HH:MM" strings, read by the same parser as the throttle that uses them.
    work_start = TimeOfDayField(label="Work hours start", required=False, initial="08:00")
    work_end = TimeOfDayField(label="Work hours end", required=False, initial="18:00")
    work_days = forms.TypedMultipleChoiceField(
        label="Work days",
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        initial=[0, 1, 2, 3, 4],
    )
    san = forms.BooleanField(
        label="Enable SAN-based recovery using hardware snapshots",
        required=False,
        disabled=True,
        help_text=f"Unavailable: {SAN_UNAVAILABLE}.",
    )
    notify = forms.CharField(
        label="Send an email when the recovery completes to",
        required=False,
        max_length=2000,
        widget=forms.TextInput(attrs={"placeholder": "ops@example.com, backup@example.com"}),
    )

    def clean_notify(self) -> list[str]:
        try:
            return parse_addresses(self.cleaned_data.get("notify") or "")
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        mode = data.get("throttle")
        if mode == "rate" and not data.get("rate_mbps"):
            self.add_error("rate_mbps", "Enter the rate to throttle to.")
        if mode == "schedule":
            if not data.get("work_rate_mbps") and not data.get("off_rate_mbps"):
                self.add_error("work_rate_mbps", "Enter a rate for work hours, non-work hours, or both.")
            if not data.get("work_days"):
                self.add_error("work_days", "Choose the work days.")
            start, end = data.get("work_start"), data.get("work_end")
            if not start or not end:
                self.add_error("work_start", "Enter when work hours start and end.")
            elif start == end:
                self.add_error("work_end", "Work hours must end at another time than they start.")
        return data

    def to_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        options: dict[str, Any] = {"throttle": data["throttle"], "notify": data["notify"], "san": False}
        if data["throttle"] == "rate":
            options["rate_mbps"] = data["rate_mbps"]
        elif data["throttle"] == "schedule":
            options.update(
                work_rate_mbps=data.get("work_rate_mbps"),
                off_rate_mbps=data.get("off_rate_mbps"),
                work_start=data["work_start"],
                work_end=data["work_end"],
                work_days=sorted(data["work_days"]),
            )
        return options

    @staticmethod
    def initial_from(options: dict[str, Any]) -> dict[str, Any]:
        initial = dict(options)
        initial["notify"] = ", ".join(options.get("notify") or [])
        return initial
