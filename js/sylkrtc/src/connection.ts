/**
 * A connection to the gateway: one WebSocket speaking sylkRTC-2 or sylkRTC-1 (the gateway picks), its requests and
 * transactions, its accounts and calls, and reconnecting when the socket drops: resuming them where the gateway kept
 * them (connection-keep / connection-resume), or adding the accounts again where it did not.
 */

import { Account, type AccountOptions } from './account.js';
import type { Call } from './call.js';
import { Emitter } from './emitter.js';
import { SylkRTCError } from './errors.js';
import { md5 } from './md5.js';
import { decode, isProtocol, protocolOfReady, PROTOCOLS, type AccountEvent, type Protocol, type ServerMessage,
    type SessionEvent } from './protocol.js';
import { defaultEnvironment, defaultResumeStorage, isResumeToken, parseAddress, resumeToken, uuid4,
    type Environment, type ResumeStorage } from './util.js';
import { EventWaiters } from './waiters.js';

/**
 * - `connecting`: the socket is opening, or open and waiting for the gateway's `ready` event (and, after a
 *   reconnect, for the kept state to be resumed, or the accounts to be added again);
 * - `ready`: requests can be sent;
 * - `disconnected`: the socket dropped; a reconnect is scheduled (see `retryIn` of the `stateChanged` details);
 * - `closed`: for good, after `close()`, a normal closure (1000) by the gateway, or another socket taking the
 *   connection over (4409). Terminal.
 */
export type ConnectionState = 'connecting' | 'ready' | 'disconnected' | 'closed';

export interface ReconnectOptions {
    /** First delay in ms (default 500). */
    initialDelay?: number;
    /** Longest delay in ms (default 30000). */
    maxDelay?: number;
    /** Each failed attempt multiplies the delay by this (default 2). */
    factor?: number;
    /** Randomises each delay by up to ± this fraction (default 0.2). */
    jitter?: number;
}

export interface ConnectionOptions {
    /** How long a request waits for its `ack` or `error`, in ms (default 10000). */
    requestTimeout?: number;
    /** How long opening the socket and waiting for the gateway's `ready` event may take, in ms (default 10000). */
    connectTimeout?: number;
    /** Reconnect automatically when the socket drops (default true), optionally with other delays. */
    reconnect?: boolean | ReconnectOptions;
    /** How long `Call.terminate()` waits for the gateway's `terminated` event before ending the call locally (ms, default 2000). */
    terminateTimeout?: number;
    /** The SIP User-Agent for accounts that do not set their own (default: the gateway's). */
    userAgent?: string;
    /**
     * The WebSocket subprotocols to offer, preferred first (default `['sylkRTC-2', 'sylkRTC-1']`: the gateway picks
     * sylkRTC-2, an older one sylkRTC-1). `['sylkRTC-1']` forces the older dialect.
     */
    protocols?: Protocol | readonly Protocol[];
    /**
     * Have the gateway keep the accounts and calls when the socket drops, and take them back on the next socket
     * (`connection-keep` / `connection-resume`; default true). False: everything is lost with the socket and the
     * accounts are added again after reconnecting.
     */
    resume?: boolean;
    /**
     * Where the resume token is kept, so that a page reload in the same tab resumes too: an object with
     * `getItem`, `setItem` and `removeItem` (default: `sessionStorage` where there is one); null: nowhere.
     */
    resumeStorage?: ResumeStorage | null;
    /** Replacements for the browser APIs used (WebSocket, RTCPeerConnection, timers): for tests. */
    env?: Partial<Environment>;
}

/** What came with a `stateChanged` event. */
export interface ConnectionStateDetails {
    /** The WebSocket close code, when the socket closed. */
    code?: number;
    /** The close reason or a description of what happened. */
    reason?: string;
    /** In `disconnected`: ms until the next connection attempt. */
    retryIn?: number;
    /**
     * In `disconnected` and `connecting`: true when the gateway keeps the accounts and calls for the next socket
     * to resume (the calls' media go on meanwhile); absent otherwise.
     */
    resuming?: boolean;
}

/** What came with a `resumed` event. */
export interface ResumeDetails {
    /**
     * Events of the time without a socket that the gateway could not keep (0 normally). The states were brought up
     * to date all the same; messages, DTMF and the like among those events are lost.
     */
    missed: number;
}

export interface AddAccountOptions {
    /** `user@domain`, optionally with `sip:`/`sips:`. */
    account: string;
    /** The SIP password; or its HA1 when `ha1` is true. Never sent: only md5(user:realm:password) is. */
    password: string;
    /** Display name for the SIP From and Contact headers. */
    displayName?: string;
    /** The digest realm (default: the account's domain, lower case). */
    realm?: string;
    /** `password` already is the HA1 (32 hex digits). */
    ha1?: boolean;
    /** The SIP User-Agent of this account's requests. */
    userAgent?: string;
    /**
     * Header name prefixes (e.g. `['X-']`): the headers of incoming INVITEs and of answers whose names start so are
     * passed up by the gateway (sylkRTC-2) and show in `Call.remoteHeaders`.
     */
    incomingHeaderPrefixes?: string[];
}

export type ConnectionEvents = {
    /** The connection changed state. */
    stateChanged: (state: ConnectionState, previousState: ConnectionState, details: ConnectionStateDetails) => void;
    /** The gateway sent an error that answers no request of ours (e.g. about an unreadable message). */
    serverError: (message: string) => void;
    /**
     * A new socket took the kept accounts and calls back after a drop (or a page reload): their states are up to
     * date; `ready` follows.
     */
    resumed: (details: ResumeDetails) => void;
};

/** The request names this library sends: the dash names, which both dialects accept. */
export const REQUESTS = {
    addAccount: 'account-add',
    removeAccount: 'account-remove',
    register: 'account-register',
    unregister: 'account-unregister',
    call: 'session-create',
    answer: 'session-answer',
    trickle: 'session-trickle',
    terminate: 'session-terminate',
    dtmfInfo: 'session-dtmf-info',
    update: 'session-update',
    hold: 'session-hold',
    unhold: 'session-unhold',
    transfer: 'session-transfer',
    transferReject: 'session-transfer-reject',
    sessionMessage: 'session-message',
    message: 'account-message',
    dispositionNotification: 'account-disposition-notification',
    deviceToken: 'account-devicetoken',
    fetchAddressBook: 'account-fetch-addressbook',
    updateAddressBook: 'account-update-addressbook',
    syncConversations: 'account-sync-conversations',
    markConversationRead: 'account-mark-conversation-read',
    removeMessage: 'account-remove-message',
    removeConversation: 'account-remove-conversation',
    lookupPublicKey: 'lookup-public-key',
    keep: 'connection-keep',
    resume: 'connection-resume',
} as const;

/** The close code of a socket whose connection another socket resumed (another tab with the same token, say). */
const CLOSE_RESUMED_ELSEWHERE = 4409;

/**
 * Close codes after which reconnecting makes no sense: a normal closure, and the connection taken over by another
 * socket. 1001 (shutting down) and 4503 (backend lost) are retried.
 */
const NO_RETRY_CLOSE_CODES = new Set([1000, CLOSE_RESUMED_ELSEWHERE]);

/** The calls of accounts that the gateway kept are ended here with this reason when it no longer has them. */
const ENDED_WHILE_DISCONNECTED = 'Ended while disconnected';

const WS_OPEN = 1;

interface PendingRequest {
    request: string;
    resolve: () => void;
    reject: (error: SylkRTCError) => void;
    timer: unknown;
}

interface RequestOptions {
    /** Send even though the connection is not `ready` yet (used to re-add accounts after a reconnect). */
    beforeReady?: boolean;
}

/**
 * A resume under way on a socket: from sending connection-resume to the answer of the fresh connection-keep sent
 * after its ack, which comes after the snapshot and the events of the time without a socket.
 */
interface ResumeRun {
    ws: WebSocket;
    /** The gateway took the resume: requests go through from then on (they are handled after the snapshot). */
    acked: boolean;
    missed: number;
    /** The latest registration state the gateway reported for each account: applied at the end, the current one. */
    registrations: Map<string, Extract<AccountEvent, { type: 'registration-state' }>>;
    /** The sessions the gateway reported, and whether they are live (not terminated). */
    sessions: Map<string, boolean>;
    /** Calls new to us that ring for our accounts: offered once ready (they can be answered then). */
    offers: Array<{ account: string; event: IncomingSessionEvent }>;
}

/** An account the gateway kept that is not on this Connection (after a page reload): `addAccount` takes it over. */
interface KeptAccount {
    /** Its registration state at the gateway. */
    state: string | null;
}

type IncomingSessionEvent = Extract<AccountEvent, { type: 'incoming-session' }>;

/** Opens a connection to the gateway; same as `new Connection(url, options)`. */
export function connect(url: string, options: ConnectionOptions = {}): Connection {
    return new Connection(url, options);
}

export class Connection extends Emitter<ConnectionEvents> {
    /** The WebSocket URL, e.g. `wss://gateway.example.com/webrtcgateway/ws`. */
    readonly url: string;
    /** The current state; see `ConnectionState`. */
    state: ConnectionState = 'connecting';
    /** The subprotocols offered, preferred first. */
    readonly protocols: readonly Protocol[];
    /**
     * The dialect the gateway selected for the current socket (`sylkRTC-2` or `sylkRTC-1`); null while no socket
     * is open.
     */
    protocol: Protocol | null = null;

    /** @internal */
    readonly _env: Environment;
    /** @internal */
    readonly _options: Required<Omit<ConnectionOptions, 'env' | 'reconnect' | 'userAgent' | 'protocols' | 'resume' | 'resumeStorage'>> & { userAgent?: string };
    private readonly _reconnect: Required<ReconnectOptions> | null;
    private _ws: WebSocket | null = null;
    private _pending = new Map<string, PendingRequest>();
    private _accounts = new Map<string, Account>();
    private _calls = new Map<string, Call>();
    private _attempt = 0;
    private _connectTimer: unknown = null;
    private _reconnectTimer: unknown = null;
    private readonly _resume: boolean;
    private readonly _storage: ResumeStorage | null;
    /** The token the gateway keeps this connection under (its connection-keep was acked), or null. */
    private _token: string | null = null;
    /** The socket dropped and the gateway keeps the accounts and calls until the next socket resumes them. */
    private _kept = false;
    private _resumeRun: ResumeRun | null = null;
    /** Calls ended here while kept: the gateway may still have them, and ends them once resumed. */
    private _abandoned = new Set<string>();
    /** Accounts removed here while kept: the gateway still has them, and removes them once resumed. */
    private _removedWhileKept = new Set<string>();
    /** Accounts the gateway kept that are not on this Connection (a page reload resumed it). */
    private _keptAccounts = new Map<string, KeptAccount>();
    /** Calls ringing for those accounts, offered once `addAccount` takes their account over. */
    private _keptOffers = new Map<string, { account: string; event: IncomingSessionEvent }>();
    /** lookupPublicKey() calls waiting for their lookup-public-key-event, by the uri looked up. */
    private readonly _keyWaiters: EventWaiters<string | null>;

    /** Opens the WebSocket right away. Throws if `url` is not a valid WebSocket URL. */
    constructor(url: string, options: ConnectionOptions = {}) {
        super();
        this.url = url;
        this._env = defaultEnvironment(options.env);
        this._keyWaiters = new EventWaiters(this._env);
        this._options = {
            requestTimeout: options.requestTimeout ?? 10000,
            connectTimeout: options.connectTimeout ?? 10000,
            terminateTimeout: options.terminateTimeout ?? 2000,
            userAgent: options.userAgent,
        };
        this.protocols = checkProtocols(options.protocols ?? PROTOCOLS);
        this._resume = options.resume ?? true;
        this._storage = !this._resume ? null
            : options.resumeStorage === undefined ? defaultResumeStorage() : options.resumeStorage;
        this._token = this._loadToken();
        const reconnect = options.reconnect ?? true;
        this._reconnect = reconnect === false ? null : {
            initialDelay: 500,
            maxDelay: 30000,
            factor: 2,
            jitter: 0.2,
            ...(reconnect === true ? {} : reconnect),
        };
        if (typeof this._env.WebSocket !== 'function') {
            throw new TypeError('No WebSocket implementation: pass options.env.WebSocket');
        }
        this._open(true);
    }

    /** The accounts added on this connection. */
    get accounts(): Account[] {
        return [...this._accounts.values()];
    }

    /** The calls in progress on this connection, of all its accounts. */
    get calls(): Call[] {
        return [...this._calls.values()];
    }

    /**
     * True while the gateway keeps this connection's accounts and calls after its socket dropped, until the next
     * socket resumed them (or found them gone).
     */
    get resuming(): boolean {
        return this._kept;
    }

    /**
     * The addresses of accounts the gateway kept for this connection that were not added on it: after a page reload
     * resumed the connection, until `addAccount` takes each over (or `removeAccount(address)` removes it).
     */
    get keptAccounts(): string[] {
        return [...this._keptAccounts.keys()];
    }

    /** The account with this address (any form: `user@domain`, `sip:user@Domain`), if it was added. */
    getAccount(account: string): Account | undefined {
        try {
            return this._accounts.get(parseAddress(account).aor);
        } catch {
            return undefined;
        }
    }

    /**
     * Resolves when the connection is `ready` (at once if it is); rejects when it gets `closed`, or after `timeout`
     * ms (default: none other than closing).
     */
    waitReady(timeout?: number): Promise<void> {
        if (this.state === 'ready') {
            return Promise.resolve();
        }
        if (this.state === 'closed') {
            return Promise.reject(new SylkRTCError('The connection is closed', 'not-ready'));
        }
        return new Promise((resolve, reject) => {
            let timer: unknown = null;
            const listener = (state: ConnectionState) => {
                if (state === 'ready' || state === 'closed') {
                    this.off('stateChanged', listener);
                    if (timer !== null) {
                        this._env.clearTimeout(timer);
                    }
                    if (state === 'ready') {
                        resolve();
                    } else {
                        reject(new SylkRTCError('The connection was closed before it was ready', 'not-ready'));
                    }
                }
            };
            this.on('stateChanged', listener);
            if (timeout !== undefined) {
                timer = this._env.setTimeout(() => {
                    this.off('stateChanged', listener);
                    reject(new SylkRTCError(`The connection was not ready within ${timeout / 1000} s`, 'timeout'));
                }, timeout);
            }
        });
    }

    /**
     * Adds an account to the connection (`account-add`). The password is turned into the digest HA1,
     * md5(user:realm:password), here: only that is sent. Resolves with the `Account` once the gateway acked.
     * An account the gateway kept for this connection (`keptAccounts`, after a page reload resumed it) is taken
     * over as it is, with its registration and the credentials it was added with: nothing is sent.
     */
    async addAccount(options: AddAccountOptions): Promise<Account> {
        const address = parseAddress(options.account);
        if (typeof options.password !== 'string' || options.password === '') {
            throw new TypeError('addAccount: password is required');
        }
        let ha1: string;
        if (options.ha1) {
            if (!/^[0-9a-fA-F]{32}$/.test(options.password)) {
                throw new TypeError('addAccount: with ha1: true, password must be an HA1 (32 hexadecimal digits)');
            }
            ha1 = options.password.toLowerCase();
        } else {
            ha1 = md5(`${address.user}:${options.realm ?? address.domain}:${options.password}`);
        }
        if (this._accounts.has(address.aor)) {
            throw new SylkRTCError(`Account ${address.aor} already added`, 'local', REQUESTS.addAccount);
        }
        const prefixes = options.incomingHeaderPrefixes;
        if (prefixes !== undefined && (!Array.isArray(prefixes) || !prefixes.every((p) => typeof p === 'string' && p !== ''))) {
            throw new TypeError('addAccount: incomingHeaderPrefixes must be an array of non-empty strings');
        }
        const accountOptions: AccountOptions = {
            ha1,
            displayName: options.displayName ?? null,
            userAgent: options.userAgent ?? this._options.userAgent ?? null,
            incomingHeaderPrefixes: prefixes && prefixes.length > 0 ? [...prefixes] : null,
        };
        const account = new Account(this, address, accountOptions);
        const kept = this._keptAccounts.get(address.aor);
        if (kept !== undefined && this.state === 'ready') {
            this._keptAccounts.delete(address.aor);
            this._accounts.set(address.aor, account);
            account._takeOver(kept.state);
            this._offerKeptCalls(account);
            return account;
        }
        await this._request(REQUESTS.addAccount, account._addFields());
        if (this._accounts.has(address.aor)) {
            // added twice at the same time: the gateway would have refused the second; be safe anyway
            throw new SylkRTCError(`Account ${address.aor} already added`, 'local', REQUESTS.addAccount);
        }
        this._accounts.set(address.aor, account);
        return account;
    }

    /**
     * Removes an account (`account-remove`): the gateway unregisters it and hangs up its calls. While the
     * connection is not ready the account is only forgotten here: the gateway has forgotten it already, or, while
     * it keeps the connection (`resuming`), removes it once resumed. An address in `keptAccounts` removes that one.
     */
    async removeAccount(account: Account | string): Promise<void> {
        const found = typeof account === 'string' ? this.getAccount(account) : account;
        const kept = !found && typeof account === 'string' ? this._forgetKeptAccount(account) : null;
        if (kept !== null) {
            if (this.state === 'ready') {
                await this._request(REQUESTS.removeAccount, { account: kept });
            } else if (this._kept) {
                this._removedWhileKept.add(kept);
            }
            return;
        }
        if (!found || this._accounts.get(found.id) !== found) {
            throw new SylkRTCError(`Unknown account ${typeof account === 'string' ? account : account.id}`, 'local',
                REQUESTS.removeAccount);
        }
        if (this.state === 'ready') {
            await this._request(REQUESTS.removeAccount, { account: found.id });
        } else if (this._kept) {
            this._removedWhileKept.add(found.id);
        }
        if (this._accounts.get(found.id) === found) {
            this._accounts.delete(found.id);
            found._removed('Account removed');
        }
    }

    /**
     * Looks up the PGP public key that the account `uri` (`user@domain`, or `sip:user@domain`) published
     * (`lookup-public-key`): resolves with it (ASCII-armored text) from the gateway's answer, or with null when it has
     * none. Rejects with the gateway's error (`This gateway keeps no public keys`), if no answer came within
     * `requestTimeout`, or with a TypeError for a bad `uri`. Several lookups may be under way at once.
     */
    lookupPublicKey(uri: string): Promise<string | null> {
        let aor: string;
        try {
            aor = parseAddress(uri, 'uri').aor;
        } catch (error) {
            return Promise.reject(error);
        }
        return this._keyWaiters.wait(REQUESTS.lookupPublicKey, 'public key', this._options.requestTimeout,
            () => this._request(REQUESTS.lookupPublicKey, { uri: aor }), aor);
    }

    /**
     * Closes the connection for good: no reconnect. Pending requests fail, calls end (`terminated`, reason
     * "Connection closed"); the gateway unregisters the accounts and hangs up the calls.
     */
    close(): void {
        if (this.state === 'closed') {
            return;
        }
        this._clearTimers();
        const ws = this._ws;
        this._ws = null;
        if (ws) {
            this._detach(ws);
            try {
                ws.close(1000, 'Closed by the application');
            } catch {
                // already closing
            }
        }
        this.protocol = null;
        this._setToken(null); // the gateway ends everything: nothing to resume
        this._lost('Connection closed', true);
        this._setState('closed', { code: 1000, reason: 'Closed by the application' });
    }

    // ---- internals shared with Account and Call ----

    /**
     * Sends a request and resolves on its `ack`, rejects with a SylkRTCError on its `error`, on timeout, when the
     * socket closes first, or at once when the connection is not ready.
     * @internal
     */
    _request(request: string, fields: Record<string, unknown>, options: RequestOptions = {}): Promise<void> {
        const ws = this._ws;
        // (while a resume is being applied, what calls must answer at once, such as the far end's re-INVITE, can be)
        const resumed = this._resumeRun !== null && this._resumeRun.acked && this._resumeRun.ws === ws;
        if ((this.state !== 'ready' && !options.beforeReady && !resumed) || !ws || ws.readyState !== WS_OPEN) {
            return Promise.reject(new SylkRTCError(
                `Cannot send ${request}: the connection is ${this.state}, not ready`, 'not-ready', request));
        }
        const transaction = uuid4();
        const message = { sylkrtc: request, transaction, ...fields };
        return new Promise<void>((resolve, reject) => {
            const timeout = this._options.requestTimeout;
            const timer = this._env.setTimeout(() => {
                if (this._pending.delete(transaction)) {
                    reject(new SylkRTCError(
                        `Request ${request} timed out: no answer from the gateway within ${timeout / 1000} s`,
                        'timeout', request, transaction));
                }
            }, timeout);
            this._pending.set(transaction, { request, resolve, reject, timer });
            try {
                ws.send(JSON.stringify(message));
            } catch (error) {
                this._pending.delete(transaction);
                this._env.clearTimeout(timer);
                reject(new SylkRTCError(`Could not send ${request}: ${String(error)}`, 'connection-lost', request,
                    transaction));
            }
        });
    }

    /** @internal */
    _forgetAccount(account: Account): void {
        if (this._accounts.get(account.id) === account) {
            this._accounts.delete(account.id);
        }
    }

    /** @internal */
    _addCall(call: Call): void {
        this._calls.set(call.id, call);
    }

    /** @internal */
    _hasCall(id: string): boolean {
        return this._calls.has(id);
    }

    /** @internal */
    _forgetCall(call: Call): void {
        if (this._calls.get(call.id) === call) {
            this._calls.delete(call.id);
            if (this._kept) {
                this._abandoned.add(call.id);
            }
        }
    }

    // ---- the socket ----

    private _open(first = false): void {
        let ws: WebSocket;
        try {
            ws = new this._env.WebSocket(this.url, [...this.protocols]);
        } catch (error) {
            if (first) {
                throw error;
            }
            this._socketGone(1006, `Cannot open ${this.url}: ${String(error)}`);
            return;
        }
        this._ws = ws;
        this.protocol = null;
        ws.addEventListener('open', this._onOpen);
        ws.addEventListener('message', this._onMessage);
        ws.addEventListener('close', this._onClose);
        const timeout = this._options.connectTimeout;
        this._connectTimer = this._env.setTimeout(() => {
            this._connectTimer = null;
            if (this._ws === ws && this.state === 'connecting') {
                this._ws = null;
                this._detach(ws);
                try {
                    ws.close(4000, 'No ready event');
                } catch {
                    // not open yet: closing aborts it
                }
                this._socketGone(1006, `No ready event from the gateway within ${timeout / 1000} s`);
            }
        }, timeout);
    }

    private _detach(ws: WebSocket): void {
        ws.removeEventListener('open', this._onOpen);
        ws.removeEventListener('message', this._onMessage);
        ws.removeEventListener('close', this._onClose);
    }

    /** The socket is open: the gateway's selected subprotocol decides the dialect. */
    private _onOpen = (event: Event): void => {
        const ws = (event.target as WebSocket | null) ?? this._ws;
        if (ws !== this._ws || ws === null) {
            return;
        }
        const selected = ws.protocol;
        if (isProtocol(selected) && this.protocols.includes(selected)) {
            this.protocol = selected;
        } else if (this.protocols.length === 1) {
            this.protocol = this.protocols[0];
        } else {
            this.protocol = null; // a gateway that selected none: its ready event tells (see _onMessage)
        }
    };

    private _onClose = (event: Event): void => {
        const ws = event.target as WebSocket | null;
        if (ws !== null && ws !== this._ws) {
            return;
        }
        if (this._ws) {
            this._detach(this._ws);
        }
        this._ws = null;
        const close = event as CloseEvent;
        this._socketGone(close.code ?? 1006, close.reason || '');
    };

    /**
     * The socket is gone, not by close(): fail what was pending; keep the calls and accounts for the next socket to
     * resume when the gateway keeps them, else end the calls; reconnect, or close for good.
     */
    private _socketGone(code: number, reason: string): void {
        this.protocol = null;
        this._resumeRun = null;
        if (this._connectTimer !== null) {
            this._env.clearTimeout(this._connectTimer);
            this._connectTimer = null;
        }
        const retry = this._reconnect !== null && !NO_RETRY_CLOSE_CODES.has(code);
        this._kept = retry && this._token !== null && (this._accounts.size > 0 || this._keptAccounts.size > 0);
        if (this._kept) {
            this._failPending('Connection lost'); // (calls see `resuming` already: they keep what failed for later)
        } else {
            if (code !== CLOSE_RESUMED_ELSEWHERE) {
                this._setToken(null); // (after 4409 the token is the other socket's business)
            }
            this._lost(code === CLOSE_RESUMED_ELSEWHERE ? reason || 'Resumed on another connection' : 'Connection lost',
                !retry);
        }
        if (!retry) {
            this._setState('closed', { code, reason });
            return;
        }
        const { initialDelay, maxDelay, factor, jitter } = this._reconnect!;
        const base = Math.min(maxDelay, initialDelay * Math.pow(factor, this._attempt));
        const delay = Math.round(Math.min(maxDelay, base * (1 + jitter * (2 * this._env.random() - 1))));
        this._attempt += 1;
        const resuming = this._kept ? { resuming: true } : {};
        this._setState('disconnected', { code, reason, retryIn: delay, ...resuming });
        this._reconnectTimer = this._env.setTimeout(() => {
            this._reconnectTimer = null;
            this._setState('connecting', this._kept ? { resuming: true } : {});
            this._open();
        }, delay);
    }

    private _failPending(reason: string): void {
        const pending = [...this._pending.entries()];
        this._pending.clear();
        for (const [transaction, p] of pending) {
            this._env.clearTimeout(p.timer);
            p.reject(new SylkRTCError(`${reason} before the answer to ${p.request}`, 'connection-lost', p.request,
                transaction));
        }
    }

    /**
     * Fails pending requests and ends calls (whatever the gateway may have kept is gone or given up); `forever`:
     * forget the accounts too.
     */
    private _lost(reason: string, forever: boolean): void {
        this._kept = false;
        this._resumeRun = null;
        this._abandoned.clear();
        this._removedWhileKept.clear();
        this._keptAccounts.clear();
        this._keptOffers.clear();
        this._failPending(reason);
        this._keyWaiters.rejectAll(() => new SylkRTCError(`${reason} before the answer to ${REQUESTS.lookupPublicKey}`,
            'connection-lost', REQUESTS.lookupPublicKey));
        for (const call of [...this._calls.values()]) {
            call._end(reason);
        }
        this._calls.clear();
        const accounts = [...this._accounts.values()];
        if (forever) {
            this._accounts.clear();
            for (const account of accounts) {
                account._removed(reason);
            }
        } else {
            for (const account of accounts) {
                account._connectionLost(reason);
            }
        }
    }

    private _clearTimers(): void {
        if (this._connectTimer !== null) {
            this._env.clearTimeout(this._connectTimer);
            this._connectTimer = null;
        }
        if (this._reconnectTimer !== null) {
            this._env.clearTimeout(this._reconnectTimer);
            this._reconnectTimer = null;
        }
    }

    private _setState(state: ConnectionState, details: ConnectionStateDetails): void {
        const previous = this.state;
        if (previous === state) {
            return;
        }
        this.state = state;
        this.emit('stateChanged', state, previous, details);
    }

    // ---- messages ----

    private _onMessage = (event: Event): void => {
        const data = (event as MessageEvent).data;
        if (typeof data !== 'string') {
            return; // the gateway sends text only
        }
        let message: Record<string, unknown>;
        try {
            message = JSON.parse(data);
        } catch {
            return;
        }
        if (message === null || typeof message !== 'object' || Array.isArray(message)) {
            return;
        }
        if (this.protocol === null) {
            // no subprotocol selected (or no open event seen): the first message of the gateway is its ready event
            const protocol = protocolOfReady(message);
            if (protocol === null || !this.protocols.includes(protocol)) {
                return;
            }
            this.protocol = protocol;
        }
        const decoded = decode(this.protocol, message);
        if (decoded !== null) {
            this._dispatch(decoded);
        }
    };

    private _dispatch(message: ServerMessage): void {
        switch (message.kind) {
            case 'ack':
            case 'error':
                this._onAnswer(message);
                break;
            case 'ready':
                void this._onReady();
                break;
            case 'resumed':
                if (this._resumeRun !== null) {
                    this._resumeRun.acked = true; // (it follows the ack at once)
                    this._resumeRun.missed = message.missed;
                }
                break;
            case 'account':
                this._onAccountEvent(message.account, message.event);
                break;
            case 'session':
                this._onSessionEvent(message.session, message.event);
                break;
            case 'public-key':
                this._onPublicKey(message.uri, message.publicKey);
                break;
            default:
                break;
        }
    }

    private _onAccountEvent(aor: string, event: AccountEvent): void {
        const run = this._resumeRun;
        if (run !== null && event.type === 'registration-state') {
            run.registrations.set(aor, event); // applied once the resume is over: the last one is the current one
            return;
        }
        const account = this._accounts.get(aor);
        if (event.type === 'incoming-session') {
            run?.sessions.set(event.session, true);
            if (this._abandoned.has(event.session)) {
                return; // rejected here while the socket was down: ended once resumed
            }
            if (run !== null && account !== undefined && !this._calls.has(event.session)) {
                run.offers.push({ account: aor, event }); // new to us: offered once ready, when it can be answered
                return;
            }
        }
        if (account !== undefined) {
            account._onEvent(event);
            return;
        }
        const kept = this._keptAccounts.get(aor) ?? (run !== null && !this._removedWhileKept.has(aor)
            ? this._keepAccount(aor) : undefined);
        if (kept === undefined) {
            return;
        }
        if (event.type === 'registration-state') {
            kept.state = event.state;
        } else if (event.type === 'incoming-session') {
            this._keptOffers.set(event.session, { account: aor, event });
        }
    }

    private _onSessionEvent(session: string, event: SessionEvent): void {
        const run = this._resumeRun;
        const state = event.type === 'state' ? event.state : null;
        if (run !== null && state !== null) {
            run.sessions.set(session, state !== 'terminated');
        }
        if (state === 'terminated') {
            this._keptOffers.delete(session);
        }
        const call = this._calls.get(session);
        if (call === undefined) {
            return;
        }
        if (run !== null && event.type === 'state') {
            call._onResumedState(event);
        } else {
            call._onEvent(event);
        }
    }

    private _onPublicKey(uri: string, publicKey: string | null): void {
        let aor: string;
        try {
            aor = parseAddress(uri).aor; // (the gateway answers with the uri as it read it: user@domain)
        } catch {
            return;
        }
        this._keyWaiters.resolve(publicKey, aor);
    }

    private _onAnswer(message: Extract<ServerMessage, { kind: 'ack' | 'error' }>): void {
        const transaction = message.transaction;
        const pending = typeof transaction === 'string' ? this._pending.get(transaction) : undefined;
        if (!pending) {
            if (message.kind === 'error' && transaction === undefined) {
                this.emit('serverError', message.error);
            }
            return; // late answer to a request that timed out
        }
        this._pending.delete(transaction as string);
        this._env.clearTimeout(pending.timer);
        if (message.kind === 'ack') {
            pending.resolve();
        } else {
            pending.reject(new SylkRTCError(message.error, 'server', pending.request, transaction as string));
        }
    }

    private async _onReady(): Promise<void> {
        const ws = this._ws;
        if (this.state !== 'connecting' || ws === null) {
            return;
        }
        if (this._connectTimer !== null) {
            this._env.clearTimeout(this._connectTimer);
            this._connectTimer = null;
        }
        this._attempt = 0;
        const token = this._token;
        if (token !== null) {
            this._setToken(null); // good for one try, whatever the answer
            if (await this._resumeWith(ws, token) || this._ws !== ws || this.state !== 'connecting') {
                return;
            }
            // refused (the grace passed, the gateway restarted): what it kept is gone
            this._lost('Connection lost', false);
        }
        void this._keepOn(ws);
        // After a reconnect the gateway knows nothing of us: add the accounts again before announcing `ready`.
        const accounts = [...this._accounts.values()];
        await Promise.all(accounts.map((account) => account._addAgain()));
        if (this._ws !== ws || this.state !== 'connecting') {
            return;
        }
        this._setState('ready', {});
        for (const account of accounts) {
            if (this._accounts.get(account.id) === account) {
                account._resumeRegistration();
            }
        }
    }

    // ---- keeping and resuming ----

    /**
     * Asks the gateway to keep this connection for a next socket, under a new token (kept once acked). An older
     * gateway refuses the request: then nothing is kept, as before.
     */
    private async _keepOn(ws: WebSocket): Promise<void> {
        const token = this._resume ? resumeToken() : null;
        if (token === null) {
            return;
        }
        try {
            await this._request(REQUESTS.keep, { token }, { beforeReady: true });
        } catch {
            return;
        }
        if (this._ws === ws) {
            this._setToken(token);
        }
    }

    /**
     * Takes the kept connection back (connection-resume), right after `ready`. True when it did, or when this
     * socket is done with (it went, or was dropped for not answering); false when the gateway refused.
     */
    private async _resumeWith(ws: WebSocket, token: string): Promise<boolean> {
        const run: ResumeRun = { ws, acked: false, missed: 0, registrations: new Map(), sessions: new Map(), offers: [] };
        this._resumeRun = run;
        try {
            await this._request(REQUESTS.resume, { token }, { beforeReady: true });
        } catch (error) {
            if (this._resumeRun === run) {
                this._resumeRun = null;
            }
            if ((error as SylkRTCError).kind === 'timeout' && this._ws === ws) {
                // did the gateway take it or not? A new socket, which has no token, starts over clean
                this._ws = null;
                this._detach(ws);
                try {
                    ws.close(4000, 'No answer to connection-resume');
                } catch {
                    // already closing
                }
                this._socketGone(1006, (error as Error).message);
            }
            return (error as SylkRTCError).kind !== 'server';
        }
        // The snapshot and the events of the time without a socket follow the ack, and the answer to a request
        // sent now comes after them.
        run.acked = true;
        await this._keepOn(ws);
        if (this._ws === ws && this._resumeRun === run) {
            this._resumeRun = null;
            this._resumed(run);
        }
        return true;
    }

    /** The gateway's snapshot and the events of the time without a socket are in: bring everything up to date. */
    private _resumed(run: ResumeRun): void {
        for (const [aor, event] of run.registrations) {
            const account = this._accounts.get(aor);
            if (account !== undefined) {
                if (account.registrationState !== null || event.state !== 'unregistered') { // (never registered)
                    account._onEvent(event);
                }
            } else if (this._removedWhileKept.has(aor)) {
                this._request(REQUESTS.removeAccount, { account: aor }, { beforeReady: true }).catch(() => undefined);
            } else {
                (this._keptAccounts.get(aor) ?? this._keepAccount(aor)).state = event.state; // a reload's
            }
        }
        for (const account of [...this._accounts.values()]) {
            if (!run.registrations.has(account.id)) { // the snapshot names every account the gateway has
                this._accounts.delete(account.id);
                account._removed('Removed while disconnected');
            }
        }
        for (const call of [...this._calls.values()]) {
            if (run.sessions.has(call.id)) {
                call._settleResume();
            } else if (call._shownOnResume()) {
                call._end(ENDED_WHILE_DISCONNECTED); // the gateway no longer has it; its end was lost
            }
        }
        const offered = new Set(run.offers.map((offer) => offer.event.session));
        for (const [session, live] of run.sessions) {
            if (live && !this._calls.has(session) && !this._keptOffers.has(session) && !offered.has(session)) {
                // ended here while the socket was down (or made by the page before a reload): end it there too
                this._request(REQUESTS.terminate, { session }, { beforeReady: true }).catch(() => undefined);
            }
        }
        this._kept = false;
        this._abandoned.clear();
        this._removedWhileKept.clear();
        this.emit('resumed', { missed: run.missed });
        this._setState('ready', {});
        for (const call of this._calls.values()) {
            call._resumed();
        }
        for (const { account, event } of run.offers) {
            if (run.sessions.get(event.session) === true) { // (still ringing)
                this._accounts.get(account)?._onEvent(event);
            }
        }
    }

    private _keepAccount(aor: string): KeptAccount {
        const kept = { state: null };
        this._keptAccounts.set(aor, kept);
        return kept;
    }

    /** Forgets a kept account (and the calls ringing for it); its address, or null if it was not one. */
    private _forgetKeptAccount(address: string): string | null {
        let aor: string;
        try {
            aor = parseAddress(address).aor;
        } catch {
            return null;
        }
        if (!this._keptAccounts.delete(aor)) {
            return null;
        }
        for (const [session, offer] of this._keptOffers) {
            if (offer.account === aor) {
                this._keptOffers.delete(session);
            }
        }
        return aor;
    }

    /** Offers the calls ringing for a kept account that `addAccount` took over, once the app has it. */
    private _offerKeptCalls(account: Account): void {
        this._env.setTimeout(() => {
            for (const [session, offer] of this._keptOffers) {
                if (offer.account === account.id && this._accounts.get(account.id) === account) {
                    this._keptOffers.delete(session);
                    account._onEvent(offer.event);
                }
            }
        }, 0);
    }

    private _storageKey(): string {
        return `sylkrtc.resume ${this.url}`;
    }

    /** A token kept by a previous page of this tab (a reload), if any. */
    private _loadToken(): string | null {
        try {
            const token = this._storage?.getItem(this._storageKey()) ?? null;
            return isResumeToken(token) ? token : null;
        } catch {
            return null;
        }
    }

    /** The token the gateway keeps this connection under (null: none), also in the storage for a reload. */
    private _setToken(token: string | null): void {
        const previous = this._token;
        this._token = token;
        try {
            const key = this._storageKey();
            if (token !== null) {
                this._storage?.setItem(key, token);
            } else if (previous !== null && this._storage?.getItem(key) === previous) {
                this._storage.removeItem(key); // (only ours: a store shared with other tabs may hold theirs)
            }
        } catch {
            // a full or blocked storage: a reload just cannot resume
        }
    }
}

function checkProtocols(protocols: Protocol | readonly Protocol[]): readonly Protocol[] {
    const list = typeof protocols === 'string' ? [protocols] : protocols;
    if (!Array.isArray(list) || list.length === 0 || !list.every(isProtocol) || new Set(list).size !== list.length) {
        throw new TypeError(`protocols must be some of ${PROTOCOLS.join(', ')}, each once, not ${JSON.stringify(protocols)}`);
    }
    return Object.freeze([...list]);
}
