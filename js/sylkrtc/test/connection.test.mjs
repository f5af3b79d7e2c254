import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { Connection, SylkRTCError, connect } from '../dist/sylkrtc.js';
import { FakeWebSocket, flush } from './fakes.mjs';
import { URL, addAccount, newConnection, readyConnection, record, registeredAccount, rejection, test } from './helpers.mjs';

describe('connecting', () => {
    test('offers sylkRTC-2 and sylkRTC-1, speaks what the gateway selects, is ready only after the ready event', async () => {
        const { conn, ws } = newConnection();
        const log = record(conn, 'stateChanged');
        assert.ok(conn instanceof Connection);
        assert.equal(ws.url, URL);
        assert.deepEqual(ws.protocols, ['sylkRTC-2', 'sylkRTC-1']);
        assert.deepEqual(conn.protocols, ['sylkRTC-2', 'sylkRTC-1']);
        assert.equal(conn.state, 'connecting');
        assert.equal(conn.protocol, null);
        ws.open();
        await flush();
        assert.equal(conn.protocol, 'sylkRTC-2', 'the gateway prefers sylkRTC-2');
        assert.equal(conn.state, 'connecting', 'an open socket is not ready yet');
        ws.receive({ sylkrtc: 'event', event: 'ready' }); // sylkRTC-1's ready: not this socket's dialect
        await flush();
        assert.equal(conn.state, 'connecting');
        ws.receive({ sylkrtc: 'ready-event' });
        await flush();
        assert.equal(conn.state, 'ready');
        assert.deepEqual(log, [['stateChanged', 'ready', 'connecting', {}]]);
    });

    test('falls back to sylkRTC-1 with a gateway that only speaks that', async () => {
        const { conn, ws } = newConnection({ server: ['sylkRTC-1'] });
        ws.open();
        assert.equal(ws.protocol, 'sylkRTC-1');
        assert.equal(conn.protocol, 'sylkRTC-1');
        ws.receive({ sylkrtc: 'ready-event' }); // not sylkRTC-1: ignored
        await flush();
        assert.equal(conn.state, 'connecting');
        ws.receive({ sylkrtc: 'event', event: 'ready' });
        await flush();
        assert.equal(conn.state, 'ready');
    });

    test('the protocols option forces one dialect', async () => {
        for (const protocols of [['sylkRTC-1'], 'sylkRTC-1']) {
            const { conn, ws } = newConnection({ protocols });
            assert.deepEqual(ws.protocols, ['sylkRTC-1']);
            assert.deepEqual(conn.protocols, ['sylkRTC-1']);
            ws.ready();
            await flush();
            assert.equal(conn.protocol, 'sylkRTC-1');
            assert.equal(conn.state, 'ready');
        }
        const { conn, ws } = newConnection({ protocols: ['sylkRTC-2'] });
        assert.deepEqual(ws.protocols, ['sylkRTC-2']);
        ws.ready();
        await flush();
        assert.equal(conn.protocol, 'sylkRTC-2');
    });

    test('unknown or repeated protocols are refused', () => {
        const { env } = newConnection();
        for (const protocols of [[], ['sylkRTC-3'], ['sylkRTC-2', 'sylkRTC-2'], 'chat', [1]]) {
            assert.throws(() => connect(URL, { env, protocols }), TypeError, JSON.stringify(protocols));
        }
    });

    test('a gateway that selects no subprotocol: its ready event tells the dialect', async () => {
        for (const [ready, protocol] of [[{ sylkrtc: 'ready-event' }, 'sylkRTC-2'],
            [{ sylkrtc: 'event', event: 'ready' }, 'sylkRTC-1']]) {
            const { conn, ws } = newConnection();
            ws.open('');
            assert.equal(conn.protocol, null);
            ws.receive({ sylkrtc: 'ack', transaction: 'x' }); // not a ready event: ignored until one comes
            ws.receive(ready);
            await flush();
            assert.equal(conn.protocol, protocol);
            assert.equal(conn.state, 'ready');
        }
    });

    test('new Connection() works like connect()', async () => {
        const { env } = newConnection();
        const conn = new Connection(URL, { env });
        assert.equal(conn.state, 'connecting');
        assert.equal(FakeWebSocket.last.url, URL);
    });

    test('an invalid URL throws at once', () => {
        const { env } = newConnection();
        class Refusing extends FakeWebSocket {
            constructor(url) {
                super(url);
                throw new SyntaxError(`The URL '${url}' is invalid`);
            }
        }
        assert.throws(() => connect('http:/nope', { env: { ...env, WebSocket: Refusing } }), SyntaxError);
    });

    test('requests before ready are refused locally, and nothing is sent', async () => {
        const { conn, ws } = newConnection();
        ws.open();
        const error = await rejection(conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw' }));
        assert.ok(error instanceof SylkRTCError);
        assert.equal(error.kind, 'not-ready');
        assert.equal(error.request, 'account-add');
        assert.match(error.message, /account-add.*connecting, not ready/);
        assert.deepEqual(ws.sent, []);
    });

    test('waitReady resolves on ready and rejects after its timeout', async () => {
        const { conn, ws, clock } = newConnection();
        const late = conn.waitReady(1000);
        const error = rejection(late);
        await clock.tick(1000);
        assert.match((await error).message, /not ready within 1 s/);
        const ready = conn.waitReady(5000);
        ws.ready();
        await ready;
        await conn.waitReady(); // at once when ready
        assert.deepEqual(clock.pending(), [], 'the timer of waitReady is cleared');
    });

    test('binary frames, invalid JSON and unknown messages are ignored; transaction-less errors are reported', async () => {
        const { conn, ws } = await readyConnection();
        const log = record(conn, 'serverError', 'stateChanged');
        ws.receiveBinary(new Uint8Array([1, 2, 3]));
        ws.receive('not json');
        ws.receive('[1, 2]');
        ws.receive({ sylkrtc: 'fly' });
        ws.receive({ sylkrtc: 'ack', transaction: 'nobody-sent-this' });
        ws.receive({ sylkrtc: 'error', error: 'Invalid JSON: Expecting value: line 1 column 1 (char 0)' });
        await flush();
        assert.deepEqual(log, [['serverError', 'Invalid JSON: Expecting value: line 1 column 1 (char 0)']]);
        assert.equal(conn.state, 'ready');
    });
});

describe('requests', () => {
    test('each request has its own transaction and is resolved by its own ack, in any order', async () => {
        const ctx = await readyConnection();
        const a = ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw' });
        const b = ctx.conn.addAccount({ account: 'bob@sylk.test', password: 'bobpw' });
        await flush();
        const [ra, rb] = ctx.ws.sent;
        assert.notEqual(ra.transaction, rb.transaction);
        assert.match(ra.transaction, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        ctx.ws.ack(rb);
        assert.equal((await b).id, 'bob@sylk.test');
        ctx.ws.ack(ra);
        assert.equal((await a).id, 'alice@sylk.test');
    });

    test('an error answer rejects with the gateway text', async () => {
        const ctx = await readyConnection();
        const adding = ctx.conn.addAccount({ account: 'alice@nowhere.test', password: 'pw' });
        await flush();
        ctx.ws.error(ctx.ws.sent[0], 'SIP domain not allowed: nowhere.test');
        const error = await rejection(adding);
        assert.ok(error instanceof SylkRTCError);
        assert.equal(error.message, 'SIP domain not allowed: nowhere.test');
        assert.equal(error.kind, 'server');
        assert.equal(error.request, 'account-add');
        assert.equal(error.transaction, ctx.ws.sent[0].transaction);
        assert.deepEqual(ctx.conn.accounts, []);
    });

    test('a request not answered within 10 s rejects, saying which request timed out; a late ack is ignored', async () => {
        const ctx = await readyConnection();
        const account = await addAccount(ctx);
        const registering = account.register();
        const error = rejection(registering);
        await ctx.clock.tick(9999);
        assert.deepEqual(ctx.clock.pending(), [1]);
        await ctx.clock.tick(1);
        const e = await error;
        assert.equal(e.kind, 'timeout');
        assert.equal(e.request, 'account-register');
        assert.equal(e.message, 'Request account-register timed out: no answer from the gateway within 10 s');
        ctx.ws.ackAll();
        await flush();
        assert.equal(ctx.conn.state, 'ready');
    });

    test('the request timeout can be changed', async () => {
        const ctx = await readyConnection({ requestTimeout: 250 });
        const adding = rejection(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw' }));
        await ctx.clock.tick(250);
        assert.match((await adding).message, /account-add timed out.* 0.25 s/);
    });

    test('an answered request leaves no timer behind', async () => {
        const ctx = await readyConnection();
        await addAccount(ctx);
        assert.deepEqual(ctx.clock.pending(), []);
    });
});

describe('reconnecting', () => {
    test('a dropped socket reconnects after 0.5 s, doubling up to 30 s; the delay resets once ready', async () => {
        const ctx = await readyConnection();
        const log = record(ctx.conn, 'stateChanged');
        const delays = [];
        for (let attempt = 0; attempt < 9; attempt++) {
            FakeWebSocket.last.drop(1006, '');
            await flush();
            assert.equal(ctx.conn.state, 'disconnected');
            const delay = log[log.length - 1][3].retryIn;
            delays.push(delay);
            const sockets = FakeWebSocket.instances.length;
            await ctx.clock.tick(delay - 1);
            assert.equal(FakeWebSocket.instances.length, sockets, 'no attempt before the delay');
            await ctx.clock.tick(1);
            assert.equal(FakeWebSocket.instances.length, sockets + 1);
            assert.equal(ctx.conn.state, 'connecting');
        }
        assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        FakeWebSocket.last.ready();
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        FakeWebSocket.last.drop(4503, 'SIP backend lost: gone');
        await flush();
        assert.deepEqual(log[log.length - 1], ['stateChanged', 'disconnected', 'ready',
            { code: 4503, reason: 'SIP backend lost: gone', retryIn: 500 }]);
        assert.equal(FakeWebSocket.last.url, ctx.ws.url);
        assert.deepEqual(FakeWebSocket.last.protocols, ['sylkRTC-2', 'sylkRTC-1']);
    });

    test('the dialect is the current socket\'s: a reconnect may get another', async () => {
        const ctx = await readyConnection();
        const alice = await registeredAccount(ctx);
        assert.equal(ctx.conn.protocol, 'sylkRTC-2');
        ctx.ws.drop(1006);
        await flush();
        assert.equal(ctx.conn.protocol, null);
        FakeWebSocket.serverProtocols = ['sylkRTC-1']; // the gateway was downgraded meanwhile
        await ctx.clock.tick(500);
        const ws2 = FakeWebSocket.last;
        ws2.ready();
        await flush();
        assert.equal(ctx.conn.protocol, 'sylkRTC-1');
        ws2.ackAll('account-add');
        await flush();
        ws2.ackAll('account-register');
        ws2.registrationState('alice@sylk.test', 'registering');
        ws2.registrationState('alice@sylk.test', 'registered');
        await flush();
        assert.equal(ws2.sent.at(-1).sylkrtc, 'account-register', 'the same requests in both dialects');
        assert.equal(alice.registrationState, 'registered');
        ctx.conn.close();
        assert.equal(ctx.conn.protocol, null);
    });

    test('the delays have jitter of up to ±20 %', async () => {
        for (const [random, expected] of [[0, 400], [0.999999, 600]]) {
            const ctx = await readyConnection({ env: { random: () => random } });
            const log = record(ctx.conn, 'stateChanged');
            ctx.ws.drop(1006);
            await flush();
            assert.equal(log[0][3].retryIn, expected);
        }
    });

    test('reconnect delays can be configured', async () => {
        const ctx = await readyConnection({ reconnect: { initialDelay: 100, maxDelay: 250, factor: 3, jitter: 0 } });
        const log = record(ctx.conn, 'stateChanged');
        for (let i = 0; i < 3; i++) {
            FakeWebSocket.last.drop(1006);
            await flush();
            await ctx.clock.tick(log[log.length - 1][3].retryIn);
        }
        assert.deepEqual(log.filter((e) => e[1] === 'disconnected').map((e) => e[3].retryIn), [100, 250, 250]);
    });

    test('1001 (shutting down) is retried; 1000 (normal closure) closes for good', async () => {
        const ctx = await readyConnection();
        ctx.ws.drop(1001, 'sylkgateway is shutting down');
        await flush();
        assert.equal(ctx.conn.state, 'disconnected');
        await ctx.clock.tick(500);
        FakeWebSocket.last.ready();
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        FakeWebSocket.last.drop(1000, 'bye');
        await flush();
        assert.equal(ctx.conn.state, 'closed');
        await ctx.clock.tick(60000);
        assert.equal(FakeWebSocket.instances.length, 2);
    });

    test('a handshake refused (no ready, socket closed) is retried too', async () => {
        const { conn, ws, clock } = newConnection();
        ws.drop(1006, ''); // e.g. HTTP 503 while the SIP backend is down
        await flush();
        assert.equal(conn.state, 'disconnected');
        await clock.tick(500);
        assert.equal(FakeWebSocket.instances.length, 2);
        FakeWebSocket.last.ready();
        await flush();
        assert.equal(conn.state, 'ready');
    });

    test('no ready event within the connect timeout: the socket is abandoned and retried', async () => {
        const { conn, ws, clock } = newConnection();
        const log = record(conn, 'stateChanged');
        ws.open();
        await clock.tick(9999);
        assert.equal(conn.state, 'connecting');
        await clock.tick(1);
        assert.equal(conn.state, 'disconnected');
        assert.deepEqual(ws.closedWith, { code: 4000, reason: 'No ready event' });
        assert.equal(log[0][3].reason, 'No ready event from the gateway within 10 s');
        ws.ready(); // too late: ignored
        await flush();
        assert.equal(conn.state, 'disconnected');
        await clock.tick(500);
        FakeWebSocket.last.ready();
        await flush();
        assert.equal(conn.state, 'ready');
    });

    test('reconnect: false closes on the first drop', async () => {
        const ctx = await readyConnection({ reconnect: false });
        ctx.ws.drop(1006);
        await flush();
        assert.equal(ctx.conn.state, 'closed');
        await ctx.clock.tick(60000);
        assert.equal(FakeWebSocket.instances.length, 1);
    });

    test('pending requests fail when the socket drops', async () => {
        const ctx = await readyConnection();
        const adding = rejection(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw' }));
        await flush();
        ctx.ws.drop(1006);
        const error = await adding;
        assert.equal(error.kind, 'connection-lost');
        assert.match(error.message, /Connection lost before the answer to account-add/);
        assert.deepEqual(ctx.clock.pending(), [500], 'only the reconnect timer is left');
    });

    test('accounts are added again, registered ones registered again, before the connection is ready', async () => {
        const ctx = await readyConnection();
        const alice = await registeredAccount(ctx, { displayName: 'Alice', userAgent: 'Demo 1.0' });
        const bob = await addAccount(ctx, { account: 'bob@sylk.test', password: 'bobpw' });
        const carol = await registeredAccount(ctx, { account: 'carol@sylk.test', password: 'carolpw' });
        const unregistering = carol.unregister();
        await flush();
        ctx.ws.ackAll();
        await unregistering;
        ctx.ws.registrationState('carol@sylk.test', 'unregistered');
        await flush();
        const firstAdd = ctx.ws.requests('account-add')[0];
        const aliceLog = record(alice, 'registrationStateChanged');
        const connLog = record(ctx.conn, 'stateChanged');

        ctx.ws.drop(4503, 'SIP backend lost: Janus exited');
        await flush();
        assert.deepEqual(aliceLog, [['registrationStateChanged', 'failed', 'registered', 'Connection lost']]);
        assert.equal(bob.registrationState, null);
        assert.equal(carol.registrationState, 'unregistered');
        assert.deepEqual(ctx.conn.accounts, [alice, bob, carol]);

        await ctx.clock.tick(500);
        const ws2 = FakeWebSocket.last;
        ws2.ready();
        await flush();
        assert.equal(ctx.conn.state, 'connecting', 'not ready before the accounts are back');
        const adds = ws2.requests('account-add');
        assert.deepEqual(adds.map((m) => m.account), ['alice@sylk.test', 'bob@sylk.test', 'carol@sylk.test']);
        const { transaction: _t, ...again } = adds[0];
        const { transaction: _t0, ...before } = firstAdd;
        assert.deepEqual(again, before, 'the same HA1, display name and user agent');
        assert.equal(again.display_name, 'Alice');
        assert.equal(again.user_agent, 'Demo 1.0');
        assert.deepEqual(ws2.requests('account-register'), []);
        ws2.ackAll('account-add');
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(connLog.map((e) => e[1]), ['disconnected', 'connecting', 'ready']);
        assert.deepEqual(ws2.requests('account-register').map((m) => m.account), ['alice@sylk.test']);
        ws2.ackAll('account-register');
        ws2.registrationState('alice@sylk.test', 'registering');
        ws2.registrationState('alice@sylk.test', 'registered');
        await flush();
        assert.deepEqual(aliceLog.map((e) => e[1]), ['failed', 'registering', 'registered']);
    });

    test('an account the gateway refuses after the reconnect is removed', async () => {
        const ctx = await readyConnection();
        const alice = await registeredAccount(ctx);
        const log = record(alice, 'removed', 'registrationStateChanged');
        ctx.ws.drop(1006);
        await ctx.clock.tick(500);
        FakeWebSocket.last.ready();
        await flush();
        FakeWebSocket.last.error(FakeWebSocket.last.sent[0], 'SIP domain not allowed: sylk.test');
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(ctx.conn.accounts, []);
        assert.equal(alice.active, false);
        assert.deepEqual(log.at(-1), ['removed',
            'Could not add the account again after reconnecting: SIP domain not allowed: sylk.test']);
        assert.deepEqual(FakeWebSocket.last.requests('account-register'), []);
    });

    test('unregister() while disconnected cancels registering again', async () => {
        const ctx = await readyConnection();
        const alice = await registeredAccount(ctx);
        ctx.ws.drop(1006);
        await flush();
        await alice.unregister();
        assert.equal(alice.registrationState, 'unregistered');
        await ctx.clock.tick(500);
        FakeWebSocket.last.ready();
        await flush();
        FakeWebSocket.last.ackAll();
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(FakeWebSocket.last.requests('account-register'), []);
    });

    test('an account removed while disconnected is not added again', async () => {
        const ctx = await readyConnection();
        const alice = await addAccount(ctx);
        ctx.ws.drop(1006);
        await flush();
        await ctx.conn.removeAccount(alice);
        assert.deepEqual(ctx.conn.accounts, []);
        await ctx.clock.tick(500);
        FakeWebSocket.last.ready();
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(FakeWebSocket.last.sent, []);
    });
});

describe('close()', () => {
    test('closes with 1000, fails pending requests, forgets accounts and never reconnects', async () => {
        const ctx = await readyConnection();
        const alice = await registeredAccount(ctx);
        const aliceLog = record(alice, 'registrationStateChanged', 'removed');
        const log = record(ctx.conn, 'stateChanged');
        const pending = rejection(alice.unregister());
        await flush();
        ctx.conn.close();
        assert.equal(ctx.conn.state, 'closed');
        assert.deepEqual(ctx.ws.closedWith, { code: 1000, reason: 'Closed by the application' });
        assert.equal((await pending).kind, 'connection-lost');
        assert.deepEqual(log, [['stateChanged', 'closed', 'ready', { code: 1000, reason: 'Closed by the application' }]]);
        assert.deepEqual(aliceLog, [
            ['registrationStateChanged', 'unregistered', 'registered', 'Connection closed'],
            ['removed', 'Connection closed'],
        ]);
        assert.deepEqual(ctx.conn.accounts, []);
        await flush();
        await ctx.clock.tick(120000);
        assert.equal(FakeWebSocket.instances.length, 1);
        assert.deepEqual(ctx.clock.pending(), []);
        const error = await rejection(ctx.conn.addAccount({ account: 'bob@sylk.test', password: 'bobpw' }));
        assert.equal(error.kind, 'not-ready');
        ctx.conn.close(); // twice is fine
    });

    test('close() while waiting to reconnect cancels the reconnect', async () => {
        const ctx = await readyConnection();
        ctx.ws.drop(1006);
        await flush();
        ctx.conn.close();
        await ctx.clock.tick(60000);
        assert.equal(FakeWebSocket.instances.length, 1);
        assert.equal(ctx.conn.state, 'closed');
    });
});
