"""Call signalling end to end: browser stand-in -> gateway -> its Janus -> Kamailio -> sipp phones, and back.

The browser stand-in sends well-formed WebRTC SDP (tests/integration/webrtc.py) but no media, so these calls never
reach `established`; what they check is real SIP: what the phone receives (INVITE, CANCEL, BYE) and what it
answers (180, 486, 603, 404, 200) arriving in the browser as the right states and reasons. Media are checked with
a real browser in test_calls_browser.py."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import start_gateway
from tests.integration.gateway import Client, Gateway, eventually, register
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import Sipp, registered_phone
from tests.integration.webrtc import OFFER, answer_for

ALICE = "alice@sylk.test"
BOB_PORT, CAROL_PORT = 5092, 5094


def states(client: Client, session: str, until: str = "terminated", timeout: float = 15) -> list[Any]:
    """The session's states up to `until`, with sdp (shortened to 'sdp') or reason."""
    seen: list[Any] = []
    while True:
        event = client.event(lambda m: m.get("sylkrtc") == "session_event" and m.get("session") == session,
                             timeout, f"a state of session {session}")
        data = event["data"]
        extra = "sdp" if "sdp" in data else data.get("reason")
        seen.append(data["state"] if extra is None else (data["state"], extra))
        if data["state"] in (until, "terminated"):
            return seen


def call(client: Client, uri: str, session: str = "s1") -> None:
    answer = client.request("session-create", account=ALICE, session=session, uri=uri, sdp=OFFER)
    assert answer["sylkrtc"] == "ack", answer


@pytest.fixture
def caller(gateway: Gateway, kamailio: Kamailio) -> Client:
    """A browser with alice added, not registered: calling does not need it (the proxy still authenticates the
    INVITE, with a 407 that Janus answers from the HA1)."""
    client = gateway.connect()
    assert client.request("add_account", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
    return client


def alices_devices(gateway: Gateway, kamailio: Kamailio, count: int) -> list[Client]:
    """`count` browsers (sylkRTC-2) with alice added and registered: her devices."""
    devices = [gateway.connect(subprotocols=("sylkRTC-2",)) for _ in range(count)]
    for device in devices:
        assert device.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
        device.request("account-register", account=ALICE)
        device.event(lambda m: m.get("state") == "registered", 15, "registered")
    return devices


def phone(kamailio: Kamailio, tmp_path: Path, scenario: str, user: str = "bob", port: int = BOB_PORT,
          **render: str) -> Sipp:
    """A registered sipp phone for `user`, running `scenario`."""
    return registered_phone(tmp_path / "sipp", scenario, user, kamailio.users[user], port, **render)


class TestOutgoing:
    def test_answered_then_hung_up_by_the_browser(self, caller: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer.xml") as bob:
            call(caller, "bob@sylk.test")
            assert states(caller, "s1", until="accepted") == ["progress", ("accepted", "sdp")]
            assert caller.request("session-terminate", session="s1")["sylkrtc"] == "ack"
            assert states(caller, "s1") == [("terminated", "200 OK")]
            assert bob.wait() == 0  # it got the INVITE, answered, and got the BYE
            invite = bob.messages()
            assert "INVITE sip:bob@" in invite and "From: <sip:alice@sylk.test>" in invite
            assert "AUTH OK user=alice method=INVITE" in kamailio.log()

    def test_the_phases_of_the_setup_in_the_metrics(self, kamailio: Kamailio, tmp_path: Path) -> None:
        (tmp_path / "gateway").mkdir()
        with Gateway(tmp_path / "gateway", {"WebRTCGateway": {"outbound_sip_proxy": kamailio.proxy},
                                            "WebServer": {"metrics_port": 10889}}) as gateway, \
                phone(kamailio, tmp_path, "uas_answer.xml") as bob:
            client = gateway.connect()
            assert client.request("add_account", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
            call(client, "bob@sylk.test")
            assert states(client, "s1", until="accepted") == ["progress", ("accepted", "sdp")]
            with urllib.request.urlopen("http://127.0.0.1:10889/metrics", timeout=5) as response:
                counts = dict(re.findall(r'^sylkgateway_call_setup_seconds_count\{phase="([a-z-]+)"\} (\S+)$',
                                         response.read().decode(), re.MULTILINE))
            # the stand-in browser sends no media: never established
            assert counts == {"invite-sent": "1.0", "provisional": "1.0", "accepted": "1.0", "established": "0.0"}
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0

    def test_the_phone_hangs_up(self, caller: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer_hangup.xml") as bob:
            call(caller, "bob@sylk.test")
            assert states(caller, "s1") == ["progress", ("accepted", "sdp"), ("terminated", "200 OK")]
            assert bob.wait() == 0

    @pytest.mark.parametrize("refusal", ["486 Busy Here", "603 Decline"])
    def test_the_phone_refuses(self, caller: Client, kamailio: Kamailio, tmp_path: Path, refusal: str) -> None:
        with phone(kamailio, tmp_path, "uas_refuse.xml", status=refusal) as bob:
            call(caller, "bob@sylk.test")
            assert states(caller, "s1") == ["progress", ("terminated", refusal)]
            assert bob.wait() == 0

    def test_wrong_credentials(self, gateway: Gateway) -> None:
        client = gateway.connect()
        client.request("add_account", account=ALICE, password="0" * 32)
        call(client, "bob@sylk.test")
        assert states(client, "s1") == ["progress", ("terminated", "403 Forbidden")]

    def test_unknown_user(self, caller: Client) -> None:
        call(caller, "carol@sylk.test")  # not registered at the proxy
        assert states(caller, "s1") == ["progress", ("terminated", "404 Not Found")]

    def test_a_call_right_after_failed_ones_rings(self, caller: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        # Janus frees a call's ICE agent a while after the call's end: a new call on the same handle within that
        # time failed with 490 "Error setting ICE locally" and never rang (each call now gets a fresh line)
        call(caller, "carol@sylk.test", session="s0")  # not registered: 404
        assert states(caller, "s0") == ["progress", ("terminated", "404 Not Found")]
        with phone(kamailio, tmp_path, "uas_refuse.xml", status="603 Decline") as bob:
            call(caller, "bob@sylk.test", session="s1")
            assert states(caller, "s1") == ["progress", ("terminated", "603 Decline")]
        with phone(kamailio, tmp_path / "again", "uas_answer.xml") as bob:
            call(caller, "bob@sylk.test", session="s2")
            assert states(caller, "s2", until="accepted") == ["progress", ("accepted", "sdp")]
            caller.request("session-terminate", session="s2")
            assert bob.wait() == 0

    def test_cancelled_while_ringing(self, caller: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_ring.xml") as bob:
            call(caller, "bob@sylk.test")
            assert states(caller, "s1", until="progress") == ["progress"]
            eventually(lambda: "SIP/2.0 180 Ringing" in bob.messages(), what="the phone ringing")
            caller.request("session-terminate", session="s1")
            assert states(caller, "s1") == [("terminated", "487 Request Terminated")]
            assert bob.wait() == 0
            assert "CANCEL sip:bob@" in bob.messages()

    def test_two_calls_at_once_from_one_account(self, caller: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer.xml") as bob, \
                phone(kamailio, tmp_path, "uas_answer.xml", user="carol", port=CAROL_PORT) as carol:
            call(caller, "bob@sylk.test", "to-bob")
            call(caller, "carol@sylk.test", "to-carol")
            assert states(caller, "to-bob", until="accepted") == ["progress", ("accepted", "sdp")]
            assert states(caller, "to-carol", until="accepted") == ["progress", ("accepted", "sdp")]
            for session in ("to-bob", "to-carol"):
                caller.request("session-terminate", session=session)
                assert states(caller, session) == [("terminated", "200 OK")]
            assert bob.wait() == 0 and carol.wait() == 0


class TestIncoming:
    @pytest.fixture
    def callee(self, gateway: Gateway, kamailio: Kamailio) -> Client:
        client = gateway.connect()
        assert register(client, kamailio, ALICE) == {"state": "registered"}
        return client

    def incoming(self, client: Client) -> dict[str, Any]:
        return client.event(lambda m: m.get("event") == "incoming_session", 15, "an incoming call")

    def test_answered_then_the_caller_hangs_up(self, callee: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with Sipp(tmp_path / "sipp", "uac_call.xml", BOB_PORT, "alice", {"caller": "bob", "display": "Bob B"},
                  render={"hold": "1500"},
                  auth=("bob", "bobpw")) as bob:
            incoming = self.incoming(callee)
            assert incoming["account"] == ALICE
            assert incoming["data"]["originator"] == {"uri": "bob@sylk.test", "display_name": "Bob B"}
            offer = incoming["data"]["sdp"]
            assert "a=fingerprint" in offer and "a=candidate" in offer  # Janus's WebRTC offer
            session = incoming["session"]
            answer = callee.request("session-answer", session=session, sdp=answer_for(offer))
            assert answer["sylkrtc"] == "ack", answer
            assert states(callee, session) == ["accepted", ("terminated", "200 OK")]
            assert bob.wait() == 0

    def test_rejected_by_the_browser(self, callee: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with Sipp(tmp_path / "sipp", "uac_refused.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            session = self.incoming(callee)["session"]
            callee.request("session-terminate", session=session)
            assert states(callee, session) == [("terminated", "486 Busy Here")]
            assert bob.wait() == 0  # it got the 486

    def test_the_caller_gives_up(self, callee: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with Sipp(tmp_path / "sipp", "uac_cancel.xml", BOB_PORT, "alice", {"caller": "bob"}, render={"hold": "500"},
                  auth=("bob", "bobpw")) as bob:
            session = self.incoming(callee)["session"]
            assert states(callee, session) == [("terminated", "487 Request Terminated")]
            missed = callee.event(lambda m: m.get("event") == "missed_session", 5, "missed_session")
            assert missed["data"]["originator"]["uri"] == "bob@sylk.test"
            assert bob.wait() == 0

    def test_a_second_call_rings_while_the_first_is_up(self, callee: Client, kamailio: Kamailio,
                                                       tmp_path: Path) -> None:
        with Sipp(tmp_path / "sipp", "uac_call.xml", BOB_PORT, "alice", {"caller": "bob"}, render={"hold": "4000"},
                  auth=("bob", "bobpw")) as bob:
            first = self.incoming(callee)
            callee.request("session-answer", session=first["session"], sdp=answer_for(first["data"]["sdp"]))
            assert states(callee, first["session"], until="accepted") == ["accepted"]
            with Sipp(tmp_path / "sipp", "uac_refused.xml", CAROL_PORT, "alice", {"caller": "carol"},
                      auth=("carol", "carolpw")) as carol:
                second = self.incoming(callee)  # rings on a helper line, not refused by Janus as busy
                assert second["data"]["originator"]["uri"] == "carol@sylk.test"
                callee.request("session-terminate", session=second["session"])
                assert carol.wait() == 0
            assert states(callee, first["session"]) == [("terminated", "200 OK")]
            assert bob.wait() == 0

    def test_closing_the_socket_ends_the_call(self, callee: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with Sipp(tmp_path / "sipp", "uac_call.xml", BOB_PORT, "alice", {"caller": "bob"}, render={"hold": "20000"},
                  auth=("bob", "bobpw")) as bob:
            incoming = self.incoming(callee)
            callee.request("session-answer", session=incoming["session"], sdp=answer_for(incoming["data"]["sdp"]))
            assert states(callee, incoming["session"], until="accepted") == ["accepted"]
            callee.close()
            bob.wait(15)
            assert "BYE sip:bob@" in bob.messages()  # the gateway hung up


class TestSylkRTC2Details:
    """What sylkRTC-2 clients get beyond sylkRTC-1: provisional states, early media, Call-IDs, custom headers."""

    @pytest.fixture
    def client(self, gateway: Gateway, kamailio: Kamailio) -> Client:
        client = gateway.connect(subprotocols=("sylkRTC-2",))
        answer = client.request("account-add", account=ALICE, password=kamailio.ha1("alice"),
                                incoming_header_prefixes=["X-"])
        assert answer["sylkrtc"] == "ack", answer
        return client

    def flat_states(self, client: Client, session: str, until: str) -> list[dict[str, Any]]:
        seen = []
        while not seen or seen[-1]["state"] not in (until, "terminated"):
            event = client.event(lambda m: m.get("sylkrtc") == "session-event" and m.get("session") == session,
                                 15, f"a state of session {session}")
            seen.append({key: value for key, value in event.items() if key not in ("sylkrtc", "session", "event")})
        return seen

    def test_ringing_headers_and_call_id(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer.xml") as bob:
            answer = client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER,
                                    headers=[{"name": "X-Room", "value": "42"}])
            assert answer["sylkrtc"] == "ack", answer
            states = self.flat_states(client, "s1", until="accepted")
            assert [s["state"] for s in states] == ["progress", "ringing", "proceeding", "accepted"]
            assert states[2]["code"] == 180
            assert "sdp" in states[3] and states[3]["call_id"]
            client.request("session-terminate", session="s1")
            assert self.flat_states(client, "s1", until="terminated")[-1] == {"state": "terminated",
                                                                               "reason": "200 OK"}
            assert bob.wait() == 0
            invite = bob.messages()
            assert "X-Room: 42" in invite
            assert f"Call-ID: {states[3]['call_id']}" in invite

    def test_early_media(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_early_media.xml") as bob:
            client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
            states = self.flat_states(client, "s1", until="accepted")
            names = [s["state"] for s in states]
            assert names[0] == "progress" and names[-1] == "accepted", names
            assert "a=fingerprint" in states[names.index("early-media")]["sdp"]  # the answer, from the 183
            assert {"code": 183, "state": "proceeding"} in states
            assert "sdp" not in states[-1]  # the 200 brought no new answer
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0

    def test_incoming_call_id_and_headers(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        assert client.request("account-register", account=ALICE)["sylkrtc"] == "ack"
        client.event(lambda m: m.get("event") == "registration-state" and m.get("state") == "registered", 15)
        with Sipp(tmp_path / "sipp", "uac_refused.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            incoming = client.event(lambda m: m.get("event") == "incoming-session", 15, "an incoming call")
            assert incoming["originator"]["uri"] == "bob@sylk.test"
            assert incoming["call_id"] and "sdp" in incoming
            client.request("session-terminate", session=incoming["session"])
            assert bob.wait() == 0
        with Sipp(tmp_path / "sipp", "uac_call.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            incoming = client.event(lambda m: m.get("event") == "incoming-session", 15, "an incoming call")
            assert incoming["headers"] == {"X-Caller-Info": "call from bob"}
            client.request("session-answer", session=incoming["session"], sdp=answer_for(incoming["sdp"]),
                           headers=[{"name": "X-Answered-By", "value": "gateway test"}])
            assert bob.wait() == 0
            assert "X-Answered-By: gateway test" in bob.messages()

    def test_dtmf_as_sip_info_to_the_phone(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer_info.xml") as bob:
            client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
            assert self.flat_states(client, "s1", until="accepted")[-1]["state"] == "accepted"
            answer = client.request("session-dtmf-info", session="s1", digit="1#", duration=100)
            assert answer["sylkrtc"] == "ack", answer
            eventually(lambda: bob.messages().count("INFO sip:") == 2, what="two INFO requests at the phone")
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0
            bodies = bob.messages()
            assert "Content-Type: application/dtmf-relay" in bodies
            assert bodies.index("Signal=1") < bodies.index("Signal=#")  # one request per tone, in order
            assert "Duration=100" in bodies

    def test_dtmf_as_sip_info_from_the_phone(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        client.request("account-register", account=ALICE)
        client.event(lambda m: m.get("event") == "registration-state" and m.get("state") == "registered", 15)
        with Sipp(tmp_path / "sipp", "uac_call_info.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw"), render={"hold": "1000"}) as bob:
            incoming = client.event(lambda m: m.get("event") == "incoming-session", 15, "an incoming call")
            client.request("session-answer", session=incoming["session"], sdp=answer_for(incoming["sdp"]))
            dtmf = client.event(lambda m: m.get("event") == "dtmf", 10, "the DTMF")
            assert dtmf == {"sylkrtc": "session-event", "session": incoming["session"], "event": "dtmf",
                            "digit": "5", "duration": 250, "method": "info"}
            assert bob.wait() == 0


class TestUpdatesAndHold:
    """Re-INVITEs both ways, watched at the phone: what the gateway sends (hold's direction, the browser's new offer)
    and what the far end's re-INVITEs get in answer."""

    @pytest.fixture
    def client(self, gateway: Gateway, kamailio: Kamailio) -> Client:
        client = gateway.connect(subprotocols=("sylkRTC-2",))
        assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
        return client

    def accepted_call(self, client: Client) -> None:
        client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
        client.event(lambda m: m.get("event") == "state" and m.get("state") == "accepted", 15, "the answer")

    def test_update_then_hold_towards_the_phone(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer_reinvites.xml", answer1="sendrecv", answer2="recvonly") as bob:
            self.accepted_call(client)
            reoffer = OFFER.replace("o=- 4611731400430051336 2", "o=- 4611731400430051336 3")
            assert client.request("session-update", session="s1", sdp=reoffer)["sylkrtc"] == "ack"
            update = client.event(lambda m: m.get("event") == "update", 10, "the update's outcome")
            assert update["state"] == "accepted" and "a=fingerprint" in update["sdp"], update
            assert client.request("session-hold", session="s1")["sylkrtc"] == "ack"
            hold = client.event(lambda m: m.get("event") == "hold", 10, "the hold")
            assert (hold["held"], hold["originator"]) == (True, "local")
            eventually(lambda: len(bob.received("INVITE ")) == 3, what="the hold's re-INVITE at the phone")
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0
            first, update_invite, hold_invite = bob.received("INVITE ")
            assert "m=audio" in update_invite and "a=sendonly" not in update_invite  # the browser's new offer
            assert "a=sendonly" in hold_invite and "a=sendrecv" not in hold_invite

    def test_an_ice_restart_keeps_the_call_and_its_dialog(self, client: Client, kamailio: Kamailio,
                                                          tmp_path: Path) -> None:
        # what a browser does after a network change (resumed or not): a new offer with new ICE credentials
        with phone(kamailio, tmp_path, "uas_answer_reinvites.xml", answer1="sendrecv", answer2="recvonly") as bob:
            client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
            accepted = client.event(lambda m: m.get("event") == "state" and m.get("state") == "accepted", 15)
            restart = OFFER.replace("o=- 4611731400430051336 2", "o=- 4611731400430051336 3") \
                .replace("a=ice-ufrag:abcd", "a=ice-ufrag:efgh").replace("a=ice-pwd:abcdefghijklmnopqrstuvwx",
                                                                       "a=ice-pwd:xwvutsrqponmlkjihgfedcba")
            assert client.request("session-update", session="s1", sdp=restart)["sylkrtc"] == "ack"
            update = client.event(lambda m: m.get("event") == "update", 10, "the update's outcome")
            assert update["state"] == "accepted", update
            ufrag = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)
            assert ufrag.search(update["sdp"]).group(1) != ufrag.search(accepted["sdp"]).group(1)  # Janus restarted
            client.request("session-hold", session="s1")
            eventually(lambda: len(bob.received("INVITE ")) == 3, what="the hold's re-INVITE at the phone")
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0
            call_ids = {re.search(r"^Call-ID: (\S+)", invite, re.MULTILINE | re.IGNORECASE).group(1)
                        for invite in bob.received("INVITE ")}
            assert len(call_ids) == 1  # one SIP dialog all along: the restart went to the far end as a re-INVITE

    def test_the_phone_holds_and_the_browser_answers(self, client: Client, kamailio: Kamailio,
                                                     tmp_path: Path) -> None:
        client.request("account-register", account=ALICE)
        client.event(lambda m: m.get("event") == "registration-state" and m.get("state") == "registered", 15)
        with Sipp(tmp_path / "sipp", "uac_call_hold.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            incoming = client.event(lambda m: m.get("event") == "incoming-session", 15, "an incoming call")
            session = incoming["session"]
            client.request("session-answer", session=session, sdp=answer_for(incoming["sdp"]))
            for direction, held in (("recvonly", True), ("sendrecv", False)):
                update = client.event(lambda m: m.get("event") == "update", 10, "the phone's re-INVITE")
                assert update["state"] == "received" and "a=fingerprint" in update["sdp"], update
                hold = client.event(lambda m: m.get("event") == "hold", 10, "the hold state")
                assert (hold["held"], hold["originator"]) == (held, "remote")
                answer = answer_for(update["sdp"]).replace("a=sendrecv", f"a={direction}")
                assert client.request("session-update", session=session, sdp=answer)["sylkrtc"] == "ack"
            assert bob.wait() == 0
            oks = bob.invite_oks()
            assert "a=recvonly" in oks[3], oks[3]  # the answer to the hold
            assert "a=recvonly" not in oks[4]

    def test_sylkrtc1_clients_never_see_the_phones_reinvites(self, gateway: Gateway, kamailio: Kamailio,
                                                              tmp_path: Path) -> None:
        client = gateway.connect(subprotocols=("sylkRTC-1",))
        assert register(client, kamailio, ALICE) == {"state": "registered"}
        with Sipp(tmp_path / "sipp", "uac_call_hold.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            incoming = client.event(lambda m: m.get("event") == "incoming_session", 15, "an incoming call")
            client.request("session-answer", session=incoming["session"], sdp=answer_for(incoming["data"]["sdp"]))
            assert bob.wait() == 0  # Janus answered both re-INVITEs by itself
            assert "a=recvonly" in bob.invite_oks()[3]
            assert not [e for e in client.events if e.get("event") == "update"]


class TestTransfers:
    """REFER both ways, watched at sipp phones: the REFER the gateway sends, and the new call it places for one it
    received."""

    @pytest.fixture
    def client(self, gateway: Gateway, kamailio: Kamailio) -> Client:
        client = gateway.connect(subprotocols=("sylkRTC-2",))
        assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
        return client

    def accepted(self, client: Client, session: str, uri: str, **extra: Any) -> None:
        answer = client.request("session-create", account=ALICE, session=session, uri=uri, sdp=OFFER, **extra)
        assert answer["sylkrtc"] == "ack", answer
        client.event(lambda m: m.get("session") == session and m.get("state") == "accepted", 15,
                     f"the answer of {session}")

    def test_blind_transfer_by_the_browser(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer_referred.xml") as bob:
            self.accepted(client, "s1", "bob@sylk.test")
            assert client.request("session-transfer", session="s1", uri="carol@sylk.test")["sylkrtc"] == "ack"
            progress = [client.event(lambda m: m.get("event") == "transfer", 10, "transfer progress")
                        for _ in range(2)]
            assert [(p["state"], p["code"]) for p in progress] == [("progress", 100), ("completed", 200)]
            ended = client.event(lambda m: m.get("state") == "terminated", 10, "the end of the call")
            assert ended["reason"] == "Transferred"  # the gateway hangs up once the transfer is done (RFC 5589)
            assert bob.wait() == 0
            assert bob.received("BYE ")
            (refer,) = bob.received("REFER ")
            assert re.search(r"^Refer-To: <sip:carol@sylk\.test>", refer, re.MULTILINE | re.IGNORECASE), refer

    def test_attended_transfer_by_the_browser(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer.xml", user="carol", port=CAROL_PORT) as carol, \
                phone(kamailio, tmp_path, "uas_answer_referred.xml") as bob:
            self.accepted(client, "to-bob", "bob@sylk.test")
            client.request("session-create", account=ALICE, session="to-carol", uri="carol@sylk.test", sdp=OFFER)
            carol_call = client.event(lambda m: m.get("session") == "to-carol" and m.get("state") == "accepted", 15,
                                      "carol's answer")
            answer = client.request("session-transfer", session="to-bob", uri="carol@sylk.test",
                                    replace_session="to-carol")
            assert answer["sylkrtc"] == "ack", answer
            client.event(lambda m: m.get("event") == "transfer" and m.get("state") == "completed", 10, "the end")
            assert bob.wait() == 0
            (refer,) = bob.received("REFER ")
            refer_to = re.search(r"^Refer-To: (.*)$", refer, re.MULTILINE | re.IGNORECASE)
            assert refer_to and "replaces=" in refer_to.group(1).lower(), refer
            assert carol_call["call_id"].split("@")[0] in refer_to.group(1)  # carol's dialog is to be replaced
            client.request("session-terminate", session="to-carol")
            assert carol.wait() == 0

    def test_the_phone_transfers_the_browser_to_carol(self, client: Client, kamailio: Kamailio,
                                                      tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer.xml", user="carol", port=CAROL_PORT) as carol, \
                phone(kamailio, tmp_path, "uas_answer_refer.xml") as bob:
            self.accepted(client, "s1", "bob@sylk.test")
            request = client.event(lambda m: m.get("event") == "transfer-request", 10, "the transfer request")
            assert (request["refer_to"], request["referred_by"], request["replaces"]) == \
                ("carol@sylk.test", "bob@sylk.test", False)
            self.accepted(client, "s2", request["refer_to"], refer_session="s1")
            ended = client.event(lambda m: m.get("session") == "s1" and m.get("state") == "terminated", 10,
                                 "bob hanging up once carol answered")
            assert ended["reason"] == "200 OK"
            assert bob.wait() == 0  # it saw the NOTIFY with carol's 200
            client.request("session-terminate", session="s2")
            assert carol.wait() == 0
            (invite,) = carol.received("INVITE ")
            assert re.search(r"^Referred-By: <sip:bob@sylk\.test>", invite, re.MULTILINE | re.IGNORECASE), invite


class TestMessages:
    """SIP MESSAGE out of calls, both ways, seen at sipp phones."""

    @pytest.fixture
    def client(self, gateway: Gateway, kamailio: Kamailio) -> Client:
        client = gateway.connect(subprotocols=("sylkRTC-2",))
        assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
        return client

    def test_a_message_and_a_disposition_to_the_phone(self, client: Client, kamailio: Kamailio,
                                                      tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_message.xml") as bob:
            answer = client.request("account-message", account=ALICE, uri="bob@sylk.test", message_id="m1",
                                    content="hello bob", timestamp="2026-11-26T07:00:00Z")
            assert answer["sylkrtc"] == "ack", answer
            outcome = client.event(lambda m: m.get("event") == "disposition-notification", 10, "the outcome")
            assert outcome == {"sylkrtc": "account-event", "account": ALICE, "event": "disposition-notification",
                               "message_id": "m1", "message_timestamp": "2026-11-26T07:00:00Z",
                               "state": "accepted", "code": 200, "reason": "OK"}
            assert bob.wait() == 0
            (text,) = bob.received("MESSAGE ")
            assert re.search(r"^Content-Type: message/cpim", text, re.MULTILINE | re.IGNORECASE), text
            for line in ("imdn.Message-ID: m1", "DateTime: 2026-11-26T07:00:00Z",
                         "imdn.Disposition-Notification: positive-delivery, display", "Content-Type: text/plain"):
                assert re.search(f"^{re.escape(line)}\r?$", text, re.MULTILINE), (line, text)
            assert re.search(r"\r?\n\r?\nhello bob$", text), text
            # from the address of record, not Janus's contact address (its default for out-of-dialog requests)
            assert re.search(r"^From: <sip:alice@sylk\.test>;tag=", text, re.MULTILINE), text
        with phone(kamailio, tmp_path / "imdn", "uas_message.xml") as bob:
            client.request("account-disposition-notification", account=ALICE, uri="bob@sylk.test",
                           message_id="their-7", state="delivered")
            assert bob.wait() == 0
            (imdn,) = bob.received("MESSAGE ")
            assert "Content-Type: message/cpim" in imdn and "<message-id>their-7</message-id>" in imdn

    def test_an_accounts_devices_share_its_history(self, gateway: Gateway, kamailio: Kamailio,
                                                   tmp_path: Path) -> None:
        laptop, phone_ = alices_devices(gateway, kamailio, 2)
        with phone(kamailio, tmp_path, "uas_message.xml") as bob:
            laptop.request("account-message", account=ALICE, uri="bob@sylk.test", message_id="m1",
                           content="hello bob", timestamp="2026-12-08T03:00:00Z")
            sync = phone_.event(lambda m: m.get("event") == "sync", 10, "the other device told")
            assert (sync["type"], sync["action"], sync["content"]["message_id"], sync["content"]["uri"]) == \
                ("message", "add", "m1", "bob@sylk.test")
            outcome = phone_.event(lambda m: m.get("event") == "disposition-notification", 10, "its outcome")
            assert (outcome["message_id"], outcome["state"], outcome["code"]) == ("m1", "accepted", 200)
            assert bob.wait() == 0
        with Sipp(tmp_path / "sipp-in", "uac_message.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:  # a plain MESSAGE, forked by the proxy to both devices
            copies = [device.event(lambda m: m.get("event") == "message", 10, "bob's message")
                      for device in (laptop, phone_)]
            assert bob.wait() == 0
        assert copies[0]["message_id"] == copies[1]["message_id"]  # one message, though it came without an id
        (tablet,) = alices_devices(gateway, kamailio, 1)
        assert tablet.request("account-sync-conversations", account=ALICE)["sylkrtc"] == "ack"
        history = tablet.event(lambda m: m.get("event") == "sync-conversations", 10, "the history")["messages"]
        assert [(entry["direction"], entry["contact"], entry["content"].strip(), entry["state"])
                for entry in history] == [("outgoing", "bob@sylk.test", "hello bob", "accepted"),
                                          ("incoming", "bob@sylk.test", "hello alice", "received")]
        assert history[0]["disposition"] == ["positive-delivery", "display"]
        assert history[1]["message_id"] == copies[0]["message_id"]

    def test_the_address_book_is_kept_and_followed_by_the_other_devices(self, gateway: Gateway,
                                                                        kamailio: Kamailio) -> None:
        laptop, phone_ = alices_devices(gateway, kamailio, 2)
        bob = {"id": "c1", "name": "Bob", "uris": [{"id": "u1", "uri": "bob@sylk.test", "type": "sip"}]}
        assert laptop.request("account-update-addressbook", account=ALICE, action="add", type="contact",
                              data=bob)["sylkrtc"] == "ack"
        for device in (laptop, phone_):
            updated = device.event(lambda m: m.get("event") == "addressbook-updated", 10, "the change")
            assert (updated["type"], updated["action"], updated["contact"]) == ("contact", "add", bob)
        assert phone_.request("account-update-addressbook", account=ALICE, action="add", type="contact",
                              data=bob)["sylkrtc"] == "ack"
        failed = phone_.event(lambda m: m.get("event") == "addressbook-update-failed", 10, "the refusal")
        assert (failed["error"], failed["id"]) == ("The contact c1 exists already", "c1")
        assert phone_.request("account-fetch-addressbook", account=ALICE)["sylkrtc"] == "ack"
        book = phone_.event(lambda m: m.get("event") == "addressbook-fetched", 10, "the address book")
        assert book["addressbook"] == {"contacts": [bob], "groups": [], "policies": []}

    def test_a_read_mark_reaches_the_accounts_other_devices(self, gateway: Gateway, kamailio: Kamailio,
                                                            tmp_path: Path) -> None:
        laptop, tablet = alices_devices(gateway, kamailio, 2)
        # alice's SIP phone: another binding of hers, which gets what her devices replicate
        with registered_phone(tmp_path / "sipp", "uas_message.xml", "alice", kamailio.users["alice"],
                              CAROL_PORT) as sip_phone:
            answer = laptop.request("account-mark-conversation-read", account=ALICE, contact="bob@sylk.test")
            assert answer["sylkrtc"] == "ack", answer
            sync = tablet.event(lambda m: m.get("event") == "sync", 10, "the other browser told")
            assert (sync["type"], sync["action"], sync["content"]) == ("conversation", "read",
                                                                      {"contact": "bob@sylk.test"})
            assert sip_phone.wait() == 0
            (replication,) = sip_phone.received("MESSAGE ")
            assert re.search(r"^Content-Type: application/sylk-conversation-read\r?$", replication,
                             re.MULTILINE | re.IGNORECASE), replication
            assert replication.rstrip().endswith('{"contact": "bob@sylk.test"}'), replication
            assert re.search(r"^From: <sip:alice@sylk\.test>", replication, re.MULTILINE), replication
        time.sleep(0.5)  # the proxy's copies to the two browsers' bindings: dropped as the echo of their own
        for device in (laptop, tablet):
            assert device.request("ping")["sylkrtc"] == "ack"  # what came before it is in device.events
            assert not [m for m in device.events if m.get("event") == "message"], device.events
        assert tablet.request("account-sync-conversations", account=ALICE)["sylkrtc"] == "ack"
        history = tablet.event(lambda m: m.get("event") == "sync-conversations", 10, "the history")["messages"]
        assert [(entry["content_type"], entry["content"]) for entry in history] == \
            [("application/sylk-conversation-read", "bob@sylk.test")]

    def test_a_message_for_an_account_with_no_device_online_waits_in_its_history(self, netns: str,
                                                                                 tmp_path: Path) -> None:
        with Kamailio(tmp_path / "kamailio", message_store="127.0.0.1:5065") as registrar:
            gateway = start_gateway(tmp_path, registrar.proxy, sip_messages_address="127.0.0.1:5065")
            try:
                with Sipp(tmp_path / "sipp-offline", "uac_message.xml", BOB_PORT, "alice", {"caller": "bob"},
                          auth=("bob", "bobpw")) as bob:  # alice has no device registered: only the gateway keeps it
                    assert bob.wait() == 0, bob.messages()[-2000:]
                (device,) = alices_devices(gateway, registrar, 1)
                with Sipp(tmp_path / "sipp-online", "uac_message.xml", BOB_PORT, "alice", {"caller": "bob"},
                          auth=("bob", "bobpw")) as bob:  # now online: forked to her device and to the gateway
                    live = device.event(lambda m: m.get("event") == "message", 10, "the message, live")
                    assert bob.wait() == 0
                time.sleep(0.5)  # the gateway's copy through its SIP entry point, which may come second
                assert device.request("account-sync-conversations", account=ALICE)["sylkrtc"] == "ack"
                history = device.event(lambda m: m.get("event") == "sync-conversations", 10, "history")["messages"]
                assert [(entry["direction"], entry["contact"], entry["content"].strip()) for entry in history] == \
                    [("incoming", "bob@sylk.test", "hello alice")] * 2, history  # each kept once
                assert history[1]["message_id"] == live["message_id"]
            finally:
                gateway.stop()

    def test_a_message_for_an_account_with_no_device_online_wakes_its_devices(self, netns: str,
                                                                              tmp_path: Path) -> None:
        with PushReceiver() as push, Kamailio(tmp_path / "kamailio", message_store="127.0.0.1:5065") as registrar:
            gateway = start_gateway(tmp_path, registrar.proxy, sip_messages_address="127.0.0.1:5065",
                                    sylk_push_url=f"http://127.0.0.1:{push.port}/push")
            try:
                device = gateway.connect(subprotocols=("sylkRTC-2",))
                assert device.request("account-add", account=ALICE,
                                      password=registrar.ha1("alice"))["sylkrtc"] == "ack"
                assert device.request("account-devicetoken", account=ALICE, token="f00d", platform="android",
                                      device="d1", app="com.agprojects.sylk")["sylkrtc"] == "ack"
                device.request("account-register", account=ALICE)
                device.event(lambda m: m.get("state") == "registered", 15, "registered")  # the token is kept
                device.close()  # alice's phone goes to sleep: no device of hers is connected
                eventually(lambda: not registrar.contacts("alice"), what="alice's binding gone")

                def bob_sends(name: str) -> None:
                    with Sipp(tmp_path / name, "uac_message.xml", BOB_PORT, "alice", {"caller": "bob"},
                              auth=("bob", "bobpw")) as bob:
                        assert bob.wait() == 0
                bob_sends("first")
                (notification,) = push.wait_for(1)
                assert {key: notification[key] for key in ("event", "token", "app-id", "platform", "device-id",
                                                           "from", "to", "badge", "media-type", "content-type")} == {
                    "event": "message", "token": "f00d", "app-id": "com.agprojects.sylk", "platform": "android",
                    "device-id": "d1", "from": "bob@sylk.test", "to": ALICE, "badge": 1, "media-type": "sms",
                    "content-type": "text/plain"}
                assert notification["content"].strip() == "hello alice"
                push.status = 410  # the push service: this token is no more
                bob_sends("second")
                push.wait_for(2)
                bob_sends("third")
                time.sleep(1)
                assert len(push.received) == 2  # the token was forgotten
            finally:
                gateway.stop()

    def test_messages_inside_a_call(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        with phone(kamailio, tmp_path, "uas_answer_message.xml") as bob:
            client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
            client.event(lambda m: m.get("state") == "accepted", 15, "the answer")
            answer = client.request("session-message", session="s1", message_id="m1", content="in the call")
            assert answer["sylkrtc"] == "ack", answer
            outcome = client.event(lambda m: m.get("event") == "disposition-notification", 10, "the outcome")
            assert (outcome["session"], outcome["state"], outcome["code"]) == ("s1", "accepted", 200)
            message = client.event(lambda m: m.get("event") == "message", 10, "the phone's message")
            assert (message["session"], message["content"].strip()) == ("s1", "right back at you")
            client.request("session-terminate", session="s1")
            assert bob.wait() == 0
            (sent,) = bob.received("MESSAGE ")
            assert sent.endswith("in the call") and "Call-ID: " in sent

    def test_a_message_from_the_phone(self, client: Client, kamailio: Kamailio, tmp_path: Path) -> None:
        client.request("account-register", account=ALICE)
        client.event(lambda m: m.get("event") == "registration-state" and m.get("state") == "registered", 15)
        with Sipp(tmp_path / "sipp", "uac_message.xml", BOB_PORT, "alice", {"caller": "bob"},
                  auth=("bob", "bobpw")) as bob:
            message = client.event(lambda m: m.get("event") == "message", 10, "the message")
            assert bob.wait() == 0
        assert (message["sender"]["uri"], message["content_type"], message["content"].strip()) == \
            ("bob@sylk.test", "text/plain", "hello alice")


class PushReceiver:
    """Sylk's push service as the gateway sees it: an HTTP server on loopback that records what is POSTed and
    answers `status` (200, or 410 for an expired token)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.received.append(json.loads(self.rfile.read(length)))
                body = json.dumps({"code": receiver.status, "data": {"token": receiver.received[-1]["token"]}})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        eventually(lambda: len(self.received) >= count, timeout, what=f"{count} push notifications")
        return self.received[:count]

    def __enter__(self) -> PushReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
