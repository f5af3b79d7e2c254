"""No injection into SIP: what a browser sends that ends up in SIP headers (custom headers, display name, user
agent, header prefixes, URIs) is checked, and targets follow the operator's policy (issue 7)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.config import ConfigError, WebRTCGatewayConfig, parse_config
from sylk.gateway.errors import APIError
from sylk.gateway.sylkrtc import model
from sylk.gateway.sylkrtc.dialects import SylkRTC2
from sylk.gateway.sylkrtc.fields import Headers, ValidationError
from sylk.gateway.targets import check_target

HA1 = "884edfee38ed471b8a15006700139485"
# What each kind of control character looks like: C0 (CR, LF, NUL, ESC, TAB), DEL, C1 (NEL), the Unicode line and
# paragraph separators, and a lone surrogate (valid JSON, not encodable as UTF-8).
CONTROLS = ("\r", "\n", "\r\n", "\x00", "\x1b", "\t", "\x7f", "\x85", "\u2028", "\u2029")


class InjectionTestCase(SynchronousTestCase):
    def assertRefused(self, cls: type[model.Request], message: dict[str, Any], *fragments: str) -> str:
        error = str(self.assertRaises(ValidationError, cls.parse, message))
        for fragment in fragments:
            self.assertIn(fragment, error)
        return error


class HeaderTests(InjectionTestCase):
    def create(self, *headers: tuple[Any, Any]) -> dict[str, str]:
        return model.SessionCreate.parse(self.message(*headers)).headers  # type: ignore[no-any-return]

    def message(self, *headers: tuple[Any, Any]) -> dict[str, Any]:
        return {"transaction": "t", "account": "alice@example.com", "session": "s", "uri": "bob@example.com",
                "sdp": "v=0", "headers": [{"name": name, "value": value} for name, value in headers]}

    def refused(self, *headers: tuple[Any, Any]) -> str:
        return self.assertRefused(model.SessionCreate, self.message(*headers), "invalid field 'headers'")

    def test_x_headers_are_allowed_in_any_case(self) -> None:
        self.assertEqual(self.create(("X-Room", "42"), ("x-tenant", "a"), ("X-LONG.name_1+~", "b")),
                         {"X-Room": "42", "x-tenant": "a", "X-LONG.name_1+~": "b"})

    def test_the_documented_harmless_headers_are_allowed(self) -> None:
        for name in ("Subject", "Priority", "Organization", "Accept-Language", "subject", "ACCEPT-LANGUAGE"):
            self.assertEqual(self.create((name, "v")), {name: "v"})
        self.assertEqual(Headers.ALLOWED, ("Subject", "Priority", "Organization", "Accept-Language"))

    def test_headers_that_make_phones_answer_by_themselves_are_refused(self) -> None:
        self.assertIn("header Call-Info cannot be set", self.refused(("Call-Info", "<sip:x>;answer-after=0")))
        self.assertIn("header Alert-Info cannot be set", self.refused(("Alert-Info", "<x>;info=alert-autoanswer")))

    def test_lone_surrogates_are_refused_in_any_text(self) -> None:
        self.assertIn("must not contain control characters (U+D800", self.refused(("X-Name", "\ud800")))
        message = {"transaction": "t", "account": "alice@example.com", "password": HA1, "display_name": "Eve\ud800"}
        self.assertRefused(model.AccountAdd, message, "'display_name': must be valid Unicode text (no lone surrogates)")

    def test_p_asserted_identity_is_refused_as_an_identity_header(self) -> None:
        error = self.refused(("P-Asserted-Identity", "<sip:boss@example.com>"))
        self.assertIn("header P-Asserted-Identity cannot be set: identity headers", error)
        self.assertIn("only X- headers and Subject, Priority, Organization, Accept-Language "
                      "are allowed", error)

    def test_identity_headers_are_refused(self) -> None:
        for name in ("P-Preferred-Identity", "Remote-Party-ID", "Privacy", "Identity", "Referred-By", "From",
                     "p-asserted-identity", "Authorization", "User-Agent"):
            self.assertIn(f"header {name} cannot be set: identity headers", self.refused((name, "x")))

    def test_routing_and_dialog_headers_are_refused(self) -> None:
        for name in ("Replaces", "Join", "Route", "Record-Route", "Via", "Contact", "To", "Call-ID", "CSeq",
                     "Max-Forwards", "Content-Type", "Content-Length", "Refer-To", "via"):
            self.assertIn(f"header {name} cannot be set: it routes the request or makes up the dialog",
                          self.refused((name, "x")))

    def test_every_compact_form_is_refused(self) -> None:
        for name in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":  # f, t, i, m, v, s (Subject), ...
            self.assertIn(f"header {name} cannot be set: compact header forms are not allowed",
                          self.refused((name, "sip:boss@example.com")))

    def test_any_other_header_is_refused(self) -> None:
        for name in ("Foo", "P-Charging-Vector", "Reason", "Diversion", "History-Info", "Xenophobe"):
            self.assertIn(f"header {name} cannot be set: only X- headers", self.refused((name, "x")))

    def test_x_dash_alone_is_not_a_header(self) -> None:
        self.assertIn("header X- cannot be set", self.refused(("X-", "x")))

    def test_names_are_sip_tokens_of_at_most_64_characters(self) -> None:
        self.assertEqual(list(self.create(("X-" + "a" * 62, "v"))), ["X-" + "a" * 62])
        for name in ("X-" + "a" * 63, "X-A B", "X-A:", "X-A\r\nVia", "X-Ä", "", 7, None):
            self.assertIn("needs a header 'name' (a SIP token of at most 64 characters)", self.refused((name, "v")))

    def test_a_name_given_twice_is_refused_whatever_its_case(self) -> None:
        self.assertIn("header x-room is given twice (names are case-insensitive)",
                      self.refused(("X-Room", "1"), ("x-room", "2")))

    def test_values_refuse_every_control_character(self) -> None:
        for control in CONTROLS:
            error = self.refused(("X-A", f"one{control}Via: evil"))
            self.assertIn("header X-A: the value must not contain control characters (U+", error)
        self.assertIn("(U+000D at position 3)", self.refused(("X-A", "one\r\nVia: evil")))

    def test_values_may_be_any_other_text(self) -> None:
        value = "Zürich ☎ \"quoted\" \\ <sip:x@y>;p=1, ok"
        self.assertEqual(self.create(("X-A", value)), {"X-A": value})

    def test_surrounding_spaces_are_removed_and_empty_values_allowed(self) -> None:
        self.assertEqual(self.create(("X-A", "  v  "), ("X-B", ""), ("X-C", "   ")), {"X-A": "v", "X-B": "", "X-C": ""})

    def test_values_must_be_strings(self) -> None:
        for value in (None, 1, ["v"], {"v": 1}):
            self.assertIn("header X-A needs a string 'value'", self.refused(("X-A", value)))

    def test_a_header_line_janus_would_cut_is_refused(self) -> None:
        # Janus 1.1.2 prints "Name: value\r\n" into 255 bytes with its NUL: 252 for "Name: value"
        fits = "v" * (252 - len("X-A: "))
        self.assertEqual(self.create(("X-A", fits))["X-A"], fits)
        self.assertIn("header X-A is too long: 'Name: value' must be at most 252 bytes (UTF-8)",
                      self.refused(("X-A", fits + "v")))
        self.assertIn("too long", self.refused(("X-A", "é" * 124)))  # 248 bytes of value in 124 characters

    def test_all_headers_together_must_fit_in_2000_bytes(self) -> None:
        # 8 lines of "X-Hn: " + 240 bytes + CRLF = 248 bytes each: 1984; a ninth line of 16 makes exactly 2000
        headers = [(f"X-H{n}", "v" * 240) for n in range(8)]
        self.assertEqual(len(self.create(*headers, ("X-Last", "v" * 6))), 9)
        error = self.refused(*headers, ("X-Last", "v" * 7))
        self.assertIn("the headers together must be at most 2000 bytes as 'Name: value' lines (UTF-8, with line "
                      "ends), not 2001", error)

    def test_at_most_16_headers(self) -> None:
        self.assertEqual(len(self.create(*[(f"X-{n}", "v") for n in range(16)])), 16)
        self.assertIn("must have at most 16 headers", self.refused(*[(f"X-{n}", "v") for n in range(17)]))

    def test_the_answer_follows_the_same_rules(self) -> None:
        answer = {"transaction": "t", "session": "s", "sdp": "v=0"}
        self.assertEqual(model.SessionAnswer.parse({**answer, "headers": [{"name": "X-A", "value": "1"}]}).headers,
                         {"X-A": "1"})
        self.assertRefused(model.SessionAnswer, {**answer, "headers": [{"name": "f", "value": "sip:boss@x"}]},
                           "compact header forms")

    def test_the_browser_gets_the_reason_through_the_dialect(self) -> None:
        error = self.assertRaises(ValidationError, SylkRTC2().decode, {
            "sylkrtc": "session-create", **self.message(("P-Asserted-Identity", "<sip:boss@example.com>"))})
        self.assertTrue(str(error).startswith("invalid field 'headers': header P-Asserted-Identity cannot be set"))


class AccountAddTestCase(InjectionTestCase):
    def add(self, **fields: Any) -> dict[str, Any]:
        return {"transaction": "t", "account": "alice@example.com", "password": HA1, **fields}


class DisplayNameTests(AccountAddTestCase):
    def test_a_quote_closing_display_name_is_accepted_as_it_is(self) -> None:
        # the example: escaping quotes and backslashes is the SIP backend's job, not a reason to refuse
        for name in ('Eve" <sip:boss@x>;x="', 'back\\slash "quoted"', "Saúl 😀", "", " spaced "):
            self.assertEqual(model.AccountAdd.parse(self.add(display_name=name)).display_name, name)

    def test_control_characters_are_refused(self) -> None:
        for control in CONTROLS:
            self.assertRefused(model.AccountAdd, self.add(display_name=f"Eve{control}Via: x"),
                               "invalid field 'display_name': must not contain control characters (U+")
        self.assertRefused(model.AccountAdd, self.add(display_name="Eve\r\n"), "(U+000D at position 3)")
        self.assertRefused(model.AccountAdd, self.add(display_name="Eve\x00"), "(U+0000 at position 3)")

    def test_at_most_128_characters(self) -> None:
        self.assertEqual(model.AccountAdd.parse(self.add(display_name="é" * 128)).display_name, "é" * 128)
        self.assertRefused(model.AccountAdd, self.add(display_name="é" * 129), "'display_name'",
                           "at most 128 characters")


class UserAgentTests(AccountAddTestCase):
    def test_printable_ascii_is_accepted(self) -> None:
        agent = "Sylk/3.1 (Linux; x86_64) \"quoted\" \\ ~!@#$%^&*()"
        self.assertEqual(model.AccountAdd.parse(self.add(user_agent=agent)).user_agent, agent)

    def test_anything_else_is_refused(self) -> None:
        for agent in ("Sylk\r\nVia: x", "Sylk\x00", "Sylk\t1", "Sylk\x7f", "Sylk ü", "Sylk\u2028"):
            self.assertRefused(model.AccountAdd, self.add(user_agent=agent),
                               "invalid field 'user_agent': must be printable ASCII")

    def test_surrounding_spaces_are_removed_and_blank_is_refused(self) -> None:
        self.assertEqual(model.AccountAdd.parse(self.add(user_agent="  Sylk 1  ")).user_agent, "Sylk 1")
        for agent in ("", "   "):
            self.assertRefused(model.AccountAdd, self.add(user_agent=agent), "'user_agent': must not be empty")

    def test_at_most_128_characters(self) -> None:
        self.assertEqual(len(model.AccountAdd.parse(self.add(user_agent="x" * 128)).user_agent), 128)
        self.assertRefused(model.AccountAdd, self.add(user_agent="x" * 129), "at most 128 characters")


class HeaderPrefixTests(AccountAddTestCase):
    def test_prefixes_are_sip_tokens(self) -> None:
        self.assertEqual(model.AccountAdd.parse(self.add(incoming_header_prefixes=["X-", "P-Sylk", "x.y!%*_+`'~"]))
                         .incoming_header_prefixes, ("X-", "P-Sylk", "x.y!%*_+`'~"))
        for prefix in ("X-:", "X A", "X-\r\n", "X-ä", "<X>"):
            self.assertRefused(model.AccountAdd, self.add(incoming_header_prefixes=[prefix]),
                               "invalid field 'incoming_header_prefixes'", "is not a header name prefix")

    def test_the_list_rules_still_apply(self) -> None:
        for bad in (["X-", "X-"], "X-", [""], [1]):
            self.assertRefused(model.AccountAdd, self.add(incoming_header_prefixes=bad),
                               "invalid field 'incoming_header_prefixes'")


class AddressTests(InjectionTestCase):
    def parse(self, uri: str) -> str:
        return model.SessionCreate.parse(self.call(uri)).uri  # type: ignore[no-any-return]

    def call(self, uri: str) -> dict[str, Any]:
        return {"transaction": "t", "account": "alice@example.com", "session": "s", "uri": uri, "sdp": "v=0"}

    def refused(self, uri: str, *fragments: str) -> str:
        return self.assertRefused(model.SessionCreate, self.call(uri), "invalid field 'uri'", *fragments)

    def test_uri_headers_in_the_user_part_are_refused(self) -> None:
        self.refused("bob?Subject=x@example.com", "the user part must not contain '?' (URI headers)")
        self.refused("sip:bob?Priority=emergency@example.com", "'?'")

    def test_uri_parameters_in_the_user_part_are_refused(self) -> None:
        self.refused("bob;user=phone@example.com", "the user part must not contain ';' (URI parameters)")
        self.refused("bob;maddr=192.0.2.1@example.com", "';'")

    def test_escaped_control_characters_are_refused(self) -> None:
        for escape in ("%00", "%0d", "%0A", "%1f", "%1F", "%7f", "%7F"):
            self.refused(f"bob{escape}x@example.com", "escaped control characters (%00-%1F, %7F)")

    def test_other_escapes_and_user_characters_are_kept(self) -> None:
        for user in ("bob%20smith", "%e2%98%8e", "bob%3bx", "bob%3Fx", "a&b=c+d$e,f/g", "-_.!~*'()", "+31201234567"):
            self.assertEqual(self.parse(f"{user}@example.com"), f"{user}@example.com")

    def test_a_bare_or_malformed_escape_is_refused(self) -> None:
        for user in ("bob%", "bob%2", "bob%zz"):
            self.refused(f"{user}@example.com", "must be a SIP address like user@domain")

    def test_accounts_follow_the_same_rules(self) -> None:
        base = {"transaction": "t", "password": HA1}
        self.assertRefused(model.AccountAdd, {**base, "account": "alice;transport=tcp@example.com"},
                           "invalid field 'account'", "';'")
        self.assertRefused(model.AccountRegister, {**base, "account": "alice?x=y@example.com"},
                           "invalid field 'account'", "'?'")

    def test_ip_literals_are_well_formed_addresses(self) -> None:
        self.assertEqual(self.parse("bob@192.0.2.1"), "bob@192.0.2.1")
        self.assertEqual(self.parse("bob@[2001:DB8::1]"), "bob@[2001:db8::1]")
        for domain in ("127.1", "2130706433", "0x7f.0.0.1", "256.1.1.1", "01.2.3.4", "1.2.3.4.5", "[fe80::1%25eth0]",
                       "[192.0.2.1]", "example.123"):
            self.refused(f"bob@{domain}", "must be a SIP address like user@domain")

    def test_host_names_may_have_digits_except_at_the_start_of_the_last_label(self) -> None:
        for domain in ("1example.com", "sip2sip.info", "a.b9", "localhost", "x-1.example"):
            self.assertEqual(self.parse(f"bob@{domain}"), f"bob@{domain}")


class TargetPolicyTests(SynchronousTestCase):
    def refused(self, uri: str, settings: WebRTCGatewayConfig) -> str:
        return str(self.assertRaises(APIError, check_target, uri, settings))

    def test_ip_addresses_are_refused_by_default(self) -> None:
        settings = WebRTCGatewayConfig()
        self.assertEqual(self.refused("bob@192.0.2.1", settings), "IP addresses are not allowed as targets: "
                                                                   "bob@192.0.2.1")
        self.assertEqual(self.refused("bob@[2001:db8::1]", settings), "IP addresses are not allowed as targets: "
                                                                       "bob@[2001:db8::1]")

    def test_numbers_a_resolver_takes_for_addresses_count_as_addresses(self) -> None:
        # the AOR field refuses these already; the policy does not rely on it
        for uri in ("bob@127.1", "bob@2130706433", "bob@0x7f.0.0.1"):
            self.assertIn("IP addresses are not allowed", self.refused(uri, WebRTCGatewayConfig()))

    def test_ip_addresses_may_be_allowed(self) -> None:
        settings = WebRTCGatewayConfig(allow_ip_targets=True, sip_target_domains=("example.com",))
        check_target("bob@192.0.2.1", settings)  # the domain list is about names: it does not apply to addresses
        check_target("bob@[2001:db8::1]", settings)

    def test_domains_must_be_in_the_target_list(self) -> None:
        settings = WebRTCGatewayConfig(sip_target_domains=("example.com", "*.example.org"))
        check_target("bob@example.com", settings)
        check_target("bob@sip.example.org", settings)
        self.assertEqual(self.refused("bob@evil.test", settings), "SIP domain not allowed as a target: evil.test")
        self.assertEqual(self.refused("bob@example.org", settings), "SIP domain not allowed as a target: "
                                                                     "example.org")
        self.assertEqual(self.refused("bob@example.com.evil.test", settings),
                         "SIP domain not allowed as a target: example.com.evil.test")

    def test_any_domain_by_default(self) -> None:
        check_target("bob@anywhere.example", WebRTCGatewayConfig())


class ConfiguredUserAgentTests(SynchronousTestCase):
    def parse(self, value: str) -> str:
        return parse_config(f"[WebRTCGateway]\nuser_agent = {value}\n").gateway.user_agent

    def refused(self, value: str) -> str:
        return str(self.assertRaises(ConfigError, self.parse, value))

    def test_printable_ascii_up_to_128_characters(self) -> None:
        self.assertEqual(self.parse("  My Gateway/1.0 (\"x\")  "), "My Gateway/1.0 (\"x\")")
        self.assertEqual(self.parse("x" * 128), "x" * 128)

    def test_anything_else_is_refused(self) -> None:
        self.assertIn("bad value for [WebRTCGateway] user_agent: expected printable ASCII",
                      self.refused("Gateway ünïcode"))
        self.assertIn("expected printable ASCII", self.refused("Gateway\x01"))
        self.assertIn("expected printable ASCII", self.refused("Gateway\n  continued"))  # an .ini continuation line
        self.assertIn("expected at most 128 characters, got 129", self.refused("x" * 129))
        self.assertIn("must not be empty", self.refused(""))
