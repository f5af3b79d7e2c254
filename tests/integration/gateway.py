"""The real gateway for end-to-end tests: `twistd sylkgateway` in a subprocess, and a browser stand-in that speaks
sylkRTC-1 over a real WebSocket. Every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

TWISTD = str(Path(sys.executable).with_name("twistd"))
REPO = Path(__file__).resolve().parents[2]


def md5_ha1(user: str, realm: str, password: str) -> str:
    import hashlib
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


class Client:
    """A browser stand-in: sends requests, collects events, answers questions about both with timeouts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._serial = 0

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def request(self, kind: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        """Send a request and return its answer (ack or error); events that arrive meanwhile are kept."""
        self._serial += 1
        transaction = f"t{self._serial}"
        self.send({"sylkrtc": kind, "transaction": transaction, **fields})
        return self.answer(transaction, timeout)

    def answer(self, transaction: str | None, timeout: float = 10) -> dict[str, Any]:
        return self._next(lambda m: m["sylkrtc"] in ("ack", "error") and m.get("transaction") == transaction,
                          timeout, f"an answer to transaction {transaction}")

    def event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10,
              what: str = "an event") -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                self.events.remove(event)
                return event
        return self._next(predicate, timeout, what)

    def registration_state(self, account: str, timeout: float = 10) -> dict[str, Any]:
        """The next registration_state event for an account, as its data: {"state": ..., "reason"?: ...}."""
        event = self.event(lambda m: m.get("event") == "registration_state" and m.get("account") == account,
                           timeout, f"a registration_state event for {account}")
        return event["data"]

    def wait_closed(self, timeout: float = 10) -> tuple[int | None, str | None]:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.events.append(json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
        except ConnectionClosed:
            return self.ws.close_code, self.ws.close_reason
        except TimeoutError:
            pass
        raise AssertionError(f"the gateway did not close the connection within {timeout} s")

    def close(self) -> None:
        self.ws.close()

    def _next(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; unmatched: {self.events}")
            try:
                message = json.loads(self.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            if predicate(message):
                return message
            self.events.append(message)


class Gateway:
    """`twistd -n sylkgateway -c <config>` with its own Janus, in the current network namespace."""

    def __init__(self, workdir: Path, config: dict[str, dict[str, Any]] | None = None, port: int = 10888) -> None:
        self.workdir = workdir
        self.port = port
        # one Janus unless a test asks for a pool (the default is one per CPU core)
        self.config = {"WebServer": {"local_port": port}, "Janus": {"interface": "127.0.0.1", "instances": 1}}
        for section, options in (config or {}).items():
            self.config.setdefault(section, {}).update(options)
        self.config_path = workdir / "config.ini"
        self.log_path = workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ssl_context: Any = None  # what browsers trust, for a gateway with a certificate

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.get("WebServer", {}).get("certificate") else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/webrtcgateway/ws"

    def write_config(self) -> None:
        lines = []
        for section, options in self.config.items():
            lines.append(f"[{section}]")
            lines += [f"{option} = {value}" for option, value in options.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20) -> Gateway:
        self.write_config()
        with open(self.log_path, "ab") as log:
            # SIGINT as a terminal gives it, even when the tests run in the background (where a shell ignores it,
            # and an ignored SIGINT stays ignored: twistd would not install its handler)
            self.process = subprocess.Popen([TWISTD, "-n", "--pidfile=", "sylkgateway", "-c", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                            start_new_session=True, preexec_fn=_default_sigint)
        try:
            self.wait_usable(timeout)
        except BaseException:
            self.stop()  # never leave a gateway behind, whatever went wrong
            raise
        return self

    def wait_usable(self, timeout: float = 20) -> None:
        """Until a browser can connect and gets `ready` (Janus up and checked)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                client = self.connect(timeout=2)
                client.close()
                return
            except (OSError, InvalidHandshake, ConnectionClosed, AssertionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the gateway did not become usable in {timeout} s:\n{self.log_tail()}")
                time.sleep(0.1)

    def connect(self, subprotocols: tuple[str, ...] = ("sylkRTC-1",), timeout: float = 5, **kwargs: Any) -> Client:
        """Open a browser connection and wait for `ready`."""
        if self.ssl_context is not None:
            kwargs.setdefault("ssl", self.ssl_context)
        ws = connect(self.url, subprotocols=list(subprotocols), open_timeout=timeout, close_timeout=2, **kwargs)
        client = Client(ws)
        try:
            client.event(lambda m: m in ({"sylkrtc": "event", "event": "ready"}, {"sylkrtc": "ready-event"}),
                         timeout, "the ready event")
        except BaseException:
            ws.close()
            raise
        return client

    def stop(self, timeout: float = 20, signum: int = signal.SIGTERM) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        return process.returncode

    def janus_pids(self, member: str | None = None) -> list[int]:
        """Every Janus the gateway started so far (of a pool's `member`: janus, janus2, ...), oldest first."""
        started = re.findall(r"Started Janus \(pid (\d+)\) with its API on \S*/([^/\s]+)/api\.sock", self.log())
        return [int(pid) for pid, folder in started if member in (None, folder)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def eventually(condition: Callable[[], Any], timeout: float = 10, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def register(client: Client, registrar: Any, account: str, ha1: str | None = None) -> dict[str, Any]:
    """add_account + register; returns the final registration state (after `registering`). The HA1 comes from
    the registrar harness (its `ha1(user)`) unless given."""
    user = account.partition("@")[0]
    answer = client.request("add_account", account=account, password=ha1 or registrar.ha1(user))
    assert answer["sylkrtc"] == "ack", answer
    assert client.request("register", account=account)["sylkrtc"] == "ack"
    assert client.registration_state(account) == {"state": "registering"}
    return client.registration_state(account, timeout=15)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
