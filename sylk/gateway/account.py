"""SIPAccount: one account on one connection, and its registration state machine.

    unregistered --register--> registering --ok--> registered --unregister--> unregistering --ok--> unregistered
                               registering/registered --failure--> failed --register--> registering ...

Every change of state is reported to the browser once, as a RegistrationStateChanged event. Requests that make no
sense in the current state raise APIError naming the state. Waits on the backend are bounded by timers, so an
account always reaches a final state. `shutdown()` (account removed, connection closed) removes the binding at
the registrar before the backend resources are released.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.errors import APIError
from sylk.gateway.interfaces import ISIPSession, IUserAgentObserver
from sylk.gateway.sip import Registration, SIPIdentity
from sylk.gateway.sylkrtc.model import Event, RegistrationState, RegistrationStateChanged
from sylk.gateway.util import OneShotObserver

# How long an un-REGISTER may take before the account gives up waiting and releases the backend anyway.
UNREGISTER_TIMEOUT = 10.0

State = RegistrationState


@implementer(IUserAgentObserver)
class SIPAccount:
    log = Logger()

    def __init__(self, identity: SIPIdentity, session: ISIPSession, settings: WebRTCGatewayConfig,
                 notify: Callable[[Event], None], clock: IReactorTime) -> None:
        self.identity = identity
        self.state = State.UNREGISTERED
        self._settings = settings
        self._notify: Callable[[Event], None] | None = notify
        self._clock = clock
        self._user_agent = session.create_user_agent(identity, self)
        self._timer: IDelayedCall | None = None
        self._operation = 0  # counts backend operations, so a late failure of an abandoned one is ignored
        self._unregister_when_registered = False
        self._released: OneShotObserver | None = None  # set by shutdown(): fired once the backend is released

    @property
    def aor(self) -> str:
        return self.identity.aor

    # --- requests ---

    def register(self) -> None:
        if self.state in (State.REGISTERING, State.REGISTERED, State.UNREGISTERING):
            raise APIError(f"Cannot register account {self.aor}: it is {self.state}")
        self._unregister_when_registered = False
        self._enter(State.REGISTERING, timeout=self._settings.register_timeout)
        registration = Registration(ttl=self._settings.register_ttl, route=self._settings.outbound_sip_proxy)
        self._operation += 1
        self._user_agent.register(registration).addErrback(self._request_failed, self._operation)

    def unregister(self) -> None:
        if self.state == State.REGISTERING:
            # The REGISTER is on its way; remove the binding as soon as it exists.
            if self._unregister_when_registered:
                raise APIError(f"Account {self.aor} is already going to unregister")
            self._unregister_when_registered = True
        elif self.state == State.REGISTERED:
            self._start_unregister()
        else:
            raise APIError(f"Cannot unregister account {self.aor}: it is {self.state}")

    def shutdown(self) -> Deferred[None]:
        """Stop reporting to the browser, remove the binding if there is one, release the backend."""
        self._notify = None
        if self.state not in (State.REGISTERED, State.REGISTERING, State.UNREGISTERING):
            return self._user_agent.close()
        self._released = OneShotObserver()  # before anything below can reach _finish()
        if self.state == State.REGISTERED:
            self._start_unregister()
        elif self.state == State.REGISTERING:
            self._unregister_when_registered = True
        return self._released.when_fired()

    def abandon(self) -> None:
        """The backend is gone (and the registration with it): stop timers and reporting, release nothing."""
        self._notify = None
        self._operation += 1
        self._cancel_timer()

    # --- IUserAgentObserver ---

    def registration_succeeded(self) -> None:
        if self.state != State.REGISTERING:
            return  # a refresh, or news of an attempt this account already gave up on
        self._enter(State.REGISTERED)
        if self._unregister_when_registered:
            self._start_unregister()

    def registration_failed(self, reason: str) -> None:
        if self.state in (State.REGISTERING, State.REGISTERED):
            if self._unregister_when_registered:
                self._finish(State.UNREGISTERED)
            else:
                self._finish(State.FAILED, reason)
        elif self.state == State.UNREGISTERING:
            self.log.warn("Un-REGISTER of {aor} did not complete ({reason}); releasing it", aor=self.aor,
                          reason=reason)
            self._finish(State.UNREGISTERED)

    def unregistered(self) -> None:
        if self.state in (State.UNREGISTERING, State.REGISTERED):
            self._finish(State.UNREGISTERED)

    # --- internals ---

    def _start_unregister(self) -> None:
        self._unregister_when_registered = False
        self._enter(State.UNREGISTERING, timeout=UNREGISTER_TIMEOUT, report=False)
        self._operation += 1
        self._user_agent.unregister().addErrback(self._request_failed, self._operation)

    def _request_failed(self, failure: Failure, operation: int) -> None:
        if operation == self._operation:
            self.registration_failed(str(failure.value))

    def _enter(self, state: str, timeout: float | None = None, report: bool = True, reason: str | None = None) -> None:
        self.state = state
        self._cancel_timer()
        if timeout is not None:
            self._timer = self._clock.callLater(timeout, self.registration_failed, "408 Request Timeout")
        if report and self._notify is not None:
            self._notify(RegistrationStateChanged(account=self.aor, state=state, reason=reason))

    def _finish(self, state: str, reason: str | None = None) -> None:
        """Reach a final state: the backend's resources are released until the next register()."""
        self._enter(state, reason=reason)
        self._unregister_when_registered = False
        closed = self._user_agent.close()
        closed.addErrback(lambda f: self.log.failure("Releasing {aor} failed", f, aor=self.aor))
        if self._released is not None:
            closed.addCallback(self._released.fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

