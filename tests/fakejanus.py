"""An in-memory Janus 1.1.2 for unit tests.

It answers the core API (info, create, attach, message, keepalive, detach, destroy) and the SIP plugin's register
and unregister with the message shapes the real one sends (recorded against janus 1.1.2; see the Janus notes,
§1.2-1.4 and §2.2): plugin messages get an `ack`, then the answering event with the same transaction, and the
registration outcome later as an event with no transaction, routed by `sender`.

Nothing happens re-entrantly: the gateway's requests are answered only when the test calls `flush()`, in order, so
tests decide exactly what the gateway sees and when. `hold_registrations` keeps the outcome of registrations back
until `finish_registration()`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.internet.task import Clock

from sylk.gateway.janus.client import JanusAPI


class FakeJanus:
    def __init__(self, clock: Clock | None = None, api_secret: str = "s3cret", plugins: tuple[str, ...] = (
            "janus.plugin.sip",)) -> None:
        self.clock = clock or Clock()
        self.api_secret = api_secret
        self.plugins = plugins
        self.api = JanusAPI(self._received, self.clock, api_secret=api_secret, request_timeout=10)
        self.requests: list[dict[str, Any]] = []  # everything the gateway sent, decoded
        self.sessions: dict[int, set[int]] = {}  # session id -> handle ids
        self.registered: dict[int, str] = {}  # handle id -> username of a registered handle
        self.register_bodies: dict[int, dict[str, Any]] = {}
        self.answer = True  # False: stay silent (to test timeouts)
        self.registration_outcome: tuple[Any, ...] = ("registered",)  # or ("failed", 403, "Forbidden") or ()
        self.hold_registrations = False
        self._held: list[tuple[int, int]] = []  # (session, handle) whose registration outcome is held back
        self._ids = itertools.count(1000001)
        self._outbox: list[dict[str, Any]] = []

    # --- test controls ---

    def flush(self) -> None:
        """Deliver everything Janus has to say, including answers to requests those answers trigger."""
        while self._outbox:
            message = self._outbox.pop(0)
            self.api.message_received(json.dumps(message))

    def emit(self, message: dict[str, Any]) -> None:
        self._outbox.append(message)
        self.flush()

    def sip_event(self, session: int, handle: int, result: dict[str, Any], transaction: str | None = None) -> None:
        message: dict[str, Any] = {"janus": "event", "session_id": session, "sender": handle,
                                   "plugindata": {"plugin": "janus.plugin.sip", "data": {"sip": "event",
                                                                                          "result": result}}}
        if transaction is not None:
            message["transaction"] = transaction
        self.emit(message)

    def finish_registration(self, outcome: tuple[Any, ...] = ("registered",)) -> None:
        session, handle = self._held.pop(0)
        self._registration_outcome(session, handle, outcome)
        self.flush()

    def kinds(self) -> list[str]:
        """The verbs (and SIP requests) the gateway sent, in order, e.g. ['create', 'attach', 'message:register']."""
        return [f"message:{r['body']['request']}" if r["janus"] == "message" else r["janus"] for r in self.requests]

    def handles(self) -> set[int]:
        return set().union(*self.sessions.values()) if self.sessions else set()

    # --- the server side ---

    def _received(self, text: str) -> None:
        assert text == text.strip(), "Janus 1.1.2 rejects frames with trailing whitespace"
        request = json.loads(text)
        self.requests.append(request)
        if not self.answer:
            return
        transaction = request["transaction"]
        verb = request["janus"]
        if verb != "info" and request.get("apisecret") != self.api_secret:
            return self._reply(request, {"janus": "error", "error": {"code": 403, "reason": "Unauthorized request "
                                                                                            "(wrong or missing "
                                                                                            "secret/token)"}})
        session = request.get("session_id")
        if session is not None and session not in self.sessions:
            return self._reply(request, {"janus": "error", "error": {"code": 458, "reason":
                                                                     f"No such session {session}"}})
        handle = request.get("handle_id")
        if handle is not None and handle not in self.sessions[session]:
            return self._reply(request, {"janus": "error", "error": {"code": 459, "reason":
                                                                     f"No such handle {handle} in session"}})
        if verb == "info":
            self._reply(request, {"janus": "server_info", "name": "Janus WebRTC Server", "version": 1102,
                                  "version_string": "1.1.2", "session-timeout": 60,
                                  "plugins": {name: {"name": name} for name in self.plugins}})
        elif verb == "create":
            new = next(self._ids)
            self.sessions[new] = set()
            self._reply(request, {"janus": "success", "data": {"id": new}})
        elif verb == "attach":
            new = next(self._ids)
            self.sessions[session].add(new)
            self._reply(request, {"janus": "success", "session_id": session, "data": {"id": new}})
        elif verb == "keepalive":
            self._reply(request, {"janus": "ack", "session_id": session})
        elif verb == "detach":
            self.sessions[session].discard(handle)
            self.registered.pop(handle, None)
            self._reply(request, {"janus": "success", "session_id": session})
            self._outbox.append({"janus": "detached", "session_id": session, "sender": handle})
        elif verb == "destroy":
            for gone in self.sessions.pop(session):
                self.registered.pop(gone, None)
            self._reply(request, {"janus": "success", "session_id": session})
        elif verb == "message":
            self._reply(request, {"janus": "ack", "session_id": session})
            self._sip_request(session, handle, request["body"], transaction)
        else:
            self._reply(request, {"janus": "error", "error": {"code": 453, "reason": f"Unknown request '{verb}'"}})

    def _reply(self, request: dict[str, Any], message: dict[str, Any]) -> None:
        self._outbox.append(dict(message, transaction=request["transaction"]))

    def _sip_reply(self, session: int, handle: int, transaction: str, data: dict[str, Any]) -> None:
        self._outbox.append({"janus": "event", "session_id": session, "sender": handle, "transaction": transaction,
                             "plugindata": {"plugin": "janus.plugin.sip", "data": data}})

    def _sip_request(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        request = body.get("request")
        if request == "register":
            if handle in self.registered:
                return self._sip_reply(session, handle, transaction, {"sip": "event", "error_code": 445,
                                                                      "error": "Already registered"})
            if not str(body.get("username", "")).startswith("sip:"):
                return self._sip_reply(session, handle, transaction, {"sip": "event", "error_code": 446,
                                                                      "error": "Invalid user address"})
            self.register_bodies[handle] = body
            self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "registering"}})
            if self.hold_registrations:
                self._held.append((session, handle))
            else:
                self._registration_outcome(session, handle, self.registration_outcome)
        elif request == "unregister":
            if handle not in self.registered:
                return self._sip_reply(session, handle, transaction, {"sip": "event", "error_code": 447,
                                                                      "error": "Wrong state (not registered)"})
            self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "unregistering"}})
            user = self.registered.pop(handle)
            self._outbox.append(self._event(session, handle, {"event": "unregistered", "username": user,
                                                              "register_sent": True}))
        else:
            self._sip_reply(session, handle, transaction, {"sip": "event", "error_code": 442,
                                                           "error": f"Unknown request ({request})"})

    def _registration_outcome(self, session: int, handle: int, outcome: tuple[Any, ...]) -> None:
        if not outcome or handle not in self.sessions.get(session, ()):
            return
        user = self.register_bodies[handle]["username"][4:].partition("@")[0]
        if outcome[0] == "registered":
            self.registered[handle] = user
            self._outbox.append(self._event(session, handle, {"event": "registered", "username": user,
                                                              "register_sent": True, "master_id": handle}))
        else:
            _, code, reason = outcome
            self._outbox.append(self._event(session, handle, {"event": "registration_failed", "code": code,
                                                              "reason": reason}))

    @staticmethod
    def _event(session: int, handle: int, result: dict[str, Any]) -> dict[str, Any]:
        return {"janus": "event", "session_id": session, "sender": handle,
                "plugindata": {"plugin": "janus.plugin.sip", "data": {"sip": "event", "result": result}}}
