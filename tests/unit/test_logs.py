"""Logs under systemd: without twistd's timestamps (journald adds its own) and with each line's priority, only when
standard output is the journal stream; twistd's own format otherwise."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from typing import IO, Any

from twisted.logger import LogLevel, formatEventAsClassicLogText, textFileLogObserver
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.logs import format_for_journal, journal_observer, writes_to_journal


def event(level: LogLevel, text: str, **fields: Any) -> dict[str, Any]:
    return {"log_namespace": "sylk.gateway.test", "log_level": level, "log_format": text, "log_time": 1.0, **fields}


def journal_stream_of(stream: IO[str]) -> str:
    status = os.fstat(stream.fileno())
    return f"{status.st_dev}:{status.st_ino}"


class FormatTests(SynchronousTestCase):
    def test_no_timestamp_and_the_priority_first(self) -> None:
        self.assertEqual(format_for_journal(event(LogLevel.warn, "hello {who}", who="you")),
                         "<4>[sylk.gateway.test#warn] hello you\n")
        self.assertEqual(format_for_journal(event(LogLevel.info, "up")), "<6>[sylk.gateway.test#info] up\n")
        self.assertTrue(formatEventAsClassicLogText(event(LogLevel.info, "up")).startswith("1970-"))  # twistd's

    def test_every_line_of_a_traceback_keeps_the_priority(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        text = format_for_journal(event(LogLevel.critical, "two\nlines", log_failure=failure))
        assert text is not None
        lines = text.splitlines()
        self.assertEqual(lines[:2], ["<2>[sylk.gateway.test#critical] two", "<2>\tlines"])
        self.assertGreater(len(lines), 3)
        self.assertTrue(all(line.startswith("<2>\t") for line in lines[1:]), lines)
        self.assertIn("ZeroDivisionError", text)

    def test_an_event_without_text_is_skipped(self) -> None:
        self.assertIsNone(format_for_journal({"log_level": LogLevel.info}))

    def test_the_observer_writes_to_standard_output(self) -> None:
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        journal_observer()(event(LogLevel.error, "bad"))
        self.assertEqual(output.getvalue(), "<3>[sylk.gateway.test#error] bad\n")


class JournalStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stream = tempfile.TemporaryFile("w")
        self.addCleanup(self.stream.close)

    def test_the_stream_journald_named(self) -> None:
        self.assertTrue(writes_to_journal(self.stream, {"JOURNAL_STREAM": journal_stream_of(self.stream)}))

    def test_another_stream(self) -> None:
        # a child whose output was redirected elsewhere inherits the variable
        with tempfile.TemporaryFile("w") as other:
            self.assertFalse(writes_to_journal(self.stream, {"JOURNAL_STREAM": journal_stream_of(other)}))

    def test_without_the_variable_or_a_file(self) -> None:
        self.assertFalse(writes_to_journal(self.stream, {}))
        self.assertFalse(writes_to_journal(self.stream, {"JOURNAL_STREAM": "garbage"}))
        self.assertFalse(writes_to_journal(io.StringIO(), {"JOURNAL_STREAM": journal_stream_of(self.stream)}))


class TwistdOptionsTests(SynchronousTestCase):
    """`twistd ... sylkgateway` picks the journal's format by itself, unless told where to log."""

    def twistd_logger(self, *arguments: str, journal: bool = True) -> Any:
        stdout = tempfile.TemporaryFile("w")
        self.addCleanup(stdout.close)
        self.patch(sys, "stdout", stdout)
        environ = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        if journal:
            environ["JOURNAL_STREAM"] = journal_stream_of(stdout)
        self.patch(os, "environ", environ)
        options = ServerOptions()
        options.parseOptions([*arguments, "sylkgateway", "-c", "/nonexistent/config.ini"])
        return options["logger"]

    def test_under_systemd(self) -> None:
        self.assertIs(self.twistd_logger("-n"), journal_observer)

    def test_elsewhere_twistd_formats_as_ever(self) -> None:
        self.assertIsNone(self.twistd_logger("-n", journal=False))
        self.assertIsNone(self.twistd_logger(journal=True))  # a daemon logs to twistd.log
        self.assertIsNone(self.twistd_logger("-n", "--logfile=/var/log/sylkgateway.log"))
        self.assertIsNone(self.twistd_logger("-n", "--syslog"))
        self.assertIs(self.twistd_logger("-n", "--logger=twisted.logger.textFileLogObserver"), textFileLogObserver)
