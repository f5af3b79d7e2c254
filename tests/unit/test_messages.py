"""CPIM and IMDN (sylk.gateway.messages), and how message events look in both dialects."""

import time
from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway import messages
from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.dialects import SylkRTC1, SylkRTC2
from tests.unit import any_character
from tests.unit.test_connection import ALICE, HA1, ConnectionTestCase

BOB = Originator("bob@example.com", "Bob")


class ReceivedTests(SynchronousTestCase):
    def test_plain_content_is_taken_as_it_is(self) -> None:
        message = messages.received("text/plain;charset=utf-8", "hi", BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual((message.sender, message.content_type, message.content), (BOB, "text/plain;charset=utf-8",
                                                                                   "hi"))
        self.assertRegex(message.timestamp, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

    def test_cpim_without_imdn_headers(self) -> None:
        message = messages.received("Message/CPIM", "From: <sip:carol@example.com>\n\nContent-Type: text/html\n\n<b>x</b>",
                                    BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual((message.sender, message.content_type, message.content, message.disposition_notification),
                         (BOB, "text/html", "<b>x</b>", ()))  # the envelope's From can't override the SIP sender

    def test_the_envelope_names_the_sender(self) -> None:
        message = messages.received(messages.CPIM_TYPE, "From: Robert <sip:Bob@example.com>\n\nContent-Type: "
                                    "text/plain\n\nhi", Originator("bob@example.com"))
        assert isinstance(message, messages.Message)
        self.assertEqual(message.sender, Originator("bob@example.com", "Robert"))

    def test_imdn_round_trip(self) -> None:
        wrapped = messages.imdn("alice@example.com", "bob@example.com", "m<1>", "delivered", "2026-11-26T07:00:00Z")
        self.assertIn("<message-id>m&lt;1&gt;</message-id>", wrapped)
        disposition = messages.received(messages.CPIM_TYPE, wrapped, BOB)
        self.assertEqual(disposition, messages.Disposition("m<1>", "delivered", "2026-11-26T07:00:00Z"))

    def test_a_broken_imdn_is_passed_on_as_a_message(self) -> None:
        broken = "From: <sip:carol@example.com>\n\nContent-Type: message/imdn+xml\n\n<imdn><oops"
        message = messages.received(messages.CPIM_TYPE, broken, BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual(message.content_type, "message/imdn+xml")


def cpim(envelope: str, content: str = "hi", content_type: str = "text/plain") -> str:
    return f"{envelope}\r\n\r\nContent-Type: {content_type}\r\n\r\n{content}"


# Any text, lone surrogates, controls and unassigned code points included (JSON from Janus can carry them all;
# hypothesis leaves surrogates out of its characters, so they are mixed in with the separators that matter).
ANY_TEXT = st.text(st.one_of(any_character(),
                             st.sampled_from(["\ud800", "\udfff", "\x00", "\r", "\n", "\u2028", "\u202e", "<", ":"])))
ENVELOPE_LINE = st.sampled_from(["From: ", "imdn.Message-ID: ", "DateTime: ", "imdn.Disposition-Notification: ",
                                 "Content-Type: ", "NS: ", ""]).flatmap(lambda name: ANY_TEXT.map(name.__add__))


class HostileInputTests(SynchronousTestCase):
    """What a far end sends is as untrusted as a browser's request: bounded, checked, and never an exception."""

    def test_an_oversized_cpim_message_is_passed_on_unparsed(self) -> None:
        big = cpim("From: <sip:bob@example.com>\r\nimdn.Message-ID: m1", "x" * messages.MAX_CPIM)
        message = messages.received(messages.CPIM_TYPE, big, BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual((message.content_type, message.content), (messages.CPIM_TYPE, big))
        self.assertNotEqual(message.message_id, "m1")

    def test_too_many_header_lines_make_the_envelope_unusable(self) -> None:
        for envelope, mime in (("X: y\r\n" * messages.MAX_CPIM_HEADER_LINES + "From: <sip:bob@example.com>", ""),
                               ("From: <sip:bob@example.com>", "X: y\r\n" * messages.MAX_CPIM_HEADER_LINES)):
            content = f"{envelope}\r\n\r\n{mime}Content-Type: text/plain\r\n\r\nhi"
            message = messages.received(messages.CPIM_TYPE, content, BOB)
            assert isinstance(message, messages.Message)
            self.assertEqual((message.content_type, message.content), (messages.CPIM_TYPE, content))
        at_the_limit = "X: y\r\n" * (messages.MAX_CPIM_HEADER_LINES - 1) + "imdn.Message-ID: m1"
        message = messages.received(messages.CPIM_TYPE, cpim(at_the_limit), BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual((message.message_id, message.content), ("m1", "hi"))

    def test_an_envelope_without_its_blank_lines_is_passed_on_unparsed(self) -> None:
        for content in ("From: <sip:bob@example.com>", "From: <sip:bob@example.com>\r\n\r\nContent-Type: x/y"):
            message = messages.received(messages.CPIM_TYPE, content, BOB)
            assert isinstance(message, messages.Message)
            self.assertEqual((message.content_type, message.content), (messages.CPIM_TYPE, content))

    def test_an_unusable_inner_content_type_makes_the_envelope_unusable(self) -> None:
        for content_type in ("text", "text/plain\x00", "a/" + "b" * messages.MAX_CONTENT_TYPE, "text/plain;\u202e"):
            content = cpim("From: <sip:bob@example.com>", content_type=content_type)
            message = messages.received(messages.CPIM_TYPE, content, BOB)
            assert isinstance(message, messages.Message)
            self.assertEqual(message.content_type, messages.CPIM_TYPE)

    def test_a_message_with_an_unusable_content_type_is_dropped(self) -> None:
        for content_type in ("", "text", "text/plain\r\nX: y", "x/" + "y" * 200, "text/\ud800"):
            self.assertIsNone(messages.received(content_type, "hi", BOB))
            self.assertIsNone(messages.incoming_event("alice@example.com", None, BOB, content_type, "hi"))
        self.flushLoggedErrors()

    def test_envelope_fields_out_of_bounds_are_replaced(self) -> None:
        envelope = (f"From: {'R' * (messages.MAX_DISPLAY_NAME + 1)} <sip:bob@example.com>\r\n"
                    f"imdn.Message-ID: {'m' * (messages.MAX_MESSAGE_ID + 1)}\r\n"
                    f"DateTime: {'2' * (messages.MAX_DATETIME + 1)}\r\n"
                    "imdn.Disposition-Notification: positive-delivery, <script>, display, a, b, c, d")
        message = messages.received(messages.CPIM_TYPE, cpim(envelope), BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual(message.sender, BOB)
        self.assertEqual(len(message.message_id), 36)  # one of the gateway's, as for plain messages
        self.assertRegex(message.timestamp, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(message.disposition_notification, ("positive-delivery", "display", "a", "b"))

    def test_no_control_characters_in_envelope_fields(self) -> None:
        for bad in ("\x00", "\x1b[31m", "\u0085", "\u2028", "\u202e", "\ud800"):
            envelope = (f'From: "Rob{bad}ert" <sip:bob@example.com>\r\nimdn.Message-ID: m{bad}1\r\n'
                        f"DateTime: 2026{bad}")
            message = messages.received(messages.CPIM_TYPE, cpim(envelope), BOB)
            assert isinstance(message, messages.Message)
            self.assertEqual(message.sender, BOB)
            self.assertNotIn(bad, message.message_id + message.timestamp)
        message = messages.received(messages.CPIM_TYPE, cpim('From: "Zoë 😀" <sip:bob@example.com>'), BOB)
        assert isinstance(message, messages.Message)
        self.assertEqual(message.sender.display_name, "Zoë 😀")

    def test_an_imdn_with_a_dtd_is_not_parsed(self) -> None:
        laughs = ('<?xml version="1.0"?><!DOCTYPE imdn [<!ENTITY a "aaaaaaaaaa">'
                  + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10 if i else "&a;" * 10}">' for i in range(8))
                  + ']><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&a7;</message-id>'
                  "<delivery-notification><status><delivered/></status></delivery-notification></imdn>")
        external = ('<!DOCTYPE imdn SYSTEM "file:///etc/passwd"><imdn xmlns="urn:ietf:params:xml:ns:imdn">'
                    "<message-id>m1</message-id><delivery-notification><status><delivered/></status>"
                    "</delivery-notification></imdn>")
        for xml in (laughs, external, external.replace("DOCTYPE", "doctype")):
            started = time.monotonic()
            self.assertIsNone(messages.parse_imdn(xml))
            self.assertLess(time.monotonic() - started, 1)

    def test_imdn_bounds(self) -> None:
        def imdn_of(message_id: str = "m1", state: str = "delivered", padding: str = "") -> str:
            return (f'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>{message_id}</message-id>{padding}'
                    f"<delivery-notification><status><{state}/></status></delivery-notification></imdn>")
        self.assertEqual(messages.parse_imdn(imdn_of()), messages.Disposition("m1", "delivered", None))
        self.assertIsNone(messages.parse_imdn(imdn_of("m" * (messages.MAX_MESSAGE_ID + 1))))
        self.assertIsNone(messages.parse_imdn(imdn_of("m&#x1b;1")))  # a control character, as a reference
        self.assertIsNone(messages.parse_imdn(imdn_of(state="hacked")))
        self.assertIsNone(messages.parse_imdn(imdn_of(padding="<!--" + "x" * messages.MAX_IMDN + "-->")))
        self.assertIsNone(messages.parse_imdn("<other><message-id>m1</message-id></other>"))
        self.assertIsNone(messages.parse_imdn(imdn_of("\ud800")))
        deep = imdn_of(padding="<x>" * 1100 + "</x>" * 1100)  # as deep as fits in MAX_IMDN: no recursion limit hit
        self.assertEqual(messages.parse_imdn(deep), messages.Disposition("m1", "delivered", None))
        dated = imdn_of(padding=f"<datetime>{'9' * (messages.MAX_DATETIME + 1)}</datetime>")
        self.assertEqual(messages.parse_imdn(dated), messages.Disposition("m1", "delivered", None))

    @settings(max_examples=300, deadline=None)
    @given(ANY_TEXT, ANY_TEXT)
    def test_any_text_is_a_message_or_nothing(self, content_type: str, content: str) -> None:
        for kind in (content_type, messages.CPIM_TYPE):
            found = messages.received(kind, content, BOB)
            self.assertIsInstance(found, (messages.Message, messages.Disposition, type(None)))
        self.assertIsInstance(messages.parse_imdn(content), (messages.Disposition, type(None)))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(ENVELOPE_LINE, max_size=8), st.lists(ENVELOPE_LINE, max_size=4), ANY_TEXT)
    def test_any_envelope_is_unwrapped_safely(self, envelope: list[str], mime: list[str], body: str) -> None:
        content = "\r\n".join(envelope) + "\r\n\r\n" + "\r\n".join(mime) + "\r\n\r\n" + body
        found = messages.received(messages.CPIM_TYPE, content, BOB)
        if isinstance(found, messages.Message):
            for field, limit in ((found.message_id, messages.MAX_MESSAGE_ID), (found.timestamp, messages.MAX_DATETIME),
                                 (found.content_type, messages.MAX_CONTENT_TYPE),
                                 (found.sender.display_name or "", messages.MAX_DISPLAY_NAME)):
                self.assertLessEqual(len(field), limit)
                self.assertIsNone(messages._UNSAFE.search(field))
        else:
            self.assertIsInstance(found, messages.Disposition)

    @settings(max_examples=200, deadline=None)
    @given(ANY_TEXT, st.sampled_from(["delivered", "displayed", "x"]), ANY_TEXT)
    def test_any_imdn_text_is_parsed_safely(self, message_id: str, state: str, datetime: str) -> None:
        xml = (f'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>{message_id}</message-id>'
               f"<datetime>{datetime}</datetime><delivery-notification><status><{state}/></status>"
               "</delivery-notification></imdn>")
        found = messages.parse_imdn(xml)
        if found is not None:
            self.assertLessEqual(len(found.message_id), messages.MAX_MESSAGE_ID)
            self.assertIsNone(messages._UNSAFE.search(found.message_id + (found.message_timestamp or "")))


class EncodingTests(SynchronousTestCase):
    def test_account_message_events(self) -> None:
        event = model.MessageReceived(account="a@b.c", sender=BOB, message_id="m1", timestamp="t",
                                      content_type="text/plain", content="hi",
                                      disposition_notification=("positive-delivery",))
        self.assertEqual(SylkRTC2().encode(event), {
            "sylkrtc": "account-event", "account": "a@b.c", "event": "message",
            "sender": {"uri": "bob@example.com", "display_name": "Bob"}, "timestamp": "t",
            "disposition_notification": ["positive-delivery"], "message_id": "m1", "content_type": "text/plain",
            "content": "hi"})
        self.assertEqual(SylkRTC1().encode(event)["data"]["content"], "hi")

    def test_session_disposition_events(self) -> None:
        event = model.DispositionNotification(account="a@b.c", session="s", message_id="m1", message_timestamp=None,
                                              state="accepted", code=200, reason="OK")
        self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s",
                                                    "event": "disposition-notification", "message_id": "m1",
                                                    "state": "accepted", "code": 200, "reason": "OK"})
        self.assertEqual(SylkRTC1().encode(event)["event"], "disposition_notification")

    def test_requests(self) -> None:
        request = SylkRTC2().decode({"sylkrtc": "account-message", "transaction": "t", "account": "a@b.c",
                                     "uri": "sip:bob@b.c", "message_id": "m1", "content": "hi"})
        self.assertEqual((request.uri, request.content_type), ("bob@b.c", "text/plain"))
        for bad_type in ("text", "text/plain\r\nX: y", ""):
            self.assertRaises(Exception, SylkRTC2().decode, {"sylkrtc": "session-message", "transaction": "t",
                                                             "session": "s", "message_id": "m", "content": "x",
                                                             "content_type": bad_type})
        error = self.assertRaises(Exception, SylkRTC2().decode, {
            "sylkrtc": "account-disposition-notification", "transaction": "t", "account": "a@b.c", "uri": "b@b.c",
            "message_id": "m", "state": "read"})
        self.assertIn("must be one of delivered, displayed", str(error))


class EnvelopeTests(SynchronousTestCase):
    def test_what_it_wraps_reads_back(self) -> None:
        wrapped = messages.envelope(Originator("alice@example.com", 'Al "the" \\ Great\r\nX'), "bob@example.com",
                                    "m1", "2026-12-08T03:00:00Z", "text/plain", "héllo\r\n\r\nthere",
                                    notifications=("positive-delivery", "display"))
        self.assertIn('From: "Al \\"the\\" \\\\ Great X" <sip:alice@example.com>\r\n', wrapped)  # one line
        self.assertIn("\r\nContent-Length: 15\r\n\r\n", wrapped)  # bytes, not characters
        message = messages.received("message/cpim", wrapped, Originator("alice@example.com"))
        assert isinstance(message, messages.Message)
        self.assertEqual((message.content_type, message.content, message.message_id, message.timestamp,
                          message.disposition_notification),
                         ("text/plain", "héllo\r\n\r\nthere", "m1", "2026-12-08T03:00:00Z",
                          ("positive-delivery", "display")))


class OutgoingMessageTests(ConnectionTestCase):
    def send(self, settings: WebRTCGatewayConfig) -> dict[str, Any]:
        connection, _ = self.connect(settings)
        self.assertIsNone(self.request(connection, model.AccountAdd, account=ALICE, password=HA1,
                                       display_name="Alice"))
        self.assertIsNone(self.request(connection, model.AccountMessage, account=ALICE, uri="bob@example.com",
                                       message_id="m1", content="hi", content_type="text/plain",
                                       timestamp="2026-12-08T03:00:00Z"))
        ((_, body),) = self.janus.messages
        return body

    def test_in_a_cpim_envelope_asking_for_delivery_and_display_notifications(self) -> None:
        body = self.send(WebRTCGatewayConfig())
        self.assertEqual(body["content_type"], "message/cpim")
        self.assertEqual(body["content"], (
            'From: "Alice" <sip:alice@example.com>\r\nTo: <sip:bob@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n'
            "imdn.Message-ID: m1\r\nDateTime: 2026-12-08T03:00:00Z\r\n"
            "imdn.Disposition-Notification: positive-delivery, display\r\n\r\n"
            "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"))

    def test_plain_for_sip_phones_that_would_show_the_envelope(self) -> None:
        body = self.send(WebRTCGatewayConfig(message_format="plain"))
        self.assertEqual((body["content_type"], body["content"]), ("text/plain", "hi"))
