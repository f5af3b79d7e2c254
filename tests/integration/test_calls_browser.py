"""Calls with real media: headless Chromium running the demo page (and through it sylkrtc.js) -> the gateway -> its
Janus -> Kamailio -> baresip phones, all in a private network namespace. Chromium's fake microphone plays a 1 kHz
tone; the phones play their own tones and record what they receive, so audio is checked in both directions.
sylkrtc.js offers sylkRTC-2 and sylkRTC-1, and the gateway picks sylkRTC-2: every test speaks that unless it
forces sylkRTC-1 (`protocol=` of the demo page).

The namespace's veth pair carries 127.0.0.1 on a non-loopback interface (Janus gathers no ICE candidates on a
loopback one) and the gateway's Janus is restricted to it (`[Janus] interface = 127.0.0.1`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.audio import has_tone, write_tone, write_ulaw_tone
from tests.integration.baresip import Baresip
from tests.integration.browser import Browser, BrowserPage
from tests.integration.gateway import Gateway
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import Sipp, register as sipp_register

BROWSER_TONE, BOB_TONE, CAROL_TONE = 1000, 660, 440
SIPP_PORT = 5092


class Phone:
    """The demo page in a browser, used as a person would: through its controls."""

    def __init__(self, page: BrowserPage) -> None:
        self.page = page

    def click(self, testid: str) -> None:
        self.page.page.click(f'[data-testid="{testid}"]')

    def text(self, testid: str) -> str:
        return self.page.page.text_content(f'[data-testid="{testid}"]') or ""

    def wait_text(self, testid: str, value: str, timeout: float = 15) -> None:
        self.page.wait_for(f'document.querySelector(\'[data-testid="{testid}"]\').textContent.trim() === "{value}"',
                           timeout, f"{testid} to show {value!r} (shows {self.text(testid)!r})")

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


@pytest.fixture
def kamailio(netns: str, tmp_path: Path) -> Iterator[Kamailio]:
    with Kamailio(tmp_path / "kamailio") as registrar:
        yield registrar


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
    url = f"http://127.0.0.1:{gateway.port}/webrtcgateway/?account={account}&password={password}&protocol={protocol}"
    return Phone(browser.page(url))


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


def test_video_call_between_two_browsers(gateway: Gateway, tmp_path: Path) -> None:
    # Each person gets a browser of their own (two tabs asking one headless Chromium for media crash it).
    with Browser(tmp_path / "alice-browser") as alice_browser, Browser(tmp_path / "bob-browser") as bob_browser:
        bob = demo(bob_browser, gateway, "bob@sylk.test", "bobpw")
        bob.register()
        alice = demo(alice_browser, gateway, "alice@sylk.test", "alicepw")
        alice.dial("bob@sylk.test", video=True)
        bob.page.wait_for('!document.querySelector(\'[data-testid="incoming"]\').hidden', 15, "the ringing")
        bob.page.page.check('[data-testid="video"]')  # answer with the camera too
        bob.click("answer")
        for person in (alice, bob):
            person.page.wait_for_packets("window.demo.call.pc", "inbound", "video", 30, timeout=15)
            frames = person.page.rtp_stats("window.demo.call.pc")["inbound"]["video"].get("framesDecoded", 0)
            assert frames > 0
        alice.click("hangup")
        bob.wait_text("call-state", "terminated")


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
    sipp_register(workdir, "bob", kamailio.users["bob"], SIPP_PORT)
    scenario = Sipp(workdir, "uas_early_media_tone.xml", SIPP_PORT, "bob", render={"tone": str(tone), "early": "6000"})
    with scenario as bob:
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
