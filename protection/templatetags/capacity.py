"""``{% datastore_capacity datastore %}``: the capacity section the storage app's
datastore page includes. The storage layer knows nothing of protection groups, so
the section renders itself from here instead of from the storage view's context."""

from __future__ import annotations

from typing import Any

from django import template

from protection.services.capacity import datastore_capacity as capacity_of
from storage.models import Datastore

register = template.Library()


@register.inclusion_tag("protection/capacity/_datastore.html")
def datastore_capacity(datastore: Datastore) -> dict[str, Any]:
    return {"c": capacity_of(datastore)}
