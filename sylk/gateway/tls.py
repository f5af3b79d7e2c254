"""The web listener's TLS certificate, which can be renewed without a restart: on SIGHUP the gateway reads
`[WebServer] certificate` again, and handshakes from then on use what it holds. Established connections keep the
context they were made with (an OpenSSL connection holds its own reference to it)."""

from __future__ import annotations

import re
from datetime import timezone
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from sylk.gateway.config import ConfigError


def tls_options(path: Path) -> ssl.CertificateOptions:
    """TLS settings from one PEM file holding the key, the certificate and optionally its chain. The OpenSSL
    context is made here, so whatever OpenSSL refuses is refused now (at startup, or with the old certificate kept
    on a reload), not at every handshake."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"[WebServer] certificate: cannot read {path}: {e.strerror}") from None
    try:
        certificate = ssl.PrivateCertificate.loadPEM(pem)
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks[1:]]
        options = ssl.CertificateOptions(privateKey=certificate.privateKey.original, certificate=certificate.original,
                                         extraCertChain=chain)
        options.getContext()
    except Exception as e:
        raise ConfigError(f"[WebServer] certificate: cannot load a certificate and its key from {path}: {e}") from None
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableCertificate:
    """What the TLS listener makes its connections with: the options of the file as last loaded successfully."""

    log = Logger()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.options = tls_options(path)  # at startup a bad file is a configuration error

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        make = getattr(self.options, "serverConnectionForTLS", None)
        if make is not None:
            return make(tlsProtocol)
        # Twisted before 23.8 (Debian 12 has 22.4): CertificateOptions is only a context factory, and this is what
        # its TLS listener does with one (ALPN, if any, is set on the context).
        return SSL.Connection(self.options.getContext(), None)

    def reload(self) -> bool:
        """Read the file again; if it cannot be used, keep the current certificate (and say so)."""
        try:
            options = tls_options(self.path)
        except ConfigError as e:
            self.log.error("{error}; still using the previous certificate", error=e)
            return False
        self.options = options
        assert options.certificate is not None  # tls_options always gives one
        certificate = options.certificate.to_cryptography()
        # not_valid_after_utc since cryptography 42 (Debian 12 has 38, whose naive not_valid_after is in UTC).
        expiry = getattr(certificate, "not_valid_after_utc", None) or \
            certificate.not_valid_after.replace(tzinfo=timezone.utc)
        self.log.info("[WebServer] certificate reloaded from {path}: serial {serial:#x}, valid until {expiry}",
                      path=self.path, serial=certificate.serial_number,
                      expiry=expiry.isoformat())
        return True
