#!/usr/bin/env python3
"""Many concurrent bridged audio calls: Chromium -> sylkgateway -> Janus -> Kamailio -> a sipp echo, next to the
same calls placed straight on a raw Janus.

    sudo .venv/bin/python bench/bridged.py [--calls 100 | --calls 25,50,100] [--hold S] [--settle S]
                                           [--per-account K] [--mode both|gateway|janus]
                                           [--set Section.option=value ...] [--workdir DIR] [--json PATH]

The default run (steps 25/50/100, both modes, 10 s held at each) takes about 110 s on 2 cores.

Everything runs inside a fresh loopback-only network namespace (tests/integration/netns.py, whose veth pair lets
Janus gather ICE candidates on 127.0.0.1), with:
- Kamailio (tests/integration/kamailio.py) on 127.0.0.1:5070 holding subscribers user0001.. and `echo`;
- one sipp (tests/integration/sipp.py, scenario uas_answer.xml, plus `-rtp_echo`; its echo socket's receive
  buffer raised to 4 MB) registered as echo@sylk.test: it answers every call with PCMU and sends every RTP packet
  back to its sender;
- the gateway (tests/integration/gateway.py, one Janus unless --set Janus.instances=N) and a raw Janus started
  the same way (bench/common.py RawJanus, its API on a TCP port, other RTP port ranges), both up all the time;
- one headless Chromium (tests/integration/browser.py) with one page (bench/bridged/index.html, calls.js) that
  holds every call's RTCPeerConnection and shares one fake-microphone track (a 1 kHz tone) between them. The
  received audio is not played out (nothing decodes it), except in the one call per round whose echo is checked.

Both modes place the same calls from the same page to echo@sylk.test, spread round-robin over ceil(N/K) accounts
(K = --per-account, the gateway's max_calls_per_account), none registered:
1. gateway: sylkrtc.js on one connection (sylkRTC-2): account.call() per call; the gateway puts each account's
   calls on helper handles of one SIP stack.
2. janus: the page speaks Janus's API itself over a WebSocket to the raw Janus, with the requests the gateway
   sends: per account a master handle (`register`, send_register false), per call a helper (`register`, type
   helper) and `call` with the browser's offer, then the candidates trickled as the gateway trickles them; the
   stacks are let go after each round, as the gateway does for accounts that are not registered.

The steps (--calls: N/4, N/2, N for one number; N = 100 by default) run in alternating rounds (gateway then janus,
then the other way round, ...), after two warm-up calls per mode and an idle window that gives each process's
baseline. Each round places its calls at once, times them until established (ICE and DTLS up: the gateway's
`established`, or Janus's `accepted` plus `webrtcup`), lets them settle, then measures over --hold seconds:
- CPU (% of one core) of the gateway, its Janus pool (current_janus_pids), the raw Janus, sipp, Kamailio and
  every Chromium process (split by kind: renderer, network service, audio service, ...), with each one's three
  busiest threads; per call: (CPU at N - idle) / N; the whole machine's CPU (/proc/stat), whose excess over ours
  is other processes (the figures are only as quiet as the machine);
- RSS (Chromium's is a sum over its processes, shared pages counted again);
- loss on the echoed audio as the browser sees it: inbound-rtp packetsLost / (packetsLost + packetsReceived) from
  getStats over the window, all calls and the worst call. It covers both directions, browser -> Janus -> sipp ->
  Janus -> browser; remote-inbound-rtp adds what Janus reports of the browser -> Janus leg. Sequence gaps miss an
  echo that stops altogether, so two cross-checks: packets sent minus packets echoed back over the same window,
  beyond the 2 per call that may be in flight (% not echoed), and the calls that got no echoed packet at all;
  and the last call of each round must hear its own 1 kHz tone back (a WebAudio analyser on its received track,
  after the window): the packets carry the audio;
- at the far end and in between: calls up at sipp (its -trace_stat file), and UDP datagrams dropped on each
  group's sockets (/proc/net/udp `drops`: on loopback a datagram is lost only when a socket's receive buffer is
  full, that is when its reader did not keep up) and in the whole namespace (/proc/net/snmp RcvbufErrors).
Then every call is hung up (timed) and the next round starts from none. "limited by" names, per round, calls that
failed or dropped, a machine over 85 % busy, any thread over 85 % of a core, the sockets that dropped datagrams,
loss or packets not echoed over 1 %, calls without echo and a tone check that failed; else the busiest process.
The summary sets Chromium's CPU per call (the load generator) against Janus's.

Janus logs "Got a 'Connection refused' on the audio RTCP socket" once per call: sipp echoes RTP only (its RTCP
port is closed), so Janus stops sending RTCP towards it. Expected, and the same in both modes. So are a few "Bind
failed for audio RTP (port N), trying a different one" (the SIP plugin picks ports at random, some already its
own) and "Failed to add some remote candidates" (a candidate libnice did not take; a few per hundred calls in either
mode, and every call still comes up).

Every wait is bounded; all processes are stopped on errors, Ctrl-C and SIGTERM. Needs root (network namespaces).
Runs longer than 9 minutes are refused: the echo's registration at Kamailio lasts 600 s (register.xml).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DOMAIN, KAMAILIO_PORT, RawJanus, add_common_options, apply_settings, cpu_seconds,  # noqa: E402
                    current_janus_pids, ini_text, install_signal_handlers, log, median, percentile, proc_info, ratio,
                    require_root, write_results)
from registrations import log_digest  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from sylk.gateway.config import Config, parse_config  # noqa: E402
from sylk.gateway.janus.sipcodec import sip_uri  # noqa: E402
from tests.integration.audio import write_tone  # noqa: E402
from tests.integration.browser import Browser, BrowserPage, StaticServer  # noqa: E402
from tests.integration.gateway import Gateway  # noqa: E402
from tests.integration.kamailio import Kamailio  # noqa: E402
from tests.integration.netns import network_namespace  # noqa: E402
from tests.integration.sipp import Sipp, register  # noqa: E402

PAGE = Path(__file__).resolve().parent / "bridged"
LIBRARY = Path(__file__).resolve().parents[1] / "sylk" / "gateway" / "web" / "sylkrtc.js"
ECHO = "echo"
SIPP_PORT = 8100
ECHO_RTP_PORT = 20000 + (SIPP_PORT - 5000) * 10  # as tests/integration/sipp.py sets -mp: outside every Janus range
ECHO_BUFFER = 1 << 22  # bytes of receive buffer for sipp's echo socket
SYS_PIDFD_GETFD = 438  # the same number on every architecture (Linux >= 5.6)
SO_RCVBUFFORCE = 33  # SO_RCVBUF beyond net.core.rmem_max (root); not in Python's socket module
_libc = ctypes.CDLL(None, use_errno=True)
TONE_HZ = 1000
# the raw Janus runs beside the gateway's: its own ports, so neither takes the other's
RAW_PORT_RANGES = {"rtp_port_range": "40000-44999", "sip_rtp_port_range": "45000-49999"}
# the namespace's ephemeral ports (Chromium's ICE sockets, every client socket), above all of those: by default
# (32768-60999) they take ports of the Janus ranges, and each one the SIP plugin picks logs "Bind failed" and a retry
EPHEMERAL_PORTS = "52000 60999"
MAX_RUN_S = 540  # the echo's registration (register.xml: Expires 600) must outlive the run
# packets of a call that may be on their way back at either end of a window (one every 20 ms; the echo's round
# trip takes a few ms): sent minus received over a window is its loss plus or minus these
IN_FLIGHT = 2
GROUPS = ("gateway", "janus", "raw janus", "sipp", "kamailio", "chromium")


# ------------------------------------------------------------------------------------------------ measuring

@dataclass
class Sample:
    """What /proc says at one moment about the processes of each group (gateway, janus, ..., chromium)."""
    at: float
    cpu: dict[str, float]  # group -> CPU seconds
    threads: dict[str, dict[int, tuple[str, float]]]  # group -> {tid: (name, CPU seconds)}
    rss_kb: dict[str, int]
    parts: dict[str, float]  # Chromium's CPU seconds by kind of process (renderer, network service, ...)
    drops: dict[str, dict[int, int]]  # group -> {socket inode: datagrams dropped}
    udp: dict[str, int]  # the namespace's UDP counters
    machine: tuple[int, int]  # (busy, total) jiffies of every CPU


@dataclass
class Window:
    """The difference between two samples: CPU as % of one core."""
    seconds: float
    cpu: dict[str, float]
    top_threads: dict[str, list[tuple[str, float]]]  # group -> its three busiest threads (name, %)
    rss_mb: dict[str, float]
    parts: dict[str, float]
    drops: dict[str, int]
    udp: dict[str, int]
    machine: float  # % of one core, all CPUs together (at most 100 x cores)


def _stat_fields(path: str) -> tuple[str, list[str]]:
    text = Path(path).read_text()
    return text[text.index("(") + 1:text.rindex(")")], text.rpartition(")")[2].split()


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    found = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                name, fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
                found[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return found


def _socket_inodes(pid: int) -> list[int]:
    inodes = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.append(int(target[8:-1]))
    return inodes


def _udp_drops() -> dict[int, int]:
    """Datagrams dropped per UDP socket (by inode) in this thread's network namespace."""
    drops = {}
    for name in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/thread-self/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                drops[int(fields[9])] = int(fields[12])
    return drops


def _udp_counters() -> dict[str, int]:
    lines = [line.split() for line in Path("/proc/thread-self/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def _machine() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)  # all but idle and iowait


def chromium_kind(pid: int) -> str:
    """browser, renderer, gpu-process, network, audio, ... from a Chromium process's command line."""
    try:
        # zygote children rewrite their command line as one string (setproctitle): split on spaces too
        arguments = re.split(rb"[\0 ]", Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return "?"
    options = dict(a.decode(errors="replace")[2:].partition("=")[::2] for a in arguments if a.startswith(b"--"))
    kind = options.get("type", "browser")
    sub = options.get("utility-sub-type", "")
    return sub.split(".")[0] if kind == "utility" and sub else kind


def sample(groups: dict[str, list[int]]) -> Sample:
    udp_drops = _udp_drops()
    result = Sample(time.monotonic(), {}, {}, {}, {}, {}, _udp_counters(), _machine())
    for group, pids in groups.items():
        cpu, threads, rss, drops = 0.0, {}, 0, {}
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                used = cpu_seconds(pid)  # includes threads that ended
                cpu += used
                if group == "chromium":
                    kind = chromium_kind(pid)
                    result.parts[kind] = result.parts.get(kind, 0.0) + used
            threads.update(_threads(pid))
            rss += proc_info(pid).rss_kb
            drops.update({inode: udp_drops[inode] for inode in _socket_inodes(pid) if inode in udp_drops})
        result.cpu[group], result.threads[group], result.rss_kb[group], result.drops[group] = cpu, threads, rss, drops
    return result


def window(before: Sample, after: Sample) -> Window:
    seconds = after.at - before.at
    cpu, top, drops = {}, {}, {}
    for group in after.cpu:
        cpu[group] = 100 * (after.cpu[group] - before.cpu.get(group, 0.0)) / seconds
        old = before.threads.get(group, {})
        threads = [(name, 100 * (used - old[tid][1]) / seconds)
                   for tid, (name, used) in after.threads[group].items() if tid in old]
        top[group] = sorted(threads, key=lambda item: -item[1])[:3]
        was = before.drops.get(group, {})
        drops[group] = sum(count - was.get(inode, 0) for inode, count in after.drops[group].items())
    busy, total = after.machine[0] - before.machine[0], after.machine[1] - before.machine[1]
    parts = {kind: 100 * (used - before.parts.get(kind, 0.0)) / seconds for kind, used in after.parts.items()}
    return Window(seconds, cpu, top, {g: kb / 1024 for g, kb in after.rss_kb.items()}, parts, drops,
                  {k: after.udp[k] - before.udp.get(k, 0) for k in after.udp},
                  100 * (os.cpu_count() or 1) * busy / total if total else math.nan)


class Processes:
    """The pids of each group, looked up again at each sample (Janus restarts, Chromium helpers come and go)."""

    def __init__(self, gateway: Gateway | None, raw: RawJanus | None, sipp: Sipp, kamailio: Kamailio,
                 chromium: Browser) -> None:
        self.gateway, self.raw, self.sipp, self.kamailio, self.chromium = gateway, raw, sipp, kamailio, chromium

    def groups(self) -> dict[str, list[int]]:
        gateway = self.gateway
        return {
            "gateway": [gateway.process.pid] if gateway is not None and gateway.process is not None else [],
            "janus": current_janus_pids(gateway) if gateway is not None else [],
            "raw janus": [self.raw.pid] if self.raw is not None and self.raw.pid is not None else [],
            "sipp": [self.sipp.process.pid] if self.sipp.process is not None else [],
            "kamailio": _process_group(self.kamailio.process.pid) if self.kamailio.process is not None else [],
            "chromium": self.chromium.pids(),
        }

    def sample(self) -> Sample:
        return sample(self.groups())


def _process_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(_stat_fields(f"/proc/{entry}/stat")[1][2]) == pgid:
                    pids.append(int(entry))
    return pids


def sipp_calls(stat_file: Path) -> tuple[int, int, int] | None:
    """(calls up now, successful, failed) from sipp's -trace_stat file (written every second)."""
    try:
        lines = stat_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    row = dict(zip(lines[0].split(";"), lines[-1].split(";")))
    try:
        return int(row["CurrentCall"]), int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])
    except (KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ a round

@dataclass
class Round:
    mode: str  # gateway, janus, or idle
    calls: int
    established: int = 0
    failed: int = 0
    dropped: int = 0  # established, then ended without being hung up
    reasons: dict[str, int] = field(default_factory=dict)
    all_up_s: float = math.nan  # from placing the first call to the last one established
    setups_s: list[float] = field(default_factory=list)
    window: Window | None = None
    received: int = 0  # echoed packets the browser received over the window, all calls
    lost: int = 0
    sent: int = 0
    not_echoed: int = 0  # packets sent that did not come back, beyond those in flight (IN_FLIGHT per call)
    remote_lost: int = 0  # browser -> Janus, from Janus's RTCP receiver reports
    silent: int = 0  # established calls that got no echoed packet over the window (invisible to packetsLost)
    unmeasured: int = 0  # calls in only one of the two getStats snapshots (came up or ended during the window)
    worst_loss: float = math.nan  # % of the worst call
    jitter_ms: float = math.nan  # the highest inbound jitter of any call
    sipp_up: int | None = None  # calls up at sipp during the window
    echo_hz: float | None = None  # the dominant frequency the round's last call heard (its own tone, echoed)
    hangup_s: float = math.nan

    @property
    def loss(self) -> float:
        """% of the echoed packets lost, from the sequence numbers the browser received."""
        total = self.received + self.lost
        return 100 * self.lost / total if total else math.nan

    @property
    def shortfall(self) -> float:
        """% of the packets sent over the window that did not come back: a cross-check of `loss` that also sees an
        echo that stopped (no sequence gap after the last packet received)."""
        return 100 * self.not_echoed / self.sent if self.sent else math.nan

    @property
    def janus_group(self) -> str:
        return "raw janus" if self.mode == "janus" else "janus"

    def cpu(self, group: str) -> float:
        return self.window.cpu.get(group, math.nan) if self.window else math.nan

    def per_call(self, group: str, idle: Round) -> float:
        """% of one core per established call, net of the idle baseline."""
        return (self.cpu(group) - idle.cpu(group)) / self.established if self.established else math.nan


def run_round(page: BrowserPage, processes: Processes, mode: str, calls: int, options: argparse.Namespace,
              stat_file: Path) -> Round:
    result = Round(mode, calls)
    log(f"{mode}: placing {calls} calls at once")
    page.evaluate("([mode, count]) => bench.place(mode, count)", [mode, calls])
    deadline = time.monotonic() + 20 + 0.3 * calls
    while True:
        progress = page.evaluate("bench.progress()")
        if progress["setting-up"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    result.setups_s = [ms / 1000 for ms in progress["setups"]]
    if progress["established"] == calls and progress["allUpMs"] is not None:
        result.all_up_s = progress["allUpMs"] / 1000
    log(f"{mode}: {progress['established']}/{calls} established"
        + (f" in {result.all_up_s:.2f} s" if not math.isnan(result.all_up_s) else "")
        + (f", {progress['setting-up']} still setting up" if progress["setting-up"] else "")
        + (f", {progress['failed']} failed: {progress['reasons']}" if progress["failed"] else ""))

    time.sleep(options.settle)
    first = {s["index"]: s for s in page.evaluate("bench.stats()", timeout=30)}
    before = processes.sample()
    time.sleep(options.hold)
    after = processes.sample()
    last = page.evaluate("bench.stats()", timeout=30)
    result.window = window(before, after)
    up = sipp_calls(stat_file)
    result.sipp_up = up[0] if up else None
    measure_loss(result, first, last)
    if last:  # the last call placed hears its own tone back: the echo carries the audio itself, not just packets
        index = max(s["index"] for s in last)
        result.echo_hz = page.frequency_report(f"bench.remoteTrack({index})", seconds=1.0)["hz"]

    started = time.monotonic()
    final = page.evaluate("bench.hangup()", timeout=60)
    result.hangup_s = time.monotonic() - started
    result.established = final["established"] + final["ended"] + final["dropped"]
    result.failed, result.dropped, result.reasons = final["failed"] + final["setting-up"], final["dropped"], \
        final["reasons"]
    log(f"{mode}: {calls} calls: Janus {result.cpu(result.janus_group):.0f} %, gateway "
        f"{result.cpu('gateway'):.0f} %, Chromium {result.cpu('chromium'):.0f} %, sipp {result.cpu('sipp'):.0f} % "
        f"of a core; loss {result.loss:.2f} %, {result.silent} calls without echo; all hung up in "
        f"{result.hangup_s:.1f} s")
    time.sleep(1.0)  # let Janus and the gateway finish tearing down before the next round
    return result


def measure_loss(result: Round, first: dict[int, dict[str, Any]], last: list[dict[str, Any]]) -> None:
    worst, jitter = [], []
    measured = [(first[stats["index"]], stats) for stats in last if stats["index"] in first]
    result.unmeasured = len(first.keys() ^ {stats["index"] for stats in last})
    for start, stats in measured:
        received, lost = stats["received"] - start["received"], stats["lost"] - start["lost"]
        result.received += received
        result.lost += lost
        sent = stats["sent"] - start["sent"]
        result.sent += sent
        result.not_echoed += max(0, sent - received - IN_FLIGHT)
        result.remote_lost += stats["remoteLost"] - start["remoteLost"]
        if received <= 0:
            result.silent += 1
        if received + lost > 0:
            worst.append(100 * lost / (received + lost))
        jitter.append(1000 * stats["jitter"])
    result.worst_loss = max(worst, default=math.nan)
    result.jitter_ms = max(jitter, default=math.nan)


def warm_up(page: BrowserPage, modes: list[str]) -> None:
    """Two calls through each mode and back, so that no first-time cost (Chromium starting its media threads, the
    page's code being compiled, the stacks' first start) lands in the idle window or the first round."""
    for mode in modes:
        page.evaluate("([mode, count]) => bench.place(mode, count)", [mode, 2])
        page.wait_for("bench.progress()['setting-up'] === 0", 30, f"the warm-up calls through {mode}")
        page.evaluate("bench.hangup()", timeout=30)
    time.sleep(2.0)


def idle_round(processes: Processes, seconds: float) -> Round:
    log(f"idle: measuring every process for {seconds:g} s with no call")
    before = processes.sample()
    time.sleep(seconds)
    result = Round("idle", 0)
    result.window = window(before, processes.sample())
    return result


# ------------------------------------------------------------------------------------------------ the report

def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def limit(result: Round, cores: int) -> str:
    """What held a round back, from its own figures."""
    w = result.window
    if w is None or result.mode == "idle":
        return "-"
    notes = []
    if result.established < result.calls:
        notes.append(f"{result.calls - result.established} calls not established ({result.reasons or 'no reason'})")
    if result.dropped:
        notes.append(f"{result.dropped} calls dropped")
    busiest = max(GROUPS, key=lambda g: w.cpu.get(g, 0.0))
    if w.machine > 85 * cores:
        notes.append(f"the machine's CPU ({w.machine:.0f} % of {100 * cores} %; most: {busiest} "
                     f"{w.cpu[busiest]:.0f} %)")
    for group in GROUPS:
        name, used = (w.top_threads.get(group) or [("-", 0.0)])[0]
        if used > 85:
            notes.append(f"one thread of {group} ({name}) at {used:.0f} % of a core")
    dropped = {g: n for g, n in w.drops.items() if n > 0}
    if dropped:
        notes.append(f"UDP datagrams dropped on the sockets of {dropped}")
    elif w.udp.get("RcvbufErrors", 0):
        notes.append(f"{w.udp['RcvbufErrors']} UDP datagrams dropped in the namespace (a full receive buffer)")
    if result.loss > 1 or result.shortfall > 1:
        notes.append(f"loss {result.loss:.1f} % ({result.shortfall:.1f} % of the packets sent not echoed back)")
    if result.silent:
        notes.append(f"{result.silent} calls heard no echo")
    if result.echo_hz is None or abs(result.echo_hz - TONE_HZ) > 30:
        notes.append(f"the call checked did not hear its tone back ({fmt(result.echo_hz, '.0f')} Hz)")
    return "; ".join(notes) if notes else f"nothing saturated (busiest: {busiest} {w.cpu.get(busiest, 0):.0f} %)"


def table(idle: Round, rounds: list[Round]) -> None:
    def cpu(group: str) -> Callable[[Round], str]:
        return lambda r: f"{r.cpu(group):.1f}"

    def per_call(group: str | None) -> Callable[[Round], str]:
        return lambda r: "-" if r.mode == "idle" else f"{r.per_call(group or r.janus_group, idle):.2f}"

    def rss(group: str) -> Callable[[Round], str]:
        return lambda r: f"{r.window.rss_mb.get(group, 0):.0f}" if r.window else "-"

    rows: list[tuple[str, Callable[[Round], str]]] = [
        ("calls established/asked", lambda r: f"{r.established}/{r.calls}"),
        ("failed / dropped", lambda r: f"{r.failed}/{r.dropped}"),
        ("all established, s", lambda r: fmt(r.all_up_s)),
        ("setup p50 / p95, ms", lambda r: f"{fmt(1000 * median(r.setups_s), '.0f')}/"
                                          f"{fmt(1000 * percentile(r.setups_s, 95), '.0f')}"),
        ("CPU % gateway", cpu("gateway")),
        ("CPU % janus (gateway's)", cpu("janus")),
        ("CPU % raw janus", cpu("raw janus")),
        ("CPU % sipp", cpu("sipp")),
        ("CPU % kamailio", cpu("kamailio")),
        ("CPU % chromium", cpu("chromium")),
        ("CPU % machine (all)", lambda r: fmt(r.window.machine if r.window else math.nan, ".0f")),
        ("CPU % other processes", lambda r: fmt(r.window.machine - sum(r.window.cpu.values())
                                                if r.window else math.nan, ".0f")),
        ("per call % janus (mode's)", per_call(None)),
        ("per call % gateway", per_call("gateway")),
        ("per call % chromium", per_call("chromium")),
        ("per call % sipp", per_call("sipp")),
        ("RSS MB gateway", rss("gateway")),
        ("RSS MB janus (mode's)", lambda r: f"{r.window.rss_mb.get(r.janus_group, 0):.0f}" if r.window else "-"),
        ("RSS MB chromium (sum)", rss("chromium")),
        ("echoed packets received", lambda r: str(r.received)),
        ("loss % (all / worst call)", lambda r: f"{fmt(r.loss)}/{fmt(r.worst_loss, '.1f')}"),
        ("sent, not echoed back %", lambda r: fmt(r.shortfall)),
        ("calls without echo / unmeasured", lambda r: f"{r.silent}/{r.unmeasured}"),
        ("browser->janus lost (RTCP)", lambda r: str(r.remote_lost)),
        ("max jitter ms", lambda r: fmt(r.jitter_ms, ".1f")),
        ("UDP drops (sockets/netns)", lambda r: f"{sum(r.window.drops.values())}/"
                                                f"{r.window.udp.get('RcvbufErrors', 0)}" if r.window else "-"),
        ("calls up at sipp", lambda r: "-" if r.sipp_up is None else str(r.sipp_up)),
        ("echo heard, Hz", lambda r: fmt(r.echo_hz, ".0f")),
        ("hang up all, s", lambda r: fmt(r.hangup_s, ".1f")),
    ]
    columns = [idle, *rounds]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'':<{width}}  " + "  ".join(f"{r.mode + (f' {r.calls}' if r.calls else ''):>12}" for r in columns))
    for name, cell in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(r):>12}" for r in columns))
    print()
    for r in columns:
        threads = "; ".join(f"{g}: " + ", ".join(f"{name} {used:.0f}%" for name, used in top)
                            for g, top in r.window.top_threads.items() if top and top[0][1] >= 1) if r.window else ""
        print(f"busiest threads, {r.mode} {r.calls}: {threads or '-'}")
        if r.window and r.window.parts:
            parts = ", ".join(f"{kind} {used:.1f}" for kind, used in sorted(r.window.parts.items(),
                                                                             key=lambda item: -item[1]))
            print(f"  chromium by process, % of a core: {parts}")


def figures(result: Round, idle: Round, cores: int) -> dict[str, Any]:
    w = result.window
    return {
        "mode": result.mode, "calls": result.calls, "established": result.established, "failed": result.failed,
        "dropped": result.dropped, "reasons": result.reasons, "all_established_s": result.all_up_s,
        "setup_p50_ms": 1000 * median(result.setups_s), "setup_p95_ms": 1000 * percentile(result.setups_s, 95),
        "setup_max_ms": 1000 * max(result.setups_s, default=math.nan),
        "cpu_percent": w.cpu if w else {}, "machine_cpu_percent": w.machine if w else None,
        "per_call_cpu_percent": {g: result.per_call(g, idle) for g in GROUPS} if result.mode != "idle" else {},
        "busiest_threads": {g: [{"name": n, "percent": p} for n, p in top] for g, top in w.top_threads.items()}
        if w else {},
        "rss_mb": w.rss_mb if w else {}, "chromium_cpu_percent_by_process": w.parts if w else {},
        "window_s": w.seconds if w else None,
        "echoed_received": result.received, "echoed_lost": result.lost, "sent": result.sent,
        "loss_percent": result.loss, "worst_call_loss_percent": result.worst_loss,
        "not_echoed_percent": result.shortfall, "calls_without_echo": result.silent,
        "calls_unmeasured": result.unmeasured, "browser_to_janus_lost": result.remote_lost,
        "max_jitter_ms": result.jitter_ms,
        "udp_drops": w.drops if w else {}, "udp_counters": w.udp if w else {}, "calls_up_at_sipp": result.sipp_up,
        "echo_hz": result.echo_hz, "hangup_s": result.hangup_s, "limited_by": limit(result, cores),
    }


def summary(idle: Round, rounds: list[Round], cores: int) -> str:
    top = max(r.calls for r in rounds)
    parts = [f"bridged calls to a sipp echo, steps {'/'.join(str(c) for c in sorted({r.calls for r in rounds}))}"
             f" (at {top}):"]
    at_top = {r.mode: r for r in rounds if r.calls == top}
    for mode in ("gateway", "janus"):
        r = at_top.get(mode)
        if r is None:
            continue
        janus = r.per_call(r.janus_group, idle)
        text = f"{mode} {r.established}/{r.calls} up in {fmt(r.all_up_s, '.1f')} s, Janus {janus:.2f} %/call"
        if mode == "gateway":
            text += f", gateway {r.per_call('gateway', idle):.3f} %/call ({r.cpu('gateway'):.1f} % in all)"
        chromium = r.per_call("chromium", idle)
        text += (f", load generator (Chromium) {chromium:.2f} %/call = {fmt(ratio(chromium, janus), '.1f')} x Janus's"
                 f", loss {fmt(r.loss)} % ({'under' if r.loss < 1 and r.shortfall < 1 else 'NOT under'} 1 %, "
                 f"{fmt(r.shortfall)} % not echoed, {r.silent} calls without echo), limited by: {limit(r, cores)};")
        parts.append(text)
    if "gateway" in at_top and "janus" in at_top:
        g, j = at_top["gateway"], at_top["janus"]
        parts.append(f"Janus per call with/without the gateway "
                     f"{fmt(100 * ratio(g.per_call('janus', idle), j.per_call('raw janus', idle)), '.0f')} %")
    return "SUMMARY " + " ".join(parts)


# ------------------------------------------------------------------------------------------------ main

def gateway_config(options: argparse.Namespace, accounts: int) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "WebServer": {"local_port": 10888},
        # one page places every call from 127.0.0.1 at once: lift the per-client limits
        "WebRTCGateway": {"outbound_sip_proxy": f"127.0.0.1:{KAMAILIO_PORT}",
                          "max_calls_per_account": options.per_account,
                          "max_accounts_per_connection": max(20, accounts), "max_connections_per_address": 1000,
                          "request_rate": 100000, "request_burst": 100000},
        "Janus": {"interface": "127.0.0.1", "instances": 1},
    }
    return apply_settings(config, options.set)


def wait_for_janus(janus: RawJanus, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(janus.url, subprotocols=["janus-protocol"], open_timeout=2) as ws:  # type: ignore[list-item]
                ws.send(json.dumps({"janus": "info", "transaction": "probe"}))
                json.loads(ws.recv(timeout=2))
                return
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the raw Janus did not answer on {janus.url} within {timeout} s") from None
            time.sleep(0.2)


def open_page(stack: contextlib.ExitStack, workdir: Path, gateway: Gateway | None, raw: RawJanus | None,
              kamailio: Kamailio, users: list[str], parsed: Config) -> tuple[Browser, BrowserPage]:
    """Chromium with the page of calls, its microphone open and a connection to each mode's side."""
    files: dict[str, str | bytes] = {"/index.html": (PAGE / "index.html").read_bytes(),
                                     "/calls.js": (PAGE / "calls.js").read_bytes(), "/sylkrtc.js": LIBRARY.read_bytes()}
    server = stack.enter_context(StaticServer(files))
    tone = write_tone(workdir / "tone.wav", TONE_HZ, seconds=30, rate=48000)
    chromium = stack.enter_context(Browser(workdir / "chromium", fake_audio=tone, timeout=30))
    page = chromium.page(server.url("/index.html"))
    page.wait_for("window.bench", 10, "the page's script")
    page.evaluate("bench.init()")
    accounts = [{"account": f"{user}@{DOMAIN}", "ha1": kamailio.ha1(user)} for user in users]
    target = f"{ECHO}@{DOMAIN}"
    if gateway is not None:
        page.evaluate("([mode, o]) => bench.open(mode, o)",
                      ["gateway", {"url": gateway.url, "accounts": accounts, "target": target}])
    if raw is not None:
        route = parsed.gateway.outbound_sip_proxy
        assert route is not None  # set by gateway_config
        page.evaluate("([mode, o]) => bench.open(mode, o)",
                      ["janus", {"url": raw.url, "secret": raw.secret, "accounts": accounts, "proxy": sip_uri(route),
                                 "target": target}])
    log(f"chromium {chromium.version}: page ready ({len(chromium.pids())} processes)")
    return chromium, page


def parse_steps(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if len(values) == 1:
        top = values[0]
        values = sorted({max(1, top // 4), max(1, top // 2), top})
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def start_echo(stack: contextlib.ExitStack, workdir: Path) -> tuple[Sipp, Path]:
    """sipp registered as echo@sylk.test, answering every call and echoing its RTP; and its statistics file."""
    register(workdir / "sipp", ECHO, f"pw-{ECHO}", SIPP_PORT)
    stat_file = workdir / "sipp" / "echo-stat.csv"
    sipp = Sipp(workdir / "sipp", "uas_answer.xml", SIPP_PORT, ECHO, calls=None, timeout=MAX_RUN_S + 60, trace=False)
    sipp.command += ["-rtp_echo", "-trace_stat", "-stf", str(stat_file), "-fd", "1"]
    # One socket takes every call's RTP (5,000 packets/s at 100 calls): with the default 208 KB it overflows after
    # ~40 ms without being scheduled, so on a busy machine the far end would be what loses packets. sipp sets no
    # size on its echo socket (-rtp_buffsize is for its RTP streams), and net.core.rmem_default is read-only in a
    # network namespace: set it on the socket itself, through a copy of sipp's descriptor.
    stack.enter_context(sipp)
    assert sipp.process is not None
    granted = enlarge_receive_buffer(sipp.process.pid, ECHO_RTP_PORT, ECHO_BUFFER, timeout=10)
    log(f"sipp: echoing RTP on port {ECHO_RTP_PORT} with a {granted // 1024} KB receive buffer")
    return sipp, stat_file


def enlarge_receive_buffer(pid: int, port: int, size: int, timeout: float) -> int:
    """SO_RCVBUFFORCE `size` on the UDP socket that process `pid` binds to `port` (once it has, within `timeout`
    seconds), through pidfd_getfd(); the size the kernel granted."""
    deadline = time.monotonic() + timeout
    while (inode := _udp_inode(port)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on UDP port {port} after {timeout:g} s")
        time.sleep(0.05)
    fd = next(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]")
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as sock:  # closing the copy leaves sipp's descriptor open
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _udp_inode(port: int) -> int | None:
    for line in Path("/proc/thread-self/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            return int(fields[9])
    return None


def run(options: argparse.Namespace, steps: list[int], modes: list[str], workdir: Path,
        config: dict[str, dict[str, Any]], parsed: Config, users: list[str]) -> tuple[Round, list[Round],
                                                                                     dict[str, dict[str, int]]]:
    """Every part started in a namespace of its own, the warm-up, the idle window and the rounds; then the
    warnings and errors of the gateway's and the raw Janus's logs."""
    rounds: list[Round] = []
    problems: dict[str, dict[str, int]] = {}
    with network_namespace(), contextlib.ExitStack() as stack:
        Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(EPHEMERAL_PORTS)  # this namespace's only
        kamailio = stack.enter_context(Kamailio(workdir / "kamailio", port=KAMAILIO_PORT, domain=DOMAIN,
                                                users={**{u: f"pw-{u}" for u in users}, ECHO: f"pw-{ECHO}"}))
        sipp, stat_file = start_echo(stack, workdir)
        gateway = raw = None
        if "gateway" in modes:
            (workdir / "gateway").mkdir(exist_ok=True)
            gateway = stack.enter_context(Gateway(workdir / "gateway", config, port=config["WebServer"]["local_port"]))
            log(f"gateway: started (Janus {current_janus_pids(gateway)})")
        if "janus" in modes:
            (workdir / "janus").mkdir(exist_ok=True)
            raw = stack.enter_context(RawJanus(workdir / "janus", parsed))
            wait_for_janus(raw)
            log(f"raw janus: started (pid {raw.pid})")
        chromium, page = open_page(stack, workdir, gateway, raw, kamailio, users, parsed)
        processes = Processes(gateway, raw, sipp, kamailio, chromium)
        warm_up(page, modes)
        idle = idle_round(processes, min(5.0, options.hold))
        for index, calls in enumerate(steps):
            for mode in (modes if index % 2 == 0 else modes[::-1]):
                rounds.append(run_round(page, processes, mode, calls, options, stat_file))
        deadline = time.monotonic() + 3  # sipp writes its statistics every second
        while (far_end := sipp_calls(stat_file)) is not None and far_end[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        if far_end is not None:
            log(f"sipp: {far_end[1]} calls completed, {far_end[2]} failed, {far_end[0]} still up")
        stack.close()  # stop everything before reading the logs
        if gateway is not None:
            problems["gateway"] = log_digest(gateway.log())[1]
        if raw is not None:
            problems["raw janus"] = log_digest(raw.log_path.read_text(errors="replace"))[1]
    return idle, rounds, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", "-n", default="100",
                        help="concurrent calls: N (steps N/4, N/2, N) or a list such as 25,50,100 (default 100)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds measured at each step (default 10)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between the last call established and the measurement (default 2)")
    parser.add_argument("--per-account", type=int, default=25,
                        help="calls per account, the gateway's max_calls_per_account, 1-32 (default 25)")
    add_common_options(parser, "bridged")
    options = parser.parse_args()
    try:
        steps = parse_steps(options.calls)
    except ValueError:
        parser.error(f"--calls wants N or a list like 25,50,100, not {options.calls!r}")
    if not 1 <= options.per_account <= 32:
        parser.error("--per-account must be 1-32 (the gateway's max_calls_per_account)")
    modes = ["gateway", "janus"] if options.mode == "both" else [options.mode]
    planned = 30 + len(steps) * len(modes) * (options.hold + options.settle + 8) + max(steps) * 0.2 * len(modes)
    if planned > MAX_RUN_S:
        parser.error(f"this run would take about {planned:.0f} s; at most {MAX_RUN_S} s (the echo's registration "
                     f"lasts 600 s): fewer steps or a shorter --hold")
    if not LIBRARY.exists():
        raise SystemExit(f"{LIBRARY} is missing: run `make js` first")
    require_root("bench/bridged.py")
    install_signal_handlers()

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    accounts = math.ceil(max(steps) / options.per_account)
    users = [f"user{i:04d}" for i in range(1, accounts + 1)]
    config = gateway_config(options, accounts)
    raw_config = {section: dict(values) for section, values in config.items()}
    raw_config["Janus"].update(RAW_PORT_RANGES)
    parsed = parse_config(ini_text(raw_config))
    cores = os.cpu_count() or 1
    log(f"steps {steps} calls, modes {modes}, {accounts} accounts of up to {options.per_account} calls, hold "
        f"{options.hold:g} s; logs in {workdir}")

    started = time.monotonic()
    try:
        idle, rounds, problems = run(options, steps, modes, workdir, config, parsed, list(users))
    except KeyboardInterrupt as interrupted:
        log(f"interrupted ({str(interrupted) or 'Ctrl-C'}); everything was stopped. Logs: {workdir}")
        return 130
    table(idle, rounds)
    print()
    for r in rounds:
        print(f"limited by, {r.mode} {r.calls}: {limit(r, cores)}")
    for source, found in problems.items():
        for what, count in sorted(found.items(), key=lambda item: -item[1])[:8]:
            print(f"log ({source}): {count:4d} x {what}")
    print()
    line = summary(idle, rounds, cores)
    print(line)
    path = write_results("bridged", {"summary": line, "options": {k: str(v) for k, v in vars(options).items()},
                                     "steps": steps, "accounts": accounts, "run_s": time.monotonic() - started,
                                     "idle": figures(idle, idle, cores),
                                     "rounds": [figures(r, idle, cores) for r in rounds],
                                     "log_problems": problems}, options.json)
    print(f"(run {time.monotonic() - started:.0f} s; logs: {workdir}; figures: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
