/**
 * A connection to the gateway: one WebSocket speaking sylkRTC-2 or sylkRTC-1 (the gateway picks), its requests and
 * transactions, its accounts and calls, and reconnecting when the socket drops.
 */

import { Account, type AccountOptions } from './account.js';
import type { Call } from './call.js';
import { Emitter } from './emitter.js';
import { SylkRTCError } from './errors.js';
import { md5 } from './md5.js';
import { decode, isProtocol, protocolOfReady, PROTOCOLS, type Protocol, type ServerMessage } from './protocol.js';
import { defaultEnvironment, parseAddress, uuid4, type Environment } from './util.js';

/**
 * - `connecting`: the socket is opening, or open and waiting for the gateway's `ready` event (and, after a
 *   reconnect, for the accounts to be added again);
 * - `ready`: requests can be sent;
 * - `disconnected`: the socket dropped; a reconnect is scheduled (see `retryIn` of the `stateChanged` details);
 * - `closed`: for good, after `close()` or a normal closure (1000) by the gateway. Terminal.
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
} as const;

/** Close codes after which reconnecting makes no sense. 1001 (shutting down) and 4503 (backend lost) are retried. */
const NO_RETRY_CLOSE_CODES = new Set([1000]);

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
    readonly _options: Required<Omit<ConnectionOptions, 'env' | 'reconnect' | 'userAgent' | 'protocols'>> & { userAgent?: string };
    private readonly _reconnect: Required<ReconnectOptions> | null;
    private _ws: WebSocket | null = null;
    private _pending = new Map<string, PendingRequest>();
    private _accounts = new Map<string, Account>();
    private _calls = new Map<string, Call>();
    private _attempt = 0;
    private _connectTimer: unknown = null;
    private _reconnectTimer: unknown = null;

    /** Opens the WebSocket right away. Throws if `url` is not a valid WebSocket URL. */
    constructor(url: string, options: ConnectionOptions = {}) {
        super();
        this.url = url;
        this._env = defaultEnvironment(options.env);
        this._options = {
            requestTimeout: options.requestTimeout ?? 10000,
            connectTimeout: options.connectTimeout ?? 10000,
            terminateTimeout: options.terminateTimeout ?? 2000,
            userAgent: options.userAgent,
        };
        this.protocols = checkProtocols(options.protocols ?? PROTOCOLS);
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
     * connection is not ready the account is only forgotten here (the gateway has forgotten it already).
     */
    async removeAccount(account: Account | string): Promise<void> {
        const found = typeof account === 'string' ? this.getAccount(account) : account;
        if (!found || this._accounts.get(found.id) !== found) {
            throw new SylkRTCError(`Unknown account ${typeof account === 'string' ? account : account.id}`, 'local',
                REQUESTS.removeAccount);
        }
        if (this.state === 'ready') {
            await this._request(REQUESTS.removeAccount, { account: found.id });
        }
        if (this._accounts.get(found.id) === found) {
            this._accounts.delete(found.id);
            found._removed('Account removed');
        }
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
        if ((this.state !== 'ready' && !options.beforeReady) || !ws || ws.readyState !== WS_OPEN) {
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

    /** The socket is gone, not by close(): fail what was pending, end calls, reconnect or close for good. */
    private _socketGone(code: number, reason: string): void {
        this.protocol = null;
        if (this._connectTimer !== null) {
            this._env.clearTimeout(this._connectTimer);
            this._connectTimer = null;
        }
        const retry = this._reconnect !== null && !NO_RETRY_CLOSE_CODES.has(code);
        this._lost('Connection lost', !retry);
        if (!retry) {
            this._setState('closed', { code, reason });
            return;
        }
        const { initialDelay, maxDelay, factor, jitter } = this._reconnect!;
        const base = Math.min(maxDelay, initialDelay * Math.pow(factor, this._attempt));
        const delay = Math.round(Math.min(maxDelay, base * (1 + jitter * (2 * this._env.random() - 1))));
        this._attempt += 1;
        this._setState('disconnected', { code, reason, retryIn: delay });
        this._reconnectTimer = this._env.setTimeout(() => {
            this._reconnectTimer = null;
            this._setState('connecting', {});
            this._open();
        }, delay);
    }

    /** Fails pending requests and ends calls; `forever`: forget the accounts too. */
    private _lost(reason: string, forever: boolean): void {
        const pending = [...this._pending.entries()];
        this._pending.clear();
        for (const [transaction, p] of pending) {
            this._env.clearTimeout(p.timer);
            p.reject(new SylkRTCError(`${reason} before the answer to ${p.request}`, 'connection-lost', p.request,
                transaction));
        }
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
            case 'account':
                this._accounts.get(message.account)?._onEvent(message.event);
                break;
            case 'session':
                this._calls.get(message.session)?._onEvent(message.event);
                break;
            default:
                break;
        }
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
}

function checkProtocols(protocols: Protocol | readonly Protocol[]): readonly Protocol[] {
    const list = typeof protocols === 'string' ? [protocols] : protocols;
    if (!Array.isArray(list) || list.length === 0 || !list.every(isProtocol) || new Set(list).size !== list.length) {
        throw new TypeError(`protocols must be some of ${PROTOCOLS.join(', ')}, each once, not ${JSON.stringify(protocols)}`);
    }
    return Object.freeze([...list]);
}
