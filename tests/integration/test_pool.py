"""A pool of Janus children (issue 9), end to end: connections are spread over the members, and killing one member
ends only the calls on it; the other member's call goes on, and the lost accounts are registered again."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.gateway import Client, Gateway, eventually, register
from tests.integration.janus_admin import JanusAdmin
from tests.integration.kamailio import Kamailio
from tests.integration.sipp import registered_phone
from tests.integration.webrtc import OFFER

KAMAILIO_USERS = {f"user{n}": f"pw{n}" for n in range(4)} | {"phone1": "pw1", "phone2": "pw2"}
PHONE_PORTS = {"phone1": 5092, "phone2": 5094}


@pytest.fixture
def gateway(kamailio: Kamailio, tmp_path: Path) -> Iterator[Gateway]:
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    config = {"WebRTCGateway": {"outbound_sip_proxy": kamailio.proxy},
              "Janus": {"instances": 2, "admin_api": "yes", "runtime_dir": str(tmp_path / "run"),
                        "sip_transaction_timeout": 4}}
    with Gateway(workdir, config) as gateway:
        yield gateway


def test_members_share_the_connections_and_fail_alone(gateway: Gateway, kamailio: Kamailio, tmp_path: Path) -> None:
    admins = {name: JanusAdmin(tmp_path / "run", name) for name in ("janus", "janus2")}
    assert len(gateway.janus_pids("janus")) == 1 and len(gateway.janus_pids("janus2")) == 1
    eventually(lambda: gateway.log().count("Connected to Janus") == 2, what="both members connected")
    clients: list[tuple[Client, str]] = []
    for n in range(4):
        client = gateway.connect()
        assert register(client, kamailio, f"user{n}@sylk.test") == {"state": "registered"}
        clients.append((client, f"user{n}@sylk.test"))
    sessions = {name: admin.sessions() for name, admin in admins.items()}
    assert [len(found) for found in sessions.values()] == [2, 2], sessions  # spread by load
    # which client is on which member: a call's handle shows up in its member's session
    phones = {name: registered_phone(tmp_path / name, "uas_answer.xml", name, KAMAILIO_USERS[name], port)
              for name, port in PHONE_PORTS.items()}
    try:
        for (client, account), phone in zip(clients[:2], ("phone1", "phone2")):
            client.request("call", account=account, session="s1", uri=f"{phone}@sylk.test", sdp=OFFER)
            client.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "accepted", 15, "the answer")
        victim = "janus2"
        (pid,) = gateway.janus_pids(victim)
        on_victim = {account for _, account in clients if f"sip:{account}" in admins[victim].identities()}
        assert len(on_victim) == 2, on_victim
        os.kill(pid, signal.SIGKILL)
        for client, account in clients:
            if account in on_victim:
                assert client.registration_state(account, 10) == {"state": "registering"}
                assert client.registration_state(account, 30) == {"state": "registered"}
        for (client, account), phone in zip(clients[:2], ("phone1", "phone2")):
            if account in on_victim:
                ended = client.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "terminated", 10)
                assert ended["data"]["reason"].startswith("SIP backend lost"), ended
            else:  # the other member's call goes on, and ends normally
                assert not phones[phone].received("BYE ")
                client.request("terminate", session="s1")
                ended = client.event(lambda m: m.get("session") == "s1" and m["data"]["state"] == "terminated", 10)
                assert ended["data"]["reason"] == "200 OK"
                assert phones[phone].wait() == 0
        eventually(lambda: len(gateway.janus_pids(victim)) == 2, timeout=20, what="the killed member restarted")
        assert len(gateway.janus_pids("janus")) == 1  # the other member was never touched
        for n in range(4):
            assert kamailio.contacts(f"user{n}")
    finally:
        for phone in phones.values():
            phone.stop()
