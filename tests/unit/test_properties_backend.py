"""Property-based tests of containment in the Janus backend: whatever the far ends of one connection's calls make
Janus report, in whatever order, only that connection's calls and account can be affected.

Connection A has a registered account, an established call and a call ringing on the master; connection B (its own
Janus session) has a registered account and an established call. Then A's Janus session gets arbitrary sequences of
SIP-plugin events (known and unknown names, result fields of any JSON type, jseps of any shape), core events, SIP
bodies (INFO, MESSAGE with CPIM envelopes and IMDN XML, NOTIFY sipfrags), frames that are not JSON, the far end's
ordinary moves, A's browser's requests, held-back Janus answers and time passing. Throughout, no exception leaves
`JanusAPI.message_received`, every request the gateway sends is well formed, B does not notice anything, and A's
browser hears of each session's end once and of nothing after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

from sylk.gateway.connection import Connection
from sylk.gateway.errors import APIError
from sylk.gateway.janus.client import JanusAPI
from sylk.gateway.janus.lines import JanusSIPUserAgent
from sylk.gateway.janus.sipcall import JanusSIPCall
from sylk.gateway.janus.sipcodec import ANSWERS_ONLY, CALL_EVENTS, SIP_PLUGIN
from sylk.gateway.sylkrtc import model
from tests.fakejanus import FakeJanus, FakeLink
from tests.fakes import FakePeer
from tests.unit.test_calls import BOB, CallTestCase
from tests.unit.test_connection import ALICE
from tests.unit.test_properties_protocol import MISSING, PROPERTY_SETTINGS, json_values, mostly

SETTLE_STEP = 5.0
SETTLE_STEPS = 80  # 400 s: past every timer of the gateway (the longest is the transfer's 185 s)
MAX_JANUS_INT = 2**63 - 1  # Janus (jansson) reads integers as 64-bit signed: a larger one makes the JSON invalid


# --- what the gateway may send to Janus ---

_VERBS = frozenset({"info", "ping", "create", "attach", "message", "trickle", "keepalive", "detach", "destroy"})
_NEED_HANDLE = frozenset({"message", "trickle", "detach"})
_SIP_REQUESTS = frozenset({"register", "unregister", "call", "accept", "decline", "hangup", "dtmf_info", "update",
                           "hold", "unhold", "message", "transfer"})
_SIP_URI_FIELDS = ("uri", "username", "proxy", "outbound_proxy")
# Strings Janus writes into SIP headers: no line breaks or other controls (they would start a header of their own).
_HEADER_TEXT_FIELDS = ("call_id", "replace", "display_name", "user_agent", "authuser", "content_type")


def request_problems(text: str, api_secret: str) -> list[str]:
    """What is wrong with a request the gateway sent to Janus (empty when it is well formed)."""
    if text != text.strip():
        return ["whitespace around the frame (Janus 1.1.2 rejects it)"]
    try:
        request = json.loads(text)
    except ValueError:
        return ["not JSON"]
    problems = [f"not valid for Janus's JSON parser: {p}" for p in _json_problems(request)]
    if not isinstance(request, dict):
        return problems + ["not an object"]
    verb = request.get("janus")
    if verb not in _VERBS:
        problems.append(f"unknown verb {verb!r}")
    if not isinstance(request.get("transaction"), str) or request.get("apisecret") != api_secret:
        problems.append("no transaction or API secret")
    if verb not in ("info", "ping", "create") and not _is_id(request.get("session_id")):
        problems.append("no session_id")
    if verb in _NEED_HANDLE and not _is_id(request.get("handle_id")):
        problems.append("no handle_id")
    if verb == "attach" and request.get("plugin") != SIP_PLUGIN:
        problems.append("attaching something else than the SIP plugin")
    if verb == "message":
        problems += _body_problems(request.get("body"), request.get("jsep", MISSING))
    if verb == "trickle":
        problems += _trickle_problems(request)
    return problems


def _json_problems(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [f"a string with a lone surrogate: {value[:40]!r}"]
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int) and not -MAX_JANUS_INT <= value <= MAX_JANUS_INT:
        return [f"an integer beyond 64 bits: {value}"]
    elif isinstance(value, float) and not math.isfinite(value):
        return ["NaN or infinity"]
    elif isinstance(value, dict):
        return [problem for key, item in value.items() for problem in _json_problems(key) + _json_problems(item)]
    elif isinstance(value, list):
        return [problem for item in value for problem in _json_problems(item)]
    return []


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_JANUS_INT


def _has_controls(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7f for char in text)


def _body_problems(body: Any, jsep: Any) -> list[str]:
    if not isinstance(body, dict) or body.get("request") not in _SIP_REQUESTS:
        return [f"a plugin message that is no SIP-plugin request: {body!r:.80}"]
    request = body["request"]
    problems = []
    for name in _SIP_URI_FIELDS:
        if name in body and not (isinstance(body[name], str) and body[name].startswith(("sip:", "sips:")) and
                                 not _has_controls(body[name]) and " " not in body[name]):
            problems.append(f"{request}: {name} is no SIP URI: {body[name]!r:.80}")
    for name in _HEADER_TEXT_FIELDS:
        if name in body and not (isinstance(body[name], str) and not _has_controls(body[name])):
            problems.append(f"{request}: {name} is not one line of text: {body[name]!r:.80}")
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) and not _has_controls(k + v)
                                                for k, v in headers.items()):
        problems.append(f"{request}: headers are not one line each: {headers!r:.80}")
    for name in ("refer_id", "master_id"):
        if name in body and not _is_id(body[name]):
            problems.append(f"{request}: {name} is not an id: {body[name]!r:.80}")
    if "code" in body and not (isinstance(body["code"], int) and 300 <= body["code"] <= 699):
        problems.append(f"{request}: code is not a final SIP status: {body['code']!r:.80}")
    if request in ("call", "transfer") and not isinstance(body.get("uri"), str):
        problems.append(f"{request}: no uri")
    if request == "dtmf_info" and not (isinstance(body.get("digit"), str) and len(body["digit"]) == 1 and
                                       isinstance(body.get("duration"), int)):
        problems.append(f"dtmf_info: not one tone with a duration: {body!r:.80}")
    if request == "message" and not (isinstance(body.get("content"), str) and
                                     isinstance(body.get("content_type"), str)):
        problems.append("message: no content or content type")
    if request == "hold" and body.get("direction") not in ("sendonly", "recvonly", "inactive"):
        problems.append(f"hold: direction {body.get('direction')!r:.40}")
    if jsep is not MISSING and not (isinstance(jsep, dict) and jsep.get("type") in ("offer", "answer") and
                                    isinstance(jsep.get("sdp"), str) and jsep["sdp"]):
        problems.append(f"{request}: a jsep without a type and SDP: {jsep!r:.80}")
    return problems


def _trickle_problems(request: dict[str, Any]) -> list[str]:
    if request.get("candidate") == {"completed": True}:
        return []
    candidates = request.get("candidates")
    if isinstance(candidates, list) and all(isinstance(c, dict) and isinstance(c.get("candidate"), str)
                                            for c in candidates):
        return []
    return [f"a trickle without candidates: {request!r:.80}"]


class CheckedJanus(FakeJanus):
    """The fake Janus, also checking every request the gateway sends and counting the messages it delivers (so that
    what is logged can be told apart by the message that caused it)."""

    def __init__(self) -> None:
        super().__init__()
        self.malformed: list[str] = []
        self.delivered = 0

    def _received(self, text: str) -> None:
        self.malformed += [f"{problem} in {text[:300]}" for problem in request_problems(text, self.api_secret)]
        super()._received(text)

    def flush(self) -> None:
        while self._outbox:
            self.deliver(json.dumps(self._outbox.pop(0)))

    def held_request(self, pick: int) -> dict[str, Any] | None:
        """One of the requests held back (see `held`): still waiting for Janus's answer."""
        return self._held_requests[pick % len(self._held_requests)] if self._held_requests else None

    def deliver(self, text: str) -> None:
        """Hand a frame to the gateway's Janus API, as the WebSocket to Janus would."""
        self.delivered += 1
        self.api.message_received(text)


# --- strategies: what Janus may report about the far ends of A's calls ---

LINE_CALL_ID = object()  # stands for the Call-ID of the call on the line the event goes to
# Stands for the transaction of a request Janus holds back, on that request's handle: the SIP plugin reuses a request's
# transaction for later events, so an event of the far end's may look like the answer the gateway awaits.
HELD_TRANSACTION = object()
KNOWN_EVENTS = sorted({name[4:] for cls in (JanusSIPUserAgent, JanusSIPCall) for name in dir(cls)
                       if name.startswith("_EH_")} | ANSWERS_ONLY | CALL_EVENTS)
# The events that carry what a far end wrote (bodies, URIs, SDP) come up most.
event_names = st.one_of(
    st.sampled_from(["info", "info", "message", "message", "notify", "transfer", "incomingcall", "updatingcall"]),
    st.sampled_from(KNOWN_EVENTS), st.sampled_from(KNOWN_EVENTS),
    st.sampled_from(["subscribe_succeeded", "registered\x00", " hangup", "__class__", ""]) | st.text(max_size=12) |
    json_values)
texts = st.text(max_size=24)
uris = mostly(st.sampled_from(["sip:bob@example.com", '"Bob" <sip:bob@example.com>;tag=1', "sips:carol@example.org",
                               "<sip:bob@example.com;transport=tcp>", "sip:alice@example.com"]),
              st.sampled_from(["sip:", "<", "bob@example.com\r\nVia: x", "sip:" + "b" * 600 + "@example.com"]) |
              texts | json_values)
unicode_digits = st.sampled_from(["\u00b2", "\u0667", "\uff17", "\u07c2", "\U0001d7d7", "\u00b9", "\u2075", "\u0e52"])
dtmf_values = st.one_of(st.sampled_from(list("0123456789*#ABCDabcd")), unicode_digits, unicode_digits,
                        st.text(max_size=4), st.integers(-5, 10**6).map(str), st.just("9" * 5000))


@st.composite
def dtmf_bodies(draw: st.DrawFn) -> str:
    """application/dtmf-relay bodies: Signal= and Duration= lines, right and wrong."""
    if draw(mostly(st.just(True), st.just(False), odds=2)):
        return f"Signal={draw(dtmf_values)}\r\nDuration={draw(dtmf_values)}\r\n"
    lines = draw(st.lists(st.one_of(
        st.tuples(st.sampled_from(["Signal", "Duration", "signal", "DURATION", "Dur", ""]),
                  st.sampled_from(["=", " = ", ":", "=="]), dtmf_values).map("".join),
        texts), max_size=5))
    return draw(st.sampled_from(["\r\n", "\n", "\r", " "])).join(lines)


info_types = st.sampled_from(["application/dtmf-relay", "application/dtmf", "Application/DTMF-Relay; x=1",
                              "text/plain", ""]) | json_values
sipfrags = st.one_of(
    st.tuples(st.sampled_from(["", "\r\n", "\r\n\r\n", " "]), st.integers(0, 1000), texts).map(
        lambda parts: f"{parts[0]}SIP/2.0 {parts[1]} {parts[2]}\r\n"),
    st.sampled_from(["SIP/2.0 200 OK\r\n", "SIP/2.0 180 Ringing\r\n", "SIP/2.0 407 Proxy Authentication Required",
                     "SIP/2.0 603 Declined", "SIP/2.0 100 " + "x" * 10000, "SIP/2.0 1000 Big", "SIP/2.0 2OO OK",
                     "SIP/2.0 \u0662\u0660\u0660 OK"]),
    texts, json_values)


@st.composite
def imdn_documents(draw: st.DrawFn) -> str:
    """IMDN XML: well formed and not, deeply nested, huge, with DTDs and entities."""
    message_id = draw(st.sampled_from(["m1", "", "x" * 300, "a\u202eb"]) | texts)
    state = draw(st.sampled_from(["delivered", "displayed", "failed", "processed", "bogus"]))
    valid = (f'<?xml version="1.0"?><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>{message_id}</message-id>'
             f"<datetime>{draw(texts)}</datetime><delivery-notification><status><{state}/></status>"
             f"</delivery-notification></imdn>")
    depth = draw(st.sampled_from([10, 1000, 3000, 100000]))
    return draw(st.sampled_from([
        valid,
        valid.replace("<message-id>", "<message-id>&amp;&#x0;"),
        '<imdn xmlns="urn:ietf:params:xml:ns:imdn">' + "<a>" * depth + "</a>" * depth + "</imdn>",
        valid + " " * 9000,
        valid.replace("</imdn>", "<pad>" + "x" * 200000 + "</pad></imdn>"),
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>'
        + valid.replace("<message-id>", "<message-id>&lol2;"),
        '<!doctype imdn SYSTEM "file:///etc/passwd">' + valid,
        '<! ENTITY x "y">' + valid,
        "<imdn", "", draw(texts)]))


@st.composite
def cpim_bodies(draw: st.DrawFn) -> str:
    """message/cpim: an envelope, the content's MIME headers and the content, with the blank lines or without."""
    envelope = draw(st.lists(st.one_of(
        st.sampled_from(["From: <sip:bob@example.com>", 'From: "Bob \u202eB" <sip:bob@example.com>',
                         "From: Mallory <sip:mallory@evil.example>", "To: <sip:alice@example.com>",
                         "DateTime: 2024-01-01T00:00:00Z", "imdn.Message-ID: abc", "imdn.Message-ID: " + "x" * 300,
                         "imdn.Disposition-Notification: positive-delivery, display, ;;;, " + "n" * 40,
                         "NS: imdn <urn:ietf:params:imdn>", "From:", "no colon here"]),
        st.tuples(texts, texts).map(lambda parts: f"{parts[0]}: {parts[1]}")), max_size=6))
    if draw(st.booleans()):
        envelope += ["X-Filler: y"] * draw(st.sampled_from([49, 60, 5000]))
    mime = draw(st.lists(st.sampled_from(["Content-Type: text/plain", "Content-Type: message/imdn+xml",
                                          "Content-Type: bogus", "Content-Type: text/html; charset=utf-8",
                                          "Content-Disposition: notification", "Content-Length: 12"]), max_size=3))
    content = draw(imdn_documents() | texts)
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    blank = draw(st.sampled_from([newline * 2, newline]))
    return newline.join(envelope) + blank + newline.join(mime) + blank + content


message_types = st.sampled_from(["text/plain", "message/cpim", "Message/CPIM", "message/imdn+xml", "text/html",
                                 "text/plain; charset=utf-8", "bad type", "", "x" * 200]) | json_values
message_contents = st.one_of(texts, cpim_bodies(), imdn_documents(), st.just("y" * 70000), json_values)
sdp_texts = st.sampled_from(["v=0 offer", "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly", "v=0\r\na=inactive",
                             "v=0\r\n" + "a=x\r\n" * 3000, "m=audio 0 RTP/AVP 0", ""]) | texts
jseps = mostly(st.just(MISSING), st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["offer", "answer", "pranswer"]) | json_values,
                           "sdp": sdp_texts | json_values}, optional={"update": st.booleans() | json_values}),
    json_values), odds=1)

RESULT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "code": mostly(st.sampled_from([180, 183, 200, 401, 407, 486, 487, 500, 603]), st.integers() | json_values),
    "reason": texts | json_values,
    "call_id": mostly(st.just(LINE_CALL_ID), texts | json_values, odds=2),
    "username": uris, "sender": uris, "caller": uris, "callee": uris, "refer_to": uris, "referred_by": uris,
    "displayname": st.sampled_from(['"Bob"', "Bob", '"Eve\\" <sip:x>"', '"\u202eevil"', '"', "x" * 300]) | texts,
    "headers": st.dictionaries(texts, texts, max_size=3) | json_values,
    "refer_id": st.integers(1, 2**32) | json_values,
    "replaces": st.booleans() | texts | json_values,
    "master_id": st.integers(1, 2**32) | json_values,
    "register_sent": st.booleans() | json_values,
    "helper": st.booleans() | json_values,
    "signal": dtmf_values | json_values,
    "duration": st.integers(-1, 10**6) | json_values,
    "notify": st.sampled_from(["refer", "REFER", "message-summary", ""]) | json_values,
    "substate": st.sampled_from(["active", "terminated;reason=noresource"]) | json_values,
    "content": message_contents,
    "content_type": message_types,
    "type": info_types,
}
# The fields each body-carrying event is about, with the bodies a far end may send in them.
BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "info": st.fixed_dictionaries({"type": info_types, "content": mostly(dtmf_bodies(), message_contents, odds=3)}),
    "message": st.one_of(
        st.fixed_dictionaries({"content_type": st.sampled_from(["message/cpim", "Message/CPIM; x=y"]),
                               "content": cpim_bodies()}, optional={"sender": uris}),
        st.fixed_dictionaries({"content_type": message_types, "content": message_contents},
                              optional={"sender": uris, "displayname": RESULT_FIELDS["displayname"]})),
    "notify": st.fixed_dictionaries({"notify": st.sampled_from(["refer", "refer"]) | json_values,
                                     "content": sipfrags}, optional={"substate": RESULT_FIELDS["substate"]}),
}


@st.composite
def results(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(event_names)
    result: dict[str, Any] = {} if name is MISSING else {"event": name}
    for key in draw(st.lists(st.sampled_from(sorted(RESULT_FIELDS)), max_size=5, unique=True)):
        result[key] = draw(RESULT_FIELDS[key])
    if isinstance(name, str) and name in BODIES:
        result.update(draw(mostly(BODIES[name], st.just({}), odds=6)))
    return result


handle_picks = mostly(st.integers(0, 5), st.sampled_from([-1, 0, 1, 2**40, 2**70]).map(lambda h: ("raw", h)),
                      odds=8)


@dataclass(frozen=True)
class PluginEvent:
    handle: Any
    result: Any
    jsep: Any = MISSING
    call_id_beside: Any = MISSING  # the Call-ID beside `result`, where Janus puts it for some events
    transaction: Any = MISSING


@dataclass(frozen=True)
class CoreEvent:
    kind: Any  # webrtcup, hangup, detached, media, slowlink, timeout, ...
    handle: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RawFrame:
    text: str


@dataclass(frozen=True)
class FarEnd:
    """An ordinary move of the far end, through the fake Janus's helpers: hangup, answer, ring, reinvite, refer,
    notify, message, ringing, early, media."""

    what: str
    handle: Any
    detail: Any = None


@dataclass(frozen=True)
class Browser:
    """A request of A's browser."""

    what: str
    session: int
    detail: Any = None


@dataclass(frozen=True)
class Janus:
    """Janus holds back the answers to one kind of request ("hold"), answers them ("release"), or time passes."""

    what: str
    detail: Any = None


plugin_events = st.builds(
    PluginEvent, handle_picks, mostly(results(), json_values, odds=10), jseps,
    mostly(st.just(MISSING), st.just(LINE_CALL_ID) | texts | json_values, odds=2),
    mostly(st.just(MISSING), st.just(HELD_TRANSACTION) | texts | json_values, odds=3))
core_events = st.builds(
    CoreEvent, mostly(st.sampled_from(["webrtcup", "hangup", "detached", "media", "slowlink"]),
                      st.just("timeout") | st.text(max_size=8) | json_values, odds=8),
    handle_picks, st.dictionaries(st.sampled_from(["reason", "type", "receiving", "uplink", "lost", "mid",
                                                  "seconds"]) | st.text(max_size=6), json_values, max_size=3))
raw_frames = st.builds(RawFrame, st.one_of(
    st.sampled_from(["{", "[1,2]", '"text"', "null", "[" * 100000 + "]" * 100000, '{"janus":"event","session_id":[]}',
                     '{"janus":"event","transaction":{"a":1}}', '{"janus":"success","transaction":"sg1"}']),
    json_values.map(json.dumps), st.text(max_size=30)))
far_end_moves = st.builds(
    FarEnd, st.sampled_from(["hangup", "answer", "ring", "reinvite", "refer", "notify", "message", "ringing", "early",
                             "media"]), st.integers(0, 5), st.one_of(st.none(), texts, sipfrags, message_contents))
browser_requests = st.builds(
    Browser, st.sampled_from(["answer", "terminate", "hold", "unhold", "dtmf", "message", "update", "transfer",
                              "attended-transfer", "transfer-reject", "call", "take-transfer", "account-message",
                              "register", "unregister", "ping"]),
    st.integers(0, 5), st.sampled_from(["v=0 answer", "v=0\r\na=sendonly", "12#", "inactive"]))
janus_moves = st.one_of(
    st.builds(Janus, st.just("hold"), st.sampled_from(["hangup", "accept", "decline", "message", "update", "hold",
                                                       "transfer", "call", "register:helper", "attach", "detach"])),
    st.builds(Janus, st.just("release")),
    st.builds(Janus, st.just("advance"), st.sampled_from([0.5, 1.6, 2.5, 9.0, 11.0, 31.0, 40.0])))

Step = PluginEvent | CoreEvent | RawFrame | FarEnd | Browser | Janus
# Mostly plugin events, with enough of everything else to reach every state of A's calls.
STEP_MIX = (plugin_events,) * 8 + (core_events,) * 2 + (far_end_moves,) * 4 + (browser_requests,) * 3 + (
    janus_moves,) * 2 + (raw_frames,)
steps = st.lists(st.integers(0, len(STEP_MIX) - 1).flatmap(lambda pick: STEP_MIX[pick]), min_size=10, max_size=40)


# --- the scene ---

@dataclass
class Scene:
    first: Connection  # A: where everything happens
    first_peer: FakePeer
    first_session: int
    second: Connection  # B: must not notice
    second_peer: FakePeer
    second_session: int
    second_handles: set[int]
    answers: list[tuple[model.Request, list[Any]]] = field(default_factory=list)  # A's requests and their results
    lives: list[tuple[int, str]] = field(default_factory=list)  # (event index, session): an outgoing call begins
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (message delivered, log event)
    timed_out: bool = False  # A's Janus session was told it timed out (then A is closed, as it should)


class BackendPropertyTests(CallTestCase):
    janus: CheckedJanus  # (from scene() on)

    def setUp(self) -> None:
        super().setUp()
        self.logged: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def fresh_janus(self) -> None:
        self.janus = CheckedJanus()
        self.link = FakeLink(self.janus.api)
        self.backend = self.backend_for(self.settings)

    def scene(self) -> Scene:
        """A: registered, an established call (s1) and a call ringing on the master; B: registered, established."""
        self.fresh_janus()
        first, first_peer = self.registered()
        first_session = self.session_id()
        self.janus.call_outcome = ("accepted",)
        self.dial(first, "s1")
        self.janus.webrtcup(first_session, self.line_of())
        _, master = self.master()
        self.janus.incoming_call(first_session, master, call_id="ringing-on-master")
        second, second_peer = self.registered()
        second_session = max(self.janus.sessions)
        before = set(self.janus.calls)
        self.dial(second, "b1")
        (second_line,) = set(self.janus.calls) - before
        self.janus.webrtcup(second_session, second_line)
        self.janus.call_outcome = ()
        self.assertEqual(self.calls(second_peer), ["progress", ("accepted", "v=0 answer"), "established"])
        self.assertEqual([type(e) for e in first_peer.events][-1:], [model.IncomingSession])
        second_peer.events.clear()
        return Scene(first, first_peer, first_session, second, second_peer, second_session,
                     set(self.janus.sessions[second_session]))

    # --- carrying out steps ---

    def handle_of(self, scene: Scene, pick: Any) -> Any:
        """One of A's handles (those carrying calls first), or a raw id."""
        if isinstance(pick, tuple):
            return pick[1]
        handles = sorted(self.janus.sessions.get(scene.first_session, ()), key=lambda h: (h not in self.janus.calls, h))
        return handles[pick % len(handles)] if handles else 1

    def line_call_id(self, handle: Any, value: Any) -> Any:
        if value is LINE_CALL_ID:
            return self.janus.calls.get(handle, "no-call-on-this-line")
        return value

    def run_step(self, scene: Scene, step: Step) -> None:
        janus = self.janus
        if isinstance(step, PluginEvent):
            handle = self.handle_of(scene, step.handle)
            transaction = step.transaction
            held = janus.held_request(step.handle if isinstance(step.handle, int) else 0)
            if transaction is HELD_TRANSACTION:
                transaction = held["transaction"] if held is not None else MISSING
                handle = held.get("handle_id", handle) if held is not None else handle
            result = step.result
            if isinstance(result, dict) and "call_id" in result:
                result = dict(result, call_id=self.line_call_id(handle, result["call_id"]))
            data: dict[str, Any] = {"sip": "event", "result": result}
            if step.call_id_beside is not MISSING:
                data["call_id"] = self.line_call_id(handle, step.call_id_beside)
            message: dict[str, Any] = {"janus": "event", "session_id": scene.first_session, "sender": handle,
                                       "plugindata": {"plugin": SIP_PLUGIN, "data": data}}
            if step.jsep is not MISSING:
                message["jsep"] = step.jsep
            if transaction is not MISSING:
                message["transaction"] = transaction
            janus.emit(message)
        elif isinstance(step, CoreEvent):
            scene.timed_out |= step.kind == "timeout"
            janus.emit({**step.extra, "janus": step.kind, "session_id": scene.first_session,
                        "sender": self.handle_of(scene, step.handle)})
        elif isinstance(step, RawFrame):
            janus.deliver(step.text)
        elif isinstance(step, FarEnd):
            self.far_end(scene, step)
        elif isinstance(step, Browser):
            self.browser(scene, step)
        elif step.what == "hold":
            janus.held.add(step.detail)
        elif step.what == "release":
            janus.release()
        else:
            janus.flush()
            janus.clock.advance(step.detail)
            janus.flush()

    def far_end(self, scene: Scene, step: FarEnd) -> None:
        janus, session = self.janus, scene.first_session
        if session not in janus.sessions:
            return
        in_calls = sorted(h for h in janus.calls if h in janus.sessions[session])
        handle = in_calls[step.handle % len(in_calls)] if in_calls else None
        text = step.detail if isinstance(step.detail, str) else "hello"
        if step.what == "ring":
            masters = sorted(h for h in janus.sessions[session] if h not in janus.helpers and h in janus.status)
            if masters:
                janus.incoming_call(session, masters[0], call_id=f"ring-{step.handle}")
        elif handle is None:
            return
        elif step.what == "hangup":
            janus.remote_hangup(session, handle)
        elif step.what == "answer":
            janus.answer_call(session, handle)
        elif step.what == "reinvite":
            janus.remote_reinvite(session, handle, sdp=step.detail if step.handle % 2 else "v=0\r\na=sendonly")
        elif step.what == "refer":
            janus.refer(session, handle, refer_to=text, replaces=step.detail if step.handle % 2 else None)
        elif step.what == "notify":
            janus.refer_notify(session, handle, text)
        elif step.what == "message":
            janus.incoming_message(session, handle, content=text,
                                   content_type="message/cpim" if step.handle % 2 else "text/plain")
        elif step.what == "ringing":
            janus.ringing(session, handle)
        elif step.what == "early":
            janus.early_media(session, handle)
        else:
            janus.webrtcup(session, handle)

    def browser(self, scene: Scene, step: Browser) -> None:
        connection = scene.first
        known = sorted(connection.sessions) + sorted(connection._ended) + ["s1", "s2"]
        session = known[step.session % len(known)]
        other = known[(step.session + 1) % len(known)]
        requests: dict[str, model.Request] = {
            "answer": model.SessionAnswer(transaction="t", session=session, sdp=step.detail),
            "terminate": model.SessionTerminate(transaction="t", session=session),
            "hold": model.SessionHold(transaction="t", session=session,
                                      direction="inactive" if step.detail == "inactive" else "sendonly"),
            "unhold": model.SessionUnhold(transaction="t", session=session),
            "dtmf": model.SessionDtmfInfo(transaction="t", session=session, digit="12#", duration=100),
            "message": model.SessionMessage(transaction="t", session=session, message_id="m", content=step.detail,
                                            content_type="text/plain"),
            "update": model.SessionUpdate(transaction="t", session=session, sdp=step.detail),
            "transfer": model.SessionTransfer(transaction="t", session=session, uri=BOB),
            "attended-transfer": model.SessionTransfer(transaction="t", session=session, uri=BOB,
                                                       replace_session=other),
            "transfer-reject": model.SessionTransferReject(transaction="t", session=session, code=603),
            "call": model.SessionCreate(transaction="t", account=ALICE, session=f"new{step.session}", uri=BOB,
                                        sdp="v=0 offer"),
            "take-transfer": model.SessionCreate(transaction="t", account=ALICE, session=f"new{step.session}",
                                                 uri=BOB, sdp="v=0 offer", refer_session=session),
            "account-message": model.AccountMessage(transaction="t", account=ALICE, uri=BOB, message_id="m",
                                                    content=step.detail, content_type="text/plain"),
            "register": model.AccountRegister(transaction="t", account=ALICE),
            "unregister": model.AccountUnregister(transaction="t", account=ALICE),
            "ping": model.Ping(transaction="t"),
        }
        request = requests[step.what]
        if isinstance(request, model.SessionCreate):
            scene.lives.append((len(scene.first_peer.events), request.session))
        results: list[Any] = []
        scene.answers.append((request, results))
        connection.handle(request).addBoth(results.append)

    def settle(self) -> None:
        for _ in range(SETTLE_STEPS):
            self.janus.release()
            self.janus.flush()
            self.janus.clock.advance(SETTLE_STEP)
        self.janus.release()
        self.janus.flush()

    # --- the properties ---

    @settings(PROPERTY_SETTINGS, max_examples=250)
    @given(steps)
    def test_one_connections_far_ends_cannot_hurt_another_connection(self, chaos: list[Step]) -> None:
        scene = self.scene()
        self.logged.clear()
        for step in chaos:
            delivered = self.janus.delivered
            self.run_step(scene, step)  # nothing Janus sends may raise out of JanusAPI.message_received
            scene.failures += [(delivered, e) for e in self.logged if "log_failure" in e]
            self.logged.clear()
        self.settle()
        scene.failures += [(self.janus.delivered, e) for e in self.logged if "log_failure" in e]
        self.flushLoggedErrors()

        self.assertEqual(self.janus.malformed, [], "the gateway sent Janus a malformed request")
        self.check_failures_are_contained(scene)
        self.check_the_other_connection_is_untouched(scene)
        self.check_sessions_end_once(scene)
        self.check_requests_are_answered_once(scene)
        if not scene.timed_out:
            self.assertEqual((scene.first.state, scene.first_peer.closed), ("ready", None))
            self.assertIsNone(self.request(scene.first, model.Ping))
            self.check_surviving_calls_can_end(scene)

    def check_surviving_calls_can_end(self, scene: Scene) -> None:
        """Whatever state the chaos left A's calls in, the browser can still end each of them, in bounded time."""
        surviving = sorted(scene.first.sessions)
        for session in surviving:
            error = self.request(scene.first, model.SessionTerminate, session=session)
            self.assertTrue(error is None or "terminat" in error, error)
        self.settle()
        self.assertEqual(scene.first.sessions, {}, "a call could not be ended")
        self.check_sessions_end_once(scene)

    def check_failures_are_contained(self, scene: Scene) -> None:
        """Whatever was logged as a failure was logged once for the message that caused it, by the line's boundary:
        nothing reached the Janus API's last line of defence."""
        per_message: dict[int, int] = {}
        for delivered, event in scene.failures:
            per_message[delivered] = per_message.get(delivered, 0) + 1
            self.assertNotEqual(event.get("log_namespace"), f"{JanusAPI.__module__}.{JanusAPI.__name__}",
                                f"a failure escaped the line's boundary: {event.get('log_failure')}")
        self.assertEqual([(d, n) for d, n in per_message.items() if n > 1], [], "a failure was logged twice")
        self.assertEqual([(d, event["log_failure"].getTraceback()) for d, event in scene.failures], [],
                         "handling a Janus event failed")

    def check_the_other_connection_is_untouched(self, scene: Scene) -> None:
        second = scene.second
        self.assertEqual(scene.second_peer.events, [], "B was told something")
        self.assertEqual((second.state, scene.second_peer.closed), ("ready", None))
        self.assertEqual(second.accounts[ALICE].state, "registered")
        self.assertEqual(second.sessions["b1"].state, "established")
        self.assertLessEqual(scene.second_handles, self.janus.sessions.get(scene.second_session, set()))
        self.assertIsNone(self.request(second, model.SessionDtmfInfo, session="b1", digit="1"))
        self.assertIsNone(self.request(second, model.Ping))

    def check_sessions_end_once(self, scene: Scene) -> None:
        """Per life of a session id (ids may be used again once their call is over): `terminated` at most once,
        and nothing about the session after it."""
        starts: dict[int, list[str]] = {}
        for index, started in scene.lives:
            starts.setdefault(index, []).append(started)
        ended: set[str] = set()
        for index, event in enumerate([*scene.first_peer.events, None]):
            ended -= set(starts.get(index, ()))
            if event is None:
                break
            session = getattr(event, "session", None)
            if isinstance(event, model.IncomingSession):
                ended.discard(event.session)
            elif session is not None:
                self.assertNotIn(session, ended, f"{event!r} after the session was terminated")
                if getattr(event, "state", None) == model.SessionState.TERMINATED:
                    ended.add(session)

    def check_requests_are_answered_once(self, scene: Scene) -> None:
        for request, results in scene.answers:
            self.assertEqual(len(results), 1, f"{request!r} was not answered")
            if isinstance(results[0], Failure):
                self.assertTrue(results[0].check(APIError), f"{request!r} failed: {results[0].getTraceback()}")
            else:
                self.assertIsNone(results[0])



class FoundByPropertiesTests(CallTestCase):
    """What the properties above found, as plain examples."""

    def test_a_spare_line_attached_after_janus_dropped_the_master_is_not_bound_to_nothing(self) -> None:
        connection, _ = self.registered()
        self.janus.held = {"attach"}
        self.dial(connection)  # takes the spare line; the next spare is being attached
        session, master = self.master()
        self.janus.emit({"janus": "detached", "session_id": session, "sender": master})
        self.janus.release()
        helpers = [r["body"] for r in self.janus.requests
                   if r["janus"] == "message" and r["body"].get("type") == "helper"]
        self.assertEqual([body for body in helpers if not isinstance(body["master_id"], int)], [])

    def test_nothing_about_a_session_comes_after_its_end_not_even_a_messages_outcome(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.janus.message_outcome = None  # the far end never answers the MESSAGE, and hangs up
        self.assertIsNone(self.request(connection, model.SessionMessage, session="s1", message_id="m", content="hi",
                                       content_type="text/plain"))
        self.janus.remote_hangup(self.session_id(), self.line_of())
        self.janus.clock.advance(40)  # past the MESSAGE's transaction timeout (its 408)
        last = [e for e in peer.events if getattr(e, "session", None) == "s1"][-2:]
        self.assertEqual([(type(e), getattr(e, "state", None)) for e in last],
                         [(model.DispositionNotification, "failed"), (model.SessionStateChanged, "terminated")])
