"""Log lines for systemd's journal. journald stamps every line with the time itself, so twistd's timestamps would
say it twice; it takes each line's priority from a leading `<N>` instead (`SyslogLevelPrefix=`, on by default),
which lets `journalctl -p warning` pick out the gateway's warnings and errors."""

from __future__ import annotations

import os
import sys
from typing import IO, Mapping

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, LogLevel, eventAsText

# syslog priorities (sd-daemon(3)); events without a level are info
PRIORITIES = {LogLevel.debug: 7, LogLevel.info: 6, LogLevel.warn: 4, LogLevel.error: 3, LogLevel.critical: 2}


def writes_to_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether `stream` is the journal stream systemd gave the service (JOURNAL_STREAM names its device and
    inode; a child whose output was redirected elsewhere inherits the variable, so it must be compared)."""
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return bool(colon) and (int(device), int(inode)) == (status.st_dev, status.st_ino)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is both), or not two numbers
        return False


def format_for_journal(event: LogEvent) -> str | None:
    """twistd's classic format without the timestamp: `<N>[namespace#level] text`, the priority on every line so
    that a traceback's lines keep the event's priority."""
    text = eventAsText(event, includeTimestamp=False)
    if not text:
        return None
    prefix = f"<{PRIORITIES.get(event.get('log_level'), 6)}>"
    return "".join(f"{prefix}{line}\n" for line in text.replace("\n", "\n\t").split("\n"))


def journal_observer() -> ILogObserver:
    """A log observer factory for twistd's `--logger`: the classic output on standard output, in journal form."""
    return FileLogObserver(sys.stdout, format_for_journal)
