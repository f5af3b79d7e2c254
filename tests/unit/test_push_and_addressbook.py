"""account-devicetoken (push parameters in the REGISTER Contact) and account-fetch-addressbook."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sylk.gateway.config import WebRTCGatewayConfig
from sylk.gateway.sylkrtc import model
from tests.unit.test_connection import ALICE, ConnectionTestCase


class PushTokenTests(ConnectionTestCase):
    def register_body(self) -> dict[str, Any]:
        (body,) = [r["body"] for r in self.janus.requests
                   if r["janus"] == "message" and r["body"].get("register_ttl")]
        return body

    def test_the_token_goes_into_the_register_contact(self) -> None:
        connection, peer = self.connect()
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
        self.assertEqual(self.register_body()["contact_params"], {"pn-prid": "t2"})

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


class AddressBookTests(ConnectionTestCase):
    def folder(self) -> Path:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        return folder

    def fetched(self, folder: Path | None) -> tuple[str | None, list[Any]]:
        connection, peer = self.registered(WebRTCGatewayConfig(addressbook_dir=folder))
        error = self.request(connection, model.AccountFetchAddressBook, account=ALICE)
        self.assertEqual([e for e in peer.events if isinstance(e, model.AddressBookFetched)], [])  # after the ack
        self.janus.clock.advance(0)
        return error, [e.addressbook for e in peer.events if isinstance(e, model.AddressBookFetched)]

    def test_without_a_folder_the_address_book_is_empty(self) -> None:
        self.assertEqual(self.fetched(None), (None, [{}]))

    def test_from_the_folder(self) -> None:
        folder = self.folder()
        (folder / f"{ALICE}.json").write_text(json.dumps({"contacts": [{"uri": "bob@example.com"}]}))
        self.assertEqual(self.fetched(folder), (None, [{"contacts": [{"uri": "bob@example.com"}]}]))
        (folder / f"{ALICE}.json").write_text("[1, 2]")
        self.assertEqual(self.fetched(folder), (f"The address book of {ALICE} is unavailable", []))
        self.flushLoggedErrors()

    def test_a_missing_file_is_an_empty_address_book(self) -> None:
        folder = self.folder()
        self.assertEqual(self.fetched(folder), (None, [{}]))

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
