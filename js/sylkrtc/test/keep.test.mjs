// Resuming after a drop: connection-keep on ready, connection-resume on the next socket, the snapshot and the events
// of the time without a socket applied to the same Account and Call objects, the fallback when the gateway refuses,
// 4409, and the token in sessionStorage for a page reload.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { connect } from '../dist/sylkrtc.js';
import { FakeRTCPeerConnection, FakeStorage, FakeWebSocket, fakeEnv, flush } from './fakes.mjs';
import { ANSWER, OFFER, URL, addAccount, answeredIncomingCall, answeredOutgoingCall, eachDialect, mediaStream,
    readyConnection, record, registeredAccount, rejection, test } from './helpers.mjs';

const TOKEN = /^[A-Za-z0-9_-]{32}$/;
const KEY = `sylkrtc.resume ${URL}`;
const HOST = { candidate: 'candidate:1 1 udp 2122194687 192.0.2.2 57066 typ host generation 0', sdpMid: '0', sdpMLineIndex: 0 };
/** Connection options for resuming (the default) without touching any storage. */
const RESUMING = { resume: true, resumeStorage: null };

/** A ready connection that resumes, on a gateway speaking `protocol`, whose connection-keep was acked. */
async function keptConnection(protocol, options = {}) {
    const ctx = await readyConnection({ server: [protocol], ...RESUMING, ...options });
    ctx.ws.ackAll('connection-keep');
    await flush();
    return ctx;
}

/** The current socket drops (`code`); after the 0.5 s delay the next one is ready. Returns it. */
async function dropAndReconnect(ctx, code = 1006) {
    FakeWebSocket.last.drop(code, '');
    await flush();
    await ctx.clock.tick(500);
    const ws = FakeWebSocket.last;
    ws.ready();
    await flush();
    return ws;
}

/**
 * The gateway takes `ws`'s connection-resume: ack, resumed (`missed`), then `events(ws)` (the snapshot and what
 * happened meanwhile), then it acks the fresh connection-keep. Returns both requests.
 */
async function resumeOn(ws, events = () => {}, missed = 0) {
    const [resume] = ws.requests('connection-resume');
    ws.ack(resume);
    ws.resumed(missed);
    events(ws);
    await flush();
    const [keep] = ws.requests('connection-keep');
    ws.ack(keep);
    await flush();
    return { resume, keep };
}

describe('connection-keep', () => {
    test('on ready it asks the gateway to keep the connection, with a fresh random token; ready does not wait', async () => {
        const { env } = fakeEnv();
        const tokens = [];
        for (let i = 0; i < 2; i++) {
            const conn = connect(URL, { env }); // the defaults
            const ws = FakeWebSocket.last;
            ws.ready();
            await flush();
            assert.equal(conn.state, 'ready');
            const [keep] = ws.sent;
            assert.deepEqual(Object.keys(keep).sort(), ['sylkrtc', 'token', 'transaction']);
            assert.equal(keep.sylkrtc, 'connection-keep');
            assert.match(keep.token, TOKEN);
            assert.ok(new Set(keep.token).size >= 10, 'random, as the gateway checks');
            tokens.push(keep.token);
        }
        assert.notEqual(tokens[0], tokens[1]);
    });

    test('resume: false sends none', async () => {
        const { ws } = await readyConnection({ resume: false });
        assert.deepEqual(ws.requests('connection-keep'), []);
    });

    test('a gateway that does not know connection-keep: a drop loses everything, as before', async () => {
        const ctx = await readyConnection(RESUMING);
        ctx.ws.error(ctx.ws.requests('connection-keep')[0], "unknown request type 'connection-keep'");
        const alice = await registeredAccount(ctx);
        const log = record(ctx.conn, 'stateChanged');
        const ws = await dropAndReconnect(ctx);
        assert.equal(log[0][3].resuming, undefined);
        assert.equal(alice.registrationState, 'failed');
        assert.deepEqual(ws.requests('connection-resume'), []);
        assert.deepEqual(ws.requests('account-add').map((m) => m.account), ['alice@sylk.test']);
    });
});

eachDialect((protocol) => {
    test('after a drop the call and the account wait as they were; the next socket resumes them', async () => {
        const ctx = await answeredOutgoingCall(protocol, { connection: RESUMING });
        const { conn, account, call, pc } = ctx;
        ctx.ws.registrationState(account.id, 'registered');
        ctx.ws.sessionState(call.id, 'established');
        await flush();
        const token = ctx.ws.requests('connection-keep')[0].token;
        const connLog = record(conn, 'stateChanged', 'resumed');
        const callLog = record(call, 'stateChanged', 'dtmf');
        const accountLog = record(account, 'registrationStateChanged', 'removed');

        FakeWebSocket.last.drop(1006, '');
        await flush();
        assert.deepEqual(connLog, [['stateChanged', 'disconnected', 'ready',
            { code: 1006, reason: '', retryIn: 500, resuming: true }]]);
        assert.equal(conn.resuming, true);
        assert.equal(call.state, 'established');
        assert.equal(pc.closed, false, 'the media go on');
        assert.equal(account.registrationState, 'registered');
        assert.deepEqual(conn.calls, [call]);
        assert.equal((await rejection(call.hold())).kind, 'not-ready');

        await ctx.clock.tick(500);
        assert.deepEqual(connLog[1], ['stateChanged', 'connecting', 'disconnected', { resuming: true }]);
        const ws = FakeWebSocket.last;
        ws.ready();
        await flush();
        assert.deepEqual(ws.sent.map((m) => [m.sylkrtc, m.token]), [['connection-resume', token]],
            'the resume first, and nothing else until it is answered');
        const [resume] = ws.sent;
        ws.ack(resume);
        ws.resumed(0);
        ws.registrationState(account.id, 'registered');
        ws.sessionState(call.id, 'established');
        ws.dtmf(call.id, { digit: '5', method: 'info' }); // happened while detached
        await flush();
        const [keep] = ws.requests('connection-keep');
        assert.match(keep.token, TOKEN);
        assert.notEqual(keep.token, token, 'a token is good for one resume');
        assert.equal(conn.state, 'connecting', 'ready once everything before the answer to the fresh keep is in');
        ws.ack(keep);
        await flush();

        assert.deepEqual(connLog.slice(2), [['resumed', { missed: 0 }], ['stateChanged', 'ready', 'connecting', {}]]);
        assert.equal(conn.resuming, false);
        assert.deepEqual(callLog, [['dtmf', { digit: '5', duration: null, method: 'info' }]]);
        assert.deepEqual(accountLog, [], 'no Connection lost, nothing added again');
        assert.deepEqual(conn.accounts, [account]);
        assert.deepEqual(conn.calls, [call]);
        assert.deepEqual(ws.requests('account-add'), []);
        assert.deepEqual(ws.requests('session-terminate'), []);

        const ending = call.terminate(); // the call goes on: hanging up works
        await flush();
        ws.ackAll('session-terminate');
        ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
        await ending;
        assert.equal(call.reason, '200 OK');
        assert.equal(pc.closed, true);
    });

    test('the snapshot is the truth; the answer of a call answered meanwhile comes in the events that follow', async () => {
        const ctx = await keptConnection(protocol);
        const alice = await registeredAccount(ctx);
        const bob = await registeredAccount(ctx, { account: 'bob@sylk.test', password: 'bobpw' });
        const call = alice.call('carol@sylk.test', { localStream: mediaStream() });
        await flush();
        ctx.ws.ackAll('session-create');
        ctx.ws.sessionState(call.id, 'progress');
        await flush();
        const pc = FakeRTCPeerConnection.last;
        const callLog = record(call, 'stateChanged');
        const aliceLog = record(alice, 'registrationStateChanged');
        const bobLog = record(bob, 'registrationStateChanged');

        const ws = await dropAndReconnect(ctx);
        await resumeOn(ws, () => {
            ws.registrationState(alice.id, 'registered'); // the snapshot: current
            ws.registrationState(bob.id, 'failed', '403 Forbidden');
            ws.sessionState(call.id, 'accepted'); // (no answer in a snapshot)
            ws.registrationState(alice.id, 'failed', '408 Request Timeout'); // what happened meanwhile
            ws.registrationState(alice.id, 'registering');
            ws.registrationState(alice.id, 'registered');
            ws.registrationState(bob.id, 'failed', '403 Forbidden');
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            ws.sessionState(call.id, 'established');
        });
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(aliceLog, [], 'registered before, registered now');
        assert.deepEqual(bobLog, [['registrationStateChanged', 'failed', 'registered', '403 Forbidden']]);
        assert.deepEqual(callLog.map((e) => e[1]), ['accepted', 'established']);
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'answer', sdp: ANSWER }]);
    });

    test('events missed: a state without its answer ends the call; one that needs none is taken', async () => {
        const ctx = await keptConnection(protocol);
        const alice = await registeredAccount(ctx);
        const out = alice.call('bob@sylk.test', { localStream: mediaStream() });
        await flush();
        ctx.ws.ackAll('session-create');
        ctx.ws.sessionState(out.id, 'progress');
        ctx.ws.incomingSession(alice.id, 'in-1', { originator: { uri: 'carol@sylk.test' }, sdp: OFFER });
        await flush();
        const incoming = alice.calls.find((c) => c.id === 'in-1');
        const answering = incoming.answer({ localStream: mediaStream() });
        await flush();
        ctx.ws.ackAll();
        await answering;
        ctx.ws.sessionState('in-1', 'accepted');
        await flush();
        const log = record(ctx.conn, 'resumed');

        const ws = await dropAndReconnect(ctx);
        await resumeOn(ws, () => {
            ws.registrationState(alice.id, 'registered');
            ws.sessionState(out.id, 'established'); // its accepted, with the answer, was among the missed
            ws.sessionState('in-1', 'established');
        }, 3);
        assert.deepEqual(log, [['resumed', { missed: 3 }]]);
        assert.equal(out.state, 'terminated');
        assert.equal(out.reason, 'The answer to the call was lost while disconnected');
        assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [out.id], 'ended at the gateway too');
        assert.equal(incoming.state, 'established');
    });

    test('calls the gateway no longer has end; a ringing call is not new, one we did not know is', async () => {
        const ctx = await answeredIncomingCall(protocol, { connection: RESUMING });
        const { account, call: gone } = ctx;
        ctx.ws.sessionState(gone.id, 'established');
        const hungUp = account.call('bob@sylk.test', { localStream: mediaStream() });
        await flush();
        ctx.ws.ackAll();
        ctx.ws.sessionState(hungUp.id, 'progress');
        ctx.ws.sessionState(hungUp.id, 'accepted', { sdp: ANSWER });
        ctx.ws.incomingSession(account.id, 'in-2', { originator: { uri: 'dave@sylk.test' }, sdp: OFFER });
        await flush();
        const ringing = account.calls.find((c) => c.id === 'in-2');
        const offers = [];
        account.on('incomingCall', (call) => offers.push([call.id, ctx.conn.state]));

        const ws = await dropAndReconnect(ctx);
        await resumeOn(ws, () => {
            ws.registrationState(account.id, 'registered');
            ws.incomingSession(account.id, 'in-2', { originator: { uri: 'dave@sylk.test' }, sdp: OFFER });
            ws.incomingSession(account.id, 'in-3', { originator: { uri: 'erin@sylk.test' }, sdp: OFFER });
            ws.sessionState(hungUp.id, 'terminated', { reason: '200 OK' });
        });
        assert.equal(gone.state, 'terminated');
        assert.equal(gone.reason, 'Ended while disconnected', 'not in the snapshot: its end was lost');
        assert.equal(hungUp.reason, '200 OK');
        assert.equal(ringing.state, 'incoming');
        assert.deepEqual(offers, [['in-3', 'ready']], 'offered once it can be answered');
        assert.deepEqual(ctx.conn.calls.map((c) => c.id).sort(), ['in-2', 'in-3']);
        assert.deepEqual(ws.requests('session-terminate'), []);
    });

    test('a refused resume falls back: calls end with Connection lost, accounts are added and registered again', async () => {
        const ctx = await answeredOutgoingCall(protocol, { connection: RESUMING });
        const { account, call } = ctx;
        ctx.ws.registrationState(account.id, 'registered');
        await flush();
        const accountLog = record(account, 'registrationStateChanged');

        const ws = await dropAndReconnect(ctx);
        assert.equal(call.state, 'accepted', 'nothing torn down before the gateway answers');
        ws.error(ws.requests('connection-resume')[0], 'Unknown, expired or already used token');
        await flush();
        assert.equal(call.state, 'terminated');
        assert.equal(call.reason, 'Connection lost');
        assert.equal(ctx.pc.closed, true);
        assert.deepEqual(accountLog, [['registrationStateChanged', 'failed', 'registered', 'Connection lost']]);
        assert.equal(ctx.conn.resuming, false);
        assert.deepEqual(ws.sent.map((m) => m.sylkrtc), ['connection-resume', 'connection-keep', 'account-add']);
        ws.ackAll('account-add');
        await flush();
        assert.equal(ctx.conn.state, 'ready');
        assert.deepEqual(ws.requests('account-register').map((m) => m.account), [account.id]);
    });

    test('what a call must answer at once while the resume is applied is answered: the far end\'s re-INVITE', async () => {
        const ctx = await answeredOutgoingCall(protocol, { connection: RESUMING });
        const { call, pc } = ctx;
        const log = record(call, 'updated', 'stateChanged');
        const ws = await dropAndReconnect(ctx);
        await resumeOn(ws, () => {
            ws.registrationState(ctx.account.id, 'unregistered');
            ws.sessionState(call.id, 'accepted');
            ws.update(call.id, { state: 'received', sdp: OFFER }); // the far end's re-INVITE while detached
        });
        await flush();
        const [update] = ws.requests('session-update');
        assert.equal(update.sdp, pc.localDescription.sdp);
        ws.ack(update);
        await flush();
        assert.deepEqual(log, [['updated', { originator: 'remote' }]]);
        assert.equal(call.state, 'accepted');
    });

    test('4409: another socket resumed the connection: closed for good, and said so', async () => {
        const ctx = await answeredOutgoingCall(protocol, { connection: RESUMING });
        const log = record(ctx.conn, 'stateChanged');
        ctx.ws.drop(4409, 'Resumed on another connection');
        await flush();
        assert.deepEqual(log, [['stateChanged', 'closed', 'ready', { code: 4409, reason: 'Resumed on another connection' }]]);
        assert.equal(ctx.call.reason, 'Resumed on another connection');
        assert.equal(ctx.account.active, false);
        await ctx.clock.tick(60000);
        assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect');
    });
});

describe('resuming', () => {
    test('each resume is followed by a fresh keep, and the next drop resumes with that token', async () => {
        const ctx = await keptConnection('sylkRTC-2');
        const alice = await registeredAccount(ctx);
        let token = ctx.ws.requests('connection-keep')[0].token;
        for (let i = 0; i < 3; i++) {
            const ws = await dropAndReconnect(ctx);
            const { resume, keep } = await resumeOn(ws, () => ws.registrationState(alice.id, 'registered'));
            assert.equal(resume.token, token);
            assert.notEqual(keep.token, token);
            token = keep.token;
            assert.equal(ctx.conn.state, 'ready');
        }
        assert.equal(alice.registrationState, 'registered');
    });

    test('a socket that drops in the middle of a resume: the token is spent, the next socket starts over', async () => {
        const ctx = await keptConnection('sylkRTC-2');
        const alice = await registeredAccount(ctx);
        const ws = await dropAndReconnect(ctx);
        ws.ack(ws.requests('connection-resume')[0]);
        ws.drop(1006);
        await flush();
        assert.equal(ctx.conn.resuming, false);
        assert.equal(alice.registrationState, 'failed');
        await ctx.clock.tick(1000);
        const next = FakeWebSocket.last;
        next.ready();
        await flush();
        assert.deepEqual(next.sent.map((m) => m.sylkrtc), ['connection-keep', 'account-add']);
    });

    test('a resume not answered in time: the socket is dropped and the next one starts over', async () => {
        const ctx = await keptConnection('sylkRTC-2');
        const alice = await registeredAccount(ctx);
        const ws = await dropAndReconnect(ctx);
        await ctx.clock.tick(10000);
        assert.deepEqual(ws.closedWith, { code: 4000, reason: 'No answer to connection-resume' });
        assert.equal(ctx.conn.state, 'disconnected');
        assert.equal(alice.registrationState, 'failed');
    });

    test('while disconnected: candidates wait, and what was ended or removed here is ended or removed there', async () => {
        const ctx = await keptConnection('sylkRTC-2');
        const alice = await registeredAccount(ctx);
        const bob = await addAccount(ctx, { account: 'bob@sylk.test', password: 'bobpw' });
        const call = alice.call('carol@sylk.test', { localStream: mediaStream() });
        await flush();
        const pc = FakeRTCPeerConnection.last;
        ctx.ws.ackAll();
        ctx.ws.sessionState(call.id, 'progress');
        ctx.ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
        const other = alice.call('dave@sylk.test', { localStream: mediaStream() });
        await flush();
        ctx.ws.ackAll();
        ctx.ws.sessionState(other.id, 'progress');
        await flush();
        pc.candidate(HOST); // its trickle is under way when the socket drops
        await flush();

        FakeWebSocket.last.drop(1006);
        await flush();
        pc.candidate(null);
        await other.terminate();
        assert.equal(other.reason, 'Terminated locally (Cannot send session-terminate: the connection is disconnected, not ready)');
        await ctx.conn.removeAccount(bob);
        assert.equal(call.state, 'accepted', 'a failed trickle does not end the call while the gateway keeps it');
        await ctx.clock.tick(500);
        const ws = FakeWebSocket.last;
        ws.ready();
        await flush();
        await resumeOn(ws, () => {
            ws.registrationState(alice.id, 'registered');
            ws.registrationState(bob.id, 'unregistered'); // (never registered)
            ws.sessionState(call.id, 'accepted');
            ws.sessionState(other.id, 'progress');
        });
        assert.deepEqual(ws.requests('session-trickle').map((m) => [m.session, m.candidates]), [[call.id, [HOST]], [call.id, []]]);
        assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [other.id]);
        assert.deepEqual(ws.requests('account-remove').map((m) => m.account), [bob.id]);
        assert.equal(call.state, 'accepted');
        assert.deepEqual(ctx.conn.accounts, [alice]);
    });

    test('an account the gateway no longer has is removed', async () => {
        const ctx = await keptConnection('sylkRTC-2');
        const alice = await registeredAccount(ctx);
        const bob = await addAccount(ctx, { account: 'bob@sylk.test', password: 'bobpw' });
        const log = record(bob, 'removed');
        const ws = await dropAndReconnect(ctx);
        await resumeOn(ws, () => ws.registrationState(alice.id, 'registered'));
        assert.deepEqual(log, [['removed', 'Removed while disconnected']]);
        assert.deepEqual(ctx.conn.accounts, [alice]);
    });
});

describe('the token in sessionStorage', () => {
    test('kept per gateway URL once acked, so that a reload resumes; addAccount takes the kept accounts over', async () => {
        const storage = new FakeStorage();
        globalThis.sessionStorage = storage;
        try {
            const { env, clock } = fakeEnv();
            const before = connect(URL, { env });
            FakeWebSocket.last.ready();
            await flush();
            const [keep] = FakeWebSocket.last.requests('connection-keep');
            assert.equal(storage.getItem(KEY), null, 'not before the gateway took it');
            FakeWebSocket.last.ack(keep);
            await flush();
            assert.deepEqual([...storage.entries], [[KEY, keep.token]]);
            assert.equal(before.state, 'ready');

            // the page reloads: its socket closes (the gateway keeps its state), a new page connects again
            const after = connect(URL, { env });
            const ws = FakeWebSocket.last;
            ws.ready();
            await flush();
            assert.deepEqual(ws.sent.map((m) => [m.sylkrtc, m.token]), [['connection-resume', keep.token]]);
            assert.equal(storage.getItem(KEY), null, 'spent');
            const { keep: fresh } = await resumeOn(ws, () => {
                ws.registrationState('alice@sylk.test', 'registered');
                ws.incomingSession('alice@sylk.test', 'in-9', { originator: { uri: 'bob@sylk.test' }, sdp: OFFER });
                ws.sessionState('old-call', 'established'); // the previous page's: its PeerConnection is gone
            });
            assert.equal(after.state, 'ready');
            assert.equal(storage.getItem(KEY), fresh.token);
            assert.deepEqual(after.keptAccounts, ['alice@sylk.test']);
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), ['old-call']);

            const alice = await after.addAccount({ account: 'alice@sylk.test', password: 'alicepw' });
            const offers = record(alice, 'incomingCall');
            assert.deepEqual(ws.requests('account-add'), [], 'taken over, not added');
            assert.equal(alice.registrationState, 'registered');
            assert.deepEqual(after.keptAccounts, []);
            await clock.tick(0);
            assert.deepEqual(offers.map((e) => e[1].id), ['in-9'], 'the call still ringing');

            after.close();
            assert.equal(storage.getItem(KEY), null, 'nothing to resume after close()');
        } finally {
            delete globalThis.sessionStorage;
        }
    });

    test('a kept account nobody takes over can be removed by its address', async () => {
        const storage = new FakeStorage({ [KEY]: 'A'.repeat(10) + 'bcdefghijklmnopqrstuv' });
        const { env } = fakeEnv();
        const conn = connect(URL, { env, resumeStorage: storage });
        const ws = FakeWebSocket.last;
        ws.ready();
        await flush();
        await resumeOn(ws, () => ws.registrationState('alice@sylk.test', 'registered'));
        const removing = conn.removeAccount('sip:alice@sylk.test');
        await flush();
        assert.deepEqual(ws.requests('account-remove').map((m) => m.account), ['alice@sylk.test']);
        ws.ackAll('account-remove');
        await removing;
        assert.deepEqual(conn.keptAccounts, []);
    });

    test('resumeStorage: a store of the app\'s, or null for none; a malformed stored token is ignored', async () => {
        const mine = new FakeStorage();
        const { env } = fakeEnv();
        connect(URL, { env, resumeStorage: mine });
        FakeWebSocket.last.ready();
        await flush();
        FakeWebSocket.last.ackAll('connection-keep');
        await flush();
        assert.match(mine.getItem(KEY), TOKEN);

        const shared = new FakeStorage({ [KEY]: 'not a token' });
        globalThis.sessionStorage = shared;
        try {
            connect(URL, { env, resumeStorage: null });
            FakeWebSocket.last.ready();
            await flush();
            FakeWebSocket.last.ackAll('connection-keep');
            await flush();
            assert.deepEqual([...shared.entries], [[KEY, 'not a token']], 'null: not touched');
            connect(URL, { env });
            FakeWebSocket.last.ready();
            await flush();
            assert.deepEqual(FakeWebSocket.last.sent.map((m) => m.sylkrtc), ['connection-keep']);
        } finally {
            delete globalThis.sessionStorage;
        }
    });

    test('a storage that throws is as none', async () => {
        const broken = { getItem() { throw new Error('SecurityError'); }, setItem() { throw new Error('QuotaExceeded'); },
            removeItem() { throw new Error('SecurityError'); } };
        const { env } = fakeEnv();
        const conn = connect(URL, { env, resumeStorage: broken });
        FakeWebSocket.last.ready();
        await flush();
        FakeWebSocket.last.ackAll('connection-keep');
        await flush();
        assert.equal(conn.state, 'ready');
        conn.close();
    });
});
