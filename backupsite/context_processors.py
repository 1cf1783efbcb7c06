from typing import Any

from django.http import HttpRequest

from backupsite.core.jobs.workers import workers_status
from backupsite.core.permissions import Action, user_can, user_roles


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_roles": sorted(role.value for role in user_roles(user)),
        "can_protect": user_can(user, Action.PROTECT),
        "can_recover": user_can(user, Action.RECOVER),
        "can_manage": user_can(user, Action.MANAGE),
        "workers": workers_status(),
    }
