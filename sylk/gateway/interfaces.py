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

    def when_available():
        """A Deferred that fires once new sessions can be opened (at once if they can now)."""

    def open_session(observer):
        """Open a backend session for one connection; the observer provides ISIPSessionObserver.

        @return: a Deferred firing with an ISIPSession, or failing with BackendUnavailable.
        """


class ISIPSessionObserver(Interface):
    client = Attribute("Who the session is for (the browser's address), or None: the backend shares what is scarce "
                       "(turns to start SIP stacks) fairly between clients, not between connections")

    def session_lost(reason):
        """The backend lost the session (for example Janus died); everything in it is gone. The observer may open a
        new one (when_available) and create its user agents again."""


class ISIPSession(Interface):
    """One connection's share of the backend: its SIP user agents live and die with it."""

    def admit_account():
        """Raise APIError (with the reason for the browser) when the backend cannot take another account now."""

    def create_user_agent(identity, observer):
        """Return an ISIPUserAgent for a `sylk.gateway.sip.SIPIdentity`, reporting to an IUserAgentObserver."""

    def closing():
        """The connection is ending: the session will only unregister and end what it holds, then be closed. (A
        backend with several places for sessions stops counting it when it places new ones.)"""

    def close():
        """Release everything in the session without further SIP signalling; returns a Deferred."""


class ISIPUserAgent(Interface):
    """One SIP identity in the backend: registers and calls on behalf of an account."""

    def register(registration):
        """Start registering with a `sylk.gateway.sip.Registration`. The Deferred fires once the REGISTER is on
        its way; the outcome arrives at the observer."""

    def unregister():
        """Remove the registration at the registrar; the outcome arrives at the observer."""

    def call(uri, sdp, headers, observer, transfer_of=None):
        """Place a call to `uri` (user@domain) with the browser's SDP offer and extra SIP headers ({name: value});
        returns an ISIPCall at once, whose progress and outcome arrive at the ICallObserver. `transfer_of`: the
        ISIPCall whose far end asked for this call (call_transfer_requested); it hears how the call goes."""

    def send_message(uri, content_type, content):
        """Send a SIP MESSAGE to `uri` (user@domain), registered or not; the Deferred fires with the SIP answer,
        (code, reason), or (408, "Request Timeout") when none came."""

    def close():
        """Release the backend resources (a later register() or call() acquires them again); returns a Deferred.
        Calls still up are dropped without signalling: end them first."""


class IUserAgentObserver(Interface):
    def registration_succeeded():
        """The registrar accepted the binding (also sent again after refreshes)."""

    def registration_failed(reason):
        """Registering failed or the registration was lost; `reason` is "<code> <phrase>" or an explanation."""

    def unregistered():
        """The binding was removed at the registrar."""

    def incoming_call(call, originator, sdp):
        """A call arrived: an ISIPCall, a `sylk.gateway.sip.Originator` and the SDP offer for the browser. The
        observer answers or terminates it, and must call `call.set_observer()` at once."""

    def missed_call(originator):
        """A call the account could not take arrived and was refused (every line busy)."""

    def message_received(sender, content_type, content):
        """A SIP MESSAGE for the account, outside any call (the backend answered it 200)."""


class ISIPCall(Interface):
    """One call in the backend, in either direction."""

    call_id = Attribute("The SIP Call-ID, once known")
    headers = Attribute("Incoming calls: the INVITE's headers matching the account's prefixes ({name: value})")

    def set_observer(observer):
        """Who hears about this call (an ICallObserver); set by whoever got it from incoming_call()."""

    def trickle(candidates):
        """Pass the browser's ICE candidates ([] = no more); may be called before the call is placed."""

    def answer(sdp, headers):
        """Accept an incoming call with the browser's SDP answer and extra SIP headers; returns a Deferred."""

    def terminate():
        """End the call: cancel, reject or hang up, as its state requires. The end arrives at the observer."""

    def send_dtmf_info(tone, duration):
        """Send one DTMF tone as SIP INFO (`duration` in ms); the Deferred fires when it has gone out."""

    def update(sdp):
        """Send a re-INVITE with the browser's new offer; the Deferred fires once it is out, the outcome arrives
        at the observer (call_update_accepted or call_update_failed)."""

    def answer_update(sdp):
        """Answer the far end's re-INVITE (call_update_received) with the browser's answer; returns a Deferred."""

    def hold(direction):
        """Put the call on hold with a re-INVITE (`sendonly` or `inactive`); the Deferred fires once it is out."""

    def unhold():
        """Take the call off hold (a re-INVITE with the direction from before); the Deferred fires once it is out."""

    def send_message(content_type, content):
        """Send a SIP MESSAGE inside the call's dialog; the Deferred fires with the answer's (code, reason)."""

    def transfer(uri, replace):
        """Ask the far end to call `uri` instead (REFER); `replace`: an ISIPCall the new call replaces (attended),
        or None. The Deferred fires once the REFER is out; progress arrives at call_transfer_progress."""

    def reject_transfer(code):
        """Refuse the far end's transfer request with this SIP status; returns a Deferred."""


class ICallObserver(Interface):
    def call_progress():
        """Outgoing: the INVITE is on its way."""

    def call_proceeding(code):
        """Outgoing: a provisional response arrived (180, 183, ...)."""

    def call_ringing():
        """Outgoing: the callee is being alerted."""

    def call_early_media(sdp):
        """Outgoing: a provisional response brought the far end's SDP answer (early media)."""

    def call_accepted(sdp, headers):
        """The call was answered. Outgoing: `sdp` is the far end's answer, or None if it came as early media;
        `headers` are the answer's headers matching the account's prefixes. Incoming: both None."""

    def call_established():
        """Media between the browser and the backend are up (ICE and DTLS)."""

    def call_update_received(sdp):
        """The far end sent a re-INVITE with this offer; answer with ISIPCall.answer_update."""

    def call_update_accepted(sdp):
        """The far end answered our re-INVITE (ISIPCall.update) with this SDP."""

    def call_update_failed(reason):
        """Our re-INVITE did not go through; the call goes on as it was."""

    def call_message(sender, content_type, content):
        """A SIP MESSAGE inside the call's dialog, from `sender` (an Originator)."""

    def call_transfer_progress(code, reason):
        """How our transfer goes, as the far end says: a SIP status of its call to the target (100, 180, 200,
        486, ...), or None with a reason when nothing came."""

    def call_transfer_requested(refer_to, referred_by, replaces):
        """The far end asks for a call to `refer_to` (user@domain) instead; `replaces`: whether the new call would
        replace one of the target's (attended)."""

    def call_dtmf(tone, duration, method):
        """The far end sent a DTMF tone: `method` "info" (SIP INFO) or "rfc4733" (in the media, if the backend
        can see those); `duration` in ms, or None."""

    def call_terminated(reason):
        """The call is over: "<code> <phrase>" from SIP, or an explanation."""
