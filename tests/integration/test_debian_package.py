"""The Debian package (debian/), end to end: build it from a clean copy of the checkout (scripts/build-deb, which also
runs the unit tests against Debian's Twisted and autobahn), lint it, install it, run `twistd3 sylkgateway --help`,
start the service as its unit does, check a browser gets `ready`, stop it, purge the package and check that nothing
is left running or behind. About 1 minute when the Build-Depends are installed (npm ci fetches the JS build tools).

Without systemd as PID 1 (a container), the unit's ExecStart line is run by hand the way the unit runs it: as the
sylkgateway user, with its RuntimeDirectory and StateDirectory, no new privileges, no capabilities, and a read-only
file system but for those two folders (ProtectSystem=strict), inside a network namespace of its own. The package is
never left installed: other tests start their own gateways."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.netns import network_namespace

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's python3 and twistd3, not the venv's
ENV = {**os.environ, "PATH": SYSTEM_PATH, "DEBIAN_FRONTEND": "noninteractive"}
URL = "ws://127.0.0.1:10888/webrtcgateway/ws"  # what the shipped config.ini listens on
ETC = Path("/etc/sylkgateway")
RUN = Path("/run/sylkgateway")
STATE = Path("/var/lib/sylkgateway")
UNIT = Path("/lib/systemd/system/sylkgateway.service")

pytestmark = pytest.mark.timeout(1800)

# sylkgateway.service's ExecStart, its user and folders, and (approximately) its sandbox, without systemd.
BY_HAND = f"""
set -e
install -d -o sylkgateway -g sylkgateway -m 0750 {RUN} {STATE}
exec unshare -m --propagation private sh -c '
  set -e
  mount --bind {RUN} {RUN}
  mount --bind {STATE} {STATE}
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount --bind / / && mount -o remount,bind,ro /
  mount -o remount,bind,rw {RUN} && mount -o remount,bind,rw {STATE}
  n=$(ulimit -Hn); [ "$n" -le 65536 ] || n=65536
  exec prlimit --nofile=$n:$n setpriv --reuid sylkgateway --regid sylkgateway --init-groups --no-new-privs \\
    --inh-caps=-all --bounding-set=-all -- env -i PATH={SYSTEM_PATH} LANG=C.UTF-8 \\
    RUNTIME_DIRECTORY={RUN} STATE_DIRECTORY={STATE} \\
    /usr/bin/twistd3 --nodaemon --pidfile= sylkgateway --config {ETC}/config.ini'
"""


def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def installed() -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "sylkgateway"], env=ENV, capture_output=True,
                            text=True, timeout=30)
    return "installed" in status.stdout and "not-installed" not in status.stdout


def service_processes() -> list[str]:
    """The live processes of the package's user ("PID ARGS"): the gateway and its Janus children."""
    result = subprocess.run(["ps", "-u", "sylkgateway", "-o", "pid=,stat=,args="], capture_output=True, text=True,
                            timeout=30)
    lines = [line.split(None, 2) for line in result.stdout.splitlines()]
    return [f"{line[0]} {line[2] if len(line) > 2 else ''}" for line in lines if not line[1].startswith("Z")]


def kill_leftovers() -> None:
    """After a failure: whatever this test started as the package's user and is still running, by its pid."""
    for line in service_processes():
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def systemd_runs() -> bool:
    try:
        state = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return state.stdout.strip() in ("running", "degraded", "starting")


def wait_ready(deadline: float) -> dict[str, object]:
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect

    while True:
        try:
            with connect(URL, subprotocols=["sylkRTC-1"], open_timeout=5) as ws:  # type: ignore[list-item]
                return json.loads(ws.recv(timeout=20))  # type: ignore[no-any-return]
        except (OSError, TimeoutError, InvalidHandshake):  # not listening yet, or 503 until a Janus is connected
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """The built .deb; whatever happens, it is purged at the end."""
    if os.geteuid() != 0:
        pytest.skip("installing a Debian package needs root")
    if shutil.which("dpkg-buildpackage", path=SYSTEM_PATH) is None:
        pytest.skip("dpkg-buildpackage is missing (apt-get install dpkg-dev)")
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout and git: scripts/build-deb copies the files git tracks or would track")
    if installed():
        pytest.skip("sylkgateway is installed already: this test would purge it")
    out = tmp_path / "dist"
    result = subprocess.run([str(ROOT / "scripts/build-deb"), str(out)], env=ENV, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    log = next(out.glob("sylkgateway_*_build.log")).read_text()
    assert " passed" in log, log[-3000:]  # the build-time unit tests ran (dh_auto_test fails the build if any fails)
    try:
        yield next(out.glob("sylkgateway_*_all.deb"))
    finally:
        kill_leftovers()
        subprocess.run(["apt-get", "purge", "-y", "-q", "sylkgateway"], env=ENV, capture_output=True, timeout=300)


def test_build_install_start_ready_stop_purge(package: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    if shutil.which("lintian", path=SYSTEM_PATH):
        run("lintian", "--fail-on", "error", str(package), timeout=300)

    run("apt-get", "install", "-y", "-q", str(package), timeout=600)
    assert installed()
    assert (ETC / "config.ini").stat().st_mode & 0o777 == 0o640
    assert ETC.joinpath("config.ini").group() == "sylkgateway"
    assert "--config" in run("twistd3", "sylkgateway", "--help", timeout=60).stdout
    if shutil.which("systemd-analyze", path=SYSTEM_PATH):
        # The installed unit as systemd reads it (no running systemd needed): each key known to this systemd, each
        # value valid, ExecStart present. systemd only warns about what it ignores, so any output is a failure.
        verified = run("systemd-analyze", "verify", str(UNIT), timeout=60)
        assert verified.stdout + verified.stderr == "", verified.stderr

    log = tmp_path / "gateway.log"
    if systemd_runs():
        run("systemctl", "restart", "sylkgateway", timeout=120)
        ready = wait_ready(time.monotonic() + 60)
        run("systemctl", "stop", "sylkgateway", timeout=120)
    else:
        with network_namespace(), log.open("w") as output:
            gateway = subprocess.Popen(["sh", "-c", BY_HAND], env=ENV, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                ready = wait_ready(time.monotonic() + 60)
                assert any("/usr/bin/janus" in line for line in service_processes()), service_processes()
                gateway.send_signal(signal.SIGTERM)  # what `systemctl stop` sends (KillMode=mixed)
                code = gateway.wait(timeout=60)
                # twistd ends itself with the signal that stopped it, which systemd counts as a clean stop.
                assert code in (0, -signal.SIGTERM), f"exit status {code}: {log.read_text()[-3000:]}"
            finally:
                if gateway.poll() is None:
                    os.killpg(gateway.pid, signal.SIGKILL)
                    gateway.wait(timeout=30)
                    kill_leftovers()  # Janus children have sessions of their own
    assert ready == {"sylkrtc": "event", "event": "ready"}, log.read_text()[-3000:] if log.exists() else ready
    deadline = time.monotonic() + 30
    while service_processes() and time.monotonic() < deadline:  # Janus children exit after the gateway
        time.sleep(0.5)
    assert service_processes() == []
    assert not RUN.exists() or not any(RUN.iterdir()), "the Janus config folders are removed at exit"

    run("apt-get", "purge", "-y", "-q", "sylkgateway", timeout=300)
    assert not installed()
    assert service_processes() == []
    for path in (ETC, STATE, RUN, UNIT,
                 Path("/usr/lib/python3/dist-packages/twisted/plugins/sylkgateway.py")):
        assert not path.exists(), path
    overrides = subprocess.run(["dpkg-statoverride", "--list"], env=ENV, capture_output=True, text=True, timeout=30)
    assert "sylkgateway" not in overrides.stdout
    print(f"install to purge: {time.monotonic() - started:.0f} s")
