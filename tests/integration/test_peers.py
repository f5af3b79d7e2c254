"""The real test peers work inside a test's private network namespace: Chromium (browser.py) makes a WebRTC
call with itself over 127.0.0.1 with fake media, and two baresip phones (baresip.py) call each other through the
Kamailio harness, each hearing the other's tone (audio.py). These are what the call tests build on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.audio import has_tone, tone_report, write_tone
from tests.integration.baresip import Baresip
from tests.integration.browser import Browser, StaticServer, describe
from tests.integration.kamailio import Kamailio

pytestmark = pytest.mark.timeout(60)

# Two RTCPeerConnections in one page, fake camera + microphone. Only 127.0.0.1 host candidates are passed on (in
# the test namespace there are no others anyway). Exposes window.pc1/pc2, the remote stream and the state.
LOOPBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>loopback</title></head>
<body><video id="remote-video" autoplay playsinline muted></video><audio id="remote-audio" autoplay></audio>
<script>
window.state = 'starting';
window.candidates = [];
async function main() {
  const local = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc1 = window.pc1 = new RTCPeerConnection({iceServers: []});
  const pc2 = window.pc2 = new RTCPeerConnection({iceServers: []});
  const relay = (from, to) => from.onicecandidate = e => {
    if (!e.candidate || !e.candidate.candidate) return;
    window.candidates.push(e.candidate.candidate);
    if (e.candidate.address === '127.0.0.1') to.addIceCandidate(e.candidate);
  };
  relay(pc1, pc2); relay(pc2, pc1);
  pc2.ontrack = e => {
    window.remoteStream = e.streams[0];
    document.getElementById('remote-video').srcObject = e.streams[0];
    document.getElementById('remote-audio').srcObject = e.streams[0];
  };
  local.getTracks().forEach(track => pc1.addTrack(track, local));
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription);
  window.state = 'negotiated';
}
main().catch(e => { window.state = 'error: ' + e; console.error(String(e)); });
</script></body></html>
"""


def test_chromium_loopback_call(netns: str, tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone-1000.wav", 1000, seconds=5, rate=48000)
    with StaticServer({"/loopback.html": LOOPBACK_PAGE}) as server, \
            Browser(tmp_path, fake_audio=tone) as browser:
        page = browser.page(server.url("/loopback.html"))
        page.wait_for("window.state !== 'starting'", timeout=10)
        assert page.evaluate("window.state") == "negotiated"
        page.wait_for("['connected', 'completed'].includes(window.pc2.iceConnectionState)", timeout=10)
        pair = page.selected_pair("window.pc2")
        assert pair is not None and pair["state"] == "succeeded", describe(pair)
        assert pair["local"]["address"] == "127.0.0.1" and pair["remote"]["address"] == "127.0.0.1", describe(pair)
        addresses = {c.split()[4] for c in page.evaluate("window.candidates")}
        assert addresses == {"127.0.0.1"}, addresses          # nothing but the loopback address in the namespace

        first = page.rtp_stats("window.pc2")
        page.wait_for_packets("window.pc2", "inbound", "audio", 50, timeout=10)
        page.wait_for_packets("window.pc2", "inbound", "video", 50, timeout=10)
        hz = page.dominant_frequency("window.remoteStream", seconds=1.5)
        later = page.rtp_stats("window.pc2")
        sent = page.rtp_stats("window.pc1")
        print(f"chromium {browser.version}: launch {browser.launch_seconds:.2f} s, pair {describe(pair)}, "
              f"inbound {describe(later['inbound'])}, outbound {describe(sent['outbound'])}, remote audio {hz} Hz")
        for kind in ("audio", "video"):
            assert later["inbound"][kind]["packets"] > first["inbound"].get(kind, {}).get("packets", 0), later
            assert sent["outbound"][kind]["packets"] > 0, sent
        assert later["inbound"]["video"].get("framesDecoded", 0) > 0, later
        assert hz is not None and abs(hz - 1000) < 15, page.frequency_report("window.remoteStream", 1)
        pids = browser.pids()                                 # browser, zygotes, renderers, crashpad handlers...
        assert len(pids) > 3, pids
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")], "Chromium processes left behind"


def test_baresip_call_through_kamailio(kamailio: Kamailio, tmp_path: Path) -> None:
    started = time.monotonic()
    with Baresip(tmp_path / "bob", "bob", "bobpw", answermode="auto", tone_hz=660, kamailio=kamailio) as bob, \
            Baresip(tmp_path / "alice", "alice", "alicepw", tone_hz=440, kamailio=kamailio) as alice:
        registered = time.monotonic() - started
        assert kamailio.contacts("bob") and kamailio.contacts("alice")

        # alice calls bob, who answers by himself; 2 s of audio each way; alice hangs up
        alice.dial("sip:bob@sylk.test")
        established = bob.wait_event("CALL_ESTABLISHED", timeout=5)     # auto answer: no CALL_INCOMING event
        assert "alice@sylk.test" in established["peeruri"], established
        alice.wait_event("CALL_ESTABLISHED", timeout=5)
        time.sleep(2)
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=5)
        bob.wait_event("CALL_CLOSED", timeout=5)
        heard_by_alice, heard_by_bob = tone_report(alice.received_wav()), tone_report(bob.received_wav())

        # bob calls alice, who answers by command; bob hangs up
        bob.dial("sip:alice@sylk.test")
        incoming = alice.wait_event("CALL_INCOMING", timeout=5)
        assert "bob@sylk.test" in incoming["peeruri"], incoming
        alice.answer()
        alice.wait_event("CALL_ESTABLISHED", timeout=5)
        bob.wait_event("CALL_ESTABLISHED", timeout=5)
        bob.hangup()
        bob.wait_event("CALL_CLOSED", timeout=5)
        alice.wait_event("CALL_CLOSED", timeout=5)
    assert alice.returncode == 0 and bob.returncode == 0, (alice.returncode, bob.returncode)
    assert not kamailio.contacts("alice") and not kamailio.contacts("bob"), "quit should un-REGISTER"

    alice_stats, bob_stats = alice.rtp_stats(), bob.rtp_stats()
    print(f"registered in {registered:.2f} s; RTP alice {alice_stats}, bob {bob_stats}; "
          f"alice heard {heard_by_alice.dominant:.1f} Hz, bob heard {heard_by_bob.dominant:.1f} Hz; "
          f"total {time.monotonic() - started:.2f} s")
    assert len(alice_stats) == 2 and len(bob_stats) == 2, (alice_stats, bob_stats)
    for stats in (alice_stats[0], bob_stats[0]):                     # the 2 s call: 50 packets/s each way
        assert stats["tx_packets"] >= 75 and stats["rx_packets"] >= 75, stats
    assert heard_by_alice.fraction_near(660, 15) >= 0.6, heard_by_alice   # what has_tone(wav, 660) checks
    assert heard_by_bob.fraction_near(440, 15) >= 0.6, heard_by_bob
    assert heard_by_alice.fraction_near(440, 15) == 0, heard_by_alice     # not an echo of her own tone
    assert len(alice.recordings("dec")) == 2 and has_tone(alice.recordings("enc")[0], 440)
