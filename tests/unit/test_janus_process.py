"""The Janus child: the generated config folder, supervision (restarts, one SIGTERM, SIGKILL fallback) with a fake
reactor, and the launcher's process settings (run for real: it is a few milliseconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted.logger import Logger

from sylk.gateway.config import ConfigError, parse_config
from sylk.gateway.janus import process
from sylk.gateway.janus.process import (MAX_RESTART_DELAY, MIN_RESTART_DELAY, STABLE_AFTER, STOP_TIMEOUT,
                                        JanusProcess, find_library_dir, render_janus_config)


def fake_janus_install(root: Path) -> Path:
    """A folder shaped like Debian's /usr/lib/<arch>/janus with a few modules in it."""
    modules = {"plugins": ["libjanus_sip.so", "libjanus_videoroom.so", "libjanus_echotest.so"],
               "transports": ["libjanus_websockets.so", "libjanus_http.so"],
               "loggers": ["libjanus_jsonlog.so"], "events": ["libjanus_sampleevh.so"]}
    for folder, names in modules.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).touch()
    return root


class ConfigFolderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp())
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.root)])
        self.library = fake_janus_install(self.root / "janus")

    def render(self, text: str = "") -> dict[str, str]:
        config = parse_config(text)
        return render_janus_config(config, self.library, self.root / "conf", self.root / "conf" / "api.sock",
                                   "the-secret")

    def test_only_the_sip_plugin_and_websockets_stay_enabled(self) -> None:
        janus = self.render()["janus.jcfg"]
        self.assertIn('disable = "libjanus_echotest.so,libjanus_videoroom.so"', janus)
        self.assertIn('disable = "libjanus_http.so"', janus)
        self.assertIn('disable = "libjanus_jsonlog.so"', janus)
        self.assertIn('api_secret = "the-secret"', janus)
        self.assertIn("reclaim_session_timeout = 0", janus)
        self.assertIn(f'plugins_folder = "{self.library}/plugins"', janus)

    def test_websocket_api_only_on_a_private_unix_socket(self) -> None:
        transport = self.render()["janus.transport.websockets.jcfg"]
        self.assertIn(f'ws_unix = "{self.root}/conf/api.sock"', transport)
        self.assertNotIn("ws_port", transport)  # a TCP port would let any local user talk to Janus
        self.assertIn("admin_ws = false", transport)
        self.assertIn('json = "compact"', transport)

    def test_the_admin_api_only_when_asked_and_only_on_a_unix_socket(self) -> None:
        self.assertNotIn("admin_secret", self.render()["janus.jcfg"])
        config = parse_config("[Janus]\nadmin_api = yes\n")
        files = render_janus_config(config, self.library, self.root / "conf", self.root / "conf" / "api.sock",
                                    "the-secret", "admin-secret")
        self.assertIn('admin_secret = "admin-secret"', files["janus.jcfg"])
        transport = files["janus.transport.websockets.jcfg"]
        self.assertIn("admin_ws = true", transport)
        self.assertIn(f'admin_ws_unix = "{self.root}/conf/admin.sock"', transport)
        self.assertNotIn("admin_ws_port", transport)

    def test_a_runtime_folder_open_to_others_is_refused(self) -> None:
        folder = self.root / "run" / "janus"
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {self.library}\n"
                              f"runtime_dir = {self.root / 'run'}\n")
        with self.assertRaises(ConfigError) as raised:
            JanusProcess(config, Clock())
        self.assertIn("open to other users (mode 755)", str(raised.exception))
        folder.chmod(0o700)
        self.assertEqual(JanusProcess(config, Clock()).api_socket, folder / "api.sock")

    def test_a_runtime_folder_of_another_user_is_refused(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("needs root to give a folder away")
        folder = self.root / "run" / "janus"
        folder.mkdir(parents=True, mode=0o700)
        os.chown(folder, 12345, -1)
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {self.library}\n"
                              f"runtime_dir = {self.root / 'run'}\n")
        with self.assertRaises(ConfigError) as raised:
            JanusProcess(config, Clock())
        self.assertIn("belongs to user 12345", str(raised.exception))

    def test_a_runtime_folder_too_long_for_a_socket_is_refused(self) -> None:
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {self.library}\n"
                              f"runtime_dir = {self.root / ('x' * 120)}\n")
        with self.assertRaises(ConfigError) as raised:
            JanusProcess(config, Clock())
        self.assertIn("too long a path", str(raised.exception))

    def test_interface_sets_ice_and_sip_addresses(self) -> None:
        files = self.render("[Janus]\ninterface = 192.0.2.7\n")
        self.assertIn('ice_enforce_list = "192.0.2.7"', files["janus.jcfg"])
        self.assertIn('interface = "192.0.2.7"', files["janus.jcfg"])
        for option in ("local_ip", "local_media_ip", "sdp_ip"):
            self.assertIn(f'{option} = "192.0.2.7"', files["janus.plugin.sip.jcfg"])

    def test_public_ip_is_announced_behind_1_to_1_nat(self) -> None:
        files = self.render("[Janus]\ninterface = 10.0.0.5\npublic_ip = 203.0.113.9\n")
        self.assertIn('nat_1_1_mapping = "203.0.113.9"', files["janus.jcfg"])
        sip = files["janus.plugin.sip.jcfg"]
        self.assertIn('local_ip = "10.0.0.5"', sip)
        self.assertIn('sdp_ip = "203.0.113.9"', sip)

    def test_unusable_runtime_dir_is_a_config_error(self) -> None:
        (self.root / "file").touch()
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {self.library}\n"
                              f"runtime_dir = {self.root / 'file'}\n")
        with self.assertRaises(ConfigError) as raised:
            JanusProcess(config, Clock())
        self.assertIn("[Janus] runtime_dir", str(raised.exception))

    def test_without_interface_janus_detects_addresses(self) -> None:
        files = self.render()
        self.assertNotIn("ice_enforce_list", files["janus.jcfg"])
        self.assertNotIn("local_ip", files["janus.plugin.sip.jcfg"])

    def test_sip_plugin_settings(self) -> None:
        sip = self.render("[WebRTCGateway]\nregister_ttl = 300\nuser_agent = Test \"UA\"\n"
                          "[Janus]\nsip_transaction_timeout = 4\nsip_rtp_port_range = 40000-40999\n"
                          )["janus.plugin.sip.jcfg"]
        self.assertIn("register_ttl = 300", sip)
        self.assertIn("sip_timer_t1x64 = 4000", sip)
        self.assertIn('rtp_port_range = "40000-40999"', sip)
        self.assertIn('user_agent = "Test \\"UA\\""', sip)  # quotes escaped for libconfig
        self.assertIn("keepalive_interval = 0", sip)

    def test_library_dir_must_hold_what_the_gateway_needs(self) -> None:
        (self.library / "plugins" / "libjanus_sip.so").unlink()
        with self.assertRaises(ConfigError) as raised:
            find_library_dir(parse_config(f"[Janus]\nlibrary_dir = {self.library}\n"))
        self.assertIn("[Janus] library_dir", str(raised.exception))
        self.assertIn("libjanus_sip.so", str(raised.exception))

    def test_missing_binary_is_a_config_error(self) -> None:
        config = parse_config(f"[Janus]\nbinary = {self.root}/nope\nlibrary_dir = {self.library}\n")
        with self.assertRaises(ConfigError) as raised:
            JanusProcess(config, Clock())
        self.assertIn("[Janus] binary", str(raised.exception))


class FakeProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class FakeProcessReactor(Clock):
    """A Clock that also records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], FakeProcessTransport]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None, **kwargs: Any) -> Any:
        transport = FakeProcessTransport(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, args, transport))
        return transport


class SupervisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp())
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.root)])
        library = fake_janus_install(self.root / "janus")
        self.reactor = FakeProcessReactor()
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {library}\n"
                              f"runtime_dir = {self.root / 'run'}\n")
        self.janus = JanusProcess(config, self.reactor)
        self.janus.startService()

    def die(self, index: int = -1) -> None:
        protocol, _, _ = self.reactor.spawned[index]
        protocol.processEnded(Failure(ProcessTerminated(signal=9)))

    def test_start_writes_the_config_and_runs_janus_through_the_launcher(self) -> None:
        ((_, args, _),) = self.reactor.spawned
        self.assertEqual(args[1:3], ["-m", "sylk.gateway.janus.launcher"])
        self.assertEqual(args[-4:], ["/bin/true", "--configs-folder", str(self.root / "run" / "janus"),
                                     "--disable-colors"])
        folder = self.root / "run" / "janus"
        self.assertEqual(sorted(p.name for p in folder.iterdir()),
                         ["janus.jcfg", "janus.plugin.sip.jcfg", "janus.transport.websockets.jcfg"])
        self.assertEqual(oct(folder.stat().st_mode & 0o777), "0o700")
        self.assertIn(f'api_secret = "{self.janus.api_secret}"', (folder / "janus.jcfg").read_text())
        self.assertEqual(self.janus.pid, 1000)

    def test_a_janus_that_dies_young_is_restarted_with_growing_delays(self) -> None:
        delays = []
        for _ in range(8):
            self.die()
            before = len(self.reactor.spawned)
            waited = 0.0
            while len(self.reactor.spawned) == before:
                self.reactor.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays[0], MIN_RESTART_DELAY)
        self.assertEqual(delays[1], MIN_RESTART_DELAY * 2)
        self.assertEqual(delays[-1], MAX_RESTART_DELAY)
        self.flushLoggedErrors()

    def test_a_janus_that_ran_a_while_is_restarted_at_once(self) -> None:
        self.die()
        self.reactor.advance(MIN_RESTART_DELAY)
        self.reactor.advance(STABLE_AFTER)
        self.die()
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)

    def test_output_lines_are_logged_with_janus_levels(self) -> None:
        logged: list[dict[str, Any]] = []
        self.patch(process, "janus_log", Logger(namespace="janus", observer=logged.append))
        protocol, _, _ = self.reactor.spawned[0]
        protocol.childDataReceived(1, b"Starting Meetecho Janus\n[ERR] [sip] something\nhalf a ")
        protocol.childDataReceived(2, b"[WARN] on stderr\n")
        protocol.childDataReceived(1, b"line\n")
        self.assertEqual([(e["line"], e["log_level"].name) for e in logged],
                         [("Starting Meetecho Janus", "info"), ("[ERR] [sip] something", "error"),
                          ("[WARN] on stderr", "warn"), ("half a line", "info")])

    def test_stop_sends_one_sigterm_and_waits_for_the_exit(self) -> None:
        _, _, transport = self.reactor.spawned[0]
        stopped = self.janus.stopService()
        self.assertEqual(transport.signals, ["TERM"])
        self.assertNoResult(stopped)
        self.reactor.advance(STOP_TIMEOUT - 1)
        self.assertEqual(transport.signals, ["TERM"])
        self.reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.assertFalse((self.root / "run" / "janus").exists())  # the API secret does not outlive Janus
        self.reactor.advance(100)
        self.assertEqual(transport.signals, ["TERM"])
        self.assertEqual(len(self.reactor.spawned), 1)  # not restarted

    def test_janus_output_never_shows_an_ha1(self) -> None:
        logged: list[dict[str, Any]] = []
        self.patch(process, "janus_log", Logger(namespace="janus", observer=logged.append))
        self.janus.janus_output("[sip] Registering user sip:a@b (auth=feedfacecafebeef0123456789abcdef, secret a)")
        self.assertEqual(logged[0]["line"], "[sip] Registering user sip:a@b (auth=***, secret a)")

    def test_stop_when_janus_was_reaped_but_not_yet_reported(self) -> None:
        _, _, transport = self.reactor.spawned[0]

        def gone(signal: str) -> None:
            raise ProcessExitedAlready()
        transport.signalProcess = gone
        self.successResultOf(self.janus.stopService())
        self.assertFalse((self.root / "run" / "janus").exists())

    def test_stop_kills_a_janus_that_does_not_exit(self) -> None:
        _, _, transport = self.reactor.spawned[0]
        stopped = self.janus.stopService()
        self.reactor.advance(STOP_TIMEOUT)
        self.assertEqual(transport.signals, ["TERM", "KILL"])
        self.die(0)
        self.successResultOf(stopped)

    def test_the_account_budget_follows_the_open_files_limit_janus_really_got(self) -> None:
        import resource
        (_, _, transport), = self.reactor.spawned
        transport.pid = os.getpid()  # a process whose limit we know
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = max(1, min(8000, (soft - 1024) // 10))
        self.assertEqual(self.janus.account_budget(), expected)
        transport.pid = 2 ** 22 + 1  # no such process: the configured max_open_files (65536)
        self.assertEqual(self.janus.account_budget(), 6451)

    def test_max_accounts_overrides_the_budget(self) -> None:
        library = self.root / "janus"
        config = parse_config(f"[Janus]\nbinary = /bin/true\nlibrary_dir = {library}\n"
                              f"runtime_dir = {self.root / 'run2'}\nmax_accounts = 7\n")
        self.assertEqual(JanusProcess(config, self.reactor).account_budget(), 7)

    def test_a_stalled_janus_is_killed_and_started_again(self) -> None:
        (_, _, transport), = self.reactor.spawned
        self.reactor.advance(STABLE_AFTER)
        self.janus.kill_stalled()
        self.assertEqual(transport.signals, ["KILL"])
        self.die()
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stop_while_waiting_to_restart(self) -> None:
        self.die()
        self.successResultOf(self.janus.stopService())
        self.reactor.advance(MAX_RESTART_DELAY)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.flushLoggedErrors()


class LauncherTests(SynchronousTestCase):
    def test_janus_runs_without_core_dumps_in_its_own_session_with_more_files(self) -> None:
        script = 'ulimit -c; ulimit -n; cut -d" " -f6 /proc/$$/stat; echo $$'  # field 6: session id
        result = subprocess.run([sys.executable, "-m", "sylk.gateway.janus.launcher", "--max-open-files", "4096",
                                 "--", "/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.assertEqual(result.returncode, 0, result.stderr)
        core, files, session, pid = result.stdout.split()
        self.assertEqual(core, "0")
        self.assertGreaterEqual(int(files), 4096)
        self.assertEqual(session, pid)  # the shell leads its own session

    def test_without_a_command_it_refuses(self) -> None:
        result = subprocess.run([sys.executable, "-m", "sylk.gateway.janus.launcher"], capture_output=True,
                                text=True, timeout=30, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no command given", result.stderr)
