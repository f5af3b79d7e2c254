"""The SIP entry point for MESSAGEs (messaging/sipentry.py): what it answers to what, on UDP and TCP, and that
nothing a sender puts on the wire gets past its bounds."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.messaging.hub import HistoryUnavailable
from sylk.gateway.messaging.sipentry import (MAX_REQUEST, MAX_TCP_CONNECTIONS, MessageEntry, MessageEntryTCP,
                                             MessageEntryUDP, MalformedRequest, TCP_IDLE_TIMEOUT, parse_request)
from sylk.gateway.sip import Originator

PROXY = "127.0.0.1"
TRUSTED = (ipaddress.ip_network("127.0.0.1/32"),)


def message(body: str = "hello", to: str = "<sip:alice@sylk.test>", content_type: str | None = "text/plain",
            method: str = "MESSAGE", extra: str = "") -> bytes:
    payload = body.encode()
    head = (f"{method} sip:alice@sylk.test SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nVia: SIP/2.0/UDP 127.0.0.1:5092;branch=z9hG4bK-2\r\n"
            'From: "Bob B" <sip:bob@sylk.test>;tag=b1\r\n' f"To: {to}\r\nCall-ID: c1@127.0.0.1\r\n"
            f"CSeq: 2 {method}\r\n{extra}")
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload


class EntryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.delivered: list[tuple[str, Originator, str, str]] = []
        self.entry = MessageEntry(TRUSTED, lambda domain: domain == "sylk.test", self.deliver)

    def deliver(self, account: str, sender: Originator, content_type: str, content: str) -> None:
        if content_type == "application/refused":
            raise ValueError("unusable content type")
        self.delivered.append((account, sender, content_type, content))

    def status(self, data: bytes, source: str = PROXY) -> str | None:
        answer = self.entry.answer(data, source)
        return None if answer is None else answer.decode().split("\r\n", 1)[0]


class AnswerTests(EntryTestCase):
    def test_a_message_from_the_proxy_is_delivered_and_answered_200(self) -> None:
        answer = self.entry.answer(message(), PROXY)
        assert answer is not None
        lines = answer.decode().split("\r\n")
        self.assertEqual(lines[:3], ["SIP/2.0 200 OK", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
                                     "Via: SIP/2.0/UDP 127.0.0.1:5092;branch=z9hG4bK-2"])
        self.assertIn('From: "Bob B" <sip:bob@sylk.test>;tag=b1', lines)
        self.assertTrue(any(line.startswith("To: <sip:alice@sylk.test>;tag=") for line in lines), lines)
        self.assertIn("CSeq: 2 MESSAGE", lines)
        self.assertEqual(self.delivered, [("alice@sylk.test", Originator("bob@sylk.test", "Bob B"), "text/plain",
                                           "hello")])

    def test_only_trusted_proxies_and_nothing_at_all_to_others(self) -> None:
        self.assertIsNone(self.status(message(), "127.0.0.2"))  # no answer to reflect, nothing read
        self.assertIsNone(self.status(message().replace(b"Content-Length: 5", b"Content-Length: \xc2\xb2"),
                                      "127.0.0.2"))
        self.assertEqual(self.delivered, [])

    def test_a_content_length_int_cannot_read(self) -> None:
        self.assertIsNone(self.status(message().replace(b"Content-Length: 5", b"Content-Length: \xc2\xb2")))

    def test_no_store_means_503(self) -> None:
        def unavailable(*_: Any) -> None:
            raise HistoryUnavailable("no message store")
        entry = MessageEntry(TRUSTED, lambda domain: True, unavailable)
        answer = entry.answer(message(), PROXY)
        assert answer is not None
        self.assertTrue(answer.startswith(b"SIP/2.0 503 "))

    def test_addresses_are_normalised_as_the_browser_requests_are(self) -> None:
        self.status(message(to="<sip:alice@SYLK.test>"))
        self.assertEqual(self.delivered[0][0], "alice@sylk.test")
        self.assertEqual(self.status(message(to='<sip:al"ice@sylk.test>')), "SIP/2.0 400 Bad Request")

    def test_other_requests(self) -> None:
        self.assertEqual(self.status(message("", method="OPTIONS", content_type=None)), "SIP/2.0 200 OK")
        self.assertEqual(self.status(message(method="INVITE")), "SIP/2.0 405 Method Not Allowed")
        self.assertIsNone(self.status(message("", method="ACK", content_type=None)))

    def test_what_is_refused(self) -> None:
        self.assertEqual(self.status(message(to="<sip:alice@elsewhere.test>")), "SIP/2.0 404 Not Found")
        self.assertEqual(self.status(message(to="<sip:sylk.test>")), "SIP/2.0 400 Bad Request")
        self.assertEqual(self.status(message(content_type="application/refused")), "SIP/2.0 400 Bad Request")
        self.assertEqual(self.status(message().replace(b"hello", b"h\xffllo")), "SIP/2.0 415 Unsupported Media Type")
        self.assertIsNone(self.status(message().replace(b"Content-Length: 5", b"Content-Length: 9")))
        self.assertIsNone(self.status(b"MESSAGE sip:alice@sylk.test SIP/2.0\r\n\r\n"))  # no Via, From, ...
        self.assertEqual(self.delivered, [])

    def test_compact_headers_and_folded_lines(self) -> None:
        data = (b"MESSAGE sip:alice@sylk.test SIP/2.0\r\nv: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-3\r\n"
                b"f: <sip:bob@sylk.test>\r\n ;tag=x\r\nt: <sip:alice@sylk.test>\r\ni: c2\r\nCSeq: 1 MESSAGE\r\n"
                b"c: text/plain\r\nl: 2\r\n\r\nhi")
        self.assertEqual(self.status(data), "SIP/2.0 200 OK")
        self.assertEqual(self.delivered[0][1:], (Originator("bob@sylk.test", None), "text/plain", "hi"))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=2048))
    def test_any_bytes_are_a_request_or_nothing(self, data: bytes) -> None:
        try:
            parse_request(data)
        except MalformedRequest:
            pass
        self.entry.answer(data, PROXY)  # never raises

    def test_bounds(self) -> None:
        with self.assertRaises(MalformedRequest):
            parse_request(message("x" * MAX_REQUEST))
        with self.assertRaises(MalformedRequest):
            parse_request(message(extra="X-A: b\r\n" * 200))


class TransportTests(EntryTestCase):
    def test_udp_answers_the_sender(self) -> None:
        sent: list[tuple[bytes, Any]] = []
        udp = MessageEntryUDP(self.entry)
        udp.transport = type("T", (), {"write": lambda _, data, addr: sent.append((data, addr))})()
        udp.datagramReceived(message(), (PROXY, 5070))
        ((answer, address),) = sent
        self.assertTrue(answer.startswith(b"SIP/2.0 200 OK") and address == (PROXY, 5070))

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()

    def tcp(self) -> tuple[Any, StringTransport]:
        protocol = MessageEntryTCP(self.entry, self.clock).buildProtocol(IPv4Address("TCP", PROXY, 5070))
        transport = StringTransport(peerAddress=IPv4Address("TCP", PROXY, 5070))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_tcp_frames_requests_by_their_length(self) -> None:
        protocol, transport = self.tcp()
        data = message("one") + message("two")
        for byte in range(0, len(data), 7):  # in pieces, as TCP may bring them
            protocol.dataReceived(data[byte:byte + 7])
        self.assertEqual(transport.value().count(b"SIP/2.0 200 OK"), 2)
        self.assertEqual([content for *_, content in self.delivered], ["one", "two"])

    def test_tcp_only_from_trusted_proxies_and_not_too_many(self) -> None:
        factory = MessageEntryTCP(self.entry, self.clock)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 5070)))
        for _ in range(MAX_TCP_CONNECTIONS):
            protocol = factory.buildProtocol(IPv4Address("TCP", PROXY, 5070))
            protocol.makeConnection(StringTransport())
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", PROXY, 5070)))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", PROXY, 5070)))

    def test_tcp_drops_a_peer_that_sends_too_much(self) -> None:
        protocol, transport = self.tcp()
        protocol.dataReceived(b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * (MAX_REQUEST // 6))
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.tcp()
        protocol.dataReceived(message().replace(b"Content-Length: 5", b"Content-Length: 99999999"))
        self.assertTrue(transport.disconnecting)

    def test_tcp_closes_an_idle_connection(self) -> None:
        protocol, transport = self.tcp()
        self.clock.advance(TCP_IDLE_TIMEOUT - 1)
        protocol.dataReceived(message())  # busy: the timer starts again
        self.clock.advance(TCP_IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
