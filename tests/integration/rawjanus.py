"""A Janus of a test's or benchmark's own, its API on a TCP port on loopback (as an external Janus would have it),
configured as the gateway configures its children (render_janus_config), but for that port."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from sylk.gateway.config import Config
from sylk.gateway.janus.process import find_library_dir, render_janus_config


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_janus_config(config: Config, folder: Path, port: int, secret: str) -> None:
    """The config files for a Janus whose WebSocket API listens on 127.0.0.1:`port`, into `folder`."""
    files = render_janus_config(config, find_library_dir(config), folder, folder / "api.sock", secret)
    for name, text in files.items():
        if name == "janus.transport.websockets.jcfg":
            text = re.sub(r"ws_unix = .*", f'ws_ip = "127.0.0.1"\n    ws_port = {port}', text)
        (folder / name).write_text(text)
