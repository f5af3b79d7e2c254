"""What crosses gateways (messaging/events.py), without a database: what is published, and what is heard from
another gateway (or from anyone able to NOTIFY on the channel) is rebuilt only as one of the carried events."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sylk.gateway.messaging.events import CHANNEL, MAX_PAYLOAD, PostgreSQLEvents
from sylk.gateway.sylkrtc import model

ALICE = "alice@example.com"


class EventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.delivered: list[tuple[str, Any]] = []
        self.events = PostgreSQLEvents("dbname=x", Clock(), self.notify, lambda a, e: self.delivered.append((a, e)))

    def notify(self, channel: str, payload: str) -> Deferred[None]:
        self.sent.append((channel, payload))
        return succeed(None)

    def test_what_is_published_is_what_the_other_gateway_rebuilds(self) -> None:
        sync = model.AccountSync(account=ALICE, type="conversation", action="read", content={"contact": "b@x.y"})
        self.events.publish(ALICE, sync)
        ((channel, payload),) = self.sent
        self.assertEqual(channel, CHANNEL)
        other = PostgreSQLEvents("dbname=x", Clock(), self.notify, lambda a, e: self.delivered.append((a, e)))
        other._heard(payload)
        self.events._heard(payload)  # its own: ignored
        self.assertEqual(self.delivered, [(ALICE, sync)])

    def test_only_the_carried_events_and_not_too_large(self) -> None:
        self.events.publish(ALICE, model.Ready())
        self.events.publish(ALICE, model.AccountSync(account=ALICE, type="message", action="add",
                                                     content={"content": "x" * MAX_PAYLOAD}))
        self.assertEqual(self.sent, [])

    def test_anything_else_heard_is_dropped(self) -> None:
        for payload in ("not json", "[]", json.dumps({"gateway": "g"}),
                        json.dumps({"gateway": "g", "account": ALICE, "event": "Ready", "fields": {}}),
                        json.dumps({"gateway": "g", "account": ALICE, "event": "AccountSync",
                                    "fields": {"bogus": 1}}),
                        json.dumps({"gateway": "g", "account": 7, "event": "AccountSync",
                                    "fields": {"account": ALICE, "type": "t", "action": "a", "content": {}}})):
            self.events._heard(payload)
        self.assertEqual(self.delivered, [])
