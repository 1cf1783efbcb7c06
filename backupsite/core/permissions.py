"""Roles and the one permission-scoped lookup every view goes through.

Four roles, as Django groups created by a migration:
- Administrator: everything, including hosts, storage and users.
- Backup Operator: protection (groups, backups, consistency checks) and monitoring.
- Recovery Operator: recovery and monitoring.
- Read-only Operator: sees everything, changes nothing.

A signed-in user with none of these roles sees nothing (404 everywhere), so an
account created by mistake reveals no VM names.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404


class Role(StrEnum):
    ADMINISTRATOR = "Administrator"
    BACKUP_OPERATOR = "Backup Operator"
    RECOVERY_OPERATOR = "Recovery Operator"
    READ_ONLY = "Read-only Operator"


class Action(StrEnum):
    VIEW = "view"
    PROTECT = "protect"  # change protection: groups, backups, checks, job cancel
    RECOVER = "recover"
    MANAGE = "manage"  # hosts, storage, users


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.ADMINISTRATOR: frozenset(Action),
    Role.BACKUP_OPERATOR: frozenset({Action.VIEW, Action.PROTECT}),
    Role.RECOVERY_OPERATOR: frozenset({Action.VIEW, Action.RECOVER}),
    Role.READ_ONLY: frozenset({Action.VIEW}),
}


def user_roles(user: Any) -> set[Role]:
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return {Role.ADMINISTRATOR}
    cached = getattr(user, "_backupsite_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = {role for role in Role if role.value in names}
        user._backupsite_roles = cached
    return set(cached)


def user_can(user: Any, action: Action) -> bool:
    return any(action in ROLE_ACTIONS[role] for role in user_roles(user))


def require(request: HttpRequest, action: Action) -> None:
    """Outsiders get 404 (nothing exists for them); viewers without the right get 403."""
    if not user_can(request.user, Action.VIEW):
        raise Http404("No such page")
    if not user_can(request.user, action):
        raise PermissionDenied(f"Your role does not allow this ({action.value}).")


def visible[Q: QuerySet[Any]](request: HttpRequest, queryset: Q) -> Q:
    """The part of ``queryset`` the user may see."""
    return queryset if user_can(request.user, Action.VIEW) else queryset.none()


def get_for_user[M: Model](
    request: HttpRequest, queryset: QuerySet[M], action: Action = Action.VIEW, **lookup: Any
) -> M:
    """Look an object up as the user: 404 when they may not see it, 403 when they
    may see it but not perform ``action`` on it."""
    obj = get_object_or_404(visible(request, queryset), **lookup)
    if action is not Action.VIEW and not user_can(request.user, action):
        raise PermissionDenied(f"Your role does not allow this ({action.value}).")
    return obj
