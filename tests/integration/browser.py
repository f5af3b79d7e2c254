"""A real browser for end-to-end tests: Debian's Chromium, headless, driven by Python Playwright (sync API).

    with Browser(tmp_path, fake_audio=write_tone(tmp_path / "1k.wav", 1000, rate=48000)) as browser:
        page = browser.page("http://127.0.0.1:8000/call.html")
        page.wait_for("window.pc && window.pc.iceConnectionState === 'connected'", timeout=10)
        page.rtp_stats("window.pc")            # {"inbound": {"audio": {"packets": 155, ...}, ...}, "outbound": ...}
        page.selected_pair("window.pc")        # {"local": {"address": "127.0.0.1", ...}, "remote": ..., "state": ...}
        page.dominant_frequency("window.remoteStream", seconds=1.5)   # e.g. 1001.2 (Hz)

Chromium runs in the caller's network namespace (Playwright's driver and the browser are children of the test
process), with fake camera and microphone, permission prompts auto-accepted, 127.0.0.1 ICE candidates allowed and
shown as real addresses (no mDNS), and every host name except localhost/127.0.0.1 unresolvable. Nothing is ever
downloaded: the browser is /usr/bin/chromium (Debian package `chromium`), the driver is PyPI `playwright` (never run
`playwright install`). Each Browser has a fresh temporary dir (profile, and HOME/XDG dirs so that crashpad and
PulseAudio leave ~/.config alone); stop() (or leaving the `with`) closes the browser and kills whatever process of it
is still alive (crashpad handlers included), whatever happened before. Several Browsers may run at once (e.g. two
users with different fake tones); they share one Playwright driver, stopped with the last Browser.

`StaticServer` serves a few in-memory files on 127.0.0.1 (a page needs a secure context, http://127.0.0.1 is one,
for getUserMedia).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Playwright, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = "/usr/bin/chromium"

# Playwright passes its own --disable-features=<list>, and Chromium honours only the last --disable-features on
# the command line, so ours must repeat Playwright's list (playwright 1.65, chromiumSwitches.ts) besides adding
# WebRtcHideLocalIpsWithMdns (host candidates as real addresses, not .local names nobody can resolve here).
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding", "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect", "TcpPortRandomizationWin", "OptimizationHints",
    "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
)
DISABLED_FEATURES = ("WebRtcHideLocalIpsWithMdns", *PLAYWRIGHT_DISABLED_FEATURES)

CHROMIUM_ARGS = (
    "--no-sandbox",                                   # root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--use-fake-device-for-media-stream",             # fake camera (moving pattern) and microphone (400 Hz beeps)
    "--use-fake-ui-for-media-stream",                 # getUserMedia granted without a prompt
    "--allow-loopback-in-peer-connection",            # 127.0.0.1 ICE candidates (none at all without it)
    "--disable-features=" + ",".join(DISABLED_FEATURES),
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",  # no DNS, ever
    "--autoplay-policy=no-user-gesture-required",     # <audio>/<video> play remote streams without a click
)

# what Playwright would treat as a function to call rather than an expression to evaluate
_FUNCTION = re.compile(r"^\s*(async\s+)?(function\b|\([^()]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")

# JavaScript run in the page by the helpers below. Each is an async function of one argument.
_JS_RTP_STATS = """async (pc) => {
  const stats = await pc.getStats();
  const result = {inbound: {}, outbound: {}, codecs: {}};
  stats.forEach(s => {
    if (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp') return;
    const kind = s.kind || s.mediaType;
    const inbound = s.type === 'inbound-rtp';
    const side = inbound ? result.inbound : result.outbound;
    const entry = side[kind] || (side[kind] = {packets: 0, bytes: 0, streams: 0});
    entry.packets += (inbound ? s.packetsReceived : s.packetsSent) || 0;
    entry.bytes += (inbound ? s.bytesReceived : s.bytesSent) || 0;
    entry.streams += 1;
    if (inbound) {
      entry.packetsLost = (entry.packetsLost || 0) + (s.packetsLost || 0);
      if (s.framesDecoded !== undefined) entry.framesDecoded = (entry.framesDecoded || 0) + s.framesDecoded;
      if (s.totalAudioEnergy !== undefined) entry.totalAudioEnergy = (entry.totalAudioEnergy || 0) + s.totalAudioEnergy;
    } else if (s.framesEncoded !== undefined) {
      entry.framesEncoded = (entry.framesEncoded || 0) + s.framesEncoded;
    }
    const codec = s.codecId && stats.get(s.codecId);
    if (codec) (result.codecs[(inbound ? 'inbound-' : 'outbound-') + kind] = codec.mimeType);
  });
  return result;
}"""

_JS_SELECTED_PAIR = """async (pc) => {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach(s => {
    if (s.type === 'transport' && s.selectedCandidatePairId && !pair) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) stats.forEach(s => {   // older stats without transport.selectedCandidatePairId
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && !pair) pair = s;
  });
  if (!pair) return null;
  const describe = c => c && {address: c.address || c.ip, port: c.port, protocol: c.protocol,
                              candidateType: c.candidateType};
  return {local: describe(stats.get(pair.localCandidateId)), remote: describe(stats.get(pair.remoteCandidateId)),
          state: pair.state, nominated: pair.nominated, bytesSent: pair.bytesSent,
          bytesReceived: pair.bytesReceived};
}"""

# Dominant frequency of the audio of a MediaStream / MediaStreamTrack / media element, through a WebAudio
# AnalyserNode. Chrome delivers silence to WebAudio for a remote WebRTC track that is not attached to a media
# element, so the stream is attached to a (muted) <audio> element first unless it already plays in one.
_JS_DOMINANT_FREQUENCY = """async ([source, seconds, minDb]) => {
  let stream = source;
  if (source instanceof HTMLMediaElement) stream = source.srcObject;
  else if (source instanceof MediaStreamTrack) stream = new MediaStream([source]);
  if (!(stream instanceof MediaStream)) throw new Error('not a MediaStream, track or media element: ' + source);
  if (stream.getAudioTracks().length === 0) throw new Error('the stream has no audio track');
  const attached = [...document.querySelectorAll('audio,video')].some(e => e.srcObject === stream);
  let element = null;
  if (!attached) {
    element = document.createElement('audio');
    element.muted = true;
    element.srcObject = stream;
    document.body.appendChild(element);
    await element.play().catch(() => {});
  }
  const context = new AudioContext();
  await context.resume().catch(() => {});
  const input = context.createMediaStreamSource(stream);
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  input.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const binHz = context.sampleRate / analyser.fftSize;
  const peaks = [];
  let frames = 0;
  const started = performance.now();
  while (performance.now() - started < seconds * 1000) {
    await new Promise(resolve => setTimeout(resolve, 50));
    analyser.getFloatFrequencyData(bins);
    frames += 1;
    let best = 1;
    for (let i = 2; i < bins.length - 1; i++) if (bins[i] > bins[best]) best = i;
    if (!(bins[best] > minDb)) continue;
    const [a, b, c] = [bins[best - 1], bins[best], bins[best + 1]];   // dB values: parabolic interpolation
    const d = a - 2 * b + c;
    const offset = d ? Math.max(-0.5, Math.min(0.5, 0.5 * (a - c) / d)) : 0;
    peaks.push({hz: (best + offset) * binHz, db: b});
  }
  input.disconnect();
  await context.close();
  if (element) { element.srcObject = null; element.remove(); }
  const sorted = peaks.map(p => p.hz).sort((x, y) => x - y);
  return {hz: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null, frames, loudFrames: peaks.length,
          sampleRate: context.sampleRate, peaks: peaks.slice(0, 50)};
}"""


def _current_netns() -> int:
    # the calling thread's namespace (setns() in netns.py switches only the calling thread)
    return os.stat("/proc/thread-self/ns/net").st_ino


class _Driver:
    """The Playwright driver (a node process), shared by every Browser of this process: the sync API can't run two
    at once in one thread. Started by the first Browser, stopped when the last one stops. Chromium is the driver's
    child and inherits *its* network namespace, so all Browsers using it must be in the same namespace."""

    manager: Any = None
    playwright: Playwright | None = None
    users = 0
    netns: int | None = None
    pids: list[int] = []

    @classmethod
    def acquire(cls) -> Playwright:
        if cls.playwright is None:
            cls.netns = _current_netns()
            cls.manager = sync_playwright()
            cls.playwright = cls.manager.start()
            cls.pids = Browser._children_matching(b"run-driver")
        elif cls.netns != _current_netns():
            raise RuntimeError("a Browser of another network namespace is still running: stop it first")
        cls.users += 1
        return cls.playwright

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users > 0:
            return
        manager, cls.manager, cls.playwright, cls.users, cls.netns = cls.manager, None, None, 0, None
        try:
            if manager is not None:
                manager.__exit__(None, None, None)
        except Exception:
            pass
        finally:
            for pid in cls.pids:   # the driver exits when its stdin closes; make sure of it
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            cls.pids = []

    @classmethod
    def kill(cls) -> None:
        for pid in cls.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class BrowserPage:
    """One tab. `page` is the Playwright Page for anything the helpers don't cover."""

    def __init__(self, page: Page, default_timeout: float) -> None:
        self.page = page
        self.default_timeout = default_timeout
        self.console: list[str] = []          # "type: text" of every console message, and uncaught errors
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def goto(self, url: str, timeout: float | None = None) -> None:
        self.page.goto(url, timeout=1000 * (timeout or self.default_timeout))

    def evaluate(self, expression: str, argument: Any = None, timeout: float | None = None) -> Any:
        """Like Playwright's page.evaluate (an expression, or a function source applied to `argument`; promises are
        awaited), but bounded: AssertionError if the result is not there within `timeout` seconds."""
        if _FUNCTION.match(expression):
            call = f"({expression})(args[0])"
        else:
            call = f"(async () => ({expression}))()"
        return self._bounded(call, argument, expression, timeout)

    def _bounded(self, call: str, argument: Any, what: str, timeout: float | None) -> Any:
        timeout = self.default_timeout if timeout is None else timeout
        wrapper = ("async (args) => { let timer; const expired = new Promise((_, reject) => timer = setTimeout("
                   "() => reject(new Error('__evaluate_timeout__')), args[1])); "
                   f"try {{ return await Promise.race([{call}, expired]); }} finally {{ clearTimeout(timer); }} }}")
        try:
            return self.page.evaluate(wrapper, [argument, int(1000 * timeout)])
        except PlaywrightError as error:
            if "__evaluate_timeout__" in str(error):
                raise AssertionError(f"{what[:200]!r} gave no result within {timeout:g} s; "
                                     f"console:\n{self.console_tail()}") from None
            raise

    def wait_for(self, expression: str, timeout: float | None = None, what: str | None = None) -> Any:
        """Poll a JS expression (or a function of no argument) every 50 ms until it is truthy; return its value.
        While it throws (e.g. `window.pc.iceConnectionState` before `window.pc` exists) it counts as false.
        AssertionError after `timeout` seconds, with the last exception and the page's console output."""
        timeout = self.default_timeout if timeout is None else timeout
        function = expression if _FUNCTION.match(expression) else f"() => ({expression})"
        predicate = (f"() => {{ try {{ return ({function})(); }} "
                     f"catch (e) {{ window.__waitForError = String(e); return false; }} }}")
        try:
            self.page.evaluate("delete window.__waitForError")
            handle = self.page.wait_for_function(predicate, timeout=1000 * timeout, polling=50)
        except PlaywrightTimeoutError:
            try:
                error = self.page.evaluate("window.__waitForError || null")
            except PlaywrightError:
                error = None
            raise AssertionError(f"{what or expression!r} was not true within {timeout:g} s"
                                 f"{f' (last exception: {error})' if error else ''}; "
                                 f"console:\n{self.console_tail()}") from None
        try:
            return handle.json_value()
        finally:
            handle.dispose()

    def rtp_stats(self, pc: str) -> dict[str, Any]:
        """RTP counters of the RTCPeerConnection `pc` (a JS expression), summed per kind:
        {"inbound": {"audio": {"packets", "bytes", "packetsLost", "totalAudioEnergy"?, "streams"},
                     "video": {..., "framesDecoded"}},
         "outbound": {"audio": {"packets", "bytes", ...}, ...}, "codecs": {"inbound-audio": "audio/opus", ...}}"""
        return self._bounded(f"({_JS_RTP_STATS})({pc})", None, f"rtp_stats({pc})", None)

    def packets(self, pc: str, direction: str, kind: str) -> int:
        """RTP packets received (direction "inbound") or sent ("outbound") for "audio"/"video"."""
        return int(self.rtp_stats(pc)[direction].get(kind, {}).get("packets", 0))

    def wait_for_packets(self, pc: str, direction: str, kind: str, at_least: int, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while True:
            count = self.packets(pc, direction, kind)
            if count >= at_least:
                return count
            if time.monotonic() > deadline:
                raise AssertionError(f"{pc}: only {count} {direction} {kind} RTP packets after {timeout:g} s "
                                     f"(wanted {at_least}); console:\n{self.console_tail()}")
            time.sleep(0.1)

    def selected_pair(self, pc: str) -> dict[str, Any] | None:
        """The selected ICE candidate pair of `pc`: {"local": {"address", "port", "protocol", "candidateType"},
        "remote": {...}, "state", "nominated", "bytesSent", "bytesReceived"}, or None before ICE selected one."""
        return self._bounded(f"({_JS_SELECTED_PAIR})({pc})", None, f"selected_pair({pc})", None)

    def dominant_frequency(self, source: str, seconds: float = 1.5, min_db: float = -70.0) -> float | None:
        """Dominant frequency (Hz, median over ~20 analyser frames per second) of the audio in `source`, a JS
        expression giving a MediaStream, a MediaStreamTrack or an <audio>/<video> element; None when it stayed
        below `min_db` dBFS the whole time."""
        return self.frequency_report(source, seconds, min_db)["hz"]

    def frequency_report(self, source: str, seconds: float = 1.5, min_db: float = -70.0) -> dict[str, Any]:
        """What dominant_frequency measured: {"hz", "frames", "loudFrames", "sampleRate", "peaks": [{hz, db}]}."""
        return self._bounded(f"({_JS_DOMINANT_FREQUENCY})([{source}, args[0][0], args[0][1]])", [seconds, min_db],
                             f"frequency_report({source})", seconds + self.default_timeout)

    def console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.console[-lines:]) or "(nothing)"

    def close(self) -> None:
        try:
            self.page.close()
        except PlaywrightError:
            pass


class Browser:
    """Headless Chromium in the current network namespace. Use as a context manager (or start()/stop()).

    fake_audio: a WAV file the fake microphone plays in a loop instead of the default 400 Hz beeps
    (--use-file-for-fake-audio-capture; 48 kHz or 8 kHz mono 16-bit both work).
    extra_args: more Chromium switches. A second --disable-features would replace ours: pass features to
    `disabled_features` instead.
    """

    def __init__(self, workdir: Path | None = None, fake_audio: str | Path | None = None,
                 extra_args: tuple[str, ...] | list[str] = (), disabled_features: tuple[str, ...] = (),
                 executable: str = CHROMIUM, timeout: float = 15.0, launch_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir) if workdir is not None else None
        self.fake_audio = Path(fake_audio).resolve() if fake_audio is not None else None
        self.executable = executable
        self.timeout = timeout
        self.launch_timeout = launch_timeout
        args = list(CHROMIUM_ARGS)
        if disabled_features:
            args = [a for a in args if not a.startswith("--disable-features=")]
            args.append("--disable-features=" + ",".join((*DISABLED_FEATURES, *disabled_features)))
        if self.fake_audio is not None:
            if "," in str(self.fake_audio) or "%" in str(self.fake_audio):
                raise ValueError(f"{self.fake_audio}: Chromium can't take ',' or '%' in this path")
            args.append(f"--use-file-for-fake-audio-capture={self.fake_audio}")
        args += list(extra_args)
        self.args = args
        self.tempdir: Path | None = None      # holds profile/ (--user-data-dir) and home/ (HOME, XDG_*)
        self.profile: Path | None = None
        self.version: str | None = None
        self.launch_seconds: float | None = None
        self._playwright: Playwright | None = None
        self._context: Any = None
        self._pages: list[BrowserPage] = []
        self._process_group: int | None = None

    # --- life cycle ---

    def start(self) -> Browser:
        if self._context is not None:
            raise RuntimeError("browser already started")
        if not os.access(self.executable, os.X_OK):
            raise RuntimeError(f"{self.executable} not found: install the Debian package chromium")
        try:
            if self.workdir is not None:
                self.workdir.mkdir(parents=True, exist_ok=True)
            self.tempdir = Path(tempfile.mkdtemp(prefix="chromium-", dir=self.workdir)).resolve()
            self.profile = self.tempdir / "profile"
            home = self.tempdir / "home"
            home.mkdir()
            # Chromium's crashpad handlers keep their database in $HOME/.config/chromium and PulseAudio's client
            # writes $HOME/.config/pulse: point HOME and XDG_* into the temporary dir so nothing lands elsewhere
            env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                   "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local" / "share")}
            started = time.monotonic()
            self._playwright = _Driver.acquire()
            self._context = self._playwright.chromium.launch_persistent_context(
                str(self.profile), executable_path=self.executable, headless=True, args=self.args,
                timeout=1000 * self.launch_timeout, env=env,
            )
            self.launch_seconds = time.monotonic() - started
            self._context.set_default_timeout(1000 * self.timeout)
            self._process_group = self._find_process_group()
            browser = self._context.browser
            self.version = browser.version if browser is not None else None
        except BaseException:
            self.stop()
            raise
        return self

    def page(self, url: str | None = None, timeout: float | None = None) -> BrowserPage:
        """A new tab, optionally loaded with `url` (waits for its load event, at most `timeout` seconds)."""
        if self._context is None:
            raise RuntimeError("browser not started")
        pages = self._context.pages
        # a persistent context opens with one blank tab: use it for the first page
        raw = pages[0] if pages and not self._pages and pages[0].url == "about:blank" else self._context.new_page()
        page = BrowserPage(raw, self.timeout)
        self._pages.append(page)
        if url is not None:
            page.goto(url, timeout)
        return page

    def stop(self, timeout: float = 15.0) -> None:
        """Close the browser (and the driver, if no other Browser uses it); kill any leftover process of this
        browser. Idempotent. If closing takes longer than `timeout` seconds (a wedged driver), a watchdog kills
        the browser and the driver, which makes the pending Playwright call fail instead of hanging."""
        context, self._context = self._context, None
        playwright, self._playwright = self._playwright, None
        self._pages.clear()
        watchdog = threading.Timer(timeout, self._kill_everything)
        watchdog.daemon = True
        watchdog.start()
        try:
            if context is not None:
                try:
                    context.close()
                except Exception:  # the browser may already be gone; the kill below covers it
                    pass
            if playwright is not None:
                _Driver.release()
        finally:
            watchdog.cancel()
            self._kill_leftovers()
            if self.tempdir is not None:
                shutil.rmtree(self.tempdir, ignore_errors=True)
                self.tempdir = None
                self.profile = None

    def _kill_everything(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _Driver.kill()

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- processes ---

    def pids(self) -> list[int]:
        """Every live process of this browser: its command line names our temporary dir (the browser and its
        helpers: --user-data-dir; crashpad handlers, which leave the group: --database under our HOME), or it is
        in the browser's process group."""
        marker = str(self.tempdir).encode() if self.tempdir is not None else None
        found = []
        for pid, cmdline in _processes():
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if (marker is not None and marker in cmdline) or (self._process_group is not None
                                                               and group == self._process_group):
                found.append(pid)
        return found

    def _find_process_group(self) -> int | None:
        # Playwright starts Chromium detached (its own process group); remember the group to kill it for sure
        marker = f"--user-data-dir={self.profile}".encode()
        for pid, cmdline in _processes():
            if marker in cmdline:
                try:
                    group = os.getpgid(pid)
                except ProcessLookupError:
                    continue
                if group == pid:
                    return group
        return None

    @staticmethod
    def _children_matching(marker: bytes) -> list[int]:
        me = os.getpid()
        found = []
        for pid, cmdline in _processes():
            if marker in cmdline:
                try:
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        parent = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if parent == me:
                    found.append(pid)
        return found

    def _kill_leftovers(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Chromium processes {pids} survived SIGKILL")
            time.sleep(0.05)
        self._process_group = None


def _processes() -> list[tuple[int, bytes]]:
    """(pid, command line) of every process we can see."""
    result = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    result.append((int(entry), f.read()))
            except OSError:
                continue
    return result


class StaticServer:
    """A tiny HTTP server on 127.0.0.1 (random port) serving in-memory files, in a thread.

        with StaticServer({"/call.html": html}) as server:
            browser.page(server.url("/call.html"))
    """

    def __init__(self, files: dict[str, str | bytes], host: str = "127.0.0.1", port: int = 0) -> None:
        self.files = {path: (body.encode() if isinstance(body, str) else body) for path, body in files.items()}
        files_ = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = files_.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                kind = "text/html; charset=utf-8" if self.path.endswith((".html", "/")) else \
                    "application/javascript" if self.path.endswith(".js") else "application/octet-stream"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> StaticServer:
        # the thread inherits the creating thread's network namespace: start it inside the test's namespace
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"static-http-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> StaticServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def describe(value: Any) -> str:
    """Compact JSON, for assertion messages."""
    return json.dumps(value, sort_keys=True, default=str)
