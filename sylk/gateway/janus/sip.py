"""ISIPBackend on Janus's SIP plugin: one Janus session per connection, one SIP handle per account.

Each registering account attaches its own `janus.plugin.sip` handle (which runs its own Sofia-SIP stack) and
registers with `ha1_secret`, so the browser's password never reaches the gateway. SIP-plugin events are dispatched
by name to `_EH_<event>`.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sylk.gateway.config import SIPProxy
from sylk.gateway.errors import BackendUnavailable
from sylk.gateway.interfaces import ISIPBackend, ISIPSession, ISIPSessionObserver, ISIPUserAgent, IUserAgentObserver
from sylk.gateway.janus.client import JanusAPI, JanusDisconnected, JanusHandle, JanusSession, plugin_data
from sylk.gateway.sip import Registration, SIPIdentity

SIP_PLUGIN = "janus.plugin.sip"


class JanusLink(Protocol):
    """What the backend needs from the connection manager: the API of the current, checked Janus connection."""

    api: JanusAPI | None


@implementer(ISIPBackend)
class JanusSIPBackend:
    def __init__(self, link: JanusLink) -> None:
        self._link = link

    @property
    def available(self) -> bool:
        return self._link.api is not None

    def open_session(self, observer: ISIPSessionObserver) -> Deferred[ISIPSession]:
        api = self._link.api
        if api is None:
            return fail(BackendUnavailable("Janus is not connected"))
        return api.create_session(observer.session_lost).addCallback(JanusSIPSession)


@implementer(ISIPSession)
class JanusSIPSession:
    def __init__(self, session: JanusSession) -> None:
        self._session = session

    def create_user_agent(self, identity: SIPIdentity, observer: IUserAgentObserver) -> ISIPUserAgent:
        return JanusSIPUserAgent(self._session, identity, observer)

    def close(self) -> Deferred[None]:
        return self._session.destroy()


@implementer(ISIPUserAgent)
class JanusSIPUserAgent:
    """An account's SIP identity in Janus: a SIP-plugin handle, attached by register() and detached by close()."""

    log = Logger()

    def __init__(self, session: JanusSession, identity: SIPIdentity, observer: IUserAgentObserver) -> None:
        self._session = session
        self._identity = identity
        self._observer = observer
        self._handle: JanusHandle | None = None
        self._generation = 0  # bumped by close(), so a handle attached meanwhile is let go

    def register(self, registration: Registration) -> Deferred[None]:
        return Deferred.fromCoroutine(self._register(registration))

    def unregister(self) -> Deferred[None]:
        if self._handle is None:
            return fail(BackendUnavailable("not registered"))
        return self._handle.message({"request": "unregister"}).addCallback(self.handle_event)

    def close(self) -> Deferred[None]:
        self._generation += 1
        handle, self._handle = self._handle, None
        if handle is None:
            return succeed(None)
        return handle.detach().addCallbacks(lambda _: None, self._detach_failed)

    # --- HandleListener ---

    def handle_event(self, message: dict[str, Any]) -> None:
        if message.get("janus") != "event":
            return
        data = plugin_data(message)
        result = data.get("result")
        if not isinstance(result, dict):
            return
        handler = getattr(self, f"_EH_{result.get('event')}", None)
        if handler is not None:
            handler(result)

    def handle_detached(self) -> None:
        self._handle = None
        self._observer.registration_failed("Janus detached the SIP handle")

    # --- SIP plugin events ---

    def _EH_registered(self, result: dict[str, Any]) -> None:
        self._observer.registration_succeeded()

    def _EH_registration_failed(self, result: dict[str, Any]) -> None:
        self._observer.registration_failed(f"{result.get('code', '')} {result.get('reason', '')}".strip())

    def _EH_unregistered(self, result: dict[str, Any]) -> None:
        self._observer.unregistered()

    # --- internals ---

    async def _register(self, registration: Registration) -> None:
        generation = self._generation
        if self._handle is None:
            handle = await self._session.attach(SIP_PLUGIN, self)
            if generation != self._generation:
                handle.detach().addErrback(self._detach_failed)
                raise BackendUnavailable("closed while attaching")
            self._handle = handle
        reply = await self._handle.message(self._register_body(registration))
        if generation == self._generation:  # (not closed meanwhile)
            self.handle_event(reply)  # normally `registering`; a final answer here must not be lost

    def _register_body(self, registration: Registration) -> dict[str, Any]:
        identity = self._identity
        body: dict[str, Any] = {
            "request": "register",
            "username": f"sip:{identity.aor}",
            "authuser": identity.user,
            "ha1_secret": identity.ha1,
            "register_ttl": registration.ttl,
        }
        if identity.display_name:
            body["display_name"] = identity.display_name
        if identity.user_agent:
            body["user_agent"] = identity.user_agent
        route = registration.route
        if route is None:
            body["proxy"] = f"sip:{identity.domain}"
        else:
            # `proxy` only targets the REGISTER; `outbound_proxy` also routes later requests (and spares Sofia
            # DNS lookups of the account's domain, which may not resolve).
            body["proxy"] = body["outbound_proxy"] = sip_uri(route)
            if route.transport == "tcp":
                body["force_tcp"] = True  # Janus >= 0.11.7 needs it for TCP proxies (janus-gateway#2868)
            elif route.transport == "tls":
                body["sips"] = True  # without it the account's Sofia stack has no TLS transport (416)
        return body

    def _detach_failed(self, failure: Failure) -> None:
        if not failure.check(JanusDisconnected):
            self.log.warn("Detaching the SIP handle of {aor} failed: {error}", aor=self._identity.aor,
                          error=failure.value)


def sip_uri(proxy: SIPProxy) -> str:
    port = f":{proxy.port}" if proxy.port else ""
    if proxy.transport == "tls":
        return f"sips:{proxy.host}{port}"
    return f"sip:{proxy.host}{port};transport={proxy.transport}"
