"""CPIM and IMDN (sylk.gateway.messages), and how message events look in both dialects."""

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway import messages
from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.dialects import SylkRTC1, SylkRTC2

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
