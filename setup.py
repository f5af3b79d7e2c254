"""sylkgateway: a SylkServer-style WebRTC to SIP gateway (sylkRTC over WebSocket, SIP and media through Janus)."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "sylk/gateway/__init__.py").read_text()).group(1)

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
    install_requires=["twisted[tls]>=22.4", "autobahn>=22.7", "zope.interface>=5.5", "prometheus_client>=0.16"],
    extras_require={"test": ["pytest", "pytest-timeout", "websockets>=12", "playwright", "hypothesis", "mypy", "mypy-zope"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Internet Phone",
    ],
)
