"""Push notifications for messages, through Sylk's push service (`[WebRTCGateway] sylk_push_url`).

A message for an account none of whose devices is connected here wakes its devices the way SylkServer does: one
HTTP POST per stored device token (IMessageStore.device_tokens, written by account-devicetoken) with SylkServer's
JSON (`event` `message`, dash-cased keys, `from`, `to`, `badge`: the account's unread messages). The push service
answers 410 for a token that is no more: it is forgotten. Every request is bounded (PUSH_TIMEOUT); a failure is
logged and costs nothing else: the message is in the account's history either way.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from sylk.gateway import __version__
from sylk.gateway.messaging.store import DeviceToken, IMessageStore
from sylk.gateway.sip import Originator

PUSH_TIMEOUT = 10.0  # seconds for the push service to answer one notification


class PushNotifier:
    log = Logger()

    def __init__(self, url: str, store: IMessageStore, reactor: Any, agent: IAgent | None = None) -> None:
        self._url = url.encode("ascii")
        self._store = store
        self._reactor = reactor
        self._agent = agent if agent is not None else Agent(reactor, connectTimeout=PUSH_TIMEOUT)

    def message(self, account: str, sender: Originator, content_type: str, content: str) -> Deferred[None]:
        """Notify every device of `account` of a message from `sender` (the badge counts it already)."""
        notifying = Deferred.fromCoroutine(self._message(account, sender, content_type, content))
        return notifying.addErrback(
            lambda f: self.log.failure("Push notifications for {account} failed", f, account=account))

    async def _message(self, account: str, sender: Originator, content_type: str, content: str) -> None:
        devices = await self._store.device_tokens(account)
        if not devices:
            return
        unread = await self._store.unread_count(account)
        await DeferredList(consumeErrors=True, deferredList=[Deferred.fromCoroutine(self._notify(account, device, {
            "event": "message", "token": device.background_token or device.token, "app-id": device.app_id,
            "platform": device.platform, "device-id": device.device_id, "silent": 0, "call-id": str(uuid.uuid4()),
            "from": sender.uri, "from-display-name": sender.display_name, "media-type": "sms", "to": account,
            "badge": max(1, unread), "content-type": content_type, "content": content})) for device in devices])

    async def _notify(self, account: str, device: DeviceToken, payload: dict[str, Any]) -> None:
        headers = Headers({b"Content-Type": [b"application/json"],
                           b"User-Agent": [f"sylkgateway/{__version__}".encode()]})
        sending = self._agent.request(b"POST", self._url, headers, _Body(json.dumps(payload).encode("utf-8")))
        sending.addTimeout(PUSH_TIMEOUT, self._reactor)
        try:
            response = await sending
            response.deliverBody(_Discard())  # the status says all: no body is read, however large or slow
            if response.code == 410:  # the push service says the token is no more
                self.log.info("Push token of device {device} of {account} expired: forgotten",
                              device=device.device_id, account=account)
                await self._store.remove_device_token(account, device.app_id, device.device_id)
            elif response.code == 200:
                self.log.info("Push notification sent to a {platform} device of {account}",
                              platform=device.platform, account=account)
            else:
                self.log.warn("Push notification for {account} refused: {code} {phrase}", account=account,
                              code=response.code, phrase=response.phrase.decode("utf-8", "replace")[:200])
        except Exception as e:
            self.log.warn("Push notification for {account} not sent: {error}", account=account, error=e)


class _Discard:
    """A body consumer that reads nothing: it stops the body at once (the push service's status says enough)."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


@implementer(IBodyProducer)
class _Body:
    """A request body that is all in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
