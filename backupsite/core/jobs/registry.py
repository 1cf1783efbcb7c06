"""Job kind -> handler. Handlers register themselves with :func:`handles`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.utils.module_loading import autodiscover_modules

from backupsite.core.jobs.context import JobContext

Handler = Callable[[JobContext], dict[str, Any] | None]
# Called with a job the reaper failed because its worker was lost: the handler never got to
# clean up, so the feature that owns the kind does (e.g. a replica left half-written).
AbandonedHook = Callable[[Any], None]
_handlers: dict[str, Handler] = {}
_abandoned: dict[str, list[AbandonedHook]] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def decorate(function: Handler) -> Handler:
        _handlers[kind] = function
        return function

    return decorate


def when_abandoned(*kinds: str) -> Callable[[AbandonedHook], AbandonedHook]:
    """Register what to do when a job of one of ``kinds`` was lost with its worker."""

    def decorate(function: AbandonedHook) -> AbandonedHook:
        for kind in kinds:
            _abandoned.setdefault(kind, []).append(function)
        return function

    return decorate


def abandoned_hooks(kind: str) -> list[AbandonedHook]:
    load_handlers()
    return list(_abandoned.get(kind, []))


def load_handlers() -> None:
    """Import every installed app's ``jobs`` module, whose handlers register themselves.

    Idempotent (modules are imported once). Done on first use rather than at start-up so
    that web processes and management commands do not load the backup machinery.
    """
    autodiscover_modules("jobs")


def get_handler(kind: str) -> Handler | None:
    load_handlers()
    return _handlers.get(kind)


@contextmanager
def handler_override(kind: str, function: Handler) -> Iterator[None]:
    """Swap a handler for the duration of a test."""
    # Loaded first, so the real handler is what comes back afterwards.
    load_handlers()
    previous = _handlers.get(kind)
    _handlers[kind] = function
    try:
        yield
    finally:
        if previous is None:
            _handlers.pop(kind, None)
        else:
            _handlers[kind] = previous
