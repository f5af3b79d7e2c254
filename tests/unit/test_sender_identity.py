"""Who the far end is told it is dealing with: MESSAGEs from the account's address of record (not Janus's contact
address), and a transfer request naming its sender by address of record even when a Janus sent it."""

from __future__ import annotations

from sylk.gateway.sylkrtc import model
from tests.unit.test_calls import BOB, CallTestCase
from tests.unit.test_connection import ALICE, HA1


class SenderIdentityTests(CallTestCase):
    def test_messages_come_from_the_address_of_record(self) -> None:
        connection, _ = self.connect()
        self.request(connection, model.AccountAdd, account=ALICE, password=HA1, display_name='Alice "A"')
        self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id="m1", content="hi")
        ((_, body),) = self.janus.messages
        self.assertEqual(body["headers"], {"From": f'"Alice \\"A\\"" <sip:{ALICE}>'})

    def test_without_a_display_name(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.request(connection, model.AccountMessage, account=ALICE, uri=BOB, message_id="m1", content="hi")
        ((_, body),) = self.janus.messages
        self.assertEqual(body["headers"], {"From": f"<sip:{ALICE}>"})

    def transfer_request(self, referred_by: str | None) -> model.SessionTransferRequest:
        connection, peer = self.connect()
        self.add(connection)
        self.janus.call_outcome = ("accepted",)
        self.dial(connection)
        self.janus.refer(self.session_id(), self.line_of(), referred_by=referred_by)
        (request,) = [e for e in peer.events if isinstance(e, model.SessionTransferRequest)]
        return request

    def test_a_transferor_named_by_its_contact_address_is_named_by_the_call(self) -> None:
        # what a Janus (another sylkgateway) puts in Referred-By: its stack's contact, which it cannot change
        request = self.transfer_request("<sip:bob@192.0.2.2:51485;transport=udp>")
        self.assertEqual(request.referred_by, BOB)

    def test_a_transferor_named_by_its_address_of_record_is_kept(self) -> None:
        self.assertEqual(self.transfer_request('"Boss" <sip:boss@example.com>').referred_by, "boss@example.com")

    def test_without_referred_by_the_far_end_is_the_transferor(self) -> None:
        self.assertEqual(self.transfer_request(None).referred_by, BOB)
