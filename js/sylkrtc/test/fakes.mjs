// Fakes for the browser APIs sylkrtc.js uses: a clock, WebSocket, RTCPeerConnection, MediaStream and tracks.
// They are driven by the tests: nothing happens unless a test makes it happen, and time passes only on tick().

import { webcrypto } from 'node:crypto';
import { setImmediate as nextMacrotask } from 'node:timers/promises';

// Every browser has the global `crypto` (getRandomValues: the resume token and UUIDs); Node has it only from 19 on,
// so on Node 18 (Debian 12's) the tests give the library the same Web Crypto object a browser would.
if (globalThis.crypto === undefined) {
    globalThis.crypto = webcrypto;
}

/** Lets every pending promise callback run (the microtask queue drains before the next macrotask). */
export async function flush() {
    await nextMacrotask();
}

/** A fake clock: setTimeout/clearTimeout that run only when the test advances time with tick(). */
export class FakeClock {
    constructor() {
        this.now = 0;
        this._timers = new Map();
        this._nextId = 1;
        this.setTimeout = (fn, ms) => {
            const id = this._nextId++;
            this._timers.set(id, { at: this.now + Math.max(0, ms), fn, id });
            return id;
        };
        this.clearTimeout = (id) => {
            this._timers.delete(id);
        };
    }

    /** The delays (from now) of the timers still pending, sorted. */
    pending() {
        return [...this._timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
    }

    /** Advances time by ms, running due timers in order, letting promises settle after each. */
    async tick(ms) {
        const end = this.now + ms;
        await flush();
        for (;;) {
            let next = null;
            for (const timer of this._timers.values()) {
                if (timer.at <= end && (next === null || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) {
                    next = timer;
                }
            }
            if (next === null) {
                break;
            }
            this._timers.delete(next.id);
            this.now = next.at;
            next.fn();
            await flush();
        }
        this.now = end;
        await flush();
    }
}

function messageEvent(data) {
    const event = new Event('message');
    event.data = data;
    return event;
}

/** The dialects, the gateway's preference first. */
export const PROTOCOLS = ['sylkRTC-2', 'sylkRTC-1'];

/** The session states sylkRTC-1 can say; the gateway drops the others (proceeding, ringing, early-media). */
const SYLKRTC_1_STATES = ['progress', 'accepted', 'established', 'terminated'];

/** The fields that have a value (the gateway leaves out what does not apply). */
function present(fields) {
    return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined && value !== null));
}

function originator({ uri, display_name: displayName }) {
    return present({ uri, display_name: displayName || undefined });
}

/**
 * A fake browser WebSocket; the test plays the gateway through open(), ready(), receive(), ack(), drop(). Like the
 * gateway it selects a subprotocol (sylkRTC-2 when offered, else sylkRTC-1: `serverProtocols`), and its event
 * helpers (registrationState, sessionState, incomingSession, missedSession, dtmf, update, hold, transfer,
 * transferRequest, message, dispositionNotification, addressbookFetched, addressbookUpdated, addressbookUpdateFailed,
 * syncConversations, sync, publicKey) speak the selected dialect as sylk/gateway/sylkrtc/dialects.py does.
 */
export class FakeWebSocket extends EventTarget {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** Every socket created, in order. */
    static instances = [];
    /** The subprotocols the fake gateway speaks, preferred first (fakeEnv() resets it). */
    static serverProtocols = PROTOCOLS;

    static get last() {
        return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    }

    constructor(url, protocols) {
        super();
        this.url = url;
        this.protocols = protocols;
        this.protocol = '';
        this.readyState = FakeWebSocket.CONNECTING;
        /** The parsed messages sent by the library. */
        this.sent = [];
        /** Transactions answered by the test. */
        this.answered = new Set();
        this.closedWith = null;
        FakeWebSocket.instances.push(this);
    }

    send(data) {
        if (this.readyState !== FakeWebSocket.OPEN) {
            throw new Error('InvalidStateError: the socket is not open');
        }
        if (typeof data !== 'string') {
            throw new Error('the library must send text');
        }
        this.sent.push(JSON.parse(data));
    }

    close(code = 1000, reason = '') {
        if (code !== 1000 && (code < 3000 || code > 4999)) {
            throw new Error(`InvalidAccessError: close code ${code}`);
        }
        this.closedWith = { code, reason };
        if (this.readyState === FakeWebSocket.CLOSED) {
            return;
        }
        this.readyState = FakeWebSocket.CLOSING;
        queueMicrotask(() => this._closed(code, reason));
    }

    // ---- the gateway's side ----

    /** The subprotocol the gateway selects: its preferred one among those offered, '' if none. */
    selectProtocol() {
        const offered = this.protocols === undefined ? [] : [].concat(this.protocols);
        return FakeWebSocket.serverProtocols.find((protocol) => offered.includes(protocol)) ?? '';
    }

    /** The dialect the helpers speak: the selected one (sylkRTC-2 for a socket that selected none). */
    get dialect() {
        return this.protocol === 'sylkRTC-1' ? 'sylkRTC-1' : 'sylkRTC-2';
    }

    open(protocol = this.selectProtocol()) {
        this.protocol = protocol;
        this.readyState = FakeWebSocket.OPEN;
        this.dispatchEvent(new Event('open'));
    }

    /** Opens the socket (if needed) and sends the ready event. */
    ready() {
        if (this.readyState === FakeWebSocket.CONNECTING) {
            this.open();
        }
        this.receive(this.dialect === 'sylkRTC-1' ? { sylkrtc: 'event', event: 'ready' } : { sylkrtc: 'ready-event' });
    }

    /** The gateway's answer to connection-resume, before its snapshot: `missed` events it could not keep. */
    resumed(missed = 0) {
        this.receive(this.dialect === 'sylkRTC-1' ? { sylkrtc: 'event', event: 'resumed', data: { missed } }
            : { sylkrtc: 'resumed-event', missed });
    }

    receive(message) {
        this.dispatchEvent(messageEvent(typeof message === 'string' ? message : JSON.stringify(message)));
    }

    receiveBinary(bytes) {
        this.dispatchEvent(messageEvent(bytes));
    }

    /** The socket closes from the gateway's side (or the network). */
    drop(code = 1006, reason = '') {
        this._closed(code, reason);
    }

    _closed(code, reason) {
        if (this.readyState === FakeWebSocket.CLOSED) {
            return;
        }
        this.readyState = FakeWebSocket.CLOSED;
        const event = new Event('close');
        event.code = code;
        event.reason = reason;
        event.wasClean = code === 1000;
        this.dispatchEvent(event);
    }

    /** Requests sent and not answered yet, optionally only those of one type. */
    unanswered(type) {
        return this.sent.filter((m) => !this.answered.has(m.transaction) && (type === undefined || m.sylkrtc === type));
    }

    /** The requests of one type sent so far. */
    requests(type) {
        return this.sent.filter((m) => m.sylkrtc === type);
    }

    ack(request) {
        this.answered.add(request.transaction);
        this.receive({ sylkrtc: 'ack', transaction: request.transaction });
    }

    error(request, error) {
        this.answered.add(request.transaction);
        this.receive({ sylkrtc: 'error', transaction: request.transaction, error });
    }

    /** Acks every unanswered request (of one type, if given); returns them. */
    ackAll(type) {
        const requests = this.unanswered(type);
        for (const request of requests) {
            this.ack(request);
        }
        return requests;
    }

    // ---- events, in the selected dialect ----

    registrationState(account, state, reason) {
        const fields = present({ state, reason });
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'account_event', account, event: 'registration_state', data: fields });
        } else {
            this.receive({ sylkrtc: 'account-event', account, event: 'registration-state', ...fields });
        }
    }

    /**
     * A state of a session; `extra`: sdp, reason, code, call_id, headers. In sylkRTC-1, like the gateway, only the
     * states and fields it has (a state it lacks is not sent: returns false).
     */
    sessionState(session, state, extra = {}) {
        if (this.dialect === 'sylkRTC-1') {
            if (!SYLKRTC_1_STATES.includes(state)) {
                return false;
            }
            const data = present({ state, sdp: extra.sdp, reason: extra.reason });
            this.receive({ sylkrtc: 'session_event', session, event: 'state', data });
        } else {
            this.receive({ sylkrtc: 'session-event', session, event: 'state', ...present({ state, ...extra }) });
        }
        return true;
    }

    /** An incoming call: `originator` {uri, display_name?}, `sdp`, and in sylkRTC-2 `call_id`, `headers`. */
    incomingSession(account, session, { originator: from, sdp, call_id: callId, headers }) {
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'account_event', account, session, event: 'incoming_session',
                data: { originator: originator(from), sdp } });
        } else {
            this.receive({ sylkrtc: 'account-event', account, event: 'incoming-session', session,
                originator: originator(from), sdp, ...present({ call_id: callId, headers }) });
        }
    }

    missedSession(account, from) {
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'account_event', account, event: 'missed_session',
                data: { originator: originator(from) } });
        } else {
            this.receive({ sylkrtc: 'account-event', account, event: 'missed-session', originator: originator(from) });
        }
    }

    /** A DTMF tone from the far end: {digit, duration?, method}. */
    dtmf(session, { digit, duration, method = 'info' }) {
        this.sessionEvent(session, 'dtmf', present({ digit, duration, method }));
    }

    /** A session event other than `state`: sylkRTC-1 puts the fields in `data` and the name with underscores. */
    sessionEvent(session, name, fields) {
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'session_event', session, event: name.replaceAll('-', '_'), data: fields });
        } else {
            this.receive({ sylkrtc: 'session-event', session, event: name, ...fields });
        }
    }

    /** An account event other than those above, likewise. */
    accountEvent(account, name, fields) {
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'account_event', account, event: name.replaceAll('-', '_'), data: fields });
        } else {
            this.receive({ sylkrtc: 'account-event', account, event: name, ...fields });
        }
    }

    /** A re-INVITE: {state: received|accepted|failed, sdp?, reason?}. */
    update(session, { state, sdp, reason }) {
        this.sessionEvent(session, 'update', present({ state, sdp, reason }));
    }

    hold(session, held, originator) {
        this.sessionEvent(session, 'hold', { held, originator });
    }

    /** How a transfer goes: {state: progress|completed|failed, code?, reason?}. */
    transfer(session, { state, code, reason }) {
        this.sessionEvent(session, 'transfer', present({ state, code, reason }));
    }

    /** The far end's REFER: {refer_to, referred_by?, replaces}. */
    transferRequest(session, { refer_to: referTo, referred_by: referredBy, replaces = false }) {
        this.sessionEvent(session, 'transfer-request', present({ refer_to: referTo, referred_by: referredBy, replaces }));
    }

    /**
     * An incoming message, for an account ({account}) or inside a call ({session}): {sender: {uri, display_name?},
     * timestamp, message_id, content_type, content, disposition_notification?}.
     */
    message(target, { sender, ...fields }) {
        this._about(target, 'message', present({ sender: originator(sender), ...fields }));
    }

    /** {message_id, message_timestamp?, state, code?, reason}, for an account or a call. */
    dispositionNotification(target, fields) {
        this._about(target, 'disposition-notification', present(fields));
    }

    addressbookFetched(account, addressbook) {
        this.accountEvent(account, 'addressbook-fetched', { addressbook });
    }

    /** An address book entry added, updated or deleted: `item` under the key named by `type`. */
    addressbookUpdated(account, type, action, item) {
        this.accountEvent(account, 'addressbook-updated', { type, action, [type]: item });
    }

    /** An account-update-addressbook that failed: its type, action and the id of its data, and why. */
    addressbookUpdateFailed(account, type, action, id, error) {
        this.accountEvent(account, 'addressbook-update-failed', { type, action, error, id });
    }

    /** The answer to account-sync-conversations: the stored entries, in the gateway's shape (snake_case keys). */
    syncConversations(account, messages) {
        this.accountEvent(account, 'sync-conversations', { messages });
    }

    /** What another connection of the account did: `type` message|conversation, `action` add|remove|read. */
    sync(account, type, action, content) {
        this.accountEvent(account, 'sync', { type, action, content });
    }

    /** The answer to lookup-public-key (a connection event, not an account's). */
    publicKey(uri, publicKey) {
        if (this.dialect === 'sylkRTC-1') {
            this.receive({ sylkrtc: 'event', event: 'lookup_public_key', data: { uri, public_key: publicKey } });
        } else {
            this.receive({ sylkrtc: 'lookup-public-key-event', uri, public_key: publicKey });
        }
    }

    _about(target, name, fields) {
        if (target.session !== undefined) {
            this.sessionEvent(target.session, name, fields);
        } else {
            this.accountEvent(target.account, name, fields);
        }
    }
}

/** A Web Storage (sessionStorage) in memory: what the library keeps its resume token in. */
export class FakeStorage {
    constructor(entries = {}) {
        this.entries = new Map(Object.entries(entries));
    }

    getItem(key) {
        return this.entries.has(key) ? this.entries.get(key) : null;
    }

    setItem(key, value) {
        this.entries.set(key, String(value));
    }

    removeItem(key) {
        this.entries.delete(key);
    }
}

let nextStreamId = 1;

export class FakeTrack {
    constructor(kind) {
        this.kind = kind;
        this.id = `${kind}-${nextStreamId++}`;
        this.readyState = 'live';
    }

    stop() {
        this.readyState = 'ended';
    }
}

export class FakeMediaStream {
    constructor(tracks = []) {
        this.id = `stream-${nextStreamId++}`;
        this._tracks = [...tracks];
    }

    getTracks() {
        return [...this._tracks];
    }

    getAudioTracks() {
        return this._tracks.filter((t) => t.kind === 'audio');
    }

    getVideoTracks() {
        return this._tracks.filter((t) => t.kind === 'video');
    }

    addTrack(track) {
        this._tracks.push(track);
    }
}

export class FakeDTMFSender {
    constructor() {
        this.toneBuffer = '';
        this.canInsertDTMF = true;
        this.inserted = [];
    }

    insertDTMF(tones, duration, gap) {
        this.toneBuffer = tones;
        this.inserted.push({ tones, duration, gap });
    }
}

let nextSdp = 1;

/** A fake RTCPeerConnection with the signalling state machine; the test fires its events. */
export class FakeRTCPeerConnection extends EventTarget {
    static instances = [];

    static get last() {
        return FakeRTCPeerConnection.instances[FakeRTCPeerConnection.instances.length - 1];
    }

    constructor(config) {
        super();
        this.config = config;
        this.signalingState = 'stable';
        this.iceGatheringState = 'new';
        this.localDescription = null;
        this.remoteDescription = null;
        this.closed = false;
        this.senders = [];
        this.transceivers = [];
        /** Set to an Error to make the next setRemoteDescription fail. */
        this.failSetRemote = null;
        /** Set to a promise to make setRemoteDescription wait for it. */
        this.holdSetRemote = null;
        /** Set to true to refuse pranswer descriptions, as a browser without them would. */
        this.refusePranswer = false;
        /** Every remote description applied, in order. */
        this.remoteDescriptions = [];
        /** Every local description set (rollbacks aside), in order. */
        this.localDescriptions = [];
        /** The descriptions of the last stable state, which a rollback returns to. */
        this.currentLocalDescription = null;
        this.currentRemoteDescription = null;
        this.rollbacks = 0;
        FakeRTCPeerConnection.instances.push(this);
    }

    addTrack(track, stream) {
        this._check();
        const sender = { track, streams: [stream], dtmf: track.kind === 'audio' ? new FakeDTMFSender() : null };
        this.senders.push(sender);
        return sender;
    }

    removeTrack(sender) {
        this._check();
        const index = this.senders.indexOf(sender);
        if (index < 0) {
            throw new Error('InvalidAccessError: not a sender of this connection');
        }
        this.senders.splice(index, 1);
        this.removed = [...(this.removed ?? []), sender];
    }

    addTransceiver(kind, init) {
        const transceiver = { kind, direction: init?.direction ?? 'sendrecv' };
        this.transceivers.push(transceiver);
        return transceiver;
    }

    getSenders() {
        return [...this.senders];
    }

    async createOffer() {
        this._check();
        return { type: 'offer', sdp: `v=0\r\no=- ${nextSdp++} 1 IN IP4 127.0.0.1\r\ns=fake offer\r\n` };
    }

    async createAnswer() {
        this._check();
        if (this.signalingState !== 'have-remote-offer') {
            throw new Error('InvalidStateError: no remote offer');
        }
        return { type: 'answer', sdp: `v=0\r\no=- ${nextSdp++} 1 IN IP4 127.0.0.1\r\ns=fake answer\r\n` };
    }

    async setLocalDescription(description) {
        this._check();
        if (description.type === 'rollback') {
            if (this.signalingState !== 'have-local-offer' && this.signalingState !== 'have-remote-offer') {
                throw new Error(`InvalidStateError: nothing to roll back in ${this.signalingState}`);
            }
            this.localDescription = this.currentLocalDescription;
            this.remoteDescription = this.currentRemoteDescription;
            this.signalingState = 'stable';
            this.rollbacks += 1;
            return;
        }
        if (description.type === 'offer' && this.signalingState !== 'stable' && this.signalingState !== 'have-local-offer') {
            throw new Error(`InvalidStateError: cannot set a local offer in ${this.signalingState}`);
        }
        if (description.type === 'answer' && this.signalingState !== 'have-remote-offer') {
            throw new Error(`InvalidStateError: cannot set a local answer in ${this.signalingState}`);
        }
        this.localDescription = { ...description };
        this.localDescriptions.push({ ...description });
        this.signalingState = description.type === 'offer' ? 'have-local-offer' : 'stable';
        this._stableIfSo();
    }

    async setRemoteDescription(description) {
        this._check();
        if (this.holdSetRemote) {
            await this.holdSetRemote;
        }
        if (this.failSetRemote) {
            const error = this.failSetRemote;
            this.failSetRemote = null;
            throw error;
        }
        if (description.type === 'pranswer' && this.refusePranswer) {
            throw new Error('InvalidAccessError: pranswer is not supported');
        }
        if ((description.type === 'answer' || description.type === 'pranswer')
            && this.signalingState !== 'have-local-offer' && this.signalingState !== 'have-remote-pranswer') {
            throw new Error('InvalidStateError: no local offer');
        }
        if (description.type === 'offer' && this.signalingState !== 'stable' && this.signalingState !== 'have-remote-offer') {
            throw new Error(`InvalidStateError: cannot set a remote offer in ${this.signalingState}`);
        }
        this.remoteDescription = { ...description };
        this.remoteDescriptions.push({ ...description });
        this.signalingState = { offer: 'have-remote-offer', pranswer: 'have-remote-pranswer' }[description.type] ?? 'stable';
        this._stableIfSo();
    }

    _stableIfSo() {
        if (this.signalingState === 'stable') {
            this.currentLocalDescription = this.localDescription;
            this.currentRemoteDescription = this.remoteDescription;
        }
    }

    close() {
        this.closed = true;
        this.signalingState = 'closed';
    }

    _check() {
        if (this.closed) {
            throw new Error('InvalidStateError: closed');
        }
    }

    // ---- the test's side ----

    /** Fires icecandidate; null (or nothing) means the end of gathering. */
    candidate(candidate = null) {
        const event = new Event('icecandidate');
        event.candidate = candidate;
        if (candidate === null) {
            this.iceGatheringState = 'complete';
        }
        this.dispatchEvent(event);
        if (candidate === null) {
            this.dispatchEvent(new Event('icegatheringstatechange'));
        }
    }

    /** Fires icegatheringstatechange with a new gathering state (e.g. 'gathering' for an ICE restart). */
    gathering(state) {
        this.iceGatheringState = state;
        this.dispatchEvent(new Event('icegatheringstatechange'));
    }

    track(track, streams = []) {
        const event = new Event('track');
        event.track = track;
        event.streams = streams;
        this.dispatchEvent(event);
    }
}

/** Fresh fakes for one test; `options` go to connect() (env is filled in). */
export function fakeEnv() {
    FakeWebSocket.instances = [];
    FakeWebSocket.serverProtocols = PROTOCOLS;
    FakeRTCPeerConnection.instances = [];
    const clock = new FakeClock();
    const env = {
        WebSocket: FakeWebSocket,
        RTCPeerConnection: FakeRTCPeerConnection,
        MediaStream: FakeMediaStream,
        setTimeout: clock.setTimeout,
        clearTimeout: clock.clearTimeout,
        random: () => 0.5, // no jitter: exact delays
    };
    return { clock, env };
}
