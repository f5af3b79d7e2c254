"""What every benchmark in bench/ shares: measuring processes, the machine and versions, percentiles, JSON
results, a sylkRTC-1 client and a minimal raw Janus client (asyncio), and a Janus started as the gateway starts
its own. The real parts (network namespace, Kamailio, sipp, the gateway) come from tests/integration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.typing import Subprotocol  # noqa: E402

from sylk.gateway.config import Config, parse_config  # noqa: E402
from tests.integration.gateway import Gateway  # noqa: E402
from tests.integration.kamailio import Kamailio  # noqa: E402
from tests.integration.rawjanus import free_tcp_port, write_janus_config  # noqa: E402

DOMAIN = "sylk.test"
KAMAILIO_PORT = 5070
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = REPO / "bench" / "results"


# ------------------------------------------------------------------------------------------------ figures

def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def schedule(n: int, rate: float) -> list[float]:
    """Offsets (s) at which n requests are offered at `rate` per second (0: all at once)."""
    return [0.0] * n if rate <= 0 else [i / rate for i in range(n)]


async def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# ------------------------------------------------------------------------------------------------ processes

@dataclass
class ProcInfo:
    rss_kb: int = 0
    hwm_kb: int = 0
    threads: int = 0
    fds: int = 0
    cpu_s: float = 0.0

    def __str__(self) -> str:
        return (f"RSS {self.rss_kb / 1024:.1f} MB (peak {self.hwm_kb / 1024:.1f}), {self.threads} threads, "
                f"{self.fds} fds, CPU {self.cpu_s:.2f} s")

    def __add__(self, other: ProcInfo) -> ProcInfo:
        return ProcInfo(self.rss_kb + other.rss_kb, self.hwm_kb + other.hwm_kb, self.threads + other.threads,
                        self.fds + other.fds, self.cpu_s + other.cpu_s)


def proc_info(pid: int | None) -> ProcInfo:
    info = ProcInfo()
    if pid is None:
        return info
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                info.rss_kb = int(value.split()[0])
            elif key == "VmHWM":
                info.hwm_kb = int(value.split()[0])
            elif key == "Threads":
                info.threads = int(value)
        info.fds = len(os.listdir(f"/proc/{pid}/fd"))
        info.cpu_s = cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return info


def procs_info(pids: list[int]) -> ProcInfo:
    """The sum over several processes (a pool of Janus members)."""
    total = ProcInfo()
    for pid in pids:
        total = total + proc_info(pid)
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def group_cpu_seconds(pgid: int | None) -> float:
    """CPU time of every live process in a process group (Kamailio's main process and its workers)."""
    total = 0.0
    if pgid is None:
        return total
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass
    return total


def current_janus_pids(gateway: Gateway) -> list[int]:
    """The pid of each member of the gateway's Janus pool now (the latest start of each)."""
    latest: dict[str, int] = {}
    for pid, label in re.findall(r"Started Janus \(pid (\d+)\) with its API on \S+ \[(\w+)\]", gateway.log()):
        latest[label] = int(pid)
    return list(latest.values())


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt, so `with` blocks stop what they started."""
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)


def require_root(script: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"needs root (it runs in its own network namespace): sudo .venv/bin/python {script}")


# ------------------------------------------------------------------------------------------------ the report

def _version(command: list[str], pattern: str) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, output.stdout + output.stderr)
    return match.group(1) if match else "?"


def _package_version(name: str) -> str:
    return _version(["dpkg-query", "-W", "-f", "${Version}", name], r"(\S+)")


def machine() -> dict[str, Any]:
    """The machine and the versions a figure came from."""
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)",  # type: ignore[union-attr]
                        Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    import autobahn
    import twisted
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_mb": int(memory.group(1)) // 1024 if memory else None,
        "kernel": platform.release(), "python": platform.python_version(), "twisted": twisted.__version__,
        "autobahn": autobahn.__version__, "janus": _package_version("janus"),
        "sofia_sip": _package_version("libsofia-sip-ua0"), "kamailio": _package_version("kamailio"),
        "sipp": _package_version("sip-tester"), "chromium": _package_version("chromium"),
        "commit": _version(["git", "-C", str(REPO), "describe", "--always", "--dirty"], r"(\S+)"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_mb']} MB, Linux {info['kernel']}")
    print(f"versions: janus {info['janus']}, sofia-sip {info['sofia_sip']}, kamailio {info['kamailio']}, "
          f"sipp {info['sipp']}, python {info['python']}, twisted {info['twisted']}, autobahn {info['autobahn']}; "
          f"commit {info['commit']}")


def write_results(name: str, figures: dict[str, Any], path: Path | None = None) -> Path:
    """The run's figures as JSON (bench/results/<name>.json unless `path`), with the machine and versions."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(figures, default=str).replace("NaN", "null"))
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "figures": clean}, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ the parts

def ini_text(config: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{option} = {value}" for option, value in values.items()]
    return "\n".join(lines) + "\n"


def add_common_options(parser: argparse.ArgumentParser, name: str, *, mode: bool = True) -> None:
    """The options every benchmark takes: which sides (`mode`), extra settings, the work folder, the JSON file."""
    if mode:
        parser.add_argument("--mode", choices=("both", "gateway", "janus"), default="both")
    parser.add_argument("--set", action="append", default=[], metavar="Section.option=value",
                        help="extra gateway setting (also used for the raw Janus's generated config), repeatable")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"write the figures here (default: bench/results/{name}.json)")


@contextlib.contextmanager
def gateway_and_raw_janus(workdir: Path, config: dict[str, dict[str, Any]], mode: str,
                          port: int) -> Iterator[tuple[Gateway | None, "RawJanus | None"]]:
    """The gateway (mode both or gateway) and a raw Janus from the same settings (both or janus), each in its own
    folder under `workdir`: started, logged, and stopped on the way out."""
    gateway = Gateway(workdir / "gateway", config, port=port) if mode in ("both", "gateway") else None
    janus = RawJanus(workdir / "janus", parse_config(ini_text(config))) if mode in ("both", "janus") else None
    for part in (gateway, janus):
        if part is not None:
            part.workdir.mkdir(exist_ok=True)
    try:
        if gateway is not None:
            gateway.start()
            gateway_pid = gateway.process.pid if gateway.process else "?"
            log(f"gateway: started (pid {gateway_pid}, Janus pids {current_janus_pids(gateway)})")
        if janus is not None:
            janus.start()
            log(f"janus: started (pid {janus.pid})")
        yield gateway, janus
    finally:
        if gateway is not None:
            gateway.stop()
        if janus is not None:
            janus.stop()


def apply_settings(config: dict[str, dict[str, Any]], settings: list[str]) -> dict[str, dict[str, Any]]:
    """`--set Section.option=value` options, onto a gateway configuration."""
    for setting in settings:
        name, equals, value = setting.partition("=")
        section, _, option = name.partition(".")
        if not option or not equals:
            raise SystemExit(f"--set wants Section.option=value, not {setting!r}")
        config.setdefault(section, {})[option] = value
    return config


def kamailio_contacts(kamailio: Kamailio) -> int:
    """Bindings in Kamailio's location table right now (one RPC, whatever the number of users)."""
    result = kamailio._kamcmd("stats.get_statistics", "usrloc:", timeout=5)
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "usrloc:location_contacts":
            return int(value)
    raise RuntimeError(f"unexpected kamcmd output: {result.stdout!r} {result.stderr!r}")


async def poll_contacts(kamailio: Kamailio, until: Callable[[int], bool], timeout: float,
                        interval: float = 0.1) -> tuple[float, int]:
    """Poll Kamailio until `until(count)`; (seconds it took, last count). Gives up after `timeout` (then NaN)."""
    start = time.monotonic()
    while True:
        count = await asyncio.to_thread(kamailio_contacts, kamailio)
        elapsed = time.monotonic() - start
        if until(count):
            return elapsed, count
        if elapsed > timeout:
            return math.nan, count
        await asyncio.sleep(interval)


class Browser:
    """One sylkRTC-1 connection (asyncio): answers by transaction, registration outcomes by account, and every
    other message to `listeners` (with the time it arrived)."""

    def __init__(self, ws: ClientConnection, opened_at: float) -> None:
        self.ws = ws
        self.opened_at = opened_at
        self.ready_at: float | None = None
        self.ready = asyncio.Event()
        self.answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.final: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.listeners: list[Callable[[float, dict[str, Any]], None]] = []
        self.serial = itertools.count(1)
        self.closed: tuple[int | None, str | None] | None = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, timeout: float = 30) -> Browser:
        start = time.monotonic()
        ws = await connect(url, subprotocols=[Subprotocol("sylkRTC-1")], open_timeout=timeout, close_timeout=5,
                           ping_interval=None, max_size=None)
        browser = cls(ws, start)
        try:
            await asyncio.wait_for(browser.ready.wait(), timeout)
        except BaseException:
            browser.reader.cancel()
            await ws.close()
            raise
        return browser

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                now = time.monotonic()
                message = json.loads(frame)
                kind = message.get("sylkrtc")
                if kind in ("ack", "error"):
                    future = self.answers.pop(message.get("transaction"), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                if kind == "event" and message.get("event") == "ready":
                    self.ready_at = now
                    self.ready.set()
                elif kind == "account_event" and message.get("event") == "registration_state":
                    data = message["data"]
                    final = self.final.get(message["account"])
                    if data.get("state") in ("registered", "failed") and final is not None and not final.done():
                        final.set_result((now, data))
                for listener in self.listeners:
                    listener(now, message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = (self.ws.close_code, self.ws.close_reason)
            for future in self.answers.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"closed {self.closed}"))

    async def send(self, kind: str, **fields: Any) -> str:
        """Send a request without waiting for its answer; returns its transaction."""
        transaction = f"b{next(self.serial)}"
        self.answers[transaction] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"sylkrtc": kind, "transaction": transaction, **fields}))
        return transaction

    async def request(self, kind: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        transaction = await self.send(kind, **fields)
        return await asyncio.wait_for(self.answers[transaction], timeout)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


class RawJanus:
    """A Janus started as the gateway starts its own (the launcher, the config render_janus_config makes from the
    same settings), but with its API on a TCP port: for side-by-side runs with the gateway."""

    def __init__(self, workdir: Path, config: Config) -> None:
        self.workdir = workdir
        self.config = config
        self.port = free_tcp_port()
        self.secret = os.urandom(16).hex()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "janus.log"

    def start(self) -> None:
        folder = self.workdir / "janus-config"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_janus_config(self.config, folder, self.port, self.secret)
        janus = self.config.janus
        command = [sys.executable, "-m", "sylk.gateway.janus.launcher", "--max-open-files",
                   str(janus.max_open_files), "--", str(janus.binary), "--configs-folder", str(folder),
                   "--disable-colors"]
        env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["PYTHONPATH"] = str(REPO)
        with open(self.log_path, "ab") as log_file:
            # the launcher calls setsid() itself and asks for SIGTERM if we die
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=env, cwd=self.workdir)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # exactly one SIGTERM (a second one can crash Janus)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def __enter__(self) -> RawJanus:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class JanusClient:
    """The smallest asyncio Janus client: requests by transaction, events by handle (with the time they came)."""

    def __init__(self, ws: ClientConnection, secret: str) -> None:
        self.ws = ws
        self.secret = secret
        self.serial = itertools.count(1)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.handlers: dict[int, Callable[[float, dict[str, Any]], None]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, secret: str, timeout: float) -> JanusClient:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ws = await connect(url, subprotocols=[Subprotocol("janus-protocol")], open_timeout=2,
                                   ping_interval=None, max_size=None)
                client = cls(ws, secret)
                await client.request({"janus": "info"})
                return client
            except (OSError, asyncio.TimeoutError, ConnectionClosed):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Janus at {url} did not answer within {timeout} s") from None
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                now = time.monotonic()
                message = json.loads(frame)
                kind = message.get("janus")
                if kind in ("success", "error", "server_info"):
                    future = self.pending.pop(message.get("transaction"), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif kind != "ack":
                    handler = self.handlers.get(message.get("sender"))
                    if handler is not None:
                        handler(now, message)
        except ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("Janus connection closed"))

    async def send(self, payload: dict[str, Any], **ids: int) -> str:
        transaction = f"r{next(self.serial)}"
        message = {**payload, **ids, "transaction": transaction, "apisecret": self.secret}
        await self.ws.send(json.dumps(message, separators=(",", ":")))  # nothing after the JSON (Janus 1.1.2)
        return transaction

    async def request(self, payload: dict[str, Any], timeout: float = 30, **ids: int) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        transaction = f"r{next(self.serial)}"
        self.pending[transaction] = future
        message = {**payload, **ids, "transaction": transaction, "apisecret": self.secret}
        await self.ws.send(json.dumps(message, separators=(",", ":")))
        reply = await asyncio.wait_for(future, timeout)
        if reply.get("janus") == "error":
            raise RuntimeError(f"Janus error: {reply['error']}")
        return reply

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


def sip_result(message: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A SIP-plugin event's name and result (`error` and the data for an error)."""
    data = (message.get("plugindata") or {}).get("data") or {}
    if "error" in data:
        return "error", data
    result = data.get("result") or {}
    return result.get("event"), result
