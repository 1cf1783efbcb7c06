"""SOAP envelopes of WS-Management: parse a request, build replies and faults the way Windows does.

pywinrm finds reply elements by tag suffix or attribute (`Name="ShellId"`, `...CommandId`,
`State` ending `CommandState/Done`, `RelatesTo`) and parses faults with namespace-exact
paths (`soapenv:Body/soapenv:Fault/soapenv:Detail/wsmanfault:WSManFault[@Code]`), so the
namespaces below must be the real ones.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

SOAP = "http://www.w3.org/2003/05/soap-envelope"
ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
WSMAN_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"

ACTION_CREATE = f"{TRANSFER}/Create"
ACTION_DELETE = f"{TRANSFER}/Delete"
ACTION_COMMAND = f"{SHELL}/Command"
ACTION_SEND = f"{SHELL}/Send"
ACTION_RECEIVE = f"{SHELL}/Receive"
ACTION_SIGNAL = f"{SHELL}/Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
RESOURCE_CMD = f"{SHELL}/cmd"

# WSManFault Code values as Windows sends them.
CODE_ACCESS_DENIED = 5  # ERROR_ACCESS_DENIED
CODE_OPERATION_TIMEOUT = 2150858793  # 0x80338029, pywinrm retries Receive on it silently
CODE_SHELL_NOT_FOUND = 2150858843  # 0x8033805B, the shell or command id is unknown
# The next two are what this endpoint uses for requests Windows would refuse as well; the
# numbers were not checked against a real host (nothing in pywinrm depends on them).
CODE_ACTION_NOT_SUPPORTED = 2150858754  # 0x80338002
CODE_INVALID_XML = 2150858778  # 0x8033801A

_NAMESPACES = (
    f'xmlns:s="{SOAP}" xmlns:a="{ADDRESSING}" xmlns:x="{TRANSFER}" xmlns:w="{WSMAN}" '
    f'xmlns:rsp="{SHELL}" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
)


class MalformedRequest(ValueError):
    """The body is not a WS-Management envelope this endpoint can read."""


@dataclass
class SoapRequest:
    action: str
    message_id: str
    resource_uri: str
    operation_timeout: float | None
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None

    @property
    def shell_id(self) -> str | None:
        return self.selectors.get("ShellId")


def _q(namespace: str, tag: str) -> str:
    return f"{{{namespace}}}{tag}"


def parse_duration(text: str) -> float:
    """`PT20S`, `PT1.5S`, `PT2M` (xs:duration as WS-Management uses it) -> seconds."""
    match = re.fullmatch(r"P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip())
    if not match:
        raise MalformedRequest(f"bad OperationTimeout {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(data: bytes) -> SoapRequest:
    try:
        # Test code on a loopback port reading what pywinrm sends; no untrusted XML here.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as error:
        raise MalformedRequest(f"not XML: {error}") from error
    if root.tag != _q(SOAP, "Envelope"):
        raise MalformedRequest(f"not a SOAP envelope: {root.tag}")
    header = root.find(_q(SOAP, "Header"))
    if header is None:
        raise MalformedRequest("no SOAP header")

    def text(namespace: str, tag: str) -> str:
        element = header.find(_q(namespace, tag))
        return (element.text or "").strip() if element is not None else ""

    action = text(ADDRESSING, "Action")
    message_id = text(ADDRESSING, "MessageID")
    if not action or not message_id:
        raise MalformedRequest("Action and MessageID are required")
    timeout_text = text(WSMAN, "OperationTimeout")
    request = SoapRequest(
        action=action,
        message_id=message_id,
        resource_uri=text(WSMAN, "ResourceURI"),
        operation_timeout=parse_duration(timeout_text) if timeout_text else None,
        body=root.find(_q(SOAP, "Body")),
    )
    for selector in header.iter(_q(WSMAN, "Selector")):
        request.selectors[selector.get("Name", "")] = (selector.text or "").strip()
    for option in header.iter(_q(WSMAN, "Option")):
        request.options[option.get("Name", "")] = (option.text or "").strip()
    return request


def find(body: ET.Element | None, *path: str) -> ET.Element | None:
    """The element at `path` (tags in the shell namespace) under the body, or None."""
    element = body
    for tag in path:
        if element is None:
            return None
        element = element.find(_q(SHELL, tag))
    return element


def find_all(body: ET.Element | None, *path: str) -> list[ET.Element]:
    if body is None or not path:
        return []
    parent = find(body, *path[:-1]) if len(path) > 1 else body
    return parent.findall(_q(SHELL, path[-1])) if parent is not None else []


def envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xml:lang="en-US" {_NAMESPACES}>'
        "<s:Header>"
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:To>{ADDRESSING}/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body>"
        "</s:Envelope>"
    ).encode()


def fault(
    relates_to: str,
    *,
    code: str,
    subcode: str,
    reason: str,
    wsman_code: int,
) -> bytes:
    """A SOAP 1.2 fault with Windows' WSManFault detail (`code` is s:Sender or s:Receiver)."""
    body = (
        "<s:Fault>"
        f"<s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(reason)} </s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{WSMAN_FAULT}" Code="{wsman_code}" Machine="127.0.0.1">'
        f"<f:Message>{escape(reason)} </f:Message></f:WSManFault>"
        "</s:Detail>"
        "</s:Fault>"
    )
    return envelope(ACTION_FAULT, relates_to, body)
