"""A real SIP phone for end-to-end tests: baresip 1.0.0 (Debian `baresip`), headless, as a child of the test.

    with Baresip(tmp_path / "bob", "bob", "bobpw", answermode="auto", tone_hz=660, kamailio=kamailio) as bob:
        ...                                        # registered as sip:bob@sylk.test through 127.0.0.1:5070
        bob.dial("sip:alice@sylk.test")
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        bob.hangup()
        bob.wait_event("CALL_CLOSED")
    bob.received_wav()                             # what bob heard (WAV, decoded), see audio.has_tone()
    bob.wait_dtmf(4)                               # "123#": DTMF tones bob received (RFC 4733 or SIP INFO)
    bob.rtp_stats()                                # [{"tx_packets": 251, "rx_packets": 250, ...}] per ended call

Configuration (written to `workdir`): no sound card; the microphone is `aufile` playing a WAV (a sine of
`tone_hz`, or `audio_file`; 8 kHz mono 16-bit: `ausrc_srate`/`ausrc_channels` make baresip resample it for any
codec), the speaker is `aubridge` to a device nobody reads, and the `sndfile` filter records every call to
workdir/rec/dump-<time>-dec.wav (received audio, decoded) and -enc.wav (sent). **When the WAV ends, baresip hangs up
the call** (aufile reports "end of file"): the tone is `tone_seconds` long (default 120 s).

The account's AoR is sip:<user>@<domain> (sylk.test) with `outbound` = the registrar: every request (REGISTER,
INVITE, ...) is sent to 127.0.0.1:5070 while the URIs keep the SIP domain, so nothing is ever looked up in DNS.

Control: the `ctrl_tcp` module (netstrings of JSON, on 127.0.0.1:<ctrl_port>): commands get a response
({"response": true, "ok": ..., "data": ..., "token": ...}), and baresip pushes events ({"event": true, "type":
"CALL_INCOMING", "class": "call", "accountaor", "direction", "peeruri", "id", "param"}). Every wait is bounded.
An auto-answering phone gets no CALL_INCOMING event (baresip 1.0.0), only CALL_ESTABLISHED. DTMF received in a call,
as RFC 4733 telephone-events or as SIP INFO (application/dtmf-relay), comes as CALL_DTMF_START (param: the tone)
and CALL_DTMF_END events; the log tells the two apart ("call: received DTMF: '5' (duration=160)" for SIP INFO only).

Ports (all on 127.0.0.1): SIP (UDP+TCP) and control ports are picked free unless given; RTP uses a block of 100
ports in 16000-19999 (below the ephemeral range and the gateway's Janus ranges). Registration is checked with
`reginfo` (and Kamailio's location table when `kamailio` is given); a refused one fails at once.
baresip runs in its own process group; stop() sends `quit` (un-REGISTERs and exits within milliseconds while the
registrar is up), then SIGTERM twice, then SIGKILL, and reads the exit status (0 for a clean exit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from tests.integration.audio import write_silence, write_tone

HOST = "127.0.0.1"
MODULE_PATH = Path("/usr/lib/baresip/modules")
RTP_BASE = 16000          # per-instance RTP port blocks below the ephemeral range and Janus' ranges
RTP_BLOCK = 100
_rtp_blocks_used = 0
# baresip 1.0.0 reads a bare codec name in audio_codecs as <name>/8000/1, so "opus" matches nothing (and an
# account whose list matches nothing silently offers every codec): spell out rate and channels.
CODEC_SPECS = {"opus": "opus/48000/2", "pcmu": "PCMU/8000/1", "pcma": "PCMA/8000/1"}


def _binary() -> str:
    found = shutil.which("baresip")
    if found is None:
        raise RuntimeError("baresip not found: install the Debian package baresip")
    return found


def free_port(host: str = HOST) -> int:
    """A port that is free for both UDP and TCP on `host` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind((HOST, port))
        except OSError:
            return False
    return True


def _next_rtp_block() -> tuple[int, int]:
    global _rtp_blocks_used
    for _ in range(40):
        first = RTP_BASE + RTP_BLOCK * (_rtp_blocks_used % 40)
        _rtp_blocks_used += 1
        if _udp_free(first):
            return first, first + RTP_BLOCK - 1
    raise RuntimeError("no free RTP port block")


def wav_complete(path: Path) -> bool:
    """True when the RIFF header's size matches the file (libsndfile fills it in when the file is closed)."""
    try:
        with open(path, "rb") as f:
            header = f.read(12)
        size = path.stat().st_size
    except OSError:
        return False
    return (len(header) == 12 and header[:4] == b"RIFF" and header[8:12] == b"WAVE"
            and int.from_bytes(header[4:8], "little") + 8 == size)


class BaresipError(AssertionError):
    pass


class Baresip:
    """One baresip process with one account (`user`@`domain`, password `password`).

    answermode: "manual" (CALL_INCOMING, then answer()) or "auto" (answers at once; baresip 1.0.0 then sends
        no CALL_INCOMING event, only CALL_ESTABLISHED) or "early".
    tone_hz / tone_seconds / audio_file: what the phone sends (audio_file: an 8 kHz mono 16-bit WAV; tone_hz=None
        and no file: silence).
    proxy: host:port every request goes to (the registrar/proxy), default the Kamailio harness' 127.0.0.1:5070.
    kamailio: a running tests.integration.kamailio.Kamailio; start() then also waits until it lists a contact.
    register: False for a phone that only places calls without registering (regint=0).
    audio_codecs: the account's codec list, in preference order (baresip has PCMU, PCMA and opus loaded).
    """

    def __init__(self, workdir: Path, user: str, password: str | None = None, *, domain: str = "sylk.test",
                 proxy: str = "127.0.0.1:5070", answermode: str = "manual", tone_hz: float | None = 440,
                 tone_seconds: float = 120, audio_file: Path | None = None,
                 audio_codecs: tuple[str, ...] = ("PCMU", "PCMA"), kamailio: Any = None, register: bool = True,
                 sip_port: int | None = None, ctrl_port: int | None = None,
                 rtp_ports: tuple[int, int] | None = None, sip_trace: bool = False,
                 extra_account_params: str = "", extra_config: dict[str, str] | None = None) -> None:
        if answermode not in ("manual", "auto", "early"):
            raise ValueError(f"answermode {answermode!r}")
        self.workdir = Path(workdir).resolve()
        self.user = user
        self.password = password
        self.domain = domain
        self.proxy = proxy
        self.answermode = answermode
        self.tone_hz = tone_hz
        self.tone_seconds = tone_seconds
        self.audio_file = Path(audio_file).resolve() if audio_file is not None else None
        self.audio_codecs = audio_codecs
        self.kamailio = kamailio
        self.register = register
        self.sip_port = sip_port
        self.ctrl_port = ctrl_port
        self.rtp_ports = rtp_ports
        self.sip_trace = sip_trace
        self.extra_account_params = extra_account_params
        self.extra_config = dict(extra_config or {})
        self.record_dir = self.workdir / "rec"
        self.log_file = self.workdir / "baresip.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None             # baresip's exit status, after stop()
        self.events: list[dict[str, Any]] = []        # received and not consumed by wait_event() yet
        self.history: list[dict[str, Any]] = []       # every event received, in order
        self._responses: dict[str, dict[str, Any]] = {}
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._token = 0

    # --- identity ---

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    uri = aor

    # --- configuration ---

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record_dir.mkdir(exist_ok=True)
        if self.sip_port is None:
            self.sip_port = free_port()
        if self.ctrl_port is None:
            self.ctrl_port = free_port()
        if self.rtp_ports is None:
            self.rtp_ports = _next_rtp_block()
        source = self.audio_file
        if source is None:
            source = self.workdir / f"tone-{self.tone_hz or 0:g}.wav"
            if self.tone_hz:
                write_tone(source, self.tone_hz, seconds=self.tone_seconds)
            else:
                write_silence(source, seconds=self.tone_seconds)
        if "," in str(source) or "," in str(self.record_dir):
            raise ValueError(f"baresip can't take ',' in a device path: {source}")
        modules = ["g711.so"]
        if (MODULE_PATH / "opus.so").exists():
            modules.append("opus.so")
        modules += ["aufile.so", "aubridge.so", "sndfile.so"]
        config: dict[str, str] = {
            "poll_method": "epoll",
            "sip_listen": f"{HOST}:{self.sip_port}",
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_path": "/usr/share/baresip",
            "audio_player": "aubridge,nowhere",        # the speaker: a bridge device nobody reads (discard)
            "audio_alert": "aubridge,nowhere",
            "audio_source": f"aufile,{source}",
            "ausrc_srate": "8000",                     # the WAV's format; baresip resamples it for the codec
            "ausrc_channels": "1",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "audio_buffer": "20-160",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "yes",                        # RTP counters in the log when a call ends
            "net_interface": HOST,                     # "lo" does not work; the address does (SDP says 127.0.0.1)
            "module_path": str(MODULE_PATH),
            "ctrl_tcp_listen": f"{HOST}:{self.ctrl_port}",
            "snd_path": str(self.record_dir),
            "statmode_default": "off",                 # else menu prints a call status line every 100 ms
            "ringback_disabled": "yes",
            "menu_bell": "no",
        }
        config.update(self.extra_config)
        lines = [f"{key}\t{value}" for key, value in config.items()]
        lines += [f"module\t{m}" for m in modules]
        lines += ["module_tmp\taccount.so", "module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        (self.workdir / "accounts").write_text(self.account_line() + "\n")
        (self.workdir / "contacts").write_text("")

    def account_line(self) -> str:
        codecs = ",".join(CODEC_SPECS.get(codec.lower(), codec) for codec in self.audio_codecs)
        params = [f'outbound="sip:{self.proxy};transport=udp"', f"answermode={self.answermode}",
                  f"regint={600 if self.register else 0}", f"audio_codecs={codecs}"]
        if self.password is not None:
            params.insert(0, f"auth_pass={self.password}")
        line = f"<{self.aor};transport=udp>;" + ";".join(params)
        if self.extra_account_params:
            line += ";" + self.extra_account_params.lstrip(";")
        return line

    # --- life cycle ---

    def start(self, timeout: float = 10.0) -> Baresip:
        if self.process is not None:
            raise RuntimeError("baresip already started")
        self.write_config()
        command = [_binary(), "-f", str(self.workdir)]
        if self.sip_trace:
            command.append("-s")
        try:
            with open(self.log_file, "ab") as log:
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                cwd=self.workdir, start_new_session=True)
            deadline = time.monotonic() + timeout
            self._connect(deadline)
            if "account: audio codec not found" in self.log():
                raise BaresipError(f"{self.aor}: bad audio_codecs {self.audio_codecs}:\n{self.log_tail()}")
            if self.register:
                self.wait_registered(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self, deadline: float) -> None:
        assert self.ctrl_port is not None
        while True:
            self._check_alive("while starting")
            try:
                self._socket = socket.create_connection((HOST, self.ctrl_port), timeout=1)
                self._socket.settimeout(0.1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"baresip's ctrl_tcp port {self.ctrl_port} did not open:\n{self.log_tail()}")
                time.sleep(0.02)

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Until baresip says its account is registered (and, with a kamailio, Kamailio has its contact);
        BaresipError at once if the registrar refused it (e.g. 403 for a wrong password)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.registration_state()
            if state == "OK":
                break
            if state == "ERR":
                raise BaresipError(f"{self.aor}: registration refused:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BaresipError(f"{self.aor} not registered within {timeout:g} s (state {state!r}):\n"
                                   f"{self.log_tail()}")
            self._pump(0.05)
        while self.kamailio is not None and not self.kamailio.contacts(self.user):
            if time.monotonic() > deadline:
                raise BaresipError(f"Kamailio has no contact for {self.user} after {timeout:g} s")
            time.sleep(0.05)

    def registration_state(self) -> str | None:
        """What `reginfo` says about the account: "OK" (registered), "ERR" (refused or failed), "zzz" (not
        registered yet), None (no registration: register=False)."""
        data = re.sub(r"\x1b\[[0-9;]*m", "", self.command("reginfo").get("data", ""))
        match = re.search(r"^>?\s*\S+\s+(OK|ERR|zzz)\b", data, re.MULTILINE)
        return match.group(1) if match else None

    def registered(self) -> bool:
        return self.registration_state() == "OK"

    def stop(self, timeout: float = 3.0) -> int | None:
        """`quit` (un-REGISTER, exit) and wait up to `timeout` s; then SIGTERM twice (baresip handles the first
        like quit, waiting for the un-REGISTER to end, which takes 32 s without a registrar; the second makes it
        exit at once), then SIGKILL to the process group. Idempotent; returns the exit status."""
        process, self.process = self.process, None
        sock, self._socket = self._socket, None
        if process is None:
            if sock is not None:
                sock.close()
            return None
        steps: list[tuple[int | None, float]] = [(signal.SIGTERM, 0.5), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)]
        if sock is not None and process.poll() is None:
            try:
                self._send(sock, "quit", "", "quit")
                registrar_gone = self.kamailio is not None and not self.kamailio.running
                steps.insert(0, (None, 0.3 if registrar_gone else timeout))
            except OSError:
                pass
        try:
            for signum, wait in steps:
                if signum is not None:
                    try:
                        os.killpg(process.pid, signum)
                    except ProcessLookupError:
                        pass
                # keep reading the control socket meanwhile, so baresip's last events don't hit a closed socket
                until = time.monotonic() + wait
                while process.poll() is None and time.monotonic() < until:
                    if sock is not None:
                        sock = self._drain(sock, 0.05)
                    else:
                        time.sleep(0.05)
                if process.poll() is not None:
                    break
        finally:
            if sock is not None:
                sock.close()
            try:
                process.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        if process.returncode is None:  # still not reaped after SIGKILL: kill the group once more, wait
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)
        self.returncode = process.returncode
        return process.returncode

    @staticmethod
    def _drain(sock: socket.socket, wait: float) -> socket.socket | None:
        sock.settimeout(wait)
        try:
            if sock.recv(65536):
                return sock
        except (TimeoutError, socket.timeout):
            return sock
        except OSError:
            pass
        sock.close()
        return None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- control ---

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a baresip command (dial, accept, hangup, reginfo, listcalls, callstat, ...); its response."""
        if self._socket is None:
            raise BaresipError("baresip is not running")
        self._token += 1
        token = f"t{self._token}"
        self._send(self._socket, name, params, token)
        deadline = time.monotonic() + timeout
        while token not in self._responses:
            if time.monotonic() > deadline:
                raise BaresipError(f"no response to {name} {params} within {timeout:g} s:\n{self.log_tail()}")
            self._pump(0.05)
        return self._responses.pop(token)

    def dial(self, uri: str) -> dict[str, Any]:
        return self._ok(self.command("dial", uri), "dial")

    def answer(self) -> dict[str, Any]:
        return self._ok(self.command("accept"), "accept")

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def wait_event(self, kind: str, timeout: float = 10.0,
                   predicate: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The first not yet consumed event of type `kind` (CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED,
        CALL_CLOSED, CALL_RTCP, REGISTER_OK, ...) that matches `predicate`; waits at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("type") == kind and (predicate is None or predicate(event)):
                    self.events.remove(event)
                    return event
            if time.monotonic() > deadline:
                seen = [(e.get("type"), e.get("param")) for e in self.history]
                raise BaresipError(f"{self.aor}: no {kind} event within {timeout:g} s; events: {seen}\n"
                                   f"{self.log_tail()}")
            self._check_alive(f"while waiting for {kind}")
            self._pump(0.05)

    def wait_dtmf(self, count: int, timeout: float = 10.0) -> str:
        """The next `count` DTMF tones received (CALL_DTMF_START events), as a string; waits at most `timeout` s."""
        deadline = time.monotonic() + timeout
        tones = ""
        while len(tones) < count:
            try:
                event = self.wait_event("CALL_DTMF_START", max(0.0, deadline - time.monotonic()))
            except BaresipError as error:
                raise BaresipError(f"{self.aor}: only {len(tones)} of {count} DTMF tones ({tones!r}) within "
                                   f"{timeout:g} s\n{error}") from None
            tones += str(event.get("param", "?"))
        return tones

    def received_dtmf_info(self) -> list[str]:
        """The tones received as SIP INFO so far, from the log (RFC 4733 tones are not there)."""
        return re.findall(r"call: received DTMF: '(.)'", self.log())

    def _ok(self, response: dict[str, Any], what: str) -> dict[str, Any]:
        if not response.get("ok"):
            raise BaresipError(f"{self.aor}: {what} failed: {response}\n{self.log_tail()}")
        return response

    @staticmethod
    def _send(sock: socket.socket, name: str, params: str, token: str) -> None:
        payload = json.dumps({"command": name, "params": params, "token": token}).encode()
        sock.sendall(str(len(payload)).encode() + b":" + payload + b",")

    def _pump(self, wait: float) -> None:
        """Read what baresip sent within `wait` seconds and sort it into responses and events."""
        if self._socket is None:
            return
        self._socket.settimeout(max(wait, 0.001))  # never 0: that would make the socket non-blocking
        try:
            data = self._socket.recv(65536)
        except (TimeoutError, socket.timeout):
            return
        if not data:
            self._socket.close()
            self._socket = None
            return
        self._buffer += data
        while True:
            length, colon, rest = self._buffer.partition(b":")
            if not colon or not length.isdigit():
                if colon:
                    raise BaresipError(f"bad netstring from baresip: {self._buffer[:80]!r}")
                return
            size = int(length)
            if len(rest) < size + 1:
                return
            message = json.loads(rest[:size])
            self._buffer = rest[size + 1:]
            if message.get("response"):
                self._responses[str(message.get("token"))] = message
            elif message.get("event"):
                self.events.append(message)
                self.history.append(message)

    def _check_alive(self, when: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BaresipError(f"baresip exited with status {self.process.returncode} {when}:\n{self.log_tail()}")

    # --- results ---

    def recordings(self, suffix: str = "dec") -> list[Path]:
        """WAV files of the calls so far, oldest first: "dec" = received audio, "enc" = sent audio."""
        # named dump-YYYY-MM-DD-HH-MM-SS-{dec,enc}.wav after the call's start: two calls of one phone starting in
        # the same second would share (and overwrite) one file
        return sorted(self.record_dir.glob(f"dump-*-{suffix}.wav"))

    def received_wav(self, timeout: float = 3.0) -> Path:
        """What the latest call received (decoded audio), once its WAV file is complete (see wav_complete)."""
        return self._latest("dec", timeout)

    def sent_wav(self, timeout: float = 3.0) -> Path:
        """What the latest call sent (before encoding)."""
        return self._latest("enc", timeout)

    def _latest(self, suffix: str, timeout: float) -> Path:
        files = self.recordings(suffix)
        if not files:
            raise BaresipError(f"{self.aor}: no *-{suffix}.wav recording in {self.record_dir}")
        # sndfile writes the WAV header's sizes when the call object is freed, just after CALL_CLOSED is sent
        deadline = time.monotonic() + timeout
        while not wav_complete(files[-1]):
            if time.monotonic() > deadline:
                raise BaresipError(f"{files[-1]} is still being written (call not closed?)")
            time.sleep(0.05)
        return files[-1]

    def rtcp_stats(self) -> dict[str, Any] | None:
        """The latest RTCP report of a call (event CALL_RTCP, about every 5 s while a call is up; pump events
        first, e.g. with wait_event): {"tx": {"sent", "lost", "jit"}, "rx": {...}, "rtt"}, or None."""
        self._pump(0)
        reports = [e["rtcp_stats"] for e in self.history if e.get("type") == "CALL_RTCP" and "rtcp_stats" in e]
        return reports[-1] if reports else None

    def rtp_stats(self) -> list[dict[str, int]]:
        """Per ended call (oldest first), the RTP summary baresip logs (`rtp_stats yes`):
        {"tx_packets", "rx_packets", "tx_lost", "rx_lost", "tx_errors", "rx_errors"}."""
        result = []
        for block in re.split(r"\baudio\s+Transmit:\s+Receive:", self.log())[1:]:
            entry: dict[str, int] = {}
            for name in ("packets", "errors", "lost"):
                match = re.search(rf"^\s*{name}:\s+(-?\d+)\s+(-?\d+)", block, re.MULTILINE)
                if match:
                    entry[f"tx_{name}"], entry[f"rx_{name}"] = int(match.group(1)), int(match.group(2))
            result.append(entry)
        return result

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
