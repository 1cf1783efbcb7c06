"""The create / modify protection group wizard: one URL and one view per step.

GET shows the step (full page, or the ``#wizard`` partial for htmx). POST saves the
step's input into the draft whatever it is, so nothing typed is ever lost, then
moves back freely, forward only when the step is valid, or shows the step again
with its errors (or, without a ``nav`` value, with a fresh estimate).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from backupsite.core.permissions import Action, get_for_user
from backupsite.core.types import HtmxHttpRequest
from protection.forms.fields import describe_schedule
from protection.forms.wizard import (
    STEP_BY_KEY,
    STEPS,
    Step,
    WizardForm,
    clean_draft,
    current_member_ids,
    step_form,
)
from protection.models import (
    SYNC_FREQUENCY_CHOICES,
    ProtectionGroupDraft,
    ReplicaCreationMethod,
    VirtualMachine,
)
from protection.services import groups as group_service

STEP_METHODS = ["GET", "POST"]
SYNC_LABELS: dict[int | None, str] = dict(SYNC_FREQUENCY_CHOICES)


def _draft(request: HttpRequest, pk: int) -> ProtectionGroupDraft:
    # A draft exists only for the user who started it: anyone else gets 404.
    drafts = ProtectionGroupDraft.objects.owned_by(request.user).select_related("group__datastore")
    return get_for_user(request, drafts, Action.PROTECT, pk=pk)


def _is_partial(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.boosted


def _render(
    request: HtmxHttpRequest, draft: ProtectionGroupDraft, step: Step, **context: Any
) -> HttpResponse:
    index = STEPS.index(step)
    context.update(
        draft=draft,
        step=step,
        steps=STEPS,
        previous_step=STEPS[index - 1] if index > 0 else None,
        next_step=STEPS[index + 1] if index + 1 < len(STEPS) else None,
        partial=_is_partial(request),
    )
    template = "protection/wizard.html#wizard" if _is_partial(request) else "protection/wizard.html"
    return render(request, template, context)


def _destination(step: Step, nav: str) -> Step | None:
    if nav == "back":
        return STEPS[max(STEPS.index(step) - 1, 0)]
    if nav == "next":
        return STEPS[STEPS.index(step) + 1]
    return STEP_BY_KEY.get(nav)


def _step(request: HtmxHttpRequest, pk: int, key: str) -> HttpResponse:
    draft = _draft(request, pk)
    step = STEP_BY_KEY[key]
    assert step.form_class is not None
    form: WizardForm
    if request.method == "POST":
        form = step_form(step, draft, request.POST)
        draft.save_progress(step.key, **{step.key: step.form_class.raw_input(request.POST)})
        destination = _destination(step, request.POST.get("nav", ""))
        if destination is not None and (destination.number <= step.number or form.is_valid()):
            return redirect(destination.url_name, draft.pk)
    else:
        form = step_form(step, draft)
    return _render(request, draft, step, form=form)


@require_http_methods(STEP_METHODS)
def wizard_members(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "members")


@require_http_methods(STEP_METHODS)
def wizard_method(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "method")


@require_http_methods(STEP_METHODS)
def wizard_goals(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "goals")


@require_http_methods(STEP_METHODS)
def wizard_allocation(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "allocation")


@require_http_methods(STEP_METHODS)
def wizard_replica(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "replica")


@require_http_methods(STEP_METHODS)
def wizard_consistency(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _step(request, pk, "consistency")


@require_http_methods(STEP_METHODS)
def wizard_summary(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Everything chosen; POST creates or updates the group."""
    draft = _draft(request, pk)
    if request.method == "POST":
        modifying = draft.group is not None
        try:
            policy = clean_draft(draft)
            group = group_service.apply_draft(draft, policy, request.user, request=request)
        except group_service.DraftIncomplete as error:
            messages.error(request, str(error))
            return redirect(STEP_BY_KEY[error.step].url_name, draft.pk)
        except group_service.ProtectionError as error:
            messages.error(request, str(error))
            return redirect("protection:wizard-summary", draft.pk)
        messages.success(request, f"Protection group {group} {'updated' if modifying else 'created'}.")
        return redirect(group)
    try:
        policy = clean_draft(draft)
    except group_service.DraftIncomplete as error:
        problem = {"problem": error, "problem_step": STEP_BY_KEY[error.step]}
        return _render(request, draft, STEP_BY_KEY["summary"], **problem)
    current = current_member_ids(draft)
    context = {
        "policy": policy,
        "machines": VirtualMachine.objects.filter(pk__in=policy.vm_ids).select_related("host"),
        "added": set(policy.vm_ids) - current,
        "removed": VirtualMachine.objects.filter(pk__in=current - set(policy.vm_ids)),
        "allocation": group_service.estimate_allocation(
            policy.vm_ids,
            policy.retention_days,
            policy.daily_churn_percent,
            policy.datastore,
            group=draft.group,
        ),
        "recovery_point_schedule": describe_schedule(policy.recovery_point_times, policy.recovery_point_days),
        "express_full_schedule": describe_schedule(policy.express_full_times, policy.express_full_days),
        "sync_label": SYNC_LABELS.get(policy.sync_frequency_minutes, "Just before a recovery point"),
        "replica_label": ReplicaCreationMethod(policy.replica_creation_method).label,
    }
    return _render(request, draft, STEP_BY_KEY["summary"], **context)


@require_POST
def wizard_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    draft = _draft(request, pk)
    group = draft.group
    draft.discard()
    messages.info(request, "The wizard was cancelled; nothing was changed.")
    return redirect(group if group is not None else "protection:overview")
