/**
 * A call (a sylkRTC session): its RTCPeerConnection, offer/answer, trickle ICE, DTMF, state, and call control once
 * answered: re-INVITEs both ways (the far end's are answered here by themselves), hold, transfers, messages.
 */

import type { Account } from './account.js';
import { REQUESTS } from './connection.js';
import { Emitter } from './emitter.js';
import { SylkRTCError } from './errors.js';
import { messageFields, messageStatus, receivedMessage, type MessageOptions, type MessageStatus,
    type ReceivedMessage } from './messages.js';
import { encodeHeaders, type HeaderMap, type SessionEvent, type SessionStateEvent,
    type SessionTransferRequestEvent, type SessionUpdateEvent, type SipHeaders } from './protocol.js';
import { errorMessage } from './util.js';

/**
 * - `connecting`: local only. Outgoing: the offer is being made and sent; incoming: `answer()` is under way.
 * - `incoming`: an incoming call ringing, not answered yet.
 * - `progress`: outgoing: the INVITE is on its way.
 * - `proceeding`: outgoing, sylkRTC-2: a provisional response came (its code in `provisionalCode`).
 * - `ringing`: outgoing, sylkRTC-2: the callee is being alerted.
 * - `early-media`: outgoing, sylkRTC-2: the callee's early answer has been applied; media (ringback,
 *   announcements) flow before the call is answered.
 * - `accepted`: answered (for outgoing calls the remote answer has been applied).
 * - `established`: media flow between the browser and the gateway.
 * - `terminated`: over; `reason` says why. Terminal.
 */
export type CallState = 'connecting' | 'incoming' | 'progress' | 'proceeding' | 'ringing' | 'early-media' | 'accepted'
    | 'established' | 'terminated';
export type CallDirection = 'incoming' | 'outgoing';

export interface Identity {
    /** `user@domain`. */
    uri: string;
    displayName: string | null;
}

export interface CallOptions {
    /** The local media (from getUserMedia); it stays the app's: the library never stops its tracks. */
    localStream?: MediaStream | null;
    /** RTCPeerConnection configuration (ICE servers...). */
    pcConfig?: RTCConfiguration;
    /** Passed to createOffer / createAnswer. */
    offerOptions?: RTCOfferOptions;
    /**
     * Extra SIP headers for the INVITE (`call()`) or the 200 OK (`answer()`): `[{name: 'X-Room', value: '42'}]` or
     * `{'X-Room': '42'}`. The gateway allows only `X-` headers and Subject, Priority, Organization, Accept-Language.
     */
    headers?: SipHeaders;
}

export interface DtmfOptions {
    /** Tone duration in ms (default 100; browsers allow 40 to 6000). */
    duration?: number;
    /** Gap between tones in ms (default 70; at least 30). */
    gap?: number;
}

export interface DtmfInfoOptions {
    /** Duration of each tone in ms, 40 to 5000 (default 160). */
    duration?: number;
}

/** A DTMF tone from the far end (the `dtmf` event). */
export interface ReceivedDtmf {
    /** One tone: 0-9, *, #, A-D. */
    digit: string;
    /** In ms, when the far end said. */
    duration: number | null;
    /** How it came: `info` (SIP INFO) or `rfc4733` (media events, when the gateway's Janus reports them). */
    method: string;
}

export interface UpdateOptions {
    /** Tracks of this stream that the call does not send yet are added (e.g. a camera's video track). */
    localStream?: MediaStream | null;
    /** Passed to createOffer (e.g. `{iceRestart: true}`). */
    offerOptions?: RTCOfferOptions;
}

export interface HoldOptions {
    /** `sendonly` (default: the far end listens, e.g. to music on hold) or `inactive` (no media either way). */
    direction?: 'sendonly' | 'inactive';
}

export interface TransferOptions {
    /** An attended transfer: the call (of this connection) that the far end's call to the target replaces. */
    replace?: Call;
}

/** Who started a re-INVITE, or put the call on hold: this side, or the far end. */
export type Originator = 'local' | 'remote';

/** The call went on hold or off it (the `hold` event). */
export interface HoldChange {
    held: boolean;
    originator: Originator;
}

/** How a transfer asked for with `transfer()` goes, as the far end reports it (the `transfer` event). */
export interface TransferProgress {
    /** `progress` (the target is being called; never for the far end's 401/407 challenges), `completed` (it
     *  answered), `failed`. */
    state: string;
    /** The SIP status of the far end's call to the target (100, 180, 200, 486, ...), when there is one. */
    code: number | null;
    reason: string | null;
}

export type CallEvents = {
    stateChanged: (state: CallState, previousState: CallState, reason: string | null) => void;
    /** A remote stream arrived (attach it to an `<audio>`/`<video>` element). */
    streamAdded: (stream: MediaStream) => void;
    /** Outgoing, sylkRTC-2: a provisional response (100, 180, 183, ...), once per response. */
    proceeding: (code: number | null) => void;
    /** A DTMF tone from the far end. */
    dtmf: (dtmf: ReceivedDtmf) => void;
    /** sylkRTC-2: the far end sent a re-INVITE (its offer: `sdp`); the library answers it by itself. */
    updateReceived: (update: { sdp: string }) => void;
    /** A re-INVITE went through: ours (`local`, the far end's answer applied) or the far end's (`remote`, answered). */
    updated: (update: { originator: Originator }) => void;
    /**
     * A re-INVITE failed. `local`: an update (rolled back here), or a hold/unhold the gateway could not send;
     * `remote`: the far end's offer could not be answered (the call is then terminated).
     */
    updateFailed: (failure: { originator: Originator; reason: string }) => void;
    /** The call went on hold or off it (`onHold`, `remoteHold` are already updated). */
    hold: (change: HoldChange) => void;
    /** How a transfer asked for with `transfer()` goes. */
    transfer: (progress: TransferProgress) => void;
    /** The far end asks to transfer this call: `accept()` (call the target) or `reject()` it. */
    transferRequest: (request: TransferRequest) => void;
    /** A message from the far end inside the call. */
    message: (message: ReceivedMessage) => void;
    /** What became of a message sent with `sendMessage()`. */
    messageStatus: (status: MessageStatus) => void;
};

const ORDER: Record<CallState, number> = {
    connecting: 0,
    incoming: 0,
    progress: 1,
    proceeding: 2,
    ringing: 3,
    'early-media': 4,
    accepted: 5,
    established: 6,
    terminated: 7,
};

/** The states in which the far end can hear DTMF. */
const MEDIA_STATES: readonly CallState[] = ['early-media', 'accepted', 'established'];
/** The states of an answered call: those in which it can be updated, held, transferred, messaged in. */
const IN_CALL_STATES: readonly CallState[] = ['accepted', 'established'];

type TrickleCandidate = { candidate: string; sdpMid: string | null; sdpMLineIndex: number | null };

export class Call extends Emitter<CallEvents> {
    /** The session id (chosen here for outgoing calls, by the gateway for incoming ones). */
    readonly id: string;
    readonly direction: CallDirection;
    readonly account: Account;
    /** Whom the call is with: the callee of an outgoing call, the caller of an incoming one. */
    readonly remoteIdentity: Identity;
    state: CallState;
    /** Why the call ended (set with `terminated`), e.g. "200 OK", "486 Busy Here", "Connection lost". */
    reason: string | null = null;
    /** The peer connection; null for an incoming call not answered yet. */
    pc: RTCPeerConnection | null = null;
    localStream: MediaStream | null = null;
    /** The first remote stream, once it arrived. */
    remoteStream: MediaStream | null = null;
    /** The SIP Call-ID (sylkRTC-2): of an incoming call from the start, of an outgoing one once accepted. */
    callId: string | null = null;
    /**
     * SIP headers from the far end (sylkRTC-2): of the INVITE of an incoming call, of the answer of an outgoing one;
     * only those whose names start with one of the account's `incomingHeaderPrefixes`.
     */
    remoteHeaders: HeaderMap = {};
    /** Outgoing, sylkRTC-2: the status code of the latest provisional response (180, 183, ...), or null. */
    provisionalCode: number | null = null;
    /** Put on hold from here (`hold()`), as the gateway reported. */
    onHold = false;
    /** Put on hold by the far end (sylkRTC-2: its re-INVITE made every stream sendonly or inactive). */
    remoteHold = false;
    /** A re-INVITE under way: ours (`update()`), the far end's (being answered), or none. */
    updating: Originator | null = null;
    /** The far end's transfer request waiting for `accept()` or `reject()`, or null. */
    transferRequest: TransferRequest | null = null;

    private _remoteStreams: MediaStream[] = [];
    private _trackStream: MediaStream | null = null;
    private readonly _offer: string;
    /** The gateway knows the session (session-create sent, or incoming). */
    private _known: boolean;
    /** Candidates may be sent (after session-create / session-answer). */
    private _trickling = false;
    private _queued: TrickleCandidate[][] = [];
    private _endOfCandidates = false;
    private _terminateSent = false;
    private _terminateTimer: unknown = null;
    /** The remote answer is being applied: events wait in `_waiting`. */
    private _applying = false;
    private _waiting: SessionEvent[] = [];
    /** The early answer (early-media), and how it was applied: as a provisional answer, or as the answer. */
    private _earlySdp: string | null = null;
    private _earlyAppliedAs: 'pranswer' | 'answer' | null = null;
    private _ended: Promise<void>;
    private _resolveEnded!: () => void;
    /** Our update waiting for the far end's answer. */
    private _localUpdate: { resolve: () => void; reject: (error: Error) => void } | null = null;
    /** The far end's update being answered. */
    private _remoteAnswer: Promise<void> | null = null;
    /** The call placed for the far end's transfer request, if any (session-create with refer_session). */
    private _referSession: string | null = null;
    /** What our update under way added: its senders, and the local stream from before. */
    private _updateAdded: { senders: RTCRtpSender[]; localStream: MediaStream | null } | null = null;
    /** A resume's snapshot said answered before the answer itself came (in an event that follows, normally). */
    private _resumeTarget: CallState | null = null;

    /** @internal: calls are made by `Account.call()` or arrive as `incomingCall`. */
    constructor(account: Account, id: string, direction: CallDirection, remoteIdentity: Identity, offer = '') {
        super();
        this.account = account;
        this.id = id;
        this.direction = direction;
        this.remoteIdentity = remoteIdentity;
        this.state = direction === 'incoming' ? 'incoming' : 'connecting';
        this._offer = offer;
        this._known = direction === 'incoming';
        this._ended = new Promise((resolve) => {
            this._resolveEnded = resolve;
        });
    }

    /** The remote SDP offer of an incoming call. */
    get remoteOffer(): string | null {
        return this.direction === 'incoming' ? this._offer : null;
    }

    getLocalStreams(): MediaStream[] {
        return this.localStream ? [this.localStream] : [];
    }

    getRemoteStreams(): MediaStream[] {
        return [...this._remoteStreams];
    }

    /**
     * Answers an incoming call: setRemoteDescription(offer), createAnswer, setLocalDescription, `session-answer`,
     * then trickles the candidates. Resolves on the gateway's ack. On failure the call is terminated.
     */
    async answer(options: CallOptions = {}): Promise<void> {
        if (this.direction !== 'incoming' || this.state !== 'incoming') {
            throw new SylkRTCError(`Cannot answer ${this.direction} call ${this.id} in state ${this.state}`, 'local',
                REQUESTS.answer);
        }
        const headers = options.headers === undefined ? null : encodeHeaders(options.headers, 'answer');
        this._setState('connecting', null);
        try {
            const pc = this._createPeerConnection(options);
            await pc.setRemoteDescription({ type: 'offer', sdp: this._offer });
            this._checkActive();
            const answer = await pc.createAnswer(options.offerOptions);
            this._checkActive();
            await pc.setLocalDescription(answer);
            this._checkActive();
            const fields: Record<string, unknown> = { session: this.id, sdp: pc.localDescription?.sdp ?? answer.sdp };
            if (headers) {
                fields.headers = headers;
            }
            const sent = this._connection()._request(REQUESTS.answer, fields);
            this._startTrickling();
            await sent;
        } catch (error) {
            this._fail(`Could not answer: ${errorMessage(error)}`);
            throw error;
        }
    }

    /** Rejects an incoming call that was not answered (the caller gets `[Janus] decline_code`, 486 by default). */
    reject(): Promise<void> {
        if (this.direction !== 'incoming' || this.state !== 'incoming') {
            return Promise.reject(new SylkRTCError(`Cannot reject ${this.direction} call ${this.id} in state ${this.state}`,
                'local', REQUESTS.terminate));
        }
        return this.terminate();
    }

    /**
     * Ends the call whatever its state (`session-terminate`: CANCEL, reject or BYE). Resolves once the call is
     * `terminated`: on the gateway's event, or locally if it does not come in time or the request fails.
     */
    terminate(): Promise<void> {
        if (this.state === 'terminated') {
            return Promise.resolve();
        }
        if (!this._known) {
            // the offer is still being made: the gateway has not heard of the call
            this._end('Terminated locally');
        } else if (!this._terminateSent) {
            this._terminateSent = true;
            this._connection()._request(REQUESTS.terminate, { session: this.id }).then(() => {
                if (this.state !== 'terminated') {
                    const env = this._connection()._env;
                    this._terminateTimer = env.setTimeout(() => {
                        this._terminateTimer = null;
                        this._end('Terminated locally');
                    }, this._connection()._options.terminateTimeout);
                }
            }, (error: unknown) => {
                this._end(`Terminated locally (${errorMessage(error)})`);
            });
        }
        return this._ended;
    }

    /**
     * Plays DTMF tones (0-9, *, #, A-D; ',' is a 2 s pause) in the audio (RFC 4733) via the audio sender's
     * RTCDTMFSender. Tones are queued after those still playing. Throws if the call has no media yet (states
     * `early-media`, `accepted` and `established` have) or sends no audio.
     */
    sendDtmf(tones: string, options: DtmfOptions = {}): void {
        if (!MEDIA_STATES.includes(this.state)) {
            throw new SylkRTCError(`Cannot send DTMF in state ${this.state}`, 'local');
        }
        if (typeof tones !== 'string' || !/^[0-9A-Da-d#*,]+$/.test(tones)) {
            throw new TypeError(`Invalid DTMF tones ${JSON.stringify(tones)}: use 0-9, *, #, A-D and ','`);
        }
        const senders = this.pc ? this.pc.getSenders() : [];
        const sender = senders.find((s) => s.track?.kind === 'audio' && s.dtmf) ?? senders.find((s) => s.dtmf);
        const dtmf = sender?.dtmf;
        if (!dtmf) {
            throw new SylkRTCError('DTMF is not available: the call sends no audio', 'local');
        }
        if ('canInsertDTMF' in dtmf && dtmf.canInsertDTMF === false) {
            throw new SylkRTCError('DTMF cannot be sent now (the audio is not flowing)', 'local');
        }
        dtmf.insertDTMF(dtmf.toneBuffer + tones.toUpperCase(), options.duration ?? 100, options.gap ?? 70);
    }

    /**
     * Sends DTMF tones (0-9, *, #, A-D; up to 64) as SIP INFO (`session-dtmf-info`): the gateway sends one INFO per
     * tone, each after the previous one's duration. Resolves on the gateway's ack (the tones are queued there).
     * Rejects in states other than `early-media`, `accepted` and `established`, and with a TypeError for bad tones.
     */
    async sendDtmfInfo(tones: string, options: DtmfInfoOptions = {}): Promise<void> {
        if (typeof tones !== 'string' || !/^[0-9A-Da-d#*]{1,64}$/.test(tones)) {
            throw new TypeError(`Invalid DTMF tones ${JSON.stringify(tones)}: use 1 to 64 of 0-9, *, #, A-D`);
        }
        const duration = options.duration ?? 160;
        if (!Number.isInteger(duration) || duration < 40 || duration > 5000) {
            throw new TypeError(`Invalid DTMF duration ${JSON.stringify(options.duration)}: 40 to 5000 ms`);
        }
        if (!MEDIA_STATES.includes(this.state)) {
            throw new SylkRTCError(`Cannot send DTMF in state ${this.state}`, 'local', REQUESTS.dtmfInfo);
        }
        await this._connection()._request(REQUESTS.dtmfInfo, { session: this.id, digit: tones.toUpperCase(), duration });
    }

    /**
     * Renegotiates the call with a re-INVITE: a new offer from the existing RTCPeerConnection (after adding the
     * tracks of `localStream` it does not send yet: a video track to an audio call, say), sent with
     * `session-update`. Resolves once the far end's answer has been applied (`updated` follows). If the gateway
     * refuses it or the far end does (`update` `failed`), the offer is rolled back, `updateFailed` is emitted and the
     * promise rejects (a `SylkRTCError`; the call goes on as before). One re-INVITE at a time: rejects (`local`) while
     * one is under way, and in states other than `accepted` and `established`.
     */
    async update(options: UpdateOptions = {}): Promise<void> {
        this._checkInCall('update', REQUESTS.update);
        if (this._remoteAnswer) {
            await this._remoteAnswer;
            this._checkInCall('update', REQUESTS.update);
        }
        if (this.updating !== null || this._applying) {
            throw new SylkRTCError(`Cannot update call ${this.id}: ${this.updating ?? 'an'} update is under way`, 'local',
                REQUESTS.update);
        }
        const pc = this.pc!;
        this.updating = 'local';
        const outcome = new Promise<void>((resolve, reject) => {
            this._localUpdate = { resolve, reject };
        });
        try {
            if (options.localStream) {
                this._addTracks(pc, options.localStream);
            }
            const offer = await pc.createOffer(options.offerOptions);
            this._checkActive();
            await pc.setLocalDescription(offer);
            this._checkActive();
        } catch (error) {
            const reason = `Could not make the offer: ${errorMessage(error)}`;
            this._localUpdateFailed(reason, new SylkRTCError(reason, 'local', REQUESTS.update));
            return outcome;
        }
        this._connection()._request(REQUESTS.update, { session: this.id, sdp: pc.localDescription?.sdp })
            .catch((error: unknown) => this._localUpdateFailed(errorMessage(error), error as Error));
        return outcome;
    }

    /**
     * Puts the call on hold (`session-hold`): the gateway sends the far end a re-INVITE with `direction`
     * (`sendonly` by default, or `inactive`) and stops relaying what it excludes; nothing changes in the browser.
     * Resolves on the ack; the `hold` event (`onHold` true) follows once the re-INVITE went out (a failure comes as
     * `updateFailed`). In `accepted` and `established` only.
     */
    async hold(options: HoldOptions = {}): Promise<void> {
        const direction = options.direction ?? 'sendonly';
        if (direction !== 'sendonly' && direction !== 'inactive') {
            throw new TypeError(`hold: direction must be sendonly or inactive, not ${JSON.stringify(direction)}`);
        }
        await this._callControl('hold', REQUESTS.hold, { direction });
    }

    /** Takes the call off hold (`session-unhold`): the direction from before the hold. As `hold()` otherwise. */
    async unhold(): Promise<void> {
        await this._callControl('unhold', REQUESTS.unhold, {});
    }

    /**
     * Transfers the far end to `uri` (`session-transfer`, a SIP REFER): blind, or attended with `replace` (the call
     * with the target, which the far end's new call replaces). Resolves on the ack; how it goes comes as `transfer`
     * events (`progress`, then `completed` or `failed`); after `completed` the far end normally hangs up.
     */
    async transfer(uri: string, options: TransferOptions = {}): Promise<void> {
        const target = this.account._target(uri);
        const replace = options.replace;
        if (replace !== undefined && (!(replace instanceof Call) || replace === this
            || replace.account.connection !== this.account.connection)) {
            throw new TypeError('transfer: replace must be another call of the same connection');
        }
        const fields: Record<string, unknown> = { uri: target.aor };
        if (replace !== undefined) {
            fields.replace_session = replace.id;
        }
        await this._callControl('transfer', REQUESTS.transfer, fields);
    }

    /**
     * Sends an instant message inside the call (`session-message`, a SIP MESSAGE in the call's dialog). Resolves
     * with its message id on the ack; what became of it comes as a `messageStatus` event of the call.
     */
    async sendMessage(content: string, options: MessageOptions = {}): Promise<string> {
        const { fields, messageId } = messageFields(content, options, 'sendMessage');
        this._checkInCall('send a message in', REQUESTS.sessionMessage);
        await this._connection()._request(REQUESTS.sessionMessage, { session: this.id, ...fields });
        return messageId;
    }

    // ---- internals ----

    private _connection() {
        return this.account.connection;
    }

    /**
     * @internal: create the peer connection (synchronously: errors are thrown to the caller of Account.call), then
     * make the offer and send session-create.
     */
    _startOutgoing(options: CallOptions, referSession: string | null = null): void {
        this._referSession = referSession;
        const headers = options.headers === undefined ? null : encodeHeaders(options.headers, 'call');
        void this._makeOffer(this._createPeerConnection(options), options, headers);
    }

    /** @internal: the Call-ID and headers of an incoming call. */
    _setSipDetails(callId: string | null, headers: HeaderMap | null): void {
        if (callId !== null) {
            this.callId = callId;
        }
        if (headers !== null) {
            this.remoteHeaders = { ...headers };
        }
    }

    private async _makeOffer(pc: RTCPeerConnection, options: CallOptions,
        headers: Array<{ name: string; value: string }> | null): Promise<void> {
        try {
            const offer = await pc.createOffer(options.offerOptions);
            this._checkActive();
            await pc.setLocalDescription(offer);
            this._checkActive();
            const fields: Record<string, unknown> = {
                account: this.account.id,
                session: this.id,
                uri: this.remoteIdentity.uri,
                sdp: pc.localDescription?.sdp ?? offer.sdp,
            };
            if (headers) {
                fields.headers = headers;
            }
            if (this._referSession !== null) {
                fields.refer_session = this._referSession;
            }
            const sent = this._connection()._request(REQUESTS.call, fields);
            this._known = true;
            this._startTrickling();
            await sent;
        } catch (error) {
            if (this.state === 'terminated') {
                return;
            }
            const kind = (error as SylkRTCError).kind;
            if (kind === 'server') {
                // the gateway refused the call: it has no session to terminate
                this._end(errorMessage(error));
            } else {
                this._fail(`Call failed: ${errorMessage(error)}`);
            }
        }
    }

    private _createPeerConnection(options: CallOptions): RTCPeerConnection {
        const env = this._connection()._env;
        if (typeof env.RTCPeerConnection !== 'function') {
            throw new Error('WebRTC is not available in this browser (no RTCPeerConnection)');
        }
        const pc = new env.RTCPeerConnection(options.pcConfig);
        this.pc = pc;
        this.localStream = options.localStream ?? null;
        try {
            if (this.localStream) {
                for (const track of this.localStream.getTracks()) {
                    pc.addTrack(track, this.localStream);
                }
            }
            if (!this.localStream && this.direction === 'outgoing') {
                pc.addTransceiver('audio', { direction: 'recvonly' });
            }
        } catch (error) {
            pc.close();
            throw error;
        }
        pc.addEventListener('icecandidate', (event) => this._onIceCandidate((event as RTCPeerConnectionIceEvent).candidate));
        pc.addEventListener('icegatheringstatechange', () => {
            if (pc.iceGatheringState === 'complete') {
                this._onIceCandidate(null);
            } else if (pc.iceGatheringState === 'gathering' && this._endOfCandidates) {
                this._endOfCandidates = false; // an ICE restart (update with iceRestart): new candidates follow
            }
        });
        pc.addEventListener('track', (event) => this._onTrack(event as RTCTrackEvent));
        return pc;
    }

    private _checkActive(): void {
        if (this.state === 'terminated') {
            throw new SylkRTCError(`Call ${this.id} was terminated (${this.reason})`, 'local');
        }
    }

    private _onIceCandidate(candidate: RTCIceCandidate | null): void {
        if (this.state === 'terminated' || this._endOfCandidates) {
            return;
        }
        if (candidate === null) {
            this._endOfCandidates = true;
            this._trickle([]);
        } else if (candidate.candidate) {
            // (an empty candidate string marks the end of one generation; the null candidate follows)
            this._trickle([{
                candidate: candidate.candidate,
                sdpMid: candidate.sdpMid ?? null,
                sdpMLineIndex: candidate.sdpMLineIndex ?? null,
            }]);
        }
    }

    private _startTrickling(): void {
        this._trickling = true;
        const queued = this._queued;
        this._queued = [];
        for (const candidates of queued) {
            this._trickle(candidates);
        }
    }

    private _trickle(candidates: TrickleCandidate[]): void {
        if (!this._trickling || this._connection().resuming) {
            this._queued.push(candidates); // (while the socket is down: sent once resumed)
            return;
        }
        this._connection()._request(REQUESTS.trickle, { session: this.id, candidates }).catch((error: unknown) => {
            if (this.state === 'terminated') {
                return;
            }
            if (this._connection().resuming) {
                this._queued.push(candidates); // the socket dropped under it: again once resumed
            } else {
                this._fail(`ICE candidates refused: ${errorMessage(error)}`);
            }
        });
    }

    /** @internal: the connection resumed: send the candidates that waited for it. */
    _resumed(): void {
        if (this._trickling && this.state !== 'terminated') {
            this._startTrickling();
        }
    }

    /**
     * @internal: whether a resume's snapshot names this call if the gateway still has it: it names every call but
     * an outgoing one whose INVITE has not gone out and an incoming one being answered.
     */
    _shownOnResume(): boolean {
        return this.direction === 'outgoing' ? ORDER[this.state] >= ORDER.progress : this.state !== 'connecting';
    }

    /**
     * @internal: a state from a resume (the snapshot, then the events of the time without a socket). The snapshot's
     * `accepted` or `established` of an outgoing call carries no answer: the answer comes in an event that follows,
     * so the state waits for the end of the resume (`_settleResume`).
     */
    _onResumedState(event: SessionStateEvent): void {
        const order = ORDER[event.state as CallState] as number | undefined;
        if (this.direction === 'outgoing' && event.sdp === null && order !== undefined && order >= ORDER.accepted
            && order < ORDER.terminated && ORDER[this.state] < ORDER.accepted) {
            if (this._resumeTarget === null || order > ORDER[this._resumeTarget]) {
                this._resumeTarget = event.state as CallState;
            }
            return;
        }
        this._onEvent(event);
    }

    /**
     * @internal: the resume is over. A state the snapshot said that no event brought (some were missed): taken as
     * it is if the call can be in it, else the call ends (an answer that never came cannot be made up).
     */
    _settleResume(): void {
        const target = this._resumeTarget;
        this._resumeTarget = null;
        if (target === null || this.state === 'terminated' || ORDER[target] <= ORDER[this.state]) {
            return;
        }
        if (ORDER[this.state] < ORDER.accepted) {
            const pc = this.pc;
            if (!this._applying && this._earlySdp === null && pc !== null && pc.signalingState === 'have-local-offer') {
                this._fail('The answer to the call was lost while disconnected');
                return;
            }
            this._onEvent(stateEvent('accepted')); // the early answer becomes the answer (after what is being applied)
        }
        if (target === 'established') {
            this._onEvent(stateEvent('established'));
        }
    }

    private _onTrack(event: RTCTrackEvent): void {
        if (this.state === 'terminated') {
            return;
        }
        let stream: MediaStream | undefined = event.streams && event.streams[0];
        if (!stream) {
            const env = this._connection()._env;
            if (!this._trackStream && env.MediaStream) {
                this._trackStream = new env.MediaStream();
            }
            if (!this._trackStream) {
                return;
            }
            stream = this._trackStream;
            stream.addTrack(event.track);
        }
        if (!this._remoteStreams.includes(stream)) {
            this._remoteStreams.push(stream);
            if (!this.remoteStream) {
                this.remoteStream = stream;
            }
            this.emit('streamAdded', stream);
        }
    }

    /** @internal: a session event for this call, decoded from either dialect. */
    _onEvent(event: SessionEvent): void {
        if (this.state === 'terminated') {
            return;
        }
        if (event.type === 'state' && event.state === 'terminated') {
            // at once, not after a pending setRemoteDescription
            this._end(event.reason ?? 'Terminated');
            return;
        }
        if (this._applying) {
            this._waiting.push(event); // after the remote description has been applied
        } else {
            this._handle(event);
        }
    }

    private _handle(event: SessionEvent): void {
        switch (event.type) {
            case 'state':
                this._applyState(event);
                break;
            case 'dtmf':
                this.emit('dtmf', { digit: event.digit, duration: event.duration, method: event.method });
                break;
            case 'update':
                this._onUpdate(event);
                break;
            case 'hold':
                if (event.originator === 'local') {
                    this.onHold = event.held;
                } else {
                    this.remoteHold = event.held;
                }
                this.emit('hold', { held: event.held, originator: event.originator });
                break;
            case 'transfer':
                // A 401/407 is the far end authenticating its call to the target, which it answers by itself: a step
                // of that call, not how the transfer goes.
                if (!(event.state === 'progress' && (event.code === 401 || event.code === 407))) {
                    this.emit('transfer', { state: event.state, code: event.code, reason: event.reason });
                }
                break;
            case 'transfer-request':
                this._onTransferRequest(event);
                break;
            case 'message':
                this.emit('message', receivedMessage(event));
                break;
            case 'disposition-notification':
                this.emit('messageStatus', messageStatus(event));
                break;
            default:
                break;
        }
    }

    private _applyState(event: SessionStateEvent): void {
        const outgoing = this.direction === 'outgoing';
        switch (event.state) {
            case 'progress':
                if (outgoing) {
                    this._setState('progress', null);
                }
                break;
            case 'proceeding':
                if (outgoing && ORDER[this.state] < ORDER.accepted) {
                    if (event.code !== null) {
                        this.provisionalCode = event.code;
                    }
                    this._setState('proceeding', null);
                    this.emit('proceeding', event.code);
                }
                break;
            case 'ringing':
                if (outgoing) {
                    this._setState('ringing', null);
                }
                break;
            case 'early-media':
                if (event.callId !== null) {
                    this.callId = event.callId;
                }
                if (outgoing && ORDER[this.state] < ORDER['early-media']) {
                    this._applyEarlyMedia(event.sdp);
                }
                break;
            case 'accepted':
                this._setSipDetails(event.callId, event.headers);
                if (outgoing) {
                    this._applyAnswer(event.sdp);
                } else {
                    this._setState('accepted', null);
                }
                break;
            case 'established':
                this._setState('established', null);
                break;
            default:
                break; // unknown states from newer gateways
        }
    }

    /**
     * Applies the early answer as a provisional answer (`pranswer`), so that early media play; a browser that
     * refuses pranswer gets it as the answer. `early-media` follows once it is applied.
     */
    private _applyEarlyMedia(sdp: string | null): void {
        const pc = this.pc;
        if (sdp === null || pc === null || pc.signalingState !== 'have-local-offer') {
            return;
        }
        this._earlySdp = sdp;
        this._applying = true;
        pc.setRemoteDescription({ type: 'pranswer', sdp }).then(
            () => 'pranswer' as const,
            async (error: unknown) => {
                if (this.state === 'terminated' || pc.signalingState !== 'have-local-offer') {
                    throw error;
                }
                await pc.setRemoteDescription({ type: 'answer', sdp });
                return 'answer' as const;
            },
        ).then((how) => {
            this._applying = false;
            this._earlyAppliedAs = how;
            this._setState('early-media', null);
            this._applyWaiting();
        }, (error: unknown) => {
            this._applying = false;
            this._fail(`Could not apply the early media answer: ${errorMessage(error)}`);
        });
    }

    /**
     * The call was answered: applies the answer (the accepted event's SDP, or the early answer when the 200 OK
     * brought none), then `accepted`.
     */
    private _applyAnswer(sdp: string | null): void {
        const pc = this.pc;
        const answer = sdp ?? this._earlySdp;
        const waiting = pc !== null
            && (pc.signalingState === 'have-local-offer' || pc.signalingState === 'have-remote-pranswer');
        if (answer === null || pc === null || !waiting || this._earlyAppliedAs === 'answer') {
            // nothing to apply, or the early answer already was the answer (a browser without pranswer: a new SDP
            // in the 200 OK can't be applied then, and the early one stays)
            this._setState('accepted', null);
            return;
        }
        this._applying = true;
        pc.setRemoteDescription({ type: 'answer', sdp: answer }).then(() => {
            this._applying = false;
            this._setState('accepted', null);
            this._applyWaiting();
        }, (error: unknown) => {
            this._applying = false;
            this._fail(`Could not apply the remote answer: ${errorMessage(error)}`);
        });
    }

    private _checkInCall(action: string, request: string): void {
        if (!IN_CALL_STATES.includes(this.state) || this.pc === null) {
            throw new SylkRTCError(`Cannot ${action} call ${this.id} in state ${this.state}`, 'local', request);
        }
    }

    /** hold, unhold, transfer: after the far end's update (if one is being answered), not during one of ours. */
    private async _callControl(action: string, request: string, fields: Record<string, unknown>): Promise<void> {
        this._checkInCall(action, request);
        if (this._remoteAnswer) {
            await this._remoteAnswer;
            this._checkInCall(action, request);
        }
        if (this.updating === 'local' && request !== REQUESTS.transfer) {
            throw new SylkRTCError(`Cannot ${action} call ${this.id}: an update is under way`, 'local', request);
        }
        await this._connection()._request(request, { session: this.id, ...fields });
    }

    /**
     * Adds the tracks of `stream` the call does not send yet. (`addTrack` reuses a transceiver of the track's kind
     * that never sent, such as the receive-only audio of a call made without a stream, or one a far end's offer added.)
     */
    private _addTracks(pc: RTCPeerConnection, stream: MediaStream): void {
        const sent = pc.getSenders().map((sender) => sender.track);
        const added: RTCRtpSender[] = [];
        this._updateAdded = { senders: added, localStream: this.localStream };
        for (const track of stream.getTracks()) {
            if (!sent.includes(track)) {
                added.push(pc.addTrack(track, stream));
            }
        }
        this.localStream = stream;
    }

    /** A failed update: take back the tracks it added (they were never negotiated). */
    private _removeAddedTracks(pc: RTCPeerConnection): void {
        const added = this._updateAdded;
        this._updateAdded = null;
        if (added === null) {
            return;
        }
        for (const sender of added.senders) {
            try {
                pc.removeTrack(sender);
            } catch {
                // closed meanwhile
            }
        }
        this.localStream = added.localStream;
    }

    /** An `update` event: the far end's offer, or the outcome of ours (or of a hold the gateway could not send). */
    private _onUpdate(event: SessionUpdateEvent): void {
        switch (event.state) {
            case 'received':
                if (event.sdp !== null) {
                    this._answerRemoteOffer(event.sdp);
                }
                break;
            case 'accepted':
                if (this._localUpdate === null) {
                    break;
                }
                if (event.sdp === null) {
                    this._localUpdateFailed('The update was accepted without an answer');
                } else {
                    this._applyUpdateAnswer(event.sdp);
                }
                break;
            case 'failed': {
                const reason = event.reason ?? 'Update failed';
                if (this._localUpdate !== null) {
                    this._localUpdateFailed(reason);
                } else {
                    this.emit('updateFailed', { originator: 'local', reason }); // a hold or unhold
                }
                break;
            }
            default:
                break;
        }
    }

    private _applyUpdateAnswer(sdp: string): void {
        const pc = this.pc!;
        const pending = this._localUpdate!;
        this._applying = true;
        pc.setRemoteDescription({ type: 'answer', sdp }).then(() => {
            this._applying = false;
            if (this.state === 'terminated') {
                return;
            }
            this._localUpdate = null;
            this._updateAdded = null;
            this.updating = null;
            pending.resolve();
            this.emit('updated', { originator: 'local' });
            this._applyWaiting();
        }, (error: unknown) => {
            this._applying = false;
            // the far end has taken the new session: the call can't go on as it was
            this._fail(`Could not apply the answer to the update: ${errorMessage(error)}`);
        });
    }

    /** Our update failed: roll the offer back, tell, reject `update()`. */
    private _localUpdateFailed(reason: string, error?: Error): void {
        const pending = this._localUpdate;
        if (pending === null || this.state === 'terminated') {
            return;
        }
        this._localUpdate = null;
        const pc = this.pc!;
        const done = () => {
            this._applying = false;
            if (this.state === 'terminated') {
                return;
            }
            this._removeAddedTracks(pc);
            this.updating = null;
            pending.reject(error ?? new SylkRTCError(reason, 'server', REQUESTS.update));
            this.emit('updateFailed', { originator: 'local', reason });
            this._applyWaiting();
        };
        if (pc.signalingState === 'have-local-offer') {
            this._applying = true;
            pc.setLocalDescription({ type: 'rollback' }).then(done, done);
        } else {
            done();
        }
    }

    /**
     * The far end's re-INVITE: answered here at once (the gateway hangs up if the browser does not answer within
     * 10 s): setRemoteDescription(offer), createAnswer, setLocalDescription, `session-update` with the answer.
     */
    private _answerRemoteOffer(sdp: string): void {
        const pc = this.pc;
        if (pc === null) {
            return;
        }
        this.updating = 'remote';
        this.emit('updateReceived', { sdp });
        const answering = (async () => {
            if (this._localUpdate !== null) {
                // both sides at once (glare): the far end's update wins here, as the gateway only follows that one
                const local = this._localUpdate;
                this._localUpdate = null;
                if (pc.signalingState === 'have-local-offer') {
                    await pc.setLocalDescription({ type: 'rollback' });
                }
                this._removeAddedTracks(pc);
                const reason = 'The far end sent an update at the same time';
                local.reject(new SylkRTCError(reason, 'local', REQUESTS.update));
                this.emit('updateFailed', { originator: 'local', reason });
            }
            await pc.setRemoteDescription({ type: 'offer', sdp });
            this._checkActive();
            const answer = await pc.createAnswer();
            this._checkActive();
            await pc.setLocalDescription(answer);
            this._checkActive();
            await this._connection()._request(REQUESTS.update,
                { session: this.id, sdp: pc.localDescription?.sdp ?? answer.sdp });
        })();
        const settled = answering.then(() => {
            if (this._remoteAnswer === settled) {
                this._remoteAnswer = null;
            }
            if (this.state === 'terminated') {
                return;
            }
            this.updating = null;
            this.emit('updated', { originator: 'remote' });
        }, (error: unknown) => {
            if (this._remoteAnswer === settled) {
                this._remoteAnswer = null;
            }
            if (this.state === 'terminated') {
                return;
            }
            const reason = `Could not answer the far end's update: ${errorMessage(error)}`;
            this.updating = null;
            this.emit('updateFailed', { originator: 'remote', reason });
            this._fail(reason); // the gateway would hang up anyway, the re-INVITE unanswered
        });
        this._remoteAnswer = settled;
    }

    private _onTransferRequest(event: SessionTransferRequestEvent): void {
        if (this.transferRequest !== null) {
            this.transferRequest._supersede();
        }
        const request = new TransferRequest(this, event.referTo, event.referredBy, event.replaces);
        this.transferRequest = request;
        this.emit('transferRequest', request);
    }

    private _applyWaiting(): void {
        while (this._waiting.length > 0 && !this._applying && this.state !== 'terminated') {
            this._handle(this._waiting.shift()!);
        }
    }

    private _setState(state: CallState, reason: string | null): void {
        const previous = this.state;
        if (previous === 'terminated' || (ORDER[state] <= ORDER[previous] && !(previous === 'incoming' && state === 'connecting'))) {
            return;
        }
        this.state = state;
        this.emit('stateChanged', state, previous, reason);
    }

    /** Ends the call here and tells the gateway (best effort). */
    private _fail(reason: string): void {
        if (this.state === 'terminated') {
            return;
        }
        if (this._known && !this._terminateSent && this._connection().state === 'ready') {
            this._terminateSent = true;
            this._connection()._request(REQUESTS.terminate, { session: this.id }).catch(() => undefined);
        }
        this._end(reason);
    }

    /** @internal: the call is over: close the peer connection (the local stream is the app's), forget the call. */
    _end(reason: string): void {
        if (this.state === 'terminated') {
            return;
        }
        if (this._terminateTimer !== null) {
            this._connection()._env.clearTimeout(this._terminateTimer);
            this._terminateTimer = null;
        }
        const previous = this.state;
        this.state = 'terminated';
        this.reason = reason;
        this._queued = [];
        this._waiting = [];
        this.updating = null;
        this.transferRequest = null;
        if (this._localUpdate !== null) {
            const pending = this._localUpdate;
            this._localUpdate = null;
            pending.reject(new SylkRTCError(`Call ${this.id} was terminated (${reason})`, 'local', REQUESTS.update));
        }
        if (this.pc) {
            try {
                this.pc.close();
            } catch {
                // already closed
            }
        }
        this.account._forgetCall(this);
        this._resolveEnded();
        this.emit('stateChanged', 'terminated', previous, reason);
    }
}

function stateEvent(state: CallState): SessionStateEvent {
    return { type: 'state', state, reason: null, sdp: null, code: null, callId: null, headers: null };
}

/**
 * The far end's request to transfer a call (an incoming REFER, the `transferRequest` event of the Call): call the
 * target with `accept()`, or refuse with `reject()`. Left alone, the gateway refuses it after 30 s.
 */
export class TransferRequest {
    /** The call whose far end asks. */
    readonly call: Call;
    /** Whom to call: `user@domain`. */
    readonly referTo: string;
    /** Who asks (the far end), when it said. */
    readonly referredBy: string | null;
    /** An attended transfer: the new call replaces one the target has (the gateway adds `Replaces`). */
    readonly replaces: boolean;
    /** `pending`, then `accepted` or `rejected` (or `superseded` by a newer request on the same call). */
    state: 'pending' | 'accepted' | 'rejected' | 'superseded' = 'pending';

    /** @internal */
    constructor(call: Call, referTo: string, referredBy: string | null, replaces: boolean) {
        this.call = call;
        this.referTo = referTo;
        this.referredBy = referredBy;
        this.replaces = replaces;
    }

    /**
     * Carries the transfer out: a new outgoing call to `referTo` (as `Account.call()`, with the same options),
     * placed with `refer_session` so that the gateway adds `Referred-By` (and `Replaces`) and reports to the far end
     * how it goes. Returns the new Call; the old one stays up until one side ends it (the far end usually does once
     * the new call is answered). Throws if the request is not pending or its call has ended.
     */
    accept(options: CallOptions = {}): Call {
        this._checkPending('accept', REQUESTS.call);
        const call = this.call.account._placeCall(this.referTo, options, this.call.id);
        this.state = 'accepted';
        this.call.transferRequest = null;
        return call;
    }

    /** Refuses it (`session-transfer-reject`, with a SIP status 400–699, 603 Decline by default). Resolves on the ack. */
    reject(code = 603): Promise<void> {
        if (!Number.isInteger(code) || code < 400 || code > 699) {
            return Promise.reject(new TypeError(`reject: code must be a SIP status from 400 to 699, not ${JSON.stringify(code)}`));
        }
        try {
            this._checkPending('reject', REQUESTS.transferReject);
        } catch (error) {
            return Promise.reject(error);
        }
        this.state = 'rejected';
        this.call.transferRequest = null;
        return this.call.account.connection._request(REQUESTS.transferReject, { session: this.call.id, code });
    }

    /** @internal */
    _supersede(): void {
        if (this.state === 'pending') {
            this.state = 'superseded';
        }
    }

    private _checkPending(action: string, request: string): void {
        if (this.state !== 'pending') {
            throw new SylkRTCError(`Cannot ${action} the transfer request of call ${this.call.id}: it is ${this.state}`,
                'local', request);
        }
        if (this.call.state === 'terminated') {
            throw new SylkRTCError(`Cannot ${action} the transfer request of call ${this.call.id}: the call has ended`,
                'local', request);
        }
    }
}
