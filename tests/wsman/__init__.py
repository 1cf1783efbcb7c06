"""A WS-Management endpoint for tests: pywinrm's real requests, Windows itself emulated.

from tests.wsman import CommandReply, CommandRequest, WSManEndpoint

with WSManEndpoint(handler, tls=True, users={"HOST\\\\backup": "secret"}) as endpoint:
    ...  # pywinrm against endpoint.url with ca_trust_path=endpoint.ca_file
"""

from tests.wsman.server import Exchange, WSManEndpoint
from tests.wsman.shell import CommandReply, CommandRequest, Handler

__all__ = ["CommandReply", "CommandRequest", "Exchange", "Handler", "WSManEndpoint"]
