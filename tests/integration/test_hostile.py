"""A hostile far end must hurt no one else (issue 7), end to end: the real gateway, its Janus, Kamailio, a sipp
phone that misbehaves on purpose (sipp/uas_hostile.xml), and, as the bystander, the demo page in Chromium with a
call to a baresip phone (audio both ways) plus a second account on another connection.

Mallory, a user of the gateway, calls trudy, her own SIP phone, which answers and then sends everything a far end
can send: the INFO that once disconnected every user (`Duration=²`), malformed and oversized INFO, MESSAGE and
NOTIFY bodies, MESSAGEs outside the dialog to another user, a flood of OPTIONS and re-INVITEs with garbage SDP.
Some of it Janus or Sofia refuse themselves (that is fine); none of it may touch alice's call, carol's
registration, their connections, or the one link to Janus.

The injection test checks that what a browser puts into SIP headers (custom headers, display names) is refused or
escaped before anything reaches the callee."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


from tests.integration.audio import peak_frequency, read_wav
from tests.integration.baresip import Baresip
from tests.integration.browser import Browser
from tests.integration.gateway import Client, Gateway, register
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import Sipp, register as register_sipp, registered_phone
from tests.integration.test_calls_browser import browser, demo  # noqa: F401 (browser: the same fixture)
from tests.integration.webrtc import OFFER

KAMAILIO_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "mallory": "mallorypw", "trudy": "trudypw"}
BROWSER_TONE, BOB_TONE = 1000, 660
PHONE_PORT = 5092  # trudy's, or bob's in the injection test
OPTIONS_FLOOD = 300


def hostile_bodies() -> dict[str, bytes]:
    """What trudy sends, by the file name uas_hostile.xml reads it from."""
    entities = "".join(f"<!ENTITY e{i} '{f'&e{i - 1};' * 10}'>" for i in range(1, 10))  # 10^9 "ha" if expanded
    cpim_envelope = "From: <sip:trudy@sylk.test>\r\nTo: <sip:mallory@sylk.test>\r\n"
    return {
        "info-superscript.txt": "Signal=7\r\nDuration=\u00b2".encode(),  # isdigit() yes, int() no
        "info-unicode-digits.txt": "Signal=\u0667\r\nDuration=\u0662\u0665\u0660".encode(),  # Arabic-Indic 7, 250
        "info-huge.txt": ("Signal=1\r\n" + f"Duration={'9' * 20}\r\n" * 2000)[:60000].encode(),
        "info-binary.txt": b"Signal=\x01\r\nDuration=\xff\xfe\xc0\xaf160\r\n\x1b[31m\x7f\xed\xa0\x80\r\nSignal==",
        "message-cpim-garbage.txt": ("From: \u202e\"x\x01\" <sip:\x07@evil.test\r\n"
                                     + "".join(f"X-H{i}: \u2028\x0b{'v' * 50}\r\n" for i in range(60))
                                     + "Content-Type: ;;;\x7f").encode(),
        "message-imdn-entities.txt": (cpim_envelope + "NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: x\r\n\r\n"
                                      "Content-Type: message/imdn+xml\r\n\r\n"
                                      f"<?xml version='1.0'?><!DOCTYPE imdn [<!ENTITY e0 'ha'>{entities}]>"
                                      "<imdn xmlns='urn:ietf:params:xml:ns:imdn'><message-id>&e9;</message-id>"
                                      "<delivery-notification><status><delivered/></status>"
                                      "</delivery-notification></imdn>").encode(),
        "message-imdn-nested.txt": ("<?xml version='1.0'?><imdn xmlns='urn:ietf:params:xml:ns:imdn'>"
                                    + "<a>" * 3000 + "</a>" * 3000 + "</imdn>").encode(),
        "message-huge.txt": (cpim_envelope + "\r\nContent-Type: text/plain\r\n\r\n" + "x" * 60000).encode(),
        "message-binary.txt": b"caf\xe9 \xff\xfe\xc3\x28 \xed\xa0\x80 \x1b]0;owned\x07",
        "notify-sipfrag.txt": b"SIP/2.0 2000000000000 \x01\xff" + b"A" * 5000,
        "reinvite-garbage.txt": (b"v=9\r\no=\xff\r\nm=audio 999999 RTP/AVP 0 0 0\r\nc=IN IP4 999.999.1.1\r\n"
                                 b"a=rtpmap:0 \x01\r\nm=\r\n" + b"a=x\r\n" * 1000),
        "reinvite-nonsense.txt": ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=\u202e\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                                  "m=audio 20920 RTP/AVP " + " ".join(str(n) for n in range(96, 128)) + "\r\n"
                                  + "".join(f"a=rtpmap:{n} X{n}/{n * 1000}/9\r\n" for n in range(96, 128))
                                  + f"a=fmtp:96 {'x' * 2000}\r\na=sendrecv\r\na=sendonly\r\n"
                                  "m=video 0 RTP/AVP 96\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
                                  + "a=x-junk:\u00b2\r\n" * 500).encode(),
    }


def hostile_phone(workdir: Path, victim: str, attacker: str) -> Sipp:
    """trudy, registered, waiting for a call to misbehave in (sipp/uas_hostile.xml)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, body in hostile_bodies().items():
        (workdir / name).write_bytes(body)
    register_sipp(workdir, "trudy", KAMAILIO_USERS["trudy"], PHONE_PORT)
    return Sipp(workdir, "uas_hostile.xml", PHONE_PORT, "trudy", keys={"victim": victim, "attacker": attacker},
                render={"options": str(OPTIONS_FLOOD)}).start()


def session_events(client: Client, session: str, until: str = "terminated", timeout: float = 40) -> list[Any]:
    """The sylkRTC-1 session's events up to the state `until`: states (with reason), and other events by name."""
    seen: list[Any] = []
    while True:
        event = client.event(lambda m: m.get("sylkrtc") == "session_event" and m.get("session") == session,
                             timeout, f"an event of session {session}")
        data = event["data"]
        if event["event"] != "state":
            seen.append((event["event"], data))
            continue
        seen.append((data["state"], data.get("reason")) if data.get("reason") else data["state"])
        if data["state"] in (until, "terminated"):
            return seen


def near(frequency: float | None, tone: float) -> bool:
    return frequency is not None and abs(frequency - tone) < 30


def tail_frequency(wav: Path, seconds: float = 1.5) -> float | None:
    """The dominant frequency of the last `seconds` of a recording (after the attack), None if silent."""
    audio = read_wav(wav)
    end = len(audio.samples) - int(0.3 * audio.rate)  # the hang-up itself may cut the very end
    samples = audio.samples[max(0, end - int(seconds * audio.rate)):end]
    if not samples or max(abs(value) for value in samples) < 0.01:
        return None
    return peak_frequency(samples, audio.rate)


def test_a_hostile_far_end_hurts_no_one_else(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                             tmp_path: Path) -> None:
    bob = Baresip(tmp_path / "bob", "bob", KAMAILIO_USERS["bob"], answermode="auto", tone_hz=BOB_TONE,
                  kamailio=kamailio).start()
    try:
        # the bystanders: alice in the demo page, registered and in a call with bob with audio both ways ...
        alice = demo(browser, gateway, "alice@sylk.test", KAMAILIO_USERS["alice"])
        alice.register()
        alice.dial("bob@sylk.test")
        alice.call_established()
        assert near(alice.remote_frequency(), BOB_TONE)
        # ... and carol, registered on a connection of her own
        carol = gateway.connect()
        assert register(carol, kamailio, "carol@sylk.test") == {"state": "registered"}

        # mallory calls trudy, who answers and attacks (about a second)
        mallory = gateway.connect()
        assert register(mallory, kamailio, "mallory@sylk.test") == {"state": "registered"}
        with hostile_phone(tmp_path / "trudy", victim="carol", attacker="mallory") as trudy:
            packets_before = alice.page.packets("window.demo.call.pc", "inbound", "audio")
            answer = mallory.request("session-create", account="mallory@sylk.test", session="hostile",
                                     uri="trudy@sylk.test", sdp=OFFER)
            assert answer["sylkrtc"] == "ack", answer
            trudy_status = trudy.wait(45)

        # the link to Janus held, and so did everyone else's connection, registration and call
        assert "Lost the connection to Janus" not in gateway.log(), gateway.log_tail()
        for client in (carol, mallory):
            assert client.request("ping")["sylkrtc"] == "ack"
        assert alice.text("connection-state") == "ready"
        assert alice.text("registration-state") == "registered"
        assert not [e for e in carol.events if e.get("event") == "registration_state"], carol.events
        for user in ("alice", "carol", "mallory"):
            assert kamailio.contacts(user), f"{user} lost the registration"
        assert alice.text("call-state") == "established"
        alice.inbound_audio(packets_before + 100)  # two more seconds of bob
        frequency = alice.remote_frequency()
        assert near(frequency, BOB_TONE), frequency
        # carol got trudy's messages outside the dialog (as they are, or emptied), or nothing; nothing else
        assert all(e.get("event") == "message" for e in carol.events), carol.events
        assert "hahaha" not in str(carol.events)  # no XML entity was expanded

        # trudy got the answer she expected to everything, the flood included, and ended the call herself
        assert trudy_status == 0, trudy.messages()[-3000:]
        assert len(trudy.received("SIP/2.0 200")) >= OPTIONS_FLOOD
        events = session_events(mallory, "hostile")
        assert events[:2] == ["progress", "accepted"] and events[-1] == ("terminated", "200 OK"), events
        tones = [event[1]["digit"] for event in events if event[0] == "dtmf"]
        assert all(re.fullmatch(r"[0-9*#A-D]", tone) for tone in tones), tones  # nothing but real tones

        # alice hangs up normally; bob heard her until the end
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        bob.wait_event("CALL_CLOSED", 10)
        frequency = tail_frequency(bob.received_wav())
        assert near(frequency, BROWSER_TONE), frequency

        # mallory can go on using her account: un-REGISTER it
        assert mallory.request("unregister", account="mallory@sylk.test")["sylkrtc"] == "ack"
        assert mallory.registration_state("mallory@sylk.test") == {"state": "unregistered"}
    finally:
        bob.stop()

    # one Janus all along, still running, and nothing failed inside the gateway
    (janus,) = gateway.janus_pids()
    os.kill(janus, 0)
    log = gateway.log()
    failure = log.find("Traceback (most recent call last)")
    assert failure < 0, log[max(0, failure - 2000):failure + 4000]


def test_header_and_display_name_injection_never_reaches_the_callee(gateway: Gateway, kamailio: Kamailio,
                                                                   tmp_path: Path) -> None:
    mallory = gateway.connect()
    password = kamailio.ha1("mallory")
    # a display name that would add a header is refused
    refused = mallory.request("add_account", account="mallory@sylk.test", password=password,
                              display_name="Eve\r\nP-Asserted-Identity: <sip:boss@sylk.test>")
    assert refused["sylkrtc"] == "error"
    assert "invalid field 'display_name': must not contain control characters (U+000D" in refused["error"]
    # one that closes the quote and adds a URI is taken as a name, and escaped
    display_name = 'Eve" <sip:boss@sylk.test>;x="'
    answer = mallory.request("add_account", account="mallory@sylk.test", password=password,
                             display_name=display_name)
    assert answer["sylkrtc"] == "ack", answer

    with registered_phone(tmp_path / "sipp", "uas_answer.xml", "bob", KAMAILIO_USERS["bob"], PHONE_PORT) as bob:
        attempts = {
            "P-Asserted-Identity": "header P-Asserted-Identity cannot be set: identity headers",
            "f": "header f cannot be set: compact header forms are not allowed",
            "Remote-Party-ID": "header Remote-Party-ID cannot be set",
        }
        for name, error in attempts.items():
            refused = mallory.request("session-create", account="mallory@sylk.test", session=f"with-{name}",
                                      uri="bob@sylk.test", sdp=OFFER,
                                      headers=[{"name": name, "value": '"Boss" <sip:boss@sylk.test>'}])
            assert refused["sylkrtc"] == "error" and error in refused["error"], refused
        refused = mallory.request("session-create", account="mallory@sylk.test", session="with-crlf",
                                  uri="bob@sylk.test", sdp=OFFER,
                                  headers=[{"name": "X-Room", "value": "42\r\nP-Asserted-Identity: <sip:boss@x>"}])
        assert refused["sylkrtc"] == "error", refused
        assert "header X-Room: the value must not contain control characters" in refused["error"]
        refused = mallory.request("session-create", account="mallory@sylk.test", session="with-uri-header",
                                  uri="bob?P-Asserted-Identity=sip:boss@sylk.test@sylk.test", sdp=OFFER)
        assert refused["sylkrtc"] == "error", refused
        assert "the user part must not contain '?' (URI headers)" in refused["error"], refused
        # the one call that goes out
        answer = mallory.request("session-create", account="mallory@sylk.test", session="s1", uri="bob@sylk.test",
                                 sdp=OFFER, headers=[{"name": "X-Room", "value": "42"}])
        assert answer["sylkrtc"] == "ack", answer
        assert session_events(mallory, "s1", until="accepted")[-1] == "accepted"
        assert mallory.request("session-terminate", session="s1")["sylkrtc"] == "ack"
        assert session_events(mallory, "s1")[-1] == ("terminated", "200 OK")
        assert bob.wait(10) == 0

    (invite,) = bob.received("INVITE ")  # none of the refused calls reached the phone
    headers = re.split(r"\r?\n\r?\n", invite, maxsplit=1)[0]
    assert not re.search(r"^(P-Asserted-Identity|Remote-Party-ID|f):", headers, re.MULTILINE | re.IGNORECASE)
    assert re.search(r"^X-Room: 42\s*$", headers, re.MULTILINE), headers
    (from_header,) = re.findall(r"^From:(.*)$", headers, re.MULTILINE)
    # the display name stays one quoted-string (RFC 3261 quoted-pairs for its quotes), the URI mallory's own
    name_addr = re.fullmatch(r'\s*"((?:[^"\\]|\\.)*)"\s*<([^>]*)>;tag=[^;,<>"]+\s*', from_header)
    assert name_addr is not None, from_header
    assert re.sub(r"\\(.)", r"\1", name_addr.group(1)) == display_name, from_header
    assert name_addr.group(2) == "sip:mallory@sylk.test", from_header
