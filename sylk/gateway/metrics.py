"""The gateway's Prometheus metrics: one registry per GatewayService, served by the metrics listener.

Events (requests, call setups and ends, Janus restarts and answers) are counted where they happen, each at the
cost of a dict lookup and an increment. Levels (connections, accounts and calls by state, Janus members
connected) are counted from the live objects at each scrape, so that no code path can leave them wrong. Scrapes
run on the reactor thread, where those objects live: the metrics resource renders there, never in a thread pool.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

from sylk.gateway.call import SETUP_PHASES
from sylk.gateway.sylkrtc.dialects import DIALECTS
from sylk.gateway.sylkrtc.model import RegistrationState, SessionState

if TYPE_CHECKING:
    from sylk.gateway.websocket import GatewayWebSocketFactory

# Call setup, from session-create to each phase: a SIP phone on the LAN answers in ms, a person in seconds.
SETUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A Janus answer: ~0.1 ms for a ping, ~100 ms for a SIP stack's start, seconds when Janus is behind.
JANUS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0)

_ACCOUNT_STATES = (RegistrationState.UNREGISTERED, RegistrationState.REGISTERING, RegistrationState.REGISTERED,
                   RegistrationState.UNREGISTERING, RegistrationState.FAILED)
_CALL_STATES = (SessionState.CONNECTING, SessionState.PROGRESS, SessionState.PROCEEDING, SessionState.RINGING,
                SessionState.EARLY_MEDIA, SessionState.ACCEPTED, SessionState.ESTABLISHED)


class JanusMember(Protocol):
    api: Any  # None while the member is not connected (a JanusAPI when it is)
    label: str  # its name in metrics


class StackLevels(Protocol):
    def stack_levels(self, api: Any) -> tuple[int, int, int]:
        """SIP stacks on the Janus behind `api`: alive, starting, and waiting for their turn."""


def connected_members(members: Sequence[JanusMember]) -> int:
    """Janus members connected and checked (the count /ready and the metrics report)."""
    return sum(member.api is not None for member in members)


class GatewayMetrics:
    """The counters and histograms, and the registry that holds them (and the collector of levels)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("sylkgateway_requests", "sylkRTC requests answered, by type",
                                 ["type"], registry=self.registry)
        self._errors = Counter("sylkgateway_request_errors", "sylkRTC requests answered with an error, by type and "
                               "cause", ["type", "cause"], registry=self.registry)
        setup = Histogram("sylkgateway_call_setup_seconds", "Outgoing calls: time from session-create to each "
                          "phase of the setup", ["phase"], buckets=SETUP_BUCKETS, registry=self.registry)
        self._setup = {phase: setup.labels(phase) for phase in SETUP_PHASES}  # every phase shown, at 0 until seen
        self._ended = Counter("sylkgateway_calls_ended", "Calls ended, by how", ["how"], registry=self.registry)
        self._restarts = Counter("sylkgateway_janus_restarts", "Spawned Janus processes restarted after an "
                                 "unexpected exit, by member", ["member"], registry=self.registry)
        self.janus_request_seconds = Histogram("sylkgateway_janus_request_seconds", "Janus requests: time from "
                                               "sending to the answer", buckets=JANUS_BUCKETS,
                                               registry=self.registry)
        # label children by (counter, label values): labels() validates and locks at every call
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def watch(self, gateway: GatewayWebSocketFactory, members: Sequence[JanusMember], stacks: StackLevels) -> None:
        """Count the levels from these at each scrape."""
        self.registry.register(LevelCollector(gateway, members, stacks))

    # --- RequestMetrics (sylkrtc/channel.py) ---

    def request_answered(self, kind: str, error: str | None) -> None:
        self._count(self._requests, kind)
        if error is not None:
            self._count(self._errors, kind, error)

    # --- CallMetrics (call.py) ---

    def call_setup_phase(self, phase: str, seconds: float) -> None:
        self._setup[phase].observe(seconds)

    def call_ended(self, how: str) -> None:
        self._count(self._ended, how)

    # --- JanusProcess ---

    def janus_restarted(self, member: str) -> None:
        self._count(self._restarts, member)

    def _count(self, counter: Counter, *labels: str) -> None:
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()


class LevelCollector(Collector):
    """Connections by dialect, accounts by registration state, calls by state, Janus members and their queues,
    counted from the live objects. Every known state is reported, at 0 when nothing is in it, so a graph never has
    gaps."""

    def __init__(self, gateway: GatewayWebSocketFactory, members: Sequence[JanusMember], stacks: StackLevels) -> None:
        self._gateway = gateway
        self._members = members
        self._stacks = stacks

    def collect(self) -> Iterable[Metric]:
        dialects: Tally[str] = Tally(dict.fromkeys(DIALECTS, 0))
        accounts: Tally[str] = Tally(dict.fromkeys(_ACCOUNT_STATES, 0))
        calls: Tally[str] = Tally(dict.fromkeys(_CALL_STATES, 0))
        for connection, socket in self._gateway.connections.items():
            dialects[socket.dialect.subprotocol] += 1
            accounts.update(account.state for account in connection.accounts.values())
            calls.update(call.state for call in connection.sessions.values())
        yield _gauge("sylkgateway_connections", "Browser connections open (kept ones too), by dialect", "dialect",
                     dialects)
        yield _gauge("sylkgateway_accounts", "SIP accounts of open connections, by registration state", "state",
                     accounts)
        yield _gauge("sylkgateway_calls", "Calls not yet terminated, by state", "state", calls)
        connected = connected_members(self._members)
        yield GaugeMetricFamily("sylkgateway_janus_members_connected", "Janus members connected and checked",
                                value=connected)
        yield GaugeMetricFamily("sylkgateway_janus_members", "Janus members configured", value=len(self._members))
        pending = GaugeMetricFamily("sylkgateway_janus_requests_pending", "Janus requests sent and not yet answered, "
                                    "by member", labels=["member"])
        stacks = GaugeMetricFamily("sylkgateway_sip_stacks", "SIP stacks (one per account) on each member: alive, "
                                   "starting, or waiting for their turn to start", labels=["member", "stage"])
        for member in self._members:
            api = member.api
            pending.add_metric([member.label], 0 if api is None else api.pending)
            levels = (0, 0, 0) if api is None else self._stacks.stack_levels(api)
            for stage, count in zip(("alive", "starting", "waiting"), levels):
                stacks.add_metric([member.label, stage], count)
        yield pending
        yield stacks


def _gauge(name: str, documentation: str, label: str, counts: Tally[str]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        gauge.add_metric([value], count)
    return gauge


class MetricsResource(Resource):
    """`/metrics`, in Prometheus's text format, rendered on the reactor thread (prometheus_client's own Twisted
    resource renders in a thread pool, where the live objects must not be read)."""

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)

    render_HEAD = render_GET


def metrics_root(registry: CollectorRegistry) -> Resource:
    """The metrics listener's resource tree: `/metrics` and nothing else."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    return root
