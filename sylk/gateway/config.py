"""The gateway's configuration: an .ini file read into frozen dataclasses.

Every option has a default, so an empty file is a working configuration on one machine. Anything wrong (an unknown
section or option, a value of the wrong kind) raises `ConfigError` naming the option, so the gateway fails at
startup instead of misbehaving later. The options are documented in docs/configuration.md.
"""

from __future__ import annotations

import configparser
import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from sylk.gateway import __version__


class ConfigError(Exception):
    """The configuration cannot be used; the message names the section and option."""


@dataclass(frozen=True)
class SIPProxy:
    """Where SIP requests are sent instead of the account's domain: `host[:port][;transport=udp|tcp|tls]`."""

    host: str
    port: int | None = None
    transport: str = "udp"

    @classmethod
    def parse(cls, text: str) -> SIPProxy:
        match = re.fullmatch(r"(?:sips?:)?(\[[0-9a-fA-F:.]+\]|[^\s:;\[\]]+)(?::(\d+))?(?:;transport=(\w+))?",
                             text.strip())
        if match is None:
            raise ValueError(f"expected host[:port][;transport=udp|tcp|tls], got {text!r}")
        default_transport = "tls" if text.strip().lower().startswith("sips:") else "udp"
        host, port, transport = match.group(1), match.group(2), (match.group(3) or default_transport).lower()
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be udp, tcp or tls, got {transport!r}")
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"port out of range in {text!r}")
        return cls(host, int(port) if port else None, transport)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.host}{port};transport={self.transport}"


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"expected FIRST-LAST, got {text!r}")
        first, last = int(match.group(1)), int(match.group(2))
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"expected 1024 <= FIRST <= LAST <= 65535, got {text!r}")
        return cls(first, last)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def share(self, index: int, count: int) -> PortRange:
        """The `index`th of `count` equal parts of the range (one Janus of a pool each, so they never compete)."""
        size = (self.last - self.first + 1) // count
        first = self.first + index * size
        return PortRange(first, first + size - 1)


@dataclass(frozen=True)
class WebServerConfig:
    """[WebServer]: where browsers connect."""

    local_ip: str = "127.0.0.1"
    local_port: int = 10888
    certificate: Path | None = None  # a PEM file holding certificate and key: serve https/wss instead of http/ws
    trusted_proxy_hops: int = 0  # reverse proxies in front that append X-Forwarded-For: the client address is read there
    metrics_ip: str = "127.0.0.1"
    metrics_port: int = 0  # a second listener serving only /metrics (Prometheus); 0: none


@dataclass(frozen=True)
class WebRTCGatewayConfig:
    """[WebRTCGateway]: the browser API and SIP behaviour."""

    web_origins: tuple[str, ...] = ("*",)
    sip_domains: tuple[str, ...] = ("*",)
    outbound_sip_proxy: SIPProxy | None = None
    websocket_ping_interval: float = 120.0
    trace_client: bool = False
    max_message_size: int = 65536
    max_accounts_per_connection: int = 20
    max_calls_per_account: int = 4
    max_connections_per_address: int = 50  # open connections from one client address (IP; /64 for IPv6)
    request_rate: float = 20.0  # requests per second per connection, sustained (token bucket refill)
    request_burst: int = 100  # requests one connection may send at once (token bucket size)
    sip_target_domains: tuple[str, ...] = ("*",)  # domains calls, messages and transfers may go to
    allow_ip_targets: bool = False  # whether targets may be IP literals (user@192.0.2.1) instead of domains
    keep_grace: float = 120.0  # how long a kept connection (connection-keep) outlives its socket, for a resume
    sip_srtp: str = "no"  # SDES-SRTP towards SIP: no, optional (offered, RTP accepted) or mandatory
    push_parameters: str = "sylk"  # REGISTER Contact push parameters: sylk (pn-app, pn-tok, ...) or rfc8599
    message_format: str = "cpim"  # account-message as SIP MESSAGE: cpim (IMDN envelope, as SylkServer) or plain
    register_ttl: int = 600
    register_timeout: float = 45.0
    user_agent: str = f"sylkgateway {__version__}"
    addressbook_dir: Path | None = None  # <dir>/<user@domain>.json: what account-fetch-addressbook answers
    message_store: str = "sqlite"  # the accounts' message history: sqlite, postgresql, or none (only relayed)
    message_store_path: Path | None = None  # the SQLite file; default: messages.sqlite in the state directory
    message_store_dsn: str | None = None  # the PostgreSQL database (libpq connection string), for postgresql
    message_retention_days: int = 365  # history entries older than this are deleted (checked daily)
    sylk_push_url: str | None = None  # Sylk's push service: messages for accounts with no device connected wake them
    sip_messages_address: SIPProxy | None = None  # host:port where the proxy forks MESSAGEs (UDP and TCP); None: off
    sip_messages_trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))  # the proxies that may send there

    def domain_allowed(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain.lower(), pattern) for pattern in self.sip_domains)

    def target_domain_allowed(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain.lower(), pattern) for pattern in self.sip_target_domains)


@dataclass(frozen=True)
class JanusConfig:
    """[Janus]: the SIP and media engine, spawned and supervised by default."""

    spawn: bool = True
    instances: int = 0  # Janus children to spawn; 0: sized to the machine (service.janus_instances)
    servers: tuple[str, ...] = ()  # Janus servers to use beside (or, with spawn = no, instead of) the children
    binary: Path = Path("/usr/bin/janus")
    library_dir: Path | None = None  # Janus's plugins/transports folders; found next to the binary when unset
    runtime_dir: Path | None = None  # where the generated Janus config lives; a private temporary folder when unset
    api_url: str = "ws://127.0.0.1:8188"
    api_secret: str = ""
    interface: str | None = None
    public_ip: str | None = None  # the address peers see when the host is behind 1:1 NAT (cloud machines)
    rtp_port_range: PortRange = PortRange(20000, 29999)
    sip_rtp_port_range: PortRange = PortRange(30000, 39999)
    sip_transaction_timeout: int = 32
    request_timeout: float = 30.0
    ping_interval: float = 3.0  # seconds between pings on the link to Janus
    ping_timeout: float = 5.0  # a ping unanswered this long means Janus is stalled: the link is dropped
    max_accounts: int = 0  # accounts (SIP stacks) on this Janus at once; 0: derived from its open-files limit
    admin_api: bool = False  # Janus's Admin API on a Unix socket in the runtime folder, for diagnostics
    decline_code: int = 486  # the SIP answer when a browser rejects an incoming call
    max_open_files: int = 65536
    log_level: int = 3  # warnings: at 4 Janus prints ~7 lines per call, ~20 % of the gateway's CPU in call setup
    trace_janus: bool = False


@dataclass(frozen=True)
class Config:
    web_server: WebServerConfig = field(default_factory=WebServerConfig)
    gateway: WebRTCGatewayConfig = field(default_factory=WebRTCGatewayConfig)
    janus: JanusConfig = field(default_factory=JanusConfig)


# --- value parsers: each takes the raw text and returns the value or raises ValueError with a short explanation ---

def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def _number(convert: Callable[[str], Any], low: float, high: float, what: str) -> Callable[[str], Any]:
    """A parser for a number of type `convert` (int or float) between low and high, e.g. 'a number of seconds'."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected {what} from {low:g} to {high:g}, got {value:g}")
        return value
    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    return _number(int, low, high, "a whole number")


def _seconds(low: float, high: float) -> Callable[[str], float]:
    return _number(float, low, high, "a number of seconds")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value
    return parse


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None


def _host_and_port(text: str) -> SIPProxy:
    """An IP address and a port (where to listen), as `127.0.0.1:5065` or `[::1]:5065`."""
    address = SIPProxy.parse(text)
    if address.port is None or ";" in text:
        raise ValueError(f"expected ip:port, got {text!r}")
    _ip_address(address.host.strip("[]"))
    return SIPProxy(address.host.strip("[]"), address.port)


def _http_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text.strip()


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        networks = tuple(ipaddress.ip_network(word, strict=False) for word in re.split(r"[\s,]+", text.strip()) if word)
    except ValueError:
        raise ValueError(f"expected IP addresses or networks (192.0.2.10, 192.0.2.0/24), got {text!r}") from None
    if not networks:
        raise ValueError("expected at least one IP address or network")
    return networks


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An empty value means 'not set'."""
    return lambda text: parse(text) if text.strip() else None


def _word_list(text: str) -> tuple[str, ...]:
    words = tuple(word.lower() for word in re.split(r"[\s,]+", text.strip()) if word)
    if not words:
        raise ValueError("expected a list of names or *")
    return words


def _origins(text: str) -> tuple[str, ...]:
    # Origins are compared by autobahn as patterns such as https://*.example.com; keep their case.
    words = tuple(word for word in re.split(r"[\s,]+", text.strip()) if word)
    if not words:
        raise ValueError("expected a list of origins or *")
    return words


def _existing_file(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _existing_dir(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_dir():
        raise ValueError(f"no such folder: {path}")
    return path


def _janus_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"expected a ws:// or wss:// URL, got {text!r}")
    return text.strip()


def _janus_urls(text: str) -> tuple[str, ...]:
    urls = tuple(_janus_url(word) for word in re.split(r"[\s,]+", text.strip()) if word)
    if len(set(urls)) != len(urls):
        raise ValueError("a server is listed twice")
    return urls


def _text(text: str) -> str:
    return text.strip()


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _user_agent(text: str) -> str:
    # Printable ASCII: it goes into every SIP request's User-Agent header and into Janus's configuration file.
    value = _nonempty(text)
    if not re.fullmatch(r"[\x20-\x7e]+", value):
        raise ValueError(f"expected printable ASCII (letters, digits, spaces and punctuation), got {value!r}")
    if len(value) > 128:
        raise ValueError(f"expected at most 128 characters, got {len(value)}")
    return value


_PARSERS: dict[str, tuple[type, dict[str, Callable[[str], Any]]]] = {
    "WebServer": (WebServerConfig, {
        "local_ip": _ip_address,
        "local_port": _integer(1, 65535),
        "certificate": _optional(_existing_file),
        "trusted_proxy_hops": _integer(0, 16),
        "metrics_ip": _ip_address,
        "metrics_port": _integer(0, 65535),
    }),
    "WebRTCGateway": (WebRTCGatewayConfig, {
        "web_origins": _origins,
        "sip_domains": _word_list,
        "outbound_sip_proxy": _optional(SIPProxy.parse),
        "websocket_ping_interval": _seconds(0, 86400),
        "trace_client": _boolean,
        "max_message_size": _integer(1024, 16 * 1024 * 1024),
        "max_accounts_per_connection": _integer(1, 10000),
        "max_calls_per_account": _integer(1, 32),
        "max_connections_per_address": _integer(1, 1000000),
        "request_rate": _number(float, 0.1, 100000, "a number of requests per second"),
        "request_burst": _integer(1, 1000000),
        "sip_target_domains": _word_list,
        "allow_ip_targets": _boolean,
        "keep_grace": _seconds(0, 3600),
        "sip_srtp": _choice("no", "optional", "mandatory"),
        "push_parameters": _choice("sylk", "rfc8599"),
        "message_format": _choice("cpim", "plain"),
        "register_ttl": _integer(60, 86400),
        "register_timeout": _seconds(1, 3600),
        "user_agent": _user_agent,
        "addressbook_dir": _optional(_existing_dir),
        "message_store": _choice("sqlite", "postgresql", "none"),
        "message_store_dsn": _optional(_text),
        "message_store_path": _optional(lambda text: Path(text.strip())),
        "message_retention_days": _integer(1, 36500),
        "sylk_push_url": _optional(_http_url),
        "sip_messages_address": _optional(_host_and_port),
        "sip_messages_trusted": _networks,
    }),
    "Janus": (JanusConfig, {
        "spawn": _boolean,
        "instances": _integer(0, 64),
        "servers": _janus_urls,
        "binary": lambda text: Path(_nonempty(text)),
        "library_dir": _optional(lambda text: Path(text.strip())),
        "runtime_dir": _optional(lambda text: Path(text.strip())),
        "api_url": _janus_url,
        "api_secret": _text,
        "interface": _optional(_ip_address),
        "public_ip": _optional(_ip_address),
        "rtp_port_range": PortRange.parse,
        "sip_rtp_port_range": PortRange.parse,
        "sip_transaction_timeout": _integer(1, 300),
        "request_timeout": _seconds(1, 600),
        "ping_interval": _seconds(0.1, 600),
        "ping_timeout": _seconds(0.1, 600),
        "max_accounts": _integer(0, 1000000),
        "admin_api": _boolean,
        "decline_code": _integer(400, 699),
        "max_open_files": _integer(1024, 1048576),
        "log_level": _integer(0, 7),
        "trace_janus": _boolean,
    }),
}

# Every parser must describe a dataclass field and every field must have a parser.
for _section, (_cls, _parsers) in _PARSERS.items():
    assert set(_parsers) == {f.name for f in fields(_cls)}, _section


def parse_config(text: str, source: str = "<config>") -> Config:
    # No DEFAULT section: its options would silently apply to every section (default_section names none).
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=True,
                                       default_section="\0")
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # option names are case sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        raise ConfigError(f"{source}: {e.message}") from None
    sections: dict[str, Any] = {}
    for section in parser.sections():
        if section not in _PARSERS:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(_PARSERS)})")
    for section, (cls, parsers) in _PARSERS.items():
        values = {}
        if parser.has_section(section):
            for option, raw in parser.items(section):
                if option not in parsers:
                    raise ConfigError(f"{source}: unknown option [{section}] {option} (known: {', '.join(parsers)})")
                try:
                    values[option] = parsers[option](raw)
                except ValueError as e:
                    raise ConfigError(f"{source}: bad value for [{section}] {option}: {e}") from None
        sections[section] = cls(**values)
    config = Config(sections["WebServer"], sections["WebRTCGateway"], sections["Janus"])
    _check(config, source)
    return config


def _check(config: Config, source: str) -> None:
    """Checks that involve more than one option."""
    janus, gateway, web = config.janus, config.gateway, config.web_server
    if web.metrics_port == web.local_port:
        raise ConfigError(f"{source}: [WebServer] metrics_port ({web.metrics_port}) must differ from local_port: "
                          f"the metrics are served on a listener of their own")
    if gateway.register_timeout <= janus.sip_transaction_timeout:
        raise ConfigError(f"{source}: [WebRTCGateway] register_timeout ({gateway.register_timeout:g} s) must be "
                          f"longer than [Janus] sip_transaction_timeout ({janus.sip_transaction_timeout} s), "
                          f"or the gateway gives up before SIP does")
    if gateway.sip_messages_address is not None and gateway.message_store == "none":
        raise ConfigError(f"{source}: [WebRTCGateway] sip_messages_address needs a message store (message_store is "
                          f"none): the messages taken there are kept for their accounts' devices")
    if gateway.message_store == "postgresql" and not gateway.message_store_dsn:
        raise ConfigError(f"{source}: [WebRTCGateway] message_store = postgresql needs message_store_dsn (the "
                          f"database, as libpq takes it: host=db.example.com dbname=sylkgateway user=...)")
    if janus.spawn:
        first, second = janus.rtp_port_range, janus.sip_rtp_port_range
        if first.first <= second.last and second.first <= first.last:
            raise ConfigError(f"{source}: [Janus] rtp_port_range {first} overlaps sip_rtp_port_range {second}")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark from Windows editors
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read configuration file {path}: not UTF-8 ({e.reason} at byte {e.start})") \
            from None
    return parse_config(text, str(path))
