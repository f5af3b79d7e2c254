"""Run the demo Kamailio registrar (demo/kamailio/kamailio.cfg) as a child of a test.

    with Kamailio(tmp_path, users={"alice": "alicepw"}) as kamailio:
        ...                                   # SIP registrar + proxy on udp/tcp 127.0.0.1:5070, domain sylk.test
        kamailio.contacts("alice")            # ['sip:alice@127.0.0.1:40000']
        kamailio.log()                        # Kamailio's stderr: one line per request, auth result, registration

Kamailio runs in its own session (process group): the main process forks ~10 workers that all hold the SIP
sockets, and killing only the main process would leave them running. stop() signals the whole group. Every wait
here is bounded, so a broken Kamailio fails the test instead of hanging it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType, TracebackType

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "demo" / "kamailio" / "kamailio.cfg"
SUBSCRIBERS = REPO / "demo" / "kamailio" / "subscribers.py"

HOST = "127.0.0.1"


def _load_subscribers() -> ModuleType:
    # demo/kamailio is not a package; load the helper by path (it only uses the standard library).
    spec = importlib.util.spec_from_file_location("sylkgateway_demo_subscribers", SUBSCRIBERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


subscribers = _load_subscribers()


def _binary(name: str) -> str:
    # Debian installs kamailio and kamcmd in /usr/sbin, which is not on every user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found: install the kamailio package (make test does)")
    return found


def sip_options_ping(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Send one SIP OPTIONS over UDP to host:port; return the status line of the reply, or None if none came."""
    tag = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local_port = sock.getsockname()[1]
        message = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{tag[:16]};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={tag[16:24]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {tag}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        try:
            sock.sendto(message.encode(), (host, port))
            data = sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):  # refused: ICMP port unreachable, nothing listens yet
            return None
    return data.decode("utf-8", "replace").split("\r\n", 1)[0]


class Kamailio:
    """Kamailio on udp+tcp 127.0.0.1:`port` serving `domain` (also its digest realm) for `users` ({user: password}).

    `users` defaults to the demo accounts (alice/alicepw, bob/bobpw, carol/carolpw). Files go into `workdir`:
    db/ (db_text subscribers), run/ (pid file, runtime dir), kamailio.log (stdout and stderr).
    """

    def __init__(self, workdir: Path, port: int = 5070, domain: str = "sylk.test",
                 users: dict[str, str] | None = None, message_store: str | None = None) -> None:
        """`message_store`: host:port where every MESSAGE for a local user is forked too (the gateway's
        sip_messages_address)."""
        self.message_store = message_store
        self.workdir = Path(workdir)
        self.port = port
        self.domain = domain
        self.realm = domain
        self.users = dict(subscribers.DEMO_USERS if users is None else users)
        self.host = HOST
        self.db_dir = self.workdir / "db"
        self.run_dir = self.workdir / "run"
        self.pid_file = self.run_dir / "kamailio.pid"
        self.log_file = self.workdir / "kamailio.log"
        self.ctl_socket = self.run_dir / "kamailio_ctl"
        self._private_ctl_dir: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # --- addresses ---

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def proxy(self) -> str:
        """host:port, as the gateway's outbound_sip_proxy setting wants it."""
        return f"{self.host}:{self.port}"

    def ha1(self, user: str) -> str:
        return subscribers.ha1(user, self.realm, self.users[user])

    # --- life cycle ---

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            raise RuntimeError("Kamailio already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        subscribers.write_subscribers(self.db_dir, self.realm, self.users)
        if len(str(self.ctl_socket)) > 100:  # a unix socket path must fit in sun_path (108 bytes)
            self._private_ctl_dir = tempfile.mkdtemp(prefix="kamctl-")
            self.ctl_socket = Path(self._private_ctl_dir) / "ctl"
        command = [
            _binary("kamailio"), "-f", str(CONFIG), "-DD", "-E", "-m", "32", "-M", "8",
            "-P", str(self.pid_file), "-Y", str(self.run_dir),
            "-A", f"SIP_PORT={self.port}",
            "-A", f'DOMAIN="{self.domain}"',
            "-A", f'REALM="{self.realm}"',
            "-A", f'DBURL="text://{self.db_dir.resolve()}"',
            "-A", f'CTL_SOCK="unix:{self.ctl_socket}"',
        ]
        if self.message_store is not None:
            command += ["-A", f'MESSAGE_STORE="sip:{self.message_store}"']
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise RuntimeError(f"Kamailio exited with status {code} while starting:\n{self._log_tail()}")
            status = sip_options_ping(self.host, self.port, timeout=0.2)
            if status is not None and " 200 " in status + " ":
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Kamailio did not answer OPTIONS on {self.proxy} within {timeout:g} s "
                                   f"(last reply: {status}):\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the whole process group, SIGKILL whatever is left after `timeout` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the main process leads its own group
        self._signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # the workers leave shortly after the main process; wait for the group to empty
        while self._group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._group_alive(group) or process.poll() is None:
            self._signal_group(group, signal.SIGKILL)
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if self._private_ctl_dir is not None:
            shutil.rmtree(self._private_ctl_dir, ignore_errors=True)
            self._private_ctl_dir = None

    @staticmethod
    def _signal_group(group: int, signum: int) -> None:
        try:
            os.killpg(group, signum)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- inspection ---

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _kamcmd(self, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        if not self.running:
            raise RuntimeError("Kamailio is not running")
        try:
            return subprocess.run([_binary("kamcmd"), "-s", f"unix:{self.ctl_socket}", *args],
                                  capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"kamcmd {' '.join(args)} timed out after {timeout:g} s") from None

    def contacts(self, user: str, timeout: float = 5.0) -> list[str]:
        """The contact URIs registered for `user` right now (empty when it has none)."""
        output = self._rpc("ul.lookup", "location", user, timeout=timeout)
        if output is None:
            return []
        return re.findall(r"^\s*Address:\s*(\S+)\s*$", output, re.MULTILINE)

    def forget(self, user: str, timeout: float = 5.0) -> None:
        """Drop every binding of `user` (e.g. a stale one left by an earlier step)."""
        self._rpc("ul.rm", "location", user, timeout=timeout)

    def _rpc(self, *args: str, timeout: float) -> str | None:
        """Run a kamcmd command; its output, or None when Kamailio answered 'not found'."""
        result = self._kamcmd(*args, timeout=timeout)
        # kamcmd exits 0 even when the RPC failed; it then prints "error: CODE - reason"
        output = result.stdout + result.stderr
        if result.returncode != 0 or output.lstrip().startswith("error:"):
            if "not found" in output.lower():
                return None
            raise RuntimeError(f"kamcmd {' '.join(args)} failed (exit {result.returncode}): {output.strip()}")
        return result.stdout
