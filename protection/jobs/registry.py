"""Job kind -> handler. Handlers register themselves with :func:`handles`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from protection.jobs.context import JobContext

Handler = Callable[[JobContext], dict[str, Any] | None]
_handlers: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def decorate(function: Handler) -> Handler:
        _handlers[kind] = function
        return function

    return decorate


def load_handlers() -> None:
    """Import the modules whose handlers register themselves (idempotent)."""
    from protection.jobs import handlers  # noqa: F401
    from recovery import jobs  # noqa: F401


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
