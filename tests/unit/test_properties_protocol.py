"""Property-based tests of the protocol layer: whatever frames a browser sends, in whatever order, a RequestChannel
over a real Connection on the fake Janus answers each request exactly once and stays usable.

Frames are built from the request names and fields of both dialects, so that many get past decoding and reach the
connection's handlers, mixed with random JSON and random bytes; transactions take every JSON type. Between frames
the far end (the fake Janus) answers, rings and hangs up, and time passes. Runs are derandomized, keep no example
database (no `.hypothesis` folder) and are sized to take a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.interfaces import IConnectionPeer
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.sylkrtc import fields
from sylk.gateway.sylkrtc.channel import RequestChannel, TokenBucket
from sylk.gateway.sylkrtc.dialects import DIALECTS, Dialect
from sylk.gateway.sylkrtc.model import Event
from tests.fakejanus import FakeJanus, FakeLink
from tests.unit import any_character

ALICE = "alice@example.com"
BOB = "bob@example.com"
HA1 = "0123456789abcdef0123456789abcdef"
MAX_MESSAGE_SIZE = 2048  # small, so that oversized frames are cheap to make
# Long enough for every timer of the gateway to run out (the longest is the transfer's 185 s), in steps that let the
# fake Janus answer what each step sent.
SETTLE_STEP = 5.0
SETTLE_STEPS = 80
# Shared by both property modules: fast, reproducible in CI, and no example database in the checkout.
PROPERTY_SETTINGS = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MISSING = object()  # a field or transaction left out of a message


# --- strategies ---

def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 6) -> st.SearchStrategy[Any]:
    """`usual` `odds` times out of `odds + 1`, else `rare` (examples shrink towards `usual`)."""
    return st.integers(0, odds).flatmap(lambda pick: rare if pick == odds else usual)


# Every JSON value Python's json reads, NaN included; text without lone surrogates (see `any_text`).
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(), st.text(max_size=16))
json_values: st.SearchStrategy[Any] = st.recursive(
    json_leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                   max_size=4), max_leaves=10)
# Text that JSON can carry but UTF-8 cannot: lone surrogates (escaped as \udXXX on the wire).
any_text = st.text(any_character(), max_size=12)
transactions = mostly(st.text(min_size=1, max_size=8),
                      st.one_of(st.just(""), any_text, st.integers(-2**70, 2**70), st.integers(0, 3), json_values,
                                st.just(MISSING)), odds=3)
# Incoming calls ring with these Call-IDs, so that frames can name their sessions (see Account._session_id).
RING_CALL_IDS = ("in-a", "in-b")
sessions = st.sampled_from(["s1", "s2", "s3", *(str(uuid.UUID(bytes=hashlib.md5(call_id.encode()).digest()))
                                                for call_id in RING_CALL_IDS)])
sdps = st.sampled_from(["v=0 offer", "v=0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly", "v=0\r\na=inactive"])
tones = st.from_regex(r"[0-9*#A-Da-d]{1,4}", fullmatch=True)
candidates = st.lists(st.fixed_dictionaries({"candidate": st.text(max_size=20)},
                                            optional={"sdpMid": st.none() | st.text(max_size=3),
                                                      "sdpMLineIndex": st.none() | st.integers(-1, 2000)}),
                      max_size=3)
headers = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["X-Room", "Subject", "P-Asserted-Identity", "f", "X-", "Bad Name"]) | st.text(max_size=8),
     "value": st.text(max_size=20) | json_values}), max_size=3)


def typed_value(name: str, spec: fields.Field) -> st.SearchStrategy[Any]:
    """Values a field's own checks may well accept, so that requests get past decoding."""
    if isinstance(spec, fields.AOR):
        return mostly(st.sampled_from([ALICE, BOB, f"sip:{BOB}", "carol@example.org"]),
                      st.sampled_from(["eve@192.0.2.1", "a?b@example.com", "a%00@example.com"]) | st.text(max_size=12),
                      odds=4)
    if isinstance(spec, fields.HA1):
        return st.sampled_from([HA1, HA1, HA1.upper(), "password"])
    if isinstance(spec, fields.Choice):
        return mostly(st.sampled_from(spec.values), st.text(max_size=8))
    if isinstance(spec, fields.ContentType):
        return st.sampled_from(["text/plain", "message/cpim", "text/plain; charset=utf-8", "text"])
    if isinstance(spec, fields.Tones):
        return mostly(tones, st.text(max_size=4))
    if isinstance(spec, fields.Boolean):
        return st.booleans()
    if isinstance(spec, fields.Integer):
        return mostly(st.integers(spec.low, spec.high), st.integers(spec.low - 10, spec.high + 10))
    if isinstance(spec, fields.Candidates):
        return candidates
    if isinstance(spec, fields.Headers):
        return headers
    if isinstance(spec, fields.StringList):
        return st.lists(st.sampled_from(["X-", "X-Room", ""]) | st.text(max_size=6), max_size=3)
    if name in ("session", "refer_session", "replace_session"):
        return sessions
    if name == "sdp":
        return sdps
    return mostly(st.text(min_size=1, max_size=12), any_text, odds=3)


def field_values(name: str, spec: fields.Field) -> st.SearchStrategy[Any]:
    return mostly(typed_value(name, spec), st.just(MISSING) | json_values)


@st.composite
def request_messages(draw: st.DrawFn, dialect: Dialect) -> dict[str, Any]:
    """A JSON object shaped like a request of the dialect: a known name with its fields, mostly of the right type."""
    kind = draw(mostly(st.sampled_from(sorted(dialect.requests)),
                       st.text(max_size=10) | json_values | st.just(MISSING), odds=10))
    message: dict[str, Any] = {}
    if kind is not MISSING:
        message["sylkrtc"] = kind
    cls = dialect.requests.get(kind) if isinstance(kind, str) else None
    for name, spec in (cls._fields if cls is not None else {}).items():
        if name != "transaction":
            value = draw(field_values(name, spec) if not spec.optional else mostly(st.just(MISSING),
                                                                                 field_values(name, spec), odds=1))
            if value is not MISSING:
                message[name] = value
    transaction = draw(transactions)
    if transaction is not MISSING:
        message["transaction"] = transaction
    for key, value in draw(mostly(st.just({}), st.dictionaries(st.text(max_size=8), json_values, max_size=2))).items():
        message.setdefault(key, value)
    return message


@st.composite
def encoded(draw: st.DrawFn, messages: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a frame: ASCII-escaped, or UTF-8 (where lone surrogates make it invalid UTF-8)."""
    value = draw(messages)
    if draw(st.booleans()):
        return json.dumps(value).encode("ascii")
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Frame:
    payload: bytes
    is_binary: bool = False


@dataclass(frozen=True)
class FarEnd:
    """Something the fake Janus does between frames: "flush", "advance", "answer", "ring", "hangup", "media"."""

    what: str
    seconds: float = 0.0


def frames(dialect: Dialect) -> st.SearchStrategy[Frame]:
    oversized = request_messages(dialect).map(lambda m: dict(m, pad="x" * MAX_MESSAGE_SIZE)).map(
        lambda m: json.dumps(m).encode())
    return mostly(encoded(request_messages(dialect)).map(Frame), st.one_of(
        encoded(request_messages(dialect)).map(lambda payload: Frame(payload, is_binary=True)),
        encoded(json_values).map(Frame),
        st.binary(max_size=40).map(Frame),
        st.binary(max_size=40).map(lambda payload: Frame(payload, is_binary=True)),
        oversized.map(Frame),
    ), odds=4)


far_end = st.one_of(st.sampled_from(["flush", "answer", "ring", "hangup", "media"]).map(FarEnd),
                    st.sampled_from([0.1, 1.0, 2.0, 11.0, 40.0]).map(lambda seconds: FarEnd("advance", seconds)))


def valid(name: str, **fields_: Any) -> Frame:
    return Frame(json.dumps({"sylkrtc": name, **fields_}).encode())


# Valid openings, so that later frames find an account, a registration and a call to act on.
PROLOGUES = [
    [],
    [valid("account-add", transaction="p1", account=ALICE, password=HA1)],
    [valid("account-add", transaction="p1", account=ALICE, password=HA1),
     valid("account-register", transaction="p2", account=ALICE)],
    [valid("account-add", transaction="p1", account=ALICE, password=HA1),
     valid("account-register", transaction="p2", account=ALICE),
     valid("session-create", transaction="p3", account=ALICE, session="s1", uri=BOB, sdp="v=0 offer")],
]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[Frame | FarEnd]]:
    subprotocol = draw(st.sampled_from(sorted(DIALECTS)))
    steps: list[Frame | FarEnd] = list(draw(mostly(st.just(PROLOGUES[-1]), st.sampled_from(PROLOGUES), odds=2)))
    steps += draw(st.lists(mostly(frames(DIALECTS[subprotocol]), far_end, odds=2), max_size=25))
    return subprotocol, steps


# --- the world: a channel over a connection on the fake Janus ---

@implementer(IConnectionPeer)
class ChannelPeer:
    """The socket's side of the connection, as websocket.py has it: events go out through the channel."""

    def __init__(self) -> None:
        self.channel: RequestChannel | None = None
        self.closed: list[tuple[int, str]] = []

    def send_event(self, event: Event) -> None:
        assert self.channel is not None
        self.channel.send_event(event)

    def disconnect(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


@dataclass
class World:
    dialect: Dialect
    janus: FakeJanus = field(default_factory=FakeJanus)
    sent: list[bytes] = field(default_factory=list)
    peer: ChannelPeer = field(default_factory=ChannelPeer)

    def __post_init__(self) -> None:
        # a generous rate limit: the properties are about answers, not about refusing floods
        settings_ = WebRTCGatewayConfig(max_message_size=MAX_MESSAGE_SIZE, request_rate=100000.0,
                                        request_burst=1000000)
        backend = JanusSIPBackend([FakeLink(self.janus.api)],
                                  LineSettings(max_lines=settings_.max_calls_per_account), self.janus.clock)
        self.connection = Connection("property", backend, settings_, self.peer, self.janus.clock,
                                     answers_reinvites=self.dialect.answers_reinvites)
        self.channel = RequestChannel("property", self.dialect, self.sent.append, self.connection.handle,
                                      settings_.max_message_size, False,
                                      bucket=TokenBucket(settings_.request_rate, settings_.request_burst,
                                                         self.janus.clock),
                                      disconnect=self.peer.disconnect)
        self.peer.channel = self.channel
        self.connection.open()

    def step(self, step: Frame | FarEnd) -> None:
        if isinstance(step, Frame):
            self.channel.frame_received(step.payload, step.is_binary)
        else:
            self.far_end(step)

    def far_end(self, step: FarEnd) -> None:
        janus = self.janus
        session = next(iter(janus.sessions), None)
        calls = sorted(janus.calls)
        janus.flush()  # Janus answers at once; time passes only for the far end and the gateway's timers
        if step.what == "advance":
            janus.clock.advance(step.seconds)
        elif session is None or step.what == "flush":
            pass
        elif step.what == "answer" and [h for h in calls if h not in janus.answered]:
            janus.answer_call(session, [h for h in calls if h not in janus.answered][0])
        elif step.what == "ring":
            masters = [h for h in janus.sessions[session] if h not in janus.helpers and h in janus.status]
            if masters:
                janus.incoming_call(session, masters[0], call_id=RING_CALL_IDS[len(janus.requests) % 2])
        elif step.what == "hangup" and calls:
            janus.remote_hangup(session, calls[0])
        elif step.what == "media" and calls:
            janus.webrtcup(session, calls[0])
        janus.flush()

    def settle(self) -> None:
        """Let the fake Janus answer and every timer run out."""
        for _ in range(SETTLE_STEPS):
            self.janus.flush()
            self.janus.clock.advance(SETTLE_STEP)
        self.janus.release()
        self.janus.flush()

    def answers(self) -> list[dict[str, Any]]:
        """What the channel sent that answers a request (not events)."""
        return [message for message in map(json.loads, self.sent) if message.get("sylkrtc") in ("ack", "error")]


def usable_transaction(frame: Frame) -> tuple[str, Any] | None:
    """The transaction an answer to `frame` must carry (with its type, so 1 and "1" differ), if it has one: a text
    frame within the size limit holding a JSON object whose transaction is a string or a whole number."""
    if frame.is_binary or len(frame.payload) > MAX_MESSAGE_SIZE:
        return None
    try:
        message = json.loads(frame.payload)
    except (ValueError, RecursionError):
        return None
    transaction = message.get("transaction") if isinstance(message, dict) else None
    if isinstance(transaction, bool) or not isinstance(transaction, str | int):
        return None
    return type(transaction).__name__, transaction


def keyed(transaction: Any) -> tuple[str, Any]:
    return type(transaction).__name__, transaction


class ProtocolPropertyTests(SynchronousTestCase):
    @settings(PROPERTY_SETTINGS, max_examples=300)
    @given(scenarios())
    def test_every_frame_gets_one_answer_and_the_connection_stays_usable(
            self, scenario: tuple[str, list[Frame | FarEnd]]) -> None:
        subprotocol, steps = scenario
        world = World(DIALECTS[subprotocol])
        for step in steps:
            world.step(step)  # nothing a browser sends may raise out of frame_received
        world.settle()

        sent_frames = [step for step in steps if isinstance(step, Frame)]
        expected = Counter(t for t in map(usable_transaction, sent_frames) if t is not None)
        answers = world.answers()
        carried = Counter(keyed(a["transaction"]) for a in answers if "transaction" in a)
        self.assertEqual(carried, expected, "each frame with a transaction gets exactly one answer carrying it")
        without = [a for a in answers if "transaction" not in a]
        self.assertEqual(len(without), len(sent_frames) - sum(expected.values()),
                         "each frame without a usable transaction gets one error")
        self.assertTrue(all(a["sylkrtc"] == "error" and isinstance(a["error"], str) for a in without), without)
        internal = [a for a in answers if a["sylkrtc"] == "error" and a["error"] == "Internal error"]
        self.assertEqual(internal, [], "a request reached a handler bug")
        self.assertEqual(self.flushLoggedErrors(), [])

        before = len(world.sent)
        world.step(valid("ping", transaction="final-ping"))
        world.janus.flush()
        self.assertEqual([json.loads(data) for data in world.sent[before:]],
                         [{"sylkrtc": "ack", "transaction": "final-ping"}])
        self.assertEqual((world.connection.state, world.peer.closed), ("ready", []))
