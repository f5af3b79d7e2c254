// The load generator of bench/bridged.py: one page holding many audio calls (RTCPeerConnections) at once, placed
// either through the gateway (sylkrtc.js over its WebSocket) or straight on a Janus (its WebSocket API and SIP
// plugin, with the requests the gateway itself sends: a master handle per account that only sets the identity,
// a helper handle per call, `call` with the browser's offer, trickled candidates). Both modes share the page, the
// fake microphone's one track and the far end, so their figures differ only by the path in between.
// Driven from Python through page.evaluate(): window.bench.{init, open, place, progress, stats, hangup, remoteTrack}.

import { connect } from './sylkrtc.js';

const PC_CONFIG = { iceServers: [] };
// one capture track for every call; no echo canceller or noise suppression (nothing to cancel, and it would only
// add to the load generator's cost)
const AUDIO = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
const HANGUP_WAIT = 8000; // ms to wait for Janus to report a call's end (the gateway's own bound, janus/sipcall.py)

let stream = null;
const drivers = {};
let records = [];
let roundStart = 0;

/** One call of the current round, whatever the mode: when it was placed, whether and when it came up, how it ended. */
class Record {
    constructor(index) {
        this.index = index;
        this.started = performance.now();
        this.state = 'setting-up'; // then established, failed (before established), ended, or dropped (not by us)
        this.setup = null; // ms from placing to established
        this.reason = null;
        this.pc = null;
        this.hangupRequested = false;
    }

    established() {
        if (this.state === 'setting-up') {
            this.state = 'established';
            this.setup = performance.now() - this.started;
        }
    }

    ended(reason) {
        if (this.state === 'setting-up') {
            this.state = 'failed';
        } else if (this.state === 'established') {
            this.state = this.hangupRequested ? 'ended' : 'dropped';
        } else {
            return;
        }
        this.reason = reason;
    }
}

class GatewayDriver {
    constructor({ url, accounts, target }) {
        this.url = url;
        this.accountList = accounts; // [{account, ha1}]
        this.target = target;
        this.calls = new Map(); // record -> sylkrtc Call
    }

    async open() {
        // no reconnect, no resume: a dropped socket must show as dropped calls, not be papered over
        this.connection = connect(this.url, { reconnect: false, resume: false, requestTimeout: 30000,
                                              terminateTimeout: HANGUP_WAIT });
        await this.connection.waitReady(15000);
        this.accounts = [];
        for (const { account, ha1 } of this.accountList) {
            this.accounts.push(await this.connection.addAccount({ account, password: ha1, ha1: true }));
        }
    }

    place(record) {
        const account = this.accounts[record.index % this.accounts.length];
        let call;
        try {
            call = account.call(this.target, { localStream: stream, pcConfig: PC_CONFIG });
        } catch (error) {
            record.ended(`call() threw: ${error.message}`);
            return;
        }
        this.calls.set(record, call);
        record.pc = call.pc;
        call.on('stateChanged', (state, previous, reason) => {
            record.pc = call.pc;
            if (state === 'established') {
                record.established();
            } else if (state === 'terminated') {
                record.ended(reason);
            }
        });
    }

    async terminate(record) {
        const call = this.calls.get(record);
        if (call) {
            await call.terminate();
        }
        this.calls.delete(record);
    }

    async endRound() {} // the gateway lets an unregistered account's SIP stack go after its last call by itself
}

class JanusDriver {
    constructor({ url, secret, accounts, proxy, target }) {
        this.url = url;
        this.secret = secret;
        this.accountList = accounts;
        this.proxy = proxy;
        this.target = target;
        this.serial = 0;
        this.pending = new Map(); // transaction -> {plugin, resolve, reject}
        this.listeners = new Map(); // handle -> fn(message), for a call's events
        this.waiters = new Map(); // handle -> [{event, resolve}], one-shot waits for a SIP-plugin event
        this.masters = new Map(); // account index -> Promise<{handle, masterId}>, for the current round
        this.handles = new Map(); // record -> helper handle
    }

    open() {
        return new Promise((resolve, reject) => {
            const ws = new WebSocket(this.url, 'janus-protocol');
            ws.onopen = resolve;
            ws.onerror = () => reject(new Error(`could not open ${this.url}`));
            ws.onmessage = (event) => this._receive(JSON.parse(event.data));
            ws.onclose = () => {
                for (const waiting of this.pending.values()) {
                    waiting.reject(new Error('Janus connection closed'));
                }
                this.pending.clear();
                for (const listen of this.listeners.values()) {
                    listen({ janus: 'hangup', reason: 'Janus connection closed' });
                }
            };
            this.ws = ws;
        }).then(async () => {
            this.session = (await this._request({ janus: 'create' })).data.id;
            // session_timeout is 60 s in the generated config
            this.keepalive = setInterval(() => this._send({ janus: 'keepalive', session_id: this.session }), 20000);
        });
    }

    _send(message) {
        // nothing after the JSON: Janus 1.1.2 drops a frame with trailing whitespace
        this.ws.send(JSON.stringify({ ...message, transaction: `j${this.serial++}`, apisecret: this.secret }));
    }

    /** A request; `plugin`: settled by the SIP plugin's first event with the same transaction (after the ack). */
    _request(message, plugin = false, timeout = 30000) {
        const transaction = `j${this.serial++}`;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(transaction);
                reject(new Error(`Janus did not answer ${message.janus} within ${timeout} ms`));
            }, timeout);
            const settle = (fn) => (value) => { clearTimeout(timer); fn(value); };
            this.pending.set(transaction, { plugin, resolve: settle(resolve), reject: settle(reject) });
            this.ws.send(JSON.stringify({ ...message, transaction, apisecret: this.secret }));
        });
    }

    _receive(message) {
        const kind = message.janus;
        const waiting = this.pending.get(message.transaction);
        if (waiting && (kind === 'success' || kind === 'error' || (kind === 'ack' && !waiting.plugin)
                        || (kind === 'event' && waiting.plugin))) {
            this.pending.delete(message.transaction);
            const data = message.plugindata?.data;
            if (kind === 'error') {
                waiting.reject(new Error(`Janus error ${JSON.stringify(message.error)}`));
            } else if (data && data.error) {
                waiting.reject(new Error(`SIP plugin error ${data.error_code}: ${data.error}`));
            } else {
                waiting.resolve(message);
            }
            if (kind !== 'event') {
                return;
            }
        }
        if (kind === 'ack' || kind === 'success') {
            return;
        }
        const event = message.plugindata?.data?.result?.event;
        const waiters = this.waiters.get(message.sender);
        if (event && waiters) {
            const index = waiters.findIndex((w) => w.event === event);
            if (index >= 0) {
                waiters.splice(index, 1)[0].resolve(message);
            }
        }
        this.listeners.get(message.sender)?.(message);
    }

    _expect(handle, event, timeout = 30000) {
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no ${event} event within ${timeout} ms`)), timeout);
            const waiters = this.waiters.get(handle) ?? [];
            waiters.push({ event, resolve: (message) => { clearTimeout(timer); resolve(message); } });
            this.waiters.set(handle, waiters);
        });
    }

    async _attach() {
        return (await this._request({ janus: 'attach', plugin: 'janus.plugin.sip', session_id: this.session })).data.id;
    }

    _message(handle, body, jsep) {
        return this._request({ janus: 'message', session_id: this.session, handle_id: handle, body,
                               ...(jsep ? { jsep } : {}) }, true);
    }

    _detach(handle) {
        this.listeners.delete(handle);
        this.waiters.delete(handle);
        return this._request({ janus: 'detach', session_id: this.session, handle_id: handle }, false, 15000)
            .catch(() => null);
    }

    /** The account's master handle for this round: its own SIP stack, identity set, nothing registered
     *  (sipcodec.register_body without a registration). */
    _master(index) {
        if (!this.masters.has(index)) {
            this.masters.set(index, (async () => {
                const { account, ha1 } = this.accountList[index];
                const handle = await this._attach();
                const registered = this._expect(handle, 'registered');
                await this._message(handle, { request: 'register', username: `sip:${account}`,
                                              authuser: account.split('@')[0], ha1_secret: ha1, send_register: false,
                                              proxy: this.proxy, outbound_proxy: this.proxy });
                const result = (await registered).plugindata.data.result;
                return { handle, masterId: result.master_id };
            })());
        }
        return this.masters.get(index);
    }

    place(record) {
        this._call(record).catch((error) => record.ended(`failed: ${error.message}`));
    }

    async _call(record) {
        const index = record.index % this.accountList.length;
        const master = await this._master(index);
        const handle = await this._attach();
        this.handles.set(record, handle);
        const helper = this._expect(handle, 'registered');
        await this._message(handle, { request: 'register', type: 'helper',
                                      username: `sip:${this.accountList[index].account}`,
                                      master_id: master.masterId });
        await helper;
        if (record.hangupRequested) {
            return;
        }
        const pc = new RTCPeerConnection(PC_CONFIG);
        record.pc = pc;
        for (const track of stream.getTracks()) {
            pc.addTrack(track, stream);
        }
        let sent = false;
        const queued = [];
        // as the gateway sends them (JanusSIPCall._send_candidates): each browser candidate in a `candidates` list,
        // the end as `candidate: {completed: true}`
        const trickle = (payload) => this._send({ janus: 'trickle', session_id: this.session, handle_id: handle,
                                                  ...payload });
        pc.onicecandidate = (event) => {
            if (event.candidate && !event.candidate.candidate) {
                return; // the end of one generation; the null candidate follows
            }
            const payload = event.candidate
                ? { candidates: [{ candidate: event.candidate.candidate, sdpMid: event.candidate.sdpMid,
                                   sdpMLineIndex: event.candidate.sdpMLineIndex }] }
                : { candidate: { completed: true } };
            (sent ? trickle : (p) => queued.push(p))(payload);
        };
        let accepted = false;
        let webrtcup = false;
        this.listeners.set(handle, (message) => {
            const result = message.plugindata?.data?.result;
            if (message.janus === 'webrtcup') {
                webrtcup = true;
                if (accepted) {
                    record.established();
                }
            } else if (message.janus === 'hangup') {
                record.ended(`PeerConnection closed (${message.reason})`);
            } else if (result?.event === 'accepted' && message.jsep) {
                pc.setRemoteDescription(message.jsep).then(() => {
                    accepted = true;
                    if (webrtcup) {
                        record.established();
                    }
                }, (error) => record.ended(`could not apply the answer: ${error.message}`));
            } else if (result?.event === 'hangup') {
                record.ended(`${result.code} ${result.reason}`);
            }
        });
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        await this._message(handle, { request: 'call', uri: `sip:${this.target}`, call_id: crypto.randomUUID() },
                            { type: 'offer', sdp: pc.localDescription.sdp });
        sent = true; // candidates follow the `calling` reply, as the gateway sends them (JanusSIPCall.placed)
        queued.splice(0).forEach(trickle);
    }

    async terminate(record) {
        record.hangupRequested = true;
        const handle = this.handles.get(record);
        if (handle !== undefined) {
            if (record.state === 'established') {
                const ended = this._expect(handle, 'hangup', HANGUP_WAIT).catch(() => null);
                await this._message(handle, { request: 'hangup' }).catch(() => null);
                await ended;
            }
            await this._detach(handle);
            this.handles.delete(record);
        }
        record.pc?.close();
        record.ended('hung up');
    }

    /** Let every account's SIP stack go, as the gateway does once an unregistered account has no call left. */
    async endRound() {
        const masters = [...this.masters.values()];
        this.masters.clear();
        await Promise.all(masters.map((master) => master.then((m) => this._detach(m.handle), () => null)));
    }
}

async function callStats(record) {
    const stats = { index: record.index, received: 0, lost: 0, sent: 0, remoteLost: 0, jitter: 0 };
    const report = await record.pc.getStats();
    report.forEach((s) => {
        if (s.kind !== 'audio') {
            return;
        }
        if (s.type === 'inbound-rtp') {
            stats.received += s.packetsReceived || 0;
            stats.lost += s.packetsLost || 0;
            stats.jitter = Math.max(stats.jitter, s.jitter || 0);
        } else if (s.type === 'outbound-rtp') {
            stats.sent += s.packetsSent || 0;
        } else if (s.type === 'remote-inbound-rtp') { // what Janus's receiver reports of the browser's stream
            stats.remoteLost += s.packetsLost || 0;
        }
    });
    return stats;
}

window.bench = {
    /** The fake microphone, once for every call. */
    async init() {
        stream = await navigator.mediaDevices.getUserMedia({ audio: AUDIO });
        return stream.getAudioTracks().map((t) => t.label);
    },

    /** Connect a mode's driver: gateway {url, accounts, target}, or janus {url, secret, accounts, proxy, target}. */
    async open(mode, options) {
        const driver = mode === 'gateway' ? new GatewayDriver(options) : new JanusDriver(options);
        await driver.open();
        drivers[mode] = driver;
    },

    /** Start a round: `count` calls placed at once through `mode`. Returns at once; see progress(). */
    place(mode, count) {
        records = [];
        roundStart = performance.now();
        for (let index = 0; index < count; index++) {
            const record = new Record(index);
            record.driver = drivers[mode];
            records.push(record);
            record.driver.place(record);
        }
    },

    progress() {
        const counts = { placed: records.length, 'setting-up': 0, established: 0, failed: 0, ended: 0, dropped: 0 };
        const reasons = {};
        for (const record of records) {
            counts[record.state] += 1;
            if (record.reason && record.state !== 'ended') {
                reasons[record.reason] = (reasons[record.reason] || 0) + 1;
            }
        }
        const setups = records.filter((r) => r.setup !== null).map((r) => r.setup);
        const lastUp = Math.max(0, ...records.filter((r) => r.setup !== null).map((r) => r.started + r.setup));
        return { ...counts, reasons, setups, allUpMs: setups.length ? lastUp - roundStart : null };
    },

    /** getStats() of every established call: [{index, received, lost, sent, remoteLost, jitter}]. */
    async stats() {
        return Promise.all(records.filter((r) => r.state === 'established' && r.pc).map(callStats));
    },

    /** Hang up every call of the round; resolves once each has ended (each bounded by HANGUP_WAIT). */
    async hangup() {
        const driver = records[0]?.driver;
        await Promise.all(records.map((record) => {
            record.hangupRequested = true;
            return record.driver.terminate(record).catch(() => null);
        }));
        if (driver) {
            await driver.endRound();
        }
        return this.progress();
    },

    /** The received audio track of call `index`, for a tone check. */
    remoteTrack(index) {
        return records[index].pc.getReceivers().find((r) => r.track.kind === 'audio').track;
    },
};
