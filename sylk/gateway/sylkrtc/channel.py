"""RequestChannel: one socket's stream of frames, turned into requests with exactly one answer each.

Every frame gets a defined reply and none can break the connection: binary or oversized frames, invalid JSON,
non-objects, a missing `sylkrtc` key, unknown types and invalid fields are answered with an `error` (carrying the
transaction when one can be read); valid requests go to the handler and are answered with `ack` when it succeeds
or `error` with the APIError's text when it fails. Anything unexpected becomes "Internal error" and is logged.

Each frame, valid or not, costs a token of the connection's bucket: a frame with none left is answered with
"Too many requests" and not handled, and a client that keeps sending after `burst` such refusals in a row is
disconnected (1008), so that answering a flood cannot become a flood of its own.

Each answer is counted once (RequestMetrics): by the request's type, or UNKNOWN_REQUEST for a frame that did not
decode into one (labels must come from a known set: one per name a client made up would grow without bound), and
errors also by cause.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sylk.gateway.errors import APIError
from sylk.gateway.sylkrtc.dialects import Dialect
from sylk.gateway.sylkrtc.fields import ValidationError
from sylk.gateway.sylkrtc.model import Event, Request


def encode_json(message: dict[str, Any]) -> bytes:
    # backslashreplace: a lone surrogate (valid in JSON input, e.g. an echoed transaction) becomes the JSON escape
    # it came in as, instead of an exception that would leave the request unanswered.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


# WebSocket close code for a client that keeps sending after being refused (RFC 6455: policy violation).
CLOSE_POLICY_VIOLATION = 1008
# How a request counts whose frame did not decode into one.
UNKNOWN_REQUEST = "unknown"
# Why a request is answered with an error: over the rate limit, not a valid request, refused (APIError), or a bug.
RATE_LIMITED = "rate-limited"
INVALID = "invalid"
REFUSED = "refused"
INTERNAL = "internal"


class RequestMetrics(Protocol):
    def request_answered(self, kind: str, error: str | None) -> None:
        """A request of type `kind` was answered: with an ack (`error` None) or an error of that cause."""


class TokenBucket:
    """`size` tokens, refilled at `rate` per second: take() spends one if there is one."""

    def __init__(self, rate: float, size: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.size = size
        self._clock = clock
        self._tokens = float(size)
        self._refilled_at = clock.seconds()

    def take(self) -> bool:
        now = self._clock.seconds()
        self._tokens = min(float(self.size), self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _redacted(payload: bytes) -> str:
    """A frame for the trace log, without the HA1 (as good as a password for its realm) or a resume token."""
    return re.sub(r'("(?:password|token)"\s*:\s*")[^"]*"', r'\1***"', payload.decode("utf-8", "replace"))


class RequestChannel:
    log = Logger()

    def __init__(self, name: str, dialect: Dialect, send: Callable[[bytes], None],
                 handle: Callable[[Request], Deferred[None] | None], max_message_size: int, trace: bool, *,
                 bucket: TokenBucket | None = None, disconnect: Callable[[int, str], None] | None = None,
                 metrics: RequestMetrics | None = None) -> None:
        """Without a `bucket`, frames are not rate limited; `disconnect` ends a client that floods."""
        self.name = name
        self.dialect = dialect
        self._send = send
        self._handle = handle
        self._max_message_size = max_message_size
        self._trace = trace
        self._bucket = bucket
        self._disconnect = disconnect
        self._metrics = metrics
        self._refused_in_a_row = 0
        self._disconnected = False

    def frame_received(self, payload: bytes, is_binary: bool) -> None:
        if self._disconnected:
            return  # disconnected for flooding: nothing more is answered or carried out
        if self._trace:
            self.log.info("{name} <- {payload}", name=self.name,
                          payload="<binary frame>" if is_binary else _redacted(payload))
        if self._bucket is not None:
            if not self._bucket.take():
                self._refuse(self._bucket, payload, is_binary)
                return
            self._refused_in_a_row = 0
        self._request_received(payload, is_binary)

    def _refuse(self, bucket: TokenBucket, payload: bytes, is_binary: bool) -> None:
        transaction = None if is_binary or len(payload) > self._max_message_size else _transaction_in(payload)
        self._reply(self.dialect.error(transaction, f"Too many requests (at most {bucket.rate:g} per second)"))
        self._count(UNKNOWN_REQUEST, RATE_LIMITED)
        self._refused_in_a_row += 1
        if self._refused_in_a_row >= bucket.size and self._disconnect is not None:
            self.log.warn("{name}: {count} requests in a row over the rate limit; disconnecting", name=self.name,
                          count=self._refused_in_a_row)
            self._disconnected = True
            self._disconnect(CLOSE_POLICY_VIOLATION,
                             f"Too many requests: {bucket.size} refused in a row (at most {bucket.rate:g} per second)")

    def _request_received(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self._invalid(None, "Binary messages are not supported; send JSON text")
            return
        if len(payload) > self._max_message_size:
            self._invalid(None, f"Message too large: {len(payload)} bytes (at most {self._max_message_size})")
            return
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as e:
            self._invalid(None, f"Invalid JSON: {e}")
            return
        if not isinstance(message, dict):
            self._invalid(None, "A message must be a JSON object")
            return
        transaction = _transaction(message)
        if "sylkrtc" not in message:
            self._invalid(transaction, "Missing 'sylkrtc' key")
            return
        try:
            request = self.dialect.decode(message)
        except ValidationError as e:
            self._invalid(transaction, str(e))
            return
        answer = maybeDeferred(self._handle, request)
        answer.addCallbacks(self._request_done, self._request_failed, callbackArgs=(request,),
                            errbackArgs=(request,))

    def _invalid(self, transaction: str | int | None, reason: str) -> None:
        self._reply(self.dialect.error(transaction, reason))
        self._count(UNKNOWN_REQUEST, INVALID)

    def _request_done(self, _: object, request: Request) -> None:
        self._reply(self.dialect.ack(request.transaction))
        self._count(request.name, None)

    def send_event(self, event: Event) -> None:
        message = self.dialect.encode(event)
        if message is not None:
            self._reply(message)

    def _request_failed(self, failure: Failure, request: Request) -> None:
        if failure.check(APIError):
            reason, cause = str(failure.value), REFUSED
        else:
            self.log.failure("{name}: {request!r} failed", failure, name=self.name, request=request)
            reason, cause = "Internal error", INTERNAL
        self._reply(self.dialect.error(request.transaction, reason))
        self._count(request.name, cause)

    def _count(self, kind: str, error: str | None) -> None:
        if self._metrics is not None:
            self._metrics.request_answered(kind, error)

    def _reply(self, message: dict[str, Any]) -> None:
        data = encode_json(message)
        if self._trace:
            self.log.info("{name} -> {payload}", name=self.name, payload=data.decode("utf-8"))
        self._send(data)


def _transaction(message: dict[str, Any]) -> str | int | None:
    """The message's transaction, if it is something the client could match an error against."""
    transaction = message.get("transaction")
    if not isinstance(transaction, str | int) or isinstance(transaction, bool):
        return None
    return transaction


def _transaction_in(payload: bytes) -> str | int | None:
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return _transaction(message) if isinstance(message, dict) else None
