"""End-to-end behaviour of the real gateway process and its real Janus that needs no SIP registrar: the WebSocket
handshake, bad input on a real socket, Janus dying (spawned) or going away (external), TLS, startup errors."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from sylk.gateway.config import parse_config
from tests.integration.gateway import TWISTD, Gateway, eventually
from tests.integration.janus_admin import JanusAdmin
from tests.integration.rawjanus import free_tcp_port, write_janus_config

ALICE = "alice@sylk.test"
HA1 = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def gateway(netns: str, tmp_path: Path):
    with Gateway(tmp_path) as gateway:
        yield gateway


def test_handshake_without_our_subprotocol_is_refused_with_406(gateway: Gateway) -> None:
    for offered in ([], ["sylkRTC-2-typo"], ["chat"]):
        with pytest.raises(InvalidStatus) as refused:
            connect(gateway.url, subprotocols=offered or None, open_timeout=5)
        assert refused.value.response.status_code == 406


def test_the_server_selects_sylkrtc_1(gateway: Gateway) -> None:
    client = gateway.connect(subprotocols=("other", "sylkRTC-1"))
    assert client.ws.subprotocol == "sylkRTC-1"
    client.close()


def test_bad_input_gets_errors_and_leaves_the_connection_usable(gateway: Gateway) -> None:
    client = gateway.connect()
    bad = [
        ("not json", "Invalid JSON"),
        ("[1, 2]", "A message must be a JSON object"),
        (json.dumps({"transaction": "x1"}), "Missing 'sylkrtc' key"),
        (json.dumps({"sylkrtc": "fly", "transaction": "x2"}), "unknown request type 'fly'"),
        (json.dumps({"sylkrtc": "add_account", "transaction": "x3", "account": ALICE, "password": "secret"}),
         "must be an HA1"),
        (json.dumps({"sylkrtc": "add_account", "transaction": "x4", "account": "alice", "password": HA1}),
         "must be a SIP address"),
        (b"\x00\x01binary", "Binary messages are not supported"),
        ("x" * 70000, "Message too large"),
    ]
    for frame, reason in bad:
        client.send(frame)
        sent = json.loads(frame) if isinstance(frame, str) and frame.startswith("{") else {}
        answer = client.answer(sent.get("transaction"))
        assert answer["sylkrtc"] == "error"
        assert reason in answer["error"], (frame[:40], answer)
    assert client.request("add_account", account=ALICE, password=HA1) == {"sylkrtc": "ack", "transaction": "t1"}
    # a frame beyond the hard limit is not even read: the socket is closed with 1009
    client.send("y" * 300000)
    assert client.wait_closed()[0] == 1009
    # and nobody else noticed
    other = gateway.connect()
    assert other.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"
    other.close()


def test_web_origins_limit_which_pages_may_connect(netns: str, tmp_path: Path) -> None:
    with Gateway(tmp_path, {"WebRTCGateway": {"web_origins": "https://phone.example.com"}}) as gateway:
        gateway.connect(origin="https://phone.example.com").close()
        with pytest.raises(InvalidStatus) as refused:
            connect(gateway.url, subprotocols=["sylkRTC-1"], origin="https://evil.example.net", open_timeout=5)
        assert refused.value.response.status_code == 403


def test_connections_cannot_see_each_others_accounts(gateway: Gateway) -> None:
    first, second = gateway.connect(), gateway.connect()
    assert first.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"
    answer = second.request("remove_account", account=ALICE)
    assert answer["error"] == f"Unknown account specified for remove: {ALICE}"
    assert first.request("remove_account", account=ALICE)["sylkrtc"] == "ack"


def test_killed_janus_is_restarted_and_browsers_stay_connected(gateway: Gateway) -> None:
    client = gateway.connect()
    (first_janus,) = gateway.janus_pids()
    os.kill(first_janus, signal.SIGKILL)
    eventually(lambda: "backend session restored" in gateway.log(), timeout=20, what="a new Janus session")
    pids = gateway.janus_pids()
    assert len(pids) == 2 and pids[1] != first_janus
    assert client.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"  # the same socket
    client.close()


def test_a_stalled_janus_is_noticed_killed_and_restarted(gateway: Gateway) -> None:
    client = gateway.connect()
    (first_janus,) = gateway.janus_pids()
    os.kill(first_janus, signal.SIGSTOP)  # alive, its socket open, but it answers nothing: as if deadlocked
    stopped = time.monotonic()
    try:
        eventually(lambda: "is stalled" in gateway.log(), timeout=15, what="the stall noticed")
        detected = time.monotonic() - stopped
    finally:
        try:
            os.kill(first_janus, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed by the gateway, as it should be
    assert detected < 10, f"the stall was noticed after {detected:.1f} s"
    eventually(lambda: len(gateway.janus_pids()) == 2, timeout=20, what="a new Janus")
    with pytest.raises(ProcessLookupError):
        os.kill(first_janus, 0)
    # the browser's socket stayed open all along; its requests wait while the new Janus comes up
    assert client.request("add_account", account=ALICE, password=HA1, timeout=20)["sylkrtc"] == "ack"
    client.close()


def test_the_admin_api_when_asked_shows_what_janus_holds(netns: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Gateway(tmp_path, {"Janus": {"admin_api": "yes", "runtime_dir": str(run)}}) as gateway:
        admin = JanusAdmin(run)
        assert admin.sessions() == []
        client = gateway.connect()
        (session,) = admin.sessions()
        assert client.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"
        assert admin.handles(session) == []  # an account holds nothing in Janus until it registers or calls
        client.close()
        eventually(lambda: admin.sessions() == [], what="the session destroyed")
        assert oct((run / "janus").stat().st_mode & 0o777) == "0o700"


def start_janus(workdir: Path, port: int, secret: str) -> subprocess.Popen[bytes]:
    """A Janus of its own, its API on a TCP port (as an external Janus would have it)."""
    config = parse_config("[Janus]\ninterface = 127.0.0.1\n")
    folder = workdir / "external-janus"
    folder.mkdir(exist_ok=True)
    write_janus_config(config, folder, port, secret)
    log = open(workdir / "external-janus.log", "ab")
    return subprocess.Popen(["janus", "--configs-folder", str(folder), "--disable-colors"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def test_external_janus_and_503_while_it_is_away(netns: str, tmp_path: Path) -> None:
    port, secret = free_tcp_port(), "external-secret"
    janus = start_janus(tmp_path, port, secret)
    try:
        with Gateway(tmp_path, {"Janus": {"spawn": "no", "api_url": f"ws://127.0.0.1:{port}",
                                          "api_secret": secret}}) as gateway:
            assert gateway.janus_pids() == []  # nothing spawned
            assert http_get(gateway, "/ready")[:2] == (200, {"ready": True, "janus": {"connected": 1, "members": 1},
                                                             "shutting_down": False})
            client = gateway.connect()
            stop(janus)
            eventually(lambda: "Lost the connection to Janus" in gateway.log(), what="the loss noticed")
            with pytest.raises(InvalidStatus) as refused:  # new browsers wait outside
                connect(gateway.url, subprotocols=["sylkRTC-1"], open_timeout=5)
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "1"
            status, body, headers = http_get(gateway, "/ready")
            assert (status, body["ready"], headers["Retry-After"]) == (503, False, "1")
            assert http_get(gateway, "/health")[:2] == (200, {"status": "ok"})  # alive: it recovers by itself
            janus = start_janus(tmp_path, port, secret)
            gateway.wait_usable(timeout=20)
            assert http_get(gateway, "/ready")[0] == 200
            # the one that was connected stayed so, and carries on on the new Janus
            assert client.request("add_account", account=ALICE, password=HA1, timeout=20)["sylkrtc"] == "ack"
            client.close()
    finally:
        stop(janus)


def http_get(gateway: Gateway, path: str) -> tuple[int, Any, Any]:
    """(status, JSON body (None if not JSON), headers) of a plain GET on the gateway's web port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if error.headers.get_content_type() == "application/json" else None, \
            error.headers


def test_metrics_on_their_own_listener(netns: str, tmp_path: Path) -> None:
    with Gateway(tmp_path, {"WebServer": {"metrics_port": 10889}}) as gateway:
        client = gateway.connect()
        assert client.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"
        client.send("not json")
        assert client.answer(None)["sylkrtc"] == "error"
        with urllib.request.urlopen("http://127.0.0.1:10889/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        for line in ('sylkgateway_requests_total{type="account-add"} 1.0',
                     'sylkgateway_request_errors_total{cause="invalid",type="unknown"} 1.0',
                     'sylkgateway_connections{dialect="sylkRTC-1"} 1.0',
                     'sylkgateway_accounts{state="unregistered"} 1.0',
                     "sylkgateway_janus_members_connected 1.0"):
            assert line in text.splitlines(), line
        assert "sylkgateway_janus_request_seconds_count 0.0" not in text  # Janus has been asked things
        assert http_get(gateway, "/metrics")[0] == 404  # never on the public listener
        client.close()


def test_wrong_api_secret_keeps_the_gateway_unusable(netns: str, tmp_path: Path) -> None:
    port = free_tcp_port()
    janus = start_janus(tmp_path, port, "right")
    try:
        gateway = Gateway(tmp_path, {"Janus": {"spawn": "no", "api_url": f"ws://127.0.0.1:{port}",
                                               "api_secret": "wrong"}})
        with pytest.raises(AssertionError, match="did not become usable"):
            gateway.start(timeout=4)  # stops the gateway when it fails
        assert "Unauthorized request" in gateway.log()
    finally:
        stop(janus)


def make_certificate(path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + certificate.public_bytes(serialization.Encoding.PEM))


def test_certificate_turns_on_wss(netns: str, tmp_path: Path) -> None:
    pem = tmp_path / "gateway.pem"
    make_certificate(pem)
    gateway = Gateway(tmp_path, {"WebServer": {"certificate": pem}})
    gateway.ssl_context = ssl.create_default_context(cafile=str(pem))
    with gateway:
        assert gateway.url.startswith("wss://")
        client = gateway.connect()
        assert client.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"
        client.close()
        with pytest.raises((OSError, InvalidHandshake)):  # no plain ws on a TLS listener
            connect(gateway.url.replace("wss:", "ws:"), subprotocols=["sylkRTC-1"], open_timeout=3)


def write_issued_certificate(path: Path, ca_key: Any, ca: Any, serial: int) -> None:
    """A key and a certificate for the IP address 127.0.0.1 signed by the CA, written as a renewal would: to a
    temporary file renamed over the old one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                         "gateway")]))
                   .issuer_name(ca.subject).public_key(key.public_key()).serial_number(serial)
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))
    renewed = path.with_suffix(".new")
    renewed.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
                        + certificate.public_bytes(serialization.Encoding.PEM))
    renewed.replace(path)


def make_ca(cafile: Path) -> tuple[Any, Any]:
    """A throwaway certificate authority: its key, and its certificate (also written to `cafile`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sylkgateway test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return key, ca


def served_serial(client: Any) -> int:
    """The serial number of the certificate the gateway presented on this (verified) connection."""
    from cryptography import x509
    return x509.load_der_x509_certificate(client.ws.socket.getpeercert(binary_form=True)).serial_number


def test_sighup_reloads_the_certificate_for_new_connections_only(netns: str, tmp_path: Path) -> None:
    pem, cafile = tmp_path / "gateway.pem", tmp_path / "ca.pem"
    ca_key, ca = make_ca(cafile)
    write_issued_certificate(pem, ca_key, ca, serial=0xA)
    gateway = Gateway(tmp_path, {"WebServer": {"certificate": pem}})
    gateway.ssl_context = ssl.create_default_context(cafile=str(cafile))  # verifies the chain and 127.0.0.1

    def new_connection_serial() -> int:
        client = gateway.connect()
        try:
            return served_serial(client)
        finally:
            client.close()

    with gateway:
        assert gateway.process is not None
        first = gateway.connect()
        assert served_serial(first) == 0xA
        write_issued_certificate(pem, ca_key, ca, serial=0xB)
        gateway.process.send_signal(signal.SIGHUP)
        # Connect once the reload is logged: a connection opened at the very moment of the signal once went
        # unanswered in CI (a known issue, see docs/operations.md); this test is about which certificate is served.
        eventually(lambda: "certificate reloaded from" in gateway.log(), timeout=10, what="the reload")
        assert new_connection_serial() == 0xB
        assert first.request("add_account", account=ALICE, password=HA1)["sylkrtc"] == "ack"  # the old socket
        assert served_serial(first) == 0xA

        pem.write_text("a renewal gone wrong\n")
        gateway.process.send_signal(signal.SIGHUP)
        eventually(lambda: "still using the previous certificate" in gateway.log(), timeout=10,
                   what="the error about the unusable file")
        assert new_connection_serial() == 0xB
        assert gateway.process.poll() is None
        first.close()


def test_twistd_lists_the_options() -> None:
    result = subprocess.run([TWISTD, "sylkgateway", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--config=" in result.stdout


def test_bad_configuration_fails_at_startup_naming_the_option(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[WebRTCGateway]\nregister_ttl = soon\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "sylkgateway", "-c", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    assert "[WebRTCGateway] register_ttl" in result.stderr + result.stdout


def test_a_web_port_in_use_stops_the_gateway_at_startup(netns: str, tmp_path: Path) -> None:
    import socket
    with socket.create_server(("127.0.0.1", 10888)):
        gateway = Gateway(tmp_path)
        gateway.write_config()
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "sylkgateway", "-c", str(gateway.config_path)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Address already in use" in result.stdout + result.stderr


def test_under_systemd_the_log_leaves_timestamps_to_journald(netns: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(tmp_path)
    gateway.log_path.touch()  # the gateway's standard output, standing in for the journal's stream
    status = gateway.log_path.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
    with gateway:
        pass
    lines = gateway.log().splitlines()
    assert any(line.startswith("<6>[sylk.gateway.service.GatewayService#info] sylkgateway ") for line in lines)
    assert all(re.match(r"<[2-7]>(\[|\t)", line) for line in lines), lines


def test_stopping_says_goodbye_to_browsers(gateway: Gateway) -> None:
    client = gateway.connect()
    started = time.monotonic()
    assert gateway.stop() in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped for
    assert client.wait_closed()[0] == 1001
    assert time.monotonic() - started < 10
    assert "Janus stopped" in gateway.log()
    with pytest.raises((OSError, ConnectionClosed)):
        connect(gateway.url, subprotocols=["sylkRTC-1"], open_timeout=2)
