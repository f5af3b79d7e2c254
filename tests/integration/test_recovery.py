"""Failures around the gateway, end to end with the real gateway, Janus and Kamailio (issue 8): a Janus killed with
-9 costs the calls, not the connections or the registrations; a registrar that is down is tried again until it
answers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.conftest import start_gateway
from tests.integration.gateway import Client, Gateway, register
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import registered_phone
from tests.integration.webrtc import OFFER

KAMAILIO_USERS = {f"user{n}": f"pw{n}" for n in range(6)} | {"phone": "phonepw"}
PHONE_PORT = 5092


@pytest.fixture
def gateway(kamailio: Kamailio, tmp_path: Path) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path, kamailio.proxy)
    yield gateway
    gateway.stop()


def states_until_registered(client: Client, account: str, timeout: float) -> list[Any]:
    seen: list[Any] = []
    while not seen or seen[-1] != "registered":
        data = client.registration_state(account, timeout)
        seen.append(data["state"] if "reason" not in data else (data["state"], data["reason"]))
    return seen


def test_a_killed_janus_costs_the_calls_not_the_registrations(gateway: Gateway, kamailio: Kamailio,
                                                              tmp_path: Path) -> None:
    first, second = gateway.connect(), gateway.connect()
    accounts = {first: [f"user{n}@sylk.test" for n in range(3)], second: [f"user{n}@sylk.test" for n in range(3, 6)]}
    for client, names in accounts.items():
        for account in names:
            assert register(client, kamailio, account) == {"state": "registered"}
    with registered_phone(tmp_path / "sipp", "uas_answer.xml", "phone", KAMAILIO_USERS["phone"], PHONE_PORT):
        answer = first.request("session-create", account="user0@sylk.test", session="s1", uri="phone@sylk.test",
                               sdp=OFFER)
        assert answer["sylkrtc"] == "ack", answer
        first.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "accepted", 15, "the answer")
        (janus,) = gateway.janus_pids()
        os.kill(janus, signal.SIGKILL)
        killed = time.monotonic()
        ended = first.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "terminated", 10,
                            "the call's end")
        assert ended["data"]["reason"].startswith("SIP backend lost"), ended
        for client, names in accounts.items():  # the same sockets: nobody reconnected or asked for anything
            for account in names:
                assert states_until_registered(client, account, 30) == ["registering", "registered"], account
        every_account_back = time.monotonic() - killed
    print(f"kill -9 of Janus to 6 accounts registered again: {every_account_back:.2f} s")
    assert every_account_back < 15
    assert len(gateway.janus_pids()) == 2
    for n in range(6):
        assert kamailio.contacts(f"user{n}")
    assert first.request("ping")["sylkrtc"] == "ack" and second.request("ping")["sylkrtc"] == "ack"


def test_a_registrar_that_is_down_is_tried_again_until_it_answers(kamailio: Kamailio, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, kamailio.proxy)
    try:
        kamailio.stop()  # the registrar's port is closed: each REGISTER fails at once (503, ICMP unreachable)
        client = gateway.connect()
        assert client.request("add_account", account="user0@sylk.test",
                              password=kamailio.ha1("user0"))["sylkrtc"] == "ack"
        assert client.request("register", account="user0@sylk.test")["sylkrtc"] == "ack"
        assert client.registration_state("user0@sylk.test") == {"state": "registering"}
        first = client.registration_state("user0@sylk.test", 15)
        assert first["state"] == "failed" and first["reason"].startswith("503"), first
        assert client.registration_state("user0@sylk.test", 10) == {"state": "registering"}  # tried again
        kamailio.start()
        assert states_until_registered(client, "user0@sylk.test", 30)[-1] == "registered"
        assert kamailio.contacts("user0")
    finally:
        gateway.stop()


def test_a_registrar_that_stops_answering_is_tried_again_until_it_does(kamailio: Kamailio, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, kamailio.proxy)  # sip_transaction_timeout = 4 s
    assert kamailio.process is not None
    group = kamailio.process.pid
    try:
        client = gateway.connect()
        os.killpg(group, signal.SIGSTOP)  # alive, its port open, but silent
        assert client.request("add_account", account="user0@sylk.test",
                              password=kamailio.ha1("user0"))["sylkrtc"] == "ack"
        assert client.request("register", account="user0@sylk.test")["sylkrtc"] == "ack"
        assert client.registration_state("user0@sylk.test") == {"state": "registering"}
        assert client.registration_state("user0@sylk.test", 15) == {"state": "failed", "reason": "408 Request Timeout"}
        assert client.registration_state("user0@sylk.test", 10) == {"state": "registering"}  # tried again
        os.killpg(group, signal.SIGCONT)
        assert states_until_registered(client, "user0@sylk.test", 30)[-1] == "registered"
        assert kamailio.contacts("user0")
    finally:
        os.killpg(group, signal.SIGCONT)
        gateway.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_ends_calls_and_registrations_then_closes_sockets(gateway: Gateway, kamailio: Kamailio,
                                                                   tmp_path: Path, signum: int) -> None:
    client = gateway.connect()
    assert register(client, kamailio, "user0@sylk.test") == {"state": "registered"}
    with registered_phone(tmp_path / "sipp", "uas_answer.xml", "phone", KAMAILIO_USERS["phone"], PHONE_PORT) as phone:
        client.request("call", account="user0@sylk.test", session="s1", uri="phone@sylk.test", sdp=OFFER)
        client.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "accepted", 15, "the answer")
        started = time.monotonic()
        assert gateway.stop(signum=signum) in (0, -signum)  # twistd re-raises the signal it stopped for
        assert time.monotonic() - started < 30
        assert phone.wait() == 0  # it got its BYE
    ended = client.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "terminated", 5, "the end")
    assert ended["data"]["reason"] == "200 OK"
    assert client.wait_closed() == (1001, "sylkgateway is shutting down")  # after the call's end
    assert kamailio.contacts("user0") == []
    assert gateway.log().count("Janus stopped") == 1
