"""JanusConnector: the gateway's one WebSocket to Janus.

It reconnects with backoff whenever the connection drops, checks each new connection with `info` (the SIP plugin
must be loaded) before offering it as `api`, and tells every session on a connection that goes away that it is
lost (Janus destroys them all when the socket closes). `api` is None whenever Janus is not usable, which is what
makes the gateway refuse new browsers with 503.

A Janus that stops answering (a deadlocked plugin, a stopped process, a half-open link) would otherwise hold every
user's calls hostage without ever closing the socket, so the link is pinged: a ping unanswered within
`ping_timeout`, a check that gets no answer, or several requests in a row that time out mean Janus is stalled. The
link is then dropped (every session on it is lost, browsers are told) and `on_stalled` is called, which kills a
Janus the gateway started so that it is started again. A late ping while Janus keeps answering other requests is a
backlog, not a stall (see BUSY_PATIENCE).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from sylk.gateway import __version__
from sylk.gateway.janus.client import JanusAPI, JanusDisconnected, JanusTimeout
from sylk.gateway.janus.admission import DEFAULT_ACCOUNT_BUDGET
from sylk.gateway.janus.sipcodec import SIP_PLUGIN
from sylk.gateway.util import OneShotObserver, Timer

JANUS_SUBPROTOCOL = "janus-protocol"
# Seconds to open the connection and finish the WebSocket handshake (a stopped Janus still accepts connections).
CONNECT_TIMEOUT = 5.0
# Reconnecting: a spawned Janus takes ~0.1 s to open its API, so the first tries come quickly. Twisted's default
# jitter adds up to a whole second to every try, which kept browsers refused (HTTP 503) for ~1.5 s after a start.
# A Janus working through a backlog (thousands of accounts let go at once: un-REGISTERs, detaches, destroys) answers
# a ping late, queued behind the backlog, while its answers to the earlier requests keep coming. It is busy, not
# stalled, for up to this long; killing it would cost every user on it their calls.
BUSY_PATIENCE = 60.0
_RETRY_POLICY = backoffPolicy(initialDelay=0.05, maxDelay=5.0, factor=1.6, jitter=lambda: random.uniform(0, 0.05))


class JanusConnector(Service):
    log = Logger()

    def __init__(self, url: str, api_secret: str, *, request_timeout: float, trace: bool, reactor: Any,
                 ping_interval: float = 3.0, ping_timeout: float = 5.0, unix_socket: Path | None = None,
                 on_stalled: Callable[[], None] | None = None,
                 account_budget: Callable[[], int] = lambda: DEFAULT_ACCOUNT_BUDGET,
                 answered_in: Callable[[float], None] | None = None, label: str | None = None) -> None:
        """`url`: the Janus API's WebSocket URL; with `unix_socket` the connection goes to that socket instead, and
        the URL only names it in the handshake and in logs. `account_budget`: how many accounts that Janus may
        hold. `answered_in`: told each request's time to its answer (JanusAPI). `label`: the member's name in
        metrics (default: the URL)."""
        self.account_budget = account_budget
        self.url = url if unix_socket is None else f"unix:{unix_socket}"
        self.label = label or self.url
        self.api: JanusAPI | None = None
        self._api_secret = api_secret
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_stalled = on_stalled
        self._answered_in = answered_in
        self._trace = trace
        self._reactor = reactor
        self._pinging = Timer(reactor)
        self._available = OneShotObserver()  # fired while `api` is usable; a new one after each loss
        factory = _JanusClientFactory(self, url if unix_socket is None else "ws://localhost/",
                                      protocols=[JANUS_SUBPROTOCOL], useragent=f"sylkgateway/{__version__}")
        self._factory = factory
        # Frames from Janus are decoded with errors replaced (onMessage), so autobahn's own UTF-8 check would only
        # add work, and turn one bad byte (a far end's header relayed by a plugin) into a failed link for everyone.
        factory.setProtocolOptions(openHandshakeTimeout=CONNECT_TIMEOUT, utf8validateIncoming=False)
        endpoint = _endpoint(reactor, url) if unix_socket is None else \
            UNIXClientEndpoint(reactor, str(unix_socket), timeout=CONNECT_TIMEOUT)
        self._client = ClientService(endpoint, factory, clock=reactor,
                                     retryPolicy=_RETRY_POLICY)

    def startService(self) -> None:
        super().startService()
        self._client.startService()

    def when_available(self) -> Deferred[None]:
        """Fires once `api` is usable (at once if it is now)."""
        return self._available.when_fired()

    def stopService(self) -> Any:
        super().stopService()
        self._pinging.cancel()
        return self._client.stopService()

    def _opened(self, protocol: _JanusClientProtocol) -> None:
        api = JanusAPI(protocol.send_text, self._reactor, api_secret=self._api_secret,
                       request_timeout=self._request_timeout, trace=self._trace,
                       on_stalled=lambda reason: self._stalled(protocol, reason), answered_in=self._answered_in)
        protocol.api = api
        Deferred.fromCoroutine(self._check(api)).addCallbacks(self._checked, self._check_failed,
                                                              callbackArgs=(api, protocol), errbackArgs=(protocol,))

    async def _check(self, api: JanusAPI) -> dict[str, Any]:
        """Make sure this Janus can serve the gateway before offering it: the SIP plugin is loaded and the API
        secret is right (Janus answers `info` without checking it, so a probe session is created too)."""
        info = await api.info(timeout=self._ping_timeout)
        plugins = info.get("plugins")
        if not isinstance(plugins, dict) or SIP_PLUGIN not in plugins:
            raise RuntimeError(f"it has no {SIP_PLUGIN} loaded; the gateway cannot work without it")
        probe = await api.create_session(lambda reason: None)
        await probe.destroy()
        return info

    def _checked(self, info: dict[str, Any], api: JanusAPI, protocol: _JanusClientProtocol) -> None:
        session_timeout = info.get("session-timeout")
        if isinstance(session_timeout, int | float) and session_timeout > 0:
            api.keepalive_interval = session_timeout * 0.4
        else:
            api.keepalive_interval = None
        self.api = api
        self.log.info("Connected to Janus {version} at {url}", version=info.get("version_string"), url=self.url)
        self._available.fire()
        self._pinging.start(self._ping_interval, self._ping, api, protocol)

    def _check_failed(self, failure: Failure, protocol: _JanusClientProtocol) -> None:
        if failure.check(JanusDisconnected):  # the connection went away (or we are stopping): just reconnect
            self.log.info("Janus at {url} went away while being checked", url=self.url)
            return
        if failure.check(JanusTimeout):
            self._stalled(protocol, f"no answer while checking it: {failure.value}")
            return
        self.log.critical("Janus at {url} cannot be used: {error}", url=self.url, error=failure.value)
        protocol.dropConnection(abort=True)

    def _ping(self, api: JanusAPI, protocol: _JanusClientProtocol) -> None:
        def answered(_: object) -> None:
            if protocol.busy_since is not None:
                self.log.info("Janus at {url} has caught up", url=self.url)
                protocol.busy_since = None
            if self.api is api:
                self._pinging.start(self._ping_interval, self._ping, api, protocol)

        def unanswered(failure: Failure) -> None:
            if failure.check(JanusTimeout):
                if self._busy(api, protocol):
                    if self.api is api:
                        self._ping(api, protocol)
                    return
                self._stalled(protocol, f"a ping got no answer within {self._ping_timeout:g} s")
            elif not failure.check(JanusDisconnected):
                self.log.failure("Pinging Janus at {url} failed", failure, url=self.url)
                self._stalled(protocol, f"a ping failed: {failure.value}")
        api.ping(self._ping_timeout).addCallbacks(answered, unanswered)

    def _busy(self, api: JanusAPI, protocol: _JanusClientProtocol) -> bool:
        """Whether a late ping is a backlog: Janus answered another request within the ping timeout, and has not
        been behind for longer than BUSY_PATIENCE."""
        now = self._reactor.seconds()
        if api.last_answer_at is None or now - api.last_answer_at >= self._ping_timeout:
            return False
        if protocol.busy_since is None:
            protocol.busy_since = now - self._ping_timeout
            self.log.warn("Janus at {url} is busy: a ping waited over {timeout:g} s while other answers kept coming",
                          url=self.url, timeout=self._ping_timeout)
        return now - protocol.busy_since < BUSY_PATIENCE

    def _stalled(self, protocol: _JanusClientProtocol, reason: str) -> None:
        if protocol.stalled:
            return
        protocol.stalled = True
        self.log.error("Janus at {url} is stalled ({reason}); dropping the link to it", url=self.url, reason=reason)
        protocol.dropConnection(abort=True)
        if self._on_stalled is not None and self.running:
            self._on_stalled()

    def _closed(self, protocol: _JanusClientProtocol, reason: str) -> None:
        api = protocol.api
        if api is None:
            return
        if self.api is api:
            self._pinging.cancel()
            self.api = None
            self._available = OneShotObserver()
            if self.running:
                self.log.warn("Lost the connection to Janus at {url}: {reason}", url=self.url, reason=reason)
        api.connection_lost(reason)


class _JanusClientProtocol(WebSocketClientProtocol):
    factory: _JanusClientFactory
    api: JanusAPI | None = None
    stalled = False
    busy_since: float | None = None  # since when pings have been late while Janus answered other requests

    def onOpen(self) -> None:
        self.factory.connector._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.api is not None and not isBinary:
            self.api.message_received(payload.decode("utf-8", "replace"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connector._closed(self, reason or f"connection closed (code {code})")

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))


class _JanusClientFactory(WebSocketClientFactory):
    protocol = _JanusClientProtocol  # type: ignore[assignment]  # autobahn's own factories declare it so too

    def __init__(self, connector: JanusConnector, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.connector = connector


def _endpoint(reactor: Any, url: str) -> Any:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    endpoint = HostnameEndpoint(reactor, host, parts.port or (443 if secure else 80), timeout=5)
    return wrapClientTLS(optionsForClientTLS(host), endpoint) if secure else endpoint
