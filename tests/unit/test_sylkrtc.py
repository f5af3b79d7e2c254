"""Unit tests for the sylkRTC request models (fields.py, model.py) and the sylkRTC-1 codec (dialects.py)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.dialects import DIALECTS, SylkRTC1
from sylk.gateway.sylkrtc.fields import AOR, HA1, Field, Model, String, ValidationError

HA1_DIGEST = "884edfee38ed471b8a15006700139485"  # from the seed
TRANSACTION = "04013f0f-25bb-4082-a02f-44399df492ff"
_DELETE = object()  # marks a key to leave out of a message


class Sample(Model):
    """A model that exercises each kind of field."""

    name = String(max_length=8)
    note = String(optional=True, allow_empty=True)
    tag = String(optional=True, default="none")
    address = AOR(optional=True)
    digest = HA1(optional=True)


class ValidationErrorAssertions:
    def assertInvalid(self, cls: type[Model], message: dict[str, Any], *fragments: str) -> ValidationError:
        error = self.assertRaises(ValidationError, cls.parse, message)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error


class StringFieldTests(ValidationErrorAssertions, SynchronousTestCase):
    def test_string_is_kept(self) -> None:
        self.assertEqual(Sample.parse({"name": "abc"}).name, "abc")

    def test_missing_mandatory_field_is_named(self) -> None:
        self.assertInvalid(Sample, {}, "missing mandatory field 'name'")

    def test_null_for_mandatory_field_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": None}, "'name'", "null")

    def test_number_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": 42}, "invalid field 'name'", "must be a string", "number")

    def test_float_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": 4.2}, "'name'", "number")

    def test_boolean_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": True}, "'name'", "boolean")

    def test_array_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": ["abc"]}, "'name'", "array")

    def test_object_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": {"a": "b"}}, "'name'", "object")

    def test_empty_string_is_refused_by_default(self) -> None:
        self.assertInvalid(Sample, {"name": ""}, "'name'", "must not be empty")

    def test_empty_string_is_allowed_when_declared(self) -> None:
        self.assertEqual(Sample.parse({"name": "a", "note": ""}).note, "")

    def test_max_length_is_inclusive(self) -> None:
        self.assertEqual(Sample.parse({"name": "x" * 8}).name, "x" * 8)

    def test_too_long_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "x" * 9}, "'name'", "at most 8 characters")

    def test_length_counts_characters_not_bytes(self) -> None:
        self.assertEqual(Sample.parse({"name": "é" * 8}).name, "é" * 8)

    def test_default_max_length_is_1024(self) -> None:
        self.assertEqual(Sample.parse({"name": "a", "note": "x" * 1024}).note, "x" * 1024)
        self.assertInvalid(Sample, {"name": "a", "note": "x" * 1025}, "'note'", "1024")


class OptionalFieldTests(ValidationErrorAssertions, SynchronousTestCase):
    def test_missing_optional_field_is_none(self) -> None:
        self.assertIsNone(Sample.parse({"name": "a"}).note)

    def test_null_optional_field_is_none(self) -> None:
        self.assertIsNone(Sample.parse({"name": "a", "note": None}).note)

    def test_missing_optional_field_takes_its_default(self) -> None:
        self.assertEqual(Sample.parse({"name": "a"}).tag, "none")

    def test_null_optional_field_takes_its_default(self) -> None:
        self.assertEqual(Sample.parse({"name": "a", "tag": None}).tag, "none")

    def test_present_optional_field_is_still_checked(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "tag": 5}, "invalid field 'tag'")


class ModelTests(SynchronousTestCase):
    def test_unknown_keys_are_ignored(self) -> None:
        self.assertEqual(Sample.parse({"name": "a", "future": [1, 2], "sylkrtc": "x"}), Sample(name="a"))

    def test_fields_are_collected_in_declaration_order(self) -> None:
        self.assertEqual(list(Sample._fields), ["name", "note", "tag", "address", "digest"])

    def test_fields_are_inherited(self) -> None:
        self.assertEqual(list(model.AccountAdd._fields),
                         ["transaction", "account", "password", "display_name", "user_agent",
                          "incoming_header_prefixes"])

    def test_subclass_does_not_change_base_fields(self) -> None:
        self.assertEqual(list(model.Request._fields), ["transaction"])
        self.assertEqual(list(model.AccountRequest._fields), ["transaction", "account"])

    def test_field_knows_its_name(self) -> None:
        self.assertEqual(Sample._fields["note"].name, "note")

    def test_constructor_fills_defaults(self) -> None:
        sample = Sample(name="a")
        self.assertEqual(sample.values(), {"name": "a", "note": None, "tag": "none", "address": None, "digest": None})

    def test_constructor_refuses_unknown_fields(self) -> None:
        self.assertRaises(TypeError, Sample, name="a", bogus=1)

    def test_equality_compares_type_and_values(self) -> None:
        self.assertEqual(Sample(name="a"), Sample(name="a"))
        self.assertNotEqual(Sample(name="a"), Sample(name="b"))
        self.assertNotEqual(model.AccountRemove(transaction="t", account="a@b"),
                            model.AccountRegister(transaction="t", account="a@b"))

    def test_repr_hides_the_password(self) -> None:
        request = model.AccountAdd(transaction="t", account="alice@example.com", password=HA1_DIGEST)
        self.assertNotIn(HA1_DIGEST, repr(request))
        self.assertIn("alice@example.com", repr(request))
        self.assertTrue(repr(request).startswith("AccountAdd("))

    def test_plain_field_accepts_anything(self) -> None:
        class Loose(Model):
            value = Field()

        self.assertEqual(Loose.parse({"value": [1, {"a": None}]}).value, [1, {"a": None}])


class AORTests(ValidationErrorAssertions, SynchronousTestCase):
    def parse(self, value: Any) -> str:
        return Sample.parse({"name": "a", "address": value}).address

    def assertRefused(self, value: Any) -> None:
        self.assertInvalid(Sample, {"name": "a", "address": value}, "invalid field 'address'")

    def test_bare_address_is_kept(self) -> None:
        self.assertEqual(self.parse("alice@example.com"), "alice@example.com")

    def test_sip_scheme_is_removed_and_domain_lower_cased(self) -> None:
        self.assertEqual(self.parse("sip:alice@Example.com"), "alice@example.com")

    def test_sips_scheme_is_removed(self) -> None:
        self.assertEqual(self.parse("sips:alice@example.com"), "alice@example.com")

    def test_scheme_is_case_insensitive(self) -> None:
        self.assertEqual(self.parse("SIP:alice@example.com"), "alice@example.com")
        self.assertEqual(self.parse("Sips:alice@example.com"), "alice@example.com")

    def test_user_part_keeps_its_case(self) -> None:
        self.assertEqual(self.parse("Alice@EXAMPLE.COM"), "Alice@example.com")

    def test_user_may_hold_sip_unreserved_and_escaped_characters(self) -> None:
        self.assertEqual(self.parse("alice.smith-1_x+tag%20@example.com"), "alice.smith-1_x+tag%20@example.com")

    def test_numeric_user(self) -> None:
        self.assertEqual(self.parse("+31201234567@example.com"), "+31201234567@example.com")

    def test_ip_domain(self) -> None:
        self.assertEqual(self.parse("alice@192.0.2.1"), "alice@192.0.2.1")

    def test_bracketed_ipv6_domain(self) -> None:
        self.assertEqual(self.parse("alice@[2001:DB8::1]"), "alice@[2001:db8::1]")

    def test_single_label_domain(self) -> None:
        self.assertEqual(self.parse("alice@localhost"), "alice@localhost")

    def test_user_without_domain_is_refused(self) -> None:
        self.assertRefused("alice")

    def test_empty_user_is_refused(self) -> None:
        self.assertRefused("@example.com")

    def test_empty_domain_is_refused(self) -> None:
        self.assertRefused("alice@")

    def test_scheme_only_is_refused(self) -> None:
        self.assertRefused("sip:")

    def test_empty_string_is_refused(self) -> None:
        self.assertRefused("")

    def test_space_in_user_is_refused(self) -> None:
        self.assertRefused("ali ce@example.com")

    def test_space_in_domain_is_refused(self) -> None:
        self.assertRefused("alice@exa mple.com")

    def test_surrounding_spaces_are_refused(self) -> None:
        self.assertRefused(" alice@example.com")
        self.assertRefused("alice@example.com ")

    def test_two_at_signs_are_refused(self) -> None:
        self.assertRefused("alice@bob@example.com")

    def test_doubled_scheme_is_refused(self) -> None:
        self.assertRefused("sip:sip:alice@example.com")

    def test_other_schemes_are_refused(self) -> None:
        self.assertRefused("tel:alice@example.com")
        self.assertRefused("mailto:alice@example.com")

    def test_port_is_refused(self) -> None:
        self.assertRefused("alice@example.com:5060")

    def test_uri_parameters_on_domain_are_refused(self) -> None:
        self.assertRefused("alice@example.com;transport=tcp")

    def test_uri_parameters_and_headers_in_the_user_part_are_refused(self) -> None:
        # more in test_injection.py
        self.assertRefused("alice;transport=tcp@example.com")
        self.assertRefused("alice?Subject=x@example.com")

    def test_numeric_domains_must_be_ip_addresses(self) -> None:
        self.assertRefused("alice@127.1")
        self.assertRefused("alice@999.0.0.1")

    def test_domain_with_leading_or_trailing_dash_or_dot_is_refused(self) -> None:
        self.assertRefused("alice@-example.com")
        self.assertRefused("alice@example-.com")
        self.assertRefused("alice@.example.com")
        self.assertRefused("alice@example..com")

    def test_angle_brackets_are_refused(self) -> None:
        self.assertRefused("<sip:alice@example.com>")

    def test_non_ascii_domain_is_refused(self) -> None:
        self.assertRefused("alice@exämple.com")

    def test_non_strings_are_refused(self) -> None:
        for value in (42, True, ["alice@example.com"], {"uri": "alice@example.com"}):
            self.assertInvalid(Sample, {"name": "a", "address": value}, "'address'", "must be a string")

    def test_max_length_is_512(self) -> None:
        domain = "@example.com"
        longest = "a" * (512 - len(domain)) + domain
        self.assertEqual(self.parse(longest), longest)
        self.assertRefused("a" + longest)

    def test_error_shows_the_offending_value(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "address": "alice"}, "'alice'", "user@domain")


class HA1Tests(ValidationErrorAssertions, SynchronousTestCase):
    def parse(self, value: Any) -> str:
        return Sample.parse({"name": "a", "digest": value}).digest

    def test_lower_case_digest_is_kept(self) -> None:
        self.assertEqual(self.parse(HA1_DIGEST), HA1_DIGEST)

    def test_upper_case_digest_is_lower_cased(self) -> None:
        self.assertEqual(self.parse(HA1_DIGEST.upper()), HA1_DIGEST)

    def test_plain_password_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": "secret"}, "'digest'", "HA1", "plain password")

    def test_31_digits_are_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": HA1_DIGEST[:-1]}, "'digest'")

    def test_33_digits_are_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": HA1_DIGEST + "0"}, "'digest'")

    def test_non_hex_digit_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": "g" + HA1_DIGEST[1:]}, "'digest'")

    def test_surrounding_whitespace_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": HA1_DIGEST + "\n"}, "'digest'")
        self.assertInvalid(Sample, {"name": "a", "digest": " " + HA1_DIGEST}, "'digest'")

    def test_number_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": 12345678901234567890123456789012}, "'digest'",
                           "must be a string")

    def test_empty_is_refused(self) -> None:
        self.assertInvalid(Sample, {"name": "a", "digest": ""}, "'digest'")


class AccountRequestModelTests(ValidationErrorAssertions, SynchronousTestCase):
    def account_add(self, **changes: Any) -> dict[str, Any]:
        message = {"sylkrtc": "account-add", "transaction": TRANSACTION, "account": "alice@example.com",
                   "password": HA1_DIGEST}
        message.update(changes)
        return {key: value for key, value in message.items() if value is not _DELETE}

    def test_request_names_are_the_canonical_dash_names(self) -> None:
        self.assertEqual(model.AccountAdd.name, "account-add")
        self.assertEqual(model.AccountRemove.name, "account-remove")
        self.assertEqual(model.AccountRegister.name, "account-register")
        self.assertEqual(model.AccountUnregister.name, "account-unregister")

    def test_account_add(self) -> None:
        request = model.AccountAdd.parse(self.account_add(account="sip:alice@Example.COM",
                                                          password=HA1_DIGEST.upper()))
        self.assertEqual(request, model.AccountAdd(transaction=TRANSACTION, account="alice@example.com",
                                                   password=HA1_DIGEST))
        self.assertIsNone(request.display_name)
        self.assertIsNone(request.user_agent)

    def test_account_add_optional_fields(self) -> None:
        request = model.AccountAdd.parse(self.account_add(display_name="Alice", user_agent="sylkrtc.js"))
        self.assertEqual(request.display_name, "Alice")
        self.assertEqual(request.user_agent, "sylkrtc.js")

    def test_account_add_display_name_may_be_empty(self) -> None:
        self.assertEqual(model.AccountAdd.parse(self.account_add(display_name="")).display_name, "")

    def test_account_add_display_name_max_length(self) -> None:
        self.assertEqual(len(model.AccountAdd.parse(self.account_add(display_name="x" * 128)).display_name), 128)
        self.assertInvalid(model.AccountAdd, self.account_add(display_name="x" * 129), "'display_name'",
                           "at most 128 characters")

    def test_account_add_user_agent_max_length(self) -> None:
        self.assertEqual(len(model.AccountAdd.parse(self.account_add(user_agent="x" * 128)).user_agent), 128)
        self.assertInvalid(model.AccountAdd, self.account_add(user_agent="x" * 129), "'user_agent'",
                           "at most 128 characters")

    def test_account_add_display_name_wrong_type(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(display_name=7), "'display_name'", "must be a string")

    def test_account_add_missing_password(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(password=_DELETE), "missing mandatory field 'password'")

    def test_account_add_plain_password(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(password="hunter2"), "invalid field 'password'")

    def test_account_add_missing_account(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(account=_DELETE), "missing mandatory field 'account'")

    def test_account_add_invalid_account(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(account="alice"), "invalid field 'account'")

    def test_missing_transaction(self) -> None:
        self.assertInvalid(model.AccountAdd, self.account_add(transaction=_DELETE),
                           "missing mandatory field 'transaction'")

    def test_transaction_must_be_a_string(self) -> None:
        self.assertInvalid(model.AccountRemove, {"transaction": 1, "account": "alice@example.com"},
                           "invalid field 'transaction'", "must be a string")

    def test_transaction_must_not_be_empty(self) -> None:
        self.assertInvalid(model.AccountRemove, {"transaction": "", "account": "alice@example.com"},
                           "invalid field 'transaction'")

    def test_transaction_max_length(self) -> None:
        self.assertEqual(model.AccountRemove.parse({"transaction": "t" * 256, "account": "a@b"}).transaction,
                         "t" * 256)
        self.assertInvalid(model.AccountRemove, {"transaction": "t" * 257, "account": "a@b"}, "'transaction'")

    def test_other_account_requests_need_only_transaction_and_account(self) -> None:
        for cls in (model.AccountRemove, model.AccountRegister, model.AccountUnregister):
            request = cls.parse({"transaction": "t1", "account": "sips:bob@Example.org"})
            self.assertEqual(request.values(), {"transaction": "t1", "account": "bob@example.org"}, cls)

    def test_other_account_requests_ignore_a_password(self) -> None:
        request = model.AccountRegister.parse({"transaction": "t1", "account": "bob@example.org", "password": "x"})
        self.assertFalse(hasattr(request, "password"))


class DecodeTests(ValidationErrorAssertions, SynchronousTestCase):
    def setUp(self) -> None:
        self.dialect = SylkRTC1()

    def test_dialect_is_registered_under_its_subprotocol(self) -> None:
        self.assertEqual(SylkRTC1.subprotocol, "sylkRTC-1")
        self.assertIsInstance(DIALECTS["sylkRTC-1"], SylkRTC1)
        self.assertEqual(list(DIALECTS), ["sylkRTC-2", "sylkRTC-1"])  # in order of preference

    def test_seed_add_account_example(self) -> None:
        # The seed's example, verbatim.
        message = {"account": "saghul@sip2sip.info", "password": "884edfee38ed471b8a15006700139485",
                   "sylkrtc": "add_account", "transaction": "04013f0f-25bb-4082-a02f-44399df492ff"}
        self.assertEqual(self.dialect.decode(message),
                         model.AccountAdd(transaction="04013f0f-25bb-4082-a02f-44399df492ff",
                                          account="saghul@sip2sip.info", password=HA1_DIGEST))

    def test_seed_remove_account_example(self) -> None:
        message = {"account": "saghul@sip2sip.info", "sylkrtc": "remove_account",
                   "transaction": "bd3ee25d-5f16-4f76-b34e-8ac3fe0a4ac0"}
        self.assertEqual(self.dialect.decode(message),
                         model.AccountRemove(transaction="bd3ee25d-5f16-4f76-b34e-8ac3fe0a4ac0",
                                             account="saghul@sip2sip.info"))

    def test_seed_register_example(self) -> None:
        message = {"account": "saghul@sip2sip.info", "sylkrtc": "register",
                   "transaction": "bcb87b0f-0cc7-42a9-897e-81f035910670"}
        self.assertEqual(self.dialect.decode(message),
                         model.AccountRegister(transaction="bcb87b0f-0cc7-42a9-897e-81f035910670",
                                               account="saghul@sip2sip.info"))

    def test_seed_unregister_example(self) -> None:
        message = {"account": "saghul@sip2sip.info", "sylkrtc": "unregister",
                   "transaction": "1c81eea0-b247-4ced-b3b3-3ced1eba810e"}
        self.assertEqual(self.dialect.decode(message),
                         model.AccountUnregister(transaction="1c81eea0-b247-4ced-b3b3-3ced1eba810e",
                                                 account="saghul@sip2sip.info"))

    def test_seed_and_dash_names_decode_to_the_same_class(self) -> None:
        pairs = [("add_account", "account-add", model.AccountAdd),
                 ("remove_account", "account-remove", model.AccountRemove),
                 ("register", "account-register", model.AccountRegister),
                 ("unregister", "account-unregister", model.AccountUnregister)]
        for seed_name, dash_name, cls in pairs:
            results = []
            for name in (seed_name, dash_name):
                message = {"sylkrtc": name, "transaction": "t", "account": "alice@example.com",
                           "password": HA1_DIGEST}
                results.append(self.dialect.decode(message))
            self.assertIs(type(results[0]), cls, seed_name)
            self.assertEqual(results[0], results[1], seed_name)

    def test_request_table_holds_exactly_these_names(self) -> None:
        self.assertEqual(set(SylkRTC1.requests), {
            "ping", "lookup-public-key", "connection-keep", "connection-resume", "add_account", "remove_account", "register", "unregister",
            "account-add", "account-remove", "account-register", "account-unregister",
            "call", "answer", "trickle", "terminate",
            "session-create", "session-answer", "session-trickle", "session-terminate", "session-dtmf-info",
            "session-update", "session-hold", "session-unhold", "session-transfer", "session-transfer-reject",
            "account-message", "account-disposition-notification", "session-message", "account-devicetoken",
            "account-fetch-addressbook", "account-sync-conversations", "account-mark-conversation-read",
            "account-remove-message", "account-remove-conversation", "account-update-addressbook"})

    def test_decoded_request_is_normalised(self) -> None:
        request = self.dialect.decode({"sylkrtc": "register", "transaction": "t", "account": "sip:alice@EXAMPLE.com"})
        self.assertEqual(request.account, "alice@example.com")

    def test_unknown_type_names_the_type(self) -> None:
        error = self.assertRaises(ValidationError, self.dialect.decode, {"sylkrtc": "bogus", "transaction": "t"})
        self.assertIn("bogus", str(error))

    def test_later_and_other_protocol_names_are_unknown(self) -> None:
        for name in ("videoroom-join", "bind", "ack", "event", "ready-event", "Add_Account", "account_add"):
            error = self.assertRaises(ValidationError, self.dialect.decode, {"sylkrtc": name, "transaction": "t"})
            self.assertIn(repr(name), str(error))

    def test_non_string_type_is_unknown(self) -> None:
        for kind in (None, 1, True, ["register"], {"register": 1}):
            error = self.assertRaises(ValidationError, self.dialect.decode,
                                      {"sylkrtc": kind, "transaction": "t", "account": "alice@example.com"})
            self.assertIn("unknown request type", str(error))

    def test_invalid_fields_are_validation_errors(self) -> None:
        error = self.assertRaises(ValidationError, self.dialect.decode,
                                  {"sylkrtc": "add_account", "transaction": "t", "account": "alice@example.com",
                                   "password": "secret"})
        self.assertIn("'password'", str(error))

    def test_missing_field_is_a_validation_error(self) -> None:
        error = self.assertRaises(ValidationError, self.dialect.decode, {"sylkrtc": "register", "transaction": "t"})
        self.assertIn("'account'", str(error))

    def test_unknown_keys_are_ignored(self) -> None:
        request = self.dialect.decode({"sylkrtc": "register", "transaction": "t", "account": "a@b", "extra": {}})
        self.assertEqual(request, model.AccountRegister(transaction="t", account="a@b"))


class EncodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dialect = SylkRTC1()

    def test_ack(self) -> None:
        self.assertEqual(self.dialect.ack("t1"), {"sylkrtc": "ack", "transaction": "t1"})

    def test_error_with_transaction(self) -> None:
        self.assertEqual(self.dialect.error("t1", "Nope"), {"sylkrtc": "error", "transaction": "t1", "error": "Nope"})

    def test_error_without_transaction_has_no_transaction_key(self) -> None:
        self.assertEqual(self.dialect.error(None, "Nope"), {"sylkrtc": "error", "error": "Nope"})

    def test_error_keeps_a_numeric_transaction(self) -> None:
        self.assertEqual(self.dialect.error(7, "Nope")["transaction"], 7)

    def test_ready_event_is_the_seed_shape(self) -> None:
        self.assertEqual(self.dialect.encode(model.Ready()), {"sylkrtc": "event", "event": "ready"})

    def test_registration_state_event_is_the_seed_shape(self) -> None:
        for state in ("registering", "registered", "unregistered"):
            event = model.RegistrationStateChanged(account="saghul@sip2sip.info", state=state)
            self.assertEqual(self.dialect.encode(event), {
                "sylkrtc": "account_event", "account": "saghul@sip2sip.info", "event": "registration_state",
                "data": {"state": state}})

    def test_messaging_events_carry_their_fields_in_data(self) -> None:
        self.assertEqual(self.dialect.encode(model.SyncConversations(account="a@b.c", messages=[])),
                         {"sylkrtc": "account_event", "account": "a@b.c", "event": "sync_conversations",
                          "data": {"messages": []}})
        self.assertEqual(self.dialect.encode(model.AccountSync(account="a@b.c", type="conversation", action="read",
                                                               content={"contact": "d@b.c"})),
                         {"sylkrtc": "account_event", "account": "a@b.c", "event": "sync",
                          "data": {"type": "conversation", "action": "read", "content": {"contact": "d@b.c"}}})
        self.assertEqual(self.dialect.encode(model.PublicKeyFound(uri="d@b.c", public_key="k")),
                         {"sylkrtc": "event", "event": "lookup_public_key", "data": {"uri": "d@b.c", "public_key": "k"}})

    def test_unregistered_in_a_resume_snapshot_too(self) -> None:
        event = model.RegistrationStateShown(account="saghul@sip2sip.info", state="unregistered")
        self.assertEqual(self.dialect.encode(event)["data"], {"state": "unregistered"})

    def test_failed_registration_carries_the_reason(self) -> None:
        event = model.RegistrationStateChanged(account="saghul@sip2sip.info", state=model.RegistrationState.FAILED,
                                               reason="904 Operation has no matching challenge ")
        self.assertEqual(self.dialect.encode(event), {
            "sylkrtc": "account_event", "account": "saghul@sip2sip.info", "event": "registration_state",
            "data": {"reason": "904 Operation has no matching challenge ", "state": "failed"}})

    def test_reason_key_is_absent_when_unset(self) -> None:
        event = model.RegistrationStateChanged(account="a@b", state="failed")
        self.assertNotIn("reason", self.dialect.encode(event)["data"])

    def test_encoded_events_are_json_serialisable(self) -> None:
        event = model.RegistrationStateChanged(account="a@b", state="failed", reason="401 Unauthorized")
        self.assertEqual(json.loads(json.dumps(self.dialect.encode(event))), self.dialect.encode(event))

    def test_registration_state_names(self) -> None:
        self.assertEqual(model.RegistrationState.REGISTERING, "registering")
        self.assertEqual(model.RegistrationState.REGISTERED, "registered")
        self.assertEqual(model.RegistrationState.FAILED, "failed")
        self.assertEqual(model.RegistrationState.UNREGISTERED, "unregistered")

    def test_events_have_no_transaction(self) -> None:
        self.assertNotIn("transaction", model.Ready._fields)
        self.assertNotIn("transaction", model.RegistrationStateChanged._fields)
