"""The gateway inside SylkServer: what the SylkServer application sylk/applications/sylkgateway does, kept here so
that it is type-checked and tested without SylkServer. Creating an EmbeddedGateway starts nothing (SylkServer creates
its applications when it imports them). `start()`, called by SylkServer once its web server listens, reads the
gateway's own configuration file, builds the gateway without a listener of its own (`GatewayService(config,
listen=False)`), starts it (the Janus pool and the links to it) and mounts its resource tree on SylkServer's web
server; `stop()` stops it, and SylkServer's reactor waits for that before it stops.

Settings, in SylkServer's configuration folder (`/etc/sylkserver/sylkgateway.ini`), all optional:

    [SylkGateway]
    config = /etc/sylkgateway/config.ini   ; the gateway's configuration (docs/configuration.md)
    path = webrtcgateway                   ; the URL path segment to mount at (one segment, no slashes)

Without `path`, the gateway mounts at `/webrtcgateway` unless SylkServer's own `webrtcgateway` application is
loaded (that path is its), and at `/sylkgateway` if it is. A path another application holds is refused. The demo
page finds its WebSocket at `ws` beside itself, whatever the path. `start()` needs SylkServer (`sylk.web`,
`sylk.applications`, python-application); importing this module does not.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EmbeddedGateway", "MountError", "mount_path", "DEFAULT_CONFIG", "SETTINGS_FILE", "SETTINGS_SECTION"]

DEFAULT_CONFIG = "/etc/sylkgateway/config.ini"
SETTINGS_FILE = "sylkgateway.ini"  # in SylkServer's configuration folder
SETTINGS_SECTION = "SylkGateway"
SYLKSERVER_GATEWAY = "webrtcgateway"  # SylkServer's own WebRTC gateway application, and the path it mounts at
FALLBACK_PATH = "sylkgateway"
LOG_NAMESPACES = ("sylk.gateway", "janus")  # what the gateway logs (twisted.logger) and SylkServer should show


class MountError(Exception):
    """The configured path cannot be used."""


def mount_path(requested: str, sylkserver_gateway_loaded: bool, taken: Any = ()) -> str:
    """The path segment to mount at: `requested`, or with '' the default (see the module's documentation). `taken`
    holds the segments already mounted on the web server."""
    path = requested.strip().strip("/")
    if not path:
        path = FALLBACK_PATH if sylkserver_gateway_loaded else SYLKSERVER_GATEWAY
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", path):
        raise MountError(f"[{SETTINGS_SECTION}] path must be one URL path segment (letters, digits, . _ -), "
                         f"got {requested!r}")
    if path == SYLKSERVER_GATEWAY and sylkserver_gateway_loaded:
        raise MountError(f"[{SETTINGS_SECTION}] path: /{path} belongs to SylkServer's own {SYLKSERVER_GATEWAY} "
                         f"application; disable it ([Server] disabled_applications = {SYLKSERVER_GATEWAY}) or choose "
                         f"another path")
    if path.encode() in taken:
        raise MountError(f"[{SETTINGS_SECTION}] path: /{path} is already mounted on SylkServer's web server")
    return path


def sylkserver_settings() -> tuple[str, str]:
    """(the gateway's configuration file, the requested path) from SylkServer's configuration folder, read the way
    SylkServer reads its own (python-application's ConfigSection). Read when the application starts, not at import."""
    from application.configuration import ConfigSection

    class SylkGatewaySettings(ConfigSection):
        __cfgfile__ = SETTINGS_FILE
        __section__ = SETTINGS_SECTION

        config = DEFAULT_CONFIG
        path = ""

    return str(SylkGatewaySettings.config), str(SylkGatewaySettings.path)


def sylkserver_web_server() -> Any:
    from sylk.web import server  # type: ignore[import-not-found, unused-ignore]
    return server


def sylkserver_gateway_loaded() -> bool:
    from sylk.applications import ApplicationRegistry  # type: ignore[attr-defined]
    return SYLKSERVER_GATEWAY in ApplicationRegistry()


class EmbeddedGateway:
    """What the SylkServer application does: the gateway started and stopped with SylkServer, mounted on its web
    server. Creating it starts nothing."""

    def __init__(self) -> None:
        self.service: Any = None
        self.path: str | None = None
        self._log_observer: Any = None
        self._stopping: Any = None
        self._shutdown_trigger: Any = None

    def start(self) -> None:
        from twisted.internet import reactor as _reactor
        reactor: Any = _reactor
        from twisted.internet.threads import blockingCallFromThread
        from twisted.python.threadable import isInIOThread

        # SylkServer calls this from a green thread on the reactor's thread; anything else waits for the reactor.
        if isInIOThread():
            self._start(reactor)
        else:
            blockingCallFromThread(reactor, self._start, reactor)

    def _start(self, reactor: Any) -> None:
        from sylk.gateway.config import ConfigError, load_config
        from sylk.gateway.service import GatewayService, open_message_store

        config_file, requested = sylkserver_settings()
        server = sylkserver_web_server()
        path = mount_path(requested, sylkserver_gateway_loaded(), getattr(server.base, "children", {}))
        try:
            config = load_config(config_file)
        except ConfigError as e:
            raise ConfigError(f"sylkgateway: {e}") from None
        self._divert_logs()
        self.service = GatewayService(config, reactor, listen=False, message_store=open_message_store(config, reactor))
        self.service.startService()
        server.register_resource(path.encode(), self.service.resource)
        self.path = path
        # SylkServer stops the reactor after stop() returns: the reactor waits for our shutdown (browsers told
        # goodbye, accounts unregistered, Janus stopped) as twistd's does.
        self._shutdown_trigger = reactor.addSystemEventTrigger("before", "shutdown", self._stop_once)

    def stop(self) -> None:
        from twisted.internet import reactor as _reactor
        reactor: Any = _reactor
        from twisted.python.threadable import isInIOThread

        if self.service is None:
            return
        if isInIOThread():
            self._stop_once()
        else:
            reactor.callFromThread(self._stop_once)

    def _stop_once(self) -> Any:
        if self._stopping is None and self.service is not None:
            self._stopping = self.service.stopService()
            self._stopping.addBoth(self._stopped)
        return self._stopping

    def _stopped(self, result: Any) -> Any:
        from twisted.logger import globalLogPublisher

        if self._log_observer is not None:
            globalLogPublisher.removeObserver(self._log_observer)
            self._log_observer = None
        return result

    def _divert_logs(self) -> None:
        """SylkServer logs through the standard library's logging and lets only Twisted's critical messages through:
        the gateway's own (info and up) go to the `sylkgateway` logger."""
        from twisted.logger import (FilteringLogObserver, LogLevel, PredicateResult, STDLibLogObserver,
                                    globalLogPublisher)

        def ours(event: dict[str, Any]) -> PredicateResult:
            namespace = str(event.get("log_namespace", ""))
            if event.get("log_level", LogLevel.info) >= LogLevel.info and namespace.startswith(LOG_NAMESPACES):
                return PredicateResult.maybe
            return PredicateResult.no

        predicates: list[Any] = [ours]  # a plain callable is what ILogFilterPredicate asks for
        self._log_observer = FilteringLogObserver(STDLibLogObserver(name="sylkgateway"), predicates)
        globalLogPublisher.addObserver(self._log_observer)
