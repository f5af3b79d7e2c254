"""GatewayService: the whole gateway as one Twisted service, as `twistd sylkgateway` runs it.

Children start in order: the Janus child (when spawned), the connection to Janus, the web server. Stopping goes
the other way with one extra step: once the web server stops listening, every browser is told goodbye and its
accounts are unregistered before Janus goes away.

`GatewayService.resource` is the `/webrtcgateway` resource, for an existing web server (SylkServer) to mount
instead of using the gateway's own listener: the WebSocket API at `ws` below it, and the demo phone and the
sylkrtc.js library (files of `sylk/gateway/web/`) beside it. `/` redirects there.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.web.resource import ForbiddenResource, Resource
from twisted.web.server import Site
from twisted.web.static import File
from twisted.web.util import Redirect

from sylk.gateway import __version__
from sylk.gateway.config import Config, ConfigError, WebServerConfig
from sylk.gateway.janus.connector import JanusConnector
from sylk.gateway.janus.process import JanusProcess
from sylk.gateway.janus.sip import DEFAULT_ACCOUNT_BUDGET, JanusSIPBackend, LineSettings
from sylk.gateway.websocket import GatewayWebSocketFactory


class GatewayService(MultiService):
    log = Logger()

    def __init__(self, config: Config, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        janus = config.janus
        self.janus_process: JanusProcess | None = None
        timing = dict(request_timeout=janus.request_timeout, ping_interval=janus.ping_interval,
                      ping_timeout=janus.ping_timeout, trace=janus.trace_janus, reactor=reactor)
        if janus.spawn:
            self.janus_process = JanusProcess(config, reactor)
            self.janus_process.setServiceParent(self)
            self.janus = JanusConnector("ws://localhost/", self.janus_process.api_secret,
                                        unix_socket=self.janus_process.api_socket,
                                        on_stalled=self.janus_process.kill_stalled, **timing)
        else:
            self.janus = JanusConnector(janus.api_url, janus.api_secret, **timing)
        self.janus.setServiceParent(self)
        budget = self.janus_process.account_budget if self.janus_process is not None else \
            (lambda: janus.max_accounts or DEFAULT_ACCOUNT_BUDGET)
        backend = JanusSIPBackend(self.janus, line_settings(config), reactor, account_budget=budget)
        self.websocket_factory = GatewayWebSocketFactory(backend, config.gateway, reactor,
                                                         trusted_proxy_hops=config.web_server.trusted_proxy_hops)
        self.resource = gateway_resource(self.websocket_factory)
        root = Resource()
        root.putChild(b"", Redirect(b"/webrtcgateway/"))
        root.putChild(b"webrtcgateway", self.resource)
        self.web = StreamServerEndpointService(web_endpoint(reactor, config.web_server), Site(root))
        self.web._raiseSynchronously = True  # a port that cannot be bound stops twistd (as strports.service does)
        self.web.setServiceParent(self)

    def startService(self) -> None:
        web = self.config.web_server
        scheme = "wss" if web.certificate else "ws"
        host = f"[{web.local_ip}]" if ":" in web.local_ip else web.local_ip
        self.log.info("sylkgateway {version}: browsers connect to {scheme}://{host}:{port}/webrtcgateway/ws",
                      version=__version__, scheme=scheme, host=host, port=web.local_port)
        for warning in exposure_warnings(self.config):
            self.log.warn("{warning}", warning=warning)
        super().startService()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        steps = [("stop listening", self.web.stopService),
                 ("close browser connections", lambda: self.websocket_factory.close_all("sylkgateway is shutting down")),
                 ("disconnect from Janus", self.janus.stopService)]
        if self.janus_process is not None:
            steps.append(("stop Janus", self.janus_process.stopService))
        for what, step in steps:
            try:
                await maybeDeferred(step)
            except Exception:
                self.log.failure("Shutdown: cannot {what}", what=what)


def exposure_warnings(config: Config) -> list[str]:
    """What the operator should know about who can reach the gateway (allowed, but risky)."""
    warnings = []
    if "*" in config.gateway.web_origins:
        warnings.append("[WebRTCGateway] web_origins is *: any web page may use this gateway, with the SIP "
                        "accounts of whoever visits it; list the origins of your own pages")
    web = config.web_server
    if web.certificate is None and not ipaddress.ip_address(web.local_ip).is_loopback:
        warnings.append(f"[WebServer] local_ip {web.local_ip} without a certificate: browsers on other machines "
                        f"connect over plain ws://, so their SIP credentials (HA1) cross the network unencrypted; "
                        f"set [WebServer] certificate, or listen on 127.0.0.1 behind a TLS proxy")
    return warnings


def line_settings(config: Config) -> LineSettings:
    gateway = config.gateway
    return LineSettings(max_lines=gateway.max_calls_per_account, srtp=gateway.sip_srtp,
                        decline_code=config.janus.decline_code, route=gateway.outbound_sip_proxy,
                        transaction_timeout=config.janus.sip_transaction_timeout,
                        queue_timeout=gateway.register_timeout)


WEB_DIR = Path(__file__).parent / "web"


class WebFiles(File):
    """The demo phone and the client library; no directory listings."""

    def directoryListing(self) -> Resource:
        return ForbiddenResource()


def gateway_resource(factory: GatewayWebSocketFactory) -> Resource:
    resource = WebFiles(str(WEB_DIR))
    resource.putChild(b"ws", WebSocketResource(factory))
    return resource


def web_endpoint(reactor: Any, web: WebServerConfig) -> Any:
    if web.certificate is None:
        return TCP4ServerEndpoint(reactor, web.local_port, interface=web.local_ip)
    return SSL4ServerEndpoint(reactor, web.local_port, tls_options(web.certificate), interface=web.local_ip)


def tls_options(path: Path) -> ssl.CertificateOptions:
    """TLS settings from one PEM file holding the key, the certificate and optionally its chain."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"[WebServer] certificate: cannot read {path}: {e.strerror}") from None
    try:
        certificate = ssl.PrivateCertificate.loadPEM(pem)
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks[1:]]
    except Exception as e:
        raise ConfigError(f"[WebServer] certificate: cannot load a certificate and its key from {path}: {e}") from None
    return ssl.CertificateOptions(privateKey=certificate.privateKey.original, certificate=certificate.original,
                                  extraCertChain=chain)
