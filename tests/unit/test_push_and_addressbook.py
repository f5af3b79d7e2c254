"""account-devicetoken (push parameters in the REGISTER Contact) and account-fetch-addressbook."""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred

from sylk.gateway.account import SIPAccount
from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.connection import Connection
from sylk.gateway.errors import APIError
from sylk.gateway.sylkrtc import model
from tests.fakes import FakePeer
from tests.unit.test_connection import ALICE, ConnectionTestCase


class PushTokenTests(ConnectionTestCase):
    def register_body(self) -> dict[str, Any]:
        (body,) = [r["body"] for r in self.janus.requests
                   if r["janus"] == "message" and r["body"].get("register_ttl")]
        return body

    def test_the_token_goes_into_the_register_contact_as_sylkserver_writes_it(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.assertIsNone(self.request(connection, model.AccountDeviceToken, account=ALICE, token="ab:cd/ef gh",
                                       platform="iOS", device="phone-1", app="com.example.sylk.voip", silent=True))
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertEqual(self.register_body()["contact_params"], {
            "pn-app": "com.example.sylk.voip", "pn-tok": "ab:cd/ef%20gh", "pn-type": "iOS", "pn-device": "phone-1",
            "pn-silent": "1"})

    def test_rfc_8599_parameters_as_an_option(self) -> None:
        connection, peer = self.connect(WebRTCGatewayConfig(push_parameters="rfc8599"))
        self.add(connection)
        self.assertIsNone(self.request(connection, model.AccountDeviceToken, account=ALICE, token="ab:cd/ef gh",
                                       platform="iOS", device="phone-1", app="com.example.sylk.voip"))
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertEqual(self.register_body()["contact_params"], {"pn-provider": "apns", "pn-prid": "ab:cd/ef%20gh",
                                                                  "pn-param": "com.example.sylk.voip"})

    def test_no_token_removes_the_devices(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.request(connection, model.AccountDeviceToken, account=ALICE, token="t1", platform="android", device="d")
        self.request(connection, model.AccountDeviceToken, account=ALICE, token="", device="d")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertNotIn("contact_params", self.register_body())

    def test_the_2016_clients_new_token(self) -> None:
        connection, peer = self.connect()
        self.add(connection)
        self.request(connection, model.AccountDeviceToken, account=ALICE, new_token="t2", old_token="t1")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertEqual(self.register_body()["contact_params"], {"pn-tok": "t2", "pn-silent": "0"})

    def test_tokens_are_bounded(self) -> None:
        from sylk.gateway.account import MAX_PUSH_DEVICES
        connection, peer = self.connect()
        self.add(connection)
        for device in range(MAX_PUSH_DEVICES + 5):
            self.request(connection, model.AccountDeviceToken, account=ALICE, token=f"t{device}", device=f"d{device}")
        account = connection.accounts[ALICE]
        self.assertEqual(len(account.push_tokens), MAX_PUSH_DEVICES)
        self.assertEqual(list(account.push_tokens)[-1], f"d{MAX_PUSH_DEVICES + 4}")
        self.assertIn("too long for a SIP Contact", self.request(connection, model.AccountDeviceToken,
                                                                 account=ALICE, token="x" * 300, device="d"))

    def test_unknown_account(self) -> None:
        connection, peer = self.connect()
        self.assertEqual(self.request(connection, model.AccountDeviceToken, account=ALICE, token="t"),
                         f"Unknown account specified for devicetoken: {ALICE}")


class ManualThreads:
    """Stands in for the thread pool an account reads its address book in: work waits until the test runs it."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.waiting.append((work, done))
        return done

    def run(self) -> None:
        work, done = self.waiting.pop(0)
        try:
            result = work()
        except Exception:
            done.errback()
        else:
            done.callback(result)


class AddressBookTests(ConnectionTestCase):
    def folder(self) -> Path:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        return folder

    def account(self, folder: Path | None) -> tuple[Connection, FakePeer, SIPAccount, ManualThreads]:
        connection, peer = self.registered(WebRTCGatewayConfig(addressbook_dir=folder))
        account = connection.accounts[ALICE]
        threads = ManualThreads()
        account.run_blocking = threads
        return connection, peer, account, threads

    def addressbooks(self, peer: FakePeer) -> list[Any]:
        return [e.addressbook for e in peer.events if isinstance(e, model.AddressBookFetched)]

    def fetched(self, folder: Path | None) -> tuple[str | None, list[Any]]:
        """(the request's error or None, the address books reported) of one fetch, the file read in a thread."""
        connection, peer, account, threads = self.account(folder)
        answer = connection.handle(model.AccountFetchAddressBook(transaction="t", account=ALICE))
        while threads.waiting:
            threads.run()
        self.assertEqual(self.addressbooks(peer), [])  # after the ack
        error = self.answer(answer)
        self.janus.clock.advance(0)
        return error, self.addressbooks(peer)

    def unusable(self, folder: Path) -> str:
        """The error of fetching the address book through the account (read in a thread)."""
        connection, peer, account, threads = self.account(folder)
        fetching = account.fetch_addressbook()
        threads.run()
        self.janus.clock.advance(0)
        self.assertEqual(self.addressbooks(peer), [])
        error = self.failureResultOf(fetching, APIError).value
        self.flushLoggedErrors()
        return str(error)

    def test_without_a_folder_the_address_book_is_empty(self) -> None:
        self.assertEqual(self.fetched(None), (None, [{}]))

    def test_from_the_folder(self) -> None:
        folder = self.folder()
        (folder / f"{ALICE}.json").write_text(json.dumps({"contacts": [{"uri": "bob@example.com"}]}))
        self.assertEqual(self.fetched(folder), (None, [{"contacts": [{"uri": "bob@example.com"}]}]))

    def test_a_missing_file_is_an_empty_address_book(self) -> None:
        folder = self.folder()
        self.assertEqual(self.fetched(folder), (None, [{}]))

    def test_an_unusable_file_fails_the_request(self) -> None:
        from sylk.gateway.account import MAX_ADDRESSBOOK
        folder = self.folder()
        path = folder / f"{ALICE}.json"
        for content in (b"[1, 2]", b"{", b'{"a": "\xff"}', b"[" * 100000,
                        b'{"a": "' + b"x" * MAX_ADDRESSBOOK + b'"}'):
            path.write_bytes(content)
            self.assertEqual(self.unusable(folder), f"The address book of {ALICE} is unavailable")

    def test_the_file_is_read_off_the_reactor(self) -> None:
        from twisted.internet.threads import deferToThread
        folder = self.folder()
        (folder / f"{ALICE}.json").write_text("{}")
        connection, peer, account, threads = self.account(folder)
        default = inspect.signature(SIPAccount).parameters["run_blocking"].default
        self.assertIs(default, deferToThread)  # Twisted's thread pool, unless replaced
        fetching = account.fetch_addressbook()
        self.assertNoResult(fetching)  # answered once read
        (work, _), = threads.waiting
        self.assertEqual(work(), {})

    def test_one_read_at_a_time(self) -> None:
        folder = self.folder()
        connection, peer, account, threads = self.account(folder)
        first = connection.handle(model.AccountFetchAddressBook(transaction="1", account=ALICE))
        self.janus.clock.advance(5)
        self.assertEqual(self.request(connection, model.AccountFetchAddressBook, account=ALICE),
                         f"The address book of {ALICE} is being read already")
        threads.run()
        self.assertIsNone(self.answer(first))

    def test_at_most_one_fetch_per_second(self) -> None:
        from sylk.gateway.account import ADDRESSBOOK_FETCH_INTERVAL
        connection, peer, account, threads = self.account(None)
        self.assertIsNone(self.request(connection, model.AccountFetchAddressBook, account=ALICE))
        self.janus.clock.advance(ADDRESSBOOK_FETCH_INTERVAL - 0.01)
        self.assertEqual(self.request(connection, model.AccountFetchAddressBook, account=ALICE),
                         f"The address book of {ALICE} was fetched less than 1 s ago (at most one fetch per 1 s)")
        self.janus.clock.advance(0.01)
        self.assertIsNone(self.request(connection, model.AccountFetchAddressBook, account=ALICE))
        self.janus.clock.advance(0)
        self.assertEqual(self.addressbooks(peer), [{}, {}])

    def test_only_for_an_account_the_registrar_accepted(self) -> None:
        folder = self.folder()
        (folder / f"{ALICE}.json").write_text(json.dumps({"contacts": ["secret"]}))
        connection, peer = self.connect(WebRTCGatewayConfig(addressbook_dir=folder))
        self.add(connection)  # any well-formed HA1 is taken here
        self.assertEqual(self.request(connection, model.AccountFetchAddressBook, account=ALICE),
                         f"Account {ALICE} must register before its address book can be fetched")
        self.janus.registration_outcome = ("failed", 403, "Forbidden")
        self.request(connection, model.AccountRegister, account=ALICE)
        self.assertIn("must register", self.request(connection, model.AccountFetchAddressBook, account=ALICE))
