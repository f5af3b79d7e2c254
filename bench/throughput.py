#!/usr/bin/env python3
"""How many requests per second the gateway's protocol layer answers, and how fast, next to the cheapest round trip
of the raw Janus it runs on.

    sudo .venv/bin/python bench/throughput.py [--connections C] [--window W] [--request ping|account]
                                              [--duration S] [--rounds R] [--clients P]
                                              [--mode both|gateway|janus] [--set Section.option=value ...]

Everything runs inside a fresh loopback-only network namespace (tests/integration/netns.py); no SIP is involved.

1. gateway: `twistd sylkgateway` with its own Janus (tests/integration/gateway.py), its per-connection token bucket
   lifted (`request_rate` 100000/s, `request_burst` 1000000: with the defaults, 20/s and 100, a connection that
   sends as fast as it can is refused and then disconnected) and its per-address cap too. C sylkRTC-1 connections,
   each keeping W requests in flight (a new one as soon as an answer comes), as fast as the client can. The
   requests need no SIP and no Janus: `ping` (default; answered with an ack and nothing else), or `account` (an
   `account-add` of an account that is never registered, then its `account-remove`, alternately: the account's
   state is made and dropped, and the backend is not asked for anything until a register or call).
2. janus: Janus's cheapest round trip, a session `keepalive` (answered with an `ack` by its request thread),
   over as many WebSockets, one session each, to a Janus started as the gateway starts its own (its launcher, the
   config render_janus_config makes from the same settings, its API on a TCP port); the same W in flight each.
Rounds alternate (gateway, janus, gateway, ...); each sends for a warm-up, then measures for --duration seconds:
answers per second, the latency from sending a request to its answer (p50/p99/p99.9/max; with every connection
kept full this is mostly queueing: about C x W / rate), errors, the CPU time of the gateway, of its Janus and of
the client processes per request and as a share of the window, how busy the machine's cores were (/proc/stat,
every process) and how much of that was neither the server, its Janus nor the clients (other benchmarks on the same
cores: a round where they took a quarter of a core or more says so, and its figures are low). Each round names
what limited it: the gateway's CPU (85 % of a core or more: its reactor is one thread), the clients' CPU (85 % of a
core each), else the machine's cores (70 % busy or more: "machine busy (others)" when other processes had their
share), else the window (too few requests in flight). The gateway's log growth per request is reported too.

The load comes from P client processes (default 2; connections split between them), each an asyncio loop with a
deliberately small WebSocket client (bench/connections.py LightSocket: frames masked with the all-zero key, one
write per read), so that the client costs less than what it measures. They run on the same two cores as what they
measure: the figures are what is left to the server, not its maximum on a machine of its own.
Every wait is bounded; the gateway, Janus, the client processes and the namespace are stopped on errors, Ctrl-C
and SIGTERM. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ProcInfo, add_common_options, current_janus_pids, gateway_and_raw_janus,  # noqa: E402
                    install_signal_handlers, log, median, percentile, proc_info, procs_info, require_root,
                    sleep_until, write_results)
from connections import LightSocket, busy_share, cpu_ticks, gateway_config, raise_open_files_limit  # noqa: E402
from registrations import log_digest  # noqa: E402

from tests.integration.netns import network_namespace  # noqa: E402

GATEWAY_PORT = 10888
OPEN_TIMEOUT = 30.0  # for the clients to open their connections (and sessions)
DRAIN_TIMEOUT = 10.0  # for the answers still in flight after the window
CORES = os.cpu_count() or 1
OTHERS_BUSY = 0.25  # cores' worth of CPU used by other processes that makes a round's figure suspect
_TRANSACTION = re.compile(rb'"transaction":"([^"]*)"')


# ------------------------------------------------------------------------------------------------ a client process

@dataclass
class Load:
    """What one client process does."""

    mode: str  # gateway | janus
    port: int
    connections: int
    window: int  # requests in flight per connection
    request: str  # ping | account (gateway mode)
    secret: str = ""  # Janus's API secret (janus mode)


class Driver:
    """One connection kept busy: `window` requests in flight, a new one sent as soon as an answer comes."""

    def __init__(self, load: Load, tally: Tally) -> None:
        self.load = load
        self.tally = tally
        self.socket: LightSocket | None = None
        self.session_id = 0  # janus mode
        self.serial = 0
        self.sent: dict[bytes, float] = {}
        self.running = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self) -> None:
        if self.load.mode == "gateway":
            self.socket = await LightSocket.connect("127.0.0.1", self.load.port, "/webrtcgateway/ws", "sylkRTC-1",
                                                    on_text=self.on_text)
        else:
            self.socket = await LightSocket.connect("127.0.0.1", self.load.port, "/", "janus-protocol",
                                                    on_text=self.on_text)
            self.socket.send(json.dumps({"janus": "create", "transaction": "create",
                                         "apisecret": self.load.secret}, separators=(",", ":")).encode())
        await self.opened

    def request(self, serial: int) -> bytes:
        if self.load.mode == "janus":
            return b'{"janus":"keepalive","session_id":%d,"transaction":"%d","apisecret":"%s"}' % (
                self.session_id, serial, self.load.secret.encode())
        if self.load.request == "ping":
            return b'{"sylkrtc":"ping","transaction":"%d"}' % serial
        account = b"bench%d@sylk.test" % (serial // 2)
        if serial % 2 == 0:
            return b'{"sylkrtc":"account-add","transaction":"%d","account":"%s","password":"%s"}' % (
                serial, account, b"0" * 32)
        return b'{"sylkrtc":"account-remove","transaction":"%d","account":"%s"}' % (serial, account)

    def start(self) -> None:
        self.running = True
        now = time.monotonic()
        for _ in range(self.load.window):
            self.send(now)

    def send(self, now: float) -> None:
        assert self.socket is not None
        self.serial += 1
        self.sent[b"%d" % self.serial] = now
        self.socket.send(self.request(self.serial))

    def on_text(self, now: float, payload: bytes) -> None:
        if not self.opened.done():
            self.first_message(payload)
            return
        match = _TRANSACTION.search(payload)
        sent = self.sent.pop(match.group(1), None) if match else None
        if sent is None:
            self.tally.unexpected += 1
            return
        if self.tally.measuring:
            self.tally.latencies.append(now - sent)
            if not payload.startswith(b'{"sylkrtc":"ack"') and b'"janus":"ack"' not in payload:
                error = json.loads(payload).get("error")
                self.tally.errors[str(error)[:100]] = self.tally.errors.get(str(error)[:100], 0) + 1
        if self.running:
            self.send(now)

    def first_message(self, payload: bytes) -> None:
        message = json.loads(payload)
        if self.load.mode == "gateway" and message == {"sylkrtc": "event", "event": "ready"}:
            self.opened.set_result(None)
        elif self.load.mode == "janus" and message.get("janus") == "success":
            self.session_id = message["data"]["id"]
            self.opened.set_result(None)
        else:
            self.opened.set_exception(RuntimeError(f"unexpected first message {message}"))


@dataclass
class Tally:
    measuring: bool = False
    latencies: array = field(default_factory=lambda: array("d"))
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0


def client_process(load: Load, pipe: Pipe) -> None:
    """Open the connections, say how many, wait for the times of the window, load them, send back the tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    asyncio.run(client_main(load, pipe))


async def client_main(load: Load, pipe: Pipe) -> None:
    tally = Tally()
    drivers = [Driver(load, tally) for _ in range(load.connections)]
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            await asyncio.gather(*(driver.open() for driver in drivers))
    except Exception as e:  # noqa: BLE001 (reported to the parent as it is)
        pipe.send({"error": f"opening: {type(e).__name__}: {e}"})
        return
    pipe.send({"opened": len(drivers)})
    start, measure_from, measure_until = pipe.recv()
    await sleep_until(start)
    for driver in drivers:
        driver.start()
    await sleep_until(measure_from)
    tally.measuring, cpu0 = True, time.process_time()
    await sleep_until(measure_until)
    tally.measuring, cpu = False, time.process_time() - cpu0
    for driver in drivers:
        driver.running = False
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while any(driver.sent for driver in drivers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    unanswered = sum(len(driver.sent) for driver in drivers)
    for driver in drivers:
        if driver.socket is not None:
            driver.socket.close()
    await asyncio.wait([d.socket.lost for d in drivers if d.socket is not None], timeout=5)
    pipe.send({"latencies": tally.latencies.tobytes(), "errors": tally.errors, "unexpected": tally.unexpected,
               "unanswered": unanswered, "cpu_s": cpu})


# ------------------------------------------------------------------------------------------------ a round

@dataclass
class Result:
    mode: str
    round: int
    request: str
    connections: int
    window: int
    duration: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    unanswered: int = 0
    client_cpu_s: float = 0.0
    main_from: ProcInfo = field(default_factory=ProcInfo)  # the gateway, at the window's start and end
    main_until: ProcInfo = field(default_factory=ProcInfo)
    janus_from: ProcInfo = field(default_factory=ProcInfo)
    janus_until: ProcInfo = field(default_factory=ProcInfo)
    log_bytes: int = 0  # the gateway's log growth during the window
    machine_busy: float = math.nan  # share of all the machine's cores busy during the window (every process)
    clients: int = 1
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.answered / self.duration

    def per_request_us(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / self.answered if self.answered else math.nan

    @property
    def gateway_cpu_s(self) -> float:
        return self.main_until.cpu_s - self.main_from.cpu_s

    @property
    def janus_cpu_s(self) -> float:
        return self.janus_until.cpu_s - self.janus_from.cpu_s

    @property
    def others_share(self) -> float:
        """Cores' worth of CPU that processes other than ours (the server, its Janus, the clients) used during the
        window: other benchmarks or builds on the same machine, which the figure then had to share it with."""
        ours = (self.gateway_cpu_s + self.janus_cpu_s + self.client_cpu_s) / self.duration
        return max(0.0, self.machine_busy * CORES - ours)

    @property
    def limit(self) -> str:
        """What held the rate down: a process near a full core, else the machine's cores (saying so when other
        processes took a share of them), else the window."""
        if self.mode == "gateway" and self.gateway_cpu_s / self.duration >= 0.85:
            return "gateway CPU"  # its reactor is one thread
        if self.client_cpu_s / self.duration >= 0.85 * self.clients:
            return "client CPU"
        if self.machine_busy >= 0.7:
            # the cores were shared by the server, the clients and whatever else runs
            return "machine busy (others)" if self.others_share >= OTHERS_BUSY else "machine CPU"
        return "latency (window)"


def run_round(mode: str, index: int, options: argparse.Namespace, port: int, secret: str,
              main_pid: int | None, janus_pids: list[int], log_path: Path | None) -> Result:
    result = Result(mode, index, options.request if mode == "gateway" else "keepalive", options.connections,
                    options.window, options.duration, clients=options.clients)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter (in this namespace), not a fork of this one
    shares = [options.connections // options.clients + (i < options.connections % options.clients)
              for i in range(options.clients)]
    workers: list[tuple[Any, Pipe]] = []
    try:
        for share in (s for s in shares if s):
            ours, theirs = context.Pipe()
            process = context.Process(target=client_process, daemon=True,
                                      args=(Load(mode, port, share, options.window, options.request, secret), theirs))
            process.start()
            workers.append((process, ours))
        for process, pipe in workers:
            answer = receive(pipe, OPEN_TIMEOUT + 15, "opening the connections")
            if "error" in answer:
                raise RuntimeError(f"{mode}: a client process failed {answer['error']}")
        start = time.monotonic() + 0.2
        measure_from = start + options.warmup
        measure_until = measure_from + options.duration
        for _, pipe in workers:
            pipe.send((start, measure_from, measure_until))
        log(f"{mode} round {index}: {options.connections} connections x {options.window} in flight "
            f"({result.request}); warm-up {options.warmup:g} s, then {options.duration:g} s measured")
        time.sleep(max(0.0, measure_from - time.monotonic()))
        result.main_from, result.janus_from = proc_info(main_pid), procs_info(janus_pids)
        log_size = log_path.stat().st_size if log_path else 0
        busy0 = cpu_ticks()
        time.sleep(max(0.0, measure_until - time.monotonic()))
        result.main_until, result.janus_until = proc_info(main_pid), procs_info(janus_pids)
        result.log_bytes = (log_path.stat().st_size if log_path else 0) - log_size
        result.machine_busy = busy_share(busy0, cpu_ticks())
        for process, pipe in workers:
            tally = receive(pipe, DRAIN_TIMEOUT + 15, "the tally")
            latencies = array("d")
            latencies.frombytes(tally["latencies"])
            result.latencies += latencies.tolist()
            for error, times in tally["errors"].items():
                result.errors[error] = result.errors.get(error, 0) + times
            result.unexpected += tally["unexpected"]
            result.unanswered += tally["unanswered"]
            result.client_cpu_s += tally["cpu_s"]
            process.join(10)
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()
                process.join(5)
    return result


def receive(pipe: Pipe, timeout: float, what: str) -> dict[str, Any]:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process sent nothing within {timeout:g} s ({what})")
    return pipe.recv()


# ------------------------------------------------------------------------------------------------ the report

def us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def lat_ms(result: Result, p: float) -> str:
    value = percentile(result.latencies, p)
    return "-" if math.isnan(value) else f"{value * 1000:.2f}"


def report(result: Result) -> None:
    print(f"--- {result.mode} round {result.round}: {result.request} x {result.answered} in {result.duration:g} s = "
          f"{result.rate:.0f}/s; latency p50 {lat_ms(result, 50)} ms, p99 {lat_ms(result, 99)} ms, "
          f"p99.9 {lat_ms(result, 99.9)} ms, max {lat_ms(result, 100)} ms")
    if result.errors or result.unexpected or result.unanswered:
        print(f"  errors {result.errors}; unexpected answers {result.unexpected}; unanswered {result.unanswered}")
    window = result.duration
    if result.mode == "gateway":
        print(f"  gateway CPU {result.gateway_cpu_s / window:.0%} of a core, "
              f"{us(result.per_request_us(result.gateway_cpu_s))} us per request; log "
              f"{result.log_bytes / max(1, result.answered):.0f} bytes per request")
    print(f"  janus CPU {result.janus_cpu_s / window:.0%} of a core, "
          f"{us(result.per_request_us(result.janus_cpu_s))} us per request; client processes "
          f"{result.client_cpu_s / window:.0%} of a core, {us(result.per_request_us(result.client_cpu_s))} us "
          f"per request; machine {result.machine_busy:.0%} busy; limited by {result.limit}")
    if result.others_share >= OTHERS_BUSY:
        print(f"  MACHINE BUSY: other processes used {result.others_share:.0%} of a core during the window; this "
              f"round's figures are low")
    for what, times in sorted(result.problems.items(), key=lambda item: -item[1])[:8]:
        print(f"  log: {times:5d} x {what}")


def table(results: list[Result]) -> None:
    def gateway_only(cell: Callable[[Result], str]) -> Callable[[Result], str]:
        return lambda r: cell(r) if r.mode == "gateway" else "-"

    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("request", lambda r: r.request),
        ("answers per s", lambda r: f"{r.rate:.0f}"),
        ("latency p50 ms", lambda r: lat_ms(r, 50)),
        ("latency p99 ms", lambda r: lat_ms(r, 99)),
        ("latency p99.9 ms", lambda r: lat_ms(r, 99.9)),
        ("latency max ms", lambda r: lat_ms(r, 100)),
        ("errors / unanswered", lambda r: f"{sum(r.errors.values())}/{r.unanswered}"),
        ("gateway CPU % of a core", gateway_only(lambda r: f"{r.gateway_cpu_s / r.duration:.0%}")),
        ("gateway CPU us per request", gateway_only(lambda r: us(r.per_request_us(r.gateway_cpu_s)))),
        ("gateway log bytes per request", gateway_only(lambda r: f"{r.log_bytes / max(1, r.answered):.0f}")),
        ("janus CPU % of a core", lambda r: f"{r.janus_cpu_s / r.duration:.0%}"),
        ("janus CPU us per request", lambda r: us(r.per_request_us(r.janus_cpu_s))),
        ("client CPU % of a core", lambda r: f"{r.client_cpu_s / r.duration:.0%}"),
        ("client CPU us per request", lambda r: us(r.per_request_us(r.client_cpu_s))),
        (f"machine busy % of {CORES} cores", lambda r: f"{r.machine_busy:.0%}"),
        ("other processes % of a core", lambda r: f"{r.others_share:.0%}"),
        ("limited by", lambda r: r.limit),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'':<{width}}  " + "  ".join(f"{f'{r.mode} #{r.round}':>12}" for r in results))
    for name, cell in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(r):>12}" for r in results))


def figures(result: Result) -> dict[str, Any]:
    def p_ms(p: float) -> float:
        return percentile(result.latencies, p) * 1000
    return {"mode": result.mode, "round": result.round, "request": result.request,
            "connections": result.connections, "window": result.window, "duration_s": result.duration,
            "answered": result.answered, "per_s": result.rate, "latency_p50_ms": p_ms(50),
            "latency_p99_ms": p_ms(99), "latency_p999_ms": p_ms(99.9), "latency_max_ms": p_ms(100),
            "errors": result.errors, "unexpected": result.unexpected, "unanswered": result.unanswered,
            **({"gateway_cpu_share": result.gateway_cpu_s / result.duration,
                "gateway_cpu_us_per_request": result.per_request_us(result.gateway_cpu_s),
                "gateway_log_bytes_per_request": result.log_bytes / max(1, result.answered)}
               if result.mode == "gateway" else {}),
            "janus_cpu_share": result.janus_cpu_s / result.duration,
            "janus_cpu_us_per_request": result.per_request_us(result.janus_cpu_s),
            "client_cpu_share": result.client_cpu_s / result.duration,
            "client_cpu_us_per_request": result.per_request_us(result.client_cpu_s),
            "machine_busy_share": result.machine_busy, "others_cpu_share": result.others_share,
            "limited_by": result.limit, "log_problems": result.problems}


def summary(results: list[Result], options: argparse.Namespace) -> str:
    parts = [f"{options.connections} connections x {options.window} in flight:"]
    rates: dict[str, float] = {}
    for mode in ("gateway", "janus"):
        rounds = [r for r in results if r.mode == mode]
        if not rounds:
            continue
        rates[mode] = median([r.rate for r in rounds])
        p50 = median([percentile(r.latencies, 50) * 1000 for r in rounds])
        p99 = median([percentile(r.latencies, 99) * 1000 for r in rounds])
        p999 = median([percentile(r.latencies, 99.9) * 1000 for r in rounds])
        part = (f"{mode} {rounds[0].request} {rates[mode]:.0f}/s p50 {p50:.2f} ms p99 {p99:.2f} ms "
                f"p99.9 {p999:.2f} ms")
        if mode == "gateway":
            cpu = median([r.per_request_us(r.gateway_cpu_s) for r in rounds])
            share = median([r.gateway_cpu_s / r.duration for r in rounds])
            part += f", gateway {cpu:.0f} us CPU/request at {share:.0%} of a core"
        else:
            cpu = median([r.per_request_us(r.janus_cpu_s) for r in rounds])
            part += f", Janus {cpu:.0f} us CPU/request"
        limits = [r.limit for r in rounds]
        part += f", limited by {max(set(limits), key=limits.count)}"
        errors = sum(sum(r.errors.values()) + r.unanswered for r in rounds)
        if errors:
            part += f", {errors} errors"
        busy = [r for r in rounds if r.others_share >= OTHERS_BUSY]
        if busy:
            part += f", machine busy with other processes in {len(busy)} round(s)"
        parts.append(part + ";")
    if len(rates) == 2:
        parts.append(f"gateway/raw {rates['gateway'] / rates['janus']:.0%} (median of {options.rounds} rounds each)")
    return "SUMMARY " + " ".join(parts)


# ------------------------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-c", type=int, default=100, help="connections (default 100)")
    parser.add_argument("--window", "-w", type=int, default=2, help="requests in flight per connection (default 2)")
    parser.add_argument("--request", choices=("ping", "account"), default="ping",
                        help="gateway requests: ping, or account-add/account-remove alternately (default ping)")
    parser.add_argument("--duration", "-d", type=float, default=8.0, help="seconds measured per round (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring (default 2)")
    parser.add_argument("--rounds", "-r", type=int, default=3, help="rounds of each mode, alternating (default 3)")
    parser.add_argument("--clients", "-p", type=int, default=2, help="client processes (default 2)")
    add_common_options(parser, "throughput")
    options = parser.parse_args()
    if min(options.connections, options.window, options.rounds, options.clients) < 1 or options.duration <= 0:
        parser.error("--connections, --window, --rounds, --clients and --duration must be positive")
    require_root("bench/throughput.py")
    install_signal_handlers()
    raise_open_files_limit()

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = gateway_config(options, workdir / "run")
    # account requests: what one connection holds at once (adds not yet removed) must not hit the cap
    config["WebRTCGateway"].setdefault("max_accounts_per_connection", 10000)
    log(f"{options.connections} connections x {options.window} in flight, {options.rounds} round(s) of "
        f"{options.warmup:g} + {options.duration:g} s, {options.clients} client process(es); logs in {workdir}")

    results: list[Result] = []
    try:
        with network_namespace(), \
                gateway_and_raw_janus(workdir, config, options.mode, GATEWAY_PORT) as (gateway, janus):
            for index in range(1, options.rounds + 1):
                if gateway is not None:
                    mark = len(gateway.log())
                    pid = gateway.process.pid if gateway.process else None
                    results.append(run_round("gateway", index, options, gateway.port, "", pid,
                                             current_janus_pids(gateway), gateway.log_path))
                    results[-1].problems = log_digest(gateway.log()[mark:])[1]
                    report(results[-1])
                if janus is not None:
                    results.append(run_round("janus", index, options, janus.port, janus.secret, None,
                                             [janus.pid] if janus.pid else [], None))
                    report(results[-1])
    except KeyboardInterrupt as interrupted:
        log(f"interrupted ({str(interrupted) or 'Ctrl-C'}); everything was stopped. Logs: {workdir}")
        return 130
    table(results)
    print()
    print(summary(results, options))
    path = write_results("throughput", {"options": {k: str(v) for k, v in vars(options).items()},
                                        "results": [figures(r) for r in results]}, options.json)
    print(f"(logs: {workdir}; figures: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
