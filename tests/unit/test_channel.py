"""Unit tests for RequestChannel: every frame is answered exactly once, and nothing a client sends escapes it."""

from __future__ import annotations

import gc
import json
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.errors import APIError, BackendUnavailable
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.channel import CLOSE_POLICY_VIOLATION, RequestChannel, TokenBucket, encode_json
from sylk.gateway.sylkrtc.dialects import SylkRTC1

HA1_DIGEST = "884edfee38ed471b8a15006700139485"
MAX_MESSAGE_SIZE = 4096


def frame(message: Any) -> bytes:
    return json.dumps(message).encode("utf-8")


def register(transaction: Any = "t1", account: str = "alice@example.com") -> bytes:
    return frame({"sylkrtc": "register", "transaction": transaction, "account": account})


class ChannelTestCase(SynchronousTestCase):
    """A channel whose `send` records frames and whose handler records requests and returns `self.result`."""

    max_message_size = MAX_MESSAGE_SIZE
    trace = False

    def setUp(self) -> None:
        self.sent: list[bytes] = []
        self.handled: list[model.Request] = []
        self.result: Callable[[model.Request], Any] = lambda request: None
        self.channel = RequestChannel("test-connection", SylkRTC1(), self.sent.append, self.handle,
                                      self.max_message_size, self.trace)
        self.log_events: list[dict[str, Any]] = []
        self.channel.log = Logger(namespace="test", observer=self.log_events.append)

    def flush_garbage_errors(self, *error_types: type[BaseException]) -> None:
        gc.collect()
        self.flushLoggedErrors(*error_types)

    def handle(self, request: model.Request) -> Any:
        self.handled.append(request)
        return self.result(request)

    def receive(self, payload: bytes | str, is_binary: bool = False) -> None:
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self.channel.frame_received(payload, is_binary)

    def replies(self) -> list[dict[str, Any]]:
        return [json.loads(data) for data in self.sent]

    def only_reply(self) -> dict[str, Any]:
        """The single frame sent so far, decoded."""
        self.assertEqual(len(self.sent), 1, self.sent)
        return json.loads(self.sent[0])

    def assertOnlyError(self, *fragments: str, transaction: Any = None) -> dict[str, Any]:
        """Exactly one frame was sent: an error holding each fragment, with `transaction` (or without one)."""
        reply = self.only_reply()
        self.assertEqual(reply["sylkrtc"], "error")
        self.assertIsInstance(reply["error"], str)
        for fragment in fragments:
            self.assertIn(fragment, reply["error"])
        if transaction is None:
            self.assertEqual(set(reply), {"sylkrtc", "error"})
        else:
            self.assertEqual(set(reply), {"sylkrtc", "error", "transaction"})
            self.assertEqual(reply["transaction"], transaction)
            self.assertIs(type(reply["transaction"]), type(transaction))
        self.assertEqual(self.handled, [])
        return reply


class MalformedFrameTests(ChannelTestCase):
    def test_binary_frame_is_an_error_without_transaction(self) -> None:
        self.receive(register(), is_binary=True)
        self.assertOnlyError("Binary")

    def test_oversized_frame_is_an_error_naming_sizes(self) -> None:
        payload = frame({"sylkrtc": "register", "transaction": "t1", "account": "a@b", "pad": "x" * MAX_MESSAGE_SIZE})
        self.receive(payload)
        self.assertOnlyError("too large", str(len(payload)), str(MAX_MESSAGE_SIZE))

    def test_oversized_frame_is_refused_before_parsing(self) -> None:
        self.receive(b"x" * (MAX_MESSAGE_SIZE + 1))
        self.assertOnlyError("too large")

    def test_frame_of_exactly_max_message_size_is_accepted(self) -> None:
        payload = register()
        payload = payload[:-1] + b" " * (MAX_MESSAGE_SIZE - len(payload)) + b"}"
        self.assertEqual(len(payload), MAX_MESSAGE_SIZE)
        self.receive(payload)
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})

    def test_size_is_measured_in_bytes(self) -> None:
        # 2 bytes per character in UTF-8: fewer characters than the limit, more bytes.
        payload = frame({"sylkrtc": "register", "transaction": "t1", "account": "a@b",
                         "pad": "é" * (MAX_MESSAGE_SIZE // 2)}).replace(b"\\u00e9", "é".encode())
        self.assertLess(len(payload.decode("utf-8")), MAX_MESSAGE_SIZE + 100)
        self.assertGreater(len(payload), MAX_MESSAGE_SIZE)
        self.receive(payload)
        self.assertOnlyError("too large")

    def test_invalid_json_is_an_error(self) -> None:
        self.receive(b'{"sylkrtc": "register", ')
        self.assertOnlyError("Invalid JSON")

    def test_empty_frame_is_invalid_json(self) -> None:
        self.receive(b"")
        self.assertOnlyError("Invalid JSON")

    def test_invalid_utf8_is_an_error(self) -> None:
        self.receive(b'{"sylkrtc": "register", "transaction": "\xc3"}')
        self.assertOnlyError()

    def test_deeply_nested_array_is_an_error(self) -> None:
        channel = RequestChannel("deep", SylkRTC1(), self.sent.append, self.handle, 1_000_000, False)
        channel.frame_received(b"[" * 100000, False)
        self.assertOnlyError("Invalid JSON")

    def test_deeply_nested_object_value_is_an_error(self) -> None:
        channel = RequestChannel("deep", SylkRTC1(), self.sent.append, self.handle, 1_000_000, False)
        channel.frame_received(b'{"sylkrtc": "register", "transaction": "t1", "x": ' + b'{"a": ' * 100000, False)
        self.assertOnlyError("Invalid JSON")

    def test_channel_keeps_working_after_malformed_frames(self) -> None:
        self.receive(b"[" * 1000)
        self.receive(b"\x00", is_binary=True)
        self.receive(b"{")
        self.receive(register("t2"))
        self.assertEqual([reply["sylkrtc"] for reply in self.replies()], ["error", "error", "error", "ack"])
        self.assertEqual(self.replies()[-1], {"sylkrtc": "ack", "transaction": "t2"})


class NonObjectTests(ChannelTestCase):
    def test_array_is_an_error(self) -> None:
        self.receive(b'[{"sylkrtc": "register", "transaction": "t1", "account": "a@b"}]')
        self.assertOnlyError("JSON object")

    def test_string_is_an_error(self) -> None:
        self.receive(b'"register"')
        self.assertOnlyError("JSON object")

    def test_number_is_an_error(self) -> None:
        self.receive(b"42")
        self.assertOnlyError("JSON object")

    def test_null_is_an_error(self) -> None:
        self.receive(b"null")
        self.assertOnlyError("JSON object")

    def test_boolean_is_an_error(self) -> None:
        self.receive(b"true")
        self.assertOnlyError("JSON object")


class MissingTypeTests(ChannelTestCase):
    def test_missing_sylkrtc_without_transaction(self) -> None:
        self.receive(b'{"account": "alice@example.com"}')
        self.assertOnlyError("sylkrtc")

    def test_missing_sylkrtc_with_transaction_echoes_it(self) -> None:
        self.receive(b'{"transaction": "t1", "account": "alice@example.com"}')
        self.assertOnlyError("sylkrtc", transaction="t1")

    def test_empty_object(self) -> None:
        self.receive(b"{}")
        self.assertOnlyError("sylkrtc")


class UnknownTypeTests(ChannelTestCase):
    def test_unknown_type_is_an_error_with_the_transaction(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": "t1"}')
        self.assertOnlyError("bogus", transaction="t1")

    def test_unknown_type_without_transaction(self) -> None:
        self.receive(b'{"sylkrtc": "bogus"}')
        self.assertOnlyError("bogus")

    def test_non_string_type(self) -> None:
        self.receive(b'{"sylkrtc": ["register"], "transaction": "t1", "account": "a@b"}')
        self.assertOnlyError("unknown request type", transaction="t1")

    def test_null_type(self) -> None:
        self.receive(b'{"sylkrtc": null, "transaction": "t1"}')
        self.assertOnlyError("unknown request type", transaction="t1")

    def test_event_names_are_not_requests(self) -> None:
        self.receive(b'{"sylkrtc": "ack", "transaction": "t1"}')
        self.assertOnlyError("'ack'", transaction="t1")


class InvalidFieldTests(ChannelTestCase):
    def test_missing_field_is_an_error_naming_it(self) -> None:
        self.receive(b'{"sylkrtc": "register", "transaction": "t1"}')
        self.assertOnlyError("'account'", transaction="t1")

    def test_invalid_account_is_an_error_naming_it(self) -> None:
        self.receive(register(account="alice"))
        self.assertOnlyError("'account'", transaction="t1")

    def test_plain_password_is_an_error(self) -> None:
        self.receive(frame({"sylkrtc": "add_account", "transaction": "t1", "account": "a@b", "password": "secret"}))
        self.assertOnlyError("'password'", transaction="t1")

    def test_missing_transaction_on_a_valid_request(self) -> None:
        self.receive(b'{"sylkrtc": "register", "account": "alice@example.com"}')
        self.assertOnlyError("'transaction'")

    def test_empty_transaction_is_echoed_but_refused(self) -> None:
        self.receive(register(transaction=""))
        self.assertOnlyError("'transaction'", transaction="")


class TransactionEchoTests(ChannelTestCase):
    def test_string_transaction_is_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": "04013f0f-25bb-4082-a02f-44399df492ff"}')
        self.assertOnlyError(transaction="04013f0f-25bb-4082-a02f-44399df492ff")

    def test_integer_transaction_is_echoed_as_integer(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": 17}')
        self.assertOnlyError(transaction=17)

    def test_integer_transaction_on_a_known_request_is_refused_but_echoed(self) -> None:
        # The model requires a string, yet the client can still match the error against its request.
        self.receive(b'{"sylkrtc": "register", "transaction": 17, "account": "alice@example.com"}')
        self.assertOnlyError("'transaction'", transaction=17)

    def test_zero_transaction_is_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": 0}')
        self.assertOnlyError(transaction=0)

    def test_unicode_transaction_is_echoed(self) -> None:
        self.receive('{"sylkrtc": "bogus", "transaction": "tränsäction ☎"}')
        self.assertOnlyError(transaction="tränsäction ☎")

    def test_boolean_transaction_is_not_echoed(self) -> None:
        for value in (b"true", b"false"):
            self.sent.clear()
            self.receive(b'{"sylkrtc": "bogus", "transaction": ' + value + b"}")
            self.assertOnlyError("bogus")

    def test_list_transaction_is_not_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": ["t1"]}')
        self.assertOnlyError("bogus")

    def test_object_transaction_is_not_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": {"id": "t1"}}')
        self.assertOnlyError("bogus")

    def test_float_transaction_is_not_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": 1.5}')
        self.assertOnlyError("bogus")

    def test_null_transaction_is_not_echoed(self) -> None:
        self.receive(b'{"sylkrtc": "bogus", "transaction": null}')
        self.assertOnlyError("bogus")

    def test_list_transaction_on_a_known_request_is_refused_without_echo(self) -> None:
        self.receive(b'{"sylkrtc": "register", "transaction": ["t1"], "account": "alice@example.com"}')
        self.assertOnlyError("'transaction'")

    def test_lone_surrogate_in_transaction_still_gets_one_error(self) -> None:
        # JSON allows "\ud800"; Python decodes it to a lone surrogate, which UTF-8 cannot encode. The client must
        # still get exactly one well-formed error, and nothing may escape frame_received.
        self.receive(b'{"transaction": "\\ud800"}')
        reply = self.only_reply()
        self.assertEqual(reply["sylkrtc"], "error")

    def test_lone_surrogate_in_transaction_of_a_valid_request_gets_one_reply(self) -> None:
        # Should the reply fail inside the handler's Deferred, keep the "Unhandled error in Deferred" in this test.
        self.addCleanup(self.flush_garbage_errors, UnicodeEncodeError)
        self.receive(b'{"sylkrtc": "register", "transaction": "\\udc00", "account": "alice@example.com"}')
        self.assertEqual(len(self.sent), 1)
        self.assertIn(json.loads(self.sent[0])["sylkrtc"], ("ack", "error"))


class HandlerTests(ChannelTestCase):
    def test_valid_request_reaches_the_handler_decoded(self) -> None:
        self.receive(frame({"sylkrtc": "add_account", "transaction": "t1", "account": "sip:alice@Example.com",
                            "password": HA1_DIGEST.upper(), "ignored": True}))
        self.assertEqual(self.handled, [model.AccountAdd(transaction="t1", account="alice@example.com",
                                                         password=HA1_DIGEST)])

    def test_dash_name_reaches_the_handler_as_the_same_class(self) -> None:
        self.receive(frame({"sylkrtc": "account-register", "transaction": "t1", "account": "alice@example.com"}))
        self.receive(frame({"sylkrtc": "register", "transaction": "t2", "account": "alice@example.com"}))
        self.assertEqual([type(request) for request in self.handled], [model.AccountRegister] * 2)

    def test_handler_returning_none_gives_ack(self) -> None:
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})

    def test_handler_returning_a_value_gives_ack(self) -> None:
        self.result = lambda request: {"something": "unused"}
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})

    def test_handler_returning_fired_deferred_gives_ack_at_once(self) -> None:
        self.result = lambda request: succeed(None)
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})

    def test_handler_raising_api_error_gives_its_text(self) -> None:
        def refuse(request: model.Request) -> None:
            raise APIError("Account already added")

        self.result = refuse
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "error", "transaction": "t1", "error": "Account already added"})

    def test_api_error_is_not_logged_as_a_failure(self) -> None:
        def refuse(request: model.Request) -> None:
            raise APIError("SIP domain not allowed: example.org")

        self.result = refuse
        self.receive(register("t1"))
        self.assertEqual([event for event in self.log_events if "log_failure" in event], [])

    def test_handler_returning_failed_deferred_with_api_error(self) -> None:
        self.result = lambda request: fail(APIError("Unknown account"))
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "error", "transaction": "t1", "error": "Unknown account"})

    def test_api_error_subclass_gives_its_text(self) -> None:
        class AccountError(APIError):
            pass

        def refuse(request: model.Request) -> None:
            raise AccountError("Too many accounts")

        self.result = refuse
        self.receive(register("t1"))
        self.assertEqual(self.only_reply()["error"], "Too many accounts")

    def test_handler_raising_other_exception_gives_internal_error(self) -> None:
        def crash(request: model.Request) -> None:
            raise RuntimeError("secret details")

        self.result = crash
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "error", "transaction": "t1", "error": "Internal error"})

    def test_internal_error_is_logged_with_the_failure(self) -> None:
        def crash(request: model.Request) -> None:
            raise RuntimeError("secret details")

        self.result = crash
        self.receive(register("t1"))
        failures = [event["log_failure"] for event in self.log_events if "log_failure" in event]
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(RuntimeError))

    def test_internal_error_is_logged_to_the_global_log(self) -> None:
        # With the channel's own logger, the failure goes to the global log, where trial sees it.
        channel = RequestChannel("global", SylkRTC1(), self.sent.append, self.handle, MAX_MESSAGE_SIZE, False)

        def crash(request: model.Request) -> None:
            raise KeyError("boom")

        self.result = crash
        channel.frame_received(register("t1"), False)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(self.only_reply()["error"], "Internal error")

    def test_backend_unavailable_is_an_internal_error(self) -> None:
        self.result = lambda request: fail(BackendUnavailable("Janus is down"))
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "error", "transaction": "t1", "error": "Internal error"})

    def test_handler_deferred_firing_later_delays_the_ack(self) -> None:
        pending: Deferred[None] = Deferred()
        self.result = lambda request: pending
        self.receive(register("t1"))
        self.assertEqual(self.sent, [])
        pending.callback(None)
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})

    def test_handler_deferred_failing_later_delays_the_error(self) -> None:
        pending: Deferred[None] = Deferred()
        self.result = lambda request: pending
        self.receive(register("t1"))
        self.assertEqual(self.sent, [])
        pending.errback(APIError("Registration refused"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "error", "transaction": "t1", "error": "Registration refused"})

    def test_handler_deferred_failing_later_with_other_exception(self) -> None:
        pending: Deferred[None] = Deferred()
        self.result = lambda request: pending
        self.receive(register("t1"))
        pending.errback(ValueError("oops"))
        self.assertEqual(self.only_reply()["error"], "Internal error")
        self.assertEqual(len([event for event in self.log_events if "log_failure" in event]), 1)

    def test_concurrent_requests_are_answered_in_completion_order(self) -> None:
        pending: dict[str, Deferred[None]] = {}

        def defer(request: model.Request) -> Deferred[None]:
            pending[request.transaction] = Deferred()
            return pending[request.transaction]

        self.result = defer
        self.receive(register("t1"))
        self.receive(register("t2"))
        pending["t2"].callback(None)
        pending["t1"].errback(APIError("late"))
        self.assertEqual(self.replies(), [{"sylkrtc": "ack", "transaction": "t2"},
                                          {"sylkrtc": "error", "transaction": "t1", "error": "late"}])

    def test_validation_errors_do_not_wait_for_pending_requests(self) -> None:
        pending: Deferred[None] = Deferred()
        self.result = lambda request: pending
        self.receive(register("t1"))
        self.receive(b'{"sylkrtc": "bogus", "transaction": "t2"}')
        pending.callback(None)
        self.assertEqual([reply["transaction"] for reply in self.replies()], ["t2", "t1"])

    def test_ack_echoes_the_validated_transaction(self) -> None:
        self.receive(register("x" * 256))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "x" * 256})

    def test_each_request_gets_its_own_reply(self) -> None:
        for number in range(5):
            self.receive(register(f"t{number}"))
        self.assertEqual(self.replies(), [{"sylkrtc": "ack", "transaction": f"t{number}"} for number in range(5)])


class EventTests(ChannelTestCase):
    def test_ready_event(self) -> None:
        self.channel.send_event(model.Ready())
        self.assertEqual(self.sent, [b'{"sylkrtc":"event","event":"ready"}'])

    def test_registration_state_event(self) -> None:
        self.channel.send_event(model.RegistrationStateChanged(account="alice@example.com", state="registered"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "account_event", "account": "alice@example.com",
                                             "event": "registration_state", "data": {"state": "registered"}})

    def test_registration_failed_event_carries_the_reason(self) -> None:
        self.channel.send_event(model.RegistrationStateChanged(account="alice@example.com", state="failed",
                                                               reason="401 Unauthorized"))
        self.assertEqual(self.only_reply()["data"], {"state": "failed", "reason": "401 Unauthorized"})

    def test_event_sent_by_the_handler_precedes_the_ack(self) -> None:
        def handle(request: model.Request) -> None:
            self.channel.send_event(model.RegistrationStateChanged(account=request.account, state="registering"))

        self.result = handle
        self.receive(register("t1"))
        self.assertEqual([reply["sylkrtc"] for reply in self.replies()], ["account_event", "ack"])


class EncodingTests(ChannelTestCase):
    def test_encode_json_is_compact(self) -> None:
        self.assertEqual(encode_json({"sylkrtc": "ack", "transaction": "t1"}), b'{"sylkrtc":"ack","transaction":"t1"}')

    def test_encode_json_is_utf8_without_escapes(self) -> None:
        self.assertEqual(encode_json({"error": "Café ☎"}), '{"error":"Café ☎"}'.encode("utf-8"))

    def test_encode_json_has_no_trailing_newline(self) -> None:
        self.assertFalse(encode_json({"a": 1}).endswith(b"\n"))

    def test_sent_frames_are_bytes(self) -> None:
        self.receive(register("t1"))
        self.receive(b"{")
        self.channel.send_event(model.Ready())
        for data in self.sent:
            self.assertIsInstance(data, bytes)

    def test_ack_frame_is_compact_utf8(self) -> None:
        self.receive(register("tränsäction"))
        self.assertEqual(self.sent, ['{"sylkrtc":"ack","transaction":"tränsäction"}'.encode("utf-8")])

    def test_error_frame_is_compact(self) -> None:
        self.receive(b'{"transaction": "t1"}')
        self.assertEqual(self.sent, [b'{"sylkrtc":"error","error":"Missing \'sylkrtc\' key","transaction":"t1"}'])

    def test_no_frame_has_whitespace_between_tokens_or_a_trailing_newline(self) -> None:
        self.receive(register("t1"))
        self.receive(b'{"sylkrtc": "bogus", "transaction": "t2"}')
        self.channel.send_event(model.RegistrationStateChanged(account="a@b", state="failed", reason="x"))
        for data in self.sent:
            self.assertEqual(data, encode_json(json.loads(data)))
            self.assertFalse(data.endswith(b"\n"))


class TraceTests(ChannelTestCase):
    trace = True

    def messages(self) -> list[str]:
        return [formatEvent(event) for event in self.log_events]

    def test_trace_logs_incoming_and_outgoing_frames(self) -> None:
        self.receive(register("t1"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "t1"})
        messages = self.messages()
        self.assertTrue(any("test-connection <-" in message and '"t1"' in message for message in messages), messages)
        self.assertTrue(any("test-connection ->" in message and "ack" in message for message in messages), messages)

    def test_trace_does_not_dump_binary_frames(self) -> None:
        self.receive(b"\xff\x00secret", is_binary=True)
        self.assertOnlyError("Binary")
        self.assertFalse(any("secret" in message for message in self.messages()))

    def test_trace_survives_invalid_utf8(self) -> None:
        self.receive(b"\xff\xfe{")
        self.assertOnlyError()

    def test_trace_logs_events(self) -> None:
        self.channel.send_event(model.Ready())
        self.assertTrue(any("ready" in message for message in self.messages()))


class TokenBucketTests(SynchronousTestCase):
    def test_a_full_bucket_then_the_refill_rate(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=2, size=3, clock=clock)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])
        clock.advance(0.4)
        self.assertFalse(bucket.take())  # 0.8 of a token
        clock.advance(0.1)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())

    def test_idle_time_fills_it_only_up_to_its_size(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=10, size=2, clock=clock)
        clock.advance(3600)
        self.assertEqual([bucket.take() for _ in range(3)], [True, True, False])

    def test_fractional_rates(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=0.1, size=1, clock=clock)
        self.assertTrue(bucket.take())
        clock.advance(9.9)
        self.assertFalse(bucket.take())
        clock.advance(0.1)
        self.assertTrue(bucket.take())


class RateLimitTests(ChannelTestCase):
    """The channel with a bucket of BURST tokens refilled at RATE per second."""

    RATE = 2
    BURST = 3

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.disconnected: list[tuple[int, str]] = []
        self.channel = RequestChannel("limited", SylkRTC1(), self.sent.append, self.handle, MAX_MESSAGE_SIZE, False,
                                      bucket=TokenBucket(self.RATE, self.BURST, self.clock),
                                      disconnect=lambda code, reason: self.disconnected.append((code, reason)))
        self.channel.log = Logger(namespace="test", observer=self.log_events.append)

    def spend_the_burst(self) -> None:
        for number in range(self.BURST):
            self.receive(register(f"t{number}"))
        self.assertEqual(len(self.handled), self.BURST)
        self.sent.clear()
        self.handled.clear()

    def test_a_request_over_the_limit_gets_an_error_with_its_transaction_and_is_not_handled(self) -> None:
        self.spend_the_burst()
        self.receive(register("over"))
        self.assertOnlyError("Too many requests (at most 2 per second)", transaction="over")
        self.receive(b'{"sylkrtc": "bogus", "transaction": 7}')
        self.assertEqual(self.replies()[-1]["transaction"], 7)

    def test_the_bucket_refills_at_the_rate(self) -> None:
        self.spend_the_burst()
        self.clock.advance(1 / self.RATE)
        self.receive(register("refilled"))
        self.assertEqual(self.only_reply(), {"sylkrtc": "ack", "transaction": "refilled"})

    def test_every_frame_costs_a_token_valid_or_not(self) -> None:
        self.receive(b"\x00", is_binary=True)
        self.receive(b"x" * (MAX_MESSAGE_SIZE + 1))
        self.receive(b"not json")
        self.sent.clear()
        self.receive(register("t1"))
        self.assertOnlyError("Too many requests", transaction="t1")

    def test_refused_frames_that_cannot_be_read_get_the_error_without_transaction(self) -> None:
        self.spend_the_burst()
        self.receive(register("binary"), is_binary=True)
        self.receive(frame({"sylkrtc": "register", "transaction": "big", "pad": "x" * MAX_MESSAGE_SIZE}))
        self.receive(b"[1, 2]")
        error = {"sylkrtc": "error", "error": "Too many requests (at most 2 per second)"}
        self.assertEqual(self.replies(), [error] * 3)

    def test_a_client_that_keeps_going_is_disconnected_and_then_ignored(self) -> None:
        self.spend_the_burst()
        for number in range(self.BURST - 1):
            self.receive(register(f"over{number}"))
        self.assertEqual(self.disconnected, [])
        self.receive(register("last"))
        self.assertEqual(len(self.replies()), self.BURST)  # each refused frame was answered
        self.assertEqual(self.disconnected, [(CLOSE_POLICY_VIOLATION,
                                              "Too many requests: 3 refused in a row (at most 2 per second)")])
        self.assertEqual(len([event for event in self.log_events if event["log_level"].name == "warn"]), 1)
        self.sent.clear()
        self.clock.advance(60)
        self.receive(register("later"))
        self.assertEqual((self.sent, self.handled, len(self.disconnected)), ([], [], 1))

    def test_an_admitted_request_starts_the_count_again(self) -> None:
        self.spend_the_burst()
        for _ in range(3):
            for number in range(self.BURST - 1):
                self.receive(register(f"over{number}"))
            self.clock.advance(1 / self.RATE)
            self.receive(register("admitted"))
        self.assertEqual(self.disconnected, [])
        self.assertEqual(len(self.handled), 3)

