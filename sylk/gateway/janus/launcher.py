"""Start Janus the way a supervised child should run: `python -m sylk.gateway.janus.launcher [opts] -- janus ...`.

Twisted's spawnProcess cannot run code between fork and exec, so this tiny step does it before exec'ing Janus:
- no core dumps (Janus enables them itself; one crash from fd exhaustion wrote 268 MB);
- a raised open-files limit (each registered account costs Janus about 8 descriptors, 10 with its calls);
- its own session, so a Ctrl-C meant for the gateway does not reach Janus before the gateway has unregistered;
- SIGTERM when the gateway dies, so a killed gateway never leaves an orphaned Janus behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
# Descriptors a Janus needs besides its accounts' stacks (its transports, loops, logs), and per account: ~8 for its
# Sofia stack and a share of the ~5 each call takes. With the default 65,536 that is 6,451 accounts.
RESERVED_FILES = 1024
FILES_PER_ACCOUNT = 10
MAX_ACCOUNTS = 8000  # near 10,000 stacks the kernel's thread and memory-map limits come first


def accounts_for(open_files: int) -> int:
    """How many accounts (SIP stacks) a Janus allowed `open_files` descriptors can hold: the gateway's admission
    budget for it."""
    return max(1, min(MAX_ACCOUNTS, (open_files - RESERVED_FILES) // FILES_PER_ACCOUNT))


def prepare(max_open_files: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, max_open_files)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # not allowed to raise the hard limit: go as far as it allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
        if hard < wanted:
            print(f"[WARN] sylkgateway: Janus may open only {hard} files, not {wanted} ([Janus] max_open_files): "
                  f"at most {accounts_for(hard)} accounts", file=sys.stderr, flush=True)
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the gateway died before the line above took effect
        sys.exit("sylkgateway is gone; not starting Janus")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sylk.gateway.janus.launcher")
    parser.add_argument("--max-open-files", type=int, default=65536)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no command given")
    prepare(options.max_open_files)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
