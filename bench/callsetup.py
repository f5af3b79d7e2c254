#!/usr/bin/env python3
"""Call setup latency through sylkgateway, next to the raw Janus it runs on.

    sudo .venv/bin/python bench/callsetup.py [--calls N] [--rate R] [--seconds S] [--rounds K] [--accounts A]
                                             [--set Section.option=value ...] [--workdir DIR] [--json PATH]

Everything runs inside a fresh loopback-only network namespace (tests/integration/netns.py): a Kamailio registrar
and proxy (tests/integration/kamailio.py) on 127.0.0.1:5070 with subscribers caller01.. (the callers) and bob, a
sipp UAS registered there as bob that answers every INVITE at once (tests/integration/sipp/uas_answer.xml: 100,
180, 200), the gateway (`twistd sylkgateway`, its own Janus) and a raw Janus started the same way with its API on
a TCP port (bench/common.RawJanus). Both stay up for the whole run, so their rounds alternate.

Call setup latency is the time from the request that places a call to the moment the caller learns it was
answered; each INVITE goes through Kamailio, which challenges it (407) before it reaches bob.
- gateway: A sylkRTC-1 connections (bench/common.Browser), one registered account each; `session-create` with a
  browser-like WebRTC offer (tests/integration/webrtc.OFFER), timed to the `accepted` session state; then
  `session-terminate` and the `terminated` state (not timed).
- janus: one WebSocket, a session per account, each with its master handle registered and LINES helper handles
  attached and bound ahead of the calls (`type: helper`), as an efficient client keeps them: a call takes a
  ready helper, sends `call` with the same body and jsep the gateway sends, timed to the `accepted` event; then
  `hangup` and the `hangup` event. Like the gateway, it then detaches that helper and binds a fresh one in the
  background (Janus 1.1.2 cannot take a new offer on a handle until it has freed the last call's WebRTC state).

Two loads, each in K rounds per side, gateway and raw alternating (which goes first alternates too):
- sequential: N calls in all, one at a time, round-robin over the accounts;
- rate: R calls per second offered for S seconds in all, round-robin over the accounts, each call terminated as
  soon as it is answered.
Reported per side: p50/p99 per round, the medians over rounds, all rounds pooled, failures, and the CPU time of
the gateway, its Janus and the raw Janus per call (from /proc, over that side's rounds). The headline figures are
the ratio gateway/raw of the median p50 and the gateway's added p99 (median p99 gateway - raw), in ms.

Every wait is bounded; all processes are stopped on errors, Ctrl-C and SIGTERM. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DOMAIN, KAMAILIO_PORT, Browser, JanusClient, RawJanus, add_common_options,  # noqa: E402
                    apply_settings, current_janus_pids, ini_text, install_signal_handlers, log, median, percentile,
                    proc_info, procs_info, ratio, require_root, schedule, sip_result, sleep_until, write_results)

from sylk.gateway.config import Config, parse_config  # noqa: E402
from sylk.gateway.janus import sipcodec  # noqa: E402
from sylk.gateway.sip import Registration, SIPIdentity  # noqa: E402
from tests.integration.gateway import Gateway  # noqa: E402
from tests.integration.kamailio import Kamailio  # noqa: E402
from tests.integration.netns import network_namespace  # noqa: E402
from tests.integration.sipp import Sipp, register as sipp_register  # noqa: E402
from tests.integration.webrtc import OFFER  # noqa: E402

CALLEE = "bob"
CALLEE_PORT = 5092
CALL_WAIT = 10.0  # bound on a call's answer, and on its end
LINES = 8  # calls at once per account: the gateway's max_calls_per_account, the raw side's helpers per account


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


# ------------------------------------------------------------------------------------------------ results

@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)  # seconds, answered calls only
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


@dataclass
class SideResult:
    side: str  # gateway or janus
    rounds: list[Round] = field(default_factory=list)
    main_cpu_s: float = 0.0  # the gateway process, over this side's rounds
    janus_cpu_s: float = 0.0  # the side's Janus, over its rounds

    @property
    def calls(self) -> int:
        return sum(len(r.latencies) + sum(r.failures.values()) for r in self.rounds)

    @property
    def pooled(self) -> list[float]:
        return [lat for r in self.rounds for lat in r.latencies]

    def median_of(self, p: float) -> float:
        return median([percentile(r.latencies, p) for r in self.rounds if r.latencies])

    @property
    def failures(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.rounds:
            for reason, count in r.failures.items():
                total[reason] = total.get(reason, 0) + count
        return total


@dataclass
class LoadResult:
    name: str
    offered: str
    gateway: SideResult = field(default_factory=lambda: SideResult("gateway"))
    janus: SideResult = field(default_factory=lambda: SideResult("janus"))

    @property
    def p50_ratio(self) -> float:
        return ratio(self.gateway.median_of(50), self.janus.median_of(50))

    @property
    def added_p99_s(self) -> float:
        return self.gateway.median_of(99) - self.janus.median_of(99)


# ------------------------------------------------------------------------------------------------ the two sides

class Side(Protocol):
    name: str

    async def call(self, account: int, result: Round) -> None:
        """Place one call from account number `account`, record its setup latency or failure, and end it."""

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: (the gateway process or 0, the side's Janus)."""


class GatewaySide:
    """A sylkRTC-1 connection per account, each account registered."""

    name = "gateway"

    def __init__(self, gateway: Gateway, browsers: list[Browser], accounts: list[str]) -> None:
        self.gateway = gateway
        self.browsers = browsers
        self.accounts = accounts
        self.serial = itertools.count(1)
        self.states: dict[str, dict[str, asyncio.Future[tuple[float, dict[str, Any]]]]] = {}
        for browser in browsers:
            browser.listeners.append(self._on_message)
        self.gateway_pid = gateway.process.pid if gateway.process else None
        self.janus_pids = current_janus_pids(gateway)

    @classmethod
    async def open(cls, gateway: Gateway, kamailio: Kamailio, users: list[str]) -> GatewaySide:
        browsers = list(await asyncio.gather(*(Browser.open(gateway.url) for _ in users)))
        accounts = [f"{user}@{DOMAIN}" for user in users]
        for browser, user, account in zip(browsers, users, accounts):
            browser.final[account] = asyncio.get_running_loop().create_future()
            for kind, fields in (("add_account", {"password": kamailio.ha1(user)}), ("register", {})):
                answer = await browser.request(kind, account=account, **fields)
                if answer["sylkrtc"] != "ack":
                    raise RuntimeError(f"{kind} {account} refused: {answer}")
        for browser, account in zip(browsers, accounts):
            _, data = await asyncio.wait_for(browser.final[account], 30)
            if data["state"] != "registered":
                raise RuntimeError(f"gateway: {account} did not register: {data}")
        return cls(gateway, browsers, accounts)

    def _on_message(self, now: float, message: dict[str, Any]) -> None:
        if message.get("sylkrtc") != "session_event" or message.get("event") != "state":
            return
        waiters = self.states.get(message.get("session", ""))
        data = message.get("data") or {}
        if waiters is None or data.get("state") not in ("accepted", "terminated"):
            return
        for wanted in ("accepted", "terminated") if data["state"] == "terminated" else ("accepted",):
            if not waiters[wanted].done():  # `accepted` fires on the call's end too: it will not be answered
                waiters[wanted].set_result((now, data))

    async def call(self, account: int, result: Round) -> None:
        browser = self.browsers[account]
        session = f"c{next(self.serial)}"
        loop = asyncio.get_running_loop()
        waiters = self.states[session] = {"accepted": loop.create_future(), "terminated": loop.create_future()}
        try:
            start = time.monotonic()
            transaction = await browser.send("session-create", account=self.accounts[account], session=session,
                                             uri=f"{CALLEE}@{DOMAIN}", sdp=OFFER)
            try:
                at, data = await asyncio.wait_for(waiters["accepted"], CALL_WAIT)
            except asyncio.TimeoutError:
                result.fail("no answer")
                return
            if data.get("state") != "accepted":
                answer = browser.answers.get(transaction)
                refused = answer.result() if answer is not None and answer.done() else {}
                result.fail(f"refused: {refused['error']}" if refused.get("sylkrtc") == "error"
                            else f"terminated: {data.get('reason')}")
                return
            result.latencies.append(at - start)
            await browser.send("session-terminate", session=session)
            try:
                await asyncio.wait_for(waiters["terminated"], CALL_WAIT)
            except asyncio.TimeoutError:
                result.fail("not terminated")
        finally:
            del self.states[session]

    def cpu(self) -> tuple[float, float]:
        return proc_info(self.gateway_pid).cpu_s, procs_info(self.janus_pids).cpu_s

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.browsers), return_exceptions=True)


@dataclass
class _Helper:
    session: int
    handle: int
    events: asyncio.Queue[tuple[float, str | None, dict[str, Any]]] = field(default_factory=asyncio.Queue)


@dataclass
class _Account:
    aor: str
    session: int
    master_id: int
    ready: collections.deque[_Helper] = field(default_factory=collections.deque)  # bound helpers, none used yet


class JanusSide:
    """Straight to a Janus: a session per account, its master registered and LINES helpers bound to it ahead of the
    calls. As in the gateway, a helper carries one call: Janus 1.1.2 frees a call's WebRTC state on a loop thread
    well after the call's end (the core `hangup` came up to 0.75 s after the SIP one at 100 calls/s), and an offer
    on the handle before that is taken as a renegotiation of the old call and fails. So after each call its helper
    is detached and a fresh one attached and bound in the background, off the timed path."""

    name = "janus"

    def __init__(self, janus: RawJanus, client: JanusClient) -> None:
        self.janus = janus
        self.client = client
        self.accounts: list[_Account] = []
        self.background: set[asyncio.Task[None]] = set()
        self.keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, janus: RawJanus, kamailio: Kamailio, users: list[str]) -> JanusSide:
        side = cls(janus, await JanusClient.open(janus.url, janus.secret, timeout=15))
        try:
            for user in users:
                await side._add_account(user, kamailio.ha1(user))
        except BaseException:
            await side.close()
            raise
        side.keepalive = asyncio.create_task(side._keep_alive())
        return side

    async def _add_account(self, user: str, ha1: str) -> None:
        gateway = self.janus.config.gateway
        session = (await self.client.request({"janus": "create"}))["data"]["id"]
        master = await self._attach(session)
        identity = SIPIdentity(f"{user}@{DOMAIN}", ha1, user_agent=gateway.user_agent)
        body = sipcodec.register_body(identity, gateway.outbound_sip_proxy, Registration(gateway.register_ttl))
        event, data = await self._ask(master, body, until=("registered", "registration_failed", "error"), wait=30)
        if event != "registered":
            raise RuntimeError(f"janus: {user} did not register: {event} {data}")
        account = _Account(identity.aor, session, data["master_id"])
        self.accounts.append(account)
        for _ in range(LINES):
            account.ready.append(await self._new_helper(account))

    async def _new_helper(self, account: _Account) -> _Helper:
        helper = await self._attach(account.session)
        event, data = await self._ask(helper, {"request": "register", "type": "helper",
                                               "username": f"sip:{account.aor}", "master_id": account.master_id},
                                      until=("registered", "error"), wait=10)
        if event != "registered":
            raise RuntimeError(f"janus: a helper of {account.aor} was refused: {data}")
        return helper

    async def _replace(self, account: _Account, used: _Helper) -> None:
        self.client.handlers.pop(used.handle, None)
        await self.client.send({"janus": "detach"}, session_id=used.session, handle_id=used.handle)
        account.ready.append(await self._new_helper(account))

    async def _attach(self, session: int) -> _Helper:
        reply = await self.client.request({"janus": "attach", "plugin": "janus.plugin.sip"}, session_id=session)
        helper = _Helper(session, reply["data"]["id"])
        self.client.handlers[helper.handle] = lambda now, message: helper.events.put_nowait(
            (now, *sip_result(message)) if message.get("janus") == "event" else (now, None, message))
        return helper

    async def _send(self, helper: _Helper, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        await self.client.send(payload, session_id=helper.session, handle_id=helper.handle)

    async def _until(self, helper: _Helper, events: tuple[str, ...],
                     wait: float) -> tuple[float, str | None, dict[str, Any]]:
        deadline = time.monotonic() + wait
        while True:
            at, event, data = await asyncio.wait_for(helper.events.get(), max(0.001, deadline - time.monotonic()))
            if event in events:
                return at, event, data

    async def _ask(self, helper: _Helper, body: dict[str, Any], until: tuple[str, ...],
                   wait: float) -> tuple[str | None, dict[str, Any]]:
        await self._send(helper, body)
        _, event, data = await self._until(helper, until, wait)
        return event, data

    async def call(self, account: int, result: Round) -> None:
        line = self.accounts[account]
        if not line.ready:
            result.fail("every line of the account is busy")
            return
        helper = line.ready.popleft()
        try:
            body = {"request": "call", "uri": f"sip:{CALLEE}@{DOMAIN}", "call_id": f"raw-{time.monotonic_ns()}"}
            start = time.monotonic()
            await self._send(helper, body, {"type": "offer", "sdp": OFFER})
            try:
                at, event, data = await self._until(helper, ("accepted", "hangup", "error"), CALL_WAIT)
            except asyncio.TimeoutError:
                result.fail("no answer")
                return
            if event != "accepted":
                result.fail(f"{event}: {data.get('code', data.get('error_code', ''))} "
                            f"{data.get('reason', data.get('error', ''))}".strip())
                return
            result.latencies.append(at - start)
            await self._send(helper, {"request": "hangup"})
            try:
                await self._until(helper, ("hangup",), CALL_WAIT)
            except asyncio.TimeoutError:
                result.fail("not terminated")
        finally:
            task = asyncio.create_task(self._replace(line, helper))
            self.background.add(task)
            task.add_done_callback(self._replaced)

    def _replaced(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log(f"janus: replacing a helper failed: {task.exception()!r}")

    def cpu(self) -> tuple[float, float]:
        return 0.0, proc_info(self.janus.pid).cpu_s

    async def _keep_alive(self) -> None:  # session_timeout = 60 in the generated config
        while True:
            await asyncio.sleep(20)
            for account in self.accounts:
                await self.client.send({"janus": "keepalive"}, session_id=account.session)

    async def close(self) -> None:
        if self.keepalive is not None:
            self.keepalive.cancel()
        if self.background:
            await asyncio.wait(self.background, timeout=10)
        for account in self.accounts:  # unregisters and detaches everything on it
            try:
                await self.client.request({"janus": "destroy"}, session_id=account.session, timeout=10)
            except Exception as e:
                log(f"janus: destroying the session of {account.aor} failed: {e}")
        await self.client.close()


# ------------------------------------------------------------------------------------------------ the loads

async def sequential(side: Side, calls: int, accounts: int, result: Round) -> None:
    for i in range(calls):
        await side.call(i % accounts, result)


async def offered(side: Side, rate: float, calls: int, accounts: int, result: Round) -> None:
    start = time.monotonic()

    async def one(i: int, offset: float) -> None:
        await sleep_until(start + offset)
        await side.call(i % accounts, result)
    await asyncio.gather(*(one(i, offset) for i, offset in enumerate(schedule(calls, rate))))


async def run_load(name: str, offered_text: str, sides: list[Side], rounds: int,
                   run: Callable[[Side, Round], Awaitable[None]]) -> LoadResult:
    load = LoadResult(name, offered_text)
    for number in range(rounds):
        order = sides if number % 2 == 0 else sides[::-1]
        for side in order:
            side_result = load.gateway if side.name == "gateway" else load.janus
            main0, janus0 = side.cpu()
            result = Round()
            started = time.monotonic()
            await run(side, result)
            main1, janus1 = side.cpu()
            side_result.main_cpu_s += main1 - main0
            side_result.janus_cpu_s += janus1 - janus0
            side_result.rounds.append(result)
            log(f"{name} round {number + 1}/{rounds} {side.name}: {len(result.latencies)} answered in "
                f"{time.monotonic() - started:.1f} s, p50 {ms(percentile(result.latencies, 50))} ms, "
                f"p99 {ms(percentile(result.latencies, 99))} ms, failures {result.failures or 0}")
        await asyncio.sleep(0.5)  # the last calls' BYEs and helpers settle before the next round
    return load


async def bench(gateway: Gateway, janus: RawJanus, kamailio: Kamailio, users: list[str],
                options: argparse.Namespace) -> list[LoadResult]:
    gw = await GatewaySide.open(gateway, kamailio, users)
    raw: JanusSide | None = None
    try:
        raw = await JanusSide.open(janus, kamailio, users)
        sides: list[Side] = [gw, raw]
        accounts = len(users)
        log(f"{accounts} accounts registered on both sides; warming up")
        for side in sides:
            warm = Round()
            await sequential(side, accounts, accounts, warm)
            if warm.failures:
                raise RuntimeError(f"{side.name}: warm-up calls failed: {warm.failures}")
        loads = []
        per_round = max(1, options.calls // options.rounds)
        loads.append(await run_load("sequential", "one at a time", sides, options.rounds,
                                    lambda side, result: sequential(side, per_round, accounts, result)))
        rate_calls = max(1, round(options.rate * options.seconds / options.rounds))
        loads.append(await run_load("rate", f"{options.rate:g}/s", sides, options.rounds,
                                    lambda side, result: offered(side, options.rate, rate_calls, accounts, result)))
        return loads
    finally:
        await gw.close()
        if raw is not None:
            await raw.close()


# ------------------------------------------------------------------------------------------------ report

def cpu_ms_per_call(cpu_s: float, side: SideResult) -> str:
    return f"{cpu_s / side.calls * 1000:.2f}" if side.calls else "-"


def report(load: LoadResult) -> None:
    print(f"--- {load.name}: {load.offered}")
    for side in (load.gateway, load.janus):
        rounds = ", ".join(f"{ms(percentile(r.latencies, 50))}/{ms(percentile(r.latencies, 99))}"
                           for r in side.rounds)
        print(f"  {side.side:8} p50/p99 per round (ms): {rounds}")
        print(f"  {'':8} median over rounds p50 {ms(side.median_of(50))} ms, p99 {ms(side.median_of(99))} ms; "
              f"pooled ({len(side.pooled)} calls) p50 {ms(percentile(side.pooled, 50))} ms, "
              f"p99 {ms(percentile(side.pooled, 99))} ms, max {ms(max(side.pooled, default=math.nan))} ms")
        cpu = f"gateway {cpu_ms_per_call(side.main_cpu_s, side)} ms, " if side.side == "gateway" else ""
        print(f"  {'':8} CPU per call: {cpu}Janus {cpu_ms_per_call(side.janus_cpu_s, side)} ms; "
              f"failures: {side.failures or 0}")
    print(f"  gateway/raw p50 {load.p50_ratio:.2f}x, gateway's added p99 {ms(load.added_p99_s)} ms")


def figures(load: LoadResult) -> dict[str, Any]:
    def side_figures(side: SideResult) -> dict[str, Any]:
        return {"calls": side.calls, "answered": len(side.pooled), "failures": side.failures,
                "rounds_p50_ms": [percentile(r.latencies, 50) * 1000 for r in side.rounds],
                "rounds_p99_ms": [percentile(r.latencies, 99) * 1000 for r in side.rounds],
                "median_p50_ms": side.median_of(50) * 1000, "median_p99_ms": side.median_of(99) * 1000,
                "pooled_p50_ms": percentile(side.pooled, 50) * 1000,
                "pooled_p99_ms": percentile(side.pooled, 99) * 1000,
                "gateway_cpu_ms_per_call": side.main_cpu_s / side.calls * 1000 if side.calls else None,
                "janus_cpu_ms_per_call": side.janus_cpu_s / side.calls * 1000 if side.calls else None}
    return {"load": load.name, "offered": load.offered, "gateway": side_figures(load.gateway),
            "janus": side_figures(load.janus), "p50_ratio": load.p50_ratio,
            "added_p99_ms": load.added_p99_s * 1000}


def summary(loads: list[LoadResult]) -> str:
    parts = []
    for load in loads:
        g, j = load.gateway, load.janus
        failed = sum(g.failures.values()) + sum(j.failures.values())
        parts.append(f"{load.name} ({load.offered}): gateway p50 {ms(g.median_of(50))} p99 {ms(g.median_of(99))} "
                     f"ms, raw p50 {ms(j.median_of(50))} p99 {ms(j.median_of(99))} ms, ratio {load.p50_ratio:.2f}x, "
                     f"added p99 {ms(load.added_p99_s)} ms, {failed} failed;")
    return "SUMMARY call setup " + " ".join(parts)


# ------------------------------------------------------------------------------------------------ main

def gateway_config(options: argparse.Namespace) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "WebServer": {"local_port": 10888},
        "WebRTCGateway": {"outbound_sip_proxy": f"127.0.0.1:{KAMAILIO_PORT}", "max_calls_per_account": LINES,
                          "max_connections_per_address": 100000, "request_rate": 100000, "request_burst": 100000},
        "Janus": {"interface": "127.0.0.1", "instances": 1},
    }
    return apply_settings(config, options.set)


def raw_janus_config(config: dict[str, dict[str, Any]]) -> Config:
    """The gateway's settings, with RTP port ranges of its own: both Janus run at once."""
    janus = dict(config["Janus"], rtp_port_range="40000-44999", sip_rtp_port_range="45000-49999")
    return parse_config(ini_text({**config, "Janus": janus}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", "-n", type=int, default=200,
                        help="sequential load: calls per side, over all rounds (default 200)")
    parser.add_argument("--rate", "-r", type=float, default=100.0, help="rate load: calls/s offered (default 100)")
    parser.add_argument("--seconds", "-s", type=float, default=10.0,
                        help="rate load: seconds per side, over all rounds (default 10)")
    parser.add_argument("--rounds", "-k", type=int, default=4, help="rounds per side and load (default 4)")
    parser.add_argument("--accounts", "-a", type=int, default=10,
                        help="calling accounts (gateway: one connection each; default 10)")
    add_common_options(parser, "callsetup", mode=False)
    options = parser.parse_args()
    if min(options.calls, options.rounds, options.accounts) < 1 or options.rate <= 0 or options.seconds <= 0:
        parser.error("--calls, --rounds, --accounts, --rate and --seconds must be positive")
    require_root("bench/callsetup.py")
    install_signal_handlers()

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-callsetup-"))
    for folder in ("gateway", "janus"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    users = [f"caller{i:02d}" for i in range(1, options.accounts + 1)]
    config = gateway_config(options)
    log(f"{options.accounts} accounts; sequential {options.calls} calls, then {options.rate:g}/s for "
        f"{options.seconds:g} s, per side in {options.rounds} rounds each; logs in {workdir}")
    try:
        with network_namespace():
            passwords = {user: f"pw-{user}" for user in [*users, CALLEE]}
            with Kamailio(workdir / "kamailio", port=KAMAILIO_PORT, domain=DOMAIN, users=passwords) as kamailio:
                sipp_register(workdir / "sipp", CALLEE, passwords[CALLEE], CALLEE_PORT)
                # any number of calls, at once too; no message trace (it would cost more than the calls)
                with Sipp(workdir / "sipp", "uas_answer.xml", CALLEE_PORT, CALLEE, calls=None, timeout=3600,
                          trace=False), \
                        Gateway(workdir / "gateway", config, port=config["WebServer"]["local_port"]) as gateway, \
                        RawJanus(workdir / "janus", raw_janus_config(config)) as janus:
                    log(f"gateway pid {gateway.process.pid if gateway.process else '?'}, its Janus "
                        f"{current_janus_pids(gateway)}; raw Janus pid {janus.pid}")
                    loads = asyncio.run(bench(gateway, janus, kamailio, users, options))
    except KeyboardInterrupt as interrupted:
        log(f"interrupted ({str(interrupted) or 'Ctrl-C'}); everything was stopped. Logs: {workdir}")
        return 130
    print()
    for load in loads:
        report(load)
    print()
    print(summary(loads))
    path = write_results("callsetup", {"options": {k: str(v) for k, v in vars(options).items()},
                                       "loads": [figures(load) for load in loads]}, options.json)
    print(f"(logs: {workdir}; figures: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
