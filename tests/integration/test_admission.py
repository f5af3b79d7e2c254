"""Admission end to end (issue 7): a client that opens as many connections as it may from one address and adds
accounts it cannot register, to keep Janus's stack queue full, does not delay another client's registration beyond
its bound, because new SIP stacks take turns by client address. The real gateway, Janus and Kamailio."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.exceptions import InvalidStatus

from tests.integration.gateway import Client, Gateway, register
from tests.integration.kamailio import Kamailio

WRONG_HA1 = "0" * 32
ATTACKER, VICTIM = "127.0.0.1", "127.0.0.2"  # both on the namespace's loopback: two client addresses
CONNECTIONS, ACCOUNTS = 50, 20  # max_connections_per_address and max_accounts_per_connection, the defaults
REFUSED = 250  # further connections tried from the same address


def test_a_greedy_address_cannot_hold_up_another_clients_registration(gateway: Gateway, kamailio: Kamailio) -> None:
    greedy: list[Client] = []
    try:
        for _ in range(CONNECTIONS):
            greedy.append(gateway.connect(source_address=(ATTACKER, 0)))
        for _ in range(REFUSED):  # hundreds of connections from one address: beyond the limit, each gets 429
            with pytest.raises(InvalidStatus) as refused:
                gateway.connect(source_address=(ATTACKER, 0))
            assert refused.value.response.status_code == 429
        for n, client in enumerate(greedy):  # 1,000 registrations that cannot succeed, sent at once
            for a in range(ACCOUNTS):
                account = f"nobody{n}x{a}@sylk.test"
                client.send({"sylkrtc": "add_account", "transaction": f"a{a}", "account": account,
                             "password": WRONG_HA1})
                client.send({"sylkrtc": "register", "transaction": f"r{a}", "account": account})
        first = greedy[0]
        first.event(lambda m: m.get("event") == "registration_state" and m["data"]["state"] == "failed", 20,
                    "a failed registration of the greedy client (its queue is moving)")

        victim = gateway.connect(source_address=(VICTIM, 0))
        started = time.monotonic()
        outcome = register(victim, kamailio, "alice@sylk.test")
        waited = time.monotonic() - started
        assert outcome == {"state": "registered"}, outcome
        # Behind 1,000 queued stacks at Janus's ~10 a second it would have waited ~100 s (and failed at 45 s);
        # taking turns with the greedy address it waits for about one of its turns.
        assert waited < 5, f"the registration took {waited:.1f} s"
        assert kamailio.contacts("alice")
        victim.close()
    finally:
        with ThreadPoolExecutor(max_workers=len(greedy) or 1) as closing:  # each may wait out its close handshake
            list(closing.map(Client.close, greedy))


def test_the_limits_are_answered_on_the_wire(gateway: Gateway) -> None:
    client = gateway.connect()
    for n in range(120):  # over request_burst (100) at once
        client.send(json.dumps({"sylkrtc": "ping", "transaction": f"p{n}"}))
    answers = [client.answer(f"p{n}") for n in range(120)]
    refused = [a for a in answers if a["sylkrtc"] == "error"]
    assert refused and all(a["error"] == "Too many requests (at most 20 per second)" for a in refused)
    assert len(refused) < 120 - 90
    time.sleep(1.1)  # the bucket refills
    assert client.request("ping")["sylkrtc"] == "ack"
    client.close()
