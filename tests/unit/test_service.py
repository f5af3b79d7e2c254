"""The service at start: warnings about who can reach the gateway, and the TLS certificate as a configuration error
and reloaded on SIGHUP."""

from __future__ import annotations

import shutil
import signal
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from sylk.gateway.config import Config, ConfigError, JanusConfig, WebRTCGatewayConfig, WebServerConfig
from sylk.gateway.service import LISTEN_BACKLOG, GatewayService, exposure_warnings, web_endpoint
from sylk.gateway.tls import ReloadableCertificate, tls_options

ORIGINS = ("https://phone.example.com",)


def config(local_ip: str = "127.0.0.1", certificate: Path | None = None,
           web_origins: tuple[str, ...] = ORIGINS) -> Config:
    return Config(web_server=WebServerConfig(local_ip=local_ip, certificate=certificate),
                  gateway=WebRTCGatewayConfig(web_origins=web_origins), janus=JanusConfig(spawn=False))


def temp_path(test: SynchronousTestCase) -> Path:
    """A fresh path in a private temporary folder (trial's mktemp would litter the working directory)."""
    folder = tempfile.mkdtemp(prefix="sylkgateway-test-")
    test.addCleanup(shutil.rmtree, folder, True)
    return Path(folder) / "temp"


def certificate_file(test: SynchronousTestCase) -> Path:
    """A PEM file holding a key and its self-signed certificate."""
    path = temp_path(test)
    write_certificate(path, serial=1)
    return path


def write_certificate(path: Path, serial: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.example.com")])
    now = datetime.now(timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(serial).not_valid_before(now).not_valid_after(now + timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) +
                     certificate.public_bytes(serialization.Encoding.PEM))


def tls_connection(certificate: ReloadableCertificate) -> Any:
    """The OpenSSL connection the listener would make for a new TCP connection."""
    protocol = TLSMemoryBIOFactory(certificate, False, Factory.forProtocol(Protocol)).buildProtocol(None)
    return certificate.serverConnectionForTLS(protocol)


def serial(certificate: ReloadableCertificate) -> int:
    return certificate.options.certificate.get_serial_number()


class ExposureWarningTests(SynchronousTestCase):
    def test_none_for_listed_origins_on_loopback(self) -> None:
        self.assertEqual(exposure_warnings(config()), [])
        self.assertEqual(exposure_warnings(config(local_ip="::1")), [])

    def test_any_origin(self) -> None:
        (warning,) = exposure_warnings(config(web_origins=("*",)))
        self.assertIn("[WebRTCGateway] web_origins is *: any web page may use this gateway", warning)
        (warning,) = exposure_warnings(config(web_origins=("https://phone.example.com", "*")))
        self.assertIn("web_origins is *", warning)

    def test_plain_ws_beyond_loopback(self) -> None:
        for address in ("0.0.0.0", "192.0.2.1", "::", "2001:db8::1"):
            (warning,) = exposure_warnings(config(local_ip=address))
            self.assertIn(f"[WebServer] local_ip {address} without a certificate", warning)
            self.assertIn("ws://", warning)

    def test_metrics_beyond_loopback(self) -> None:
        loopback = Config(web_server=WebServerConfig(metrics_port=9464), janus=JanusConfig(spawn=False),
                          gateway=WebRTCGatewayConfig(web_origins=ORIGINS))
        self.assertEqual(exposure_warnings(loopback), [])
        (warning,) = exposure_warnings(Config(web_server=WebServerConfig(metrics_port=9464, metrics_ip="0.0.0.0"),
                                              janus=JanusConfig(spawn=False),
                                              gateway=WebRTCGatewayConfig(web_origins=ORIGINS)))
        self.assertIn("[WebServer] metrics_ip 0.0.0.0: whoever reaches port 9464", warning)

    def test_none_for_tls_beyond_loopback(self) -> None:
        self.assertEqual(exposure_warnings(config(local_ip="0.0.0.0", certificate=certificate_file(self))), [])

    def test_the_service_logs_them_at_start(self) -> None:
        events: list[dict[str, Any]] = []
        service = GatewayService(config(local_ip="0.0.0.0", web_origins=("*",)), MemoryReactorClock())
        service.log = Logger(observer=events.append)
        service.startService()
        self.addCleanup(service.stopService)
        warnings = [event["warning"] for event in events if event["log_level"].name == "warn"]
        self.assertEqual(warnings, exposure_warnings(service.config))
        self.assertEqual(len(warnings), 2)


class CertificateTests(SynchronousTestCase):
    def test_a_usable_file(self) -> None:
        self.assertIsNotNone(tls_options(certificate_file(self)).getContext())

    def test_a_missing_file_is_a_configuration_error(self) -> None:
        missing = temp_path(self)
        with self.assertRaises(ConfigError) as raised:
            tls_options(missing)
        self.assertEqual(str(raised.exception),
                         f"[WebServer] certificate: cannot read {missing}: No such file or directory")

    def test_an_unreadable_file_is_a_configuration_error(self) -> None:
        folder = temp_path(self)
        folder.mkdir()  # unreadable as a file even for root, unlike a file without read permission
        with self.assertRaises(ConfigError) as raised:
            tls_options(folder)
        self.assertIn("[WebServer] certificate: cannot read", str(raised.exception))

    def test_a_file_without_a_key_and_certificate_is_a_configuration_error(self) -> None:
        garbage = temp_path(self)
        garbage.write_text("not a certificate\n")
        with self.assertRaises(ConfigError) as raised:
            tls_options(garbage)
        self.assertIn("[WebServer] certificate: cannot load a certificate and its key", str(raised.exception))

    def test_a_key_that_does_not_match_the_certificate_is_a_configuration_error(self) -> None:
        # what a renewal caught halfway (new key, old certificate) looks like
        path, other = certificate_file(self), certificate_file(self)
        key, certificate = path.read_bytes(), other.read_bytes()
        begin = b"-----BEGIN CERTIFICATE"
        path.write_bytes(key[:key.index(begin)] + certificate[certificate.index(begin):])
        with self.assertRaises(ConfigError) as raised:
            tls_options(path)
        self.assertIn("cannot load a certificate and its key", str(raised.exception))

    def test_the_service_refuses_to_start_with_it(self) -> None:
        with self.assertRaises(ConfigError):
            GatewayService(config(certificate=temp_path(self)), MemoryReactorClock())


class ThreadedMemoryReactor(MemoryReactorClock):
    """callFromThread, which the SIGHUP handler uses, as the next turn of the clock."""

    def callFromThread(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        self.callLater(0, callable, *args, **kwargs)


class ReloadTests(SynchronousTestCase):
    def test_new_connections_use_the_renewed_certificate(self) -> None:
        path = certificate_file(self)
        certificate = ReloadableCertificate(path)
        before = tls_connection(certificate)
        write_certificate(path, serial=2)
        self.assertTrue(certificate.reload())
        self.assertEqual(serial(certificate), 2)
        after = tls_connection(certificate)
        self.assertIsNot(after.get_context(), before.get_context())
        self.assertIs(after.get_context(), certificate.options.getContext())

    def test_a_renewal_that_cannot_be_loaded_keeps_the_old_certificate(self) -> None:
        path = certificate_file(self)
        certificate = ReloadableCertificate(path)
        events: list[dict[str, Any]] = []
        certificate.log = Logger(observer=events.append)
        context = certificate.options.getContext()
        path.write_text("half a certificate\n")
        self.assertFalse(certificate.reload())
        self.assertIs(tls_connection(certificate).get_context(), context)
        self.assertEqual(serial(certificate), 1)
        (event,) = events
        self.assertEqual(event["log_level"].name, "error")
        self.assertIn("cannot load a certificate and its key", str(event["error"]))
        path.unlink()
        self.assertFalse(certificate.reload())
        self.assertIs(tls_connection(certificate).get_context(), context)

    def test_sighup_reloads_it_and_keeps_the_previous_handler(self) -> None:
        earlier: list[int] = []
        previous = signal.signal(signal.SIGHUP, lambda signum, frame: earlier.append(signum))
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        installed = signal.getsignal(signal.SIGHUP)
        path = certificate_file(self)
        reactor = ThreadedMemoryReactor()
        service = GatewayService(config(certificate=path), reactor)
        service.startService()
        write_certificate(path, serial=2)
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)  # as the signal would, without risking this process on a missing handler
        self.assertEqual(earlier, [signal.SIGHUP])
        assert service.certificate is not None
        self.assertEqual(serial(service.certificate), 1)  # not inside the signal handler
        reactor.advance(0)
        self.assertEqual(serial(service.certificate), 2)
        service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), installed)

    def test_sighup_without_a_certificate_does_not_stop_the_gateway(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        reactor = ThreadedMemoryReactor()
        service = GatewayService(config(), reactor)
        events: list[dict[str, Any]] = []
        service.log = Logger(observer=events.append)
        service.startService()
        self.addCleanup(service.stopService)
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        reactor.advance(0)
        self.assertIn("SIGHUP: nothing to reload", [event["log_format"] for event in events][-1])


class ListenerTests(SynchronousTestCase):
    def test_a_burst_of_browsers_fits_in_the_listen_queue(self) -> None:
        # Twisted's default backlog (50) dropped browsers opening at once; each dropped SYN costs a second's retry
        for certificate in (None, ReloadableCertificate(certificate_file(self))):
            reactor = MemoryReactorClock()
            web_endpoint(reactor, WebServerConfig(local_port=10888), certificate).listen(Site(Resource()))
            listened = reactor.tcpServers or reactor.sslServers
            self.assertEqual(listened[0][-2], LISTEN_BACKLOG)  # (port, factory, [context,] backlog, interface)
