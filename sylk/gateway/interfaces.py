"""Interfaces between the gateway's layers.

The browser-facing side (connections and accounts) sees SIP only through `ISIPBackend` and the objects it hands
out, so another SIP engine can replace Janus without touching the browser API. The SIP side sees the browser only
through `IConnectionPeer`, so a connection's state can outlive the socket that created it.
"""

from zope.interface import Attribute, Interface


class IConnectionPeer(Interface):
    """The browser end of a connection, as the connection sees it."""

    def send_event(event):
        """Send a `sylk.gateway.sylkrtc.model.Event` to the browser."""

    def disconnect(code, reason):
        """Close the browser's socket with a WebSocket close code (4000-4999 for ours) and a reason."""


class ISIPBackend(Interface):
    """Something that speaks SIP for the gateway (today: Janus and its SIP plugin)."""

    available = Attribute("True while new sessions can be opened")

    def open_session(observer):
        """Open a backend session for one connection; the observer provides ISIPSessionObserver.

        @return: a Deferred firing with an ISIPSession, or failing with BackendUnavailable.
        """


class ISIPSessionObserver(Interface):
    def session_lost(reason):
        """The backend lost the session (for example Janus died); everything in it is gone."""


class ISIPSession(Interface):
    """One connection's share of the backend: its SIP user agents live and die with it."""

    def create_user_agent(identity, observer):
        """Return an ISIPUserAgent for a `sylk.gateway.sip.SIPIdentity`, reporting to an IUserAgentObserver."""

    def close():
        """Release everything in the session without further SIP signalling; returns a Deferred."""


class ISIPUserAgent(Interface):
    """One SIP identity in the backend: registers (and, later, calls) on behalf of an account."""

    def register(registration):
        """Start registering with a `sylk.gateway.sip.Registration`. The Deferred fires once the REGISTER is on
        its way; the outcome arrives at the observer."""

    def unregister():
        """Remove the registration at the registrar; the outcome arrives at the observer."""

    def close():
        """Release the backend resources (a later register() acquires them again); returns a Deferred."""


class IUserAgentObserver(Interface):
    def registration_succeeded():
        """The registrar accepted the binding (also sent again after refreshes)."""

    def registration_failed(reason):
        """Registering failed or the registration was lost; `reason` is "<code> <phrase>" or an explanation."""

    def unregistered():
        """The binding was removed at the registrar."""
