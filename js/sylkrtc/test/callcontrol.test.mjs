// Call control once a call is answered: re-INVITEs both ways, hold, transfers (ours and the far end's), messages in
// a call. Every suite runs once per dialect: the fake gateway speaks the events in each one's shape.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { Call, SylkRTCError, TransferRequest } from '../dist/sylkrtc.js';
import { FakeRTCPeerConnection, flush } from './fakes.mjs';
import {
    ANSWER, addAccount, answeredIncomingCall, answeredOutgoingCall, eachDialect, mediaStream, readyConnection, record,
    rejection, test,
} from './helpers.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ANSWER2 = 'v=0\r\no=- 99 2 IN IP4 192.0.2.9\r\ns=answer to the update\r\n';
const HOLD_OFFER = 'v=0\r\no=- 99 3 IN IP4 192.0.2.9\r\ns=hold\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n';
const RESUME_OFFER = 'v=0\r\no=- 99 4 IN IP4 192.0.2.9\r\ns=resume\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n';
const HOST = { candidate: 'candidate:1 1 udp 2122194687 192.0.2.2 57066 typ host generation 0', sdpMid: '0', sdpMLineIndex: 0 };
const HOST2 = { candidate: 'candidate:3 1 udp 2122194687 192.0.2.2 57068 typ host generation 1', sdpMid: '0', sdpMLineIndex: 0 };

const CALL_CONTROL_EVENTS = ['stateChanged', 'updateReceived', 'updated', 'updateFailed', 'hold', 'transfer',
    'transferRequest', 'message', 'messageStatus'];

eachDialect((protocol) => {
    const accepted = async (options) => {
        const ctx = await answeredOutgoingCall(protocol, options);
        return { ...ctx, log: record(ctx.call, ...CALL_CONTROL_EVENTS) };
    };
    const answeredIncoming = async (options) => {
        const ctx = await answeredIncomingCall(protocol, options);
        return { ...ctx, log: record(ctx.call, ...CALL_CONTROL_EVENTS) };
    };
    const names = (log) => log.map((e) => e[0]);

    describe('update(): our re-INVITE', () => {
        test('a new offer goes as session-update; the answer is applied, then update() resolves', async () => {
            const { ws, call, pc, log } = await accepted();
            const first = pc.localDescription;
            let done = false;
            const updating = call.update().then(() => { done = true; });
            await flush();
            assert.equal(call.updating, 'local');
            const [request] = ws.requests('session-update');
            assert.deepEqual(Object.keys(request).sort(), ['sdp', 'session', 'sylkrtc', 'transaction']);
            assert.equal(request.session, call.id);
            assert.equal(pc.signalingState, 'have-local-offer');
            assert.equal(request.sdp, pc.localDescription.sdp);
            assert.notEqual(request.sdp, first.sdp);
            ws.ack(request);
            await flush();
            assert.equal(done, false, 'not on the ack: on the answer');
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await updating;
            assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: ANSWER2 });
            assert.equal(pc.signalingState, 'stable');
            assert.equal(call.updating, null);
            assert.equal(call.state, 'accepted');
            assert.deepEqual(log, [['updated', { originator: 'local' }]]);
        });

        test('the tracks of a new stream are added (video to an audio call); offerOptions go to createOffer', async () => {
            const { ws, call, pc } = await accepted();
            const offerOptions = [];
            const createOffer = pc.createOffer.bind(pc);
            pc.createOffer = (options) => { offerOptions.push(options); return createOffer(options); };
            const audio = call.localStream.getAudioTracks()[0];
            const stream = mediaStream(true);
            stream._tracks[0] = audio; // the same microphone, a new camera
            const updating = call.update({ localStream: stream, offerOptions: { iceRestart: true } });
            await flush();
            assert.deepEqual(pc.senders.map((s) => s.track.kind), ['audio', 'video']);
            assert.equal(pc.senders[0].track, audio, 'the audio track is not added twice');
            assert.equal(call.localStream, stream);
            assert.deepEqual(offerOptions, [{ iceRestart: true }]);
            ws.ackAll();
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await updating;
            assert.deepEqual(pc.senders.map((s) => s.track.kind), ['audio', 'video']);
        });

        test('a failed update takes back the tracks it added', async () => {
            const { ws, call, pc } = await accepted();
            const before = call.localStream;
            const updating = rejection(call.update({ localStream: mediaStream(true) }));
            await flush();
            assert.deepEqual(pc.senders.map((s) => s.track.kind), ['audio', 'audio', 'video']);
            ws.ackAll();
            ws.update(call.id, { state: 'failed', reason: '488 Not Acceptable Here' });
            assert.equal((await updating).message, '488 Not Acceptable Here');
            assert.deepEqual(pc.senders.map((s) => s.track.kind), ['audio']);
            assert.equal(call.localStream, before);
        });

        test('an offer that cannot be made: update() rejects, nothing is sent', async () => {
            const { ws, call, pc, log } = await accepted();
            pc.createOffer = async () => { throw new Error('OperationError: no'); };
            const error = await rejection(call.update());
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'local');
            assert.equal(error.message, 'Could not make the offer: OperationError: no');
            assert.deepEqual(ws.requests('session-update'), []);
            assert.deepEqual(names(log), ['updateFailed']);
            assert.equal(call.updating, null);
        });

        test('the far end refuses it: the offer is rolled back, updateFailed, update() rejects', async () => {
            const { ws, call, pc, log } = await accepted();
            const before = pc.localDescription;
            const updating = rejection(call.update());
            await flush();
            ws.ackAll();
            ws.update(call.id, { state: 'failed', reason: 'No answer to the re-INVITE' });
            const error = await updating;
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'session-update');
            assert.equal(error.message, 'No answer to the re-INVITE');
            assert.equal(pc.rollbacks, 1);
            assert.equal(pc.signalingState, 'stable');
            assert.deepEqual(pc.localDescription, before);
            assert.equal(call.updating, null);
            assert.equal(call.state, 'accepted', 'the call goes on');
            assert.deepEqual(log, [['updateFailed', { originator: 'local', reason: 'No answer to the re-INVITE' }]]);
            // and the next update works
            const again = call.update();
            await flush();
            ws.ackAll();
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await again;
        });

        test('the gateway refuses session-update: rolled back, update() rejects with its error', async () => {
            const { ws, call, pc, log } = await accepted();
            const updating = rejection(call.update());
            await flush();
            const reason = `Invalid state for updating session ${call.id}: remote-updating`;
            ws.error(ws.requests('session-update')[0], reason);
            const error = await updating;
            assert.equal(error.kind, 'server');
            assert.equal(error.message, reason);
            assert.equal(pc.signalingState, 'stable');
            assert.deepEqual(log, [['updateFailed', { originator: 'local', reason }]]);
        });

        test('refused locally before the answer, and while an update is under way', async () => {
            const ctx = await readyConnection({ server: [protocol] });
            const account = await addAccount(ctx);
            const early = account.call('bob@sylk.test', { localStream: mediaStream() });
            await flush();
            const error = await rejection(early.update());
            assert.equal(error.kind, 'local');
            assert.match(error.message, /Cannot update call .* in state connecting/);

            const { ws, call } = await accepted();
            const first = call.update();
            const second = await rejection(call.update());
            assert.equal(second.kind, 'local');
            assert.match(second.message, /update is under way/);
            await flush();
            assert.equal(ws.requests('session-update').length, 1);
            ws.ackAll();
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await first;
        });

        test('an answer that cannot be applied ends the call', async () => {
            const { ws, call, pc } = await accepted();
            const updating = rejection(call.update());
            await flush();
            ws.ackAll();
            pc.failSetRemote = new Error('InvalidAccessError: bad SDP');
            ws.update(call.id, { state: 'accepted', sdp: 'garbage' });
            const error = await updating;
            assert.equal(error.kind, 'local');
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, 'Could not apply the answer to the update: InvalidAccessError: bad SDP');
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [call.id]);
        });

        test('the call ends during the update: update() rejects', async () => {
            const { ws, call } = await accepted();
            const updating = rejection(call.update());
            await flush();
            ws.ackAll();
            ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
            const error = await updating;
            assert.match(error.message, /was terminated \(200 OK\)/);
            assert.equal(call.updating, null);
        });

        test('an ICE restart trickles the new candidates', async () => {
            const { ws, call, pc } = await accepted();
            pc.candidate(HOST);
            pc.candidate(null);
            const updating = call.update({ offerOptions: { iceRestart: true } });
            await flush();
            pc.gathering('gathering');
            pc.candidate(HOST2);
            pc.candidate(null);
            await flush();
            assert.deepEqual(ws.requests('session-trickle').map((t) => t.candidates), [[HOST], [], [HOST2], []]);
            ws.ackAll();
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await updating;
        });
    });

    describe("the far end's re-INVITE", () => {
        test('answered by the library itself: updateReceived, the answer in session-update, updated', async () => {
            const { ws, call, pc, log } = await accepted();
            ws.update(call.id, { state: 'received', sdp: HOLD_OFFER });
            ws.hold(call.id, true, 'remote');
            await flush();
            assert.deepEqual(pc.remoteDescription, { type: 'offer', sdp: HOLD_OFFER });
            assert.equal(pc.localDescription.type, 'answer');
            assert.equal(pc.signalingState, 'stable');
            const [request] = ws.requests('session-update');
            assert.deepEqual(Object.keys(request).sort(), ['sdp', 'session', 'sylkrtc', 'transaction']);
            assert.equal(request.sdp, pc.localDescription.sdp);
            assert.equal(call.updating, 'remote', 'until the gateway took the answer');
            assert.equal(call.remoteHold, true);
            assert.equal(call.onHold, false);
            ws.ack(request);
            await flush();
            assert.equal(call.updating, null);
            ws.update(call.id, { state: 'received', sdp: RESUME_OFFER });
            ws.hold(call.id, false, 'remote');
            await flush();
            ws.ackAll();
            await flush();
            assert.equal(call.remoteHold, false);
            assert.deepEqual(log, [
                ['updateReceived', { sdp: HOLD_OFFER }],
                ['hold', { held: true, originator: 'remote' }],
                ['updated', { originator: 'remote' }],
                ['updateReceived', { sdp: RESUME_OFFER }],
                ['hold', { held: false, originator: 'remote' }],
                ['updated', { originator: 'remote' }],
            ]);
            assert.equal(call.state, 'accepted');
        });

        test('on an incoming call too', async () => {
            const { ws, call, pc, log } = await answeredIncoming();
            ws.update('in-1', { state: 'received', sdp: HOLD_OFFER });
            await flush();
            ws.ackAll();
            await flush();
            assert.deepEqual(pc.remoteDescriptions.map((d) => d.type), ['offer', 'offer']);
            assert.equal(ws.requests('session-update')[0].session, 'in-1');
            assert.deepEqual(names(log), ['updateReceived', 'updated']);
        });

        test('an offer that cannot be applied ends the call (the gateway would hang up anyway)', async () => {
            const { ws, call, pc, log } = await accepted();
            pc.failSetRemote = new Error('InvalidAccessError: no codec in common');
            ws.update(call.id, { state: 'received', sdp: 'garbage' });
            await flush();
            const reason = "Could not answer the far end's update: InvalidAccessError: no codec in common";
            assert.equal(call.state, 'terminated');
            assert.equal(call.reason, reason);
            assert.deepEqual(ws.requests('session-update'), []);
            assert.deepEqual(ws.requests('session-terminate').map((m) => m.session), [call.id]);
            assert.deepEqual(log.slice(0, 2), [['updateReceived', { sdp: 'garbage' }],
                ['updateFailed', { originator: 'remote', reason }]]);
        });

        test('both at once: our update is rolled back and rejected, theirs is answered', async () => {
            const { ws, call, pc, log } = await accepted();
            const ours = rejection(call.update());
            await flush();
            assert.equal(pc.signalingState, 'have-local-offer');
            ws.ackAll();
            ws.update(call.id, { state: 'received', sdp: HOLD_OFFER });
            const error = await ours;
            assert.equal(error.kind, 'local');
            assert.equal(error.message, 'The far end sent an update at the same time');
            await flush();
            assert.equal(pc.rollbacks, 1);
            const [, answer] = ws.requests('session-update');
            assert.equal(answer.sdp, pc.localDescription.sdp);
            assert.equal(pc.localDescription.type, 'answer');
            ws.ackAll();
            await flush();
            assert.deepEqual(names(log), ['updateReceived', 'updateFailed', 'updated']);
            assert.equal(call.updating, null);
        });

        test('hold(), update() and transfer() wait for the answer to go out first', async () => {
            const { ws, call } = await accepted();
            ws.update(call.id, { state: 'received', sdp: HOLD_OFFER });
            const holding = call.hold();
            const transferring = call.transfer('carol@sylk.test');
            await flush();
            assert.deepEqual(ws.unanswered().map((m) => m.sylkrtc), ['session-update']);
            ws.ackAll();
            await flush();
            assert.deepEqual(ws.unanswered().map((m) => m.sylkrtc), ['session-hold', 'session-transfer']);
            ws.ackAll();
            await holding;
            await transferring;
        });
    });

    describe('hold', () => {
        test('hold() and unhold() send session-hold and session-unhold; hold events set onHold', async () => {
            const { ws, call, log } = await accepted();
            const holding = call.hold();
            await flush();
            const [hold] = ws.requests('session-hold');
            assert.deepEqual(Object.keys(hold).sort(), ['direction', 'session', 'sylkrtc', 'transaction']);
            assert.deepEqual([hold.session, hold.direction], [call.id, 'sendonly']);
            ws.ack(hold);
            await holding;
            assert.equal(call.onHold, false, 'on the event, not the ack');
            ws.hold(call.id, true, 'local');
            await flush();
            assert.equal(call.onHold, true);
            const unholding = call.unhold();
            await flush();
            const [unhold] = ws.requests('session-unhold');
            assert.deepEqual(Object.keys(unhold).sort(), ['session', 'sylkrtc', 'transaction']);
            ws.ack(unhold);
            await unholding;
            ws.hold(call.id, false, 'local');
            await flush();
            assert.equal(call.onHold, false);
            const inactive = call.hold({ direction: 'inactive' });
            await flush();
            assert.equal(ws.requests('session-hold')[1].direction, 'inactive');
            ws.ackAll();
            await inactive;
            assert.deepEqual(log, [
                ['hold', { held: true, originator: 'local' }],
                ['hold', { held: false, originator: 'local' }],
            ]);
        });

        test('bad directions, wrong states and our own update under way are refused locally', async () => {
            const { ws, call } = await accepted();
            await assert.rejects(call.hold({ direction: 'recvonly' }), TypeError);
            const updating = call.update();
            await flush();
            const during = await rejection(call.hold());
            assert.equal(during.kind, 'local');
            assert.match(during.message, /an update is under way/);
            ws.ackAll();
            ws.update(call.id, { state: 'accepted', sdp: ANSWER2 });
            await updating;
            ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
            await flush();
            const ended = await rejection(call.unhold());
            assert.equal(ended.kind, 'local');
            assert.equal(ended.request, 'session-unhold');
            assert.deepEqual(ws.requests('session-hold'), []);
        });

        test('a hold the gateway could not send comes as updateFailed; onHold stays', async () => {
            const { ws, call, log } = await accepted();
            const holding = call.hold();
            await flush();
            ws.ackAll();
            await holding;
            ws.update(call.id, { state: 'failed', reason: 'Janus error 450: hold refused' });
            await flush();
            assert.equal(call.onHold, false);
            assert.deepEqual(log, [['updateFailed', { originator: 'local', reason: 'Janus error 450: hold refused' }]]);
        });
    });

    describe('transfer()', () => {
        test('a blind transfer: session-transfer, then transfer events', async () => {
            const { ws, call, log } = await accepted();
            const transferring = call.transfer('carol');
            await flush();
            const [request] = ws.requests('session-transfer');
            assert.deepEqual(Object.keys(request).sort(), ['session', 'sylkrtc', 'transaction', 'uri']);
            assert.deepEqual([request.session, request.uri], [call.id, 'carol@sylk.test']);
            ws.ack(request);
            await transferring;
            ws.transfer(call.id, { state: 'progress', code: 100, reason: 'Trying' });
            ws.transfer(call.id, { state: 'completed', code: 200, reason: 'OK' });
            ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
            await flush();
            assert.deepEqual(log, [
                ['transfer', { state: 'progress', code: 100, reason: 'Trying' }],
                ['transfer', { state: 'completed', code: 200, reason: 'OK' }],
                ['stateChanged', 'terminated', 'accepted', '200 OK'],
            ]);
        });

        test("the far end's auth challenges on its way to the target are no transfer progress", async () => {
            const { ws, call, log } = await accepted();
            const transferring = call.transfer('carol');
            await flush();
            ws.ack(ws.requests('session-transfer')[0]);
            await transferring;
            ws.transfer(call.id, { state: 'progress', code: 100, reason: 'Trying' });
            ws.transfer(call.id, { state: 'progress', code: 407, reason: 'Proxy Authentication Required' });
            ws.transfer(call.id, { state: 'progress', code: 401, reason: 'Unauthorized' });
            ws.transfer(call.id, { state: 'progress', code: 180, reason: 'Ringing' });
            ws.transfer(call.id, { state: 'failed', code: 407, reason: 'Proxy Authentication Required' });
            await flush();
            assert.deepEqual(log, [
                ['transfer', { state: 'progress', code: 100, reason: 'Trying' }],
                ['transfer', { state: 'progress', code: 180, reason: 'Ringing' }],
                ['transfer', { state: 'failed', code: 407, reason: 'Proxy Authentication Required' }],
            ]);
        });

        test('an attended transfer names the call to replace; a failure comes as an event', async () => {
            const { ws, call, account, log } = await accepted();
            const other = account.call('carol@sylk.test', { localStream: mediaStream() });
            await flush();
            ws.ackAll();
            ws.sessionState(other.id, 'accepted', { sdp: ANSWER });
            await flush();
            const transferring = call.transfer('sip:carol@sylk.test', { replace: other });
            await flush();
            const [request] = ws.requests('session-transfer');
            assert.deepEqual([request.uri, request.replace_session], ['carol@sylk.test', other.id]);
            ws.ack(request);
            await transferring;
            ws.transfer(call.id, { state: 'failed', reason: 'No answer to the transfer request (REFER)' });
            await flush();
            assert.deepEqual(log, [['transfer',
                { state: 'failed', code: null, reason: 'No answer to the transfer request (REFER)' }]]);
        });

        test('bad targets and calls not answered are refused locally', async () => {
            const { ws, call, account } = await accepted();
            await assert.rejects(call.transfer('carol@'), TypeError);
            await assert.rejects(call.transfer('carol@sylk.test', { replace: call }), TypeError);
            await assert.rejects(call.transfer('carol@sylk.test', { replace: { id: 'x' } }), TypeError);
            const ringing = account.call('dave@sylk.test');
            const error = await rejection(ringing.transfer('carol@sylk.test'));
            assert.equal(error.kind, 'local');
            assert.equal(error.request, 'session-transfer');
            await flush();
            assert.deepEqual(ws.requests('session-transfer'), []);
        });
    });

    describe('transfer requests from the far end', () => {
        test('transferRequest; accept() places the new call with refer_session', async () => {
            const { ws, call, account, log } = await accepted();
            ws.transferRequest(call.id, { refer_to: 'carol@sylk.test', referred_by: 'bob@sylk.test', replaces: false });
            await flush();
            assert.deepEqual(names(log), ['transferRequest']);
            const request = log[0][1];
            assert.ok(request instanceof TransferRequest);
            assert.equal(call.transferRequest, request);
            assert.deepEqual([request.call, request.referTo, request.referredBy, request.replaces, request.state],
                [call, 'carol@sylk.test', 'bob@sylk.test', false, 'pending']);
            const localStream = mediaStream();
            const carol = request.accept({ localStream, headers: { 'X-Transfer': '1' } });
            assert.ok(carol instanceof Call);
            assert.equal(carol.direction, 'outgoing');
            assert.deepEqual(carol.remoteIdentity, { uri: 'carol@sylk.test', displayName: null });
            assert.equal(carol.localStream, localStream);
            assert.equal(request.state, 'accepted');
            assert.equal(call.transferRequest, null);
            assert.deepEqual(account.calls, [call, carol]);
            await flush();
            const [create] = ws.requests('session-create').slice(-1);
            assert.equal(create.session, carol.id);
            assert.equal(create.uri, 'carol@sylk.test');
            assert.equal(create.refer_session, call.id);
            assert.deepEqual(create.headers, [{ name: 'X-Transfer', value: '1' }]);
            assert.throws(() => request.accept(), (e) => e instanceof SylkRTCError && e.kind === 'local');
            assert.equal(ws.requests('session-create').filter((m) => m.refer_session).length, 1);
            // plain calls carry no refer_session
            account.call('dave@sylk.test');
            await flush();
            assert.ok(!('refer_session' in ws.requests('session-create').at(-1)));
        });

        test('reject() sends session-transfer-reject, 603 or the code given', async () => {
            const { ws, call, log } = await accepted();
            ws.transferRequest(call.id, { refer_to: 'carol@sylk.test', replaces: true });
            await flush();
            const first = log[0][1];
            assert.equal(first.replaces, true);
            assert.equal(first.referredBy, null);
            await assert.rejects(first.reject(200), TypeError);
            const rejecting = first.reject();
            await flush();
            const [request] = ws.requests('session-transfer-reject');
            assert.deepEqual(Object.keys(request).sort(), ['code', 'session', 'sylkrtc', 'transaction']);
            assert.deepEqual([request.session, request.code], [call.id, 603]);
            ws.ack(request);
            await rejecting;
            assert.equal(first.state, 'rejected');
            await assert.rejects(first.reject(), /it is rejected/);
            ws.transferRequest(call.id, { refer_to: 'dave@sylk.test' });
            await flush();
            const second = log[1][1];
            const busy = second.reject(486);
            await flush();
            assert.equal(ws.requests('session-transfer-reject')[1].code, 486);
            ws.ackAll();
            await busy;
        });

        test('a newer request supersedes a pending one; none can be taken once the call has ended', async () => {
            const { ws, call, log } = await accepted();
            ws.transferRequest(call.id, { refer_to: 'carol@sylk.test' });
            ws.transferRequest(call.id, { refer_to: 'dave@sylk.test' });
            await flush();
            const [first, second] = log.map((e) => e[1]);
            assert.equal(first.state, 'superseded');
            assert.equal(call.transferRequest, second);
            ws.sessionState(call.id, 'terminated', { reason: '200 OK' });
            await flush();
            assert.equal(call.transferRequest, null);
            assert.throws(() => second.accept(), /the call has ended/);
            await assert.rejects(second.reject(), /the call has ended/);
            assert.deepEqual(ws.requests('session-create').length, 1);
        });
    });

    describe('messages in a call', () => {
        test('sendMessage() sends session-message and resolves with its id; messageStatus comes on the call', async () => {
            const { ws, call, account, log } = await accepted();
            const accountLog = record(account, 'message', 'messageStatus');
            const sending = call.sendMessage('in the call');
            await flush();
            const [request] = ws.requests('session-message');
            assert.deepEqual(Object.keys(request).sort(),
                ['content', 'content_type', 'message_id', 'session', 'sylkrtc', 'timestamp', 'transaction']);
            assert.equal(request.session, call.id);
            assert.equal(request.content, 'in the call');
            assert.equal(request.content_type, 'text/plain');
            assert.match(request.message_id, UUID);
            assert.ok(!Number.isNaN(Date.parse(request.timestamp)));
            ws.ack(request);
            const id = await sending;
            assert.equal(id, request.message_id);
            ws.dispositionNotification({ session: call.id }, { message_id: id, message_timestamp: request.timestamp,
                state: 'accepted', code: 200, reason: 'OK' });
            ws.message({ session: call.id }, { sender: { uri: 'bob@sylk.test', display_name: 'Bob' },
                timestamp: '2026-11-26T07:01:00Z', message_id: 'm-2', content_type: 'text/plain',
                content: 'right back at you' });
            await flush();
            assert.deepEqual(log, [
                ['messageStatus', { messageId: id, state: 'accepted', code: 200, reason: 'OK', timestamp: request.timestamp }],
                ['message', { sender: { uri: 'bob@sylk.test', displayName: 'Bob' }, content: 'right back at you',
                    contentType: 'text/plain', messageId: 'm-2', timestamp: '2026-11-26T07:01:00Z',
                    dispositionNotification: [] }],
            ]);
            assert.deepEqual(accountLog, [], 'the call\'s, not the account\'s');
        });

        test('options, bad arguments, and calls not answered', async () => {
            const { ws, call, account } = await accepted();
            const sending = call.sendMessage('<b>hi</b>', { contentType: 'text/html', messageId: 'mine',
                timestamp: new Date(Date.UTC(2026, 10, 26, 7)) });
            await flush();
            const [request] = ws.requests('session-message');
            assert.deepEqual([request.content_type, request.message_id, request.timestamp],
                ['text/html', 'mine', '2026-11-26T07:00:00.000Z']);
            ws.error(request, `Invalid state for sending a message in session ${call.id}: terminated`);
            assert.equal((await rejection(sending)).kind, 'server');
            await assert.rejects(call.sendMessage(42), TypeError);
            await assert.rejects(call.sendMessage('x'.repeat(16385)), TypeError);
            await assert.rejects(call.sendMessage('x', { contentType: 'plain' }), TypeError);
            await assert.rejects(call.sendMessage('x', { messageId: '' }), TypeError);
            const early = account.call('dave@sylk.test');
            assert.equal((await rejection(early.sendMessage('x'))).kind, 'local');
            assert.equal(ws.requests('session-message').length, 1);
        });
    });
});

describe('the wire shapes of call-control events', () => {
    test('sylkRTC-2: flat session-event messages with dash names', async () => {
        const { ws, call } = await answeredOutgoingCall('sylkRTC-2');
        const log = record(call, ...CALL_CONTROL_EVENTS);
        const send = (fields) => ws.receive({ sylkrtc: 'session-event', session: call.id, ...fields });
        send({ event: 'hold', held: true, originator: 'local' });
        send({ event: 'transfer', state: 'progress', code: 180, reason: 'Ringing' });
        send({ event: 'transfer-request', refer_to: 'carol@sylk.test', referred_by: 'bob@sylk.test', replaces: false });
        send({ event: 'disposition-notification', message_id: 'm1', message_timestamp: 't', state: 'displayed',
            code: 200, reason: 'OK' });
        send({ event: 'message', sender: { uri: 'bob@sylk.test' }, timestamp: 't2', message_id: 'm2',
            content_type: 'text/plain', content: 'hi', disposition_notification: ['positive-delivery', 'display'] });
        send({ event: 'update', state: 'received', sdp: HOLD_OFFER });
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        ws.receive({ sylkrtc: 'session_event', session: call.id, event: 'hold', data: { held: false, originator: 'local' } });
        ws.receive({ sylkrtc: 'session-event', session: call.id, event: 'transfer_request', refer_to: 'x@y' });
        await flush();
        assert.deepEqual(log.map((e) => e[0] === 'transferRequest' ? [e[0], e[1].referTo] : e), [
            ['hold', { held: true, originator: 'local' }],
            ['transfer', { state: 'progress', code: 180, reason: 'Ringing' }],
            ['transferRequest', 'carol@sylk.test'],
            ['messageStatus', { messageId: 'm1', state: 'displayed', code: 200, reason: 'OK', timestamp: 't' }],
            ['message', { sender: { uri: 'bob@sylk.test', displayName: null }, content: 'hi', contentType: 'text/plain',
                messageId: 'm2', timestamp: 't2', dispositionNotification: ['positive-delivery', 'display'] }],
            ['updateReceived', { sdp: HOLD_OFFER }],
        ]);
        assert.equal(call.onHold, true);
    });

    test('sylkRTC-1: session_event messages with data and underscore names', async () => {
        const { ws, call } = await answeredOutgoingCall('sylkRTC-1');
        const log = record(call, ...CALL_CONTROL_EVENTS);
        const send = (fields) => ws.receive({ sylkrtc: 'session_event', session: call.id, ...fields });
        send({ event: 'hold', data: { held: true, originator: 'local' } });
        send({ event: 'transfer', data: { state: 'completed', code: 200, reason: 'OK' } });
        send({ event: 'transfer_request', data: { refer_to: 'carol@sylk.test', replaces: true } });
        send({ event: 'disposition_notification', data: { message_id: 'm1', state: 'accepted', code: 202,
            reason: 'Accepted' } });
        send({ event: 'message', data: { sender: { uri: 'bob@sylk.test', display_name: 'Bob' }, timestamp: 't2',
            message_id: 'm2', content_type: 'text/plain', content: 'hi' } });
        send({ event: 'update', data: { state: 'failed', reason: 'Janus error' } });
        // sylkRTC-2 shapes are not this socket's dialect: ignored
        ws.receive({ sylkrtc: 'session-event', session: call.id, event: 'hold', held: false, originator: 'local' });
        send({ event: 'transfer-request', data: { refer_to: 'x@y' } });
        send({ event: 'hold', data: { held: 'yes', originator: 'local' } }); // malformed: ignored
        await flush();
        assert.deepEqual(log.map((e) => e[0] === 'transferRequest' ? [e[0], e[1].referTo, e[1].replaces] : e), [
            ['hold', { held: true, originator: 'local' }],
            ['transfer', { state: 'completed', code: 200, reason: 'OK' }],
            ['transferRequest', 'carol@sylk.test', true],
            ['messageStatus', { messageId: 'm1', state: 'accepted', code: 202, reason: 'Accepted', timestamp: null }],
            ['message', { sender: { uri: 'bob@sylk.test', displayName: 'Bob' }, content: 'hi', contentType: 'text/plain',
                messageId: 'm2', timestamp: 't2', dispositionNotification: [] }],
            ['updateFailed', { originator: 'local', reason: 'Janus error' }],
        ]);
        assert.equal(FakeRTCPeerConnection.instances.length, 1);
    });
});
