"""RequestChannel: one socket's stream of frames, turned into requests with exactly one answer each.

Every frame gets a defined reply and none can break the connection: binary or oversized frames, invalid JSON,
non-objects, a missing `sylkrtc` key, unknown types and invalid fields are answered with an `error` (carrying the
transaction when one can be read); valid requests go to the handler and are answered with `ack` when it succeeds
or `error` with the APIError's text when it fails. Anything unexpected becomes "Internal error" and is logged.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
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


def _redacted(payload: bytes) -> str:
    """A frame for the trace log, without the HA1 (as good as a password for its realm)."""
    return re.sub(r'("password"\s*:\s*")[^"]*"', r'\1***"', payload.decode("utf-8", "replace"))


class RequestChannel:
    log = Logger()

    def __init__(self, name: str, dialect: Dialect, send: Callable[[bytes], None],
                 handle: Callable[[Request], Deferred[None] | None], max_message_size: int, trace: bool) -> None:
        self.name = name
        self.dialect = dialect
        self._send = send
        self._handle = handle
        self._max_message_size = max_message_size
        self._trace = trace

    def frame_received(self, payload: bytes, is_binary: bool) -> None:
        if self._trace:
            self.log.info("{name} <- {payload}", name=self.name,
                          payload="<binary frame>" if is_binary else _redacted(payload))
        if is_binary:
            self._reply(self.dialect.error(None, "Binary messages are not supported; send JSON text"))
            return
        if len(payload) > self._max_message_size:
            self._reply(self.dialect.error(None, f"Message too large: {len(payload)} bytes "
                                                 f"(at most {self._max_message_size})"))
            return
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as e:
            self._reply(self.dialect.error(None, f"Invalid JSON: {e}"))
            return
        if not isinstance(message, dict):
            self._reply(self.dialect.error(None, "A message must be a JSON object"))
            return
        transaction = message.get("transaction")
        if not isinstance(transaction, str | int) or isinstance(transaction, bool):
            transaction = None  # not something the client could match an error against
        if "sylkrtc" not in message:
            self._reply(self.dialect.error(transaction, "Missing 'sylkrtc' key"))
            return
        try:
            request = self.dialect.decode(message)
        except ValidationError as e:
            self._reply(self.dialect.error(transaction, str(e)))
            return
        answer = maybeDeferred(self._handle, request)
        answer.addCallbacks(lambda _: self._reply(self.dialect.ack(request.transaction)),
                            self._request_failed, errbackArgs=(request,))

    def send_event(self, event: Event) -> None:
        message = self.dialect.encode(event)
        if message is not None:
            self._reply(message)

    def _request_failed(self, failure: Failure, request: Request) -> None:
        if failure.check(APIError):
            reason = str(failure.value)
        else:
            self.log.failure("{name}: {request!r} failed", failure, name=self.name, request=request)
            reason = "Internal error"
        self._reply(self.dialect.error(request.transaction, reason))

    def _reply(self, message: dict[str, Any]) -> None:
        data = encode_json(message)
        if self._trace:
            self.log.info("{name} -> {payload}", name=self.name, payload=data.decode("utf-8"))
        self._send(data)
