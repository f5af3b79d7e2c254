"""sylkgateway installed beside SylkServer, tested with a stand-in SylkServer: a regular `sylk` package (with
sylk/__init__.py, sylk/applications/__init__.py, sylk/web.py mimicking SylkServer's interface) in one site folder
with our files, as pip puts them. Each check runs in a fresh Python (the test process has its own `sylk`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STANDIN = {
    "sylk/__init__.py": "__version__ = '0.0-standin'\n",
    "sylk/applications/__init__.py": '''
        import abc

        class ApplicationRegistry:
            instance = None
            def __new__(cls):
                if cls.instance is None:
                    cls.instance = super().__new__(cls)
                    cls.instance.application_map = {}
                return cls.instance
            def __contains__(self, name):
                return name in self.application_map
            def __iter__(self):
                return iter(list(self.application_map.values()))
            def add(self, app_class):
                app = app_class()  # as SylkServer does: instantiated when its module is imported
                self.application_map[app_class.__name__[:-11].lower()] = app

        class SylkApplicationMeta(abc.ABCMeta):
            def __init__(cls, name, bases, dic):
                super().__init__(name, bases, dic)
                if name != 'SylkApplication':
                    ApplicationRegistry().add(cls)

        class SylkApplication(metaclass=SylkApplicationMeta):
            @abc.abstractmethod
            def start(self): pass
            @abc.abstractmethod
            def stop(self): pass
            @abc.abstractmethod
            def incoming_session(self, session): pass
            @abc.abstractmethod
            def incoming_subscription(self, subscribe_request, data): pass
            @abc.abstractmethod
            def incoming_referral(self, refer_request, data): pass
            @abc.abstractmethod
            def incoming_message(self, message_request, data): pass
        ''',
    "sylk/applications/echo/__init__.py": "# a SylkServer application of its own\n",
    "sylk/web.py": '''
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class WebServer:
            def __init__(self):
                self.base = Resource()
                self.site = Site(self.base)
                self.listener = None
            def register_resource(self, path, resource):
                self.base.putChild(path, resource)
            def start(self):
                from twisted.internet import reactor
                self.listener = reactor.listenTCP(0, self.site, interface='127.0.0.1')
            def stop(self):
                return self.listener.stopListening()

        server = WebServer()
        ''',
    # python-application's ConfigSection, reading its settings from STANDIN_SETTINGS instead of a file
    "application/__init__.py": "",
    "application/configuration/__init__.py": '''
        import json, os

        class ConfigSection:
            def __init_subclass__(cls, **kw):
                super().__init_subclass__(**kw)
                for name, value in json.loads(os.environ.get('STANDIN_SETTINGS', '{}')).items():
                    setattr(cls, name, value)
        ''',
}


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """The stand-in SylkServer and our files in one site folder, as pip installs them into one environment."""
    folder = tmp_path / "site-packages"
    for name, text in STANDIN.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "sylk/gateway", folder / "sylk/gateway", ignore=ignore)
    shutil.copytree(ROOT / "sylk/applications/sylkgateway", folder / "sylk/applications/sylkgateway", ignore=ignore)
    return folder


def run(site: Path, script: str, settings: dict[str, str] | None = None) -> dict[str, object]:
    """`script` in a fresh Python with `site` first on its path (and only the dependencies after it); it prints
    one JSON line last."""
    # a venv's site-packages, or Debian's dist-packages (the package build runs these tests with Debian's python3)
    dependencies = [entry for entry in sys.path if entry and Path(entry).resolve() != ROOT
                    and Path(entry).name in ("site-packages", "dist-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *dependencies]),
           "STANDIN_SETTINGS": json.dumps(settings or {})}
    result = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(script)], cwd=site, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_our_files_add_to_sylkservers_package_without_replacing_any() -> None:
    # sylk/ and sylk/applications/ have no __init__.py of ours: SylkServer's stay the ones installed.
    ours = {path.relative_to(ROOT).as_posix() for path in (ROOT / "sylk").rglob("*.py")}
    assert not ours & set(STANDIN), ours & set(STANDIN)
    assert "sylk/applications/sylkgateway/__init__.py" in ours


def test_importing_the_application_uses_sylkservers_package_and_starts_nothing(site: Path) -> None:
    found = run(site, """
        import json, os, sys, threading
        import sylk.applications.sylkgateway as app
        from sylk.applications import ApplicationRegistry
        import sylk.gateway.service
        def target(fd):
            try:
                return os.readlink(f'/proc/self/fd/{fd}')
            except OSError:  # the folder listing's own descriptor, closed by now
                return ''
        sockets = [fd for fd in os.listdir('/proc/self/fd') if target(fd).startswith('socket:')]
        print(json.dumps({
            'sylk': sylk.__file__, 'gateway': sylk.gateway.__file__, 'app': app.__file__,
            'registered': sorted(name for name in ApplicationRegistry().application_map),
            'service': ApplicationRegistry().application_map['sylkgateway'].gateway.service,
            'reactor_imported': 'twisted.internet.reactor' in sys.modules,
            'threads': threading.active_count(), 'sockets': sockets}))
        """)
    assert found["sylk"] == str(site / "sylk/__init__.py")  # SylkServer's regular package, not a namespace
    assert found["gateway"] == str(site / "sylk/gateway/__init__.py")
    assert found["app"] == str(site / "sylk/applications/sylkgateway/__init__.py")
    assert found["registered"] == ["sylkgateway"]
    assert found["service"] is None
    assert found["reactor_imported"] is False  # no reactor installed, so none running and nothing listening
    assert found["threads"] == 1
    assert found["sockets"] == []


@pytest.mark.parametrize("own_gateway, path", [(False, "webrtcgateway"), (True, "sylkgateway")])
def test_started_by_sylkserver_it_serves_on_sylkservers_web_server(site: Path, own_gateway: bool, path: str) -> None:
    config = site / "config.ini"
    config.write_text("[WebRTCGateway]\nweb_origins = https://phone.example.com\n"
                      "[Janus]\nspawn = no\napi_url = ws://127.0.0.1:1\n")
    if own_gateway:  # SylkServer's own webrtcgateway application is loaded
        (site / "sylk/applications/webrtcgateway").mkdir()
        (site / "sylk/applications/webrtcgateway/__init__.py").write_text(textwrap.dedent("""
            from sylk.applications import SylkApplication
            class WebRTCGatewayApplication(SylkApplication):
                start = stop = incoming_session = incoming_subscription = incoming_referral = incoming_message = (
                    lambda *args: None)
            """))
    found = run(site, """
        import json
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred
        from twisted.web.client import Agent, readBody
        from sylk.applications import ApplicationRegistry
        from sylk.web import server
        import sylk.applications.sylkgateway
        try:
            import sylk.applications.webrtcgateway
        except ImportError:
            pass
        result = {}

        async def main():
            server.start()
            app = ApplicationRegistry().application_map['sylkgateway']
            app.start()
            result['path'] = app.gateway.path
            port = server.listener.getHost().port
            response = await Agent(reactor).request(b'GET', f'http://127.0.0.1:{port}/{app.gateway.path}/'.encode())
            result['code'], result['page'] = response.code, (await readBody(response)).decode()[:500]
            app.stop()
            await app.gateway._stopping
            await server.stop()

        def done(outcome):
            result['error'] = None if outcome is None else str(outcome)
            reactor.stop()

        reactor.callWhenRunning(lambda: ensureDeferred(main()).addBoth(done))
        reactor.run()
        print(json.dumps(result))
        """, settings={"config": str(config)})
    assert found["error"] is None, found
    assert found["path"] == path
    assert found["code"] == 200
    assert "<html" in str(found["page"]).lower()
