"""SDP a browser would send, for signalling tests that need no real media: a well-formed WebRTC offer, and an
answer made to fit whatever offer Janus sends. Janus accepts them and does real SIP with them; no ICE ever
completes, so such tests never reach `established`."""

from __future__ import annotations

import re

_FINGERPRINT = ("sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C"
                ":19:08")


def _sdp(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


OFFER = _sdp([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 126", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx", "a=ice-options:trickle",
    f"a=fingerprint:{_FINGERPRINT}", "a=setup:actpass", "a=mid:0", "a=sendrecv", "a=msid:stream track",
    "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:126 telephone-event/8000",
])


def answer_for(offer: str) -> str:
    """A browser-like answer to an audio offer: same mid, its first codec, our ICE and DTLS parameters."""
    mid = re.search(r"^a=mid:(\S+)", offer, re.MULTILINE)
    media = re.search(r"^m=audio \d+ \S+ (\d+)", offer, re.MULTILINE)
    assert mid and media, f"not an audio offer:\n{offer}"
    payload = media.group(1)
    rtpmap = re.search(rf"^a=rtpmap:{payload} (\S+)", offer, re.MULTILINE)
    return _sdp([
        "v=0", "o=- 1234567890 2 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {mid.group(1)}",
        f"m=audio 9 UDP/TLS/RTP/SAVPF {payload}", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:wxyz", "a=ice-pwd:zyxwvutsrqponmlkjihgfedc", f"a=fingerprint:{_FINGERPRINT}",
        "a=setup:active", f"a=mid:{mid.group(1)}", "a=sendrecv", "a=rtcp-mux",
        f"a=rtpmap:{payload} {rtpmap.group(1) if rtpmap else 'PCMU/8000'}",
    ])
