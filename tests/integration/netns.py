"""A fresh network namespace per test, entered by the test process itself.

Everything a test starts (gateway, Janus, Kamailio, SIP user agents) inherits the namespace, so each test has its
own loopback with every port free, and nothing can reach another machine. Besides `lo`, the namespace has a veth
pair whose two ends both stay inside it, with 127.0.0.1/32 on `acc0`: Janus never gathers ICE candidates on an
interface flagged LOOPBACK, so WebRTC needs a non-loopback interface carrying a loopback address.

Needs root (CAP_SYS_ADMIN). setns() switches only the calling thread; the test process is single-threaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import uuid
from typing import Iterator

CLONE_NEWNET = 0x40000000
ICE_INTERFACE = "acc0"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    name = f"sgw-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", ICE_INTERFACE, "type", "veth", "peer", "name", "acc1")
        _ip("-n", name, "addr", "add", "127.0.0.1/32", "dev", ICE_INTERFACE)
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c",
                        "for i in acc0 acc1; do echo 1 > /proc/sys/net/ipv6/conf/$i/disable_ipv6; done"],
                       check=True, timeout=10, capture_output=True)
        for interface in (ICE_INTERFACE, "acc1"):
            _ip("-n", name, "link", "set", interface, "up")
        original = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield name
            finally:
                _setns(original)
        finally:
            os.close(target)
            os.close(original)
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10, capture_output=True)
