#!/usr/bin/env python3
"""How fast sylkgateway registers (and unregisters) many SIP accounts, with one Janus or a pool of them, next to
as many raw Janus.

    sudo .venv/bin/python bench/registrations.py [--scenario default|sustained|burst|storm] [--members K]
                                                 [--accounts N] [--connections C] [--rate R] [--duration T]
                                                 [--mode both|gateway|janus] [--set Section.option=value ...]
    sudo .venv/bin/python bench/registrations.py --suite        (what `make bench` runs: about 5 minutes)

Everything runs inside a fresh loopback-only network namespace (tests/integration/netns.py), against a fresh
Kamailio registrar (tests/integration/kamailio.py) per side and scenario, holding N subscribers user0001.. (HA1
only), on 127.0.0.1:5070.

Scenarios (each first registers N accounts over C connections, offered at R per second, R = 0: all at once):
- default: N, C and R as given; then every connection closes at once (unregistration throughput).
- sustained: R per second for T seconds (N = R x T); is the achieved rate R, without failures, and does the latency
  stay flat (the first and last fifth of the requests compared), i.e. nothing queues?
- burst: all N at once; the time until all are registered.
- storm: once all are registered, every connection drops at once (a TCP reset, no close handshake, as a network blip
  would), then each reconnects, adds its accounts and registers them again at once: the time from the drop until all
  N are registered again, and the registrar's bindings meanwhile (old ones left behind?).

Sides:
1. gateway: `twistd sylkgateway` with a pool of K Janus children (`[Janus] instances`, tests/integration/gateway.py).
   C browser connections (websockets' asyncio client, sylkRTC-1, which closes a dropped connection at once: no
   `connection-keep`) open at once; each adds its share of the accounts, round-robin; then `register` is offered on
   schedule. Measured: time to `ready`, latency from `register` to the `registered` event, RSS/threads/fds/CPU of
   the gateway and of its Janus members (/proc), bindings at Kamailio; at the end every connection closes at once and
   Kamailio is polled until no binding is left.
2. janus: K raw Janus started as the gateway starts its members (the launcher, the config render_janus_config makes
   from the same .ini, each with its share of the RTP port ranges, its API on a TCP port), one WebSocket to each: C
   sessions spread over them round-robin, one SIP handle per account (attach, then `register` with the body the
   gateway sends), latency from `attach` to `registered`. A storm drops the WebSockets (Janus destroys their
   sessions). At the end, `unregister` on every handle at once, detach, destroy.

Every wait is bounded; all processes (gateway, Janus, Kamailio) are stopped on errors, Ctrl-C and SIGTERM.
Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import re
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DOMAIN, KAMAILIO_PORT, Browser, JanusClient, ProcInfo, RawJanus, add_common_options,  # noqa: E402
                    apply_settings, current_janus_pids, group_cpu_seconds, ini_text, install_signal_handlers, log,
                    ms, percentile, poll_contacts, proc_info, procs_info, require_root, schedule, sip_result,
                    sleep_until, write_results)
from websockets.asyncio.client import ClientConnection  # noqa: E402

from sylk.gateway.config import Config, parse_config  # noqa: E402
from sylk.gateway.janus.sipcodec import sip_uri  # noqa: E402
from tests.integration.gateway import Gateway  # noqa: E402
from tests.integration.kamailio import Kamailio  # noqa: E402
from tests.integration.netns import network_namespace  # noqa: E402


# ------------------------------------------------------------------------------------------------ what runs

@dataclass(frozen=True)
class Case:
    """One scenario with its sizes, run on each side."""

    scenario: str  # default, sustained, burst or storm
    members: int  # Janus processes: the gateway's pool, and as many raw Janus
    accounts: int
    connections: int  # browser connections, and Janus sessions on the raw side
    rate: float  # register requests offered per second; 0: all at once

    @property
    def offered(self) -> str:
        if self.rate <= 0:
            return "all at once"
        return f"{self.rate:g}/s x {self.accounts / self.rate:g} s"

    @property
    def pool(self) -> str:
        return "one Janus" if self.members == 1 else f"pool of {self.members}"

    @property
    def first_wave(self) -> str:
        """What the first registrations measure: a storm's are a sustained rate or a burst."""
        if self.scenario != "storm":
            return self.scenario
        return "sustained" if self.rate > 0 else "burst"

    def __str__(self) -> str:
        return (f"{self.scenario}, {self.pool}: {self.accounts} accounts over {self.connections} connections, "
                f"offered {self.offered}")


# What `make bench` runs: the targets with the default pool of a 2-core machine, 16 members (each starts ~10
# new SIP stacks a second, so ~160/s), and a one-Janus reference; sizes and run times in bench/README.md.
SUITE = (
    # 100/s for 20 s (the sustained figure), then those 2,000 in a reconnect storm
    Case("storm", 16, 2000, 200, 100.0),
    # 5,000 at once: ~310 per member, well under the queue_timeout (45 s) at ~10/s each, and far under the budget
    Case("burst", 16, 5000, 250, 0.0),
    # one Janus offered twice its pace (it queues), then a storm of 60
    Case("storm", 1, 60, 6, 20.0),
)


# ------------------------------------------------------------------------------------------------ figures

@dataclass
class Phase:
    """One wave of registrations: each account's outcome, and the times from the wave's origin (the first request, or
    the drop of a storm)."""

    accounts: int
    latencies: list[float] = field(default_factory=list)  # request sent -> registered, in the order sent, seconds
    failures: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # no final answer within the benchmark's own bound
    span_s: float = math.nan  # origin -> last registered

    @property
    def registered(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        return self.registered / self.span_s if self.span_s > 0 else math.nan

    def p(self, pct: float) -> float:
        return percentile(self.latencies, pct)

    @property
    def trend(self) -> tuple[float, float]:
        """Median latency of the first and of the last fifth of the requests: equal when nothing queues."""
        fifth = max(1, len(self.latencies) // 5)
        return percentile(self.latencies[:fifth], 50), percentile(self.latencies[-fifth:], 50)

    @property
    def flat(self) -> bool:
        first, last = self.trend
        return last <= max(1.5 * first, first + 0.05)

    def figures(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "registered": self.registered, "failed": self.failed,
                "no_answer": self.missing, "failures": self.failures, "registrations_per_s": self.rate,
                "all_registered_s": self.span_s, "latency_p50_ms": self.p(50) * 1000,
                "latency_p95_ms": self.p(95) * 1000, "latency_p99_ms": self.p(99) * 1000,
                "latency_max_ms": max(self.latencies, default=math.nan) * 1000,
                "latency_first_last_fifth_p50_ms": [t * 1000 for t in self.trend], "flat": self.flat}


def collect(order: list[str], outcomes: dict[str, tuple[float, str | None]], sent_at: dict[str, float],
            origin: float) -> Phase:
    """A Phase from each account's (time, failure reason or None) in `outcomes`, in the order they were sent."""
    phase = Phase(len(order))
    last = origin
    for account in order:
        if account not in outcomes:
            phase.missing += 1
            continue
        at, reason = outcomes[account]
        if reason is None:
            phase.latencies.append(at - sent_at[account])
            last = max(last, at)
        else:
            phase.failures[reason] = phase.failures.get(reason, 0) + 1
    phase.span_s = last - origin if phase.latencies else math.nan
    return phase


@dataclass
class Result:
    mode: str
    case: Case
    ready_s: list[float] = field(default_factory=list)
    register: Phase = field(default_factory=lambda: Phase(0))
    bindings: int = 0  # at Kamailio once registration settled
    storm: Phase | None = None
    reconnect_s: list[float] = field(default_factory=list)  # storm: drop -> ready (or session) again
    storm_peak_bindings: int = 0  # at Kamailio between the drop and the end of the storm
    storm_bindings: int = 0  # when every account was registered again
    storm_settled_s: float = math.nan  # drop -> bindings == registered accounts again
    unreg_s: float = math.nan  # close/unregister start -> Kamailio empty
    unreg_events_s: float = math.nan  # raw only: until every `unregistered` event
    left_bindings: int = 0
    main_before: ProcInfo = field(default_factory=ProcInfo)  # the gateway (gateway mode) or nothing
    main_after: ProcInfo = field(default_factory=ProcInfo)
    main_closed: ProcInfo = field(default_factory=ProcInfo)
    janus_before: ProcInfo = field(default_factory=ProcInfo)  # every member together
    janus_after: ProcInfo = field(default_factory=ProcInfo)
    janus_closed: ProcInfo = field(default_factory=ProcInfo)
    kamailio_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    handles: int | None = None  # SIP-plugin handles Janus created (from its log; None if it logs too little)
    problems: dict[str, int] = field(default_factory=dict)  # warnings and errors in the logs, normalized
    closes: dict[str, int] = field(default_factory=dict)  # gateway: connections it closed, by close code
    janus_starts: int = 0  # gateway: Janus processes it started (more than the members: some were restarted)

    @property
    def unreg_rate(self) -> float:
        registered = self.storm.registered if self.storm is not None else self.register.registered
        return registered / self.unreg_s if self.unreg_s > 0 else math.nan


# Log lines that every run has and that say nothing about the benchmark.
_NOISE = re.compile(r"has been disabled, skipping|Reclaim session timeouts have been disabled|mDNS resolution "
                    r"disabled|may open only \d+ files|SIP backend \(Janus\) is not available")
_PROBLEM = re.compile(r"\[([\w.]+)#(warn|error|critical)\] (.*)|(\[(?:WARN|ERR|FATAL)\] .*)")


def log_digest(text: str) -> tuple[int | None, dict[str, int]]:
    """(handles Janus created, {normalized warning or error: count}) from a gateway or Janus log."""
    handles = text.count("Creating new handle")
    problems: dict[str, int] = {}
    for line in text.splitlines():
        match = _PROBLEM.search(line)
        if match is None or _NOISE.search(line):
            continue
        if match.group(4):
            what = f"janus: {match.group(4)}"
        else:
            namespace, level, message = match.groups()[:3]
            if namespace == "janus":  # Janus's own lines, relayed into the gateway's log
                what = f"janus: {message}"
            else:
                what = f"{namespace.rpartition('.')[2]} {level}: {message}"
        what = re.sub(r"user\d{4}", "userNNNN", what)
        what = re.sub(r"\b(0x[0-9a-f]+|\d{5,})\b", "N", what)
        what = re.sub(r"\[plugins/(\w+\.c):\w+:\d+\] ", r"[\1] ", what)[:150]
        problems[what] = problems.get(what, 0) + 1
    return (handles or None), problems


def gateway_digest(result: Result, gateway: Gateway) -> None:
    """What the gateway's log says: problems, connections it closed (by code), Janus processes it started."""
    text = gateway.log()
    result.handles, result.problems = log_digest(text)
    for code in re.findall(r"Connection \S+ closed \((\d+)", text):
        result.closes[code] = result.closes.get(code, 0) + 1
    result.janus_starts = len(re.findall(r"Started Janus \(pid \d+\)", text))


def kamailio_cpu(kamailio: Kamailio) -> float:
    return group_cpu_seconds(kamailio.process.pid if kamailio.process else None)


def abort(ws: ClientConnection) -> None:
    """Drop a connection as a network blip would: no close handshake, and a TCP reset (SO_LINGER 0), so the peer
    learns at once that it is gone."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


class BindingWatch:
    """Kamailio's binding count, polled in the background during a storm: old bindings left, new ones made."""

    def __init__(self, kamailio: Kamailio, interval: float = 0.2) -> None:
        self.peak = 0
        self._task = asyncio.create_task(self._poll(kamailio, interval))

    async def _poll(self, kamailio: Kamailio, interval: float) -> None:
        while True:
            _, count = await poll_contacts(kamailio, lambda c: True, timeout=5)
            self.peak = max(self.peak, count)
            await asyncio.sleep(interval)

    async def stop(self) -> int:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.peak


async def storm_settled(result: Result, kamailio: Kamailio, watch: BindingWatch, drop: float) -> None:
    """After a storm: the bindings then, and how long until they are one per account again (old ones gone)."""
    assert result.storm is not None
    registered = result.storm.registered
    _, result.storm_bindings = await poll_contacts(kamailio, lambda c: True, timeout=3)
    settled, _ = await poll_contacts(kamailio, lambda c: c == registered, timeout=15, interval=0.05)
    result.storm_settled_s = time.monotonic() - drop if not math.isnan(settled) else math.nan
    result.storm_peak_bindings = max(await watch.stop(), result.storm_bindings)


# ------------------------------------------------------------------------------------------------ gateway side

async def open_browsers(url: str, count: int) -> list[Browser]:
    """`count` sylkRTC-1 connections opened at once, each until `ready`."""
    opened = await asyncio.gather(*(Browser.open(url) for _ in range(count)), return_exceptions=True)
    browsers = [b for b in opened if isinstance(b, Browser)]
    errors = [e for e in opened if not isinstance(e, Browser)]
    if errors:
        await asyncio.gather(*(b.close() for b in browsers), return_exceptions=True)
        raise RuntimeError(f"{len(errors)} of {count} connections failed: {errors[0]!r}")
    return browsers


async def add_accounts(browsers: list[Browser], users: list[str], kamailio: Kamailio) -> dict[str, Browser]:
    """Each account added on its connection (round-robin), all at once; {account: its connection}."""
    owner = {f"{user}@{DOMAIN}": browsers[i % len(browsers)] for i, user in enumerate(users)}
    answers = await asyncio.gather(*(browser.request("add_account", account=account,
                                                     password=kamailio.ha1(account.partition("@")[0]))
                                     for account, browser in owner.items()))
    refused = [a for a in answers if a["sylkrtc"] != "ack"]
    if refused:
        raise RuntimeError(f"{len(refused)} add_account requests refused, e.g. {refused[0]}")
    return owner


async def gateway_register(owner: dict[str, Browser], rate: float, bound: float,
                           origin: float | None = None) -> Phase:
    """`register` for every account, offered on schedule; waits for each outcome at most `bound` s after the last
    request. Latency: from the request to the `registered` event."""
    loop = asyncio.get_running_loop()
    for account, browser in owner.items():
        browser.final[account] = loop.create_future()
    sent_at: dict[str, float] = {}
    start = time.monotonic()
    offsets = schedule(len(owner), rate)

    async def register(account: str, offset: float) -> None:
        await sleep_until(start + offset)
        browser = owner[account]
        sent_at[account] = time.monotonic()
        try:
            answer = await browser.request("register", account=account)
            refusal = None if answer["sylkrtc"] == "ack" else f"refused: {answer['error']}"
        except (ConnectionError, asyncio.TimeoutError) as e:
            refusal = f"request: {e!r}"
        if refusal is not None and not browser.final[account].done():
            browser.final[account].set_result((time.monotonic(), {"state": "failed", "reason": refusal}))

    await asyncio.gather(*(register(account, offset) for account, offset in zip(owner, offsets)))
    finals = {account: owner[account].final[account] for account in owner}
    await asyncio.wait(finals.values(), timeout=max(1.0, start + offsets[-1] + bound - time.monotonic()))
    outcomes: dict[str, tuple[float, str | None]] = {}
    for account, final in finals.items():
        if final.done():
            at, data = final.result()
            outcomes[account] = (at, None if data["state"] == "registered" else data.get("reason", "?"))
    return collect(list(owner), outcomes, sent_at, start if origin is None else origin)


async def gateway_bench(gateway: Gateway, kamailio: Kamailio, users: list[str], case: Case,
                        register_timeout: float) -> Result:
    result = Result("gateway", case)
    gateway_pid = gateway.process.pid if gateway.process else None
    janus_pids = current_janus_pids(gateway)  # every member of the pool
    result.main_before, result.janus_before = proc_info(gateway_pid), procs_info(janus_pids)
    kamailio_cpu0, client_cpu0 = kamailio_cpu(kamailio), time.process_time()
    # a registration may wait its turn for a SIP stack (queue_timeout = register_timeout), then its answer
    bound = 2 * register_timeout + 15
    everyone: list[Browser] = []
    try:
        browsers = await open_browsers(gateway.url, case.connections)
        everyone += browsers
        result.ready_s = [b.ready_at - b.opened_at for b in browsers if b.ready_at is not None]
        log(f"gateway: {case.connections} connections ready (max {ms(max(result.ready_s))} ms)")
        owner = await add_accounts(browsers, users, kamailio)
        log(f"gateway: registering {len(users)} accounts, offered {case.offered}")
        result.register = await gateway_register(owner, case.rate, bound)
        result.main_after, result.janus_after = proc_info(gateway_pid), procs_info(janus_pids)
        registered = result.register.registered
        _, result.bindings = await poll_contacts(kamailio, lambda c: c >= registered, timeout=3)
        log(f"gateway: {registered} registered in {result.register.span_s:.1f} s, {result.register.failed} "
            f"failed, {result.register.missing} without answer; {result.bindings} bindings at Kamailio")

        if case.scenario == "storm":
            browsers = await gateway_storm(gateway, kamailio, users, browsers, everyone, result, bound)

        # close every connection at once; the gateway unregisters everything (bounded by its CLOSE_TIMEOUT, 15 s)
        log("gateway: closing all connections")
        close_start = time.monotonic()
        await asyncio.gather(*(b.ws.close() for b in browsers), return_exceptions=True)
        result.unreg_s, result.left_bindings = await poll_contacts(kamailio, lambda c: c == 0, timeout=40,
                                                                 interval=0.02)
        if math.isnan(result.unreg_s):
            log(f"gateway: {result.left_bindings} bindings still at Kamailio 40 s after closing")
        # let the gateway finish detaching and destroying sessions before the "closed" snapshot
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - close_start)) + 1.0)
        result.main_closed, result.janus_closed = proc_info(gateway_pid), procs_info(current_janus_pids(gateway))
    finally:
        for browser in everyone:
            browser.reader.cancel()
        await asyncio.wait_for(asyncio.gather(*(b.ws.close() for b in everyone), return_exceptions=True), 10)
    result.kamailio_cpu_s = kamailio_cpu(kamailio) - kamailio_cpu0
    result.client_cpu_s = time.process_time() - client_cpu0
    return result


async def gateway_storm(gateway: Gateway, kamailio: Kamailio, users: list[str], browsers: list[Browser],
                        everyone: list[Browser], result: Result, bound: float) -> list[Browser]:
    """Every connection dropped at once, then each reconnects, adds its accounts and registers them again at once;
    returns the new connections."""
    log(f"gateway: storm: dropping all {len(browsers)} connections at once (TCP reset, no close handshake)")
    watch = BindingWatch(kamailio)
    drop = time.monotonic()
    for browser in browsers:
        abort(browser.ws)
    fresh = await open_browsers(gateway.url, len(browsers))
    everyone += fresh
    result.reconnect_s = [b.ready_at - drop for b in fresh if b.ready_at is not None]
    owner = await add_accounts(fresh, users, kamailio)
    result.storm = await gateway_register(owner, 0, bound, origin=drop)
    await storm_settled(result, kamailio, watch, drop)
    log(f"gateway: storm: {result.storm.registered} registered again {result.storm.span_s:.1f} s after the drop, "
        f"{result.storm.failed} failed, {result.storm.missing} without answer; bindings peak "
        f"{result.storm_peak_bindings}, one per account again after {result.storm_settled_s:.1f} s")
    return fresh


# ------------------------------------------------------------------------------------------------ raw Janus side

Handle = tuple[JanusClient, int, int]  # (client, session, handle)


def register_body(user: str, kamailio: Kamailio, config: Config) -> dict[str, Any]:
    """What JanusSIPUserAgent._register_body sends."""
    route = config.gateway.outbound_sip_proxy
    register = {"request": "register", "username": f"sip:{user}@{DOMAIN}", "authuser": user,
                "ha1_secret": kamailio.ha1(user), "register_ttl": config.gateway.register_ttl,
                "user_agent": config.gateway.user_agent}
    if route is None:
        register["proxy"] = f"sip:{DOMAIN}"
    else:
        register["proxy"] = register["outbound_proxy"] = sip_uri(route)
        if route.transport == "tcp":
            register["force_tcp"] = True
        elif route.transport == "tls":
            register["sips"] = True
    return register


def member_configs(config: Config, members: int) -> list[Config]:
    """Each member's settings, as the gateway gives them: an equal share of the RTP port ranges in a pool."""
    if members == 1:
        return [config]
    janus = config.janus
    return [dataclasses.replace(config, janus=dataclasses.replace(
        janus, rtp_port_range=janus.rtp_port_range.share(i, members),
        sip_rtp_port_range=janus.sip_rtp_port_range.share(i, members))) for i in range(members)]


async def connect_members(members: list[RawJanus]) -> list[JanusClient]:
    return list(await asyncio.gather(*(JanusClient.open(m.url, m.secret, timeout=15) for m in members)))


async def create_sessions(clients: list[JanusClient], count: int, origin: float | None,
                          times: list[float]) -> list[tuple[JanusClient, int]]:
    """`count` sessions at once, spread over the members round-robin; appends each one's creation time (from
    `origin`, or from its request) to `times`."""
    async def create(client: JanusClient) -> tuple[JanusClient, int]:
        start = time.monotonic()
        reply = await client.request({"janus": "create"})
        times.append(time.monotonic() - (start if origin is None else origin))
        return client, reply["data"]["id"]
    return list(await asyncio.gather(*(create(clients[i % len(clients)]) for i in range(count))))


def keep_alive(sessions: list[tuple[JanusClient, int]]) -> asyncio.Task[None]:
    async def loop() -> None:  # session_timeout = 60 in the generated config
        while True:
            await asyncio.sleep(20)
            for client, sid in sessions:
                await client.send({"janus": "keepalive"}, session_id=sid)
    return asyncio.create_task(loop())


async def raw_register(sessions: list[tuple[JanusClient, int]], users: list[str], kamailio: Kamailio,
                       config: Config, rate: float, bound: float,
                       origin: float | None = None) -> tuple[dict[str, Handle], Phase]:
    """One SIP handle per account (its session round-robin), attached and registered on schedule; waits for each
    outcome at most `bound` s after the last request. Latency: from `attach` to `registered`."""
    loop = asyncio.get_running_loop()
    handles: dict[str, Handle] = {}
    finals: dict[str, asyncio.Future[tuple[float, str | None]]] = {}
    sent_at: dict[str, float] = {}

    def listener(account: str) -> Callable[[float, dict[str, Any]], None]:
        def on_event(now: float, message: dict[str, Any]) -> None:
            event, data = sip_result(message)
            final = finals[account]
            if event in ("registered", "registration_failed", "error") and not final.done():
                reason = f"{data.get('code', '')} {data.get('reason', '')}".strip() or str(data.get("error"))
                final.set_result((now, None if event == "registered" else reason))
        return on_event

    start = time.monotonic()
    offsets = schedule(len(users), rate)

    async def register(index: int, user: str, offset: float) -> None:
        account = f"{user}@{DOMAIN}"
        finals[account] = loop.create_future()
        await sleep_until(start + offset)
        sent_at[account] = time.monotonic()
        client, sid = sessions[index % len(sessions)]
        try:
            reply = await client.request({"janus": "attach", "plugin": "janus.plugin.sip"}, session_id=sid)
        except Exception as e:
            finals[account].set_result((time.monotonic(), f"attach: {e}"))
            return
        hid = reply["data"]["id"]
        handles[account] = (client, sid, hid)
        client.handlers[hid] = listener(account)
        await client.send({"janus": "message", "body": register_body(user, kamailio, config)}, session_id=sid,
                          handle_id=hid)

    await asyncio.gather(*(register(i, user, offset) for i, (user, offset) in enumerate(zip(users, offsets))))
    await asyncio.wait(finals.values(), timeout=max(1.0, start + offsets[-1] + bound - time.monotonic()))
    outcomes = {account: final.result() for account, final in finals.items() if final.done()}
    return handles, collect(list(finals), outcomes, sent_at, start if origin is None else origin)


def raw_bound(case: Case, wait: float | None) -> float:
    """How long after its last request a raw wave waits: generous for ~10 new stacks a second per member."""
    return wait if wait is not None else max(60.0, case.accounts / (4 * case.members)) + 15


async def janus_bench(members: list[RawJanus], kamailio: Kamailio, users: list[str], case: Case,
                      wait: float | None) -> Result:
    config = members[0].config
    result = Result("janus", case)
    pids = [m.pid for m in members if m.pid is not None]
    kamailio_cpu0, client_cpu0 = kamailio_cpu(kamailio), time.process_time()
    clients = await connect_members(members)
    result.janus_before = procs_info(pids)
    everyone = list(clients)
    keepalive: asyncio.Task[None] | None = None
    bound = raw_bound(case, wait)
    try:
        sessions = await create_sessions(clients, case.connections, None, result.ready_s)
        keepalive = keep_alive(sessions)
        log(f"janus: registering {len(users)} accounts over {case.connections} sessions on {case.members} "
            f"Janus, offered {case.offered}")
        handles, result.register = await raw_register(sessions, users, kamailio, config, case.rate, bound)
        result.janus_after = procs_info(pids)
        registered = result.register.registered
        _, result.bindings = await poll_contacts(kamailio, lambda c: c >= registered, timeout=3)
        log(f"janus: {registered} registered in {result.register.span_s:.1f} s, {result.register.failed} failed, "
            f"{result.register.missing} without answer; {result.bindings} bindings at Kamailio")

        if case.scenario == "storm":
            log(f"janus: storm: dropping the WebSocket to each of the {len(clients)} Janus (TCP reset)")
            keepalive.cancel()
            watch = BindingWatch(kamailio)
            drop = time.monotonic()
            for client in clients:
                abort(client.ws)
            clients = await connect_members(members)
            everyone += clients
            sessions = await create_sessions(clients, case.connections, drop, result.reconnect_s)
            keepalive = keep_alive(sessions)
            handles, result.storm = await raw_register(sessions, users, kamailio, config, 0, bound, origin=drop)
            await storm_settled(result, kamailio, watch, drop)
            log(f"janus: storm: {result.storm.registered} registered again {result.storm.span_s:.1f} s after the "
                f"drop, {result.storm.failed} failed, {result.storm.missing} without answer; bindings peak "
                f"{result.storm_peak_bindings}, one per account again after {result.storm_settled_s:.1f} s")

        # unregister every handle at once, then detach and destroy (what the gateway's close does)
        log("janus: unregistering everything")
        await raw_unregister(handles, kamailio, result)
        keepalive.cancel()  # before the sessions go, or a keepalive for a destroyed session makes Janus log errors
        await asyncio.gather(*(client.request({"janus": "detach"}, session_id=sid, handle_id=hid, timeout=15)
                               for client, sid, hid in handles.values()), return_exceptions=True)
        await asyncio.gather(*(client.request({"janus": "destroy"}, session_id=sid, timeout=15)
                               for client, sid in sessions), return_exceptions=True)
        await asyncio.sleep(1.0)
        result.janus_closed = procs_info(pids)
    finally:
        if keepalive is not None:
            keepalive.cancel()
        await asyncio.gather(*(client.close() for client in everyone), return_exceptions=True)
    result.kamailio_cpu_s = kamailio_cpu(kamailio) - kamailio_cpu0
    result.client_cpu_s = time.process_time() - client_cpu0
    return result


async def raw_unregister(handles: dict[str, Handle], kamailio: Kamailio, result: Result) -> None:
    """`unregister` on every handle at once: until every `unregistered` event, and until Kamailio is empty."""
    loop = asyncio.get_running_loop()
    unregistered: dict[str, asyncio.Future[float]] = {}

    def listener(account: str) -> Callable[[float, dict[str, Any]], None]:
        def on_event(now: float, message: dict[str, Any]) -> None:
            if sip_result(message)[0] == "unregistered" and not unregistered[account].done():
                unregistered[account].set_result(now)
        return on_event

    start = time.monotonic()
    for account, (client, sid, hid) in handles.items():
        unregistered[account] = loop.create_future()
        client.handlers[hid] = listener(account)
        await client.send({"janus": "message", "body": {"request": "unregister"}}, session_id=sid, handle_id=hid)
    contacts = asyncio.create_task(poll_contacts(kamailio, lambda c: c == 0, timeout=40, interval=0.02))
    done, _ = await asyncio.wait(unregistered.values(), timeout=40) if unregistered else (set(), set())
    if unregistered and len(done) == len(unregistered):
        result.unreg_events_s = max(f.result() for f in done) - start
    result.unreg_s, result.left_bindings = await contacts


# ------------------------------------------------------------------------------------------------ report

def report(result: Result) -> None:
    print(f"--- {result.mode}: {result.case}")
    if result.ready_s:
        print(f"  time to ready/session per connection: p50 {ms(percentile(result.ready_s, 50))} ms, "
              f"max {ms(max(result.ready_s))} ms ({len(result.ready_s)} connections)")
    report_phase("registered", result.register)
    print(f"  bindings at Kamailio after registering: {result.bindings}")
    if result.storm is not None:
        print(f"  storm: connections back (ready/session) within {ms(max(result.reconnect_s, default=math.nan))} ms "
              f"of the drop")
        report_phase("storm: registered again", result.storm)
        print(f"  storm: bindings at Kamailio peak {result.storm_peak_bindings}, {result.storm_bindings} when all were "
              f"registered again, one per account {result.storm_settled_s:.2f} s after the drop")
    extra = f" (all `unregistered` events after {result.unreg_events_s:.2f} s)" if not math.isnan(
        result.unreg_events_s) else ""
    print(f"  unregistration: Kamailio empty {result.unreg_s:.2f} s after the start = {result.unreg_rate:.1f}/s"
          f"{extra}; bindings left: {result.left_bindings}")
    if result.mode == "gateway":
        print(f"  gateway before:  {result.main_before}")
        print(f"  gateway after:   {result.main_after}")
        print(f"  gateway closed:  {result.main_closed}")
        print(f"  gateway closed connections (by close code): {dict(sorted(result.closes.items()))}; "
              f"Janus started {result.janus_starts} times for {result.case.members} members")
    print(f"  janus before:    {result.janus_before}")
    print(f"  janus after:     {result.janus_after}")
    print(f"  janus closed:    {result.janus_closed}")
    print(f"  kamailio CPU {result.kamailio_cpu_s:.2f} s, benchmark client CPU {result.client_cpu_s:.2f} s")
    accounts = result.case.accounts * (2 if result.storm is not None else 1)
    handles = "?" if result.handles is None else f"{result.handles} ({result.handles / accounts:.2f} per account)"
    print(f"  SIP-plugin handles attached in Janus: {handles}")
    for what, count in sorted(result.problems.items(), key=lambda item: -item[1])[:8]:
        print(f"  log: {count:4d} x {what}")


def report_phase(what: str, phase: Phase) -> None:
    first, last = phase.trend
    print(f"  {what} {phase.registered}/{phase.accounts} in {phase.span_s:.2f} s = {phase.rate:.2f}/s; latency "
          f"p50 {ms(phase.p(50))} ms, p95 {ms(phase.p(95))} ms, p99 {ms(phase.p(99))} ms, max "
          f"{ms(max(phase.latencies, default=math.nan))} ms; p50 of the first/last fifth {ms(first)}/{ms(last)} ms")
    if phase.failures or phase.missing:
        print(f"  failed: {dict(sorted(phase.failures.items()))}; no answer: {phase.missing}")


def table(results: list[Result]) -> None:
    storm = any(r.storm is not None for r in results)

    def storm_cell(cell: Callable[[Result, Phase], str]) -> Callable[[Result], str]:
        return lambda r: "-" if r.storm is None else cell(r, r.storm)

    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("Janus processes", lambda r: str(r.case.members)),
        ("offered", lambda r: r.case.offered),
        ("registered / accounts", lambda r: f"{r.register.registered}/{r.register.accounts}"),
        ("failed / no answer", lambda r: f"{r.register.failed}/{r.register.missing}"),
        ("registrations/s", lambda r: f"{r.register.rate:.2f}"),
        ("s to all registered", lambda r: f"{r.register.span_s:.2f}"),
        ("latency p50 ms", lambda r: ms(r.register.p(50))),
        ("latency p99 ms", lambda r: ms(r.register.p(99))),
        ("latency max ms", lambda r: ms(max(r.register.latencies, default=math.nan))),
        ("p50 first/last fifth ms", lambda r: "/".join(ms(t) for t in r.register.trend)),
        ("ready/create max ms", lambda r: ms(max(r.ready_s, default=math.nan))),
        ("bindings at Kamailio", lambda r: str(r.bindings)),
    ]
    if storm:
        rows += [
            ("storm: back (ready) max ms", lambda r: ms(max(r.reconnect_s, default=math.nan))),
            ("storm: registered again", storm_cell(lambda r, p: f"{p.registered}/{p.accounts}")),
            ("storm: failed / no answer", storm_cell(lambda r, p: f"{p.failed}/{p.missing}")),
            ("storm: s to all registered", storm_cell(lambda r, p: f"{p.span_s:.2f}")),
            ("storm: latency p50/p99 ms", storm_cell(lambda r, p: f"{ms(p.p(50))}/{ms(p.p(99))}")),
            ("storm: bindings peak/at end", storm_cell(lambda r, p: f"{r.storm_peak_bindings}/{r.storm_bindings}")),
            ("storm: s to 1 binding each", storm_cell(lambda r, p: f"{r.storm_settled_s:.2f}")),
        ]
    rows += [
        ("unregister: s to empty", lambda r: f"{r.unreg_s:.2f}"),
        ("unregistrations/s", lambda r: f"{r.unreg_rate:.1f}"),
        ("bindings left", lambda r: str(r.left_bindings)),
        ("gateway RSS MB before/after", lambda r: f"{r.main_before.rss_kb / 1024:.1f}/{r.main_after.rss_kb / 1024:.1f}"
         if r.mode == "gateway" else "-"),
        ("gateway CPU s (whole run)", lambda r: f"{r.main_closed.cpu_s - r.main_before.cpu_s:.2f}"
         if r.mode == "gateway" else "-"),
        ("janus RSS MB before/after",
         lambda r: f"{r.janus_before.rss_kb / 1024:.1f}/{r.janus_after.rss_kb / 1024:.1f}"),
        ("janus threads before/after/closed",
         lambda r: f"{r.janus_before.threads}/{r.janus_after.threads}/{r.janus_closed.threads}"),
        ("janus fds before/after/closed", lambda r: f"{r.janus_before.fds}/{r.janus_after.fds}/{r.janus_closed.fds}"),
        ("janus CPU s (whole run)", lambda r: f"{r.janus_closed.cpu_s - r.janus_before.cpu_s:.2f}"),
        ("kamailio CPU s", lambda r: f"{r.kamailio_cpu_s:.2f}"),
        ("janus handles attached", lambda r: "?" if r.handles is None else str(r.handles)),
        ("log warnings+errors", lambda r: str(sum(r.problems.values()))),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"== {results[0].case}")
    print(f"{'':<{width}}  " + "  ".join(f"{r.mode:>16}" for r in results))
    for name, cell in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(r):>16}" for r in results))


def figures(result: Result) -> dict[str, Any]:
    return {"mode": result.mode, "scenario": result.case.scenario, "members": result.case.members,
            "accounts": result.case.accounts, "connections": result.case.connections,
            "offered": result.case.offered, "register": result.register.figures(),
            "ready_max_ms": max(result.ready_s, default=math.nan) * 1000, "bindings": result.bindings,
            "storm": None if result.storm is None else {
                **result.storm.figures(), "back_max_ms": max(result.reconnect_s, default=math.nan) * 1000,
                "bindings_peak": result.storm_peak_bindings, "bindings_when_registered": result.storm_bindings,
                "one_binding_each_s": result.storm_settled_s},
            "unregistrations_per_s": result.unreg_rate, "bindings_left": result.left_bindings,
            "gateway_rss_mb": [result.main_before.rss_kb / 1024, result.main_after.rss_kb / 1024],
            "janus_rss_mb": [result.janus_before.rss_kb / 1024, result.janus_after.rss_kb / 1024],
            "gateway_cpu_s": result.main_closed.cpu_s - result.main_before.cpu_s,
            "janus_cpu_s": result.janus_closed.cpu_s - result.janus_before.cpu_s,
            "gateway_closes_by_code": result.closes, "janus_starts": result.janus_starts,
            "log_problems": result.problems}


def phase_text(phase: Phase) -> str:
    return (f"{phase.registered}/{phase.accounts} ok, {phase.failed} failed, {phase.missing} no answer")


def summaries(results: list[Result]) -> list[str]:
    """One SUMMARY line per scenario: the first wave (sustained or burst), and the storm if there was one."""
    case = results[0].case
    by_mode = {r.mode: r for r in results}
    gateway, raw = by_mode.get("gateway"), by_mode.get("janus")
    parts = [f"SUMMARY {case.first_wave} {case.pool}: {case.accounts} accounts/{case.connections} connections, "
             f"offered {case.offered}:"]
    for r in results:
        p = r.register
        first, last = p.trend
        flat = f", latency {'flat' if p.flat else 'growing'} ({ms(first)} -> {ms(last)} ms)" if case.rate > 0 else ""
        parts.append(f"{r.mode} {p.rate:.1f} reg/s, all in {p.span_s:.1f} s, p50 {ms(p.p(50))} ms p99 "
                     f"{ms(p.p(99))} ms ({phase_text(p)}){flat}, unreg {r.unreg_rate:.0f}/s;")
    if gateway is not None and raw is not None and gateway.register.rate > 0 and raw.register.rate > 0:
        parts.append(f"gateway/raw throughput {gateway.register.rate / raw.register.rate:.0%}, p50 overhead "
                     f"{ms(gateway.register.p(50) - raw.register.p(50))} ms")
    lines = [" ".join(parts)]
    if case.scenario == "storm":
        parts = [f"SUMMARY storm {case.pool}: {case.accounts} accounts/{case.connections} connections dropped at "
                 f"once:"]
        for r in results:
            if r.storm is not None:
                parts.append(f"{r.mode} all registered again {r.storm.span_s:.1f} s after the drop "
                             f"({phase_text(r.storm)}), bindings peak {r.storm_peak_bindings}, one each after "
                             f"{r.storm_settled_s:.1f} s;")
        if gateway is not None and raw is not None and gateway.storm and raw.storm:
            parts.append(f"gateway/raw time {gateway.storm.span_s / raw.storm.span_s:.0%}")
        lines.append(" ".join(parts))
    return lines


# ------------------------------------------------------------------------------------------------ main

def gateway_config(options: argparse.Namespace, case: Case) -> dict[str, dict[str, Any]]:
    per_connection = math.ceil(case.accounts / case.connections)
    config: dict[str, dict[str, Any]] = {
        "WebServer": {"local_port": 10888},
        # every benchmark connection comes from 127.0.0.1 and sends its requests at once: lift the per-client limits
        "WebRTCGateway": {"outbound_sip_proxy": f"127.0.0.1:{KAMAILIO_PORT}",
                          "max_accounts_per_connection": max(20, per_connection),
                          "max_connections_per_address": 100000, "request_rate": 100000, "request_burst": 100000},
        # the handle count comes from Janus's info lines
        "Janus": {"interface": "127.0.0.1", "log_level": 4},
    }
    config = apply_settings(config, options.set)
    config["Janus"]["instances"] = case.members
    return config


def run_case(case: Case, options: argparse.Namespace, workdir: Path) -> list[Result]:
    """The case on each side asked for, with a fresh registrar (and gateway, or raw Janus) each."""
    users = [f"user{i:04d}" for i in range(1, case.accounts + 1)]
    config = gateway_config(options, case)
    log(f"{case}; logs in {workdir}")
    parsed = parse_config(ini_text(config))
    results: list[Result] = []
    if options.mode in ("both", "gateway"):
        gateway_dir = workdir / "gateway"
        gateway_dir.mkdir(parents=True, exist_ok=True)

        def gateway_phase(kamailio: Kamailio) -> Result:
            with Gateway(gateway_dir, config, port=config["WebServer"]["local_port"]) as gateway:
                log(f"gateway: started (Janus pids {current_janus_pids(gateway)})")
                result = asyncio.run(gateway_bench(gateway, kamailio, users, case, parsed.gateway.register_timeout))
            gateway_digest(result, gateway)
            return result
        results.append(run_kamailio_phase(workdir / "kamailio-gateway", users, gateway_phase))
        report(results[-1])
    if options.mode in ("both", "janus"):
        def janus_phase(kamailio: Kamailio) -> Result:
            with contextlib.ExitStack() as stack:
                members = []
                for i, member_config in enumerate(member_configs(parsed, case.members)):
                    folder = workdir / "janus" / f"member{i + 1}"
                    folder.mkdir(parents=True, exist_ok=True)
                    members.append(stack.enter_context(RawJanus(folder, member_config)))
                log(f"janus: started {case.members} (pids {[m.pid for m in members]})")
                result = asyncio.run(janus_bench(members, kamailio, users, case, options.wait))
            result.handles, result.problems = log_digest("".join(m.log_path.read_text(errors="replace")
                                                                 for m in members))
            return result
        results.append(run_kamailio_phase(workdir / "kamailio-janus", users, janus_phase))
        report(results[-1])
    return results


def run_kamailio_phase(workdir: Path, users: list[str], phase: Callable[[Kamailio], Result]) -> Result:
    # a fresh registrar per side, so bindings and CPU figures never mix
    with Kamailio(workdir, port=KAMAILIO_PORT, domain=DOMAIN, users={u: f"pw-{u}" for u in users}) as kamailio:
        return phase(kamailio)


def cases(options: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Case]:
    if options.suite:
        return list(SUITE)
    members = options.members or int(apply_settings({}, options.set).get("Janus", {}).get("instances", 1))
    rate = options.rate if options.rate is not None else (100.0 if options.scenario == "sustained" else 0.0)
    accounts = options.accounts
    if options.scenario == "sustained":
        if rate <= 0:
            parser.error("--scenario sustained needs --rate above 0")
        accounts = max(1, round(rate * options.duration))
    elif options.scenario == "burst":
        rate = 0.0
    return [Case(options.scenario, members, accounts, min(options.connections, accounts), rate)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", "-s", choices=("default", "sustained", "burst", "storm"), default="default",
                        help="default: as the options say; sustained: --rate for --duration; burst: all at once; "
                             "storm: register, drop every connection, register again")
    parser.add_argument("--suite", action="store_true",
                        help="run the scenarios `make bench` runs (sizes fixed; see bench/README.md)")
    parser.add_argument("--members", "-k", type=int, default=0,
                        help="Janus processes on each side: the gateway's pool (Janus.instances) and as many raw "
                             "Janus (default: --set Janus.instances, else 1)")
    parser.add_argument("--accounts", "-n", type=int, default=200, help="accounts to register (default 200)")
    parser.add_argument("--connections", "-c", type=int, default=20,
                        help="browser connections, and Janus sessions in raw mode (default 20)")
    parser.add_argument("--rate", "-r", type=float, default=None,
                        help="register requests offered per second; 0 = all at once (default; 100 for sustained)")
    parser.add_argument("--duration", "-t", type=float, default=20.0,
                        help="sustained: seconds of offered load, so N = rate x duration (default 20)")
    add_common_options(parser, "registrations")
    parser.add_argument("--wait", type=float, default=None,
                        help="raw mode: seconds to wait for every registration after the last request "
                             "(default: max(60, N/4 per member) + 15)")
    options = parser.parse_args()
    if options.accounts < 1 or options.connections < 1 or options.members < 0:
        parser.error("--accounts and --connections must be at least 1, --members at least 0")
    runs = cases(options, parser)
    require_root("bench/registrations.py")
    install_signal_handlers()

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes: list[list[Result]] = []
    try:
        with network_namespace():
            for i, case in enumerate(runs, 1):
                folder = workdir if len(runs) == 1 else workdir / f"{i}-{case.scenario}-{case.members}"
                outcomes.append(run_case(case, options, folder))
    except KeyboardInterrupt as interrupted:
        log(f"interrupted ({str(interrupted) or 'Ctrl-C'}); everything was stopped. Logs: {workdir}")
        return 130
    for results in outcomes:
        table(results)
    print()
    for results in outcomes:
        for line in summaries(results):
            print(line)
    path = write_results("registrations", {
        "options": {k: str(v) for k, v in vars(options).items()},
        "cases": [{"case": dataclasses.asdict(results[0].case), "results": [figures(r) for r in results]}
                  for results in outcomes]}, options.json)
    print(f"(run took {time.monotonic() - started:.0f} s; logs: {workdir}; figures: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
