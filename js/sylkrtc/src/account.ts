/** A SIP account added on a connection: registration, incoming calls, outgoing calls, messages. */

import { Call, type CallOptions, type Identity } from './call.js';
import type { Connection } from './connection.js';
import { REQUESTS } from './connection.js';
import { Emitter } from './emitter.js';
import { SylkRTCError } from './errors.js';
import { DISPOSITION_STATES, messageFields, messageStatus, receivedMessage, timestampOf, type DispositionState,
    type MessageOptions, type MessageStatus, type ReceivedMessage } from './messages.js';
import { ADDRESS_BOOK_ACTIONS, ADDRESS_BOOK_ITEM_TYPES, type AccountEvent, type AccountSync, type AddressBookAction,
    type AddressBookItemType, type AddressBookUpdate, type StoredMessage } from './protocol.js';
import { errorMessage, parseAddress, uuid4, type SipAddress } from './util.js';
import { EventWaiters } from './waiters.js';

/**
 * - `null`: never registered on this connection;
 * - `registering`: a REGISTER is on its way;
 * - `registered`: the registrar accepted the binding;
 * - `failed`: registering failed or the registration was lost (see the reason; "Connection lost" when the socket
 *   dropped: it is registered again after the reconnect);
 * - `unregistered`: the binding was removed after `unregister()` (or the connection was closed).
 */
export type RegistrationState = null | 'registering' | 'registered' | 'failed' | 'unregistered';

export interface MissedCall {
    originator: Identity;
}

/** A device's push token (`setDeviceToken`): the next REGISTER carries it as Contact parameters (SylkServer's
 *  `pn-app`, `pn-tok`, `pn-type`, `pn-device`, `pn-silent` by default, RFC 8599's if the gateway is set so). */
export interface DeviceToken {
    /** The push token; empty or missing: forget this device's. */
    token?: string | null;
    /** `ios`, `android`, ... (`pn-type`; for RFC 8599 `ios`/`apple` become APNs, `android`/`firebase` FCM). */
    platform?: string;
    /** The device's id (one token per device): `pn-device`. */
    device?: string;
    /** Silent notifications: `pn-silent`. */
    silent?: boolean;
    /** The app the token belongs to: `pn-app` (RFC 8599 `pn-param`). */
    app?: string;
}

export type AccountEvents = {
    registrationStateChanged: (state: RegistrationState, previousState: RegistrationState, reason: string | null) => void;
    /** An incoming call, in state `incoming`: `answer()` or `reject()` it. */
    incomingCall: (call: Call) => void;
    /** A call the account could not take: the caller gave up first, or the account had too many calls. */
    missedCall: (missed: MissedCall) => void;
    /** The account is no longer on the connection (removeAccount, close, or re-adding it after a reconnect failed). */
    removed: (reason: string) => void;
    /** A message for the account, out of any call (registered accounts get those sent to their address). */
    message: (message: ReceivedMessage) => void;
    /** What became of a message sent with `sendMessage()`: the SIP answer, or the recipient's IMDN. */
    messageStatus: (status: MessageStatus) => void;
    /**
     * What another device of the account did (on another connection that registered it): sent a message, removed
     * one, marked a conversation read, removed a conversation. See `AccountSync`.
     */
    sync: (sync: AccountSync) => void;
    /**
     * An address book entry was added, updated or deleted (`addressbook-updated`): by `updateAddressBook()` on this
     * connection (emitted right after its promise is resolved) or by another connection of the account.
     */
    addressBookUpdated: (update: AddressBookUpdate) => void;
};

/** Which part of the account's stored history `syncConversations()` asks for (by default all that is kept). */
export interface SyncConversationsOptions {
    /** The entries after this message (the last one the device has). */
    messageId?: string;
    /** The entries stored after this time: an ISO 8601 string or a Date. */
    since?: string | Date;
    /** At most this many (1 to 5000; the gateway's default is 5000): page by asking again after the last id. */
    limit?: number;
}

/** @internal */
export interface AccountOptions {
    ha1: string;
    displayName: string | null;
    userAgent: string | null;
    incomingHeaderPrefixes: string[] | null;
}

export class Account extends Emitter<AccountEvents> {
    /** The account's address as the gateway reports it: `user@domain`, domain in lower case. */
    readonly id: string;
    readonly user: string;
    readonly domain: string;
    readonly displayName: string | null;
    readonly connection: Connection;
    registrationState: RegistrationState = null;
    /** Whether the account is still on its connection. */
    active = true;

    private readonly _ha1: string;
    private readonly _userAgent: string | null;
    private readonly _incomingHeaderPrefixes: string[] | null;
    private _calls = new Set<Call>();
    private _registerAfterReconnect = false;
    /** fetchAddressBook() calls waiting for their addressbook-fetched event, oldest first. */
    private readonly _addressBookWaiters: EventWaiters<Record<string, unknown>>;
    /** updateAddressBook() calls waiting for their addressbook-updated event, by type, action and id. */
    private readonly _addressBookUpdateWaiters: EventWaiters<Record<string, unknown>>;
    /** syncConversations() calls waiting for their sync-conversations event, oldest first. */
    private readonly _syncWaiters: EventWaiters<StoredMessage[]>;

    /** @internal: use `Connection.addAccount()`. */
    constructor(connection: Connection, address: SipAddress, options: AccountOptions) {
        super();
        this.connection = connection;
        this.id = address.aor;
        this.user = address.user;
        this.domain = address.domain;
        this.displayName = options.displayName;
        this._ha1 = options.ha1;
        this._userAgent = options.userAgent;
        this._incomingHeaderPrefixes = options.incomingHeaderPrefixes;
        this._addressBookWaiters = new EventWaiters(connection._env);
        this._addressBookUpdateWaiters = new EventWaiters(connection._env);
        this._syncWaiters = new EventWaiters(connection._env);
    }

    /** The account's calls that are not terminated. */
    get calls(): Call[] {
        return [...this._calls];
    }

    /** Starts registering (`account-register`); resolves on the ack, the outcome comes as `registrationStateChanged`. */
    register(): Promise<void> {
        if (!this.active) {
            return Promise.reject(this._removedError(REQUESTS.register));
        }
        return this.connection._request(REQUESTS.register, { account: this.id });
    }

    /**
     * Removes the registration (`account-unregister`); resolves on the ack. With sylkRTC-2 the state is
     * `unregistered` from the ack (the gateway, like SylkServer, says no more); with sylkRTC-1 the gateway's
     * `unregistered` follows once the registrar confirmed. While the connection is down it only cancels
     * registering again after the reconnect.
     */
    unregister(): Promise<void> {
        if (!this.active) {
            return Promise.reject(this._removedError(REQUESTS.unregister));
        }
        if (this.connection.state !== 'ready' && this._registerAfterReconnect) {
            this._registerAfterReconnect = false;
            this._setRegistrationState('unregistered', 'Unregistered while disconnected');
            return Promise.resolve();
        }
        return this.connection._request(REQUESTS.unregister, { account: this.id }).then(() => {
            if (this.connection.protocol === 'sylkRTC-2') { // as from SylkServer, no `unregistered` follows
                this._setRegistrationState('unregistered', null);
            }
        });
    }

    /**
     * Calls `uri` (`user@domain`, `sip:user@domain`, or just `user` for the account's own domain). The call starts
     * in state `connecting`: the offer is made, then sent with `session-create` (with `headers`, if given, for the
     * INVITE). Pass the `localStream` from getUserMedia; without one the call only receives audio. Throws when the
     * connection is not ready, or a TypeError for bad arguments.
     */
    call(uri: string, options: CallOptions = {}): Call {
        return this._placeCall(uri, options, null);
    }

    /**
     * Sends an instant message to `uri` (`account-message`, a SIP MESSAGE; the account need not be registered). The
     * content goes as `contentType` (`text/plain` by default), in the CPIM envelope the gateway adds. Resolves with the message's id (`messageId`,
     * or a new UUID) on the ack; what became of it comes as a `messageStatus` event (`accepted` or `failed`, with the
     * SIP answer). Rejects with a TypeError for bad arguments.
     */
    async sendMessage(uri: string, content: string, options: MessageOptions = {}): Promise<string> {
        const target = this._target(uri);
        const { fields, messageId } = messageFields(content, options, 'sendMessage');
        this._checkActive(REQUESTS.message);
        await this.connection._request(REQUESTS.message, { account: this.id, uri: target.aor, ...fields });
        return messageId;
    }

    /**
     * Tells `uri` what became of their message `messageId` (`account-disposition-notification`: an IMDN):
     * `delivered`, `displayed`, `failed`, `forbidden` or `error`. `timestamp`: when their message was sent (its
     * `timestamp`). Resolves on the ack; failures to deliver it are not reported.
     */
    async sendDispositionNotification(uri: string, messageId: string, state: DispositionState,
        timestamp?: string | Date): Promise<void> {
        const target = this._target(uri);
        if (typeof messageId !== 'string' || messageId === '' || messageId.length > 256) {
            throw new TypeError('sendDispositionNotification: messageId must be a string of 1 to 256 characters');
        }
        if (!(DISPOSITION_STATES as readonly string[]).includes(state)) {
            throw new TypeError(`sendDispositionNotification: state must be one of ${DISPOSITION_STATES.join(', ')}`);
        }
        const fields: Record<string, unknown> = { account: this.id, uri: target.aor, message_id: messageId, state };
        if (timestamp !== undefined) {
            fields.timestamp = timestampOf(timestamp, 'sendDispositionNotification');
        }
        this._checkActive(REQUESTS.dispositionNotification);
        await this.connection._request(REQUESTS.dispositionNotification, fields);
    }

    /**
     * Gives the gateway a device's push token (`account-devicetoken`): the next REGISTER carries it (RFC 8599
     * Contact parameters), so the SIP proxy can wake the device for calls. A registration in place keeps its Contact
     * until the next `register()`. Resolves on the ack.
     */
    async setDeviceToken(token: DeviceToken): Promise<void> {
        if (token === null || typeof token !== 'object') {
            throw new TypeError('setDeviceToken: expected {token, platform, device, silent, app}');
        }
        const fields: Record<string, unknown> = { account: this.id };
        for (const name of ['token', 'platform', 'device', 'app'] as const) {
            const value = token[name];
            if (value === undefined || value === null) {
                continue;
            }
            if (typeof value !== 'string') {
                throw new TypeError(`setDeviceToken: ${name} must be a string`);
            }
            fields[name] = value;
        }
        if (token.silent !== undefined) {
            if (typeof token.silent !== 'boolean') {
                throw new TypeError('setDeviceToken: silent must be a boolean');
            }
            fields.silent = token.silent;
        }
        this._checkActive(REQUESTS.deviceToken);
        await this.connection._request(REQUESTS.deviceToken, fields);
    }

    /**
     * Fetches the account's address book (`account-fetch-addressbook`): resolves with the object the gateway has
     * for it (`{}` when it has none) from its `addressbook-fetched` event; rejects if the gateway refuses (`The
     * address book of A is unavailable`) or sends nothing within the connection's `requestTimeout`.
     */
    fetchAddressBook(): Promise<Record<string, unknown>> {
        try {
            this._checkActive(REQUESTS.fetchAddressBook);
        } catch (error) {
            return Promise.reject(error);
        }
        // (the event may come before the ack as well as after it: wait for it from the start)
        return this._addressBookWaiters.wait(REQUESTS.fetchAddressBook, 'address book',
            this.connection._options.requestTimeout,
            () => this.connection._request(REQUESTS.fetchAddressBook, { account: this.id }));
    }

    /**
     * Adds, updates or deletes an entry of the account's address book (`account-update-addressbook`): `type`
     * `contact`, `group` or `policy`; `action` `add`, `update` or `delete`; `data` the entry, an object with a string
     * `id` of 1 to 256 characters (for `delete` just `{id}` will do). Resolves with the entry the gateway reports in
     * its `addressbook-updated` event for that type, action and id (an `addressBookUpdated` event follows, as on the
     * account's other connections); rejects with the gateway's error (an error answer, or its
     * `addressbook-update-failed` event: kind `server`), or if nothing came within the connection's
     * `requestTimeout`. Rejects with a TypeError for bad arguments.
     */
    async updateAddressBook(type: AddressBookItemType, action: AddressBookAction,
        data: Record<string, unknown>): Promise<Record<string, unknown>> {
        if (!(ADDRESS_BOOK_ITEM_TYPES as readonly string[]).includes(type)) {
            throw new TypeError(`updateAddressBook: type must be one of ${ADDRESS_BOOK_ITEM_TYPES.join(', ')}`);
        }
        if (!(ADDRESS_BOOK_ACTIONS as readonly string[]).includes(action)) {
            throw new TypeError(`updateAddressBook: action must be one of ${ADDRESS_BOOK_ACTIONS.join(', ')}`);
        }
        if (data === null || typeof data !== 'object' || Array.isArray(data)) {
            throw new TypeError('updateAddressBook: data must be an object with an id');
        }
        const id = data.id;
        if (typeof id !== 'string' || id === '' || id.length > 256) {
            throw new TypeError('updateAddressBook: data.id must be a string of 1 to 256 characters');
        }
        this._checkActive(REQUESTS.updateAddressBook);
        return this._addressBookUpdateWaiters.wait(REQUESTS.updateAddressBook, 'address book update',
            this.connection._options.requestTimeout,
            () => this.connection._request(REQUESTS.updateAddressBook,
                { account: this.id, action, type, data: { ...data } }),
            addressBookKey(type, action, id));
    }

    /**
     * Fetches the account's stored message history (`account-sync-conversations`), oldest first: the entries after
     * `messageId`, or stored after `since`, or all that the gateway keeps; at most `limit`. Resolves with them from
     * the gateway's `sync-conversations` event; rejects with the gateway's error (the account must be registered on
     * this connection; `This gateway keeps no message history`), or if nothing came within the connection's
     * `requestTimeout`. Rejects with a TypeError for bad options.
     */
    async syncConversations(options: SyncConversationsOptions = {}): Promise<StoredMessage[]> {
        const fields = syncFields(options);
        this._checkActive(REQUESTS.syncConversations);
        const messages = await this._syncWaiters.wait(REQUESTS.syncConversations, 'conversations',
            this.connection._options.requestTimeout,
            () => this.connection._request(REQUESTS.syncConversations, { account: this.id, ...fields }));
        return messages.map((message) => ({ ...message, disposition: [...message.disposition] }));
    }

    /**
     * Marks the conversation with `contact` read (`account-mark-conversation-read`), on every device of the account:
     * the others get a `sync` event. Resolves on the ack. `contact`: `user@domain`, `sip:user@domain`, or `user`.
     */
    async markConversationRead(contact: string): Promise<void> {
        await this._conversationRequest(REQUESTS.markConversationRead, contact, {});
    }

    /**
     * Removes the message `messageId` of the conversation with `contact` (`account-remove-message`), on every device
     * of the account. Resolves on the ack.
     */
    async removeMessage(contact: string, messageId: string): Promise<void> {
        if (typeof messageId !== 'string' || messageId === '' || messageId.length > 256) {
            throw new TypeError('removeMessage: messageId must be a string of 1 to 256 characters');
        }
        await this._conversationRequest(REQUESTS.removeMessage, contact, { message_id: messageId });
    }

    /** Removes the whole conversation with `contact` (`account-remove-conversation`), on every device of the account. */
    async removeConversation(contact: string): Promise<void> {
        await this._conversationRequest(REQUESTS.removeConversation, contact, {});
    }

    // ---- internals ----

    /** @internal: `uri` as a SIP address; a bare user is at the account's domain. Throws a TypeError. */
    _target(uri: string, what = 'uri'): SipAddress {
        return parseAddress(typeof uri === 'string' && !uri.includes('@') ? `${uri.trim()}@${this.domain}` : uri, what);
    }

    /** @internal: `call()`, and `TransferRequest.accept()` (with the session of the call whose far end asked). */
    _placeCall(uri: string, options: CallOptions, referSession: string | null): Call {
        if (!this.active) {
            throw this._removedError(REQUESTS.call);
        }
        if (this.connection.state !== 'ready') {
            throw new SylkRTCError(`Cannot call: the connection is ${this.connection.state}, not ready`, 'not-ready',
                REQUESTS.call);
        }
        const target = this._target(uri);
        let id = uuid4();
        while (this.connection._hasCall(id)) {
            id = uuid4();
        }
        const call = new Call(this, id, 'outgoing', { uri: target.aor, displayName: null });
        call._startOutgoing(options, referSession); // throws if no peer connection can be made
        this._addCall(call);
        return call;
    }

    private _checkActive(request: string): void {
        if (!this.active) {
            throw this._removedError(request);
        }
    }

    /** A request about the conversation with `contact`, resolving on the ack. */
    private async _conversationRequest(request: string, contact: string, fields: Record<string, unknown>): Promise<void> {
        const target = this._target(contact, 'contact');
        this._checkActive(request);
        await this.connection._request(request, { account: this.id, contact: target.aor, ...fields });
    }

    /** @internal */
    _addFields(): Record<string, unknown> {
        const fields: Record<string, unknown> = { account: this.id, password: this._ha1 };
        if (this.displayName) {
            fields.display_name = this.displayName;
        }
        if (this._userAgent) {
            fields.user_agent = this._userAgent;
        }
        if (this._incomingHeaderPrefixes) {
            fields.incoming_header_prefixes = [...this._incomingHeaderPrefixes];
        }
        return fields;
    }

    /** @internal */
    _addCall(call: Call): void {
        this._calls.add(call);
        this.connection._addCall(call);
    }

    /** @internal */
    _forgetCall(call: Call): void {
        this._calls.delete(call);
        this.connection._forgetCall(call);
    }

    /** @internal: the socket dropped; the gateway forgot the account, which is added again after the reconnect. */
    _connectionLost(reason: string): void {
        // (what the gateway forgot it will not answer; while it keeps the connection the answer may still come)
        const lost = (request: string) => () => new SylkRTCError(`${reason} before the answer to ${request}`,
            'connection-lost', request);
        this._addressBookWaiters.rejectAll(lost(REQUESTS.fetchAddressBook));
        this._addressBookUpdateWaiters.rejectAll(lost(REQUESTS.updateAddressBook));
        this._syncWaiters.rejectAll(lost(REQUESTS.syncConversations));
        const state = this.registrationState;
        if (state === 'registering' || state === 'registered') {
            this._registerAfterReconnect = true;
            this._setRegistrationState('failed', reason);
        }
    }

    /** @internal: the new socket is up; add the account there again. */
    async _addAgain(): Promise<void> {
        const connection = this.connection;
        try {
            await connection._request(REQUESTS.addAccount, this._addFields(), { beforeReady: true });
        } catch (error) {
            if (connection.accounts.includes(this) && (error as SylkRTCError).kind !== 'connection-lost') {
                // the gateway does not want it any more (e.g. domain no longer allowed): drop it
                connection._forgetAccount(this);
                this._registerAfterReconnect = false;
                this._removed(`Could not add the account again after reconnecting: ${errorMessage(error)}`);
            }
            return;
        }
        if (!connection.accounts.includes(this)) {
            // removed while it was being added again
            await connection._request(REQUESTS.removeAccount, { account: this.id }, { beforeReady: true })
                .catch(() => undefined);
        }
    }

    /** @internal: the connection is ready again; register if the account was registered before. */
    _resumeRegistration(): void {
        if (!this._registerAfterReconnect) {
            return;
        }
        this._registerAfterReconnect = false;
        this.register().catch((error: unknown) => {
            if (this.active && this.registrationState !== 'registering' && this.registrationState !== 'registered') {
                this._setRegistrationState('failed', `Could not register again after reconnecting: ${errorMessage(error)}`);
            }
        });
    }

    /**
     * @internal: the gateway kept this account from before a page reload: it starts in the state the gateway has
     * (no event: the app gets the account in that state).
     */
    _takeOver(state: string | null): void {
        if (isRegistrationState(state)) {
            this.registrationState = state;
        }
    }

    /** @internal: no longer on the connection. */
    _removed(reason: string): void {
        if (!this.active) {
            return;
        }
        this.active = false;
        for (const call of [...this._calls]) {
            call._end(reason);
        }
        this._addressBookWaiters.rejectAll(() => this._removedError(REQUESTS.fetchAddressBook));
        this._addressBookUpdateWaiters.rejectAll(() => this._removedError(REQUESTS.updateAddressBook));
        this._syncWaiters.rejectAll(() => this._removedError(REQUESTS.syncConversations));
        const state = this.registrationState;
        if (state === 'registering' || state === 'registered') {
            this._setRegistrationState('unregistered', reason);
        }
        this.emit('removed', reason);
    }

    /** @internal: an account event, decoded from either dialect. */
    _onEvent(event: AccountEvent): void {
        switch (event.type) {
            case 'registration-state':
                if (isRegistrationState(event.state)) {
                    this._setRegistrationState(event.state, event.reason);
                }
                break;
            case 'incoming-session': {
                if (this.connection._hasCall(event.session)) {
                    break;
                }
                const call = new Call(this, event.session, 'incoming', { ...event.originator }, event.sdp);
                call._setSipDetails(event.callId, event.headers);
                this._addCall(call);
                this.emit('incomingCall', call);
                break;
            }
            case 'missed-session':
                this.emit('missedCall', { originator: { ...event.originator } });
                break;
            case 'message':
                this.emit('message', receivedMessage(event));
                break;
            case 'disposition-notification':
                this.emit('messageStatus', messageStatus(event));
                break;
            case 'addressbook-fetched':
                this._addressBookWaiters.resolve({ ...event.addressbook });
                break;
            case 'sync-conversations':
                this._syncWaiters.resolve(event.messages); // (nobody asked: ignored)
                break;
            case 'sync':
                this.emit('sync', event.sync);
                break;
            case 'addressbook-updated': {
                const { type, action, item } = event.update;
                // (this connection's own update resolves its call first; the account's other connections' only emit)
                this._addressBookUpdateWaiters.resolve({ ...item }, addressBookKey(type, action, event.id));
                this.emit('addressBookUpdated', { type, action, item: { ...item } });
                break;
            }
            case 'addressbook-update-failed':
                this._addressBookUpdateWaiters.reject(new SylkRTCError(event.error, 'server', REQUESTS.updateAddressBook),
                    addressBookKey(event.itemType, event.action, event.id)); // (nobody asked: ignored)
                break;
            default:
                break;
        }
    }

    private _setRegistrationState(state: RegistrationState, reason: string | null): void {
        const previous = this.registrationState;
        if (state === previous) {
            return;
        }
        this.registrationState = state;
        this.emit('registrationStateChanged', state, previous, reason);
    }

    private _removedError(request: string): SylkRTCError {
        return new SylkRTCError(`Account ${this.id} was removed from the connection`, 'local', request);
    }
}

/** What an address book update waits under: its type, action and id. */
function addressBookKey(type: string, action: string, id: string): string {
    return JSON.stringify([type, action, id]);
}

/** The fields of account-sync-conversations; throws a TypeError on bad options. */
function syncFields(options: SyncConversationsOptions): Record<string, unknown> {
    if (options === null || typeof options !== 'object') {
        throw new TypeError('syncConversations: options must be an object: {messageId?, since?, limit?}');
    }
    const fields: Record<string, unknown> = {};
    const { messageId, since, limit } = options;
    if (messageId !== undefined) {
        if (typeof messageId !== 'string' || messageId === '' || messageId.length > 256) {
            throw new TypeError('syncConversations: messageId must be a string of 1 to 256 characters');
        }
        fields.message_id = messageId;
    }
    if (since !== undefined) {
        if (since instanceof Date && !Number.isNaN(since.getTime())) {
            fields.since = since.toISOString();
        } else if (typeof since === 'string' && since !== '' && since.length <= 64) {
            fields.since = since;
        } else {
            throw new TypeError('syncConversations: since must be an ISO 8601 string or a valid Date');
        }
    }
    if (limit !== undefined) {
        if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > 5000) {
            throw new TypeError('syncConversations: limit must be an integer from 1 to 5000');
        }
        fields.limit = limit;
    }
    return fields;
}

function isRegistrationState(state: string | null): state is Exclude<RegistrationState, null> {
    return state === 'registering' || state === 'registered' || state === 'failed' || state === 'unregistered';
}
