"""The `twistd sylkgateway` plugin. Twisted imports this file on every plugin scan, so it stays light: the gateway
itself is imported only when the service is made."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["config", "c", "/etc/sylkgateway/config.ini", "The configuration file (see config.ini.sample)."],
    ]


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "sylkgateway"
    description = "WebRTC to SIP gateway: browsers speak sylkRTC over WebSocket, SIP and media go through Janus."
    options = Options

    def makeService(self, options):
        from sylk.gateway.config import ConfigError, load_config
        from sylk.gateway.service import GatewayService

        try:
            return GatewayService(load_config(options["config"]))
        except ConfigError as e:
            raise SystemExit(f"sylkgateway: {e}") from None


serviceMaker = GatewayServiceMaker()
