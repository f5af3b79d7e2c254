"""The Janus API over one connection: transactions, sessions and handles; no I/O of its own.

`JanusAPI` is given a function that sends text frames and is fed the frames Janus sends back, so it runs the same
over a real WebSocket and in tests. Rules it follows (see docs/architecture.md and the Janus 1.1.2 notes):

- every request has a transaction and a timeout; `success`/`error`/`server_info`/`pong` settle it;
- for plugin messages, `ack` only means "accepted": the first `event` from the same handle carrying the same
  transaction is the plugin's answer, and an `error` inside it fails the request;
- everything else is routed by `session_id` and `sender` (the handle), never by transaction, because the SIP
  plugin reuses the transaction of a request for later unrelated events and sends some events without one;
- frames are sent as compact JSON with nothing after it (Janus 1.1.2 rejects a frame with trailing whitespace);
- each session is kept alive with a keepalive that is pushed back by any other request on it;
- nothing Janus sends can break the link: a frame that is not what the API promises is logged and dropped, and an
  exception raised while an event is handled is logged with its traceback and goes no further (the handle's own
  listener contains it first: see janus/lines.py). The link reports itself stalled after STALLED_AFTER_TIMEOUTS
  requests in a row that got no answer.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure


# Requests in a row that time out before Janus counts as stalled (one slow answer is not a stall).
STALLED_AFTER_TIMEOUTS = 3

# Values kept out of traces: the API secret and the accounts' HA1s.
_SECRETS = re.compile(r'("(?:apisecret|ha1_secret|secret)":)"[^"]*"')


class JanusError(Exception):
    """Janus (or one of its plugins) refused a request."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"Janus error {self.code}: {self.reason}"


class JanusTimeout(Exception):
    def __str__(self) -> str:
        return f"Janus did not answer {self.args[0]!r} within {self.args[1]:g} s"


class JanusDisconnected(Exception):
    def __str__(self) -> str:
        return f"Janus connection lost: {self.args[0]}" if self.args else "Janus connection lost"


class HandleListener(Protocol):
    def handle_event(self, message: dict[str, Any]) -> None:
        """An event for this handle that is not the answer to a request (plugin events, webrtcup, hangup, ...)."""

    def handle_detached(self) -> None:
        """Janus detached the handle by itself."""


@dataclass
class _Pending:
    deferred: Deferred[dict[str, Any]]
    request: str
    plugin_reply: bool
    handle_id: int | None
    timer: IDelayedCall
    sent_at: float


class JanusAPI:
    log = Logger()

    def __init__(self, send: Callable[[str], None], clock: IReactorTime, *, api_secret: str = "",
                 request_timeout: float = 30.0, trace: bool = False,
                 on_stalled: Callable[[str], None] | None = None,
                 answered_in: Callable[[float], None] | None = None) -> None:
        """`answered_in` is told how long each answered request took, from sending to its answer."""
        self._send = send
        self._clock = clock
        self._api_secret = api_secret
        self._request_timeout = request_timeout
        self._trace = trace
        self._transactions = (f"sg{n}" for n in itertools.count(1))
        self._pending: dict[str, _Pending] = {}
        self.sessions: dict[int, JanusSession] = {}
        self.keepalive_interval: float | None = 25.0
        self._lost: str | None = None
        self._on_stalled = on_stalled
        self._answered_in = answered_in
        self._timeouts_in_a_row = 0
        self.last_answer_at: float | None = None  # when Janus last answered a request (events do not count)

    # --- requests ---

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered (nor timed out)."""
        return len(self._pending)

    def info(self, timeout: float | None = None) -> Deferred[dict[str, Any]]:
        return self.request({"janus": "info"}, timeout=timeout)

    def ping(self, timeout: float) -> Deferred[dict[str, Any]]:
        """Janus's core answers `ping` itself, without any plugin: an answer shows the link and Janus are alive."""
        return self.request({"janus": "ping"}, timeout=timeout)

    def create_session(self, on_lost: Callable[[str], None]) -> Deferred[JanusSession]:
        def created(reply: dict[str, Any]) -> JanusSession:
            session = JanusSession(self, reply["data"]["id"], on_lost, self._clock)
            self.sessions[session.id] = session
            if self._lost is not None:  # lost while the answer was on its way
                session.lost(self._lost)
            return session
        return self.request({"janus": "create"}).addCallback(created)

    def request(self, payload: dict[str, Any], *, session_id: int | None = None, handle_id: int | None = None,
                plugin_reply: bool = False, timeout: float | None = None) -> Deferred[dict[str, Any]]:
        """Send a request; the Deferred fires with Janus's answer or fails with JanusError, JanusTimeout or
        JanusDisconnected. `plugin_reply`: the answer is the plugin's event, not the `ack`. `timeout`: instead of
        the API's request timeout."""
        if self._lost is not None:
            return fail(JanusDisconnected(self._lost))
        transaction = next(self._transactions)
        message = dict(payload, transaction=transaction)
        if self._api_secret:
            message["apisecret"] = self._api_secret
        if session_id is not None:
            message["session_id"] = session_id
        if handle_id is not None:
            message["handle_id"] = handle_id
        deferred: Deferred[dict[str, Any]] = Deferred(lambda _: self._forget(transaction))
        wait = self._request_timeout if timeout is None else timeout
        timer = self._clock.callLater(wait, self._timed_out, transaction, wait)
        self._pending[transaction] = _Pending(deferred, payload["janus"], plugin_reply, handle_id, timer,
                                              self._clock.seconds())
        text = json.dumps(message, separators=(",", ":"))
        if self._trace:
            self.log.info("janus <- {text}", text=_SECRETS.sub(r'\1"***"', text))
        try:
            self._send(text)
        except Exception as e:  # the socket is closing: the request cannot go out
            self._forget(transaction)
            return fail(JanusDisconnected(str(e)))
        return deferred

    # --- input from the connection ---

    def message_received(self, text: str) -> None:
        if self._trace:
            self.log.info("janus -> {text}", text=text)
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            self.log.error("Ignoring a frame from Janus that is not JSON: {text!r}", text=text[:200])
            return
        if not isinstance(message, dict):
            self.log.error("Ignoring a frame from Janus that is not an object: {text!r}", text=text[:200])
            return
        self._timeouts_in_a_row = 0  # Janus is talking
        kind = message.get("janus")
        transaction = message.get("transaction")
        pending = self._pending.get(transaction) if isinstance(transaction, str) else None
        if pending is not None:
            if kind == "ack" and pending.plugin_reply:
                return  # accepted; the answer follows as an event
            if kind != "event" or (pending.plugin_reply and message.get("sender") == pending.handle_id):
                self._settle(transaction, message)  # type: ignore[arg-type]
                return
        session_id = message.get("session_id")
        session = self.sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None:
            if kind not in ("ack", "success"):
                self.log.debug("Janus message for no known session: {message}", message=message)
            return
        try:
            session.message_received(message)
        except Exception:
            # The last line of defence: whatever the event was, it must not reach the link to Janus, which every
            # browser shares. (The handle's listener contains its own failures first, ending only what they concern.)
            self.log.failure("Handling a message from Janus failed (session {id}); dropped it: {text!r}",
                             id=session.id, text=text[:500])

    def connection_lost(self, reason: str) -> None:
        """The connection to Janus is gone: so is every session on it (Janus destroys them)."""
        if self._lost is not None:
            return
        self._lost = reason
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.timer.cancel()
            entry.deferred.errback(JanusDisconnected(reason))
        for session in list(self.sessions.values()):
            session.lost(reason)

    # --- internals ---

    def _settle(self, transaction: str, message: dict[str, Any]) -> None:
        entry = self._pending.pop(transaction)
        entry.timer.cancel()
        self.last_answer_at = answered_at = self._clock.seconds()
        error = _error_in(message)
        if error is not None:
            entry.deferred.errback(error)
        else:
            entry.deferred.callback(message)
        if self._answered_in is not None:  # after the answer is delivered, which must not depend on it
            self._answered_in(answered_at - entry.sent_at)

    def _forget(self, transaction: str) -> None:
        entry = self._pending.pop(transaction, None)
        if entry is not None and entry.timer.active():
            entry.timer.cancel()

    def _timed_out(self, transaction: str, wait: float) -> None:
        entry = self._pending.pop(transaction, None)
        if entry is None:
            return
        self._timeouts_in_a_row += 1
        entry.deferred.errback(JanusTimeout(entry.request, wait))
        if self._timeouts_in_a_row >= STALLED_AFTER_TIMEOUTS and self._on_stalled is not None and self._lost is None:
            self._on_stalled(f"{self._timeouts_in_a_row} requests in a row got no answer")


def _error_in(message: dict[str, Any]) -> JanusError | None:
    if message.get("janus") == "error":
        error = message.get("error")
        error = error if isinstance(error, dict) else {}
        return JanusError(_code(error.get("code")), str(error.get("reason", "unknown error"))[:500])
    data = plugin_data(message)
    if "error" in data:  # some plugin errors come with error_code 0, so the key decides
        return JanusError(_code(data.get("error_code")), str(data["error"])[:500])
    return None


def _code(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def plugin_data(message: dict[str, Any]) -> dict[str, Any]:
    plugindata = message.get("plugindata")
    data = plugindata.get("data") if isinstance(plugindata, dict) else None
    return data if isinstance(data, dict) else {}


class JanusSession:
    log = Logger()

    def __init__(self, api: JanusAPI, session_id: int, on_lost: Callable[[str], None], clock: IReactorTime) -> None:
        self.api = api
        self.id = session_id
        self.handles: dict[int, JanusHandle] = {}
        self._detached_waiters: dict[int, list[Deferred[None]]] = {}
        self._on_lost = on_lost
        self._clock = clock
        self._keepalive: IDelayedCall | None = None
        self._gone = False
        self._schedule_keepalive()

    def request(self, payload: dict[str, Any], *, handle_id: int | None = None,
                plugin_reply: bool = False) -> Deferred[dict[str, Any]]:
        if self._gone:
            return fail(JanusDisconnected("session is gone"))
        self._schedule_keepalive()
        return self.api.request(payload, session_id=self.id, handle_id=handle_id, plugin_reply=plugin_reply)

    def attach(self, plugin: str, listener: HandleListener) -> Deferred[JanusHandle]:
        def attached(reply: dict[str, Any]) -> JanusHandle:
            handle = JanusHandle(self, reply["data"]["id"], listener)
            if self._gone:
                raise JanusDisconnected("session is gone")
            self.handles[handle.id] = handle
            return handle
        return self.request({"janus": "attach", "plugin": plugin}).addCallback(attached)

    def when_detached(self, handle_id: int, timeout: float) -> Deferred[None]:
        """Fires once Janus has let the handle go: its `detached` event, sent after the plugin destroyed its side of
        the handle on a loop thread, some time after the detach request (or Janus's own decision) was answered. Fires
        anyway when the session goes, or after `timeout` seconds."""
        if self._gone:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        waiters = self._detached_waiters.setdefault(handle_id, [])
        waiters.append(waiter)

        def waited(_: object) -> None:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self._detached_waiters.get(handle_id) is waiters:
                del self._detached_waiters[handle_id]
        waiter.addTimeout(timeout, self._clock, onTimeoutCancel=lambda result, timeout: None)
        return waiter.addBoth(waited)

    def destroy(self) -> Deferred[None]:
        """Destroy the session and all its handles; errors are logged, not raised (there is nothing to undo)."""
        if self._gone:
            return succeed(None)
        request = self.request({"janus": "destroy"})
        self._forget()
        return request.addCallbacks(lambda _: None, self._destroy_failed)

    def message_received(self, message: dict[str, Any]) -> None:
        kind = message.get("janus")
        if kind == "timeout":
            self.lost("Janus session timed out")
            return
        sender = message.get("sender")
        if kind == "detached" and isinstance(sender, int):
            self._fire_detached(sender)
        handle = self.handles.get(sender) if isinstance(sender, int) else None
        if handle is None:
            return
        if kind == "detached":
            self.handles.pop(handle.id, None)
            handle.listener.handle_detached()
        else:
            handle.listener.handle_event(message)

    def lost(self, reason: str) -> None:
        if not self._gone:
            self._forget()
            self._on_lost(reason)

    def _fire_detached(self, handle_id: int) -> None:
        for waiter in list(self._detached_waiters.get(handle_id, ())):
            waiter.callback(None)

    def _forget(self) -> None:
        self._gone = True
        self.handles.clear()
        for handle_id in list(self._detached_waiters):
            self._fire_detached(handle_id)
        self.api.sessions.pop(self.id, None)
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()

    def _schedule_keepalive(self) -> None:
        interval = self.api.keepalive_interval
        if interval is None:
            return
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.reset(interval)
        else:
            self._keepalive = self._clock.callLater(interval, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self.request({"janus": "keepalive"}).addErrback(self._keepalive_failed)

    def _keepalive_failed(self, failure: Failure) -> None:
        if failure.check(JanusError) and failure.value.code == 458:  # session not found: Janus dropped it
            self.lost("Janus no longer knows the session")
        elif not failure.check(JanusDisconnected):
            self.log.warn("Keepalive for Janus session {id} failed: {error}", id=self.id, error=failure.value)

    def _destroy_failed(self, failure: Failure) -> None:
        if not failure.check(JanusDisconnected):
            self.log.warn("Destroying Janus session {id} failed: {error}", id=self.id, error=failure.value)


class JanusHandle:
    def __init__(self, session: JanusSession, handle_id: int, listener: HandleListener) -> None:
        self.session = session
        self.id = handle_id
        self.listener = listener

    def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> Deferred[dict[str, Any]]:
        """Send a plugin message; fires with the plugin's answering event (the whole Janus message)."""
        payload: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        return self.session.request(payload, handle_id=self.id, plugin_reply=True)

    def detach(self) -> Deferred[dict[str, Any]]:
        self.session.handles.pop(self.id, None)
        return self.session.request({"janus": "detach"}, handle_id=self.id)
