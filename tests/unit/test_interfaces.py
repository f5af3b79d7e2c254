"""Every zope.interface implementer really provides its interface (methods with the right signatures and the
declared attributes): `@implementer` alone checks nothing."""

from __future__ import annotations

from twisted.application.service import IServiceMaker
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

from sylk.gateway.interfaces import (ICallObserver, IConnectionPeer, ISIPBackend, ISIPCall, ISIPSession,
                                     ISIPSessionObserver, ISIPUserAgent, IUserAgentObserver)
from sylk.gateway.websocket import GatewayWebSocketProtocol, SlowReaderGuard
from tests.unit.test_calls import CallTestCase
from tests.unit.test_connection import ALICE


class ImplementerTests(CallTestCase):
    def test_the_backend_and_the_browser_side(self) -> None:
        connection, _ = self.connect()
        self.add(connection)
        self.dial(connection)
        account = connection.accounts[ALICE]
        call = connection.sessions["s1"]
        self.assertTrue(verifyObject(ISIPBackend, connection._backend))
        self.assertTrue(verifyObject(ISIPSession, connection._session))
        self.assertTrue(verifyObject(ISIPSessionObserver, connection))
        self.assertTrue(verifyObject(ISIPUserAgent, account._user_agent))
        self.assertTrue(verifyObject(IUserAgentObserver, account))
        self.assertTrue(verifyObject(ISIPCall, call.sip_call))
        self.assertTrue(verifyObject(ICallObserver, call))

    def test_the_websocket_side(self) -> None:
        self.assertTrue(verifyObject(IConnectionPeer, GatewayWebSocketProtocol()))
        self.assertTrue(verifyObject(IPushProducer, SlowReaderGuard(StringTransport(), Clock(), lambda why: None)))

    def test_the_twistd_plugin(self) -> None:
        (maker,) = [plugin for plugin in getPlugins(IServiceMaker) if plugin.tapname == "sylkgateway"]
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertTrue(verifyObject(IPlugin, maker))
