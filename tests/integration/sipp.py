"""sipp (Debian's sip-tester) as a real SIP phone in tests: our scenarios in sipp/, one call per run, on
127.0.0.1. Every wait is bounded and the process is always stopped."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).parent / "sipp"
REGISTRAR = "127.0.0.1:5070"
DOMAIN = "sylk.test"


class Sipp:
    """One run of a scenario. A UAS (`uas_*.xml`) waits for a call on `port`; a UAC (`uac_*.xml`) calls through
    the registrar. `keys` fill the scenario's [keywords] (caller, display, ...) at run time; `render` fills
    {placeholders} before sipp reads the file, for what sipp checks when loading (status codes, pauses)."""

    def __init__(self, workdir: Path, scenario: str, port: int, service: str, keys: dict[str, Any] | None = None,
                 auth: tuple[str, str] | None = None, render: dict[str, str] | None = None, calls: int | None = 1,
                 timeout: float = 40, trace: bool = True) -> None:
        """`calls`: how many before sipp exits (None: any number, calls at once included); `timeout`: its whole
        run; `trace`: log every message (for the tests that read them)."""
        if shutil.which("sipp") is None:
            raise RuntimeError("sipp is missing (Debian package sip-tester; make test installs it)")
        self.workdir = workdir
        self.scenario = scenario
        self.port = port
        self.name = f"{Path(scenario).stem}-{port}"
        self.log_path = workdir / f"{self.name}.log"
        keys = {"domain": DOMAIN, "caller": service, "display": service.title(), **(keys or {})}
        workdir.mkdir(parents=True, exist_ok=True)
        text = (SCENARIOS / scenario).read_text()
        for placeholder, value in {"hold": "1000", **(render or {})}.items():
            text = text.replace("{" + placeholder + "}", str(value))
        path = workdir / f"{self.name}.xml"
        path.write_text(text)
        self.command = ["sipp", "-sf", str(path), "-s", service, "-i", "127.0.0.1",
                        "-p", str(port), "-mi", "127.0.0.1", "-mp", str(20000 + (port - 5000) * 10), "-nostdin",
                        "-timeout", f"{timeout:g}s", "-timeout_error"]
        if calls is not None:
            self.command += ["-m", str(calls)]
        if trace:
            self.command += ["-trace_msg", "-message_file", str(self.log_path)]
        for key, value in keys.items():
            self.command += ["-key", key, str(value)]
        if auth is not None:
            self.command += ["-au", auth[0], "-ap", auth[1]]
        if scenario.startswith(("uac", "register")):
            self.command.append(REGISTRAR)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.stderr", "ab") as errors:
            self.process = subprocess.Popen(self.command, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                            stderr=errors, start_new_session=True)
        if self.scenario.startswith("uas"):
            self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 5) -> None:
        """Until sipp holds its UDP port: a request the proxy sends before that is lost (an INVITE would be
        retransmitted, a MESSAGE forked beside others is not)."""
        deadline = time.monotonic() + timeout
        bound = f":{self.port:04X}"  # a local port as /proc/net/udp (this network namespace's) writes it
        while time.monotonic() < deadline and self.process is not None and self.process.poll() is None:
            if any(line.split()[1].endswith(bound) for line in
                   Path("/proc/net/udp").read_text().splitlines()[1:]):
                return  # (only read: binding the port to test it could take it from sipp)
            time.sleep(0.02)
        raise AssertionError(f"sipp {self.name} is not listening on UDP port {self.port}:\n{self.messages()[-2000:]}")

    def wait(self, timeout: float = 30) -> int:
        """sipp's exit status: 0 when the scenario ran to its end."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp {self.name} did not finish within {timeout} s:\n{self.messages()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def messages(self) -> str:
        """Everything sipp sent and received (its -trace_msg file), then what it complained about."""
        errors = self.workdir / f"{self.name}.stderr"
        return "\n".join(path.read_text(errors="replace") for path in (self.log_path, errors) if path.exists())

    def received(self, start: str) -> list[str]:
        """The messages sipp received that begin with `start` ("INVITE ", "SIP/2.0 200"), in order."""
        return self._traced("received", start)

    def invite_oks(self) -> dict[int, str]:
        """The 200 OKs to INVITEs that sipp received (it called, or re-INVITEd), by CSeq number."""
        oks = {}
        for message in self.received("SIP/2.0 200"):
            cseq = re.search(r"^CSeq:\s*(\d+) INVITE", message, re.MULTILINE | re.IGNORECASE)
            if cseq:
                oks[int(cseq.group(1))] = message
        return oks

    def sent(self, start: str) -> list[str]:
        return self._traced("sent", start)

    def _traced(self, direction: str, start: str) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        found = []
        for entry in re.split(r"^-{20,}.*$", text, flags=re.MULTILINE):
            header, _, message = entry.strip().partition("\n")
            if f"message {direction}" in header and message.strip().startswith(start):
                found.append(message.strip())
        return found

    def __enter__(self) -> Sipp:
        return self if self.process is not None else self.start()

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        self.stop()
        if exc_type is not None:  # pytest shows a failed test's output: what sipp saw tells why
            print(f"sipp {self.name} {self.command}:\n{self.messages()[-6000:]}")


def registered_phone(workdir: Path, scenario: str, user: str, password: str, port: int, **render: str) -> Sipp:
    """`user`@sylk.test as a sipp phone registered with this port as its contact, running `scenario` (a UAS)."""
    register(workdir, user, password, port)
    return Sipp(workdir, scenario, port, user, render=render).start()


def register(workdir: Path, user: str, password: str, port: int) -> None:
    """Register user@sylk.test at the registrar with this port as the contact (for a UAS started after)."""
    with Sipp(workdir, "register.xml", port, user, auth=(user, password)) as sipp:
        status = sipp.wait(15)
        assert status == 0, f"sipp could not register {user}:\n{sipp.messages()[-3000:]}"
