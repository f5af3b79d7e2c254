"""One call on one of an account's lines in Janus's SIP plugin: `JanusSIPCall` (ISIPCall).

Requests about the call go to the line's handle; the SIP plugin's events about it are dispatched by name to
`_EH_<event>`, and the call tells its ICallObserver (the browser-facing `Call`) with direct calls. Janus 1.1.2 does
not report every outcome (see docs/architecture.md, "Call control on Janus 1.1.2"): each gap is covered here by a
bounded wait.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.errors import APIError, BackendUnavailable
from sylk.gateway.interfaces import ICallObserver, ISIPCall
from sylk.gateway.janus import sipcodec
from sylk.gateway.janus.client import JanusHandle, plugin_data
from sylk.gateway.sip import Originator
from sylk.gateway.util import Timer

if TYPE_CHECKING:
    from sylk.gateway.janus.lines import JanusSIPUserAgent, _Line

# How long a call waits for Janus to report its end after a hangup or decline before it gives the line up (under
# Call's TERMINATE_TIMEOUT, so the backend is clean when the browser is told).
HANGUP_WAIT = 8.0
# How long after a re-INVITE of Janus's own (hold, unhold, our answer to the far end's) the next one waits: until
# the far end's 200 (or ACK) Janus drops a hold or unhold without a word and takes a new offer as a second answer.
REINVITE_SETTLE = 1.5
# Holds, unholds and answers to re-INVITEs that may wait for the previous one to settle, per call.
MAX_WAITING_REINVITES = 4
# How long a transfer may go on after the far end's last NOTIFY: a ringing target answers within SIP's Timer C.
TRANSFER_PROGRESS_WAIT = 185.0


@implementer(ISIPCall)
class JanusSIPCall:
    """A call on one line. Candidates that arrive before the call (or the answer) has gone to Janus wait."""

    log = Logger()

    def __init__(self, agent: JanusSIPUserAgent, direction: str, observer: ICallObserver | None,
                 line: _Line | None = None) -> None:
        self.agent = agent
        self.direction = direction
        self.line = line
        # The SIP Call-ID; ours for outgoing calls (Janus takes it), the caller's for incoming ones.
        self.call_id: str | None = secrets.token_urlsafe(18) if direction == "outgoing" else None
        self.headers: dict[str, str] = {}
        self.remote_uri = ""  # the far end, user@domain
        self.calling = False  # outgoing: the `call` request went to Janus
        self._observer = observer
        self._sent = False  # our SDP (offer or answer) is with Janus: candidates can follow
        self._waiting_candidates: list[list[dict[str, Any]]] = []
        self._answered = False  # incoming: Janus took our `accept`
        self._accepted = False
        self._hang_up_when_placed = False
        self._hangup_wait = Timer(agent.clock, self._timer_failed)  # our hangup is out, its end not reported yet
        self._update_wait = Timer(agent.clock, self._timer_failed)  # our re-INVITE is out, its answer not in yet
        self._transfer_wait = Timer(agent.clock, self._timer_failed)  # our REFER is out, its outcome not in yet
        self._settling = Timer(agent.clock, self._timer_failed)  # a re-INVITE of Janus's own may still be open
        self._waiting_to_settle: list[tuple[Callable[[], Deferred[None]], bool, Deferred[None]]] = []
        self._refer_id: int | None = None  # Janus's id of the far end's pending REFER
        self._deliveries: list[Deferred[tuple[int, str]]] = []  # our MESSAGEs in the dialog, oldest first
        self.is_ended = False

    @property
    def had_media(self) -> bool:
        """Janus set up a PeerConnection for the call, whose end it will report."""
        return self._sent

    # --- ISIPCall ---

    def set_observer(self, observer: ICallObserver) -> None:
        self._observer = observer

    def trickle(self, candidates: list[dict[str, Any]]) -> None:
        if self._sent:
            self._send_candidates(candidates)
        else:
            self._waiting_candidates.append(candidates)

    def answer(self, sdp: str, headers: dict[str, str]) -> Deferred[None]:
        handle = self._handle()
        body: dict[str, Any] = {"request": "accept"}
        if headers:
            body["headers"] = headers
        if self.agent.identity.answers_reinvites:
            body["autoaccept_reinvites"] = False
        self._answered = True  # a hangup from now on comes after the accept, in Janus's order
        answer = handle.message(body, {"type": "answer", "sdp": sdp})
        self._sent = True
        self._flush_candidates()

        def refused(failure: Failure) -> Failure:
            self._answered = False  # still ringing in Janus: ending it means declining
            return failure
        return answer.addCallbacks(self._reply, refused)

    def send_dtmf_info(self, tone: str, duration: int) -> Deferred[None]:
        return self._request({"request": "dtmf_info", "digit": tone, "duration": duration})

    def update(self, sdp: str) -> Deferred[None]:
        # Janus 1.1.2 reports the answer (`accepted` + jsep) but not a failure (a 488, a 491, a timeout).
        return self._after_settling(lambda: self._request_with_outcome(
            {"request": "update"}, {"type": "offer", "sdp": sdp, "update": True}, self._update_wait,
            lambda observer: observer.call_update_failed("No answer to the re-INVITE")), settle=False)

    def answer_update(self, sdp: str) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "update"},
                                                          {"type": "answer", "sdp": sdp, "update": True}))

    def hold(self, direction: str) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "hold", "direction": direction}))

    def unhold(self) -> Deferred[None]:
        return self._after_settling(lambda: self._request({"request": "unhold"}))

    def send_message(self, content_type: str, content: str) -> Deferred[tuple[int, str]]:
        # Janus reports the answer with the dialog's Call-ID, the same for every MESSAGE in it: answers are
        # matched in order.
        delivery: Deferred[tuple[int, str]] = Deferred()
        self._deliveries.append(delivery)

        def forget(result: Any) -> Any:
            if delivery in self._deliveries:
                self._deliveries.remove(delivery)
            return result
        sent = self._request({"request": "message", "content_type": content_type, "content": content})
        return sent.addCallback(lambda _: answer_of(delivery, self.agent.settings.transaction_timeout,
                                                     self.agent.clock)).addBoth(forget)

    def transfer(self, uri: str, replace: ISIPCall | None) -> Deferred[None]:
        body: dict[str, Any] = {"request": "transfer", "uri": f"sip:{uri}"}
        if replace is not None:
            body["replace"] = replace.call_id  # Janus builds the Replaces from that call's dialog
        # Janus 1.1.2 does not report the REFER's own answer: a refusal (405, 603, ...) shows only as no NOTIFY.
        return self._request_with_outcome(body, None, self._transfer_wait, lambda observer: observer.call_transfer_progress(
            None, "No answer to the transfer request (REFER)"))

    def reject_transfer(self, code: int) -> Deferred[None]:
        # Janus finds the REFER by its id, whatever the state of the call or the handle sent through (the call
        # may be over, its line given up): any handle of the account will do
        refer_id = self.take_refer_id()
        if refer_id is None:
            return fail(BackendUnavailable("no transfer request to refuse"))
        body = {"request": "decline", "refer_id": refer_id, "code": code}
        handle = self.line.handle if self.line is not None and self.line.handle is not None else \
            self.agent.any_handle()
        if handle is None:
            return fail(BackendUnavailable("the account has no SIP line left"))
        return handle.message(body).addCallback(lambda _: None)

    def take_refer_id(self) -> int | None:
        refer_id, self._refer_id = self._refer_id, None
        return refer_id

    def terminate(self) -> None:
        if self.is_ended or self._hangup_wait.running:
            return
        if self.direction == "outgoing" and not self.calling:
            self.ended("487 Request Terminated")  # not placed yet: nothing went out
            return
        if self.line is None or self.line.handle is None:
            self.ended("Janus released the line")  # the account is closing: its handles are gone with the call
            return
        if self.direction == "outgoing" and not self._sent:
            self._hang_up_when_placed = True  # Janus has the `call` but has not answered it yet
            return
        self._hang_up()

    def _hang_up(self) -> None:
        if self.direction == "incoming" and not self._answered:
            body = {"request": "decline", "code": self.agent.settings.decline_code}
        else:
            body = {"request": "hangup"}  # a CANCEL while inviting, else a BYE
        request = self._handle().message(body)
        if self.direction == "outgoing" and not self._accepted:
            request.addCallback(self._cancelled)  # Janus 1.1.2 may never report this call's end
        request.addErrback(self.request_failed)
        # Janus ignores a hangup in a state it does not expect, without a word: don't wait for ever.
        self._hangup_wait.start(HANGUP_WAIT, self._hangup_unanswered)

    def _timer_failed(self) -> None:
        if not self.is_ended:
            self.abort("Internal error in the call's timers")

    def abort(self, reason: str) -> None:
        """End the call at once because the gateway cannot go on with it (handling one of its events failed): tell
        the observer, and make Janus end whatever it has of it (a helper is retired, which ends its call)."""
        line, answered = self.line, self._answered or self._accepted or self.direction == "outgoing"
        self.ended(reason)
        if line is None or line.handle is None:
            return
        if line.helper:
            self.agent.retire(line)
        else:
            body = {"request": "hangup"} if answered else {"request": "decline", "code": 500}
            line.handle.message(body).addErrback(self.request_failed)

    def _hangup_unanswered(self) -> None:
        if self.is_ended:
            return
        line = self.line
        self.log.warn("Janus did not end call {call_id} in {wait:g} s; giving its line up", call_id=self.call_id,
                      wait=HANGUP_WAIT)
        self.ended("Ended without an answer from Janus")
        if line is not None and line.helper:
            self.agent.retire(line)  # detaching makes Janus end whatever is left of the call

    # --- from the user agent ---

    def placed(self, reply: dict[str, Any]) -> None:
        """The `call` request was accepted (`calling`)."""
        self.call_id = sipcodec.call_id(plugin_data(reply).get("call_id")) or self.call_id
        self._sent = True
        if self._hang_up_when_placed:
            self._hang_up()
            return
        self._flush_candidates()
        self._reply(reply)

    def failed(self, failure: Failure) -> None:
        """Placing or answering the call failed before SIP could say anything."""
        self.log.info("Call failed in Janus: {error}", error=failure.value)
        self.ended(str(failure.value))

    def request_failed(self, failure: Failure) -> None:
        if not self.is_ended:
            self.log.warn("A request about a call was refused: {error}", error=failure.value)

    def _cancelled(self, reply: dict[str, Any]) -> None:
        """Janus accepted to cancel the INVITE (`hangingup`): the CANCEL is out. After a provisional response,
        Janus 1.1.2 reports nothing more and leaves the line stuck, so end the call here and retire the line."""
        line = self.line
        self.ended("487 Request Terminated")
        if line is not None:
            self.agent.retire(line)

    def has_handler(self, event: str) -> bool:
        return hasattr(self, f"_EH_{event}")

    def plugin_event(self, event: str, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        handler = getattr(self, f"_EH_{event}", None)
        if handler is not None:
            handler(result, jsep)

    def core_event(self, kind: str | None, message: dict[str, Any]) -> None:
        if kind == "webrtcup" and not self.is_ended:
            self._tell(lambda observer: observer.call_established())
        elif kind == "hangup" and not self.is_ended:
            # The PeerConnection is gone (ICE or DTLS failed, the browser vanished) while SIP thinks the call is
            # still up: end the SIP side too.
            reason = sipcodec.phrase(message.get("reason")) or "Media closed"
            line = self.line
            self._handle().message({"request": "hangup"}).addErrback(self.request_failed)
            self.ended(reason)
            if line is not None:
                line.stale_pc_until = 0.0  # this was the PeerConnection's end: Janus reports it only once
                if self.direction == "outgoing" and not self._accepted:
                    self.agent.retire(line)  # that hangup was a CANCEL: as in _cancelled, the line is stuck after it

    def ended(self, reason: str) -> None:
        if self.is_ended:
            return
        self.is_ended = True
        for wait in (self._hangup_wait, self._update_wait, self._transfer_wait, self._settling):
            wait.cancel()
        if self.line is not None:
            self.agent.call_over(self.line, self)
        self._tell(lambda observer: observer.call_terminated(reason))
        self._settled()  # fails what waited to be sent (its requester knows by now that the call is over)

    # --- SIP plugin events about the call ---

    def _EH_calling(self, result: dict[str, Any], jsep: Any) -> None:
        self._tell(lambda observer: observer.call_progress())

    def _EH_proceeding(self, result: dict[str, Any], jsep: Any) -> None:
        code = sipcodec.status_code(result.get("code"))
        if code is not None:
            self._tell(lambda observer: observer.call_proceeding(code))

    def _EH_ringing(self, result: dict[str, Any], jsep: Any) -> None:
        self._tell(lambda observer: observer.call_ringing())

    def _EH_progress(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        answer = sipcodec.sdp(jsep)
        if answer is not None:
            self._tell(lambda observer: observer.call_early_media(answer))  # 183 with SDP: the later 200 comes without it

    def _EH_accepted(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        if self._update_wait.running:  # the answer to our re-INVITE
            self._update_wait.cancel()
            answer = sipcodec.sdp(jsep)
            if answer is not None:
                self._tell(lambda observer: observer.call_update_accepted(answer))
            else:
                self._tell(lambda observer: observer.call_update_failed("The far end's answer had no SDP"))
            return
        if self._accepted:
            return  # a repeated one: after a hold Janus 1.1.2 may report the 200 again
        self._accepted = True
        if self.direction == "outgoing":
            self._tell(lambda observer: observer.call_accepted(sipcodec.sdp(jsep), sipcodec.headers(result.get("headers")) or None))
            self.agent.call_answered()
        else:
            self._tell(lambda observer: observer.call_accepted(None, None))

    def _EH_updatingcall(self, result: dict[str, Any], jsep: dict[str, Any] | None) -> None:
        """The far end's re-INVITE (Janus passes it up because `autoaccept_reinvites` is off)."""
        offer = sipcodec.sdp(jsep, "offer")
        if offer is not None:
            self._tell(lambda observer: observer.call_update_received(offer))
            return
        # An offerless re-INVITE wants an offer from the browser, which sylkRTC cannot ask for; Janus would wait for
        # ever, the far end too: end the call rather than leave it stuck.
        self.log.warn("Ending call {call_id}: the far end sent a re-INVITE without SDP", call_id=self.call_id)
        self._handle().message({"request": "hangup"}).addErrback(self.request_failed)
        self.ended("A re-INVITE without SDP is not supported")

    def message_received(self, sender: Originator, content_type: str, content: str) -> None:
        """A MESSAGE in the call's dialog (the user agent sorts MESSAGEs out, see its _EH_message)."""
        self._tell(lambda observer: observer.call_message(sender, content_type, content))

    def _EH_messagedelivery(self, result: dict[str, Any], jsep: Any) -> None:
        if self._deliveries:
            self._deliveries.pop(0).callback(sipcodec.delivery_answer(result))

    def _EH_transfer(self, result: dict[str, Any], jsep: Any) -> None:
        """The far end's REFER (Janus answered it 202): the browser decides whether to call the target."""
        if self._refer_id is not None:  # a newer one replaces it: refuse the older one, which Janus still holds
            self.reject_transfer(603).addErrback(self.request_failed)
        refer_id, refer_to = sipcodec.integer(result.get("refer_id")), sipcodec.bare_uri(result.get("refer_to"))
        if refer_id is None or not refer_to:
            self.log.warn("Ignoring a transfer request (REFER) without a usable target in call {call_id}",
                          call_id=self.call_id)
            return
        self._refer_id = refer_id
        referred_by = sipcodec.bare_uri(result.get("referred_by")) or None
        if referred_by is None or sipcodec.is_contact_address(referred_by):
            # A Janus (another sylkgateway, say) names the transferor by its stack's Contact address, which it cannot
            # change; the REFER comes from the far end of this call, so name that party instead.
            referred_by = self.remote_uri or referred_by
        self._tell(lambda observer: observer.call_transfer_requested(refer_to, referred_by, bool(result.get("replaces"))))

    def _EH_notify(self, result: dict[str, Any], jsep: Any) -> None:
        """A NOTIFY about our REFER: its body is the status line of the far end's call to the target."""
        if (sipcodec.text(result.get("notify"), 32) or "").lower() != "refer":
            return
        status = sipcodec.sipfrag_status(result.get("content"))
        if status is None:
            return
        code, reason = status
        if code < 200 or code in (401, 407):  # progress (Janus passes on the auth challenges it answers, too)
            self._transfer_wait.start(TRANSFER_PROGRESS_WAIT, self._outcome_unreported,
                                      lambda observer: observer.call_transfer_progress(
                                          None, "The transfer did not complete"))
        else:
            self._transfer_wait.cancel()
        self._tell(lambda observer: observer.call_transfer_progress(code, reason))

    def _EH_info(self, result: dict[str, Any], jsep: Any) -> None:
        """SIP INFO from the far end; DTMF in it (application/dtmf-relay or application/dtmf) is passed up."""
        dtmf = sipcodec.dtmf_of_info(result.get("type"), result.get("content"))
        if dtmf is not None:
            self._tell(lambda observer: observer.call_dtmf(*dtmf, "info"))

    def _EH_dtmf(self, result: dict[str, Any], jsep: Any) -> None:
        """RFC 4733 tones from the far end: reported by Janus 1.2.1 and newer (1.1.2 relays them silently)."""
        tone = sipcodec.text(result.get("signal"), 1) or ""
        if re.fullmatch(r"[0-9*#A-Da-d]", tone):
            self._tell(lambda observer: observer.call_dtmf(tone.upper(), sipcodec.integer(result.get("duration")), "rfc4733"))

    def _EH_hangup(self, result: dict[str, Any], jsep: Any) -> None:
        if self.call_id is not None and result.get("call_id") != self.call_id:
            return  # another call's: a refused INVITE's, or a stray one Janus 1.1.2 sends without a Call-ID
        self.ended(sipcodec.sip_reason(result.get("code"), result.get("reason")))

    # --- internals ---

    def _request(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> Deferred[None]:
        """A request about the call whose answer needs no handling; fires with None once Janus took it."""
        return self._handle().message(body, jsep).addCallback(lambda _: None)

    def _request_with_outcome(self, body: dict[str, Any], jsep: dict[str, Any] | None, wait: Timer,
                              report: Callable[[ICallObserver], None]) -> Deferred[None]:
        """A request whose SIP outcome Janus reports later, or never: past Sofia's own transaction timeout the
        observer is told so with `report`; the outcome's handler cancels `wait`."""
        sent = self._request(body, jsep)
        wait.start(self.agent.settings.transaction_timeout + 1.0, self._outcome_unreported, report)

        def refused(refusal: Failure) -> Failure:
            wait.cancel()
            return refusal
        return sent.addErrback(refused)

    def _after_settling(self, send: Callable[[], Deferred[None]], settle: bool = True) -> Deferred[None]:
        """Send a re-INVITE-making request once the previous one had time to settle (REINVITE_SETTLE), in order;
        `settle`: the request itself makes the next ones wait. At most MAX_WAITING_REINVITES wait."""
        if not self._settling.running and not self._waiting_to_settle:
            return self._send_settling(send, settle)
        if len(self._waiting_to_settle) >= MAX_WAITING_REINVITES:
            raise APIError(f"Too many holds and updates waiting to be sent in this call (at most "
                           f"{MAX_WAITING_REINVITES})")
        waiter: Deferred[None] = Deferred()
        self._waiting_to_settle.append((send, settle, waiter))
        return waiter

    def _send_settling(self, send: Callable[[], Deferred[None]], settle: bool) -> Deferred[None]:
        def sent(result: Any) -> Any:
            if settle and not isinstance(result, Failure):
                self._settling.start(REINVITE_SETTLE, self._settled)
            else:
                self._settled()
            return result
        return send().addBoth(sent)

    def _settled(self) -> None:
        if self.is_ended:  # what waited fails (a loop: one waiter after the other, however many)
            waiting, self._waiting_to_settle = self._waiting_to_settle, []
            for _, _, waiter in waiting:
                waiter.errback(BackendUnavailable("the call ended"))
        elif self._waiting_to_settle and not self._settling.running:
            send, settle, waiter = self._waiting_to_settle.pop(0)
            self._send_settling(send, settle).chainDeferred(waiter)

    def _outcome_unreported(self, report: Callable[[ICallObserver], None]) -> None:
        if not self.is_ended:
            self._tell(report)

    def _reply(self, reply: dict[str, Any]) -> None:
        result = plugin_data(reply).get("result")
        if isinstance(result, dict):
            self.plugin_event(str(result.get("event")), result, reply.get("jsep"))

    def _handle(self) -> JanusHandle:
        if self.line is None or self.line.handle is None:
            raise BackendUnavailable("the call has no line")
        return self.line.handle

    def _flush_candidates(self) -> None:
        waiting, self._waiting_candidates = self._waiting_candidates, []
        for candidates in waiting:
            self._send_candidates(candidates)

    def _send_candidates(self, candidates: list[dict[str, Any]]) -> None:
        if self.is_ended or self.line is None or self.line.handle is None:
            return
        handle = self.line.handle
        if candidates:
            payload: dict[str, Any] = {"candidates": [{k: v for k, v in c.items() if v is not None}
                                                      for c in candidates]}
        else:
            payload = {"candidate": {"completed": True}}
        handle.session.request({"janus": "trickle", **payload}, handle_id=handle.id).addErrback(
            self.request_failed)

    def _tell(self, news: Callable[[ICallObserver], None]) -> None:
        """Give the call's observer some news (an incoming call has none until its account takes it)."""
        if self._observer is not None:
            news(self._observer)


def answer_of(delivery: Deferred[tuple[int, str]], transaction_timeout: float,
               clock: IReactorTime) -> Deferred[tuple[int, str]]:
    """A MESSAGE's answer as Janus reports it, or 408 once Sofia's transaction would have timed out."""
    return delivery.addTimeout(transaction_timeout + 1.0, clock, onTimeoutCancel=lambda *_: (408, "Request Timeout"))
