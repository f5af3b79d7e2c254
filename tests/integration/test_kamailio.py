"""The demo/test Kamailio registrar (demo/kamailio/kamailio.cfg) and its harness (tests/integration/kamailio.py).

A tiny UDP SIP user agent written here talks to it: registration with digest auth computed from the HA1, the
deterministic 403 for bad credentials, routing to registered users, and a complete call (INVITE, ACK, BYE) through
the proxy's Record-Route, which is what Janus <-> SIP phone calls rely on later.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.kamailio import Kamailio, sip_options_ping, subscribers

pytestmark = pytest.mark.timeout(60)

DOMAIN = "sylk.test"
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


# --- a tiny SIP user agent over UDP ---

@dataclass
class Message:
    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""
    source: tuple[str, int] | None = None

    _COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}

    @classmethod
    def parse(cls, data: bytes, source: tuple[str, int] | None = None) -> Message:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # folded continuation line
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.append((cls._COMPACT.get(name, name), value.strip()))
        return cls(lines[0], headers, body, source)

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1])

    @property
    def method(self) -> str:
        return self.first_line.split()[0] if not self.is_response else self.header("cseq").split()[1]

    def header(self, name: str) -> str:
        values = self.all(name)
        if not values:
            raise KeyError(f"no {name} header in {self.first_line!r}")
        return values[0]

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for header, value in self.headers if header == name]

    def tag(self, name: str) -> str | None:
        match = re.search(r";\s*tag=([^;>\s]+)", self.header(name))
        return match.group(1) if match else None


def digest_authorization(challenge: str, ha1: str, user: str, method: str, uri: str) -> str:
    """Answer a `Digest realm=..., nonce=...[, qop=...]` challenge from the account's HA1."""
    params = dict((k.lower(), v1 or v2) for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"', "algorithm=MD5"]
    if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    parts.append(f'response="{response}"')
    return "Digest " + ", ".join(parts)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Dialog:
    call_id: str
    local_uri: str
    remote_uri: str
    local_tag: str
    remote_tag: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    cseq: int = 1


class UserAgent:
    """One UDP socket on 127.0.0.1 that sends everything to the proxy and reads whatever arrives."""

    def __init__(self, proxy: tuple[str, int], user: str, domain: str = DOMAIN) -> None:
        self.proxy = proxy
        self.user = user
        self.domain = domain
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:{user}@{domain}"
        self.contact = f"sip:{user}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UserAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # sending and receiving

    def send(self, text: str, destination: tuple[str, int] | None = None) -> None:
        self.sock.sendto(text.encode(), destination or self.proxy)

    def receive(self, timeout: float = 3.0) -> Message:
        self.sock.settimeout(timeout)
        try:
            data, source = self.sock.recvfrom(65535)
        except TimeoutError:
            raise AssertionError(f"{self.user}: nothing received within {timeout:g} s") from None
        return Message.parse(data, source)

    def receive_request(self, method: str, timeout: float = 3.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.05, deadline - time.monotonic()))
            if not message.is_response and message.method == method:
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}: no {method} within {timeout:g} s")

    def final_response(self, branch: str, timeout: float = 3.0) -> Message:
        """Read until the final response of the transaction `branch` (1xx are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.05, deadline - time.monotonic()))
            if message.is_response and f"branch={branch}" in message.header("via") and message.status >= 200:
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}: no final response within {timeout:g} s")

    # building requests

    def request(self, method: str, ruri: str, *, to: str, call_id: str, cseq: int, from_tag: str,
                to_tag: str | None = None, headers: list[str] | None = None, branch: str | None = None,
                body: str = "") -> tuple[str, str]:
        """Send a request to the proxy; return (branch, the request text)."""
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:20]
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{self.uri}>;tag={from_tag}",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            *(headers or []),
            "User-Agent: sylkgateway-test",
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        text = "\r\n".join(lines)
        self.send(text)
        return branch, text

    def ack_negative(self, request_text: str, branch: str, response: Message) -> None:
        """ACK a non-2xx final response to an INVITE (same branch, To tag of the response)."""
        request = Message.parse(request_text.encode())
        lines = [
            f"ACK {request_text.split()[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {request.header('from')}",
            f"To: {response.header('to')}",
            f"Call-ID: {request.header('call-id')}",
            f"CSeq: {request.header('cseq').split()[0]} ACK",
            "Content-Length: 0",
            "",
            "",
        ]
        self.send("\r\n".join(lines))

    def send_authenticated(self, method: str, ruri: str, *, to: str, ha1: str | None, call_id: str | None = None,
                           cseq: int = 1, from_tag: str | None = None, headers: list[str] | None = None,
                           timeout: float = 3.0) -> tuple[Message, str, str, int]:
        """Send a request; answer one 401/407 challenge when `ha1` is given. Returns (final response, request
        text, branch, CSeq used)."""
        call_id = call_id or uuid.uuid4().hex
        from_tag = from_tag or uuid.uuid4().hex[:10]
        branch, text = self.request(method, ruri, to=to, call_id=call_id, cseq=cseq, from_tag=from_tag,
                                    headers=headers)
        response = self.final_response(branch, timeout)
        if response.status in (401, 407) and ha1 is not None:
            if method == "INVITE":
                self.ack_negative(text, branch, response)
            challenge_header, answer_header = (("www-authenticate", "Authorization") if response.status == 401
                                               else ("proxy-authenticate", "Proxy-Authorization"))
            authorization = digest_authorization(response.header(challenge_header), ha1, self.user, method, ruri)
            cseq += 1
            branch, text = self.request(method, ruri, to=to, call_id=call_id, cseq=cseq, from_tag=from_tag,
                                        headers=[*(headers or []), f"{answer_header}: {authorization}"])
            response = self.final_response(branch, timeout)
        if method == "INVITE" and response.status >= 300:
            self.ack_negative(text, branch, response)
        return response, text, branch, cseq

    def register(self, ha1: str | None, expires: int = 300, contact: str | None = None) -> Message:
        response, *_ = self.send_authenticated(
            "REGISTER", f"sip:{self.domain}", to=self.uri, ha1=ha1,
            headers=[f"Contact: <{contact or self.contact}>", f"Expires: {expires}"])
        return response

    def reply(self, request: Message, status: int, reason: str, to_tag: str | None = None,
              extra: list[str] | None = None) -> None:
        """Answer a request received from the proxy, copying Via, Record-Route, From, To, Call-ID and CSeq."""
        to = request.header("to")
        if to_tag and ";tag=" not in to:
            to += f";tag={to_tag}"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {via}" for via in request.all("via")]
        lines += [f"Record-Route: {rr}" for rr in request.all("record-route")]
        lines += [f"From: {request.header('from')}", f"To: {to}", f"Call-ID: {request.header('call-id')}",
                  f"CSeq: {request.header('cseq')}", *(extra or []), "Content-Length: 0", "", ""]
        assert request.source is not None
        self.send("\r\n".join(lines), request.source)

    def in_dialog(self, dialog: Dialog, method: str, cseq: int | None = None) -> str:
        """Send a request inside `dialog` along its route set (loose routing: R-URI = remote target)."""
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        branch = "z9hG4bK" + uuid.uuid4().hex[:20]
        lines = [
            f"{method} {dialog.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            *[f"Route: {route}" for route in dialog.route_set],
            f"From: <{dialog.local_uri}>;tag={dialog.local_tag}",
            f"To: <{dialog.remote_uri}>;tag={dialog.remote_tag}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {cseq} {method}",
            "Content-Length: 0",
            "",
            "",
        ]
        self.send("\r\n".join(lines))
        return branch


def uri_in(header_value: str) -> str:
    match = re.search(r"<([^>]+)>", header_value)
    return match.group(1) if match else header_value.split(";")[0].strip()


# --- fixtures ---

@pytest.fixture
def kamailio(netns: str, tmp_path: Path):
    with Kamailio(tmp_path / "kamailio", users=USERS) as instance:
        yield instance


def ha1(user: str, password: str | None = None) -> str:
    return subscribers.ha1(user, DOMAIN, password if password is not None else USERS[user])


# --- tests ---

def test_answers_options_and_writes_ha1_only_database(kamailio: Kamailio) -> None:
    assert kamailio.running
    assert sip_options_ping("127.0.0.1", kamailio.port) == "SIP/2.0 200 Keepalive"
    rows = (kamailio.db_dir / "subscriber").read_text().splitlines()
    assert rows[0].split()[3] == "password(string,null)"
    alice = rows[1].split(":")
    assert alice[1:4] == ["alice", DOMAIN, ""]  # no plaintext password
    assert alice[4] == hashlib.md5(b"alice:sylk.test:alicepw").hexdigest()
    assert kamailio.contacts("alice") == []


def test_register_challenge_then_ok_then_unregister(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "alice") as alice:
        challenge = alice.register(ha1=None)
        assert challenge.status == 401
        www_authenticate = challenge.header("www-authenticate")
        assert www_authenticate.startswith("Digest ") and f'realm="{DOMAIN}"' in www_authenticate

        response = alice.register(ha1=ha1("alice"), expires=300)
        assert response.status == 200, response.first_line
        assert alice.contact in response.header("contact")
        assert kamailio.contacts("alice") == [alice.contact]

        response = alice.register(ha1=ha1("alice"), expires=0)
        assert response.status == 200, response.first_line
        assert kamailio.contacts("alice") == []

    log = kamailio.log()
    assert "AUTH OK user=alice method=REGISTER" in log
    assert "REGISTERED alice bindings=1" in log
    assert "UNREGISTERED alice bindings=0" in log


def test_wrong_password_is_forbidden_without_second_challenge(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "alice") as alice:
        response = alice.register(ha1=ha1("alice", "not-the-password"))
        assert response.status == 403, response.first_line
    assert kamailio.contacts("alice") == []
    assert "AUTH FAILED rc=-2 user=alice" in kamailio.log()


def test_unknown_user_is_forbidden(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "mallory") as mallory:
        response = mallory.register(ha1=ha1("mallory", "whatever"))
        assert response.status == 403, response.first_line
    assert "AUTH FAILED" in kamailio.log() and "user=mallory" in kamailio.log()


def test_credentials_of_another_user_are_forbidden(kamailio: Kamailio) -> None:
    # bob authenticates correctly but tries to bind alice's address
    with UserAgent(kamailio.address, "bob") as bob:
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
        headers = [f"Contact: <{bob.contact}>", "Expires: 300"]
        branch, _ = bob.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}", call_id=call_id, cseq=1,
                                from_tag=tag, headers=headers)
        challenge = bob.final_response(branch)
        assert challenge.status == 401
        authorization = digest_authorization(challenge.header("www-authenticate"), ha1("bob"), "bob",
                                             "REGISTER", f"sip:{DOMAIN}")
        branch, _ = bob.request("REGISTER", f"sip:{DOMAIN}", to=f"sip:alice@{DOMAIN}", call_id=call_id, cseq=2,
                                from_tag=tag, headers=[*headers, f"Authorization: {authorization}"])
        assert bob.final_response(branch).status == 403
    assert kamailio.contacts("alice") == []


def test_requests_to_foreign_domains_and_unregistered_users(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "stranger", domain="example.org") as stranger:
        # an outsider may not use the proxy as a relay
        response, *_ = stranger.send_authenticated("OPTIONS", "sip:someone@example.org",
                                                   to="sip:someone@example.org", ha1=None)
        assert response.status == 403, response.first_line
        # an outsider may call a local user, who is not registered
        response, *_ = stranger.send_authenticated("INVITE", f"sip:carol@{DOMAIN}", to=f"sip:carol@{DOMAIN}",
                                                   ha1=None)
        assert response.status == 404, response.first_line

    with UserAgent(kamailio.address, "alice") as alice:
        # a local user must authenticate (407) before anything else happens
        response, *_ = alice.send_authenticated("INVITE", f"sip:carol@{DOMAIN}", to=f"sip:carol@{DOMAIN}",
                                                ha1=None)
        assert response.status == 407, response.first_line
        assert f'realm="{DOMAIN}"' in response.header("proxy-authenticate")
        response, *_ = alice.send_authenticated("INVITE", f"sip:carol@{DOMAIN}", to=f"sip:carol@{DOMAIN}",
                                                ha1=ha1("alice"))
        assert response.status == 404, response.first_line
        # authenticated or not, nothing is relayed to another domain
        response, *_ = alice.send_authenticated("MESSAGE", "sip:bob@example.org", to="sip:bob@example.org",
                                                ha1=ha1("alice"))
        assert response.status == 403, response.first_line
        # a local user with a wrong password gets a definite 403 as well
        response, *_ = alice.send_authenticated("INVITE", f"sip:bob@{DOMAIN}", to=f"sip:bob@{DOMAIN}",
                                                ha1=ha1("alice", "wrong"))
        assert response.status == 403, response.first_line
    assert "RELAY DENIED" in kamailio.log()


def test_call_through_the_proxy(kamailio: Kamailio) -> None:
    """INVITE to a registered user, 200, ACK and BYE along the Record-Route (in-dialog routing works)."""
    with UserAgent(kamailio.address, "alice") as alice, UserAgent(kamailio.address, "bob") as bob:
        assert bob.register(ha1=ha1("bob")).status == 200
        assert kamailio.contacts("bob") == [bob.contact]

        # alice calls bob at the proxy's address (R-URI host 127.0.0.1:SIP_PORT is a local user as well)
        ruri = f"sip:bob@127.0.0.1:{kamailio.port}"
        call_id, from_tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
        headers = [f"Contact: <{alice.contact}>"]
        branch, text = alice.request("INVITE", ruri, to=f"sip:bob@{DOMAIN}", call_id=call_id, cseq=1,
                                     from_tag=from_tag, headers=headers)
        challenge = alice.final_response(branch)
        assert challenge.status == 407
        alice.ack_negative(text, branch, challenge)
        authorization = digest_authorization(challenge.header("proxy-authenticate"), ha1("alice"), "alice",
                                             "INVITE", ruri)
        branch, _ = alice.request("INVITE", ruri, to=f"sip:bob@{DOMAIN}", call_id=call_id, cseq=2,
                                  from_tag=from_tag, headers=[*headers, f"Proxy-Authorization: {authorization}"])

        invite = bob.receive_request("INVITE")
        assert invite.first_line.split()[1] == bob.contact  # forwarded to the registered contact
        assert invite.all("record-route"), "the proxy must record-route"
        assert not invite.all("proxy-authorization"), "credentials are consumed by the proxy"
        bob_tag = uuid.uuid4().hex[:10]
        bob.reply(invite, 180, "Ringing", to_tag=bob_tag, extra=[f"Contact: <{bob.contact}>"])
        bob.reply(invite, 200, "OK", to_tag=bob_tag, extra=[f"Contact: <{bob.contact}>"])

        ok = alice.final_response(branch)
        assert ok.status == 200, ok.first_line
        dialog = Dialog(call_id=call_id, local_uri=alice.uri, remote_uri=f"sip:bob@{DOMAIN}", local_tag=from_tag,
                        remote_tag=ok.tag("to") or "", remote_target=uri_in(ok.header("contact")),
                        route_set=list(reversed(ok.all("record-route"))), cseq=2)
        assert dialog.remote_tag == bob_tag and dialog.route_set

        alice.in_dialog(dialog, "ACK", cseq=2)
        ack = bob.receive_request("ACK")
        assert ack.header("call-id") == call_id

        bye_branch = alice.in_dialog(dialog, "BYE")
        bye = bob.receive_request("BYE")
        bob.reply(bye, 200, "OK")
        assert alice.final_response(bye_branch).status == 200

    log = kamailio.log()
    assert f"LOOKUP bob -> {bob.contact}" in log
    assert "BYE in dialog" in log


def test_harness_stops_every_process(netns: str, tmp_path: Path) -> None:
    kamailio = Kamailio(tmp_path / "kamailio", port=5090, users={"dave": "davepw"})
    kamailio.start()
    group = kamailio.process.pid if kamailio.process else 0
    assert kamailio.ha1("dave") == hashlib.md5(b"dave:sylk.test:davepw").hexdigest()
    kamailio.stop()
    kamailio.stop()  # idempotent
    assert not kamailio.running
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert sip_options_ping("127.0.0.1", 5090, timeout=0.3) is None
    assert "REQ OPTIONS" in kamailio.log()


def _invite_bob(alice: UserAgent) -> tuple[str, str, str]:
    """alice sends an authenticated INVITE to bob@DOMAIN; returns (branch, request text, call-id)."""
    ruri = f"sip:bob@{DOMAIN}"
    call_id, from_tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
    headers = [f"Contact: <{alice.contact}>"]
    branch, text = alice.request("INVITE", ruri, to=ruri, call_id=call_id, cseq=1, from_tag=from_tag,
                                 headers=headers)
    challenge = alice.final_response(branch)
    assert challenge.status == 407
    alice.ack_negative(text, branch, challenge)
    authorization = digest_authorization(challenge.header("proxy-authenticate"), ha1("alice"), "alice", "INVITE", ruri)
    branch, text = alice.request("INVITE", ruri, to=ruri, call_id=call_id, cseq=2, from_tag=from_tag,
                                 headers=[*headers, f"Proxy-Authorization: {authorization}"])
    return branch, text, call_id


def test_cancel_through_the_proxy(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "alice") as alice, UserAgent(kamailio.address, "bob") as bob:
        assert bob.register(ha1=ha1("bob")).status == 200
        branch, text, call_id = _invite_bob(alice)
        invite = bob.receive_request("INVITE")
        bob_tag = uuid.uuid4().hex[:10]
        bob.reply(invite, 180, "Ringing", to_tag=bob_tag)

        # CANCEL: same branch, R-URI, Call-ID, From, To and CSeq number as the INVITE
        request = Message.parse(text.encode())
        alice.send("\r\n".join([
            f"CANCEL {text.split()[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{alice.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {request.header('from')}",
            f"To: {request.header('to')}",
            f"Call-ID: {call_id}",
            f"CSeq: {request.header('cseq').split()[0]} CANCEL",
            "Content-Length: 0", "", ""]))
        cancel = bob.receive_request("CANCEL")
        bob.reply(cancel, 200, "OK")
        bob.reply(invite, 487, "Request Terminated", to_tag=bob_tag)

        # alice sees the 200 for her CANCEL and the 487 for her INVITE (skip the 180 and anything else)
        finals = set()
        deadline = time.monotonic() + 3
        while len(finals) < 2 and time.monotonic() < deadline:
            message = alice.receive(max(0.05, deadline - time.monotonic()))
            if message.is_response and message.status >= 200:
                finals.add((message.method, message.status))
        assert finals == {("CANCEL", 200), ("INVITE", 487)}
        alice.ack_negative(text, branch, Message("SIP/2.0 487 Request Terminated",
                                                 [("to", f"<sip:bob@{DOMAIN}>;tag={bob_tag}")]))
        # an ACK for a non-2xx reply is hop by hop: the proxy acknowledged bob's 487 itself
        ack = bob.receive_request("ACK")
        assert ack.header("call-id") == call_id


def test_contact_that_never_answers_gives_480(kamailio: Kamailio) -> None:
    with UserAgent(kamailio.address, "alice") as alice:
        with UserAgent(kamailio.address, "bob") as bob:
            assert bob.register(ha1=ha1("bob")).status == 200
        # bob's socket is closed now, but his binding stays: the INVITE gets no reply at all (tm fr_timer: 5 s)
        branch, text, _ = _invite_bob(alice)
        response = alice.final_response(branch, timeout=10)
        assert response.status == 480, response.first_line
        alice.ack_negative(text, branch, response)
