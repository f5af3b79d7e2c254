"""sylkgateway: browsers speak sylkRTC over WebSocket; SIP and media go through Janus."""

__version__ = "0.1.0"
