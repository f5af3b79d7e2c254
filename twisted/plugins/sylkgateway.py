"""The `twistd sylkgateway` plugin. Twisted imports this file on every plugin scan, so it stays light: the gateway
itself is imported only when the service is made."""

import os
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["config", "c", "/etc/sylkgateway/config.ini", "The configuration file (see config.ini.sample)."],
    ]

    def postOptions(self) -> None:
        # Under systemd, journald stamps each line itself. twistd's options are parsed after ours but before its
        # logger is made, so naming an observer here is what `--logger` would do.
        twistd = getattr(self, "parent", None)
        if twistd is None or not _logs_to_stdout(twistd):
            return
        from sylk.gateway.logs import writes_to_journal
        if writes_to_journal(sys.stdout, os.environ):
            twistd["logger"] = "sylk.gateway.logs.journal_observer"


def _logs_to_stdout(twistd: usage.Options) -> bool:
    """Whether twistd logs to standard output in its own format: -n, and no --logfile, --syslog or --logger."""
    return bool(twistd.get("nodaemon") and twistd.get("logfile") in (None, "", "-") and not twistd.get("syslog")
                and twistd.get("logger") is None)


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "sylkgateway"
    description = "WebRTC to SIP gateway: browsers speak sylkRTC over WebSocket, SIP and media go through Janus."
    options = Options

    def makeService(self, options):
        from sylk.gateway.config import ConfigError, load_config
        from sylk.gateway.service import GatewayService, open_message_store

        try:
            config = load_config(options["config"])
            return GatewayService(config, message_store=open_message_store(config))
        except ConfigError as e:
            raise SystemExit(f"sylkgateway: {e}") from None


serviceMaker = GatewayServiceMaker()
