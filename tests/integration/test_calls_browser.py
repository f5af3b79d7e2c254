"""Calls with real media: headless Chromium running the demo page (and through it sylkrtc.js) -> the gateway -> its
Janus -> Kamailio -> baresip phones, all in a private network namespace. Chromium's fake microphone plays a 1 kHz
tone; the phones play their own tones and record what they receive, so audio is checked in both directions.
Call control (hold, the far end's re-INVITEs, transfers both ways, messages) is checked against sipp phones
(tests/integration/sipp/), through the demo page's controls and what sylkrtc.js reports there (`window.demo.events`),
and at the phone (what it received).
sylkrtc.js offers sylkRTC-2 and sylkRTC-1, and the gateway picks sylkRTC-2: every test speaks that unless it
forces sylkRTC-1 (`protocol=` of the demo page).

The namespace's veth pair carries 127.0.0.1 on a non-loopback interface (Janus gathers no ICE candidates on a
loopback one) and the gateway's Janus is restricted to it (`[Janus] interface = 127.0.0.1`)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.audio import has_tone, tone_report, write_tone, write_ulaw_tone
from tests.integration.baresip import Baresip
from tests.integration.browser import Browser, BrowserPage
from tests.integration.gateway import Gateway, eventually
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import Sipp, registered_phone

BROWSER_TONE, BOB_TONE, CAROL_TONE = 1000, 660, 440
SIPP_PORT, CAROL_SIPP_PORT = 5092, 5094


class Phone:
    """The demo page in a browser, used as a person would: through its controls."""

    def __init__(self, page: BrowserPage) -> None:
        self.page = page

    def click(self, testid: str) -> None:
        self.page.page.click(f'[data-testid="{testid}"]')

    def text(self, testid: str) -> str:
        return self.page.page.text_content(f'[data-testid="{testid}"]') or ""

    def wait_text(self, testid: str, value: str, timeout: float = 15) -> None:
        try:
            self.page.wait_for(f'document.querySelector(\'[data-testid="{testid}"]\').textContent.trim() === '
                               f'"{value}"', timeout, f"{testid} to show {value!r} (shows {self.text(testid)!r})")
        except AssertionError as error:
            raise AssertionError(f"{error}\nthe page's log:\n{self.text('log')[-3000:]}") from None

    def register(self) -> None:
        self.click("register")
        self.wait_text("registration-state", "registered")

    def dial(self, uri: str, video: bool = False) -> None:
        self.page.page.fill('[data-testid="dial-uri"]', uri)
        if video:
            self.page.page.check('[data-testid="video"]')
        self.click("call")

    @property
    def protocol(self) -> str | None:
        """The dialect the gateway selected for the page's connection."""
        return self.page.evaluate("window.demo.connection && window.demo.connection.protocol")

    def call_established(self) -> None:
        self.wait_text("call-state", "established")

    def inbound_audio(self, at_least: int = 50) -> int:
        return self.page.wait_for_packets("window.demo.call.pc", "inbound", "audio", at_least, timeout=15)

    def remote_frequency(self) -> float | None:
        return self.page.dominant_frequency("window.demo.call.remoteStream", seconds=1.5)

    def fill(self, testid: str, value: str) -> None:
        self.page.page.fill(f'[data-testid="{testid}"]', value)

    def events(self, name: str) -> list[Any]:
        """The details of the page's call-control events `name` so far (window.demo.events)."""
        return self.page.evaluate(f"window.demo.events.filter(e => e[0] === {name!r}).map(e => e[1])")

    def wait_events(self, name: str, count: int, timeout: float = 10) -> list[Any]:
        """The first `count` call-control events `name`, once there are that many."""
        self.page.wait_for(f"window.demo.events.filter(e => e[0] === {name!r}).length >= {count}", timeout,
                           f"{count} {name} events (so far {self.events(name)})")
        return self.events(name)[:count]

    def wait_ringing(self) -> None:
        self.page.wait_for('!document.querySelector(\'[data-testid="incoming"]\').hidden', 15, "the ringing")

    def shown(self, testid: str) -> bool:
        return self.page.page.is_visible(f'[data-testid="{testid}"]')


@pytest.fixture
def gateway(kamailio: Kamailio, tmp_path: Path) -> Iterator[Gateway]:
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    with Gateway(workdir, {"WebRTCGateway": {"outbound_sip_proxy": kamailio.proxy}}) as gateway:
        yield gateway


@pytest.fixture
def browser(tmp_path: Path, gateway: Gateway) -> Iterator[Browser]:
    tone = write_tone(tmp_path / "browser-tone.wav", BROWSER_TONE, seconds=30, rate=48000)
    with Browser(tmp_path / "browser", fake_audio=tone) as chromium:
        yield chromium


def demo(browser: Browser, gateway: Gateway, account: str, password: str, protocol: str = "") -> Phone:
    """The demo page for `account`; `protocol` forces one dialect (sylkRTC-1 or sylkRTC-2), else both are offered."""
    url = f"http://127.0.0.1:{gateway.port}/webrtcgateway/?account={account}&protocol={protocol}"
    page = browser.page(url)
    page.wait_for("typeof window.demo === 'object'", 10, "the demo page's script")  # its buttons work from then
    page.page.fill('[data-testid="password"]', password)  # typed in: the page takes no password from its link
    return Phone(page)


def phone(tmp_path: Path, kamailio: Kamailio, user: str, tone: float, answermode: str = "auto") -> Baresip:
    return Baresip(tmp_path / user, user, kamailio.users[user], answermode=answermode, tone_hz=tone,
                   kamailio=kamailio).start()


def test_the_gateway_serves_the_demo_phone_and_the_library(browser: Browser, gateway: Gateway) -> None:
    page = browser.page(f"http://127.0.0.1:{gateway.port}/")  # redirected to /webrtcgateway/
    assert page.page.url.endswith("/webrtcgateway/")
    assert page.wait_for("typeof window.demo === 'object'")
    library = page.evaluate("import('./sylkrtc.js').then(m => typeof m.connect)")
    assert library == "function"


def test_the_library_negotiates_sylkrtc2_by_default(browser: Browser, gateway: Gateway) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()  # (connects first)
    assert alice.page.evaluate("window.demo.connection.protocols") == ["sylkRTC-2", "sylkRTC-1"]
    assert alice.protocol == "sylkRTC-2"
    assert alice.text("connection-protocol") == "sylkRTC-2"


def test_outgoing_call_to_a_sip_phone_with_audio_both_ways(browser: Browser, gateway: Gateway,
                                                           kamailio: Kamailio, tmp_path: Path) -> None:
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")  # no registration needed to call
        alice.wait_text("call-state", "established")
        assert alice.inbound_audio() >= 50
        assert not alice.shown("remote-video-box") and not alice.shown("local-video-box")  # an audio call
        assert abs(alice.remote_frequency() - BOB_TONE) < 30  # the phone's tone reached the browser
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        bob.wait_event("CALL_CLOSED", 10)
        assert has_tone(bob.received_wav(), BROWSER_TONE)  # and the browser's tone reached the phone
    finally:
        bob.stop()


def test_incoming_call_from_a_sip_phone(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                        tmp_path: Path) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        bob.dial("sip:alice@sylk.test")
        alice.page.wait_for('!document.querySelector(\'[data-testid="incoming"]\').hidden', 15, "the ringing")
        assert "bob@sylk.test" in alice.text("incoming-from")
        assert (alice.text("incoming-kind"), alice.text("answer")) == ("call", "Answer")  # no video offered
        assert not alice.shown("answer-audio") and not alice.shown("incoming-note")
        alice.click("answer")
        alice.wait_text("call-state", "established")
        bob.wait_event("CALL_ESTABLISHED", 10)
        assert alice.inbound_audio() >= 50
        assert abs(alice.remote_frequency() - BOB_TONE) < 30
        bob.hangup()  # the far end hangs up
        alice.wait_text("call-state", "terminated")
        assert "200" in alice.text("call-reason")
        assert has_tone(bob.received_wav(), BROWSER_TONE)
    finally:
        bob.stop()


def test_the_caller_gives_up_before_the_answer(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                               tmp_path: Path) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()
    alice.page.evaluate("() => { window.missed = []; window.demo.account.on('missedCall', m => window.missed.push(m)); }")
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        bob.dial("sip:alice@sylk.test")
        alice.page.wait_for('!document.querySelector(\'[data-testid="incoming"]\').hidden', 15, "the ringing")
        bob.hangup()  # CANCEL
        missed = alice.page.wait_for("window.missed.length > 0 && window.missed[0]", 10, "missed_session")
        assert missed["originator"]["uri"] == "bob@sylk.test"
        alice.page.wait_for('document.querySelector(\'[data-testid="incoming"]\').hidden', 10, "the ringing to stop")
    finally:
        bob.stop()


def test_two_calls_at_once_from_one_account(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                            tmp_path: Path) -> None:
    bob, carol = phone(tmp_path, kamailio, "bob", BOB_TONE), phone(tmp_path, kamailio, "carol", CAROL_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.register()  # the demo page is one call at a time: use the library under it for two
        alice.page.evaluate("""(async () => {
            const media = () => navigator.mediaDevices.getUserMedia({audio: true});
            window.calls = [window.demo.account.call('bob@sylk.test', {localStream: await media()}),
                            window.demo.account.call('carol@sylk.test', {localStream: await media()})];
        })()""")
        alice.page.wait_for("window.calls && window.calls.every(c => c.state === 'established')", 20,
                            "both calls established")
        for index, tone in ((0, BOB_TONE), (1, CAROL_TONE)):
            alice.page.wait_for_packets(f"window.calls[{index}].pc", "inbound", "audio", 50, timeout=15)
            frequency = alice.page.dominant_frequency(f"window.calls[{index}].remoteStream", seconds=1.5)
            assert abs(frequency - tone) < 30, (index, frequency)
        alice.page.evaluate("window.calls.forEach(c => c.terminate())")
        bob.wait_event("CALL_CLOSED", 10)
        carol.wait_event("CALL_CLOSED", 10)
    finally:
        bob.stop()
        carol.stop()


@pytest.mark.parametrize("camera", [True, False], ids=["answered-with-video", "answered-without-camera"])
def test_video_call_between_two_browsers(gateway: Gateway, tmp_path: Path, camera: bool) -> None:
    # Each person gets a browser of their own (two tabs asking one headless Chromium for media crash it).
    with Browser(tmp_path / "alice-browser") as alice_browser, Browser(tmp_path / "bob-browser") as bob_browser:
        bob = demo(bob_browser, gateway, "bob@sylk.test", "bobpw")
        bob.register()
        alice = demo(alice_browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test", video=True)
        bob.wait_ringing()
        # the banner says it is a video call, and answers with video unless told otherwise
        assert (bob.text("incoming-kind"), bob.text("answer")) == ("video call", "Answer with video")
        assert bob.shown("answer-audio") and bob.shown("incoming-note")
        assert not bob.page.page.is_checked('[data-testid="video"]')  # (that box is for calls bob places)
        bob.click("answer" if camera else "answer-audio")
        alice.call_established()
        bob.wait_text("call-state", "established")
        # bob sees alice either way; alice sees bob only if he answered with video
        bob.page.wait_for_packets("window.demo.call.pc", "inbound", "video", 30, timeout=15)
        assert bob.page.rtp_stats("window.demo.call.pc")["inbound"]["video"].get("framesDecoded", 0) > 0
        assert bob.shown("remote-video-box") and bob.shown("local-video-box") == camera
        assert alice.shown("local-video-box")
        if camera:
            alice.page.wait_for_packets("window.demo.call.pc", "inbound", "video", 30, timeout=15)
            assert alice.page.rtp_stats("window.demo.call.pc")["inbound"]["video"].get("framesDecoded", 0) > 0
            assert alice.shown("remote-video-box")
        else:
            assert not alice.shown("remote-video-box")
        alice.click("hangup")
        bob.wait_text("call-state", "terminated")
        assert not bob.shown("remote-video-box") and not bob.shown("local-video-box")


def test_a_connection_forced_to_sylkrtc1_still_calls(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                                     tmp_path: Path) -> None:
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw", protocol="sylkRTC-1")
        alice.register()
        assert alice.page.evaluate("window.demo.connection.protocols") == ["sylkRTC-1"]
        assert alice.protocol == "sylkRTC-1"
        alice.dial("bob@sylk.test")
        alice.call_established()
        assert alice.inbound_audio() >= 50
        assert abs(alice.remote_frequency() - BOB_TONE) < 30
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        bob.wait_event("CALL_CLOSED", 10)
        assert has_tone(bob.received_wav(), BROWSER_TONE)
        assert "progress → accepted" in alice.text("log")  # sylkRTC-1 has no ringing or early-media states
    finally:
        bob.stop()


def test_rfc4733_dtmf_from_the_browser_reaches_the_phone(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                                         tmp_path: Path) -> None:
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.call_established()
        alice.inbound_audio(10)  # media are flowing
        alice.page.evaluate("window.demo.call.sendDtmf('123#')")
        assert bob.wait_dtmf(4, 10) == "123#"
        assert bob.received_dtmf_info() == []  # in the media (telephone-event), not as SIP INFO
        alice.click("hangup")
        bob.wait_event("CALL_CLOSED", 10)
    finally:
        bob.stop()


def test_the_keypad_sends_sip_info_when_asked(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                              tmp_path: Path) -> None:
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.call_established()
        alice.page.page.check('[data-testid="dtmf-info"]')
        alice.click("dtmf-4")
        alice.click("dtmf-star")
        assert bob.wait_dtmf(2, 10) == "4*"
        assert bob.received_dtmf_info() == ["4", "*"]  # one SIP INFO per tone, in order
        alice.wait_text("dtmf-sent", "4*")
        alice.click("hangup")
        bob.wait_event("CALL_CLOSED", 10)
    finally:
        bob.stop()


def test_early_media_plays_before_the_answer(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                             tmp_path: Path) -> None:
    # a phone whose 183 brings an SDP and a tone (think ringback or an announcement), and answers 6 s later
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    tone = write_ulaw_tone(workdir / "early.ulaw", CAROL_TONE, seconds=4)
    with sipp_phone(tmp_path, kamailio, "uas_early_media_tone.xml", tone=str(tone), early="6000") as bob:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.wait_text("call-state", "early-media")
        assert alice.page.evaluate("window.demo.call.pc.signalingState") == "have-remote-pranswer"
        assert alice.inbound_audio(25) >= 25
        assert abs(alice.remote_frequency() - CAROL_TONE) < 30  # heard before the answer...
        assert alice.text("call-state") == "early-media"  # ...which has not come yet
        alice.call_established()
        # the 200 OK brought no new SDP (sylkRTC-2: accepted without one): the early answer became the answer
        assert alice.page.evaluate("window.demo.call.pc.signalingState") == "stable"
        assert alice.page.evaluate("window.demo.call.pc.remoteDescription.type") == "answer"
        assert alice.page.evaluate("window.demo.call.callId") in bob.messages()  # the SIP Call-ID
        assert abs(alice.remote_frequency() - CAROL_TONE) < 30  # and the media go on
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        assert bob.wait(10) == 0  # it answered, got the ACK and the BYE


def test_dtmf_from_the_far_end_as_sip_info(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                           tmp_path: Path) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()
    # a caller that sends DTMF 5 as SIP INFO (Duration=250) half a second after the answer, then hangs up
    with Sipp(tmp_path / "sipp", "uac_call_info.xml", SIPP_PORT, "alice", {"caller": "bob"}, auth=("bob", "bobpw"),
              render={"hold": "1000"}) as bob:
        alice.page.wait_for('!document.querySelector(\'[data-testid="incoming"]\').hidden', 15, "the ringing")
        assert alice.page.evaluate("window.demo.incoming.callId") in bob.messages()  # sylkRTC-2: the SIP Call-ID
        alice.page.evaluate("""() => { window.tones = [];
                                       window.demo.incoming.on('dtmf', (dtmf) => window.tones.push(dtmf)); }""")
        alice.click("answer")
        tones = alice.page.wait_for("window.tones.length > 0 && window.tones", 10, "the dtmf event")
        assert tones == [{"digit": "5", "duration": 250, "method": "info"}]
        alice.wait_text("dtmf-received", "5")
        alice.wait_text("call-state", "terminated")
        assert bob.wait(10) == 0


# --- call control: hold, re-INVITEs both ways, transfer, messages, with sipp phones ---

def sipp_phone(tmp_path: Path, kamailio: Kamailio, scenario: str, user: str = "bob", port: int = SIPP_PORT,
               **render: str) -> Sipp:
    """`user` as a registered sipp phone on `port`, running `scenario` (a UAS: it waits for a call)."""
    return registered_phone(tmp_path / "sipp", scenario, user, kamailio.users[user], port, **render)


@pytest.mark.parametrize("protocol", ["", "sylkRTC-1"], ids=["sylkRTC-2", "sylkRTC-1"])
def test_the_browser_holds_and_resumes_a_call(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                              tmp_path: Path, protocol: str) -> None:
    with sipp_phone(tmp_path, kamailio, "uas_answer_reinvites.xml", answer1="recvonly", answer2="sendrecv") as bob:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw", protocol=protocol)
        alice.dial("bob@sylk.test")
        alice.call_established()
        assert alice.protocol == (protocol or "sylkRTC-2")
        alice.click("hold")
        assert alice.wait_events("hold", 1) == [{"held": True, "originator": "local"}]
        alice.wait_text("hold-state", "on hold")
        assert alice.text("hold") == "Resume"
        eventually(lambda: len(bob.received("INVITE ")) == 2, 10, "the hold's re-INVITE at the phone")
        alice.click("hold")  # now "Resume"
        assert alice.wait_events("hold", 2)[1] == {"held": False, "originator": "local"}
        alice.wait_text("hold-state", "")
        eventually(lambda: len(bob.received("INVITE ")) == 3, 10, "the resume's re-INVITE at the phone")
        assert alice.text("call-state") == "established"  # the call went on
        assert alice.page.evaluate("window.demo.call.pc.signalingState") == "stable"  # no renegotiation in the page
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        assert bob.wait(10) == 0
        _, hold, resume = bob.received("INVITE ")
        assert "a=sendonly" in hold and "a=sendrecv" not in hold, hold
        assert "a=sendonly" not in resume, resume
        assert [name for name, _ in alice.page.evaluate("window.demo.events")] == ["hold", "hold"]


def test_a_sip_phone_holds_and_resumes_the_call(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                                tmp_path: Path) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()
    # bob calls, puts the call on hold 0.5 s after the answer (CSeq 3, a=sendonly), resumes it (CSeq 4), and
    # hangs up a second later: sylkrtc.js must answer both re-INVITEs itself, or the gateway ends the call
    with Sipp(tmp_path / "sipp", "uac_call_hold.xml", SIPP_PORT, "alice", {"caller": "bob"}, auth=("bob", "bobpw"),
              render={"hold": "1000"}) as bob:
        alice.wait_ringing()
        alice.click("answer")
        assert alice.wait_events("hold", 2) == [{"held": True, "originator": "remote"},
                                                {"held": False, "originator": "remote"}]
        assert alice.wait_events("updated", 2) == [{"originator": "remote"}, {"originator": "remote"}]
        assert alice.text("call-state") in ("accepted", "established")  # still up, until bob's BYE
        alice.wait_text("call-state", "terminated")
        assert alice.text("call-reason") == "(200 OK)"
        assert bob.wait(10) == 0  # both re-INVITEs answered with 200, and the BYE too
        assert len(bob.sent("BYE ")) == 1  # the phone hung up, not the gateway
        oks = bob.invite_oks()
        assert "a=recvonly" in oks[3], oks[3]  # the browser's answer to the hold
        assert "a=recvonly" not in oks[4] and "a=sendonly" not in oks[4], oks[4]
        assert [name for name, _ in alice.page.evaluate("window.demo.events")] == \
            ["updateReceived", "hold", "updated", "updateReceived", "hold", "updated"]


def test_the_browser_transfers_a_call_to_carol(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                               tmp_path: Path) -> None:
    # bob takes the REFER and reports his call to carol as 100 Trying, 407 Proxy Authentication Required (the
    # registrar's challenge, which he answers) and 200 OK (NOTIFYs); then the gateway ends alice's call to him
    # (RFC 5589)
    with sipp_phone(tmp_path, kamailio, "uas_answer_referred_challenged.xml") as bob:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.call_established()
        alice.page.evaluate("""() => { window.transferShown = [];
            const shown = document.querySelector('[data-testid="transfer-state"]');
            new MutationObserver(() => window.transferShown.push(shown.textContent))
                .observe(shown, {childList: true, characterData: true, subtree: true}); }""")
        alice.fill("transfer-uri", "carol@sylk.test")
        alice.click("transfer")
        progress = alice.wait_events("transfer", 2)
        assert [(p["state"], p["code"]) for p in progress] == [("progress", 100), ("completed", 200)]
        alice.wait_text("transfer-state", "completed 200 OK")
        shown = alice.page.evaluate("window.transferShown")
        assert "progress 100 Trying" in shown and not any("407" in text for text in shown), shown
        alice.wait_text("call-state", "terminated")
        assert alice.text("call-reason") == "(Transferred)"
        assert bob.wait(10) == 0  # it got the gateway's BYE
        (refer,) = bob.received("REFER ")
        assert re.search(r"^Refer-To: <sip:carol@sylk\.test>", refer, re.MULTILINE | re.IGNORECASE), refer


def test_the_phone_transfers_the_browser_to_carol(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                                  tmp_path: Path) -> None:
    # bob answers, then REFERs the browser to carol, follows the new call through the NOTIFYs, and hangs up
    with sipp_phone(tmp_path, kamailio, "uas_answer.xml", user="carol", port=CAROL_SIPP_PORT) as carol, \
            sipp_phone(tmp_path, kamailio, "uas_answer_refer.xml") as bob:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.call_established()
        alice.page.wait_for('!document.querySelector(\'[data-testid="transfer-request"]\').hidden', 10,
                            "the transfer request banner")
        assert alice.text("transfer-request-to") == "carol@sylk.test"
        assert alice.events("transferRequest") == [{"referTo": "carol@sylk.test", "referredBy": "bob@sylk.test",
                                                    "replaces": False}]
        first = alice.page.evaluate("window.demo.call.id")
        alice.click("transfer-accept")  # sylkrtc.js: request.accept(), a new call with refer_session
        alice.page.wait_for(f"window.demo.call.id !== {first!r} && window.demo.call.state === 'established'", 15,
                            "the call to carol")
        assert alice.page.evaluate("window.demo.call.remoteIdentity.uri") == "carol@sylk.test"
        alice.page.wait_for(f"window.demo.connection.calls.every(c => c.id !== {first!r})", 10,
                            "bob hanging up the first call once carol answered")
        assert bob.wait(10) == 0  # it saw carol's 200 in a NOTIFY
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        assert carol.wait(10) == 0
        (invite,) = carol.received("INVITE ")
        assert re.search(r"^Referred-By: <sip:bob@sylk\.test>", invite, re.MULTILINE | re.IGNORECASE), invite


def test_messages_to_and_from_sip_phones(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                         tmp_path: Path) -> None:
    alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
    alice.register()  # (only needed to receive)
    with sipp_phone(tmp_path, kamailio, "uas_message.xml") as bob:
        alice.fill("message-uri", "bob@sylk.test")
        alice.fill("message-text", "hello bob")
        alice.click("send-message")
        status = alice.page.wait_for(
            "document.querySelector('[data-testid=messages] li.out [data-testid=message-status]')"
            ".textContent === 'accepted 200 OK' && window.demo.events.find(e => e[0] === 'messageStatus')[1]",
            10, "the message's status")
        assert (status["state"], status["code"], status["reason"]) == ("accepted", 200, "OK")
        assert bob.wait(10) == 0
        (message,) = bob.received("MESSAGE ")
        assert "Content-Type: text/plain" in message and message.endswith("hello bob"), message
    with Sipp(tmp_path / "sipp-in", "uac_message.xml", SIPP_PORT, "alice", {"caller": "bob"},
              auth=("bob", "bobpw")) as bob:
        received = alice.wait_events("message", 1)[0]
        assert bob.wait(10) == 0
    assert received["sender"]["uri"] == "bob@sylk.test"
    assert (received["contentType"], received["content"].strip()) == ("text/plain", "hello alice")
    alice.page.wait_for("[...document.querySelectorAll('[data-testid=messages] li.in')]"
                        ".some(li => li.textContent.includes('hello alice'))", 5, "the message in the page")
    assert "bob@sylk.test" in alice.text("messages")


def test_the_demo_phone_shows_the_history_and_the_other_devices_messages(browser: Browser, gateway: Gateway,
                                                                          kamailio: Kamailio, tmp_path: Path) -> None:
    first = demo(browser, gateway, "alice@sylk.test", "alicepw")
    first.register()
    with sipp_phone(tmp_path, kamailio, "uas_message.xml") as bob:
        first.fill("message-uri", "bob@sylk.test")
        first.fill("message-text", "hello bob")
        first.click("send-message")
        assert bob.wait(10) == 0
    second = demo(browser, gateway, "alice@sylk.test", "alicepw")
    second.register()  # the history comes once registered
    second.page.wait_for("[...document.querySelectorAll('[data-testid=messages] li.out.history')]"
                         ".some(li => li.textContent.includes('hello bob'))", 10, "the history on the second page")
    with sipp_phone(tmp_path / "again", kamailio, "uas_message.xml") as bob:
        first.fill("message-text", "and again")
        first.click("send-message")
        assert bob.wait(10) == 0
    second.page.wait_for("[...document.querySelectorAll('[data-testid=messages] li.out')]"
                         ".some(li => li.textContent.includes('(another device)') && "
                         "li.textContent.includes('and again'))", 10, "the first page's message on the second")


# Opens a sylkrtc.js connection in the page (served by the gateway), adds alice and registers her; what her other
# devices do arrives in window.syncs.
ALICE_DEVICE = """async (url) => {
    const sylkrtc = await import('/webrtcgateway/sylkrtc.js');
    const connection = sylkrtc.connect(url);
    await connection.waitReady(10000);
    const account = await connection.addAccount({ account: 'alice@sylk.test', password: 'alicepw' });
    window.syncs = [];
    account.on('sync', (sync) => window.syncs.push(sync));
    const registered = new Promise((resolve) => account.on('registrationStateChanged',
        (state) => { if (state === 'registered') resolve(); }));
    await account.register();
    await registered;
    window.account = account;
    return connection.protocol;
}"""


def alice_device(browser: Browser, gateway: Gateway) -> BrowserPage:
    page = browser.page(f"http://127.0.0.1:{gateway.port}/webrtcgateway/")
    assert page.evaluate(ALICE_DEVICE, f"ws://127.0.0.1:{gateway.port}/webrtcgateway/ws", timeout=20) == "sylkRTC-2"
    return page


def test_an_accounts_devices_follow_each_other_with_sylkrtc_js(browser: Browser, gateway: Gateway,
                                                               kamailio: Kamailio, tmp_path: Path) -> None:
    laptop, phone_ = alice_device(browser, gateway), alice_device(browser, gateway)
    with sipp_phone(tmp_path, kamailio, "uas_message.xml") as bob:
        message_id = laptop.evaluate("window.account.sendMessage('bob@sylk.test', 'hello bob')")
        assert bob.wait(10) == 0
    synced = phone_.wait_for("window.syncs.length >= 1 && window.syncs[0]", 10, "the message on the other device")
    assert (synced["type"], synced["action"], synced["content"]["messageId"], synced["content"]["uri"],
            synced["content"]["content"]) == ("message", "add", message_id, "bob@sylk.test", "hello bob")
    laptop.evaluate("window.account.markConversationRead('bob@sylk.test')")
    read = phone_.wait_for("window.syncs.length >= 2 && window.syncs[1]", 10, "the read mark on the other device")
    assert (read["type"], read["action"], read["content"]) == ("conversation", "read", {"contact": "bob@sylk.test"})
    tablet = alice_device(browser, gateway)
    history = tablet.evaluate("window.account.syncConversations()")
    assert [(entry["contentType"], entry["direction"], entry["content"]) for entry in history] == [
        ("text/plain", "outgoing", "hello bob"), ("application/sylk-conversation-read", "", "bob@sylk.test")]
    assert history[0]["messageId"] == message_id and history[0]["state"] == "accepted"
    assert tablet.evaluate("window.account.connection.lookupPublicKey('bob@sylk.test')") is None


# --- the signalling connection drops mid-call ---

def cut_connections_to(port: int) -> None:
    """Destroys the TCP connections to `port` (`ss -K`): each end gets an error or a reset, as when the network
    drops. (A socket the page closes itself gets the gateway's echoed 1000, a normal closure: no reconnect.)"""
    done = subprocess.run(["ss", "-K", "-t", "dst", "127.0.0.1", "dport", "=", str(port)], capture_output=True,
                          text=True, timeout=5, check=True)
    assert "ESTAB" in done.stdout, f"no connection to port {port} to cut: {done.stdout} {done.stderr}"


def tone_gaps(path: Path, hz: float, window: float = 0.25, tolerance: float = 15.0) -> list[float]:
    """Where (s into the recording) the audio from its first sound to its last is not `hz`: silent or other."""
    report = tone_report(path, window=window, max_windows=100_000)
    loud = {round(start / window): abs(peak - hz) <= tolerance for start, _, peak in report.loud}
    if not loud:
        return [0.0]
    return [index * window for index in range(min(loud), max(loud) + 1) if not loud.get(index, False)]


def test_the_call_survives_a_dropped_websocket(browser: Browser, gateway: Gateway, kamailio: Kamailio,
                                               tmp_path: Path) -> None:
    # The page's socket is cut mid-call: the gateway keeps the connection (connection-keep), sylkrtc.js keeps the
    # call and its PeerConnection, reconnects after its backoff and resumes (connection-resume); the audio never
    # stops, and the same call is hung up normally afterwards.
    bob = phone(tmp_path, kamailio, "bob", BOB_TONE)
    try:
        alice = demo(browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test")
        alice.call_established()
        bob.wait_event("CALL_ESTABLISHED", 10)
        heard = alice.remote_frequency()
        assert heard is not None and abs(heard - BOB_TONE) < 30
        alice.page.evaluate("""() => {
            const connection = window.demo.connection;
            const shown = (id) => document.querySelector(`[data-testid="${id}"]`);
            window.seen = [];  // per state change: the state, what the page shows, the call's state, hang-up usable
            connection.on('stateChanged', (state) => window.seen.push(
                [state, shown('connection-state').textContent, shown('call-state').textContent,
                 !shown('hangup').disabled]));
            connection.on('resumed', (details) => { window.resumed = details; });
            window.callBefore = window.demo.call;
        }""")
        cut_connections_to(gateway.port)
        dropped = time.monotonic()
        alice.page.wait_for("window.resumed", 10, "the resume")
        alice.wait_text("connection-state", "ready", 5)
        assert time.monotonic() - dropped < 8  # the first reconnect comes after 0.5 s
        seen = alice.page.evaluate("window.seen")
        assert seen == [["disconnected", "reconnecting", "established", True],
                        ["connecting", "reconnecting", "established", True],
                        ["ready", "ready", "established", True]], seen
        assert alice.page.evaluate("window.resumed") == {"missed": 0}
        assert alice.page.evaluate("window.demo.call === window.callBefore")  # the same Call, never torn down
        assert alice.page.evaluate("window.demo.call.pc.connectionState") == "connected"
        received = alice.page.packets("window.demo.call.pc", "inbound", "audio")
        alice.page.wait_for_packets("window.demo.call.pc", "inbound", "audio", received + 50, timeout=10)
        heard = alice.remote_frequency()
        assert heard is not None and abs(heard - BOB_TONE) < 30  # bob is still heard
        time.sleep(1)  # more of the call after the resume, in bob's recording
        alice.click("hangup")
        alice.wait_text("call-state", "terminated")
        assert alice.text("call-reason") == "(200 OK)"  # bob answered the BYE
        bob.wait_event("CALL_CLOSED", 10)
        recording = bob.received_wav()
        report = tone_report(recording)
        assert report.seconds > 4 and has_tone(recording, BROWSER_TONE), report
        assert tone_gaps(recording, BROWSER_TONE) == [], report  # bob heard the browser throughout
        assert "Connection lost" not in alice.text("log")
    finally:
        bob.stop()
