"""The recovery wizard: one draft row, one URL, one step at a time.

GET shows the draft's current step; POST saves the step's input and moves
``next`` or ``back``. Input is kept even when it does not validate yet, so going
back never loses it; moving forward needs a valid step.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from backupsite.core.models import AuditEvent
from backupsite.core.permissions import Action, get_for_user, require
from backupsite.core.types import HtmxHttpRequest
from protection.connectors import Severity
from protection.models import Host, RecoveryPoint
from recovery.forms import AlternateTargetForm, DestinationForm, ItemsForm, OptionsForm, TypeForm
from recovery.models import RecoveryDraft, RecoveryType, WizardStep
from recovery.services import start
from recovery.services.browse import InvalidItem, ItemRef, PointUnavailable, disk_names, parse_item
from recovery.services.options import SAN_UNAVAILABLE, describe_throttle
from recovery.services.vmrestore import check_target, refusal, restore_target

SECRET_FIELDS = ("password", "csrfmiddlewaretoken")


def drafts_of(request: HttpRequest) -> QuerySet[RecoveryDraft]:
    """A user only ever sees their own drafts."""
    return RecoveryDraft.objects.owned_by(request.user).select_related(
        "point__vm__host", "point__datastore", "job"
    )


def own_draft(request: HttpRequest, pk: int) -> RecoveryDraft:
    # The role is checked first so a read-only user gets 403, not the 404 of someone else's draft.
    require(request, Action.RECOVER)
    return get_for_user(request, drafts_of(request), Action.RECOVER, pk=pk)


def point_unavailable(request: HtmxHttpRequest, point: RecoveryPoint, error: Exception) -> HttpResponse:
    """Back to the VM's recovery page, which says why this point cannot be used."""
    messages.error(request, str(error))
    url = reverse("recovery:vm", args=[point.vm_id])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@require_POST
def start_recovery(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    point = get_for_user(
        request, RecoveryPoint.objects.select_related("vm", "datastore"), Action.RECOVER, pk=pk
    )
    try:
        draft = start.create_draft(point, request.user)
    except start.RecoveryNotPossible as error:
        messages.error(request, str(error))
        return redirect("recovery:vm", point.vm_id)
    AuditEvent.record("recovery.draft.create", request=request, obj=point.vm, point=point.point_id)
    if request.htmx:
        return HttpResponseClientRedirect(draft.get_absolute_url())
    return redirect(draft)


@require_http_methods(["GET", "POST"])
def wizard(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    draft = own_draft(request, pk)
    if draft.job_id is not None:
        return redirect("recovery:status", draft.job_id)
    form: Any = None
    error = ""
    if draft.step not in draft.steps:
        # A step the draft's recovery type does not walk (a type changed elsewhere, an old
        # draft): start that type's steps again rather than fail on a form that is not there.
        draft.save_progress(step=draft.steps[0])
    try:
        if draft.point.unavailable_reason():
            raise PointUnavailable(draft.point.unavailable_reason())
        if request.method == "POST":
            if request.POST.get("step") == draft.step:
                form, error = _post_step(draft, request.POST, request.POST.get("action", "next"))
            if form is None and not error and not request.htmx:
                return redirect(draft)  # post/redirect/get for browsers without htmx
        context = _context(request, draft, form, error)
    except PointUnavailable as unavailable:
        return point_unavailable(request, draft.point, unavailable)
    if request.htmx and not request.htmx.boosted:
        return render(request, "recovery/wizard.html#wizard", context)
    return render(request, "recovery/wizard.html", context)


@require_POST
def submit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    draft = own_draft(request, pk)
    if draft.job_id is not None:
        return redirect("recovery:status", draft.job_id)
    try:
        job = start.submit(draft, request.user)
    except start.RecoveryNotPossible as error:
        RecoveryDraft.objects.filter(pk=draft.pk).update(step=error.step)
        messages.error(request, str(error))
        return redirect(draft)
    AuditEvent.record(
        "recovery.start",
        request=request,
        obj=job,
        vm=str(draft.point.vm),
        point=draft.point.point_id,
        type=job.parameters.get("type"),
        destination=job.parameters.get("destination_text", ""),
    )
    return redirect("recovery:status", job.pk)


@require_POST
def discard(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    draft = own_draft(request, pk)
    vm = draft.point.vm
    AuditEvent.record("recovery.draft.discard", request=request, obj=vm, draft=draft.pk)
    draft.discard()
    messages.info(request, "The recovery was discarded.")
    return redirect("recovery:vm", vm.pk)


# --------------------------------------------------------------------------- steps


def _raw(post: QueryDict) -> dict[str, list[str]]:
    return {key: values for key, values in post.lists() if key not in SECRET_FIELDS}


def _bound(draft: RecoveryDraft, step: str) -> QueryDict | None:
    """Input kept from an earlier visit that did not validate, to show it again."""
    raw = (draft.data.get("input") or {}).get(step)
    if not raw:
        return None
    data = QueryDict(mutable=True)
    for key, values in raw.items():
        data.setlist(key, values)
    return data


def _move(draft: RecoveryDraft, action: str) -> None:
    steps = list(draft.steps)
    index = steps.index(draft.step) if draft.step in steps else 0
    index = index + 1 if action == "next" else index - 1
    draft.step = steps[max(0, min(index, len(steps) - 1))]


def _save(draft: RecoveryDraft, step: str, section: str, value: Any) -> None:
    inputs = dict(draft.data.get("input") or {})
    inputs.pop(step, None)
    draft.data[section] = value
    draft.data["input"] = inputs


def _keep_input(draft: RecoveryDraft, step: str, post: QueryDict) -> None:
    inputs = dict(draft.data.get("input") or {})
    inputs[step] = _raw(post)
    draft.data["input"] = inputs


def _step_form(draft: RecoveryDraft, data: QueryDict | None) -> Any:
    step, kind = draft.step, draft.recovery_type
    if step == WizardStep.TYPE:
        return TypeForm(data, initial={"recovery_type": kind or RecoveryType.ORIGINAL})
    if step == WizardStep.TARGET and kind == RecoveryType.ALTERNATE:
        return AlternateTargetForm(data, initial=draft.section("target"))
    if step == WizardStep.TARGET and kind == RecoveryType.ITEMS:
        previous = draft.section("destination")
        return DestinationForm(data, initial=previous, previous=previous)
    if step == WizardStep.ITEMS:
        return ItemsForm(data, disks=disk_names(draft.point))
    if step == WizardStep.OPTIONS:
        return OptionsForm(data, initial=OptionsForm.initial_from(draft.section("options")))
    return None


def _post_step(draft: RecoveryDraft, post: QueryDict, action: str) -> tuple[Any, str]:
    """Apply one POST to the draft. Returns (form to show with errors, error text)."""
    step = draft.step
    if action == "alternate" and step == WizardStep.TARGET:
        # The original host is gone: offer the same point as a new VM elsewhere.
        draft.save_progress(type=RecoveryType.ALTERNATE)
        return None, ""
    form = _step_form(draft, post)
    valid = form is None or form.is_valid()
    if valid:
        error = _apply(draft, step, form)
        if error and action == "next":
            draft.save_progress()
            return None, error
        _move(draft, action)
        draft.save_progress()
        return None, ""
    if action == "back":
        _keep_input(draft, step, post)
        _move(draft, action)
        draft.save_progress()
        return None, ""
    return form, ""


def _apply(draft: RecoveryDraft, step: str, form: Any) -> str:
    """Store a valid step's data; returns why the wizard cannot go on, or ""."""
    kind = draft.recovery_type
    if step == WizardStep.TYPE:
        chosen = form.cleaned_data["recovery_type"]
        if chosen != kind:
            draft.data.pop("target", None)
        _save(draft, step, "type", chosen)
        return ""
    if step == WizardStep.TARGET and kind in (RecoveryType.ORIGINAL, RecoveryType.ALTERNATE):
        target = form.to_data() if form is not None else {}
        _save(draft, step, "target", target)
        where = restore_target(draft.point.vm, kind, target)
        findings = check_target(draft.point.vm, draft.point, where)
        if any(f.severity == Severity.ERROR for f in findings):
            return refusal(findings, kind)
        return ""
    if step == WizardStep.TARGET:
        _save(draft, step, "destination", form.to_data())
    elif step == WizardStep.ITEMS:
        _save(draft, step, "items", form.items)
    elif step == WizardStep.OPTIONS:
        _save(draft, step, "options", form.to_data())
    return ""


# --------------------------------------------------------------------------- rendering


def _items(draft: RecoveryDraft) -> list[ItemRef]:
    disks = disk_names(draft.point)
    refs = []
    for raw in draft.data.get("items") or []:
        try:
            refs.append(parse_item(raw, disks))
        except InvalidItem:
            continue  # the summary re-checks and says what is wrong
    return refs


def _context(request: HttpRequest, draft: RecoveryDraft, form: Any, error: str) -> dict[str, Any]:
    step = draft.step
    if form is None:
        form = _step_form(draft, _bound(draft, step))
        if form is not None and form.is_bound:
            form.is_valid()  # show why the kept input was not accepted
    steps = [(name, WizardStep(name).label) for name in draft.steps]
    context: dict[str, Any] = {
        "draft": draft,
        "point": draft.point,
        "vm": draft.point.vm,
        "step": step,
        "steps": steps,
        "step_number": [name for name, _ in steps].index(step) + 1 if step in draft.steps else 1,
        "form": form,
        "error": error,
        "recovery_type": draft.recovery_type,
        "recovery_type_label": RecoveryType(draft.recovery_type).label if draft.recovery_type else "",
        "san_unavailable": SAN_UNAVAILABLE,
    }
    if step == WizardStep.TARGET and draft.recovery_type == RecoveryType.ORIGINAL:
        where = restore_target(draft.point.vm, RecoveryType.ORIGINAL, {})
        findings = check_target(draft.point.vm, draft.point, where)
        context["findings"] = findings
        context["blocked"] = any(f.severity == Severity.ERROR for f in findings)
        context["where"] = where.describe()
    if step in (WizardStep.ITEMS, WizardStep.SUMMARY):
        context["selected"] = _items(draft)
    if step == WizardStep.ITEMS:
        context["browse_url"] = reverse("recovery:browse", args=[draft.pk])
    if step == WizardStep.SUMMARY:
        context |= _summary(draft)
    return context


def _summary(draft: RecoveryDraft) -> dict[str, Any]:
    kind = draft.recovery_type
    options = draft.section("options")
    summary: dict[str, Any] = {
        "throttle_text": describe_throttle(options),
        "notify": options.get("notify") or [],
    }
    if kind == RecoveryType.ORIGINAL:
        summary["destination_text"] = f"Original instance on {draft.point.vm.host}"
    elif kind == RecoveryType.ALTERNATE:
        target = draft.section("target")
        host = Host.objects.filter(pk=int(target.get("host") or 0)).first()
        summary["destination_text"] = f"{target.get('path', '')} on {host or '(missing host)'}"
    else:
        destination = draft.section("destination")
        if destination.get("kind") == "smb":
            who = f" as {destination['username']}" if destination.get("username") else ""
            summary["destination_text"] = f"{destination.get('unc', '')}{who}"
        else:
            summary["destination_text"] = destination.get("folder", "")
    try:
        start.check_draft(draft)
        summary["problem"] = ""
    except start.RecoveryNotPossible as problem:
        summary["problem"] = str(problem)
    return summary
