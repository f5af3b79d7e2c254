"""The sylkRTC-2 dialect: the same model under SylkServer's 2017 names and flat event shapes."""

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.sip import Originator
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.dialects import DIALECTS, SylkRTC1, SylkRTC2
from sylk.gateway.sylkrtc.fields import ValidationError

HA1 = "884edfee38ed471b8a15006700139485"


class SylkRTC2Tests(SynchronousTestCase):
    dialect = SylkRTC2()

    def test_dash_names_decode_to_the_same_model(self) -> None:
        for name, cls in SylkRTC2.requests.items():
            self.assertIs(SylkRTC1.requests[name], cls)
        request = self.dialect.decode({"sylkrtc": "account-add", "transaction": "t", "account": "sip:a@Example.com",
                                       "password": HA1, "display_name": "A"})
        self.assertEqual(request, model.AccountAdd(transaction="t", account="a@example.com", password=HA1,
                                                   display_name="A"))

    def test_the_seed_names_are_not_sylkrtc_2(self) -> None:
        for name in ("add_account", "register", "call", "trickle"):
            error = self.assertRaises(ValidationError, self.dialect.decode, {"sylkrtc": name, "transaction": "t"})
            self.assertIn("unknown request type", str(error))

    def test_ping(self) -> None:
        self.assertEqual(self.dialect.decode({"sylkrtc": "ping", "transaction": "p"}), model.Ping(transaction="p"))

    def test_ready_event(self) -> None:
        self.assertEqual(self.dialect.encode(model.Ready()), {"sylkrtc": "ready-event"})

    def test_registration_state_is_flat(self) -> None:
        event = model.RegistrationStateChanged(account="a@example.com", state="failed", reason="403 Forbidden")
        self.assertEqual(self.dialect.encode(event), {"sylkrtc": "account-event", "account": "a@example.com",
                                                      "event": "registration-state", "state": "failed",
                                                      "reason": "403 Forbidden"})

    def test_no_unregistered_state_as_sylkserver_except_in_a_resume_snapshot(self) -> None:
        self.assertIsNone(self.dialect.encode(model.RegistrationStateChanged(account="a@example.com",
                                                                             state="unregistered")))
        self.assertEqual(self.dialect.encode(model.RegistrationStateShown(account="a@example.com",
                                                                          state="unregistered")),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "registration-state",
                          "state": "unregistered"})

    def test_messaging_events_as_sylkserver_sends_them(self) -> None:
        item = {"contact": "b@example.com", "message_id": "m1"}
        self.assertEqual(self.dialect.encode(model.SyncConversations(account="a@example.com", messages=[item])),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "sync-conversations",
                          "messages": [item]})
        self.assertEqual(self.dialect.encode(model.AccountSync(account="a@example.com", type="message",
                                                               action="add", content=item)),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "sync", "type": "message",
                          "action": "add", "content": item})
        self.assertEqual(self.dialect.encode(model.PublicKeyFound(uri="b@example.com", public_key=None)),
                         {"sylkrtc": "lookup-public-key-event", "uri": "b@example.com", "public_key": None})
        self.assertEqual(self.dialect.decode({"sylkrtc": "lookup-public-key", "transaction": "t",
                                              "uri": "sip:B@Example.com"}),
                         model.LookupPublicKey(transaction="t", uri="B@example.com"))

    def test_address_book_events_as_sylkserver_sends_them(self) -> None:
        contact = {"id": "c1", "name": "Bob"}
        self.assertEqual(self.dialect.encode(model.AddressBookUpdated(account="a@example.com", type="contact",
                                                                      action="add", item=contact)),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "addressbook-updated",
                          "type": "contact", "action": "add", "contact": contact})
        self.assertEqual(self.dialect.encode(model.AddressBookUpdateFailed(account="a@example.com", type="group",
                                                                           action="delete", error="No group g1",
                                                                           id="g1")),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "addressbook-update-failed",
                          "type": "group", "action": "delete", "error": "No group g1", "id": "g1"})
        request = self.dialect.decode({"sylkrtc": "account-update-addressbook", "transaction": "t",
                                       "account": "a@example.com", "action": "add", "type": "contact",
                                       "data": contact})
        self.assertEqual(request.data, contact)
        for data in ("c1", [contact], {"id": "x", "deep": [[[[[[[[[["too deep"]]]]]]]]]]}, {"id": "x" * 17000}):
            self.assertRaises(ValidationError, self.dialect.decode, {
                "sylkrtc": "account-update-addressbook", "transaction": "t", "account": "a@example.com",
                "action": "add", "type": "contact", "data": data})

    def test_session_state_is_flat(self) -> None:
        event = model.SessionStateChanged(session="s", state="accepted", sdp="v=0")
        self.assertEqual(self.dialect.encode(event), {"sylkrtc": "session-event", "session": "s", "event": "state",
                                                      "state": "accepted", "sdp": "v=0"})

    def test_incoming_and_missed_sessions(self) -> None:
        bob = Originator("bob@example.com", "Bob")
        self.assertEqual(self.dialect.encode(model.IncomingSession(account="a@example.com", session="s",
                                                                   originator=bob, sdp="v=0")),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "incoming-session",
                          "session": "s", "originator": {"uri": "bob@example.com", "display_name": "Bob"},
                          "sdp": "v=0"})
        self.assertEqual(self.dialect.encode(model.MissedSession(account="a@example.com",
                                                                 originator=Originator("bob@example.com"))),
                         {"sylkrtc": "account-event", "account": "a@example.com", "event": "missed-session",
                          "originator": {"uri": "bob@example.com"}})

    def test_answers_are_those_of_sylkrtc_1(self) -> None:
        self.assertEqual(self.dialect.ack("t"), SylkRTC1().ack("t"))
        self.assertEqual(self.dialect.error("t", "no"), SylkRTC1().error("t", "no"))

    def test_every_event_has_an_encoding_in_both_dialects(self) -> None:
        events = [cls for cls in vars(model).values()
                  if isinstance(cls, type) and issubclass(cls, model.Event) and cls is not model.Event]
        for dialect in DIALECTS.values():
            for cls in events:
                self.assertTrue(hasattr(dialect, f"_encode_{cls.__name__}"), (dialect.subprotocol, cls.__name__))


class CallDetailTests(SynchronousTestCase):
    def test_provisional_states_exist_only_in_sylkrtc_2(self) -> None:
        for state, extra in (("proceeding", {"code": 180}), ("ringing", {}), ("early-media", {"sdp": "v=0 e"})):
            event = model.SessionStateChanged(session="s", state=state, **extra)
            self.assertIsNone(SylkRTC1().encode(event))
            self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s",
                                                        "event": "state", "state": state, **extra})

    def test_accepted_after_early_media(self) -> None:
        event = model.SessionStateChanged(session="s", state="accepted", sdp=None, early_sdp="v=0 e",
                                          call_id="abc", headers={"X-A": "1"})
        self.assertEqual(SylkRTC1().encode(event)["data"], {"state": "accepted", "sdp": "v=0 e"})
        self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s", "event": "state",
                                                    "state": "accepted", "call_id": "abc",
                                                    "headers": {"X-A": "1"}})

    def test_incoming_session_call_id_and_headers(self) -> None:
        event = model.IncomingSession(account="a@b.c", session="s", originator=Originator("bob@b.c"), sdp="v=0",
                                      call_id="abc", headers={"X-A": "1"})
        encoded = SylkRTC2().encode(event)
        self.assertEqual((encoded["call_id"], encoded["headers"]), ("abc", {"X-A": "1"}))
        self.assertNotIn("call_id", SylkRTC1().encode(event)["data"])


class HeaderFieldTests(SynchronousTestCase):
    def create(self, headers: object) -> model.SessionCreate:
        return SylkRTC2().decode({"sylkrtc": "session-create", "transaction": "t", "account": "a@b.c",
                                  "session": "s", "uri": "bob@b.c", "sdp": "v=0", "headers": headers})

    def test_headers_become_a_mapping(self) -> None:
        self.assertEqual(self.create([{"name": "X-Room", "value": "42"}, {"name": "Subject", "value": "hi"}]).headers,
                         {"X-Room": "42", "Subject": "hi"})

    def test_bad_headers_are_refused(self) -> None:
        for headers, reason in (
                ({"X-A": "1"}, "must be an array"),
                ([{"name": "Bad Name", "value": "1"}], "SIP token"),
                ([{"name": "Call-ID", "value": "x"}], "cannot be set"),
                ([{"name": "via", "value": "x"}], "cannot be set"),
                ([{"name": "X-A", "value": "one\r\nVia: evil"}], "control characters"),
                ([{"name": "X-A"}], "needs a string 'value'"),
                ([{"name": f"X-{n}", "value": "v"} for n in range(17)], "at most 16")):
            error = self.assertRaises(ValidationError, self.create, headers)
            self.assertIn(reason, str(error))

    def test_header_prefixes(self) -> None:
        add = {"sylkrtc": "account-add", "transaction": "t", "account": "a@b.c", "password": HA1}
        self.assertEqual(SylkRTC2().decode(add).incoming_header_prefixes, ())
        self.assertEqual(SylkRTC2().decode({**add, "incoming_header_prefixes": ["X-", "P-"]}).incoming_header_prefixes,
                         ("X-", "P-"))
        for bad in (["X-", "X-"], "X-", [""], [1]):
            self.assertRaises(ValidationError, SylkRTC2().decode, {**add, "incoming_header_prefixes": bad})


class CallControlTests(SynchronousTestCase):
    """DTMF, updates and hold: the same requests in both dialects, events in each one's shape."""

    def test_requests_decode_in_both_dialects(self) -> None:
        for dialect in (SylkRTC1(), SylkRTC2()):
            dtmf = dialect.decode({"sylkrtc": "session-dtmf-info", "transaction": "t", "session": "s",
                                   "digit": "12#a"})
            self.assertEqual((dtmf.digit, dtmf.duration), ("12#A", 160))
            update = dialect.decode({"sylkrtc": "session-update", "transaction": "t", "session": "s", "sdp": "v=0"})
            self.assertEqual(update.sdp, "v=0")
            hold = dialect.decode({"sylkrtc": "session-hold", "transaction": "t", "session": "s"})
            self.assertEqual(hold.direction, "sendonly")
            dialect.decode({"sylkrtc": "session-unhold", "transaction": "t", "session": "s"})

    def test_invalid_call_control_fields(self) -> None:
        dialect = SylkRTC2()
        for message, reason in (
                ({"sylkrtc": "session-dtmf-info", "digit": "12x"}, "invalid field 'digit': must be DTMF tones"),
                ({"sylkrtc": "session-dtmf-info", "digit": "1", "duration": 10}, "must be from 40 to 5000"),
                ({"sylkrtc": "session-hold", "direction": "recvonly"}, "must be one of sendonly, inactive"),
                ({"sylkrtc": "session-update"}, "missing mandatory field 'sdp'")):
            error = self.assertRaises(ValidationError, dialect.decode, {"transaction": "t", "session": "s",
                                                                         **message})
            self.assertIn(reason, str(error))

    def test_dtmf_events(self) -> None:
        event = model.SessionDtmf(session="s", digit="5", duration=160, method="info")
        self.assertEqual(SylkRTC1().encode(event), {"sylkrtc": "session_event", "session": "s", "event": "dtmf",
                                                    "data": {"digit": "5", "duration": 160, "method": "info"}})
        self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s", "event": "dtmf",
                                                    "digit": "5", "duration": 160, "method": "info"})

    def test_update_events(self) -> None:
        event = model.SessionUpdated(session="s", state="received", sdp="v=0")
        self.assertEqual(SylkRTC1().encode(event), {"sylkrtc": "session_event", "session": "s", "event": "update",
                                                    "data": {"state": "received", "sdp": "v=0"}})
        self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s", "event": "update",
                                                    "state": "received", "sdp": "v=0"})
        failed = SylkRTC2().encode(model.SessionUpdated(session="s", state="failed", reason="No answer"))
        self.assertEqual((failed["state"], failed["reason"]), ("failed", "No answer"))

    def test_hold_events(self) -> None:
        event = model.SessionHoldChanged(session="s", held=True, originator="remote")
        self.assertEqual(SylkRTC1().encode(event)["data"], {"held": True, "originator": "remote"})
        self.assertEqual(SylkRTC2().encode(event), {"sylkrtc": "session-event", "session": "s", "event": "hold",
                                                    "held": True, "originator": "remote"})

    def test_only_sylkrtc2_clients_answer_reinvites(self) -> None:
        self.assertEqual((SylkRTC1.answers_reinvites, SylkRTC2.answers_reinvites), (False, True))

    def test_transfer_events(self) -> None:
        progress = model.SessionTransferProgress(session="s", state="progress", code=180, reason="Ringing")
        self.assertEqual(SylkRTC2().encode(progress), {"sylkrtc": "session-event", "session": "s",
                                                       "event": "transfer", "state": "progress", "code": 180,
                                                       "reason": "Ringing"})
        self.assertEqual(SylkRTC1().encode(progress)["data"], {"state": "progress", "code": 180, "reason": "Ringing"})
        request = model.SessionTransferRequest(session="s", refer_to="carol@b.c", referred_by=None, replaces=False)
        self.assertEqual(SylkRTC2().encode(request), {"sylkrtc": "session-event", "session": "s",
                                                      "event": "transfer-request", "refer_to": "carol@b.c",
                                                      "replaces": False})
        self.assertEqual(SylkRTC1().encode(request)["event"], "transfer_request")

    def test_transfer_requests_decode(self) -> None:
        transfer = SylkRTC1().decode({"sylkrtc": "session-transfer", "transaction": "t", "session": "s",
                                      "uri": "sip:carol@b.c", "replace_session": "s2"})
        self.assertEqual((transfer.uri, transfer.replace_session), ("carol@b.c", "s2"))
        reject = SylkRTC2().decode({"sylkrtc": "session-transfer-reject", "transaction": "t", "session": "s"})
        self.assertEqual(reject.code, 603)
        error = self.assertRaises(ValidationError, SylkRTC2().decode, {"sylkrtc": "session-transfer-reject",
                                                                        "transaction": "t", "session": "s",
                                                                        "code": 200})
        self.assertIn("must be from 400 to 699", str(error))
