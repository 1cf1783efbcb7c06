"""Pytest fixtures for the WS-Management endpoint; import them into a conftest that needs them:

from tests.wsman.fixtures import wsman_endpoint  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.wsman.server import WSManEndpoint
from tests.wsman.shell import Handler

EndpointFactory = Callable[..., WSManEndpoint]


@pytest.fixture
def wsman_endpoint() -> Iterator[EndpointFactory]:
    """A factory: `wsman_endpoint(handler, tls=True, users={...}, client_cert_users=None)`.

    Returns a started endpoint; every endpoint made is stopped when the test ends.
    """
    started: list[WSManEndpoint] = []

    def make(
        handler: Handler,
        *,
        tls: bool = True,
        users: dict[str, str] | None = None,
        client_cert_users: dict[str, str] | None = None,
    ) -> WSManEndpoint:
        endpoint = WSManEndpoint(handler, tls=tls, users=users or {}, client_cert_users=client_cert_users)
        started.append(endpoint.start())
        return endpoint

    yield make
    for endpoint in started:
        endpoint.stop()
