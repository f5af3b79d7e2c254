"""sylkgateway: a SylkServer-style WebRTC to SIP gateway (sylkRTC over WebSocket, SIP and media through Janus)."""

import re
import shutil
import subprocess
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import ExecError, SetupError

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "sylk/gateway/__init__.py").read_text()).group(1)

# The demo page's browser library: built by npm from js/sylkrtc at package build time (never committed), so that
# the sdist and the wheel carry it and a pip install serves a working page.
JS = HERE / "js/sylkrtc"
BUNDLE = HERE / "sylk/gateway/web/sylkrtc.js"
NODE_NEEDED = (
    "sylkgateway: building sylk/gateway/web/sylkrtc.js (the demo page's browser library) needs Node.js 18 or newer "
    "with npm. {problem}. On Debian or Ubuntu: `apt-get install nodejs npm`; elsewhere see https://nodejs.org/. "
    "Or build the library first in this checkout (`make js`): a built sylkrtc.js is used as it is."
)


def build_sylkrtc_js() -> None:
    """Build the bundle with the pinned tools of js/sylkrtc/package-lock.json, unless it is already built."""
    if BUNDLE.exists():
        return
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise SetupError(NODE_NEEDED.format(problem=f"`{'npm' if npm is None else 'node'}` is not on PATH"))
    version = subprocess.run([node, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0 or int(version.stdout.split(".")[0]) < 18:
        raise SetupError(NODE_NEEDED.format(problem=f"This node is version {version.stdout.strip() or 'unknown'}"))
    steps = ((["ci", "--no-audit", "--no-fund", "--loglevel=error"], 600), (["run", "build:gateway"], 300))
    for command, timeout in steps:
        try:
            subprocess.run([npm, *command], cwd=JS, check=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise ExecError(f"sylkgateway: building sylkrtc.js in js/sylkrtc failed: {e}") from None


class BuildPyWithSylkrtcJs(build_py):
    def run(self) -> None:
        # An editable install serves sylk/gateway/web/ from the checkout, where `make js` builds the bundle.
        if not self.editable_mode:
            build_sylkrtc_js()
            # package_data globs may have been listed before the bundle existed (egg_info lists them): list again.
            self.__dict__.pop("data_files", None)
        super().run()


class SdistWithSylkrtcJs(sdist):
    def run(self) -> None:
        build_sylkrtc_js()
        super().run()


setup(
    name="sylkgateway",
    version=VERSION,
    description="SylkServer-style WebRTC to SIP gateway built on Twisted, autobahn and Janus",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    # `sylk` is a namespace package (no __init__.py) so this installs beside SylkServer's own `sylk`.
    packages=find_namespace_packages(include=["sylk.*"]) + ["twisted.plugins"],
    package_data={"sylk.gateway": ["web/*.html", "web/*.js", "web/*.css"]},
    cmdclass={"build_py": BuildPyWithSylkrtcJs, "sdist": SdistWithSylkrtcJs},
    install_requires=["twisted[tls]>=22.4", "autobahn>=22.7", "zope.interface>=5.5", "prometheus_client>=0.16"],
    # setuptools 70.1+ (which builds wheels without the `wheel` package): tests/integration/test_packaging.py builds
    # the package, in the venv (whose setuptools, if any, may be older).
    extras_require={"test": ["pytest", "pytest-timeout", "websockets>=12", "playwright", "hypothesis", "mypy", "mypy-zope",
                             "setuptools>=70.1", "psycopg2-binary"],
                    "postgresql": ["psycopg2"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Internet Phone",
    ],
)
