"""Registering real SIP accounts: browser stand-in -> gateway -> its Janus -> Kamailio, in a private namespace.
Every claim is checked on the registrar too (its location table), not only in the gateway's events."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import start_gateway
from tests.integration.gateway import Client, Gateway, eventually, register
from tests.integration.kamailio import Kamailio

ALICE, BOB = "alice@sylk.test", "bob@sylk.test"


def test_right_ha1_registers_and_the_binding_is_at_the_registrar(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    assert register(client, kamailio, ALICE) == {"state": "registered"}
    (contact,) = kamailio.contacts("alice")
    assert contact.startswith("sip:alice@127.0.0.1:")
    assert "AUTH OK" in kamailio.log() or "REGISTER" in kamailio.log()


def test_wrong_ha1_fails_with_the_registrars_reason(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    state = register(client, kamailio, ALICE, ha1="0" * 32)
    assert state == {"state": "failed", "reason": "403 Forbidden"}
    assert kamailio.contacts("alice") == []
    # the account stays usable: register again, with the right credentials this time on a new account entry
    assert client.request("remove_account", account=ALICE)["sylkrtc"] == "ack"
    assert register(client, kamailio, ALICE) == {"state": "registered"}


def test_seed_and_dash_request_names_both_work(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    assert client.request("account-add", account="sip:bob@sylk.test", password=kamailio.ha1("bob"))["sylkrtc"] == "ack"
    assert client.request("account-register", account="bob@sylk.test")["sylkrtc"] == "ack"
    assert client.registration_state(BOB) == {"state": "registering"}  # events use the bare form
    assert client.registration_state(BOB) == {"state": "registered"}
    assert client.request("account-unregister", account=BOB)["sylkrtc"] == "ack"
    assert client.registration_state(BOB) == {"state": "unregistered"}


def test_sylkrtc_2_client(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect(subprotocols=("sylkRTC-2", "sylkRTC-1"))
    assert client.ws.subprotocol == "sylkRTC-2"
    assert client.request("ping") == {"sylkrtc": "ack", "transaction": "t1"}
    assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
    assert client.request("register", account=ALICE)["error"] == "unknown request type 'register'"
    assert client.request("account-register", account=ALICE)["sylkrtc"] == "ack"
    flat = lambda m: m.get("sylkrtc") == "account-event" and m.get("event") == "registration-state"  # noqa: E731
    assert client.event(flat)["state"] == "registering"
    assert client.event(flat, timeout=15) == {"sylkrtc": "account-event", "account": ALICE,
                                              "event": "registration-state", "state": "registered"}
    assert kamailio.contacts("alice")


@pytest.mark.parametrize("style, expected", [
    ("sylk", ";pn-app=com.example.sylk;pn-tok=f00d;pn-type=android;pn-device=d1;pn-silent=0"),
    ("rfc8599", ";pn-provider=fcm;pn-prid=f00d;pn-param=com.example.sylk")])
def test_a_push_token_is_in_the_registered_contact(kamailio: Kamailio, tmp_path: Path, style: str,
                                                   expected: str) -> None:
    gateway = start_gateway(tmp_path, kamailio.proxy, push_parameters=style)
    try:
        push_token_registered(gateway, kamailio, expected)
    finally:
        gateway.stop()


def push_token_registered(gateway: Gateway, kamailio: Kamailio, expected: str) -> None:
    client = gateway.connect(subprotocols=("sylkRTC-2",))
    assert client.request("account-add", account=ALICE, password=kamailio.ha1("alice"))["sylkrtc"] == "ack"
    answer = client.request("account-devicetoken", account=ALICE, token="f00d", platform="android", device="d1",
                            app="com.example.sylk")
    assert answer["sylkrtc"] == "ack", answer
    client.request("account-register", account=ALICE)
    client.event(lambda m: m.get("state") == "registered", timeout=15)
    (contact,) = kamailio.contacts("alice")
    assert expected in contact, contact


def test_unregister_removes_the_binding(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    register(client, kamailio, ALICE)
    assert kamailio.contacts("alice")
    assert client.request("unregister", account=ALICE)["sylkrtc"] == "ack"
    assert client.registration_state(ALICE) == {"state": "unregistered"}
    assert kamailio.contacts("alice") == []
    assert client.request("unregister", account=ALICE)["error"] == \
        f"Cannot unregister account {ALICE}: it is unregistered"
    assert register_again(client, ALICE) == {"state": "registered"}
    assert len(kamailio.contacts("alice")) == 1


def register_again(client: Client, account: str) -> dict[str, Any]:
    assert client.request("register", account=account)["sylkrtc"] == "ack"
    assert client.registration_state(account) == {"state": "registering"}
    return client.registration_state(account, timeout=15)


def test_closing_the_socket_removes_its_bindings(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    register(client, kamailio, ALICE)
    register(client, kamailio, BOB)
    assert kamailio.contacts("alice") and kamailio.contacts("bob")
    client.close()
    eventually(lambda: not kamailio.contacts("alice") and not kamailio.contacts("bob"),
               what="the un-REGISTERs after the socket closed")
    assert "Un-REGISTER" not in gateway.log()  # no warnings about unfinished un-REGISTERs


def test_remove_account_unregisters_it(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    register(client, kamailio, ALICE)
    assert client.request("remove_account", account=ALICE)["sylkrtc"] == "ack"
    eventually(lambda: not kamailio.contacts("alice"), what="the un-REGISTER after remove_account")


def test_same_account_on_two_connections_registers_twice_independently(gateway: Gateway,
                                                                       kamailio: Kamailio) -> None:
    first, second = gateway.connect(), gateway.connect()
    register(first, kamailio, ALICE)
    register(second, kamailio, ALICE)
    assert len(kamailio.contacts("alice")) == 2
    second.close()
    eventually(lambda: len(kamailio.contacts("alice")) == 1, what="the second binding going away")
    assert first.request("unregister", account=ALICE)["sylkrtc"] == "ack"
    assert first.registration_state(ALICE) == {"state": "unregistered"}
    assert kamailio.contacts("alice") == []
    assert not [e for e in first.events if e.get("account") == ALICE]  # nothing about the other connection


def test_stopping_the_gateway_unregisters_everyone(gateway: Gateway, kamailio: Kamailio) -> None:
    client = gateway.connect()
    register(client, kamailio, ALICE)
    gateway.stop()
    assert client.wait_closed()[0] == 1001
    assert kamailio.contacts("alice") == []


def test_tcp_to_the_registrar(kamailio: Kamailio, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, f"{kamailio.proxy};transport=tcp")
    try:
        client = gateway.connect()
        assert register(client, kamailio, ALICE) == {"state": "registered"}
        (contact,) = kamailio.contacts("alice")
        assert "transport=tcp" in contact.lower()
    finally:
        gateway.stop()


class TLSRegistrar(threading.Thread):
    """A registrar that speaks SIP over TLS just enough to refuse everyone: what it receives is kept."""

    def __init__(self, certificate: Path) -> None:
        super().__init__(daemon=True)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(15)
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []

    def run(self) -> None:
        try:
            connection, _ = self.listener.accept()
            with self.context.wrap_socket(connection, server_side=True) as tls:
                tls.settimeout(15)
                buffer = b""
                while True:
                    data = tls.recv(65536)
                    if not data:
                        return
                    buffer += data
                    while b"\r\n\r\n" in buffer:
                        head, _, buffer = buffer.partition(b"\r\n\r\n")
                        request = head.decode()
                        self.requests.append(request)
                        tls.sendall(self.refusal(request))
        except OSError:
            return
        finally:
            self.listener.close()

    @staticmethod
    def refusal(request: str) -> bytes:
        copied = [line for line in request.split("\r\n")[1:]
                  if line.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        copied = [line + ";tag=tls1" if line.lower().startswith("to:") else line for line in copied]
        return ("SIP/2.0 403 Forbidden\r\n" + "\r\n".join(copied) + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_tls_to_the_registrar(netns: str, tmp_path: Path) -> None:
    from tests.integration.test_gateway import make_certificate
    make_certificate(tmp_path / "registrar.pem")
    registrar = TLSRegistrar(tmp_path / "registrar.pem")
    registrar.start()
    gateway = start_gateway(tmp_path, f"127.0.0.1:{registrar.port};transport=tls")
    try:
        client = gateway.connect()
        state = register(client, Kamailio(tmp_path / "unused"), ALICE)
        assert state == {"state": "failed", "reason": "403 Forbidden"}
        (request,) = [r for r in registrar.requests if r.startswith("REGISTER")]
        assert "SIP/2.0/TLS" in request
        assert any(line.startswith("To:") and "alice@sylk.test" in line for line in request.split("\r\n"))
    finally:
        gateway.stop()
        registrar.join(5)


def test_route_by_the_accounts_domain_without_outbound_proxy(netns: str, tmp_path: Path) -> None:
    # The account's domain is the registrar's address, so no DNS is involved (and none exists here).
    with Kamailio(tmp_path / "kamailio", port=5060, domain="127.0.0.1") as registrar:
        workdir = tmp_path / "gateway"
        workdir.mkdir()
        with Gateway(workdir) as gateway:
            client = gateway.connect()
            assert register(client, registrar, "alice@127.0.0.1") == {"state": "registered"}
            assert registrar.contacts("alice")


def test_registrar_refusing_packets_fails_quickly(netns: str, tmp_path: Path) -> None:
    closed_port = 5999  # nothing listens there: the kernel answers ICMP port unreachable
    gateway = start_gateway(tmp_path, f"127.0.0.1:{closed_port}")
    try:
        client = gateway.connect()
        started = time.monotonic()
        state = register(client, Kamailio(tmp_path / "unused"), ALICE)
        assert state["state"] == "failed"
        assert state["reason"].startswith("503"), state
        assert time.monotonic() - started < 10
    finally:
        gateway.stop()


def test_silent_registrar_fails_within_the_sip_timeout(netns: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))  # swallows every REGISTER without a word
        gateway = start_gateway(tmp_path, f"127.0.0.1:{blackhole.getsockname()[1]}")
        try:
            client = gateway.connect()
            started = time.monotonic()
            state = register(client, Kamailio(tmp_path / "unused"), ALICE)
            assert state == {"state": "failed", "reason": "408 Request Timeout"}
            assert time.monotonic() - started < 4 + 8  # sip_transaction_timeout = 4, plus slack
        finally:
            gateway.stop()
