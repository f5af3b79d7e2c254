"""Unit tests for sylk.gateway.config: .ini text into frozen dataclasses, every mistake a ConfigError."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import FrozenInstanceError
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway import __version__
from sylk.gateway.config import (
    Config,
    ConfigError,
    JanusConfig,
    PortRange,
    SIPProxy,
    WebRTCGatewayConfig,
    WebServerConfig,
    load_config,
    parse_config,
)


class TempPaths:
    """Fresh paths in a private temporary directory (trial's mktemp would litter the working directory)."""

    def temp_path(self) -> str:
        directory = tempfile.mkdtemp(prefix="sylkgateway-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "temp")


def ini(section: str, **options: str) -> str:
    """One section of an .ini file."""
    return f"[{section}]\n" + "".join(f"{name} = {value}\n" for name, value in options.items())


class ConfigErrorAssertions:
    def assertConfigError(self, text: str, *fragments: str) -> ConfigError:
        error = self.assertRaises(ConfigError, parse_config, text)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def assertBadOption(self, section: str, option: str, value: str) -> ConfigError:
        """The value is refused and the message names `[Section] option`."""
        return self.assertConfigError(ini(section, **{option: value}), f"[{section}] {option}")


class DefaultsTests(SynchronousTestCase):
    def test_empty_text_gives_all_defaults(self) -> None:
        self.assertEqual(parse_config(""), Config())

    def test_comments_and_blank_lines_only_give_all_defaults(self) -> None:
        self.assertEqual(parse_config("# a comment\n\n; another\n"), Config())

    def test_empty_sections_give_all_defaults(self) -> None:
        self.assertEqual(parse_config("[WebServer]\n[WebRTCGateway]\n[Janus]\n"), Config())

    def test_web_server_defaults(self) -> None:
        web = parse_config("").web_server
        self.assertEqual(web.local_ip, "127.0.0.1")
        self.assertEqual(web.local_port, 10888)
        self.assertIsNone(web.certificate)
        self.assertEqual((web.metrics_ip, web.metrics_port), ("127.0.0.1", 0))

    def test_gateway_defaults(self) -> None:
        gateway = parse_config("").gateway
        self.assertEqual(gateway.web_origins, ("*",))
        self.assertEqual(gateway.sip_domains, ("*",))
        self.assertIsNone(gateway.outbound_sip_proxy)
        self.assertEqual(gateway.websocket_ping_interval, 120.0)
        self.assertIs(gateway.trace_client, False)
        self.assertEqual(gateway.max_message_size, 65536)
        self.assertEqual(gateway.max_accounts_per_connection, 20)
        self.assertEqual(gateway.register_ttl, 600)
        self.assertEqual(gateway.register_timeout, 45.0)
        self.assertEqual(gateway.user_agent, f"sylkgateway {__version__}")

    def test_janus_defaults(self) -> None:
        janus = parse_config("").janus
        self.assertIs(janus.spawn, True)
        self.assertEqual(janus.binary, Path("/usr/bin/janus"))
        self.assertIsNone(janus.library_dir)
        self.assertIsNone(janus.runtime_dir)
        self.assertEqual(janus.api_url, "ws://127.0.0.1:8188")
        self.assertEqual(janus.api_secret, "")
        self.assertIsNone(janus.interface)
        self.assertEqual(janus.rtp_port_range, PortRange(20000, 29999))
        self.assertEqual(janus.sip_rtp_port_range, PortRange(30000, 39999))
        self.assertEqual(janus.sip_transaction_timeout, 32)
        self.assertEqual(janus.request_timeout, 30.0)
        self.assertEqual(janus.max_open_files, 65536)
        self.assertEqual(janus.log_level, 3)
        self.assertIs(janus.trace_janus, False)

    def test_default_port_ranges_do_not_overlap(self) -> None:
        janus = JanusConfig()
        self.assertLess(janus.rtp_port_range.last, janus.sip_rtp_port_range.first)

    def test_config_is_frozen(self) -> None:
        config = parse_config("")
        self.assertRaises(FrozenInstanceError, setattr, config.web_server, "local_port", 1)

    def test_unset_options_keep_their_defaults_next_to_set_ones(self) -> None:
        config = parse_config(ini("WebServer", local_port="8080"))
        self.assertEqual(config.web_server.local_port, 8080)
        self.assertEqual(config.web_server.local_ip, "127.0.0.1")
        self.assertEqual(config.gateway, WebRTCGatewayConfig())
        self.assertEqual(config.janus, JanusConfig())


class StructureTests(ConfigErrorAssertions, SynchronousTestCase):
    def test_unknown_section_is_an_error_naming_it(self) -> None:
        self.assertConfigError("[Bogus]\n", "[Bogus]")

    def test_section_names_are_case_sensitive(self) -> None:
        self.assertConfigError("[webserver]\nlocal_port = 8080\n", "[webserver]")

    def test_default_section_is_an_unknown_section(self) -> None:
        # configparser hides [DEFAULT] from sections() and merges its options into every other section; the gateway
        # documents no such section, so its options must not be silently ignored (or silently applied).
        self.assertConfigError("[DEFAULT]\nlocal_port = 8080\n", "DEFAULT")

    def test_unknown_option_is_an_error_naming_section_and_option(self) -> None:
        self.assertConfigError(ini("WebServer", bogus="1"), "[WebServer] bogus")

    def test_option_from_another_section_is_unknown(self) -> None:
        self.assertConfigError(ini("Janus", local_port="8080"), "[Janus] local_port")

    def test_option_names_are_case_sensitive(self) -> None:
        self.assertConfigError(ini("WebServer", Local_Port="8080"), "[WebServer] Local_Port")

    def test_option_outside_any_section_is_an_error(self) -> None:
        self.assertConfigError("local_port = 8080\n")

    def test_duplicate_option_is_an_error(self) -> None:
        self.assertConfigError("[WebServer]\nlocal_port = 1\nlocal_port = 2\n", "local_port")

    def test_duplicate_section_is_an_error(self) -> None:
        self.assertConfigError("[WebServer]\n[WebServer]\n", "WebServer")

    def test_line_that_is_not_an_option_is_an_error(self) -> None:
        self.assertConfigError("[WebServer]\nthis is not an option\n")

    def test_error_names_the_source(self) -> None:
        error = self.assertRaises(ConfigError, parse_config, "[Bogus]\n", "my.ini")
        self.assertIn("my.ini", str(error))

    def test_inline_comments_are_stripped(self) -> None:
        config = parse_config("[WebServer]\nlocal_port = 8080 ; the port\n[Janus]\nlog_level = 5 # chatty\n")
        self.assertEqual(config.web_server.local_port, 8080)
        self.assertEqual(config.janus.log_level, 5)

    def test_percent_signs_are_not_interpolated(self) -> None:
        config = parse_config(ini("Janus", api_secret="50%(x)s"))
        self.assertEqual(config.janus.api_secret, "50%(x)s")


class WebServerTests(ConfigErrorAssertions, TempPaths, SynchronousTestCase):
    def test_local_ip_v4(self) -> None:
        self.assertEqual(parse_config(ini("WebServer", local_ip="0.0.0.0")).web_server.local_ip, "0.0.0.0")

    def test_local_ip_v6_is_normalised(self) -> None:
        config = parse_config(ini("WebServer", local_ip="0:0:0:0:0:0:0:1"))
        self.assertEqual(config.web_server.local_ip, "::1")

    def test_local_ip_hostname_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_ip", "localhost")

    def test_local_ip_empty_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_ip", "")

    def test_local_port(self) -> None:
        self.assertEqual(parse_config(ini("WebServer", local_port="443")).web_server.local_port, 443)

    def test_local_port_bounds(self) -> None:
        self.assertEqual(parse_config(ini("WebServer", local_port="1")).web_server.local_port, 1)
        self.assertEqual(parse_config(ini("WebServer", local_port="65535")).web_server.local_port, 65535)

    def test_local_port_zero_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_port", "0")

    def test_local_port_too_large_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_port", "65536")

    def test_local_port_not_a_number_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_port", "http")

    def test_local_port_fraction_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_port", "80.5")

    def test_local_port_empty_is_refused(self) -> None:
        self.assertBadOption("WebServer", "local_port", "")

    def test_certificate_existing_file(self) -> None:
        path = Path(self.temp_path())
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        config = parse_config(ini("WebServer", certificate=str(path)))
        self.assertEqual(config.web_server.certificate, path)

    def test_certificate_missing_file_is_refused(self) -> None:
        error = self.assertBadOption("WebServer", "certificate", "/nonexistent/cert.pem")
        self.assertIn("/nonexistent/cert.pem", str(error))

    def test_certificate_directory_is_refused(self) -> None:
        directory = self.temp_path()
        os.mkdir(directory)
        self.assertBadOption("WebServer", "certificate", directory)

    def test_certificate_empty_means_unset(self) -> None:
        self.assertIsNone(parse_config(ini("WebServer", certificate="")).web_server.certificate)


class GatewayTests(ConfigErrorAssertions, SynchronousTestCase):
    def test_web_origins_keep_their_case_and_order(self) -> None:
        config = parse_config(ini("WebRTCGateway", web_origins="https://App.Example.com, https://*.example.org"))
        self.assertEqual(config.gateway.web_origins, ("https://App.Example.com", "https://*.example.org"))

    def test_web_origins_split_on_whitespace_and_commas(self) -> None:
        config = parse_config(ini("WebRTCGateway", web_origins="https://a.com  https://b.com,https://c.com"))
        self.assertEqual(config.gateway.web_origins, ("https://a.com", "https://b.com", "https://c.com"))

    def test_web_origins_empty_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "web_origins", "")

    def test_web_origins_only_separators_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "web_origins", ", ,")

    def test_sip_domains_are_lower_cased(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="Example.COM, sip2sip.info"))
        self.assertEqual(config.gateway.sip_domains, ("example.com", "sip2sip.info"))

    def test_sip_domains_empty_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "sip_domains", "")

    def test_outbound_sip_proxy(self) -> None:
        config = parse_config(ini("WebRTCGateway", outbound_sip_proxy="proxy.example.com:5061;transport=tls"))
        self.assertEqual(config.gateway.outbound_sip_proxy, SIPProxy("proxy.example.com", 5061, "tls"))

    def test_outbound_sip_proxy_empty_means_unset(self) -> None:
        self.assertIsNone(parse_config(ini("WebRTCGateway", outbound_sip_proxy="")).gateway.outbound_sip_proxy)

    def test_outbound_sip_proxy_bad_transport_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "outbound_sip_proxy", "proxy.example.com;transport=sctp")

    def test_outbound_sip_proxy_bad_port_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "outbound_sip_proxy", "proxy.example.com:70000")

    def test_websocket_ping_interval(self) -> None:
        config = parse_config(ini("WebRTCGateway", websocket_ping_interval="30.5"))
        self.assertEqual(config.gateway.websocket_ping_interval, 30.5)

    def test_websocket_ping_interval_zero_is_allowed(self) -> None:
        config = parse_config(ini("WebRTCGateway", websocket_ping_interval="0"))
        self.assertEqual(config.gateway.websocket_ping_interval, 0.0)

    def test_websocket_ping_interval_negative_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "websocket_ping_interval", "-1")

    def test_websocket_ping_interval_too_large_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "websocket_ping_interval", "86401")

    def test_websocket_ping_interval_not_a_number_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "websocket_ping_interval", "2 minutes")

    def test_seconds_nan_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "register_timeout", "nan")

    def test_seconds_infinity_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "register_timeout", "inf")

    def test_booleans_true(self) -> None:
        for text in ("1", "yes", "true", "on", "YES", "True", "On"):
            config = parse_config(ini("WebRTCGateway", trace_client=text))
            self.assertIs(config.gateway.trace_client, True, text)

    def test_booleans_false(self) -> None:
        for text in ("0", "no", "false", "off", "NO", "False", "OFF"):
            config = parse_config(ini("WebRTCGateway", trace_client=text))
            self.assertIs(config.gateway.trace_client, False, text)

    def test_boolean_other_word_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "trace_client", "maybe")

    def test_boolean_empty_is_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "trace_client", "")

    def test_max_message_size_bounds(self) -> None:
        self.assertEqual(parse_config(ini("WebRTCGateway", max_message_size="1024")).gateway.max_message_size, 1024)
        self.assertBadOption("WebRTCGateway", "max_message_size", "1023")
        self.assertBadOption("WebRTCGateway", "max_message_size", str(16 * 1024 * 1024 + 1))

    def test_max_accounts_per_connection_bounds(self) -> None:
        config = parse_config(ini("WebRTCGateway", max_accounts_per_connection="1"))
        self.assertEqual(config.gateway.max_accounts_per_connection, 1)
        self.assertBadOption("WebRTCGateway", "max_accounts_per_connection", "0")
        self.assertBadOption("WebRTCGateway", "max_accounts_per_connection", "10001")

    def test_register_ttl_bounds(self) -> None:
        self.assertEqual(parse_config(ini("WebRTCGateway", register_ttl="60")).gateway.register_ttl, 60)
        self.assertEqual(parse_config(ini("WebRTCGateway", register_ttl="86400")).gateway.register_ttl, 86400)
        self.assertBadOption("WebRTCGateway", "register_ttl", "59")
        self.assertBadOption("WebRTCGateway", "register_ttl", "86401")

    def test_register_timeout_bounds(self) -> None:
        text = ini("WebRTCGateway", register_timeout="1.5") + ini("Janus", sip_transaction_timeout="1")
        self.assertEqual(parse_config(text).gateway.register_timeout, 1.5)
        self.assertBadOption("WebRTCGateway", "register_timeout", "0.5")
        self.assertBadOption("WebRTCGateway", "register_timeout", "3601")

    def test_user_agent_is_stripped_text(self) -> None:
        config = parse_config(ini("WebRTCGateway", user_agent="My Gateway 1.0  "))
        self.assertEqual(config.gateway.user_agent, "My Gateway 1.0")


class CrossOptionTests(SynchronousTestCase, ConfigErrorAssertions):
    def test_gateway_must_wait_longer_than_sip(self) -> None:
        self.assertConfigError(ini("WebRTCGateway", register_timeout="30") + ini("Janus", sip_transaction_timeout="32"),
                               "[WebRTCGateway] register_timeout", "[Janus] sip_transaction_timeout")

    def test_empty_user_agent_and_binary_are_refused(self) -> None:
        self.assertBadOption("WebRTCGateway", "user_agent", "")
        self.assertBadOption("Janus", "binary", "")

    def test_byte_order_mark_is_tolerated(self) -> None:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        (folder / "bom.ini").write_bytes("\ufeff[WebRTCGateway]\nregister_ttl = 300\n".encode("utf-8"))
        self.assertEqual(load_config(folder / "bom.ini").gateway.register_ttl, 300)


class DomainAllowedTests(SynchronousTestCase):
    def test_wildcard_patterns(self) -> None:
        settings = WebRTCGatewayConfig(sip_domains=("*.example.com", "sylk.test"))
        self.assertTrue(settings.domain_allowed("pbx.example.com"))
        self.assertTrue(settings.domain_allowed("SYLK.test"))
        self.assertFalse(settings.domain_allowed("example.com"))
        self.assertFalse(settings.domain_allowed("evil.net"))

    def test_wildcard_allows_any_domain(self) -> None:
        self.assertTrue(WebRTCGatewayConfig().domain_allowed("anything.example"))

    def test_wildcard_among_names_allows_any_domain(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="example.com *"))
        self.assertTrue(config.gateway.domain_allowed("other.org"))

    def test_listed_domain_is_allowed(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="example.com, sip2sip.info"))
        self.assertTrue(config.gateway.domain_allowed("sip2sip.info"))

    def test_unlisted_domain_is_refused(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="example.com"))
        self.assertFalse(config.gateway.domain_allowed("example.org"))

    def test_subdomain_is_not_implied(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="example.com"))
        self.assertFalse(config.gateway.domain_allowed("sub.example.com"))

    def test_comparison_ignores_case(self) -> None:
        config = parse_config(ini("WebRTCGateway", sip_domains="Example.com"))
        self.assertTrue(config.gateway.domain_allowed("EXAMPLE.COM"))


class JanusTests(ConfigErrorAssertions, SynchronousTestCase):
    def test_paths(self) -> None:
        config = parse_config(ini("Janus", binary="/opt/janus/bin/janus", library_dir="/opt/janus/lib/janus",
                                  runtime_dir="/run/sylkgateway"))
        self.assertEqual(config.janus.binary, Path("/opt/janus/bin/janus"))
        self.assertEqual(config.janus.library_dir, Path("/opt/janus/lib/janus"))
        self.assertEqual(config.janus.runtime_dir, Path("/run/sylkgateway"))

    def test_empty_optional_paths_mean_unset(self) -> None:
        config = parse_config(ini("Janus", library_dir="", runtime_dir=""))
        self.assertIsNone(config.janus.library_dir)
        self.assertIsNone(config.janus.runtime_dir)

    def test_spawn_no(self) -> None:
        self.assertIs(parse_config(ini("Janus", spawn="no")).janus.spawn, False)

    def test_api_url_ws_and_wss(self) -> None:
        self.assertEqual(parse_config(ini("Janus", api_url="ws://10.0.0.1:8188")).janus.api_url, "ws://10.0.0.1:8188")
        self.assertEqual(parse_config(ini("Janus", api_url="wss://janus.example.com/ws")).janus.api_url,
                         "wss://janus.example.com/ws")

    def test_api_url_ipv6(self) -> None:
        self.assertEqual(parse_config(ini("Janus", api_url="ws://[::1]:8188")).janus.api_url, "ws://[::1]:8188")

    def test_api_url_http_is_refused(self) -> None:
        self.assertBadOption("Janus", "api_url", "http://127.0.0.1:8088/janus")

    def test_api_url_without_host_is_refused(self) -> None:
        self.assertBadOption("Janus", "api_url", "ws://")

    def test_api_url_not_a_url_is_refused(self) -> None:
        self.assertBadOption("Janus", "api_url", "127.0.0.1:8188")

    def test_api_secret(self) -> None:
        self.assertEqual(parse_config(ini("Janus", api_secret="s3cr3t")).janus.api_secret, "s3cr3t")

    def test_interface(self) -> None:
        self.assertEqual(parse_config(ini("Janus", interface="192.0.2.1")).janus.interface, "192.0.2.1")

    def test_interface_empty_means_unset(self) -> None:
        self.assertIsNone(parse_config(ini("Janus", interface="")).janus.interface)

    def test_interface_name_is_refused(self) -> None:
        self.assertBadOption("Janus", "interface", "eth0")

    def test_metrics_listener(self) -> None:
        web = parse_config(ini("WebServer", metrics_ip="::1", metrics_port="9108")).web_server
        self.assertEqual((web.metrics_ip, web.metrics_port), ("::1", 9108))

    def test_bad_metrics_listener_is_refused(self) -> None:
        self.assertBadOption("WebServer", "metrics_port", "65536")
        self.assertBadOption("WebServer", "metrics_port", "-1")
        self.assertBadOption("WebServer", "metrics_ip", "localhost")

    def test_metrics_port_must_differ_from_local_port(self) -> None:
        self.assertConfigError(ini("WebServer", local_port="9108", metrics_port="9108"),
                               "[WebServer] metrics_port (9108) must differ from local_port")

    def test_port_ranges(self) -> None:
        config = parse_config(ini("Janus", rtp_port_range="10000-10999", sip_rtp_port_range="11000 - 11999"))
        self.assertEqual(config.janus.rtp_port_range, PortRange(10000, 10999))
        self.assertEqual(config.janus.sip_rtp_port_range, PortRange(11000, 11999))

    def test_bad_port_range_is_refused(self) -> None:
        self.assertBadOption("Janus", "rtp_port_range", "20000")
        self.assertBadOption("Janus", "sip_rtp_port_range", "40000-30000")

    def test_overlapping_port_ranges_are_refused(self) -> None:
        text = ini("Janus", rtp_port_range="20000-30000", sip_rtp_port_range="30000-39999")
        self.assertConfigError(text, "[Janus] rtp_port_range", "sip_rtp_port_range", "20000-30000", "30000-39999")

    def test_contained_port_range_is_refused(self) -> None:
        text = ini("Janus", rtp_port_range="20000-40000", sip_rtp_port_range="30000-31000")
        self.assertConfigError(text, "[Janus] rtp_port_range")

    def test_overlap_with_the_default_range_is_refused(self) -> None:
        self.assertConfigError(ini("Janus", rtp_port_range="35000-45000"), "[Janus] rtp_port_range")

    def test_identical_port_ranges_are_refused(self) -> None:
        text = ini("Janus", rtp_port_range="20000-20000", sip_rtp_port_range="20000-20000")
        self.assertConfigError(text, "[Janus] rtp_port_range")

    def test_adjacent_port_ranges_are_allowed(self) -> None:
        config = parse_config(ini("Janus", rtp_port_range="20000-20999", sip_rtp_port_range="21000-21999"))
        self.assertEqual(config.janus.sip_rtp_port_range, PortRange(21000, 21999))

    def test_sip_range_below_rtp_range_is_allowed(self) -> None:
        config = parse_config(ini("Janus", rtp_port_range="40000-49999", sip_rtp_port_range="30000-39999"))
        self.assertEqual(config.janus.rtp_port_range, PortRange(40000, 49999))

    def test_overlap_is_ignored_when_janus_is_not_spawned(self) -> None:
        config = parse_config(ini("Janus", spawn="no", rtp_port_range="20000-30000", sip_rtp_port_range="30000-39999"))
        self.assertIs(config.janus.spawn, False)

    def test_integer_bounds(self) -> None:
        self.assertBadOption("Janus", "sip_transaction_timeout", "0")
        self.assertBadOption("Janus", "sip_transaction_timeout", "301")
        self.assertBadOption("Janus", "max_open_files", "1023")
        self.assertBadOption("Janus", "max_open_files", "1048577")
        self.assertBadOption("Janus", "log_level", "-1")
        self.assertBadOption("Janus", "log_level", "8")

    def test_integer_values(self) -> None:
        config = parse_config(ini("Janus", sip_transaction_timeout="300", max_open_files="1024", log_level="0")
                              + ini("WebRTCGateway", register_timeout="310"))
        self.assertEqual(config.janus.sip_transaction_timeout, 300)
        self.assertEqual(config.janus.max_open_files, 1024)
        self.assertEqual(config.janus.log_level, 0)

    def test_request_timeout_bounds(self) -> None:
        self.assertEqual(parse_config(ini("Janus", request_timeout="600")).janus.request_timeout, 600.0)
        self.assertBadOption("Janus", "request_timeout", "0")
        self.assertBadOption("Janus", "request_timeout", "601")

    def test_trace_janus(self) -> None:
        self.assertIs(parse_config(ini("Janus", trace_janus="yes")).janus.trace_janus, True)


class SIPProxyTests(SynchronousTestCase):
    def test_host_only_defaults_to_udp_without_port(self) -> None:
        self.assertEqual(SIPProxy.parse("proxy.example.com"), SIPProxy("proxy.example.com", None, "udp"))

    def test_host_and_port(self) -> None:
        self.assertEqual(SIPProxy.parse("proxy.example.com:5070"), SIPProxy("proxy.example.com", 5070, "udp"))

    def test_transport(self) -> None:
        for transport in ("udp", "tcp", "tls"):
            self.assertEqual(SIPProxy.parse(f"proxy.example.com;transport={transport}").transport, transport)

    def test_transport_is_lower_cased(self) -> None:
        self.assertEqual(SIPProxy.parse("proxy.example.com;transport=TLS").transport, "tls")

    def test_host_port_and_transport(self) -> None:
        self.assertEqual(SIPProxy.parse("10.0.0.1:5061;transport=tls"), SIPProxy("10.0.0.1", 5061, "tls"))

    def test_sip_and_sips_scheme_are_accepted(self) -> None:
        self.assertEqual(SIPProxy.parse("sip:proxy.example.com:5060"), SIPProxy("proxy.example.com", 5060))
        self.assertEqual(SIPProxy.parse("sips:proxy.example.com"), SIPProxy("proxy.example.com", transport="tls"))
        self.assertEqual(SIPProxy.parse("sips:proxy.example.com;transport=tcp"),
                         SIPProxy("proxy.example.com", transport="tcp"))

    def test_surrounding_whitespace_is_ignored(self) -> None:
        self.assertEqual(SIPProxy.parse("  proxy.example.com:5060  "), SIPProxy("proxy.example.com", 5060))

    def test_ipv6_in_brackets(self) -> None:
        self.assertEqual(SIPProxy.parse("[2001:db8::1]"), SIPProxy("[2001:db8::1]"))

    def test_ipv6_in_brackets_with_port_and_transport(self) -> None:
        self.assertEqual(SIPProxy.parse("[2001:db8::1]:5061;transport=tls"), SIPProxy("[2001:db8::1]", 5061, "tls"))

    def test_ipv6_without_brackets_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "2001:db8::1")

    def test_unclosed_bracket_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "[2001:db8::1:5060")

    def test_empty_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "")

    def test_port_without_host_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, ":5060")

    def test_port_zero_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "proxy.example.com:0")

    def test_port_too_large_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "proxy.example.com:65536")

    def test_port_bounds(self) -> None:
        self.assertEqual(SIPProxy.parse("p:1").port, 1)
        self.assertEqual(SIPProxy.parse("p:65535").port, 65535)

    def test_non_numeric_port_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "proxy.example.com:sip")

    def test_unknown_transport_is_refused(self) -> None:
        error = self.assertRaises(ValueError, SIPProxy.parse, "proxy.example.com;transport=ws")
        self.assertIn("ws", str(error))

    def test_other_uri_parameters_are_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "proxy.example.com;lr")

    def test_whitespace_inside_host_is_refused(self) -> None:
        self.assertRaises(ValueError, SIPProxy.parse, "proxy example.com")

    def test_str_round_trips(self) -> None:
        for text in ("proxy.example.com:5061;transport=tls", "[::1]:5060;transport=tcp", "10.0.0.1;transport=udp"):
            self.assertEqual(str(SIPProxy.parse(text)), text)
            self.assertEqual(SIPProxy.parse(str(SIPProxy.parse(text))), SIPProxy.parse(text))

    def test_str_always_names_the_transport(self) -> None:
        self.assertEqual(str(SIPProxy.parse("proxy.example.com")), "proxy.example.com;transport=udp")


class PortRangeTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(PortRange.parse("20000-29999"), PortRange(20000, 29999))

    def test_whitespace_is_allowed(self) -> None:
        self.assertEqual(PortRange.parse(" 20000 - 29999 "), PortRange(20000, 29999))

    def test_single_port(self) -> None:
        self.assertEqual(PortRange.parse("30000-30000"), PortRange(30000, 30000))

    def test_bounds(self) -> None:
        self.assertEqual(PortRange.parse("1024-65535"), PortRange(1024, 65535))

    def test_privileged_port_is_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "1023-2000")

    def test_port_above_65535_is_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "60000-65536")

    def test_reversed_range_is_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "30000-20000")

    def test_single_number_is_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "20000")

    def test_negative_numbers_are_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "-20000-30000")

    def test_words_are_refused(self) -> None:
        self.assertRaises(ValueError, PortRange.parse, "low-high")

    def test_str(self) -> None:
        self.assertEqual(str(PortRange(20000, 29999)), "20000-29999")


class LoadConfigTests(TempPaths, SynchronousTestCase):
    def test_missing_file_is_a_config_error_naming_the_path(self) -> None:
        path = self.temp_path()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn(path, str(error))

    def test_directory_is_a_config_error(self) -> None:
        path = self.temp_path()
        os.mkdir(path)
        self.assertRaises(ConfigError, load_config, path)

    def test_reads_the_file(self) -> None:
        path = Path(self.temp_path())
        path.write_text(ini("WebServer", local_port="8443"), encoding="utf-8")
        self.assertEqual(load_config(path).web_server.local_port, 8443)

    def test_accepts_a_string_path(self) -> None:
        path = self.temp_path()
        Path(path).write_text("", encoding="utf-8")
        self.assertEqual(load_config(path), Config())

    def test_reads_utf8(self) -> None:
        path = Path(self.temp_path())
        path.write_text(ini("Janus", api_secret="sécret ünïcode"), encoding="utf-8")
        self.assertEqual(load_config(path).janus.api_secret, "sécret ünïcode")

    def test_errors_name_the_file(self) -> None:
        path = Path(self.temp_path())
        path.write_text(ini("WebServer", local_port="none"), encoding="utf-8")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn(str(path), str(error))
        self.assertIn("[WebServer] local_port", str(error))

    def test_file_that_is_not_utf8_is_a_config_error(self) -> None:
        path = Path(self.temp_path())
        path.write_bytes(b"[Janus]\napi_secret = \xff\xfe\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn(str(path), str(error))


class DataclassTests(SynchronousTestCase):
    def test_config_sections_default_independently(self) -> None:
        self.assertEqual(Config().web_server, WebServerConfig())
        self.assertEqual(Config().gateway, WebRTCGatewayConfig())
        self.assertEqual(Config().janus, JanusConfig())


class SampleTests(SynchronousTestCase):
    """config.ini.sample documents every option at its default, so it must stay in step with the code."""

    sample = (Path(__file__).resolve().parents[2] / "config.ini.sample").read_text(encoding="utf-8")

    def test_sample_runs_as_is_with_the_defaults(self) -> None:
        self.assertEqual(parse_config(self.sample), Config())

    def test_sample_lists_every_option_at_its_default(self) -> None:
        import re
        uncommented = re.sub(r"^;(\w+ =)", r"\1", self.sample, flags=re.MULTILINE)
        self.assertEqual(parse_config(uncommented), Config())
        from sylk.gateway.config import _PARSERS
        for section, (_, parsers) in _PARSERS.items():
            for option in parsers:
                self.assertRegex(self.sample, rf"(?m)^;{option} =", f"[{section}] {option} missing from the sample")
