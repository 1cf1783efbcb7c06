"""Small forms behind the action buttons of the VM and group pages."""

from __future__ import annotations

from django import forms

from protection.services.groups import VM_JOB_KINDS


class VMJobForm(forms.Form):
    kind = forms.ChoiceField(choices=[(kind.value, kind.label) for kind in VM_JOB_KINDS])


class StopProtectionForm(forms.Form):
    # An explicit choice rather than a checkbox: an unticked box must never mean "delete".
    recovery_points = forms.ChoiceField(
        label="Recovery points",
        choices=[("keep", "Keep the recovery points"), ("delete", "Delete the recovery points")],
        initial="keep",
        widget=forms.RadioSelect,
    )

    @property
    def keep_data(self) -> bool:
        return bool(self.cleaned_data["recovery_points"] == "keep")
