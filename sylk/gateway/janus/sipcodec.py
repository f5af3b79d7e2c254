"""The SIP plugin's language: the requests the gateway sends it, and strict, bounded decoders for its events.

The Janus-side twin of sylkrtc/dialects.py: what janus/lines.py and janus/sipcall.py send is built here, and what
they read from an event goes through a decoder here.

Everything in a SIP-plugin event comes from the far end of some SIP dialog (a URI, a display name, a reason phrase,
an INFO or NOTIFY body, an SDP, headers) and is as untrusted as a browser's request. Each decoder here accepts only
the type and shape it expects, within a length bound, and returns None (or an empty value) for anything else, so
the handlers in janus/lines.py and janus/sipcall.py never see a value they did not ask for. Nothing here raises on any JSON value, and
nothing recurses or backtracks in proportion to its input.
"""

from __future__ import annotations

import re
from typing import Any

from sylk.gateway.config import SIPProxy
from sylk.gateway.sip import Originator, Registration, SIPIdentity

SIP_PLUGIN = "janus.plugin.sip"
SRTP = {"no": None, "optional": "sdes_optional", "mandatory": "sdes_mandatory"}  # `srtp` of a `call`
# Events that only answer a request of ours (its Deferred has them) or that the gateway has no use for.
ANSWERS_ONLY = frozenset({"registering", "unregistering", "accepting", "declining", "updating", "updated", "holding",
                          "resuming", "hangingup", "transferring", "infosent", "messagesent", "dtmfsent", "reset"})
# Events about a call; without a call on the line they are strays of one that ended.
CALL_EVENTS = frozenset({"calling", "proceeding", "ringing", "progress", "accepted", "updatingcall", "transfer",
                         "notify", "info", "dtmf", "hangup"})

# Bounds on what is taken from an event; longer values are refused (or, for free text, cut).
MAX_URI = 512
MAX_DISPLAY_NAME = 128
MAX_REASON = 128
MAX_CALL_ID = 256
MAX_SDP = 128 * 1024
MAX_CONTENT = 64 * 1024  # a MESSAGE's content; bigger ones are dropped
MAX_CONTENT_TYPE = 128
MAX_HEADERS = 32
MAX_HEADER_VALUE = 1024
MAX_DTMF_BODY = 1024  # an INFO carrying DTMF is a few dozen bytes

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]{1,64}")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}(?:\s*;[^\x00-\x1f\x7f]*)?")
_TONE = re.compile(r"[0-9*#A-Da-d]")
_DTMF_FIELD = re.compile(r"[ \t]*([A-Za-z]{1,16})[ \t]*=[ \t]*([^\s]{1,16})[ \t]*")
_SIPFRAG_STATUS = re.compile(r"[ \t]*SIP/2\.0[ \t]+([1-6][0-9]{2})(?:[ \t]+([^\r\n]{0,128}))?")


def text(value: Any, limit: int) -> str | None:
    """A string of at most `limit` characters, or None."""
    return value if isinstance(value, str) and len(value) <= limit else None


def phrase(value: Any, limit: int = MAX_REASON) -> str:
    """Free text for people (a reason phrase, a display name): control characters dropped, cut at `limit`."""
    if not isinstance(value, str):
        return ""
    return _CONTROL.sub("", value[:limit * 4])[:limit].strip()


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def status_code(value: Any) -> int | None:
    """A SIP status code, 100-999 (Sofia makes up 9xx codes of its own)."""
    code = integer(value)
    return code if code is not None and 100 <= code <= 999 else None


def call_id(value: Any) -> str | None:
    value = text(value, MAX_CALL_ID)
    return value if value and not _CONTROL.search(value) else None


def sdp(jsep: Any, kind: str | None = None) -> str | None:
    """The SDP of a jsep (of type `kind`, when given), if it is one."""
    if not isinstance(jsep, dict) or (kind is not None and jsep.get("type") != kind):
        return None
    value = text(jsep.get("sdp"), MAX_SDP)
    return value or None


def content_type(value: Any) -> str | None:
    value = text(value, MAX_CONTENT_TYPE)
    return value if value is not None and _CONTENT_TYPE.fullmatch(value) else None


def headers(value: Any) -> dict[str, str]:
    """Headers Janus passed up ({name: value}): only well-formed ones, at most MAX_HEADERS."""
    if not isinstance(value, dict):
        return {}
    found: dict[str, str] = {}
    for name, header in value.items():
        if len(found) == MAX_HEADERS:
            break
        if isinstance(name, str) and _TOKEN.fullmatch(name) and isinstance(header, str) and \
                len(header) <= MAX_HEADER_VALUE and not _CONTROL.search(header):
            found[name] = header
    return found


def bare_uri(value: Any) -> str:
    """user@host out of a SIP URI or a name-addr header value (`"Bob" <sip:bob@example.com;transport=udp>;tag=x`);
    "" for anything that is not one."""
    raw = text(value, MAX_URI)
    if not raw or _CONTROL.search(raw):
        return ""
    start = raw.find("<")
    if start >= 0:
        end = raw.find(">", start)
        raw = raw[start + 1:end if end >= 0 else len(raw)]
    raw = raw.strip()
    if raw[:4].lower() == "sip:":
        raw = raw[4:]
    elif raw[:5].lower() == "sips:":
        raw = raw[5:]
    return re.split(r"[;?>\s]", raw, maxsplit=1)[0]


def is_contact_address(address: str) -> bool:
    """Whether user@host names a device (an IP address, or a port) rather than an address of record."""
    host = address.rpartition("@")[2]
    return host.startswith("[") or ":" in host or bool(re.fullmatch(r"[0-9.]+", host))


def originator(uri: Any, display_name: Any) -> Originator:
    """Who a call or message is from: Janus 1.1.2 puts display names in literal quotes."""
    name = phrase(display_name, MAX_DISPLAY_NAME)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1]).strip()  # a quoted-string: undo its quoted-pairs
    return Originator(uri=bare_uri(uri), display_name=name or None)


def sip_reason(code: Any, reason: Any) -> str:
    """A call's end as the browser is told: "<code> <phrase>"."""
    status = status_code(code)
    if status == 200:
        return "200 OK"  # a normal hang-up; Sofia's own phrase for it is "to BYE"
    words = phrase(reason)
    if status is not None and words:
        return f"{status} {words}"
    return str(status) if status is not None else words or "Call ended"


def dtmf_of_info(kind: Any, content: Any) -> tuple[str, int | None] | None:
    """The tone (and duration in ms) of an INFO: `application/dtmf-relay` (`Signal=5`, `Duration=160`) or
    `application/dtmf` (just the tone). ASCII digits only: `str.isdigit()` would take `²`, which int() refuses."""
    body = text(content, MAX_DTMF_BODY)
    media_type = (text(kind, MAX_CONTENT_TYPE) or "").split(";")[0].strip().lower()
    if body is None:
        return None
    if media_type == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in body.splitlines():
            match = _DTMF_FIELD.fullmatch(line)
            if match is not None:
                fields.setdefault(match.group(1).lower(), match.group(2))
        tone, duration = fields.get("signal", ""), fields.get("duration", "")
    elif media_type == "application/dtmf":
        tone, duration = body.strip(), ""
    else:
        return None
    if not _TONE.fullmatch(tone):
        return None
    milliseconds = int(duration) if re.fullmatch(r"[0-9]{1,5}", duration) else None
    return tone.upper(), milliseconds


def sipfrag_status(content: Any) -> tuple[int, str | None] | None:
    """The status line of a `message/sipfrag` NOTIFY body (how the far end's call to a transfer target goes)."""
    body = text(content, MAX_CONTENT)
    if body is None:
        return None
    match = _SIPFRAG_STATUS.match(body.lstrip("\r\n")[:200])
    if match is None:
        return None
    return int(match.group(1)), phrase(match.group(2)) or None


# --- requests ---

def register_body(identity: SIPIdentity, route: SIPProxy | None,
                  registration: Registration | None = None) -> dict[str, Any]:
    """A `register` request: a real one, else (no `registration`) one that only sets the identity for calls."""
    body: dict[str, Any] = {
        "request": "register",
        "username": f"sip:{identity.aor}",
        "authuser": identity.user,
        "ha1_secret": identity.ha1,
    }
    if registration is None:
        body["send_register"] = False
    else:
        body["register_ttl"] = registration.ttl
        if registration.contact_params:
            body["contact_params"] = dict(registration.contact_params)  # an object in 1.1.2, not an array
    if identity.display_name:
        body["display_name"] = quoted_string_content(identity.display_name)
    if identity.user_agent:
        body["user_agent"] = identity.user_agent
    if identity.incoming_header_prefixes:
        body["incoming_header_prefixes"] = list(identity.incoming_header_prefixes)
    body.update(route_params(identity, route))
    return body


def route_params(identity: SIPIdentity, route: SIPProxy | None) -> dict[str, Any]:
    if route is None:
        return {"proxy": f"sip:{identity.domain}"}
    # `proxy` only targets the REGISTER; `outbound_proxy` also routes calls (and spares Sofia DNS lookups of the
    # account's domain, which may not resolve).
    params: dict[str, Any] = {"proxy": sip_uri(route), "outbound_proxy": sip_uri(route)}
    if route.transport == "tcp":
        params["force_tcp"] = True  # Janus >= 0.11.7 needs it for TCP proxies (janus-gateway#2868)
    elif route.transport == "tls":
        params["sips"] = True  # without it the account's Sofia stack has no TLS transport (416)
    return params


def sip_uri(proxy: SIPProxy) -> str:
    port = f":{proxy.port}" if proxy.port else ""
    if proxy.transport == "tls":
        return f"sips:{proxy.host}{port}"
    return f"sip:{proxy.host}{port};transport={proxy.transport}"


def from_header(identity: SIPIdentity) -> str:
    """The account's own From: Janus 1.1.2 sends out-of-dialog MESSAGEs from its stack's default, which is the
    Contact address (alice@192.0.2.2:51485), not the address of record."""
    address = f"<sip:{identity.aor}>"
    name = identity.display_name
    return f'"{quoted_string_content(name)}" {address}' if name else address


def quoted_string_content(text: str) -> str:
    """`text` escaped for the inside of a SIP quoted-string (RFC 3261 quoted-pair): Janus writes the display name
    as `"<name>" <sip:...>` without escaping, so a quote in it would end the string and inject header syntax."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def delivery_answer(result: dict[str, Any]) -> tuple[int, str]:
    """A MESSAGE's SIP answer from `messagedelivery` (0 when Janus gave no usable code)."""
    return status_code(result.get("code")) or 0, phrase(result.get("reason"))
