import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { Call, SylkRTCError } from '../dist/sylkrtc.js';
import { FakeMediaStream, FakeRTCPeerConnection, FakeTrack, FakeWebSocket, flush } from './fakes.mjs';
import { addAccount, eachDialect, readyConnection, record, registeredAccount, rejection, test } from './helpers.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const HOST = { candidate: 'candidate:1 1 udp 2122194687 192.0.2.2 57066 typ host generation 0', sdpMid: '0', sdpMLineIndex: 0 };
const SRFLX = { candidate: 'candidate:2 1 udp 1686052607 198.51.100.7 40000 typ srflx raddr 192.0.2.2 rport 57066', sdpMid: '0', sdpMLineIndex: 0 };
const ANSWER = 'v=0\r\no=- 99 1 IN IP4 192.0.2.9\r\ns=remote answer\r\n';
const EARLY = 'v=0\r\no=- 98 1 IN IP4 192.0.2.9\r\ns=early answer\r\n';
const OFFER = 'v=0\r\no=- 77 1 IN IP4 192.0.2.9\r\ns=remote offer\r\n';

function audioStream(video = false) {
    const tracks = [new FakeTrack('audio')];
    if (video) {
        tracks.push(new FakeTrack('video'));
    }
    return new FakeMediaStream(tracks);
}

/** A ready connection to a fake gateway that speaks only `protocol` (default: both, so sylkRTC-2). */
function connectionFor(protocol, options = {}) {
    return readyConnection({ ...(protocol ? { server: [protocol] } : {}), ...options });
}

/** A ready connection, an account, and an outgoing call whose session-create was sent (not acked). */
async function makeOutgoingCall(protocol, options = {}) {
    const ctx = await connectionFor(protocol, options.connection);
    const account = await addAccount(ctx);
    const localStream = audioStream();
    const call = account.call(options.uri ?? 'bob@sylk.test',
        { localStream, pcConfig: { iceServers: [] }, ...options.callOptions });
    const log = record(call, 'stateChanged', 'streamAdded', 'proceeding', 'dtmf');
    await flush();
    const pc = FakeRTCPeerConnection.last;
    const create = ctx.ws.requests('session-create')[0];
    return { ...ctx, account, call, log, pc, create, localStream };
}

/** A ready connection, a registered account, and an incoming call, not answered. */
async function makeIncomingCall(protocol, options = {}) {
    const ctx = await connectionFor(protocol, options.connection);
    const account = await registeredAccount(ctx);
    const calls = record(account, 'incomingCall');
    ctx.ws.incomingSession('alice@sylk.test', 'in-1', {
        originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: OFFER, call_id: 'in-call-id@192.0.2.9',
    });
    await flush();
    const call = calls[0][1];
    const log = record(call, 'stateChanged', 'streamAdded', 'dtmf');
    return { ...ctx, account, call, log };
}

/** An outgoing call, answered: the answer applied, in state accepted. */
async function makeAcceptedCall(protocol, options = {}) {
    const ctx = await makeOutgoingCall(protocol, options);
    ctx.ws.ack(ctx.create);
    ctx.ws.sessionState(ctx.call.id, 'progress');
    ctx.ws.sessionState(ctx.call.id, 'accepted', { sdp: ANSWER });
    await flush();
    assert.equal(ctx.call.state, 'accepted');
    return ctx;
}

eachDialect((protocol) => {
    const ready = (options = {}) => connectionFor(protocol, options);
    const outgoingCall = (options = {}) => makeOutgoingCall(protocol, options);
    const incomingCall = (options = {}) => makeIncomingCall(protocol, options);
    const acceptedCall = (options = {}) => makeAcceptedCall(protocol, options);

    describe('outgoing calls', () => {
        test('offer, session-create, trickle, progress, accepted with the answer, established', async () => {
            const { ws, call, log, pc, create, localStream, account } = await outgoingCall();
            assert.ok(call instanceof Call);
            assert.match(call.id, UUID);
            assert.equal(call.direction, 'outgoing');
            assert.deepEqual(call.remoteIdentity, { uri: 'bob@sylk.test', displayName: null });
            assert.equal(call.state, 'connecting');
            assert.equal(call.pc, pc);
            assert.deepEqual(pc.config, { iceServers: [] });
            assert.deepEqual(pc.senders.map((s) => s.track), localStream.getTracks());
            assert.equal(call.localStream, localStream);
            assert.deepEqual(call.getLocalStreams(), [localStream]);
            assert.deepEqual(account.calls, [call]);

            assert.deepEqual(Object.keys(create).sort(), ['account', 'sdp', 'session', 'sylkrtc', 'transaction', 'uri']);
            assert.equal(create.account, 'alice@sylk.test');
            assert.equal(create.session, call.id);
            assert.equal(create.uri, 'bob@sylk.test');
            assert.equal(create.sdp, pc.localDescription.sdp);
            assert.equal(pc.localDescription.type, 'offer');

            pc.candidate(HOST);
            pc.candidate({ candidate: '', sdpMid: '0', sdpMLineIndex: 0 }); // end of a generation: not sent
            pc.candidate(SRFLX);
            pc.candidate(null);
            await flush();
            const trickles = ws.requests('session-trickle');
            assert.deepEqual(trickles.map((t) => t.candidates), [[HOST], [SRFLX], []]);
            assert.ok(trickles.every((t) => t.session === call.id));
            ws.ackAll();
            ws.sessionState(call.id, 'progress');
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            await flush();
            assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: ANSWER });
            const remote = new FakeMediaStream([new FakeTrack('audio')]);
            pc.track(remote.getTracks()[0], [remote]);
            ws.sessionState(call.id, 'established');
            await flush();
            assert.equal(call.state, 'established');
            assert.equal(call.remoteStream, remote);
            assert.deepEqual(call.getRemoteStreams(), [remote]);
            assert.deepEqual(log, [
                ['stateChanged', 'progress', 'connecting', null],
                ['stateChanged', 'accepted', 'progress', null],
                ['streamAdded', remote],
                ['stateChanged', 'established', 'accepted', null],
            ]);
        });

        test('candidates gathered before session-create is sent wait for it', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const call = account.call('bob@sylk.test', { localStream: audioStream() });
            const pc = FakeRTCPeerConnection.last;
            pc.candidate(HOST); // before createOffer has even resolved
            pc.candidate(null);
            await flush();
            assert.deepEqual(ctx.ws.sent.slice(-3).map((m) => m.sylkrtc),
                ['session-create', 'session-trickle', 'session-trickle']);
            assert.deepEqual(ctx.ws.requests('session-trickle').map((t) => t.candidates), [[HOST], []]);
            assert.equal(call.state, 'connecting');
        });

        test('a bare user is called at the account domain; sip: is dropped', async () => {
            const { create } = await outgoingCall({ uri: '3333' });
            assert.equal(create.uri, '3333@sylk.test');
            const other = await outgoingCall({ uri: 'sip:Bob@Example.COM' });
            assert.equal(other.create.uri, 'Bob@example.com');
        });

        test('without a local stream the call only receives audio', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const call = account.call('bob@sylk.test');
            await flush();
            assert.deepEqual(FakeRTCPeerConnection.last.transceivers, [{ kind: 'audio', direction: 'recvonly' }]);
            assert.equal(call.localStream, null);
        });

        test('call() throws when the connection is not ready', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            ctx.ws.drop(1006);
            await flush();
            assert.throws(() => account.call('bob@sylk.test'), (e) => e instanceof SylkRTCError && e.kind === 'not-ready');
        });

        test('the gateway refuses session-create: terminated with its reason, nothing else sent', async () => {
            const { ws, call, log, pc, create } = await outgoingCall();
            ws.error(create, 'Too many calls for account alice@sylk.test (at most 4)');
            await flush();
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Too many calls for account alice@sylk.test (at most 4)');
            assert.deepEqual(log, [['stateChanged', 'terminated', 'connecting',
                'Too many calls for account alice@sylk.test (at most 4)']]);
            assert.ok(pc.closed);
            assert.deepEqual(ws.requests('session-terminate'), []);
            pc.candidate(HOST);
            await flush();
            assert.deepEqual(ws.requests('session-trickle'), []);
        });

        test('the remote side rejects: terminated with the SIP reason; the local stream is left alone', async () => {
            const { ws, call, log, pc, create, localStream, account, conn } = await outgoingCall();
            ws.ack(create);
            ws.sessionState(call.id, 'progress');
            ws.sessionState(call.id, 'terminated', { reason: '486 Busy Here' });
            await flush();
            assert.deepEqual(log.at(-1), ['stateChanged', 'terminated', 'progress', '486 Busy Here']);
            assert.ok(pc.closed);
            assert.ok(localStream.getTracks().every((t) => t.readyState === 'live'));
            assert.deepEqual(account.calls, []);
            assert.deepEqual(conn.calls, []);
            ws.sessionState(call.id, 'established'); // events after the end are ignored
            await flush();
            assert.equal(call.state, 'terminated');
        });

        test('an answer that cannot be applied terminates the call', async () => {
            const { ws, call, pc, create } = await outgoingCall();
            ws.ack(create);
            pc.failSetRemote = new Error('InvalidAccessError: bad SDP');
            ws.sessionState(call.id, 'accepted', { sdp: 'garbage' });
            await flush();
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Could not apply the remote answer: InvalidAccessError: bad SDP');
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [call.id]);
        });

        test('terminated while the answer is being applied: terminated wins, accepted never comes', async () => {
            const { ws, call, log, pc, create } = await outgoingCall();
            ws.ack(create);
            let release;
            pc.holdSetRemote = new Promise((resolve) => { release = resolve; });
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
            await flush();
            assert.equal(call.state, 'terminated');
            release();
            await flush();
            assert.deepEqual(log.map((e) => e[1]), ['terminated']);
        });

        test('a refused trickle terminates the call', async () => {
            const { ws, call, pc, create } = await outgoingCall();
            ws.ack(create);
            pc.candidate({ ...HOST, sdpMid: null, sdpMLineIndex: null });
            await flush();
            const trickle = ws.requests('session-trickle')[0];
            assert.deepEqual(trickle.candidates, [{ candidate: HOST.candidate, sdpMid: null, sdpMLineIndex: null }]);
            ws.error(trickle, "invalid field 'candidates': sdpMid and sdpMLineIndex cannot both be null");
            await flush();
            assert.equal(call.state, 'terminated');
            assert.match(call.reason, /^ICE candidates refused: invalid field 'candidates'/);
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [call.id]);
            assert.ok(pc.closed);
        });

        test('a remote track without a stream gets one made for it', async () => {
            const { call, log, pc } = await outgoingCall();
            const audio = new FakeTrack('audio');
            const video = new FakeTrack('video');
            pc.track(audio);
            pc.track(video);
            assert.deepEqual(call.remoteStream.getTracks(), [audio, video]);
            assert.deepEqual(log.filter((e) => e[0] === 'streamAdded').length, 1);
        });
    });

    describe('terminate()', () => {
        test('sends session-terminate and resolves on the terminated event', async () => {
            const { ws, call, create, pc } = await outgoingCall();
            ws.ack(create);
            ws.sessionState(call.id, 'progress');
            await flush();
            let done = false;
            const terminating = call.terminate().then(() => { done = true; });
            call.terminate(); // once only
            await flush();
            const requests = ws.requests('session-terminate');
            assert.deepEqual(requests.map((m) => [m.session, Object.keys(m).length]), [[call.id, 3]]);
            ws.ack(requests[0]);
            await flush();
            assert.equal(done, false);
            assert.equal(call.state, 'progress');
            ws.sessionState(call.id, 'terminated', { reason: '487 Request Terminated' });
            await terminating;
            assert.equal(call.reason, '487 Request Terminated');
            assert.ok(pc.closed);
            await call.terminate(); // terminated already: resolves
        });

        test('ends the call locally when the terminated event does not come in time', async () => {
            const { ws, call, create, clock } = await outgoingCall({ connection: { terminateTimeout: 300 } });
            ws.ack(create);
            const terminating = call.terminate();
            await flush();
            ws.ackAll('session-terminate');
            await clock.tick(299);
            assert.notEqual(call.state, 'terminated');
            await clock.tick(1);
            await terminating;
            assert.equal(call.reason, 'Terminated locally');
            assert.deepEqual(clock.pending(), []);
        });

        test('ends the call locally when session-terminate is refused', async () => {
            const { ws, call, create } = await outgoingCall();
            ws.ack(create);
            const terminating = call.terminate();
            await flush();
            ws.error(ws.requests('session-terminate')[0], `Invalid state for terminating session ${call.id}: terminated`);
            await terminating;
            assert.match(call.reason, /^Terminated locally \(Invalid state/);
        });

        test('before the offer was sent: nothing goes to the gateway', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const call = account.call('bob@sylk.test', { localStream: audioStream() });
            await call.terminate(); // createOffer has not resolved yet
            await flush();
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Terminated locally');
            assert.deepEqual(ctx.ws.requests('session-create'), []);
            assert.deepEqual(ctx.ws.requests('session-terminate'), []);
        });
    });

    describe('incoming calls', () => {
        test('answer(): remote offer, answer, session-answer, then trickle; accepted and established', async () => {
            const { ws, call, log, account } = await incomingCall();
            assert.equal(call.state, 'incoming');
            const localStream = audioStream(true);
            const answering = call.answer({ localStream, pcConfig: { bundlePolicy: 'max-bundle' } });
            const pc = FakeRTCPeerConnection.last;
            pc.candidate(HOST); // early candidate: waits for session-answer
            await flush();
            assert.deepEqual(pc.config, { bundlePolicy: 'max-bundle' });
            assert.deepEqual(pc.remoteDescription, { type: 'offer', sdp: OFFER });
            assert.equal(pc.localDescription.type, 'answer');
            const sent = ws.sent.slice(-2);
            assert.deepEqual(sent.map((m) => m.sylkrtc), ['session-answer', 'session-trickle']);
            assert.deepEqual(Object.keys(sent[0]).sort(), ['sdp', 'session', 'sylkrtc', 'transaction']);
            assert.equal(sent[0].session, 'in-1');
            assert.equal(sent[0].sdp, pc.localDescription.sdp);
            assert.deepEqual(sent[1].candidates, [HOST]);
            ws.ackAll();
            await answering;
            assert.equal(call.state, 'connecting');
            ws.sessionState('in-1', 'accepted');
            ws.sessionState('in-1', 'established');
            await flush();
            assert.deepEqual(log.map((e) => e.slice(0, 3)), [
                ['stateChanged', 'connecting', 'incoming'],
                ['stateChanged', 'accepted', 'connecting'],
                ['stateChanged', 'established', 'accepted'],
            ]);
            assert.deepEqual(pc.senders.map((s) => s.track.kind), ['audio', 'video']);
            assert.deepEqual(account.calls, [call]);
        });

        test('a refused session-answer rejects answer() and terminates the call', async () => {
            const { ws, call } = await incomingCall();
            const answering = rejection(call.answer({ localStream: audioStream() }));
            await flush();
            ws.error(ws.requests('session-answer')[0], 'Invalid state for answering session in-1: terminated');
            const error = await answering;
            assert.equal(error.message, 'Invalid state for answering session in-1: terminated');
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Could not answer: Invalid state for answering session in-1: terminated');
            assert.ok(FakeRTCPeerConnection.last.closed);
        });

        test('reject() sends session-terminate', async () => {
            const { ws, call, log } = await incomingCall();
            const rejecting = call.reject();
            await flush();
            ws.ackAll();
            ws.sessionState('in-1', 'terminated', { reason: '486 Busy Here' });
            await rejecting;
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), ['in-1']);
            assert.deepEqual(log, [['stateChanged', 'terminated', 'incoming', '486 Busy Here']]);
            await assert.rejects(call.reject(), /Cannot reject/);
            await assert.rejects(call.answer(), /Cannot answer/);
        });

        test('the caller gives up: terminated 487, then missedCall', async () => {
            const { ws, call, log, account } = await incomingCall();
            const missed = record(account, 'missedCall');
            ws.sessionState('in-1', 'terminated', { reason: '487 Request Terminated' });
            ws.missedSession('alice@sylk.test', { uri: 'bob@sylk.test', display_name: 'Bob' });
            await flush();
            assert.deepEqual(log, [['stateChanged', 'terminated', 'incoming', '487 Request Terminated']]);
            assert.deepEqual(missed, [['missedCall', { originator: { uri: 'bob@sylk.test', displayName: 'Bob' } }]]);
            assert.equal(call.pc, null);
        });

        test('hung up by the caller while answering: answer() rejects', async () => {
            const { ws, call } = await incomingCall();
            const answering = rejection(call.answer({ localStream: audioStream() }));
            ws.sessionState('in-1', 'terminated', { reason: '487 Request Terminated' }); // before the offer is applied
            const error = await answering;
            assert.match(error.message, /was terminated \(487 Request Terminated\)/);
            assert.deepEqual(ws.requests('session-answer'), []);
            assert.equal(call.reason, '487 Request Terminated');
        });
    });

    describe('DTMF', () => {
        test('sendDtmf inserts tones in the audio sender, after those still queued', async () => {
            const { ws, call, create, pc } = await outgoingCall();
            assert.throws(() => call.sendDtmf('1'), /Cannot send DTMF in state connecting/);
            ws.ack(create);
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            await flush();
            const dtmf = pc.senders[0].dtmf;
            call.sendDtmf('1');
            call.sendDtmf('#*a', { duration: 200, gap: 50 });
            assert.deepEqual(dtmf.inserted, [
                { tones: '1', duration: 100, gap: 70 },
                { tones: '1#*A', duration: 200, gap: 50 },
            ]);
            assert.throws(() => call.sendDtmf('12x'), TypeError);
            assert.throws(() => call.sendDtmf(''), TypeError);
            dtmf.canInsertDTMF = false;
            assert.throws(() => call.sendDtmf('5'), /cannot be sent now/);
        });

        test('a call without audio sender cannot send DTMF', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const call = account.call('bob@sylk.test');
            await flush();
            ctx.ws.ackAll();
            ctx.ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            await flush();
            assert.throws(() => call.sendDtmf('1'), /DTMF is not available/);
        });
    });

    describe('calls and the connection', () => {
        test('a dropped socket ends every call with "Connection lost"', async () => {
            const { ws, call, log, pc, create, conn } = await outgoingCall();
            ws.ack(create);
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            await flush();
            ws.drop(1006);
            await flush();
            assert.equal(call.state, 'terminated');
            assert.deepEqual(log.at(-1), ['stateChanged', 'terminated', 'accepted', 'Connection lost']);
            assert.ok(pc.closed);
            assert.deepEqual(conn.calls, []);
            // the old socket's events are not delivered any more, and the new one knows nothing of the call
            assert.equal(FakeWebSocket.instances.length, 1);
        });

        test('close() ends calls with "Connection closed"', async () => {
            const { call, conn } = await outgoingCall();
            conn.close();
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Connection closed');
        });

        test('removing the account ends its calls', async () => {
            const { ws, call, create, conn, account } = await outgoingCall();
            ws.ack(create);
            const removing = conn.removeAccount(account);
            await flush();
            ws.ackAll('account-remove');
            await removing;
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Account removed');
        });
    });

    describe('DTMF as SIP INFO', () => {
        test('sendDtmfInfo sends session-dtmf-info and resolves on the ack', async () => {
            const { ws, call } = await acceptedCall();
            const sending = call.sendDtmfInfo('12a#');
            await flush();
            const [request] = ws.requests('session-dtmf-info');
            assert.deepEqual(Object.keys(request).sort(), ['digit', 'duration', 'session', 'sylkrtc', 'transaction']);
            assert.equal(request.session, call.id);
            assert.equal(request.digit, '12A#');
            assert.equal(request.duration, 160);
            ws.ack(request);
            await sending;
            const longer = call.sendDtmfInfo('5', { duration: 400 });
            await flush();
            assert.equal(ws.requests('session-dtmf-info')[1].duration, 400);
            ws.error(ws.requests('session-dtmf-info')[1], `Invalid state for sending DTMF in session ${call.id}: terminated`);
            const error = await rejection(longer);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'session-dtmf-info');
        });

        test('bad tones, bad durations and calls without media are refused locally', async () => {
            const { ws, call, create } = await outgoingCall();
            const early = await rejection(call.sendDtmfInfo('1'));
            assert.ok(early instanceof SylkRTCError);
            assert.equal(early.kind, 'local');
            assert.match(early.message, /Cannot send DTMF in state connecting/);
            ws.ack(create);
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
            await flush();
            for (const tones of ['', '12x', '1,2', '1'.repeat(65), 5]) {
                await assert.rejects(call.sendDtmfInfo(tones), TypeError, JSON.stringify(tones));
            }
            for (const duration of [39, 5001, 100.5, '100']) {
                await assert.rejects(call.sendDtmfInfo('1', { duration }), TypeError, JSON.stringify(duration));
            }
            assert.deepEqual(ws.requests('session-dtmf-info'), []);
            call.sendDtmfInfo('1'.repeat(64)).catch(() => undefined);
            await flush();
            assert.equal(ws.requests('session-dtmf-info').length, 1);
        });

        test('an incoming call answered can send DTMF as SIP INFO', async () => {
            const { ws, call } = await incomingCall();
            await assert.rejects(call.sendDtmfInfo('1'), /Cannot send DTMF in state incoming/);
            const answering = call.answer({ localStream: audioStream() });
            await flush();
            ws.ackAll();
            await answering;
            ws.sessionState('in-1', 'accepted');
            await flush();
            call.sendDtmfInfo('*9');
            await flush();
            assert.deepEqual(ws.requests('session-dtmf-info').map((m) => [m.session, m.digit]), [['in-1', '*9']]);
        });
    });

    describe('DTMF from the far end', () => {
        test('each dtmf event is a dtmf event of the call', async () => {
            const { ws, call, log } = await acceptedCall();
            ws.dtmf(call.id, { digit: '5', duration: 160, method: 'info' });
            ws.dtmf(call.id, { digit: '#', method: 'rfc4733' });
            ws.dtmf('another-session', { digit: '1' });
            await flush();
            assert.deepEqual(log.filter((e) => e[0] === 'dtmf'), [
                ['dtmf', { digit: '5', duration: 160, method: 'info' }],
                ['dtmf', { digit: '#', duration: null, method: 'rfc4733' }],
            ]);
        });

        test('tones to an incoming call, and none after the end', async () => {
            const { ws, call, log } = await incomingCall();
            ws.dtmf('in-1', { digit: '7', duration: 250 });
            ws.sessionState('in-1', 'terminated', { reason: '200 OK' });
            ws.dtmf('in-1', { digit: '8', duration: 250 });
            await flush();
            assert.equal(call.state, 'terminated');
            assert.deepEqual(log.filter((e) => e[0] === 'dtmf'), [['dtmf', { digit: '7', duration: 250, method: 'info' }]]);
        });
    });

    describe('custom SIP headers and the Call-ID', () => {
        test('call() sends headers with session-create, as a list or an object', async () => {
            const list = await outgoingCall({ callOptions: { headers: [{ name: 'X-Room', value: '42' }] } });
            assert.deepEqual(list.create.headers, [{ name: 'X-Room', value: '42' }]);
            const object = await outgoingCall({ callOptions: { headers: { 'X-Room': '42', 'X-Other': 'a b' } } });
            assert.deepEqual(object.create.headers, [{ name: 'X-Room', value: '42' }, { name: 'X-Other', value: 'a b' }]);
        });

        test('bad headers make call() throw, and leave no call behind', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            for (const headers of ['X-Room: 42', [{ name: 'X-Room' }], [{ name: '', value: '1' }], [null], { 'X-A': 1 }]) {
                assert.throws(() => account.call('bob@sylk.test', { headers }), TypeError, JSON.stringify(headers));
            }
            await flush();
            assert.deepEqual(account.calls, []);
            assert.deepEqual(ctx.ws.requests('session-create'), []);
            assert.equal(FakeRTCPeerConnection.instances.length, 0);
        });

        test('the gateway refusing headers ends the call with its reason', async () => {
            const { ws, call, create } = await outgoingCall({ callOptions: { headers: { Via: 'x' } } });
            ws.error(create, "invalid field 'headers': item 0: Via cannot be set");
            await flush();
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, "invalid field 'headers': item 0: Via cannot be set");
        });

        test('answer() sends headers with session-answer; bad ones reject it and the call still rings', async () => {
            const { ws, call } = await incomingCall();
            await assert.rejects(call.answer({ headers: 'X-A: 1' }), TypeError);
            assert.equal(call.state, 'incoming');
            const answering = call.answer({ localStream: audioStream(), headers: { 'X-Answered-By': 'sylkrtc.js' } });
            await flush();
            const [answer] = ws.requests('session-answer');
            assert.deepEqual(answer.headers, [{ name: 'X-Answered-By', value: 'sylkrtc.js' }]);
            ws.ackAll();
            await answering;
        });

        test('the Call-ID and headers of the answer (sylkRTC-2 only)', async () => {
            const { ws, call, create } = await outgoingCall();
            assert.equal(call.callId, null);
            assert.deepEqual(call.remoteHeaders, {});
            ws.ack(create);
            ws.sessionState(call.id, 'accepted', { sdp: ANSWER, call_id: 'out-1@192.0.2.2',
                headers: { 'X-Callee-Info': 'bob' } });
            await flush();
            assert.equal(call.state, 'accepted');
            if (protocol === 'sylkRTC-2') {
                assert.equal(call.callId, 'out-1@192.0.2.2');
                assert.deepEqual(call.remoteHeaders, { 'X-Callee-Info': 'bob' });
            } else {
                assert.equal(call.callId, null);
                assert.deepEqual(call.remoteHeaders, {});
            }
        });
    });
});

describe('sylkRTC-2: call progress and early media', () => {
    test('progress, proceeding, ringing, early media as a pranswer, then accepted without SDP: the early answer is final', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        ws.sessionState(call.id, 'progress');
        ws.sessionState(call.id, 'proceeding', { code: 180 });
        ws.sessionState(call.id, 'ringing');
        await flush();
        assert.equal(call.state, 'ringing');
        assert.equal(call.provisionalCode, 180);
        ws.sessionState(call.id, 'proceeding', { code: 183 });
        ws.sessionState(call.id, 'early-media', { sdp: EARLY });
        await flush();
        assert.equal(call.state, 'early-media');
        assert.equal(call.provisionalCode, 183);
        assert.equal(pc.signalingState, 'have-remote-pranswer');
        assert.deepEqual(pc.remoteDescription, { type: 'pranswer', sdp: EARLY });
        call.sendDtmf('1'); // media flow: tones can go (an IVR announcing itself in early media)
        call.sendDtmfInfo('2');
        await flush();
        assert.deepEqual(pc.senders[0].dtmf.inserted.map((i) => i.tones), ['1']);
        assert.equal(ws.requests('session-dtmf-info').length, 1);
        ws.sessionState(call.id, 'accepted', { call_id: 'abc@192.0.2.9', headers: { 'X-B': 'b' } });
        ws.sessionState(call.id, 'established');
        await flush();
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'pranswer', sdp: EARLY }, { type: 'answer', sdp: EARLY }]);
        assert.equal(pc.signalingState, 'stable');
        assert.equal(call.callId, 'abc@192.0.2.9');
        assert.deepEqual(call.remoteHeaders, { 'X-B': 'b' });
        assert.deepEqual(log.filter((e) => e[0] !== 'streamAdded'), [
            ['stateChanged', 'progress', 'connecting', null],
            ['stateChanged', 'proceeding', 'progress', null],
            ['proceeding', 180],
            ['stateChanged', 'ringing', 'proceeding', null],
            ['proceeding', 183],
            ['stateChanged', 'early-media', 'ringing', null],
            ['stateChanged', 'accepted', 'early-media', null],
            ['stateChanged', 'established', 'accepted', null],
        ]);
    });

    test('a new SDP in the 200 OK replaces the early answer', async () => {
        const { ws, call, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        ws.sessionState(call.id, 'early-media', { sdp: EARLY });
        ws.sessionState(call.id, 'proceeding', { code: 183 }); // may come after its early-media
        ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
        await flush();
        assert.equal(call.state, 'accepted');
        assert.equal(call.provisionalCode, 183, 'the code is kept even though the state moved on');
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'pranswer', sdp: EARLY }, { type: 'answer', sdp: ANSWER }]);
    });

    test('events during the pranswer wait for it, in order', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        let release;
        pc.holdSetRemote = new Promise((resolve) => { release = resolve; });
        ws.sessionState(call.id, 'early-media', { sdp: EARLY });
        ws.dtmf(call.id, { digit: '9', method: 'info' });
        ws.sessionState(call.id, 'accepted');
        await flush();
        assert.equal(call.state, 'connecting');
        pc.holdSetRemote = null;
        release();
        await flush();
        assert.deepEqual(log.map((e) => e[0] === 'stateChanged' ? e[1] : e[0]), ['early-media', 'dtmf', 'accepted']);
    });

    test('a browser without pranswer gets the early answer as the answer', async () => {
        const { ws, call, pc, create } = await makeOutgoingCall('sylkRTC-2');
        pc.refusePranswer = true;
        ws.ack(create);
        ws.sessionState(call.id, 'early-media', { sdp: EARLY });
        await flush();
        assert.equal(call.state, 'early-media');
        assert.equal(pc.signalingState, 'stable');
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'answer', sdp: EARLY }]);
        ws.sessionState(call.id, 'accepted', { sdp: ANSWER }); // can't be applied any more: the early one stays
        await flush();
        assert.equal(call.state, 'accepted');
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'answer', sdp: EARLY }]);
    });

    test('an early answer that cannot be applied terminates the call', async () => {
        const { ws, call, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        const tried = [];
        pc.setRemoteDescription = async (description) => { // neither as a pranswer nor as an answer
            tried.push(description.type);
            throw new Error('InvalidAccessError: bad SDP');
        };
        ws.sessionState(call.id, 'early-media', { sdp: 'garbage' });
        await flush();
        assert.equal(call.state, 'terminated');
        assert.deepEqual(tried, ['pranswer', 'answer']);
        assert.match(call.reason, /^Could not apply the early media answer: InvalidAccessError/);
        assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [call.id]);
    });

    test('cancelled while ringing in early media', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        ws.sessionState(call.id, 'ringing');
        ws.sessionState(call.id, 'early-media', { sdp: EARLY });
        await flush();
        const terminating = call.terminate();
        await flush();
        ws.ackAll('session-terminate');
        ws.sessionState(call.id, 'terminated', { reason: '487 Request Terminated' });
        await terminating;
        assert.ok(pc.closed);
        assert.deepEqual(log.at(-1), ['stateChanged', 'terminated', 'early-media', '487 Request Terminated']);
    });

    test('the states of an incoming call are not moved by outgoing-only ones', async () => {
        const { ws, call, log } = await makeIncomingCall('sylkRTC-2');
        ws.sessionState('in-1', 'ringing');
        ws.sessionState('in-1', 'proceeding', { code: 180 });
        ws.sessionState('in-1', 'early-media', { sdp: EARLY });
        await flush();
        assert.equal(call.state, 'incoming');
        assert.deepEqual(log, []);
        assert.equal(call.callId, 'in-call-id@192.0.2.9');
    });

    test('the wire shapes: flat session-event messages', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-2');
        ws.ack(create);
        const send = (fields) => ws.receive({ sylkrtc: 'session-event', session: call.id, ...fields });
        send({ event: 'state', state: 'progress' });
        send({ event: 'state', state: 'proceeding', code: 183 });
        send({ event: 'state', state: 'early-media', sdp: EARLY });
        send({ event: 'state', state: 'accepted', call_id: 'x@y' });
        send({ event: 'dtmf', digit: '4', duration: 100, method: 'info' });
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        ws.receive({ sylkrtc: 'session_event', session: call.id, event: 'state', data: { state: 'terminated' } });
        send({ event: 'state', state: 'established' });
        await flush();
        assert.equal(pc.remoteDescription.type, 'answer');
        assert.deepEqual(log.map((e) => e[0] === 'stateChanged' ? e[1] : e.slice(0, 2)),
            ['progress', 'proceeding', ['proceeding', 183], 'early-media', 'accepted',
                ['dtmf', { digit: '4', duration: 100, method: 'info' }], 'established']);
        send({ event: 'state', state: 'terminated', reason: '200 OK' });
        await flush();
        assert.equal(call.reason, '200 OK');
    });
});

describe('sylkRTC-1: the four states', () => {
    test('the gateway says nothing of ringing or early media, and gives the early answer with accepted', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-1');
        ws.ack(create);
        ws.sessionState(call.id, 'progress');
        assert.equal(ws.sessionState(call.id, 'proceeding', { code: 183 }), false);
        assert.equal(ws.sessionState(call.id, 'early-media', { sdp: EARLY }), false);
        ws.sessionState(call.id, 'accepted', { sdp: EARLY });
        ws.sessionState(call.id, 'established');
        await flush();
        assert.deepEqual(pc.remoteDescriptions, [{ type: 'answer', sdp: EARLY }]);
        assert.deepEqual(log.map((e) => e[1]), ['progress', 'accepted', 'established']);
    });

    test('the wire shapes: session_event messages with data', async () => {
        const { ws, call, log, pc, create } = await makeOutgoingCall('sylkRTC-1');
        ws.ack(create);
        const send = (fields) => ws.receive({ sylkrtc: 'session_event', session: call.id, ...fields });
        send({ event: 'state', data: { state: 'progress' } });
        send({ event: 'state', data: { state: 'accepted', sdp: ANSWER } });
        send({ event: 'dtmf', data: { digit: '5', duration: 160, method: 'info' } });
        // sylkRTC-2 shapes are not this socket's dialect: ignored
        ws.receive({ sylkrtc: 'session-event', session: call.id, event: 'state', state: 'terminated' });
        send({ event: 'state', data: { state: 'established' } });
        await flush();
        assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: ANSWER });
        assert.deepEqual(log.map((e) => e[0] === 'stateChanged' ? e[1] : e.slice(0, 2)),
            ['progress', 'accepted', ['dtmf', { digit: '5', duration: 160, method: 'info' }], 'established']);
        send({ event: 'state', data: { state: 'terminated', reason: '486 Busy Here' } });
        await flush();
        assert.equal(call.reason, '486 Busy Here');
    });
});

describe('calls without WebRTC', () => {
    test('call() throws when no RTCPeerConnection can be made, and no call is left behind', async () => {
        const ctx = await connectionFor(undefined, { env: { RTCPeerConnection: undefined } });
        const account = await addAccount(ctx);
        // (env falls back to the global, which Node does not have)
        assert.throws(() => account.call('bob@sylk.test'), /WebRTC is not available/);
        assert.deepEqual(account.calls, []);
        assert.deepEqual(ctx.ws.requests('session-create'), []);
    });

    test('a failing createOffer terminates the call after call() returned, so listeners see it', async () => {
        const ctx = await connectionFor(undefined);
        const account = await addAccount(ctx);
        const call = account.call('bob@sylk.test');
        const log = record(call, 'stateChanged');
        FakeRTCPeerConnection.last.close(); // createOffer will throw InvalidStateError
        await flush();
        assert.deepEqual(log, [['stateChanged', 'terminated', 'connecting', 'Call failed: InvalidStateError: closed']]);
        assert.deepEqual(ctx.ws.requests('session-create'), []);
    });
});
