"""Connection: the gateway's state for one browser — its backend session and its accounts.

A connection talks to the browser only through an IConnectionPeer, never to the socket itself, so its state could
outlive the socket that created it. Requests arrive as model objects and are dispatched by name to `_RH_<name>`;
a handler returns (ack) or raises APIError (error). Handlers change state at once and leave slow SIP work to the
accounts, which report its outcome as events; so requests are answered in order and quickly (reading an address
book file off the reactor thread is the one handler whose answer waits).

    opening --session opened--> ready --close()--> closing --accounts unregistered, session closed--> closed
    opening --backend failed--> closed (browser disconnected)
    ready --backend lost--> recovering --backend back, new session--> ready (accounts registered again)
                            recovering --not back within RECOVERY_WAIT--> closed (browser disconnected)

When the backend (Janus) goes away, everything in it is gone: the calls end (each with the reason) but the
connection and its accounts stay. Requests wait, as before `ready`; once a backend session can be opened again,
every account gets a new user agent and those that were registered (or registering) register again by themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.account import PushToken, SIPAccount
from sylk.gateway.call import Call, CallMetrics
from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.errors import APIError, BackendUnavailable
from sylk.gateway.interfaces import IConnectionPeer, ISIPBackend, ISIPSession, ISIPSessionObserver
from sylk.gateway.messaging.hub import MessagingHub
from sylk.gateway.messaging.store import DeviceToken, InvalidEntry
from sylk.gateway.sip import SIPIdentity
from sylk.gateway.sylkrtc import model
from sylk.gateway.targets import check_target
from sylk.gateway.util import OneShotObserver, Timer

_T = TypeVar("_T")

# WebSocket close code sent when the SIP backend cannot serve this connection (any more).
CLOSE_BACKEND_UNAVAILABLE = 4503
# How long closing may wait for calls to end and un-REGISTERs before the backend session is destroyed anyway.
CLOSE_TIMEOUT = 15.0
# Ended sessions remembered, so late requests about them get "terminated" rather than "unknown" errors.
ENDED_SESSIONS_KEPT = 64
# How long a connection waits for the backend to come back after losing it, before it gives up and disconnects,
# and how long after a failed attempt to open a new session it tries again.
RECOVERY_WAIT = 60.0
RECOVERY_RETRY = 1.0
# How long a request waits for the message store (history, address book, keys) before it gets an error.
STORE_TIMEOUT = 30.0
# Requests kept while the backend session is being created (a page adding and registering 20 accounts at load
# sends 40); more are refused rather than queued without bound.
MAX_QUEUED_BEFORE_READY = 64


@implementer(ISIPSessionObserver)
class Connection:
    log = Logger()

    def __init__(self, name: str, backend: ISIPBackend, settings: WebRTCGatewayConfig, peer: IConnectionPeer,
                 clock: IReactorTime, answers_reinvites: bool = True, client: str | None = None,
                 metrics: CallMetrics | None = None, messaging: MessagingHub | None = None) -> None:
        self.name = name
        self.client = client  # the browser's address: connections from one address share its turns in the backend
        self.answers_reinvites = answers_reinvites  # the browser answers the far end's re-INVITEs (its dialect)
        self.state = "opening"
        self.accounts: dict[str, SIPAccount] = {}
        self.sessions: dict[str, Call] = {}  # calls not yet terminated, by session id
        self._ended: OrderedDict[str, Call] = OrderedDict()
        self._backend = backend
        self._settings = settings
        self._peer = peer
        self._clock = clock
        self._metrics = metrics  # for its accounts' calls
        self._messaging = messaging  # the accounts' messages beyond this connection (history, other devices)
        self._session: ISIPSession | None = None
        self._queued: list[tuple[model.Request, Deferred[None]]] = []  # requests that arrived before `ready`
        self._releasing: dict[SIPAccount, Deferred[None]] = {}  # removed accounts still un-REGISTERing
        self._closed = OneShotObserver()
        self._recovery_attempt = 0  # counts waits for the backend to come back (a late answer to an old one is void)
        self._recovery_deadline: float | None = None
        self._retrying = Timer(clock)
        self._waiting: Deferred[None] | None = None  # for the backend to come back

    def open(self) -> Deferred[None]:
        """Open the backend session; the browser gets `ready` when it exists, or is disconnected."""
        return self._backend.open_session(self).addCallbacks(self._opened, self._open_failed)

    def handle(self, request: model.Request) -> Deferred[None]:
        """Carry out a request; the Deferred fails with APIError when the browser should get an error."""
        if self.state in ("opening", "recovering"):
            if len(self._queued) >= MAX_QUEUED_BEFORE_READY:
                return fail(APIError(f"Too many requests before the connection is ready "
                                     f"(at most {MAX_QUEUED_BEFORE_READY})"))
            waiter: Deferred[None] = Deferred()
            self._queued.append((request, waiter))
            return waiter
        if self.state != "ready":
            return fail(APIError(f"Connection is {self.state}"))
        handler = getattr(self, "_RH_" + request.name.replace("-", "_"))
        return maybeDeferred(handler, request)

    def close(self) -> Deferred[None]:
        """Unregister every account and destroy the backend session (bounded by CLOSE_TIMEOUT)."""
        if self._messaging is not None:  # nothing of the accounts' other connections reaches a closing one
            self._messaging.leave_all(self)
        if self.state == "recovering":  # nothing is left in the backend to end or unregister
            self._fail_queued("Connection closed")
            self._abandon_accounts()
            self._finish_close()
        elif self.state in ("opening", "ready"):
            self._fail_queued("Connection closed")
            if self.state == "ready":
                self.state = "closing"
                closing = Deferred.fromCoroutine(self._shutdown())
                closing.addErrback(lambda f: self.log.failure("Connection {name}: closing failed", f, name=self.name))
                closing.addCallback(self._finish_close)
            else:
                self._finish_close()  # _opened() closes the session if it arrives after all
        return self._closed.when_fired()

    def when_closed(self) -> Deferred[None]:
        return self._closed.when_fired()

    def attach(self, peer: IConnectionPeer) -> IConnectionPeer:
        """Send everything from now on to `peer` (another socket, or a DetachedPeer while none is attached);
        returns the previous peer."""
        previous, self._peer = self._peer, peer
        return previous

    def snapshot(self) -> list[model.Event]:
        """The state as events, for a client that takes the connection over: every account's registration state and
        every live call's state (a call still ringing as its incoming-session again)."""
        events: list[model.Event] = []
        for account in self.accounts.values():
            events.append(model.RegistrationStateShown(account=account.aor, state=account.shown_state,
                                                       reason=account.reason))
        for call in self.sessions.values():
            events += call.shown_as()
        return events

    # --- ISIPSessionObserver ---

    def session_lost(self, reason: str) -> None:
        self._session = None
        if self.state == "ready":
            self.log.warn("Connection {name}: backend session lost ({reason}); waiting for it to come back",
                          name=self.name, reason=reason)
            self.state = "recovering"
            for account in [*self.accounts.values(), *self._releasing]:
                account.backend_lost(reason)
            self._wait_for_backend(reason)
        elif self.state == "recovering":  # a new session was lost as it was being made: wait again
            self._wait_for_backend(reason)
        elif self.state == "opening":  # lost as it was being made: the browser tries again
            self._open_failed(Failure(BackendUnavailable(reason)))
        else:  # closing: what was left in the backend is gone, which is all closing wanted
            self.log.info("Connection {name}: backend session lost while {state} ({reason})", name=self.name,
                          state=self.state, reason=reason)

    # --- request handlers ---

    def _RH_ping(self, request: model.Ping) -> None:
        pass  # the ack is the answer

    def _RH_lookup_public_key(self, request: model.LookupPublicKey) -> Deferred[None]:
        if self._messaging is None or self._messaging.store is None:
            raise APIError("This gateway keeps no public keys")

        def answer(public_key: str | None) -> None:
            event = model.PublicKeyFound(uri=request.uri, public_key=public_key)
            self._after_ack(event)
        return self._store_work(self._messaging.public_key(request.uri)).addCallback(answer)

    def _RH_account_add(self, request: model.AccountAdd) -> None:
        if request.account in self.accounts:
            raise APIError(f"Account {request.account} already added")
        identity = SIPIdentity(request.account, request.password, request.display_name,
                               request.user_agent or self._settings.user_agent, request.incoming_header_prefixes,
                               self.answers_reinvites)
        if not self._settings.domain_allowed(identity.domain):
            raise APIError(f"SIP domain not allowed: {identity.domain}")
        # Removed accounts still un-REGISTERing count too: each holds SIP resources in the backend until done.
        if len(self.accounts) + len(self._releasing) >= self._settings.max_accounts_per_connection:
            raise APIError(f"Too many accounts on this connection (at most "
                           f"{self._settings.max_accounts_per_connection}, counting removed ones still "
                           f"unregistering)")
        assert self._session is not None
        self._session.admit_account()
        self.accounts[identity.aor] = SIPAccount(identity, self._session, self._settings, self, self._clock,
                                                 metrics=self._metrics)

    def _RH_account_remove(self, request: model.AccountRemove) -> None:
        account = self._account(request, "remove")
        del self.accounts[account.aor]
        if self._messaging is not None:
            self._messaging.leave(account.aor, self)
        released = maybeDeferred(account.shutdown)
        self._releasing[account] = released
        released.addBoth(self._released, account)

    def _released(self, _: object, account: SIPAccount) -> None:
        del self._releasing[account]  # (returning the popped Deferred here would chain it onto itself)

    def _RH_account_register(self, request: model.AccountRegister) -> None:
        self._account(request, "register").register()

    def _RH_account_unregister(self, request: model.AccountUnregister) -> None:
        account = self._account(request, "unregister")
        account.unregister()
        if self._messaging is not None and self._messaging.holds(account.aor, self):
            for push in account.push_tokens.values():  # as SylkServer: an unregistered device is not woken
                self._messaging.forget_device_token(account.aor, push.app or "", push.device)

    def _RH_account_devicetoken(self, request: model.AccountDeviceToken) -> None:
        account = self._account(request, "devicetoken")
        account.set_push_token(request)
        if self._messaging is not None and self._messaging.holds(account.aor, self):
            self._keep_device_tokens(account, [account.push_tokens.get(request.device or "")])

    def _keep_device_tokens(self, account: SIPAccount, tokens: Iterable[PushToken | None]) -> None:
        """Push tokens of the account, kept so that its devices can be woken while none is connected."""
        assert self._messaging is not None
        for push in tokens:
            if push and push.app and push.device and push.platform:  # what the push service needs to reach it
                self._messaging.keep_device_token(account.aor, DeviceToken.from_request(
                    push.app, push.token, push.platform, push.device, push.silent, account.identity.user_agent))

    def _RH_account_fetch_addressbook(self, request: model.AccountFetchAddressBook) -> Deferred[None]:
        account = self._account(request, "fetch-addressbook")
        store = self._messaging.store if self._messaging is not None else None
        if store is None:
            return account.fetch_addressbook()
        return account.fetch_addressbook(stored=lambda: store.addressbook(account.aor))

    def _RH_account_update_addressbook(self, request: model.AccountUpdateAddressBook) -> Deferred[None]:
        account, messaging = self._history_of(request, "update-addressbook", "its address book can be updated")
        about = dict(account=account.aor, type=request.type, action=request.action)

        def updated(item: dict[str, Any]) -> None:
            event = model.AddressBookUpdated(item=item, **about)
            self._after_ack(event)

        def refused(failure: Failure) -> None:
            failure.trap(InvalidEntry)
            entry_id = request.data.get("id")
            event = model.AddressBookUpdateFailed(error=str(failure.value),
                                                  id=entry_id if isinstance(entry_id, str) else None, **about)
            self._after_ack(event)
        return self._store_work(messaging.update_addressbook(self, account.aor, request.type, request.action,
                                                             request.data)).addCallbacks(updated, refused)

    def _RH_account_message(self, request: model.AccountMessage) -> None:
        account = self._account(request, "message")
        check_target(request.uri, self._settings)
        if self._messaging is not None:  # first: the SIP answer may come at once, and it is news of this message
            self._messaging.sent(self, request)
        account.send_message(request)

    def _RH_account_sync_conversations(self, request: model.AccountSyncConversations) -> Deferred[None]:
        account, messaging = self._history_of(request, "sync", "its conversations can be synced")

        def answer(items: list[dict[str, Any]]) -> None:
            event = model.SyncConversations(account=account.aor, messages=items)
            self._after_ack(event)

        journal = messaging.journal(account.aor, request.message_id, request.since, request.limit)
        return self._store_work(journal).addCallbacks(answer, _refused)

    def _RH_account_mark_conversation_read(self, request: model.AccountMarkConversationRead) -> Deferred[None]:
        account, messaging = self._history_of(request, "mark-conversation-read", "its conversations can be marked")
        return self._store_work(messaging.mark_read(self, account.aor, request.contact, account.replicate)).addErrback(
            _refused)

    def _RH_account_remove_message(self, request: model.AccountRemoveMessage) -> Deferred[None]:
        account, messaging = self._history_of(request, "remove-message", "its messages can be removed")
        return self._store_work(messaging.remove_message(self, account.aor, request.contact, request.message_id,
                                                         account.replicate)).addErrback(_refused)

    def _RH_account_remove_conversation(self, request: model.AccountRemoveConversation) -> Deferred[None]:
        account, messaging = self._history_of(request, "remove-conversation", "its conversations can be removed")
        return self._store_work(messaging.remove_conversation(self, account.aor, request.contact,
                                                              account.replicate)).addErrback(_refused)

    def _after_ack(self, event: model.Event) -> None:
        """Send the event that answers a request once its ack is out (the channel acks when the handler's
        Deferred fires), to whichever socket holds the connection then."""
        self._clock.callLater(0, lambda: self._peer.send_event(event))

    def _store_work(self, work: Deferred[_T]) -> Deferred[_T]:
        """A request's wait for the message store, bounded: a store that does not answer (a database gone away, a
        queue behind a long purge) costs the browser an error after STORE_TIMEOUT, not a request left open."""
        work.addTimeout(STORE_TIMEOUT, self._clock)

        def late(failure: Failure) -> _T:
            failure.trap(defer.TimeoutError)
            raise APIError(f"The message store did not answer within {STORE_TIMEOUT:g} s")
        return work.addErrback(late)

    def _history_of(self, request: model.AccountRequest, what: str, purpose: str) -> tuple[SIPAccount, MessagingHub]:
        """The account of a request about its message history, and the hub: only for an account that registered
        on this connection (MessagingHub), on a gateway that keeps history."""
        account = self._account(request, what)
        if self._messaging is None or not self._messaging.holds(account.aor, self):
            raise APIError(f"Account {account.aor} must register before {purpose}")
        if self._messaging.store is None:
            raise APIError("This gateway keeps no message history")
        return account, self._messaging

    def _RH_account_disposition_notification(self, request: model.AccountDispositionNotification) -> None:
        account = self._account(request, "disposition notification")
        check_target(request.uri, self._settings)
        account.send_disposition(request)
        if self._messaging is not None and self._messaging.holds(account.aor, self):
            self._messaging.notified(account.aor, request.message_id, request.state)  # (the account read it)

    def _RH_session_create(self, request: model.SessionCreate) -> None:
        account = self._account(request, "call")
        if request.session in self.sessions:
            raise APIError(f"Session ID {request.session} already in use")
        check_target(request.uri, self._settings)
        referring = self._call(request.refer_session) if request.refer_session is not None else None
        account.call(request.session, request.uri, request.sdp, request.headers, transfer_of=referring)

    def _RH_session_answer(self, request: model.SessionAnswer) -> None:
        self._call(request).answer(request.sdp, request.headers)

    def _RH_session_trickle(self, request: model.SessionTrickle) -> None:
        self._call(request).trickle(request.candidates)

    def _RH_session_terminate(self, request: model.SessionTerminate) -> None:
        self._call(request).terminate()

    def _RH_session_dtmf_info(self, request: model.SessionDtmfInfo) -> None:
        self._call(request).send_dtmf(request.digit, request.duration)

    def _RH_session_update(self, request: model.SessionUpdate) -> None:
        self._call(request).update(request.sdp)

    def _RH_session_hold(self, request: model.SessionHold) -> None:
        self._call(request).hold(request.direction)

    def _RH_session_unhold(self, request: model.SessionUnhold) -> None:
        self._call(request).unhold()

    def _RH_session_message(self, request: model.SessionMessage) -> None:
        self._call(request).send_message(request)

    def _RH_session_transfer(self, request: model.SessionTransfer) -> None:
        check_target(request.uri, self._settings)
        replace = self._call(request.replace_session) if request.replace_session is not None else None
        self._call(request.session).transfer(request.uri, replace)

    def _RH_session_transfer_reject(self, request: model.SessionTransferReject) -> None:
        self._call(request.session).reject_transfer(request.code)

    # --- AccountOwner ---

    def account_event(self, event: model.Event) -> None:
        if self._messaging is not None:
            if isinstance(event, model.RegistrationStateChanged) and event.state == model.RegistrationState.REGISTERED:
                self._messaging.join(event.account, self)
                account = self.accounts[event.account]
                self._keep_device_tokens(account, account.push_tokens.values())
            elif isinstance(event, model.RegistrationStateChanged) and event.state == model.RegistrationState.FAILED \
                    and (event.reason or "")[:4] in ("401 ", "403 ", "407 "):
                self._messaging.leave(event.account, self)  # the credentials are no longer good (a new password)
            kept = self._messaging.account_event(self, event)
            if kept is None:
                return  # the echo of what this gateway told the account's devices itself
            event = kept
        self._peer.send_event(event)

    def deliver(self, event: model.Event) -> None:
        """An event of another connection of the same account (MessagingHub): to the browser as it is."""
        self._peer.send_event(event)

    def session_exists(self, session_id: str) -> bool:
        return session_id in self.sessions

    def call_started(self, call: Call) -> None:
        self._ended.pop(call.id, None)  # an id may be used again once its call is over
        self.sessions[call.id] = call

    def call_ended(self, call: Call) -> None:
        if self.sessions.get(call.id) is call:
            del self.sessions[call.id]
            self._ended[call.id] = call
            while len(self._ended) > ENDED_SESSIONS_KEPT:
                self._ended.popitem(last=False)

    # --- internals ---

    def _account(self, request: model.AccountRequest, action: str) -> SIPAccount:
        try:
            return self.accounts[request.account]
        except KeyError:
            raise APIError(f"Unknown account specified for {action}: {request.account}") from None

    def _call(self, session: model.SessionRequest | str) -> Call:
        """A session of this connection (or one that ended lately, whose methods say so)."""
        session_id = session if isinstance(session, str) else session.session
        call = self.sessions.get(session_id) or self._ended.get(session_id)
        if call is None:
            raise APIError(f"Unknown session {session_id}")
        return call

    def _opened(self, session: ISIPSession) -> None:
        if self.state != "opening":
            session.close()  # the browser left while the session was being created
            return
        self._session = session
        self.state = "ready"
        self._peer.send_event(model.Ready())
        self._handle_queued()

    def _handle_queued(self) -> None:
        queued, self._queued = self._queued, []
        for request, waiter in queued:
            self.handle(request).chainDeferred(waiter)

    def _wait_for_backend(self, reason: str) -> None:
        self._recovery_attempt += 1
        if self._recovery_deadline is None:
            self._recovery_deadline = self._clock.seconds() + RECOVERY_WAIT
        self._waiting = waiting = self._backend.when_available()
        waiting.addTimeout(max(0.0, self._recovery_deadline - self._clock.seconds()), self._clock)
        waiting.addCallbacks(self._recover, self._not_recovered, callbackArgs=(self._recovery_attempt,),
                             errbackArgs=(reason,))

    def _recover(self, _: object, attempt: int) -> None:
        if self.state == "recovering" and attempt == self._recovery_attempt:
            self._backend.open_session(self).addCallbacks(self._recovered, self._recovery_failed,
                                                          callbackArgs=(attempt,), errbackArgs=(attempt,))

    def _recovered(self, session: ISIPSession, attempt: int) -> None:
        if self.state != "recovering" or attempt != self._recovery_attempt:
            session.close()  # closed, or this session was lost as it was made
            return
        self._recovery_deadline = None
        self.log.info("Connection {name}: backend session restored", name=self.name)
        self._session = session
        self.state = "ready"
        for account in self.accounts.values():
            account.backend_restored(session)
        self._handle_queued()

    def _recovery_failed(self, failure: Failure, attempt: int) -> None:
        if self.state == "recovering" and attempt == self._recovery_attempt:
            # the backend went away again, or refused the session: try again a little later
            self.log.info("Connection {name}: no backend session yet ({error})", name=self.name, error=failure.value)
            self._retrying.start(RECOVERY_RETRY, self._wait_for_backend, str(failure.value))

    def _not_recovered(self, failure: Failure, reason: str) -> None:
        if self.state != "recovering":
            return
        self.log.error("Connection {name}: the backend did not come back within {wait:g} s; disconnecting",
                       name=self.name, wait=RECOVERY_WAIT)
        self._abandon_accounts()
        self._fail_queued(f"SIP backend lost: {reason}")
        self._finish_close()
        self._peer.disconnect(CLOSE_BACKEND_UNAVAILABLE, "SIP backend lost")  # short: close reasons are cut at 123 bytes

    def _abandon_accounts(self) -> None:
        self._retrying.cancel()
        if self._waiting is not None:
            self._waiting.cancel()  # (its timeout goes with it)
        for account in [*self.accounts.values(), *self._releasing]:
            account.abandon()
        self.accounts.clear()

    def _open_failed(self, failure: Failure) -> None:
        self.log.error("Connection {name}: cannot open a backend session: {error}", name=self.name,
                       error=failure.value)
        if self.state != "opening":
            return
        self._fail_queued(f"SIP backend unavailable: {failure.value}")
        self._finish_close()
        self._peer.disconnect(CLOSE_BACKEND_UNAVAILABLE, "SIP backend unavailable")

    def _fail_queued(self, reason: str) -> None:
        queued, self._queued = self._queued, []
        for _, waiter in queued:
            waiter.errback(APIError(reason))

    async def _shutdown(self) -> None:
        if self._session is not None:
            self._session.closing()
        accounts = list(self.accounts.values()) + list(self._releasing)
        pending: list[Deferred[Any]] = [maybeDeferred(account.shutdown) for account in self.accounts.values()]
        pending += self._releasing.values()
        self.accounts.clear()
        if pending:
            released = DeferredList(pending, consumeErrors=True)
            released.addTimeout(CLOSE_TIMEOUT, self._clock)
            try:
                await released
            except Exception as e:  # the timeout: the session's destruction below releases the rest
                self.log.warn("Connection {name}: accounts not released in time ({error})", name=self.name, error=e)
                for account in accounts:
                    account.abandon()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _finish_close(self, _: object = None) -> None:
        if self._messaging is not None:  # (also when closed without close(): the backend gave up on it)
            self._messaging.leave_all(self)
        self.state = "closed"
        self._closed.fire()


def _refused(failure: Failure) -> None:
    """A value the message store refused is the request's error; anything else is the gateway's."""
    failure.trap(InvalidEntry)
    raise APIError(str(failure.value))
