"""GatewayService: the whole gateway as one Twisted service, as `twistd sylkgateway` runs it.

Children start in order: the Janus child (when spawned), the connection to Janus, the web server (and the metrics
listener, with `[WebServer] metrics_port`). Stopping goes
the other way with one extra step: once the web server stops listening, every browser is told goodbye and its
accounts are unregistered before Janus goes away.

`GatewayService.resource` is the `/webrtcgateway` resource, for an existing web server (SylkServer) to mount
instead of using the gateway's own listener: the WebSocket API at `ws` below it, and the demo phone and the
sylkrtc.js library (files of `sylk/gateway/web/`) beside it. `/` redirects there. `GatewayService(config,
listen=False)` builds everything but that listener (and leaves SIGHUP alone), for such a host
(sylk/applications/sylkgateway).

SIGHUP makes the web listener reload its certificate (sylk.gateway.tls).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from autobahn.twisted.resource import WebSocketResource
from twisted.application.internet import StreamServerEndpointService, UDPServer
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import ForbiddenResource, Resource
from twisted.web.server import Site
from twisted.web.static import File
from twisted.web.util import Redirect

from sylk.gateway import __version__
from sylk.gateway.config import Config, ConfigError, WebServerConfig
from sylk.gateway.health import HealthResource, ReadyResource
from sylk.gateway.janus.connector import JanusConnector
from sylk.gateway.janus.process import JanusProcess
from sylk.gateway.janus.admission import DEFAULT_ACCOUNT_BUDGET
from sylk.gateway.janus.sip import JanusSIPBackend, LineSettings
from sylk.gateway.messaging.hub import MessagingHub
from sylk.gateway.messaging.events import PostgreSQLEvents
from sylk.gateway.messaging.postgres import PostgreSQLMessageStore
from sylk.gateway.messaging.push import PushNotifier
from sylk.gateway.messaging.sipentry import MessageEntry, MessageEntryTCP, MessageEntryUDP
from sylk.gateway.messaging.sqlite import SQLiteMessageStore
from sylk.gateway.messaging.store import IMessageStore
from sylk.gateway.metrics import GatewayMetrics, metrics_root
from sylk.gateway.tls import ReloadableCertificate
from sylk.gateway.websocket import GatewayWebSocketFactory


class GatewayService(MultiService):
    log = Logger()

    def __init__(self, config: Config, reactor: Any = None, listen: bool = True,
                 message_store: IMessageStore | None = None) -> None:
        """`listen=False`: no web listener of our own (`[WebServer] local_ip/local_port/certificate` unused) and no
        SIGHUP handler; the host web server mounts `self.resource`. The metrics listener is still started when
        `[WebServer] metrics_port` asks for it. `message_store`: where the accounts' message history is kept
        (`open_message_store(config)` makes the configured one); None keeps none."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.metrics = GatewayMetrics()
        self.janus_processes = [JanusProcess(config, reactor, index, count, on_restart=self.metrics.janus_restarted)
                                for count in [janus_instances(config)] for index in range(count)]
        for process in self.janus_processes:
            process.setServiceParent(self)
        self.janus_links = janus_links(config, self.janus_processes, reactor,
                                       answered_in=self.metrics.janus_request_seconds.observe)
        for link in self.janus_links:
            link.setServiceParent(self)
        backend = JanusSIPBackend(self.janus_links, line_settings(config), reactor)
        self.messaging = MessagingHub(message_store, reactor, key_domains=config.gateway.domain_allowed)
        if message_store is not None and config.gateway.sylk_push_url:
            self.messaging.push = PushNotifier(config.gateway.sylk_push_url, message_store, reactor)
        self.events: PostgreSQLEvents | None = None
        if isinstance(message_store, PostgreSQLMessageStore):  # gateways sharing the database share events too
            self.events = PostgreSQLEvents(message_store.dsn, reactor, message_store.notify, self.messaging.remote)
            self.events.setServiceParent(self)
            self.messaging.bus = self.events
        self._purging = LoopingCall(self._purge_history)
        self._purging.clock = reactor
        self.websocket_factory = GatewayWebSocketFactory(backend, config.gateway, reactor,
                                                         trusted_proxy_hops=config.web_server.trusted_proxy_hops,
                                                         metrics=self.metrics, messaging=self.messaging)
        self.metrics.watch(self.websocket_factory, self.janus_links, backend)
        self.resource = gateway_resource(self.websocket_factory)
        root = Resource()
        root.putChild(b"", Redirect(b"/webrtcgateway/"))
        root.putChild(b"webrtcgateway", self.resource)
        root.putChild(b"health", HealthResource())
        root.putChild(b"ready", ReadyResource(self.websocket_factory, self.janus_links))
        self.listen = listen
        self.certificate = (None if config.web_server.certificate is None or not listen
                            else ReloadableCertificate(config.web_server.certificate))
        self._previous_sighup: Any = None
        self.web: StreamServerEndpointService | None = None
        if listen:
            self.web = StreamServerEndpointService(web_endpoint(reactor, config.web_server, self.certificate),
                                                   Site(root))
            self.web._raiseSynchronously = True  # a port that cannot be bound stops twistd (as strports.service does)
            self.web.setServiceParent(self)
        self.metrics_listener: StreamServerEndpointService | None = None
        if config.web_server.metrics_port:
            endpoint = TCP4ServerEndpoint(reactor, config.web_server.metrics_port,
                                          interface=config.web_server.metrics_ip)
            self.metrics_listener = StreamServerEndpointService(endpoint, Site(metrics_root(self.metrics.registry)))
            self.metrics_listener._raiseSynchronously = True
            self.metrics_listener.setServiceParent(self)
        self.sip_entry = sip_entry_listeners(config, reactor, self.messaging)
        for listener in self.sip_entry:
            listener.setServiceParent(self)

    def startService(self) -> None:
        web = self.config.web_server
        if self.listen:
            scheme = "wss" if web.certificate else "ws"
            host = f"[{web.local_ip}]" if ":" in web.local_ip else web.local_ip
            self.log.info("sylkgateway {version}: browsers connect to {scheme}://{host}:{port}/webrtcgateway/ws",
                          version=__version__, scheme=scheme, host=host, port=web.local_port)
        else:
            self.log.info("sylkgateway {version}: served by the host web server where it mounts the resource",
                          version=__version__)
        for warning in exposure_warnings(self.config, listen=self.listen):
            self.log.warn("{warning}", warning=warning)
        if self.listen:
            # handled even without a certificate: SIGHUP's default action (`systemctl reload`) would kill the gateway
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        if self.messaging.store is not None:
            self.messaging.store.open().addCallbacks(self._history_opened, self._history_unusable)
        super().startService()

    def _history_opened(self, _: object) -> None:
        self.log.info("Message history kept in {store}", store=self.messaging.store)
        self._purging.start(HISTORY_PURGE_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("Message history: purging stopped", f))

    def _history_unusable(self, failure: Failure) -> None:
        # Messages are still relayed; only their history is lost, which must not cost anybody a call.
        self.log.critical("Message history is off: the message store cannot be used ({error})", error=failure.value)
        self.messaging.store = None

    def _purge_history(self) -> None:
        store = self.messaging.store
        if store is not None:
            store.purge(self.config.gateway.message_retention_days).addCallbacks(
                lambda count: self.log.info("Message history: {count} entries past retention deleted", count=count)
                if count else None,
                lambda f: self.log.failure("Message history: purging failed", f))

    def _sighup(self, signum: int, frame: Any) -> None:
        # a signal handler may interrupt the reactor anywhere: reload from the reactor's own loop
        self.reactor.callFromThread(self._reload)
        if callable(self._previous_sighup):  # a handler someone installed before us keeps working
            self._previous_sighup(signum, frame)

    def _reload(self) -> None:
        if self.certificate is None:
            self.log.info("SIGHUP: nothing to reload ([WebServer] certificate is not set)")
        else:
            self.certificate.reload()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        steps = [("stop listening", lambda: DeferredList([listener.stopService() for listener in self._listeners()])),
                 ("close browser connections", lambda: self.websocket_factory.close_all("sylkgateway is shutting down")),
                 ("stop hearing the other gateways", lambda: self.events.stopService() if self.events else None),
                 ("close the message store", self._close_history),
                 ("disconnect from Janus", lambda: DeferredList([link.stopService() for link in self.janus_links])),
                 ("stop Janus", lambda: DeferredList([process.stopService() for process in self.janus_processes]))]
        for what, step in steps:
            try:
                await maybeDeferred(step)
            except Exception:
                self.log.failure("Shutdown: cannot {what}", what=what)

    def _close_history(self) -> Deferred[None] | None:
        if self._purging.running:
            self._purging.stop()
        store, self.messaging.store = self.messaging.store, None
        return store.close() if store is not None else None

    def _listeners(self) -> list[Service]:
        return [*(listener for listener in (self.web, self.metrics_listener) if listener is not None),
                *self.sip_entry]


def exposure_warnings(config: Config, listen: bool = True) -> list[str]:
    """What the operator should know about who can reach the gateway (allowed, but risky). Without a listener of
    our own (`listen=False`) the host web server's address and TLS are its own business."""
    warnings = []
    if "*" in config.gateway.web_origins:
        warnings.append("[WebRTCGateway] web_origins is *: any web page may use this gateway, with the SIP "
                        "accounts of whoever visits it; list the origins of your own pages")
    web = config.web_server
    if listen and web.certificate is None and not ipaddress.ip_address(web.local_ip).is_loopback:
        warnings.append(f"[WebServer] local_ip {web.local_ip} without a certificate: browsers on other machines "
                        f"connect over plain ws://, so their SIP credentials (HA1) cross the network unencrypted; "
                        f"set [WebServer] certificate, or listen on 127.0.0.1 behind a TLS proxy")
    if web.metrics_port and not ipaddress.ip_address(web.metrics_ip).is_loopback:
        warnings.append(f"[WebServer] metrics_ip {web.metrics_ip}: whoever reaches port {web.metrics_port} reads how "
                        f"many users, accounts and calls the gateway has; let only your Prometheus through")
    return warnings


# How often history past `message_retention_days` is deleted (and once at start).
HISTORY_PURGE_INTERVAL = 24 * 3600.0

# Janus children started by default, per CPU core and at most. A member starts ~10 SIP stacks (registrations) a
# second whatever the CPU, because its SIP plugin sleeps while each one starts, so the rate wants more members than
# cores: 8 per core give ~160 registrations/s on 2 cores, so a burst of 5,000 (a gateway restart) is through in ~32 s,
# well within the admission queue's 45 s; with 6 per core the last ones waited 44 s. An idle member costs ~20 MB and
# no CPU.
AUTO_INSTANCES_PER_CORE = 8
MAX_AUTO_INSTANCES = 16


def sip_entry_listeners(config: Config, reactor: Any, messaging: MessagingHub) -> list[Service]:
    """The SIP entry point for MESSAGEs (messaging/sipentry.py), UDP and TCP at `[WebRTCGateway]
    sip_messages_address`, when set."""
    gateway = config.gateway
    address = gateway.sip_messages_address
    if address is None:
        return []
    entry = MessageEntry(gateway.sip_messages_trusted, gateway.domain_allowed, messaging.received_by_sip)
    stream = (TCP6ServerEndpoint if ":" in address.host else TCP4ServerEndpoint)(reactor, address.port,
                                                                                  interface=address.host)
    tcp = StreamServerEndpointService(stream, MessageEntryTCP(entry, reactor))
    tcp._raiseSynchronously = True  # a port that cannot be bound stops the gateway at start, as the web port does
    udp = UDPServer(address.port, MessageEntryUDP(entry), interface=address.host, reactor=reactor)
    return [udp, tcp]


def open_message_store(config: Config, reactor: Any = None) -> IMessageStore | None:
    """The message store `[WebRTCGateway] message_store` asks for (not opened yet): the SQLite file at
    `message_store_path`, by default messages.sqlite in the service's state directory (systemd's StateDirectory=,
    else the directory the gateway runs in, where twistd writes its own files), the PostgreSQL database
    `message_store_dsn`, or None. ConfigError when psycopg2 is missing for PostgreSQL."""
    gateway = config.gateway
    if gateway.message_store == "none":
        return None
    if gateway.message_store == "postgresql":
        if importlib.util.find_spec("psycopg2") is None:  # (adbapi would only say "No module named psycopg2")
            raise ConfigError("[WebRTCGateway] message_store = postgresql needs psycopg2 (Debian python3-psycopg2, "
                              "or pip install 'sylkgateway[postgresql]')")
        assert gateway.message_store_dsn is not None  # (config checks it)
        return PostgreSQLMessageStore(gateway.message_store_dsn, reactor)
    path = gateway.message_store_path
    if path is None:
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        path = Path(state or ".") / "messages.sqlite"
    return SQLiteMessageStore(path.absolute(), reactor)


def janus_instances(config: Config) -> int:
    """How many Janus children to run: `[Janus] instances`, or AUTO_INSTANCES_PER_CORE per CPU core (at most
    MAX_AUTO_INSTANCES)."""
    janus = config.janus
    if not janus.spawn:
        return 0
    return janus.instances or min(AUTO_INSTANCES_PER_CORE * (os.cpu_count() or 1), MAX_AUTO_INSTANCES)


def janus_links(config: Config, processes: list[JanusProcess], reactor: Any,
                answered_in: Callable[[float], None] | None = None) -> list[JanusConnector]:
    """A link to each member of the pool: the children, then `[Janus] servers` (with `spawn = no` and no servers,
    the one at `api_url`). A server's own secret may come as the URL's password: ws://:SECRET@host:8188.
    `answered_in` is told each request's time to its answer."""
    janus = config.janus
    timing = dict(request_timeout=janus.request_timeout, ping_interval=janus.ping_interval,
                  ping_timeout=janus.ping_timeout, trace=janus.trace_janus, reactor=reactor, answered_in=answered_in)
    links = [JanusConnector("ws://localhost/", process.api_secret, unix_socket=process.api_socket,
                            on_stalled=process.kill_stalled, account_budget=process.account_budget,
                            label=process.label, **timing)
             for process in processes]
    servers = janus.servers or (() if janus.spawn else (janus.api_url,))
    for server in servers:
        url, secret = _without_password(server)
        links.append(JanusConnector(url, janus.api_secret if secret is None else secret,
                                    account_budget=lambda: janus.max_accounts or DEFAULT_ACCOUNT_BUDGET, **timing))
    return links


def _without_password(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), unquote(parts.password)


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


# Connections the kernel may hold for the web listener before the gateway accepts them. Twisted's default, 50,
# dropped 786 of 10,000 browsers opening at once (each then retried a second later: p99 to `ready` 1.07 s); the
# kernel caps it at net.core.somaxconn (4096 on current kernels).
LISTEN_BACKLOG = 1024


def web_endpoint(reactor: Any, web: WebServerConfig, certificate: ReloadableCertificate | None) -> Any:
    if certificate is None:
        return TCP4ServerEndpoint(reactor, web.local_port, backlog=LISTEN_BACKLOG, interface=web.local_ip)
    return SSL4ServerEndpoint(reactor, web.local_port, certificate, backlog=LISTEN_BACKLOG, interface=web.local_ip)
