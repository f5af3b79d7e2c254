"""JanusProcess: Janus as a supervised child of the gateway (the default, `[Janus] spawn = yes`).

On start it writes a private Janus config folder (the WebSocket API on a Unix socket in that folder, which only the
gateway's user can reach, with a fresh API secret; every plugin but the SIP plugin and every transport but
WebSockets disabled), then runs `janus -F <folder>` through
`sylk.gateway.janus.launcher` (core dumps off, a raised open-files limit, its own session, terminated if the
gateway dies). If Janus exits it is started again, after a delay that grows while it keeps dying young. On stop it
gets exactly one SIGTERM (a second one can crash Janus mid-shutdown) and SIGKILL only if it has not exited in time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from sylk.gateway.config import ConfigError, Config
from sylk.gateway.janus.launcher import accounts_for

WANTED_PLUGINS = {"libjanus_sip.so"}
WANTED_TRANSPORTS = {"libjanus_websockets.so"}
STOP_TIMEOUT = 10.0
MIN_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0  # a Janus that ran this long before dying is restarted at once
API_SOCKET = "api.sock"  # the Janus API's Unix socket, in the private config folder
ADMIN_SOCKET = "admin.sock"  # the Admin API's (`[Janus] admin_api`), beside it, and its secret in this file:
ADMIN_SECRET_FILE = "admin_secret"
MAX_SOCKET_PATH = 107  # bytes in sun_path, with its terminating NUL

# Janus's own output, relayed line by line under its own namespace (a module-level Logger keeps it: one on a class
# would be re-bound to the class's namespace on every access).
janus_log = Logger(namespace="janus")
# 32 hex digits: an HA1 (the SIP plugin logs it at debug_level 5 and up) or the API secret this module makes.
_HEX_SECRET = re.compile(r"\b[0-9a-fA-F]{32}\b")
# Janus prefixes its log lines with the level; map them onto ours.
_LEVELS = {"[FATAL]": LogLevel.critical, "[ERR]": LogLevel.error, "[WARN]": LogLevel.warn}


def find_library_dir(config: Config) -> Path:
    """Janus's module folder (holding plugins/ and transports/), with the modules the gateway needs in it."""
    janus = config.janus
    if janus.library_dir is not None:
        candidates = [janus.library_dir]
    else:
        candidates = sorted(Path("/usr/lib").glob("*/janus")) + [Path("/usr/lib/janus"), Path("/usr/local/lib/janus")]
    for folder in candidates:
        if all((folder / "plugins" / name).exists() for name in WANTED_PLUGINS) and \
                all((folder / "transports" / name).exists() for name in WANTED_TRANSPORTS):
            return folder
    where = janus.library_dir or ", ".join(str(c) for c in candidates)
    raise ConfigError(f"[Janus] library_dir: no Janus with {', '.join(sorted(WANTED_PLUGINS | WANTED_TRANSPORTS))} "
                      f"found in {where} (install the Debian package janus, or set library_dir)")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _disable_all_but(folder: Path, wanted: set[str]) -> str:
    return _quote(",".join(sorted(p.name for p in folder.glob("*.so") if p.name not in wanted)))


def render_janus_config(config: Config, library_dir: Path, config_dir: Path, api_socket: Path,
                        api_secret: str, admin_secret: str | None = None) -> dict[str, str]:
    """The files of a Janus config folder, by name (libconfig syntax); with `admin_secret`, Janus's Admin API on a
    Unix socket beside the API's."""
    janus, gateway = config.janus, config.gateway
    interface = janus.interface
    general = [
        f"configs_folder = {_quote(str(config_dir))}",
        f"plugins_folder = {_quote(str(library_dir / 'plugins'))}",
        f"transports_folder = {_quote(str(library_dir / 'transports'))}",
        f"events_folder = {_quote(str(library_dir / 'events'))}",
        f"loggers_folder = {_quote(str(library_dir / 'loggers'))}",
        "log_to_stdout = true",
        f"debug_level = {janus.log_level}",
        "debug_colors = false",
        "debug_timestamps = false",
        '''server_name = "sylkgateway"''',
        "session_timeout = 60",
        "reclaim_session_timeout = 0",
        f"api_secret = {_quote(api_secret)}",
        *([f"admin_secret = {_quote(admin_secret)}"] if admin_secret is not None else []),
        "event_loops = 2",  # handles share two loops instead of a thread each
        'protected_folders = ["/bin", "/boot", "/dev", "/etc", "/initrd", "/lib", "/lib32", "/lib64", "/proc", '
        '"/sbin", "/sys", "/usr", "/var"]',
    ]
    nat = ["ignore_mdns = true"]
    if interface is not None:
        general.append(f"interface = {_quote(interface)}")
        nat.append(f"ice_enforce_list = {_quote(interface)}")
    if janus.public_ip is not None:
        nat.append(f"nat_1_1_mapping = {_quote(janus.public_ip)}")
    janus_jcfg = "\n".join([
        "general: {", *(f"    {line}" for line in general), "}",
        "media: {", f"    rtp_port_range = {_quote(str(janus.rtp_port_range))}", "}",
        "nat: {", *(f"    {line}" for line in nat), "}",
        "plugins: {", f"    disable = {_disable_all_but(library_dir / 'plugins', WANTED_PLUGINS)}", "}",
        "transports: {", f"    disable = {_disable_all_but(library_dir / 'transports', WANTED_TRANSPORTS)}", "}",
        "loggers: {", f"    disable = {_disable_all_but(library_dir / 'loggers', set())}", "}",
        "events: {", "    broadcast = false", f"    disable = {_disable_all_but(library_dir / 'events', set())}", "}",
        "",
    ])
    websockets_jcfg = "\n".join([
        "general: {",
        '    json = "compact"',
        "    ws = true",
        f"    ws_unix = {_quote(str(api_socket))}",  # not a TCP port: any local user could connect to that
        "    wss = false",
        "}",
        "admin: {",
        *(["    admin_ws = true", f"    admin_ws_unix = {_quote(str(config_dir / ADMIN_SOCKET))}"]
          if admin_secret is not None else ["    admin_ws = false"]),
        "    admin_wss = false",
        "}",
        "",
    ])
    sip = [
        "keepalive_interval = 0",
        "behind_nat = false",
        f"user_agent = {_quote(gateway.user_agent)}",
        f"register_ttl = {gateway.register_ttl}",
        f"rtp_port_range = {_quote(str(janus.sip_rtp_port_range))}",
        f"sip_timer_t1x64 = {janus.sip_transaction_timeout * 1000}",
        "events = false",
    ]
    if interface is not None:
        sip += [f"local_ip = {_quote(interface)}", f"local_media_ip = {_quote(interface)}"]
    sdp_ip = janus.public_ip or interface
    if sdp_ip is not None:
        sip.append(f"sdp_ip = {_quote(sdp_ip)}")
    sip_jcfg = "\n".join(["general: {", *(f"    {line}" for line in sip), "}", ""])
    return {
        "janus.jcfg": janus_jcfg,
        "janus.transport.websockets.jcfg": websockets_jcfg,
        "janus.plugin.sip.jcfg": sip_jcfg,
    }


class JanusProcess(Service):
    log = Logger()

    def __init__(self, config: Config, reactor: Any, index: int = 0, count: int = 1, *,
                 on_restart: Callable[[str], None] | None = None) -> None:
        """The `index`th of `count` Janus children of a pool: each has its own folder (`janus`, `janus2`, ...) and an
        equal share of the RTP port ranges, so that they never compete for a port. `on_restart` is told the label
        of each Janus that exited unexpectedly and is being restarted."""
        janus = config.janus
        if not os.access(janus.binary, os.X_OK):
            raise ConfigError(f"[Janus] binary: {janus.binary} is not an executable (install the Debian package "
                              f"janus, or set spawn = no and api_url to use a Janus running elsewhere)")
        self.label = "janus" if index == 0 else f"janus{index + 1}"
        self._in_pool = count > 1
        if self._in_pool:
            janus = replace(janus, rtp_port_range=janus.rtp_port_range.share(index, count),
                            sip_rtp_port_range=janus.sip_rtp_port_range.share(index, count))
            config = replace(config, janus=janus)
        self._config = config
        self._reactor = reactor
        self._on_restart = on_restart
        self._library_dir = find_library_dir(config)
        self.api_secret = secrets.token_hex(16)
        self.admin_secret = secrets.token_hex(16) if config.janus.admin_api else None
        self._config_dir = self._make_config_dir()
        self.api_socket = self._config_dir / API_SOCKET
        if len(os.fsencode(self.api_socket)) > MAX_SOCKET_PATH:
            raise ConfigError(f"[Janus] runtime_dir: {self._config_dir} is too long a path for Janus's API socket "
                              f"(at most {MAX_SOCKET_PATH - len(API_SOCKET) - 1} bytes)")
        self._protocol: _JanusProcessProtocol | None = None
        self._restart: IDelayedCall | None = None
        self._delay = MIN_RESTART_DELAY
        self._started_at = 0.0
        self._exited: Deferred[None] | None = None

    @property
    def pid(self) -> int | None:
        transport = self._protocol.transport if self._protocol is not None else None
        return transport.pid if transport is not None else None

    def startService(self) -> None:
        super().startService()
        self._config_dir.mkdir(mode=0o700, exist_ok=True)
        files = render_janus_config(self._config, self._library_dir, self._config_dir, self.api_socket,
                                    self.api_secret, self.admin_secret)
        if self.admin_secret is not None:  # for whoever may read the folder (the gateway's user): diagnostics
            files[ADMIN_SECRET_FILE] = self.admin_secret
        for name, text in files.items():
            path = self._config_dir / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o600)
        self._spawn()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        try:
            stopped = self._terminate()
        except error.ProcessExitedAlready:  # reaped, but processEnded() has not been delivered yet
            stopped = succeed(None)
        stopped.addBoth(self._remove_config_dir)
        return stopped

    # --- internals ---

    def _make_config_dir(self) -> Path:
        """The folder for Janus's config: `runtime_dir`/janus, or systemd's RuntimeDirectory, or a private
        temporary one. Made now, so a bad `runtime_dir` stops the gateway at startup with a clear message."""
        systemd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        runtime_dir = self._config.janus.runtime_dir or (Path(systemd) if systemd else None)
        try:
            if runtime_dir is None:
                return Path(tempfile.mkdtemp(prefix=f"sylkgateway-{self.label}-"))
            folder = runtime_dir / self.label
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check_private(folder)
            return folder
        except OSError as e:
            raise ConfigError(f"[Janus] runtime_dir: cannot create a folder for Janus's configuration: {e}") from None

    def account_budget(self) -> int:
        """How many accounts (SIP stacks) the running Janus can hold: from the open-files limit it really got (the
        launcher may not have been allowed to raise it as far as `max_open_files`), or `[Janus] max_accounts`."""
        if self._config.janus.max_accounts:
            return self._config.janus.max_accounts
        return accounts_for(_open_files_limit(self.pid) or self._config.janus.max_open_files)

    def kill_stalled(self) -> None:
        """Janus stopped answering (deadlocked, or stopped): kill it, and the restart path starts a new one. SIGKILL,
        because a stalled Janus cannot act on SIGTERM (a stopped one would not even receive it until continued)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.exited or not self.running:
            return
        self.log.error("Killing the stalled Janus (pid {pid}) [{label}]", pid=self.pid, label=self.label)
        try:
            protocol.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def _remove_config_dir(self, result: Any) -> Any:
        shutil.rmtree(self._config_dir, ignore_errors=True)  # it holds the API secret
        return result

    def _spawn(self) -> None:
        assert self._config_dir is not None
        janus = self._config.janus
        args = [sys.executable, "-m", "sylk.gateway.janus.launcher", "--max-open-files", str(janus.max_open_files),
                "--", str(janus.binary), "--configs-folder", str(self._config_dir), "--disable-colors"]
        self._protocol = _JanusProcessProtocol(self)
        self._started_at = self._reactor.seconds()
        env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        self._reactor.spawnProcess(self._protocol, args[0], args, env=env)
        self.log.info("Started Janus (pid {pid}) with its API on {socket} [{label}]", pid=self.pid,
                      socket=self.api_socket, label=self.label)

    def _terminate(self) -> Deferred[None]:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.exited:
            return succeed(None)
        self._exited = Deferred()
        protocol.transport.signalProcess("TERM")
        kill = self._reactor.callLater(STOP_TIMEOUT, self._kill, protocol)
        self._exited.addBoth(lambda result: kill.cancel() if kill.active() else None)
        return self._exited

    def _kill(self, protocol: _JanusProcessProtocol) -> None:
        self.log.warn("Janus did not exit {timeout:g} s after SIGTERM; killing it [{label}]", timeout=STOP_TIMEOUT,
                      label=self.label)
        try:
            if protocol.transport is not None:
                protocol.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def process_ended(self, reason: Failure) -> None:
        self._protocol = None
        if self._exited is not None:
            exited, self._exited = self._exited, None
            exited.callback(None)
        if not self.running:
            self.log.info("Janus stopped [{label}]", label=self.label)
            return
        lived = self._reactor.seconds() - self._started_at
        if lived >= STABLE_AFTER:
            self._delay = MIN_RESTART_DELAY
            delay = 0.0
        else:
            delay, self._delay = self._delay, min(self._delay * 2, MAX_RESTART_DELAY)
        self.log.error("Janus exited unexpectedly ({reason}) after {lived:.1f} s; restarting it in {delay:g} s "
                       "[{label}]", label=self.label,
                       reason=reason.value, lived=lived, delay=delay)
        self._restart = self._reactor.callLater(delay, self._respawn)
        if self._on_restart is not None:  # once the restart is scheduled, which must not depend on it
            self._on_restart(self.label)

    def _respawn(self) -> None:
        if self.running:
            self._spawn()

    def janus_output(self, line: str) -> None:
        line = _HEX_SECRET.sub("***", line)
        level = LogLevel.info
        for prefix, mapped in _LEVELS.items():
            if prefix in line[:40]:
                level = mapped
                break
        if self._in_pool:
            janus_log.emit(level, "{janus}: {line}", janus=self.label, line=line)
        else:
            janus_log.emit(level, "{line}", line=line)


def _open_files_limit(pid: int | None) -> int | None:
    """The soft open-files limit of process `pid`, as the kernel reports it."""
    if pid is None:
        return None
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    match = re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE)
    return int(match.group(1)) if match else None


def _check_private(folder: Path) -> None:
    """The folder holds the API secret and Janus's API socket (through which every account's HA1 passes): it must
    be a real folder of ours that nobody else can read or write, or a local user could take Janus's place."""
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"[Janus] runtime_dir: {folder} is not a folder (a link?)")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"[Janus] runtime_dir: {folder} belongs to user {info.st_uid}, not to the gateway's "
                          f"user {os.geteuid()}")
    if info.st_mode & 0o077:
        raise ConfigError(f"[Janus] runtime_dir: {folder} is open to other users (mode "
                          f"{stat.S_IMODE(info.st_mode):o}); it must be 700")


class _JanusProcessProtocol(ProcessProtocol):
    def __init__(self, owner: JanusProcess) -> None:
        self._owner = owner
        self._partial = {1: b"", 2: b""}  # unfinished last line, per output stream
        self.exited = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._owner.janus_output(text)

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self._owner.process_ended(reason)
