#!/usr/bin/env python3
"""How many sylkRTC connections the gateway holds at once, what each costs it, and whether closing them gives
everything back; next to the same number of sessions made straight on the raw Janus it runs on.

    sudo .venv/bin/python bench/connections.py [--connections N] [--batch B] [--rounds R]
                                               [--mode both|gateway|janus] [--set Section.option=value ...]

Everything runs inside a fresh loopback-only network namespace (tests/integration/netns.py); no SIP is involved.

1. gateway: `twistd sylkgateway` with its own Janus pool (tests/integration/gateway.py; one member unless --set
   Janus.instances=...), its per-address connection cap and request rate lifted, Janus's Admin API on. N sylkRTC-1
   WebSocket connections are opened in batches of B (each batch at once, the next once each of them has its
   `ready` event or has failed), from several loopback source addresses (127.R.x.y: a fresh set per round, so
   neither ephemeral ports nor the TIME_WAIT of an earlier round get in the way). Measured: time from connect()
   to `ready` per connection (p50/p99/max), connections per second (first connect to last `ready`), connection
   attempts the kernel dropped at the gateway's full listen queue (TcpExt ListenDrops in the namespace; each costs
   its client a one-second SYN retransmission) and that queue's size (`ss -l`), RSS/fds/threads/CPU of the
   gateway and of its Janus pool (/proc, summed over the members) before and after, so KiB per connection for
   each, the gateway's and Janus's share of a core while opening, how busy the machine was (/proc/stat) and how
   much of that was other processes (other benchmarks on the same cores), what limited the time to ready (the
   listen queue, a CPU, the machine, else the round trips of the batches), and Janus sessions (Admin API
   `list_sessions`). Then every connection sends its close frame at once;
   measured: time until the gateway closed every socket, and until its fds and Janus's sessions are back where
   they were (a connection that never got `ready`, or anything not given back, is reported).
2. janus: the same number of sessions created with `create` on a Janus started as the gateway starts its own (its
   launcher, the config render_janus_config makes from the same settings, its API on a TCP port), over one
   WebSocket as the gateway does, in the same batches: time per `create` (p50/p99), creates per second, Janus's
   RSS before/after (KiB per session); then `destroy` for all, at once.
With --rounds R > 1 (default 2) the two alternate (gateway, janus, gateway, ...) on the same processes. Python
(and glibc) keep what they freed rather than give it back to the system, so RSS does not fall back after closing;
a leak shows instead as RSS that grows from round to round (the later rounds' KiB figure is that growth).

The load generator is a deliberately small WebSocket client (asyncio Protocol, a fixed handshake key, frames masked
with the all-zero key, which RFC 6455 allows and which saves the client the XOR; the gateway still unmasks every
frame as for a browser), so that one client process costs a fraction of what it measures; its CPU is reported.
The benchmark raises its own RLIMIT_NOFILE to the hard limit before starting the gateway, which inherits it.
Every wait is bounded; the gateway, Janus and the namespace are stopped on errors, Ctrl-C and SIGTERM. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ProcInfo, RawJanus, add_common_options, apply_settings, current_janus_pids,  # noqa: E402
                    gateway_and_raw_janus, install_signal_handlers, log, median, ms, percentile, proc_info,
                    procs_info, require_root, write_results)
from registrations import log_digest  # noqa: E402

from tests.integration.gateway import Gateway  # noqa: E402
from tests.integration.janus_admin import JanusAdmin  # noqa: E402
from tests.integration.netns import network_namespace  # noqa: E402

GATEWAY_PORT = 10888
# Connections per source address: well under the 28,232 ephemeral ports of the default range.
PER_SOURCE_ADDRESS = 10000
OPEN_TIMEOUT = 30.0  # for one connection to get `ready` (one session to be created)
SETTLE_TIMEOUT = 60.0  # for the gateway (or Janus) to give back what a closed round held
CORES = os.cpu_count() or 1
OTHERS_BUSY = 0.25  # cores' worth of CPU used by other processes that makes a round's figures suspect


# ------------------------------------------------------------------------------------------------ a light client

_KEY = base64.b64encode(b"sylkgateway-benc").decode()  # 16 bytes; the server does not care that it repeats
_ACCEPT = base64.b64encode(hashlib.sha1((_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final client frame, masked with the all-zero key (the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class HandshakeRefused(Exception):
    pass


class LightSocket(asyncio.Protocol):
    """A WebSocket client as cheap as it gets: text frames go to `on_text(now, payload)` (one clock reading per
    read), what it sends meanwhile goes out in one write after the read, pings are answered, and a close frame is
    answered and recorded. For load generation only."""

    def __init__(self, host: str, path: str, subprotocol: str,
                 on_text: Callable[[float, bytes], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.handshake = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
                          f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n").encode()
        self.on_text = on_text
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self._closing = False
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._corked: list[bytes] | None = None  # frames sent while a read is being handled

    @classmethod
    async def connect(cls, host: str, port: int, path: str, subprotocol: str, local_address: str | None = None,
                      on_text: Callable[[float, bytes], None] | None = None) -> LightSocket:
        loop = asyncio.get_running_loop()
        socket = cls(f"{host}:{port}", path, subprotocol, on_text)
        await loop.create_connection(lambda: socket, host, port,
                                     local_addr=(local_address, 0) if local_address else None)
        await socket.upgraded
        return socket

    def send(self, payload: bytes) -> None:
        self._write(client_frame(payload))

    def _write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; `lost` fires when the server has closed the TCP connection."""
        if self.transport is not None and not self._closing and not self.lost.done():
            self._closing = True
            self._write(client_frame(code.to_bytes(2, "big"), opcode=8))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.handshake)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self.upgraded.done():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            del self._buffer[:end + 4]
            status = head[9:12]
            if status != b"101" or _ACCEPT not in head:
                status_line = head.partition(b"\r\n")[0].decode(errors="replace")
                self.upgraded.set_exception(HandshakeRefused(status_line))
                self.abort()
                return
            self.upgraded.set_result(None)
        self._corked = []
        try:
            self._frames(time.monotonic())
        finally:
            corked, self._corked = self._corked, None
            if corked and self.transport is not None:
                self.transport.write(b"".join(corked))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake ({exc})"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _frames(self, now: float) -> None:
        buffer, pos, size = self._buffer, 0, len(self._buffer)
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            n, start = second & 0x7F, pos + 2
            if n == 126:
                if size - start < 2:
                    break
                n, start = int.from_bytes(buffer[start:start + 2], "big"), start + 2
            elif n == 127:
                if size - start < 8:
                    break
                n, start = int.from_bytes(buffer[start:start + 8], "big"), start + 8
            if second & 0x80:  # a server never masks its frames
                self.abort()
                return
            if size - start < n:
                break
            payload, pos = bytes(buffer[start:start + n]), start + n
            self._frame(first & 0x80, first & 0x0F, payload, now)
        del buffer[:pos]

    def _frame(self, final: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode in (0, 1, 2):
            self._fragments.append(payload)
            if final:
                message = b"".join(self._fragments)
                self._fragments.clear()
                if self.on_text is not None:
                    self.on_text(now, message)
        elif opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self._closing:
                self._closing = True
                self._write(client_frame(payload[:2], opcode=8))
        elif opcode == 9:
            self._write(client_frame(payload, opcode=10))


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(since: tuple[int, int], until: tuple[int, int]) -> float:
    """How busy the machine's cores were between two cpu_ticks() (every process, ours and others')."""
    return (until[0] - since[0]) / max(1, until[1] - since[1])


def listen_drops() -> int:
    """Connections the kernel dropped in this namespace because a listen queue was full (TcpExt ListenDrops): each
    costs its client a SYN retransmission, one second at first."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:])))["ListenDrops"]
    return 0


def listen_backlog(port: int) -> int | None:
    """The accept queue length of the socket listening on `port` (its Send-Q in `ss -l`)."""
    output = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    fields = output.split()
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None


def source_addresses(round_index: int, count: int) -> list[str]:
    """Loopback source addresses of their own for each round (all of 127.0.0.0/8 is loopback)."""
    return [f"127.{round_index + 1}.{i // 250}.{i % 250 + 1}" for i in range(max(1, count))]


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the gateway it starts (which inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------------------------------ results

@dataclass
class Result:
    mode: str
    round: int
    n: int
    ready_s: list[float] = field(default_factory=list)  # connect -> ready (create -> success), seconds
    failures: dict[str, int] = field(default_factory=dict)
    open_span_s: float = math.nan  # first connect -> last ready
    close_span_s: float = math.nan  # first close frame -> every socket closed (every destroy answered)
    settle_s: float = math.nan  # first close frame -> fds and Janus sessions back (NaN: never within the bound)
    main_before: ProcInfo = field(default_factory=ProcInfo)  # the gateway (gateway mode)
    main_open: ProcInfo = field(default_factory=ProcInfo)
    main_closed: ProcInfo = field(default_factory=ProcInfo)
    janus_before: ProcInfo = field(default_factory=ProcInfo)
    janus_open: ProcInfo = field(default_factory=ProcInfo)
    janus_closed: ProcInfo = field(default_factory=ProcInfo)
    sessions_open: int | None = None  # Janus sessions held once every connection was ready (Admin API)
    janus_restarts: int = 0  # Janus members the gateway started again during the round (it died or was killed)
    sessions_closed: int | None = None
    client_cpu_open_s: float = 0.0
    listen_drops: int = 0  # SYNs dropped at the gateway's full listen queue while opening
    main_ready: ProcInfo = field(default_factory=ProcInfo)  # the gateway as the last connection got ready
    janus_ready: ProcInfo = field(default_factory=ProcInfo)  # its Janus (or the raw one) then
    machine_busy: float = math.nan  # share of the machine's cores busy while opening (every process)
    # the first round of the same mode, for a later one: what it holds open is compared with what that one held, so
    # that memory a round kept after closing (a leak) shows as growth
    first: Result | None = None
    close_codes: dict[str, int] = field(default_factory=dict)  # how the sockets were closed, as the client saw it
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> int:
        return len(self.ready_s)

    @property
    def rate(self) -> float:
        return self.ready / self.open_span_s if self.open_span_s > 0 else math.nan

    def kib_each(self, before: ProcInfo, after: ProcInfo) -> float:
        return (after.rss_kb - before.rss_kb) / self.ready if self.ready else math.nan

    @property
    def gateway_kib(self) -> float:
        """RSS per connection held: from before the round (the first one), or growth since the first round's."""
        return self.kib_each(self.first.main_open if self.first else self.main_before, self.main_open)

    @property
    def janus_kib(self) -> float:
        return self.kib_each(self.first.janus_open if self.first else self.janus_before, self.janus_open)

    def kib_text(self, kib: float) -> str:
        return f"{kib:.1f}" if self.first is None else f"{kib:+.1f} vs #{self.first.round}"

    def cpu_ms_each(self, before: ProcInfo, after: ProcInfo) -> float:
        return (after.cpu_s - before.cpu_s) * 1000 / self.ready if self.ready else math.nan

    def cpu_share(self, before: ProcInfo, after: ProcInfo) -> float:
        """The share of a core a process used while the connections were being opened."""
        return (after.cpu_s - before.cpu_s) / self.open_span_s if self.open_span_s > 0 else math.nan

    @property
    def others_share(self) -> float:
        """Cores' worth of CPU that processes other than ours (the gateway, Janus, this client) used while opening:
        other benchmarks or builds on the same machine."""
        ours = (self.cpu_share(self.main_before, self.main_ready) + self.cpu_share(self.janus_before, self.janus_ready)
                + self.client_cpu_open_s / self.open_span_s)
        return max(0.0, self.machine_busy * CORES - ours)

    @property
    def limit(self) -> str:
        """What held the time to ready down."""
        server = (self.cpu_share(self.main_before, self.main_ready) if self.mode == "gateway"
                  else self.cpu_share(self.janus_before, self.janus_ready))
        if self.listen_drops:
            return "listen queue"  # a dropped SYN is sent again after 1 s, then 3 s: that is the tail
        if server >= 0.85:
            return f"{self.mode} CPU"
        if self.client_cpu_open_s / self.open_span_s >= 0.85:
            return "client CPU"
        if self.machine_busy >= 0.7:
            return "machine busy (others)" if self.others_share >= OTHERS_BUSY else "machine CPU"
        return "round trips (batches)"


def count(table: dict[str, int], what: str) -> None:
    table[what] = table.get(what, 0) + 1


def failure_name(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return f"no ready within {OPEN_TIMEOUT:g} s"
    return f"{type(error).__name__}: {error}"[:120]


# ------------------------------------------------------------------------------------------------ gateway mode

def admin_sessions(runtime_dir: Path) -> int | None:
    """Sessions in every member of the gateway's pool (Admin API); None if one could not be asked."""
    total = 0
    for folder in sorted(runtime_dir.glob("janus*")):
        try:
            total += len(JanusAdmin(runtime_dir, folder.name).sessions())
        except Exception:  # noqa: BLE001 (a member restarting, a socket not there: the figure is unknown)
            return None
    return total


async def gateway_round(gateway: Gateway, runtime_dir: Path, n: int, batch: int, round_index: int) -> Result:
    result = Result("gateway", round_index, n)
    pid = gateway.process.pid if gateway.process else None
    janus_pids = current_janus_pids(gateway)
    result.main_before, result.janus_before = proc_info(pid), procs_info(janus_pids)
    addresses = source_addresses(round_index, math.ceil(n / PER_SOURCE_ADDRESS))
    sockets: list[LightSocket] = []

    async def open_one(index: int) -> None:
        start = time.monotonic()
        ready: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def on_text(now: float, payload: bytes) -> None:
            if not ready.done():
                if b'"ready"' in payload:
                    ready.set_result(now)
                else:
                    ready.set_exception(RuntimeError(f"first message not ready: {payload[:80]!r}"))
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                socket = await LightSocket.connect("127.0.0.1", gateway.port, "/webrtcgateway/ws", "sylkRTC-1",
                                                   addresses[index % len(addresses)], on_text)
                sockets.append(socket)
                either: list[asyncio.Future[Any]] = [ready, socket.lost]
                done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if ready not in done:
                    ready.cancel()
                    raise ConnectionError(f"closed before ready (code {socket.close_code})")
                result.ready_s.append(ready.result() - start)
        except (Exception, asyncio.TimeoutError) as e:  # noqa: BLE001 (every kind of failure is counted)
            count(result.failures, failure_name(e))

    log(f"gateway round {round_index}: opening {n} connections in batches of {batch} from "
        f"{len(addresses)} source address(es)")
    drops0, ticks0, cpu0, start = listen_drops(), cpu_ticks(), time.process_time(), time.monotonic()
    last_ready = start
    for first in range(0, n, batch):
        await asyncio.gather(*(open_one(i) for i in range(first, min(n, first + batch))))
        last_ready = time.monotonic()
    result.main_ready, result.janus_ready = proc_info(pid), procs_info(janus_pids)
    result.machine_busy = busy_share(ticks0, cpu_ticks())
    result.client_cpu_open_s = time.process_time() - cpu0
    result.listen_drops = listen_drops() - drops0
    result.open_span_s = last_ready - start
    log(f"gateway round {round_index}: {result.ready}/{n} ready in {result.open_span_s:.1f} s "
        f"({sum(result.failures.values())} failed; {result.listen_drops} SYNs dropped at the listen queue)")
    await asyncio.sleep(1.0)  # let the last answers and log lines go out before the snapshot
    result.main_open, result.janus_open = proc_info(pid), procs_info(janus_pids)
    result.sessions_open = await asyncio.to_thread(admin_sessions, runtime_dir)

    log(f"gateway round {round_index}: closing {len(sockets)} connections at once")
    close_start = time.monotonic()
    for socket in sockets:
        socket.close()
    await asyncio.wait([s.lost for s in sockets], timeout=SETTLE_TIMEOUT)
    result.close_span_s = time.monotonic() - close_start
    for socket in sockets:
        if not socket.lost.done():
            count(result.close_codes, "not closed by the gateway")
            socket.abort()
        else:
            count(result.close_codes, str(socket.close_code))
    result.settle_s = await settle(lambda: proc_info(pid).fds <= result.main_before.fds
                                   and admin_sessions(runtime_dir) == 0, close_start)
    await asyncio.sleep(0.5)
    # a member started again (killed as stalled, or crashed) is measured as it is now, and the round says so
    result.janus_restarts = len(set(current_janus_pids(gateway)) - set(janus_pids))
    result.main_closed, result.janus_closed = proc_info(pid), procs_info(current_janus_pids(gateway))
    result.sessions_closed = await asyncio.to_thread(admin_sessions, runtime_dir)
    return result


async def settle(done: Callable[[], bool], since: float) -> float:
    """Seconds from `since` until `done()` (polled off the event loop), NaN if not within SETTLE_TIMEOUT."""
    while time.monotonic() - since < SETTLE_TIMEOUT:
        if await asyncio.to_thread(done):
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return math.nan


# ------------------------------------------------------------------------------------------------ raw Janus mode

class JanusLine:
    """Requests to Janus over one LightSocket, matched by transaction."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.serial = 0
        self.pending: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.socket: LightSocket | None = None

    async def open(self, port: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.socket = await LightSocket.connect("127.0.0.1", port, "/", "janus-protocol",
                                                        on_text=self.on_text)
                return
            except (OSError, HandshakeRefused):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Janus did not answer on port {port} within {timeout} s") from None
                await asyncio.sleep(0.1)

    def on_text(self, now: float, payload: bytes) -> None:
        message = json.loads(payload)
        if message.get("janus") in ("success", "error"):
            future = self.pending.pop(message.get("transaction"), None)
            if future is not None and not future.done():
                future.set_result((now, message))

    def send(self, payload: dict[str, Any]) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        """Send a request; the future gets (when its answer came, the answer)."""
        assert self.socket is not None
        self.serial += 1
        transaction = f"r{self.serial}"
        future = self.pending[transaction] = asyncio.get_running_loop().create_future()
        message = {**payload, "transaction": transaction, "apisecret": self.secret}
        self.socket.send(json.dumps(message, separators=(",", ":")).encode())
        return future


async def janus_round(janus: RawJanus, n: int, batch: int, round_index: int) -> Result:
    result = Result("janus", round_index, n)
    line = JanusLine(janus.secret)
    await line.open(janus.port)
    result.janus_before = proc_info(janus.pid)
    session_ids: list[int] = []

    async def create() -> None:
        start = time.monotonic()
        try:
            at, answer = await asyncio.wait_for(line.send({"janus": "create"}), OPEN_TIMEOUT)
        except asyncio.TimeoutError as e:
            count(result.failures, failure_name(e))
            return
        if answer.get("janus") != "success":
            count(result.failures, f"Janus error: {answer.get('error')}")
            return
        session_ids.append(answer["data"]["id"])
        result.ready_s.append(at - start)

    async def keep_alive() -> None:  # session_timeout = 60 in the generated config
        while True:
            await asyncio.sleep(20)
            for sid in list(session_ids):
                line.send({"janus": "keepalive", "session_id": sid})

    log(f"janus round {round_index}: creating {n} sessions in batches of {batch} over one WebSocket")
    keepalive = asyncio.create_task(keep_alive())
    try:
        ticks0, cpu0, start = cpu_ticks(), time.process_time(), time.monotonic()
        for first in range(0, n, batch):
            await asyncio.gather(*(create() for _ in range(first, min(n, first + batch))))
        result.open_span_s = time.monotonic() - start
        result.janus_ready = proc_info(janus.pid)
        result.machine_busy = busy_share(ticks0, cpu_ticks())
        result.client_cpu_open_s = time.process_time() - cpu0
        log(f"janus round {round_index}: {result.ready}/{n} sessions in {result.open_span_s:.1f} s")
        await asyncio.sleep(1.0)
        result.janus_open = proc_info(janus.pid)
        result.sessions_open = len(session_ids)

        keepalive.cancel()
        close_start = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(
            *(line.send({"janus": "destroy", "session_id": sid}) for sid in session_ids)), SETTLE_TIMEOUT)
        result.close_span_s = time.monotonic() - close_start
        refused = sum(1 for _, answer in answers if answer.get("janus") != "success")
        result.sessions_closed = refused
        result.settle_s = result.close_span_s
        await asyncio.sleep(0.5)
        result.janus_closed = proc_info(janus.pid)
    finally:
        keepalive.cancel()
        if line.socket is not None:
            line.socket.abort()
    return result


# ------------------------------------------------------------------------------------------------ the report

def report(result: Result) -> None:
    what = "connections" if result.mode == "gateway" else "sessions"
    print(f"--- {result.mode} round {result.round}: {result.ready}/{result.n} {what} in {result.open_span_s:.2f} s "
          f"= {result.rate:.0f}/s; to ready p50 {ms(percentile(result.ready_s, 50))} ms, "
          f"p99 {ms(percentile(result.ready_s, 99))} ms, max {ms(max(result.ready_s, default=math.nan))} ms")
    if result.failures:
        print(f"  failed: {dict(sorted(result.failures.items(), key=lambda item: -item[1]))}")
    if result.mode == "gateway":
        print(f"  gateway before: {result.main_before}")
        print(f"  gateway open:   {result.main_open}")
        print(f"  gateway closed: {result.main_closed}")
    print(f"  janus before:   {result.janus_before}")
    print(f"  janus open:     {result.janus_open}")
    print(f"  janus closed:   {result.janus_closed}")
    if result.janus_restarts:
        print(f"  JANUS WAS STARTED AGAIN during the round ({result.janus_restarts} member(s)): see the log lines")
    print(f"  Janus sessions open/closed: {result.sessions_open}/{result.sessions_closed}; closed in "
          f"{result.close_span_s:.2f} s, everything back after {result.settle_s:.2f} s; close codes "
          f"{result.close_codes or '-'}; client CPU to open {result.client_cpu_open_s:.2f} s")
    for what, times in sorted(result.problems.items(), key=lambda item: -item[1])[:8]:
        print(f"  log: {times:5d} x {what}")


def table(results: list[Result]) -> None:
    def mb(info: ProcInfo) -> str:
        return f"{info.rss_kb / 1024:.1f}"

    gateway_only: Callable[[Result, Callable[[Result], str]], str] = \
        lambda r, cell: cell(r) if r.mode == "gateway" else "-"
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("ready / asked", lambda r: f"{r.ready}/{r.n}"),
        ("opened per s", lambda r: f"{r.rate:.0f}"),
        ("to ready p50 ms", lambda r: ms(percentile(r.ready_s, 50))),
        ("to ready p99 ms", lambda r: ms(percentile(r.ready_s, 99))),
        ("to ready max ms", lambda r: ms(max(r.ready_s, default=math.nan))),
        ("SYNs dropped at listen queue", lambda r: gateway_only(r, lambda r: str(r.listen_drops))),
        ("gateway RSS MB before/open/closed",
         lambda r: gateway_only(r, lambda r: f"{mb(r.main_before)}/{mb(r.main_open)}/{mb(r.main_closed)}")),
        ("gateway KiB per connection*", lambda r: gateway_only(r, lambda r: r.kib_text(r.gateway_kib))),
        ("gateway fds before/open/closed",
         lambda r: gateway_only(r, lambda r: f"{r.main_before.fds}/{r.main_open.fds}/{r.main_closed.fds}")),
        ("gateway CPU % of a core opening",
         lambda r: gateway_only(r, lambda r: f"{r.cpu_share(r.main_before, r.main_ready):.0%}")),
        ("janus CPU % of a core opening", lambda r: f"{r.cpu_share(r.janus_before, r.janus_ready):.0%}"),
        (f"machine busy % of {CORES} cores opening", lambda r: f"{r.machine_busy:.0%}"),
        ("other processes % of a core", lambda r: f"{r.others_share:.0%}"),
        ("time to ready limited by", lambda r: r.limit),
        ("gateway CPU ms per open",
         lambda r: gateway_only(r, lambda r: f"{r.cpu_ms_each(r.main_before, r.main_open):.2f}")),
        ("gateway CPU ms per close",
         lambda r: gateway_only(r, lambda r: f"{r.cpu_ms_each(r.main_open, r.main_closed):.2f}")),
        ("janus RSS MB before/open/closed",
         lambda r: f"{mb(r.janus_before)}/{mb(r.janus_open)}/{mb(r.janus_closed)}"),
        ("janus KiB per session*", lambda r: r.kib_text(r.janus_kib)),
        ("janus CPU ms per session", lambda r: f"{r.cpu_ms_each(r.janus_before, r.janus_closed):.3f}"
         if not r.janus_restarts else "-"),
        ("janus restarted (died, or killed)", lambda r: gateway_only(r, lambda r: str(r.janus_restarts))),
        ("janus sessions open/closed", lambda r: f"{r.sessions_open}/{r.sessions_closed}"),
        ("closed in s / all back in s", lambda r: f"{r.close_span_s:.2f}/{r.settle_s:.2f}"),
        ("client CPU s to open", lambda r: f"{r.client_cpu_open_s:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'':<{width}}  " + "  ".join(f"{f'{r.mode} #{r.round}':>18}" for r in results))
    for name, cell in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(r):>18}" for r in results))
    print("* RSS with every connection open less RSS before, per connection; in later rounds, the growth of that RSS "
          "since the first round (memory a round kept, a leak, shows there)")


def figures(result: Result) -> dict[str, Any]:
    shown = {"mode": result.mode, "round": result.round, "asked": result.n, "ready": result.ready,
             "failures": result.failures, "opened_per_s": result.rate,
             "ready_p50_ms": percentile(result.ready_s, 50) * 1000,
             "ready_p99_ms": percentile(result.ready_s, 99) * 1000,
             "ready_max_ms": max(result.ready_s, default=math.nan) * 1000,
             "janus_cpu_share_opening": result.cpu_share(result.janus_before, result.janus_ready),
             "machine_busy_share_opening": result.machine_busy, "others_cpu_share_opening": result.others_share,
             "ready_limited_by": result.limit,
             "janus_rss_mb": [i.rss_kb / 1024 for i in (result.janus_before, result.janus_open, result.janus_closed)],
             "janus_kib_per_session": result.janus_kib if result.first is None else None,
             "janus_kib_growth_since_first_round": result.janus_kib if result.first else None,
             "janus_sessions": [result.sessions_open, result.sessions_closed],
             "close_s": result.close_span_s, "settle_s": result.settle_s,
             "client_cpu_open_s": result.client_cpu_open_s, "log_problems": result.problems}
    if result.mode == "gateway":
        shown.update({
            "listen_drops": result.listen_drops,
            "gateway_cpu_share_opening": result.cpu_share(result.main_before, result.main_ready),
            "gateway_rss_mb": [i.rss_kb / 1024 for i in (result.main_before, result.main_open, result.main_closed)],
            "gateway_fds": [i.fds for i in (result.main_before, result.main_open, result.main_closed)],
            "gateway_kib_per_connection": result.gateway_kib if result.first is None else None,
            "gateway_kib_growth_since_first_round": result.gateway_kib if result.first else None,
            "gateway_cpu_ms_per_open": result.cpu_ms_each(result.main_before, result.main_open),
            "gateway_cpu_ms_per_close": result.cpu_ms_each(result.main_open, result.main_closed),
            "janus_restarts": result.janus_restarts, "close_codes": result.close_codes})
    return shown


def summary(results: list[Result], n: int, backlog: int | None) -> str:
    parts = [f"{n} connections:"]
    for mode in ("gateway", "janus"):
        rounds = [r for r in results if r.mode == mode]
        if not rounds:
            continue
        first = rounds[0]
        limits = [r.limit for r in rounds]
        busy = sum(1 for r in rounds if r.others_share >= OTHERS_BUSY)
        parts.append(f"{mode} {sum(r.ready for r in rounds)}/{n * len(rounds)} ready, "
                     f"all in {median([r.open_span_s for r in rounds]):.1f} s "
                     f"= {median([r.rate for r in rounds]):.0f}/s, "
                     f"p50 {ms(median([percentile(r.ready_s, 50) for r in rounds]))} ms "
                     f"p99 {ms(median([percentile(r.ready_s, 99) for r in rounds]))} ms (median of {len(rounds)}), "
                     f"limited by {max(set(limits), key=limits.count)}"
                     + (f" (machine busy with other processes in {busy} round(s))," if busy else ","))
        if mode == "gateway":
            parts.append(f"{sum(r.listen_drops for r in rounds)} SYNs dropped (listen queue {backlog}),")
            parts.append(f"gateway {first.gateway_kib:.1f} KiB/connection, its Janus {first.janus_kib:.1f} KiB,")
            leaks = [r for r in rounds if r.sessions_closed != 0 or math.isnan(r.settle_s)]
            parts.append("fds and Janus sessions given back," if not leaks else
                         f"NOT given back in {len(leaks)} round(s),")
            restarts = sum(r.janus_restarts for r in rounds)
            if restarts:
                parts.append(f"JANUS RESTARTED {restarts} time(s) (see the log lines),")
            by_round = ", ".join(f"{r.main_open.rss_kb / 1024:.0f}/{r.main_closed.rss_kb / 1024:.0f}" for r in rounds)
            parts.append(f"gateway RSS open/closed by round {by_round} MB "
                         f"(from {first.main_before.rss_kb / 1024:.0f});")
        else:
            parts.append(f"Janus {first.janus_kib:.1f} KiB/session;")
    return "SUMMARY " + " ".join(parts)


# ------------------------------------------------------------------------------------------------ main

def gateway_config(options: argparse.Namespace, runtime_dir: Path) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "WebServer": {"local_port": GATEWAY_PORT},
        # every benchmark connection comes from a few loopback addresses, many at once: lift the per-client limits
        "WebRTCGateway": {"max_connections_per_address": 1000000, "request_rate": 100000, "request_burst": 1000000},
        "Janus": {"interface": "127.0.0.1", "admin_api": "yes", "runtime_dir": str(runtime_dir)},
    }
    return apply_settings(config, options.set)


async def run_rounds(options: argparse.Namespace, gateway: Gateway | None, runtime_dir: Path,
                     janus: RawJanus | None) -> list[Result]:
    results: list[Result] = []
    for index in range(1, options.rounds + 1):
        if gateway is not None:
            mark = len(gateway.log())
            results.append(await gateway_round(gateway, runtime_dir, options.connections, options.batch, index))
            results[-1].problems = log_digest(gateway.log()[mark:])[1]
            first = next(r for r in results if r.mode == "gateway")
            results[-1].first = first if first is not results[-1] else None
            report(results[-1])
        if janus is not None:
            mark = janus.log_path.stat().st_size
            results.append(await janus_round(janus, options.connections, options.batch, index))
            with open(janus.log_path, errors="replace") as text:
                text.seek(mark)
                results[-1].problems = log_digest(text.read())[1]
            first = next(r for r in results if r.mode == "janus")
            results[-1].first = first if first is not results[-1] else None
            report(results[-1])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-n", type=int, default=10000,
                        help="connections (and raw Janus sessions) held at once (default 10000)")
    parser.add_argument("--batch", "-b", type=int, default=200, help="opened at once (default 200)")
    parser.add_argument("--rounds", "-r", type=int, default=2, help="rounds of each mode, alternating (default 2)")
    add_common_options(parser, "connections")
    options = parser.parse_args()
    if options.connections < 1 or options.batch < 1 or options.rounds < 1:
        parser.error("--connections, --batch and --rounds must be at least 1")
    require_root("bench/connections.py")
    install_signal_handlers()
    limit = raise_open_files_limit()
    if options.connections + 200 > limit:
        parser.error(f"--connections {options.connections} needs more open files than the hard limit ({limit})")

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runtime_dir = workdir / "run"
    config = gateway_config(options, runtime_dir)
    log(f"{options.connections} connections in batches of {options.batch}, {options.rounds} round(s); open-files "
        f"limit {limit}; logs in {workdir}")

    results: list[Result] = []
    backlog: int | None = None
    try:
        with network_namespace(), \
                gateway_and_raw_janus(workdir, config, options.mode, GATEWAY_PORT) as (gateway, janus):
            if gateway is not None:
                backlog = listen_backlog(GATEWAY_PORT)
                log(f"gateway: its listen queue holds {backlog}")
            results = asyncio.run(run_rounds(options, gateway, runtime_dir, janus))
    except KeyboardInterrupt as interrupted:
        log(f"interrupted ({str(interrupted) or 'Ctrl-C'}); everything was stopped. Logs: {workdir}")
        return 130
    table(results)
    print()
    print(summary(results, options.connections, backlog))
    path = write_results("connections", {"options": {k: str(v) for k, v in vars(options).items()},
                                         "listen_backlog": backlog, "results": [figures(r) for r in results]},
                         options.json)
    print(f"(logs: {workdir}; figures: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
