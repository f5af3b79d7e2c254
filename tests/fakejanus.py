"""An in-memory Janus 1.1.2 for unit tests.

It answers the core API (info, create, attach, message, trickle, keepalive, detach, destroy) and the SIP plugin's
register (real, identity-only with `send_register: false`, and helpers bound by `master_id`), unregister, call,
accept, decline and hangup with the message shapes the real one sends (recorded against janus 1.1.2; see the
Janus notes, §1.2-1.4 and §2.2-2.4): plugin messages get an `ack`, then the answering event with the same
transaction; registration outcomes and call progress come later as events routed by `sender`. As in Janus,
`master_id` is an id of its own, not the handle's; calls need a registered (or identity-only, or helper) handle;
unregistering detaches the master's helpers. As in Janus 1.1.2, `hangup` in a state that has no call is ignored
without an answer (only the ack), a `hangup` event carries its Call-ID beside `result`, and a handle whose INVITE was
cancelled after a provisional response (`ringing`/`early_media`) is stuck: no `hangup` event, no further calls.

Nothing happens re-entrantly: the gateway's requests are answered only when the test calls `flush()`, in order, so
tests decide exactly what the gateway sees and when. `hold_registrations` keeps the outcome of registrations back
until `finish_registration()`. Requests are named by verb (`attach`), SIP request (`register`) or SIP request and type
(`register:helper`): those in `unanswered` are never answered, those in `held` wait for `release()`. With
`detached_later`, a handle's `detached` event (which the real Janus sends after the plugin let the handle go, on a
loop thread, some time after the answer) waits for `release_detached()`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from sylk.gateway.janus.client import JanusAPI
from sylk.gateway.util import OneShotObserver


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
        self.register_bodies: dict[int, dict[str, Any]] = {}  # real registrations only
        self.status: dict[int, str] = {}  # handle -> identity | registered | helper (absent: nothing set)
        self.master_ids: dict[int, int] = {}  # master_id -> master handle
        self.helpers: dict[int, int] = {}  # helper handle -> master handle
        self.calls: dict[int, str] = {}  # handle -> Call-ID of its call
        self.call_bodies: dict[int, dict[str, Any]] = {}  # handle -> the last `call` body
        self.answered: set[int] = set()  # handles whose call was answered (by either side)
        self.provisional: set[int] = set()  # handles whose outgoing call had a provisional response
        self.stuck: set[int] = set()  # handles Janus 1.1.2 leaves unusable (cancelled after a provisional)
        self.reinvited: set[int] = set()  # handles with a re-INVITE from the far end waiting for our answer
        self.holds: list[tuple[int, str]] = []  # (handle, "hold <direction>" or "unhold") as asked
        self.transfers: list[tuple[int, dict[str, Any]]] = []  # (handle, body) of our REFERs and refusals
        self.messages: list[tuple[int, dict[str, Any]]] = []  # (handle, body) of MESSAGEs sent
        self.message_outcome: tuple[int, str] | None = (200, "OK")  # their answer; None: never answered
        self.update_outcome = "accepted"  # what the far end does with our re-INVITE: "accepted" or "silent"
        self._jsep: dict[str, Any] | None = None  # of the request being handled
        self.trickles: list[dict[str, Any]] = []
        self.call_outcome: tuple[Any, ...] = ()  # () ring forever; ("accepted",); ("hangup", 486, "Busy Here")
        self.answer = True  # False: stay silent (to test timeouts)
        self.unanswered: set[str] = set()  # requests (see the module doc) to stay silent about
        self.held: set[str] = set()  # requests to answer only at release()
        self._held_requests: list[dict[str, Any]] = []
        self.registration_outcome: tuple[Any, ...] = ("registered",)  # or ("failed", 403, "Forbidden") or ()
        self.hold_registrations = False
        self.detached_later = False
        self._late_detached: list[dict[str, Any]] = []
        self._held: list[tuple[int, int]] = []  # (session, handle) whose registration outcome is held back
        self._ids = itertools.count(1000001)
        self._outbox: list[dict[str, Any]] = []

    # --- test controls ---

    def flush(self) -> None:
        """Deliver everything Janus has to say, including answers to requests those answers trigger."""
        while self._outbox:
            message = self._outbox.pop(0)
            self.api.message_received(json.dumps(message))

    def release_detached(self) -> None:
        self._outbox.extend(self._late_detached)
        self._late_detached = []
        self.flush()

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

    def incoming_call(self, session: int, master: int, caller: str = "sip:bob@example.com",
                      displayname: str | None = '"Bob"', call_id: str = "call-1", sdp: str | None = "v=0 offer") -> int:
        """An INVITE for the account of `master`: to the master if idle, else to an idle helper, else 486 and
        `missed_call`. Returns the handle that got it (or the master)."""
        lines = [master] + [h for h, m in self.helpers.items() if m == master]
        idle = [h for h in lines if h not in self.calls]
        result: dict[str, Any] = {"event": "incomingcall", "username": caller, "callee": "sip:alice@example.com",
                                  "call_id": call_id}
        if displayname is not None:
            result["displayname"] = displayname
        if not idle:
            self.sip_event(session, master, {"event": "missed_call", "caller": caller, "displayname": displayname})
            return master
        handle = idle[0]
        self.calls[handle] = call_id
        message = self._event(session, handle, result)
        if sdp is not None:
            message["jsep"] = {"type": "offer", "sdp": sdp}
        self.emit(message)
        return handle

    def remote_hangup(self, session: int, handle: int, code: int = 200, reason: str = "Session Terminated") -> None:
        call_id = self.calls.pop(handle)
        self.answered.discard(handle)
        self.provisional.discard(handle)
        self.emit(self._hangup_event(session, handle, code, reason, call_id))
        self.emit({"janus": "hangup", "session_id": session, "sender": handle, "reason": "Close PC"})

    def webrtcup(self, session: int, handle: int) -> None:
        self.emit({"janus": "webrtcup", "session_id": session, "sender": handle})

    def answer_call(self, session: int, handle: int, sdp: str | None = "v=0 answer") -> None:
        self.answered.add(handle)
        message = self._event(session, handle, {"event": "accepted", "username": "sip:bob@example.com"})
        if sdp is not None:
            message["jsep"] = {"type": "answer", "sdp": sdp}
        self.emit(message)

    def remote_reinvite(self, session: int, handle: int, sdp: str | None = "v=0 reoffer\r\na=sendrecv") -> None:
        """The far end sends a re-INVITE (passed up as `updatingcall`: the gateway turns autoaccept off)."""
        self.reinvited.add(handle)
        message = self._event(session, handle, {"event": "updatingcall", "username": "sip:bob@example.com",
                                                 "call_id": self.calls[handle]})
        if sdp is not None:
            message["jsep"] = {"type": "offer", "sdp": sdp}
        self.emit(message)

    def refer(self, session: int, handle: int, refer_to: str = "sip:carol@example.com",
              referred_by: str | None = "<sip:bob@example.com>", replaces: str | None = None) -> int:
        """The far end of the call on `handle` sends a REFER (Janus answers it 202 by itself); returns refer_id."""
        refer_id = next(self._ids)
        result: dict[str, Any] = {"event": "transfer", "refer_id": refer_id, "refer_to": refer_to}
        if referred_by is not None:
            result["referred_by"] = referred_by
        if replaces is not None:
            result["replaces"] = replaces
        self.sip_event(session, handle, result)
        return refer_id

    def refer_notify(self, session: int, handle: int, status_line: str, substate: str = "active") -> None:
        """A NOTIFY about our REFER, carrying the status of the far end's call to the target."""
        self.sip_event(session, handle, {"event": "notify", "notify": "refer", "substate": substate,
                                         "content-type": "message/sipfrag", "content": status_line + "\r\n"})

    def incoming_message(self, session: int, handle: int, content: str = "hello", content_type: str = "text/plain",
                         sender: str = "sip:bob@example.com", displayname: str | None = "Bob") -> None:
        result: dict[str, Any] = {"event": "message", "sender": sender, "content": content,
                                  "content_type": content_type}
        if displayname is not None:
            result["displayname"] = displayname
        self.sip_event(session, handle, result)

    def ringing(self, session: int, handle: int) -> None:
        self.provisional.add(handle)
        self.sip_event(session, handle, {"event": "ringing"})

    def early_media(self, session: int, handle: int, sdp: str = "v=0 early") -> None:
        self.provisional.add(handle)
        message = self._event(session, handle, {"event": "progress", "username": "sip:bob@example.com"})
        message["jsep"] = {"type": "answer", "sdp": sdp}
        self.emit(message)

    def release(self) -> None:
        """Answer the held requests, in order, and stop holding."""
        self.held = set()
        held, self._held_requests = self._held_requests, []
        for request in held:
            self._process(request)
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
        names = self._names(request)
        if not self.answer or names & self.unanswered:
            return
        if names & self.held:
            self._held_requests.append(request)
            return
        self._process(request)

    @staticmethod
    def _names(request: dict[str, Any]) -> set[str]:
        body = request.get("body") or {}
        names = {request["janus"]}
        if "request" in body:
            names |= {body["request"], f"{body['request']}:{body.get('type')}"}
        return names

    def _process(self, request: dict[str, Any]) -> None:
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
        elif verb == "ping":
            self._reply(request, {"janus": "pong"})
        elif verb == "keepalive":
            self._reply(request, {"janus": "ack", "session_id": session})
        elif verb == "detach":
            self._forget_handle(session, handle)
            self._reply(request, {"janus": "success", "session_id": session})
            self._detached(session, handle)
        elif verb == "destroy":
            for gone in list(self.sessions[session]):
                self._forget_handle(session, gone)
            del self.sessions[session]
            self._reply(request, {"janus": "success", "session_id": session})
        elif verb == "trickle":
            self.trickles.append(request)
            self._reply(request, {"janus": "ack", "session_id": session})
        elif verb == "message":
            self._reply(request, {"janus": "ack", "session_id": session})
            self._jsep = request.get("jsep")
            self._sip_request(session, handle, request["body"], transaction)
        else:
            self._reply(request, {"janus": "error", "error": {"code": 453, "reason": f"Unknown request '{verb}'"}})

    def _reply(self, request: dict[str, Any], message: dict[str, Any]) -> None:
        self._outbox.append(dict(message, transaction=request["transaction"]))

    def _sip_reply(self, session: int, handle: int, transaction: str, data: dict[str, Any]) -> None:
        self._outbox.append({"janus": "event", "session_id": session, "sender": handle, "transaction": transaction,
                             "plugindata": {"plugin": "janus.plugin.sip", "data": data}})

    def _forget_handle(self, session: int, handle: int) -> None:
        self.sessions[session].discard(handle)
        for table in (self.registered, self.status, self.helpers, self.calls):
            table.pop(handle, None)
        for flags in (self.answered, self.provisional, self.stuck, self.reinvited):
            flags.discard(handle)
        for master_id, master in list(self.master_ids.items()):
            if master == handle:
                del self.master_ids[master_id]

    def _sip_error(self, session: int, handle: int, transaction: str, code: int, error: str) -> None:
        self._sip_reply(session, handle, transaction, {"sip": "event", "error_code": code, "error": error})

    def _sip_request(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        request = body.get("request")
        handler = getattr(self, f"_sip_{request}", None)
        if handler is None:
            return self._sip_error(session, handle, transaction, 442, f"Unknown request ({request})")
        handler(session, handle, body, transaction)

    def _master_id(self, handle: int) -> int:
        for master_id, master in self.master_ids.items():
            if master == handle:
                return master_id
        master_id = handle + 777  # like Janus: not the handle id
        self.master_ids[master_id] = handle
        return master_id

    def _sip_register(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle in self.registered:
            return self._sip_error(session, handle, transaction, 445, "Already registered")
        if not str(body.get("username", "")).startswith("sip:"):
            return self._sip_error(session, handle, transaction, 446, "Invalid user address")
        user = body["username"][4:].partition("@")[0]
        if body.get("type") == "helper":
            master = self.master_ids.get(body.get("master_id"))  # type: ignore[arg-type]
            if master is None:
                return self._sip_error(session, handle, transaction, 453,
                                       f"No such master session ({body.get('master_id')})")
            self.helpers[handle] = master
            self.status[handle] = "helper"
            return self._sip_reply(session, handle, transaction, {"sip": "event", "result": {
                "event": "registered", "username": user, "register_sent": False, "helper": True,
                "master_id": body["master_id"]}})
        if body.get("send_register") is False:
            self.status[handle] = "identity"
            return self._sip_reply(session, handle, transaction, {"sip": "event", "result": {
                "event": "registered", "username": user, "register_sent": False,
                "master_id": self._master_id(handle)}})
        self.register_bodies[handle] = body
        self.status.pop(handle, None)  # registering: no calls until the outcome
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "registering"}})
        if self.hold_registrations:
            self._held.append((session, handle))
        else:
            self._registration_outcome(session, handle, self.registration_outcome)

    def _sip_unregister(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.registered:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not registered)")
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "unregistering"}})
        user = self.registered.pop(handle)
        self.status.pop(handle, None)
        self._outbox.append(self._event(session, handle, {"event": "unregistered", "username": user,
                                                          "register_sent": True}))
        for helper, master in list(self.helpers.items()):
            if master == handle:  # Janus lets the helpers go with the registration
                self._forget_handle(session, helper)
                self._detached(session, helper)

    def _detached(self, session: int, handle: int) -> None:
        message = {"janus": "detached", "session_id": session, "sender": handle}
        (self._late_detached if self.detached_later else self._outbox).append(message)

    def _sip_call(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.status:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not registered)")
        if handle in self.calls or handle in self.stuck:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (already in a call?)")
        call_id = body.get("call_id") or f"call-{transaction}"
        self.calls[handle] = call_id
        self.call_bodies[handle] = body
        self._sip_reply(session, handle, transaction, {"sip": "event", "call_id": call_id,
                                                       "result": {"event": "calling", "call_id": call_id}})
        if self.call_outcome[:1] == ("accepted",):
            self.answered.add(handle)
            message = self._event(session, handle, {"event": "accepted", "username": body["uri"]})
            message["jsep"] = {"type": "answer", "sdp": "v=0 answer"}
            message["transaction"] = transaction  # later events of a call reuse its transaction
            self._outbox.append(message)
        elif self.call_outcome[:1] == ("hangup",):
            self.calls.pop(handle)
            self._outbox.append(self._hangup_event(session, handle, self.call_outcome[1], self.call_outcome[2],
                                                   call_id))

    def _sip_dtmf_info(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.calls:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not in a call?)")
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "dtmfsent"}})

    def _sip_update(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        jsep = self._jsep or {}
        if handle not in self.answered:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not in a call?)")
        if not jsep.get("sdp") or jsep.get("update") is not True:
            return self._sip_error(session, handle, transaction, 448, "Missing SDP update")
        if jsep["type"] == "answer":
            if handle not in self.reinvited:
                return self._sip_error(session, handle, transaction, 448, "SDP type answer is incompatible")
            self.reinvited.discard(handle)
            return self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "updated"}})
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "updating"}})
        if self.update_outcome == "accepted":
            message = self._event(session, handle, {"event": "accepted", "username": "sip:bob@example.com"})
            message["jsep"] = {"type": "answer", "sdp": "v=0 reanswer"}
            self._outbox.append(message)

    def _sip_hold(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.answered or handle in self.reinvited:
            return  # Janus 1.1.2 ignores it, with no answer beyond the ack
        self.holds.append((handle, f"hold {body.get('direction', 'sendonly')}"))
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "holding"}})

    def _sip_unhold(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.answered or handle in self.reinvited:
            return
        self.holds.append((handle, "unhold"))
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "resuming"}})

    def _sip_accept(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.calls:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (no call to accept)")
        self.answered.add(handle)
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "accepted"}})

    def _sip_message(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if "uri" in body:
            if self.status.get(handle) not in ("identity", "registered"):
                return self._sip_error(session, handle, transaction, 447, "Wrong state (not registered)")
            call_id = body.get("call_id") or f"message-{transaction}"
        elif handle in self.calls:
            call_id = self.calls[handle]
        else:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not in a call?)")
        self.messages.append((handle, body))
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "messagesent",
                                                                                  "call_id": call_id}})
        if self.message_outcome is not None:
            code, reason = self.message_outcome
            message = self._event(session, handle, {"event": "messagedelivery", "code": code, "reason": reason})
            message["plugindata"]["data"]["call_id"] = call_id
            self._outbox.append(message)

    def _sip_transfer(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.answered:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (not in a call?)")
        if "replace" in body and body["replace"] not in self.calls.values():
            return self._sip_error(session, handle, transaction, 454, f"No such call-ID {body['replace']}")
        self.transfers.append((handle, body))
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "transferring"}})

    def _sip_decline(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if "refer_id" in body:  # refusing a transfer request, not the call
            self.transfers.append((handle, body))
            return self._sip_reply(session, handle, transaction, {"sip": "event", "result": {
                "event": "declining", "refer_id": body["refer_id"], "code": body.get("code", 603)}})
        if handle not in self.calls:
            return self._sip_error(session, handle, transaction, 447, "Wrong state (no call to decline)")
        call_id = self.calls.pop(handle)
        code = body.get("code", 486)
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "declining",
                                                                                  "code": code}})
        self._outbox.append(self._hangup_event(session, handle, code, "Busy Here", call_id))

    def _sip_hangup(self, session: int, handle: int, body: dict[str, Any], transaction: str) -> None:
        if handle not in self.calls:
            return  # Janus 1.1.2 ignores it, with no answer beyond the ack
        call_id = self.calls.pop(handle)
        self._sip_reply(session, handle, transaction, {"sip": "event", "result": {"event": "hangingup"}})
        if handle in self.provisional and handle not in self.answered:
            self.provisional.discard(handle)
            self.stuck.add(handle)  # CANCEL after a provisional response: Janus 1.1.2 never reports the end
            return
        code, reason = (200, "to BYE") if handle in self.answered else (487, "Request Terminated")  # BYE / CANCEL
        self.answered.discard(handle)
        self._outbox.append(self._hangup_event(session, handle, code, reason, call_id))
        self._outbox.append({"janus": "hangup", "session_id": session, "sender": handle, "reason": "Close PC"})

    def _registration_outcome(self, session: int, handle: int, outcome: tuple[Any, ...]) -> None:
        if not outcome or handle not in self.sessions.get(session, ()):
            return
        user = self.register_bodies[handle]["username"][4:].partition("@")[0]
        if outcome[0] == "registered":
            self.registered[handle] = user
            self.status[handle] = "registered"
            self._outbox.append(self._event(session, handle, {"event": "registered", "username": user,
                                                              "register_sent": True,
                                                              "master_id": self._master_id(handle)}))
        else:
            _, code, reason = outcome
            self._outbox.append(self._event(session, handle, {"event": "registration_failed", "code": code,
                                                              "reason": reason}))

    @classmethod
    def _hangup_event(cls, session: int, handle: int, code: int, reason: str, call_id: str | None) -> dict[str, Any]:
        message = cls._event(session, handle, {"event": "hangup", "code": code, "reason": reason})
        if call_id is not None:
            message["plugindata"]["data"]["call_id"] = call_id  # beside `result`, as Janus puts it
        return message

    @staticmethod
    def _event(session: int, handle: int, result: dict[str, Any]) -> dict[str, Any]:
        return {"janus": "event", "session_id": session, "sender": handle,
                "plugindata": {"plugin": "janus.plugin.sip", "data": {"sip": "event", "result": result}}}


class FakeLink:
    """The connector as the backend sees it: the current API (None while Janus is away) and when it comes back."""

    def __init__(self, api: JanusAPI | None, budget: int = 2000) -> None:
        self.api = api
        self.budget = budget
        self.label = "fake"
        self._available = OneShotObserver()
        if api is not None:
            self._available.fire()

    def when_available(self) -> Deferred[None]:
        return self._available.when_fired()

    def account_budget(self) -> int:
        return self.budget

    def lose(self, reason: str = "Janus went away") -> None:
        """Janus's connection drops: every session on it is lost."""
        api, self.api = self.api, None
        self._available = OneShotObserver()
        if api is not None:
            api.connection_lost(reason)

    def connect(self, api: JanusAPI) -> None:
        """A (new) Janus is connected and checked."""
        self.api = api
        self._available.fire()
