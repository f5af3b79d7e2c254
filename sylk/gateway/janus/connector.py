"""JanusConnector: the gateway's one WebSocket to Janus.

It reconnects with backoff whenever the connection drops, checks each new connection with `info` (the SIP plugin
must be loaded) before offering it as `api`, and tells every session on a connection that goes away that it is
lost (Janus destroys them all when the socket closes). `api` is None whenever Janus is not usable, which is what
makes the gateway refuse new browsers with 503.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from sylk.gateway import __version__
from sylk.gateway.janus.client import JanusAPI, JanusDisconnected
from sylk.gateway.janus.sip import SIP_PLUGIN

JANUS_SUBPROTOCOL = "janus-protocol"


class JanusConnector(Service):
    log = Logger()

    def __init__(self, url: str, api_secret: str, *, request_timeout: float, trace: bool, reactor: Any) -> None:
        self.url = url
        self.api: JanusAPI | None = None
        self._api_secret = api_secret
        self._request_timeout = request_timeout
        self._trace = trace
        self._reactor = reactor
        factory = WebSocketClientFactory(url, protocols=[JANUS_SUBPROTOCOL], useragent=f"sylkgateway/{__version__}")
        factory.protocol = _JanusClientProtocol
        factory.connector = self
        self._client = ClientService(_endpoint(reactor, url), factory, clock=reactor,
                                     retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=5.0, factor=1.6))

    def startService(self) -> None:
        super().startService()
        self._client.startService()

    def stopService(self) -> Any:
        super().stopService()
        return self._client.stopService()

    def _opened(self, protocol: _JanusClientProtocol) -> None:
        api = JanusAPI(protocol.send_text, self._reactor, api_secret=self._api_secret,
                       request_timeout=self._request_timeout, trace=self._trace)
        protocol.api = api
        Deferred.fromCoroutine(self._check(api)).addCallbacks(self._checked, self._check_failed,
                                                              callbackArgs=(api,), errbackArgs=(protocol,))

    async def _check(self, api: JanusAPI) -> dict[str, Any]:
        """Make sure this Janus can serve the gateway before offering it: the SIP plugin is loaded and the API
        secret is right (Janus answers `info` without checking it, so a probe session is created too)."""
        info = await api.info()
        if SIP_PLUGIN not in (info.get("plugins") or {}):
            raise RuntimeError(f"it has no {SIP_PLUGIN} loaded; the gateway cannot work without it")
        probe = await api.create_session(lambda reason: None)
        await probe.destroy()
        return info

    def _checked(self, info: dict[str, Any], api: JanusAPI) -> None:
        session_timeout = info.get("session-timeout") or 0
        api.keepalive_interval = session_timeout * 0.4 if session_timeout > 0 else None
        self.api = api
        self.log.info("Connected to Janus {version} at {url}", version=info.get("version_string"), url=self.url)

    def _check_failed(self, failure: Failure, protocol: _JanusClientProtocol) -> None:
        if failure.check(JanusDisconnected):  # the connection went away (or we are stopping): just reconnect
            self.log.info("Janus at {url} went away while being checked", url=self.url)
            return
        self.log.critical("Janus at {url} cannot be used: {error}", url=self.url, error=failure.value)
        protocol.dropConnection(abort=True)

    def _closed(self, protocol: _JanusClientProtocol, reason: str) -> None:
        api = protocol.api
        if api is None:
            return
        if self.api is api:
            self.api = None
            if self.running:
                self.log.warn("Lost the connection to Janus at {url}: {reason}", url=self.url, reason=reason)
        api.connection_lost(reason)


class _JanusClientProtocol(WebSocketClientProtocol):
    api: JanusAPI | None = None

    def onOpen(self) -> None:
        self.factory.connector._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.api is not None and not isBinary:
            self.api.message_received(payload.decode("utf-8"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connector._closed(self, reason or f"connection closed (code {code})")

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))


def _endpoint(reactor: Any, url: str) -> Any:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    endpoint = HostnameEndpoint(reactor, host, parts.port or (443 if secure else 80), timeout=5)
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint
