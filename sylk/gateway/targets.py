"""Where browsers may send SIP: the operator's policy for the targets of calls, messages and transfers.

Without it any web page that can reach the gateway could make it send SIP to any host (an open SIP client).
`[WebRTCGateway] sip_target_domains` lists the domains allowed; IP addresses are refused unless
`allow_ip_targets` says otherwise (they name a host, not a domain, so the domain list does not apply to them).
"""

from __future__ import annotations

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.errors import APIError


def check_target(uri: str, settings: WebRTCGatewayConfig) -> None:
    """Raise APIError unless the browser may address `uri` (`user@domain`, as the AOR field normalises it)."""
    domain = uri.rpartition("@")[2]
    if _is_ip_literal(domain):
        if not settings.allow_ip_targets:
            raise APIError(f"IP addresses are not allowed as targets: {uri}")
    elif not settings.target_domain_allowed(domain):
        raise APIError(f"SIP domain not allowed as a target: {domain}")


def _is_ip_literal(domain: str) -> bool:
    # RFC 3261 host names end in a label that begins with a letter: anything else is an address ([IPv6], dotted
    # IPv4, or a number such as 127.1 that a resolver would take for one).
    return domain.startswith("[") or domain.rpartition(".")[2][:1].isdigit()
