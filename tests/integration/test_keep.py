"""Connections kept across sockets (connection-keep / connection-resume), end to end with the real gateway, Janus,
Kamailio and sipp phones: a socket that drops costs neither the registration nor the call, an incoming call that
arrives meanwhile is offered on resume, and a connection nobody resumes is cleaned up after keep_grace."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import start_gateway
from tests.integration.gateway import Client, Gateway, eventually
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import Sipp, registered_phone
from tests.integration.webrtc import OFFER, answer_for

ALICE = "alice@sylk.test"
BOB_PORT = 5092
GRACE = 3


@pytest.fixture
def gateway(kamailio: Kamailio, tmp_path: Path) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path, kamailio.proxy, keep_grace=GRACE)
    yield gateway
    gateway.stop()


def kept(gateway: Gateway, kamailio: Kamailio) -> tuple[Client, str]:
    """A sylkRTC-2 client with alice registered, and the token it asked the gateway to keep its connection with."""
    client = gateway.connect(subprotocols=("sylkRTC-2",))
    assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
    assert client.request("account-register", account=ALICE)["sylkrtc"] == "ack"
    client.event(lambda m: m.get("event") == "registration-state" and m.get("state") == "registered", 15)
    token = secrets.token_urlsafe(16)
    assert client.request("connection-keep", token=token)["sylkrtc"] == "ack"
    return client, token


def drop(client: Client) -> None:
    """The socket goes away without a closing handshake, as when the network does."""
    client.ws.socket.close()


def resume(gateway: Gateway, token: str) -> tuple[Client, list[dict[str, Any]]]:
    client = gateway.connect(subprotocols=("sylkRTC-2",))
    answer = client.request("connection-resume", token=token)
    assert answer["sylkrtc"] == "ack", answer
    first = client.event(lambda m: m.get("sylkrtc") == "resumed-event", 5, "the resumed event")
    assert first == {"sylkrtc": "resumed-event", "missed": 0}
    snapshot = []
    try:
        while True:  # the snapshot follows at once
            snapshot.append(json.loads(client.ws.recv(timeout=0.5)))
    except TimeoutError:
        pass
    return client, client.events + snapshot


def test_a_dropped_socket_costs_neither_the_registration_nor_the_call(gateway: Gateway, kamailio: Kamailio,
                                                                      tmp_path: Path) -> None:
    client, token = kept(gateway, kamailio)
    with registered_phone(tmp_path / "sipp", "uas_answer.xml", "bob", kamailio.users["bob"], BOB_PORT) as bob:
        client.request("session-create", account=ALICE, session="s1", uri="bob@sylk.test", sdp=OFFER)
        client.event(lambda m: m.get("session") == "s1" and m.get("state") == "accepted", 15, "the answer")
        drop(client)
        time.sleep(1.5)  # a network change
        assert not bob.received("BYE ")
        assert kamailio.contacts("alice")
        again, snapshot = resume(gateway, token)
        assert {"sylkrtc": "account-event", "account": ALICE, "event": "registration-state",
                "state": "registered"} in snapshot
        (state,) = [m for m in snapshot if m.get("session") == "s1" and m.get("event") == "state"]
        assert state["state"] == "accepted" and "m=audio" in state["sdp"]  # with the answer, in case it was lost
        assert again.request("session-terminate", session="s1")["sylkrtc"] == "ack"  # the resumed client hangs up
        again.event(lambda m: m.get("session") == "s1" and m.get("state") == "terminated", 10, "the end")
        assert bob.wait() == 0  # it got the BYE, and only now
    time.sleep(GRACE + 1)
    assert kamailio.contacts("alice")  # still registered: the resumed connection is an ordinary one
    assert again.request("ping")["sylkrtc"] == "ack"


def test_an_incoming_call_while_detached_is_offered_on_resume(gateway: Gateway, kamailio: Kamailio,
                                                              tmp_path: Path) -> None:
    client, token = kept(gateway, kamailio)
    drop(client)
    with Sipp(tmp_path / "sipp", "uac_call.xml", BOB_PORT, "alice", {"caller": "bob"}, render={"hold": "1000"},
              auth=("bob", "bobpw")) as bob:
        eventually(lambda: "180 Ringing" in bob.messages(), what="alice ringing while no socket is attached")
        again, snapshot = resume(gateway, token)
        (offer,) = [m for m in snapshot if m.get("event") == "incoming-session"]
        assert offer["originator"]["uri"] == "bob@sylk.test"
        answer = again.request("session-answer", session=offer["session"], sdp=answer_for(offer["sdp"]))
        assert answer["sylkrtc"] == "ack", answer
        again.event(lambda m: m.get("session") == offer["session"] and m.get("state") == "terminated", 15,
                    "bob hanging up")
        assert bob.wait() == 0


def test_a_connection_nobody_resumes_is_cleaned_up_and_its_token_is_gone(gateway: Gateway, kamailio: Kamailio,
                                                                         tmp_path: Path) -> None:
    client, token = kept(gateway, kamailio)
    wrong = gateway.connect(subprotocols=("sylkRTC-2",))
    assert wrong.request("connection-resume", token=secrets.token_urlsafe(16))["error"] == \
        "Unknown, expired or already used token"
    drop(client)
    eventually(lambda: not kamailio.contacts("alice"), timeout=GRACE + 10, what="the un-REGISTER after the grace")
    assert wrong.request("connection-resume", token=token)["error"] == "Unknown, expired or already used token"
