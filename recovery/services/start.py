"""Start a recovery: a draft for the wizard, then one Job when the user clicks Recover.

The draft is checked again as a whole at submit time: the wizard validated each
step when it was entered, but a host can vanish or a datastore be pruned while
the summary sits open in a browser tab.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from backupsite.core.credentials import decrypt_json
from backupsite.core.models import Job, JobKind
from protection.models import RecoveryPoint
from recovery.models import RecoveryDraft, RecoveryType, WizardStep
from recovery.services.browse import InvalidItem, PointUnavailable, disk_names, parse_item
from recovery.services.destinations import DestinationInvalid, parse_unc, validate_server_folder
from recovery.services.vmrestore import check_target, refusal, restore_target


class RecoveryNotPossible(ValueError):
    """The draft cannot be submitted; the message says which step to fix and how."""

    def __init__(self, message: str, step: str) -> None:
        super().__init__(message)
        self.step = step


def create_draft(point: RecoveryPoint, user: Any) -> RecoveryDraft:
    reason = point.unavailable_reason()
    if reason:
        raise RecoveryNotPossible(reason, WizardStep.REVIEW)
    return RecoveryDraft.start(user, point=point, step=WizardStep.REVIEW)


def check_draft(draft: RecoveryDraft) -> dict[str, Any]:
    """The job parameters the draft describes; RecoveryNotPossible names what is wrong."""
    point = draft.point
    reason = point.unavailable_reason()
    if reason:
        raise RecoveryNotPossible(reason, WizardStep.REVIEW)
    kind = draft.recovery_type
    if kind not in RecoveryType.values:
        raise RecoveryNotPossible("Choose a recovery type.", WizardStep.TYPE)
    parameters: dict[str, Any] = {
        "point": point.pk,
        "point_id": point.point_id,
        "type": kind,
        "options": draft.section("options"),
        "draft": draft.pk,
    }
    if kind in (RecoveryType.ORIGINAL, RecoveryType.ALTERNATE):
        target = draft.section("target")
        if kind == RecoveryType.ALTERNATE and not (target.get("host") and target.get("path")):
            raise RecoveryNotPossible("Choose the destination host and folder.", WizardStep.TARGET)
        try:
            where = restore_target(point.vm, kind, target)
        except Exception as error:
            raise RecoveryNotPossible(str(error), WizardStep.TARGET) from error
        findings = check_target(point.vm, point, where)
        if any(f.severity == "error" for f in findings):
            raise RecoveryNotPossible(refusal(findings, kind), WizardStep.TARGET)
        parameters["target"] = {"host": where.host.pk, "path": where.target.path, "mode": where.target.mode}
        parameters["destination_text"] = where.describe()
        return parameters

    try:
        disks = disk_names(point)
    except PointUnavailable as error:
        raise RecoveryNotPossible(str(error), WizardStep.REVIEW) from error
    raw_items = draft.data.get("items") or []
    if not raw_items:
        raise RecoveryNotPossible("Select at least one item to recover.", WizardStep.ITEMS)
    try:
        items = [parse_item(item, disks) for item in raw_items]
    except InvalidItem as error:
        raise RecoveryNotPossible(str(error), WizardStep.ITEMS) from error
    parameters["items"] = [item.as_dict() for item in items]
    destination = draft.section("destination")
    try:
        if destination.get("kind") == "server":
            validate_server_folder(str(destination.get("folder", "")))
            parameters["destination_text"] = str(destination["folder"])
        elif destination.get("kind") == "smb":
            location = parse_unc(str(destination.get("unc", "")), int(destination.get("port") or 445))
            if destination.get("password"):
                decrypt_json(destination["password"])  # fails early when the key changed
            parameters["destination_text"] = location.unc
        else:
            raise DestinationInvalid("Choose where to copy the items.")
    except (DestinationInvalid, ValueError) as error:
        raise RecoveryNotPossible(str(error), WizardStep.TARGET) from error
    parameters["destination"] = destination
    return parameters


def submit(draft: RecoveryDraft, user: Any) -> Job:
    """Create the recovery job; it runs once this transaction commits."""
    parameters = check_draft(draft)
    target_host = None
    if parameters["type"] == RecoveryType.ALTERNATE:
        target_host = parameters["target"]["host"]
    elif parameters["type"] == RecoveryType.ORIGINAL:
        target_host = draft.point.vm.host_id
    with transaction.atomic():
        job = Job.submit(
            JobKind.RECOVERY,
            vm=draft.point.vm,
            host_id=target_host,
            datastore=draft.point.datastore,
            parameters=parameters,
            requested_by=user,
        )
        RecoveryDraft.objects.filter(pk=draft.pk).update(job=job, step=WizardStep.SUMMARY)
        draft.job = job
    return job
