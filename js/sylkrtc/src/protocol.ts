/**
 * The two wire dialects of the gateway, chosen per socket by the WebSocket subprotocol, decoded into one internal
 * shape so that the rest of the library does not care which one the gateway picked:
 *
 * - `sylkRTC-2` (SylkServer since 2017): `{"sylkrtc": "ready-event"}`; flat `account-event` / `session-event`
 *   messages with dash event names (`registration-state`, `incoming-session`, `missed-session`), no `data` wrapper;
 *   calls report `proceeding`, `ringing` and `early-media` besides the states of sylkRTC-1; the far end's
 *   re-INVITEs come as `update` `received` (the browser answers them).
 * - `sylkRTC-1` (2015, the seed): `{"sylkrtc": "event", "event": "ready"}`; `account_event` / `session_event` with
 *   underscore event names (`transfer_request`, `disposition_notification`, `addressbook_fetched`) and the details
 *   under `data`.
 *
 * `ack` and `error` are the same in both, and so are the requests: the library sends the dash names, which both
 * dialects accept.
 */

/** A WebSocket subprotocol this library speaks. */
export type Protocol = 'sylkRTC-2' | 'sylkRTC-1';

/** The subprotocols offered by default, preferred first (the gateway picks `sylkRTC-2` when both are offered). */
export const PROTOCOLS: readonly Protocol[] = Object.freeze(['sylkRTC-2', 'sylkRTC-1'] as Protocol[]);

export function isProtocol(value: unknown): value is Protocol {
    return value === 'sylkRTC-2' || value === 'sylkRTC-1';
}

/** Someone on the other side of a call, as the gateway describes them. */
export interface Originator {
    uri: string;
    displayName: string | null;
}

/** SIP headers, by name (the gateway passes up those matching the account's `incomingHeaderPrefixes`). */
export type HeaderMap = Record<string, string>;

/** An instant message from someone (SIP MESSAGE, unwrapped from CPIM by the gateway when it came in one). */
export interface IncomingMessageEvent {
    type: 'message';
    sender: Originator;
    content: string;
    contentType: string;
    messageId: string | null;
    timestamp: string | null;
    /** What the sender wants to hear back (CPIM `imdn.Disposition-Notification`), e.g. `['positive-delivery']`. */
    dispositionNotification: string[];
}

/** What became of a message: the SIP answer to ours (`accepted`, `failed`), or the recipient's IMDN. */
export interface DispositionNotificationEvent {
    type: 'disposition-notification';
    messageId: string;
    /** `accepted`, `failed` (the SIP answer), or from an IMDN `delivered`, `displayed`, `failed`, `forbidden`, `error`. */
    state: string;
    code: number | null;
    reason: string | null;
    /** The timestamp of the message it is about, when known. */
    messageTimestamp: string | null;
}

/**
 * An entry of an account's stored history (`account-sync-conversations`), as SylkServer keeps them: a message either
 * way, or a read mark or removal (types `application/sylk-conversation-read`, `application/sylk-message-remove`,
 * `application/sylk-conversation-remove`, whose `content` is their JSON as text).
 */
export interface StoredMessage {
    /** The other party: `user@domain` (the account itself for its read marks and removals). */
    contact: string;
    /** When it was written, ISO 8601. */
    timestamp: string;
    /** The notifications still to be answered (`positive-delivery`, `display`): none once displayed or read. */
    disposition: string[];
    messageId: string;
    contentType: string;
    content: string;
    /** `incoming`, `outgoing`, or `''` (read marks and removals). */
    direction: string;
    /**
     * Outgoing: `pending`, `accepted`, `failed`, `delivered`, `displayed` (the furthest news so far); incoming:
     * `received`; `null` for read marks and removals.
     */
    state: string | null;
}

/** A message another device of the account sent (`sync` `message` `add`): the `account-message` it sent. */
export interface SyncedMessage {
    /** The account that sent it. */
    account: string;
    /** The recipient. */
    uri: string;
    messageId: string;
    content: string;
    contentType: string;
    timestamp: string | null;
}

/** What another device (connection) of the account did, for this one to follow (the `sync` event). */
export type AccountSync =
    /** It sent a message; its outcome (`messageStatus`) follows on this connection too. */
    | { type: 'message'; action: 'add'; content: SyncedMessage }
    /** It removed the message `messageId` of the conversation with `contact`. */
    | { type: 'message'; action: 'remove'; content: { contact: string; messageId: string; direction: string | null } }
    /** It marked the conversation with `contact` read. */
    | { type: 'conversation'; action: 'read'; content: { contact: string } }
    /** It removed the whole conversation with `contact` (`timestamp`: when). */
    | { type: 'conversation'; action: 'remove'; content: { contact: string; timestamp: string | null } };

/** What an address book entry is (`account-update-addressbook`'s `type`). */
export type AddressBookItemType = 'contact' | 'group' | 'policy';
/** What is done to it (`account-update-addressbook`'s `action`). */
export type AddressBookAction = 'add' | 'update' | 'delete';

export const ADDRESS_BOOK_ITEM_TYPES: readonly AddressBookItemType[] = ['contact', 'group', 'policy'];
export const ADDRESS_BOOK_ACTIONS: readonly AddressBookAction[] = ['add', 'update', 'delete'];

/** An address book entry was added, updated or deleted, by this connection or another one of the account. */
export interface AddressBookUpdate {
    type: AddressBookItemType;
    action: AddressBookAction;
    /** The entry as the gateway has it now (for `delete`, what it says of the removed one: at least its `id`). */
    item: Record<string, unknown>;
}

/** An account event, whatever the dialect. */
export type AccountEvent =
    | { type: 'registration-state'; state: string; reason: string | null }
    | {
        type: 'incoming-session';
        session: string;
        originator: Originator;
        sdp: string;
        callId: string | null;
        headers: HeaderMap | null;
    }
    | { type: 'missed-session'; originator: Originator }
    | IncomingMessageEvent
    | DispositionNotificationEvent
    | { type: 'addressbook-fetched'; addressbook: Record<string, unknown> }
    | { type: 'sync-conversations'; messages: StoredMessage[] }
    | { type: 'sync'; sync: AccountSync }
    | { type: 'addressbook-updated'; update: AddressBookUpdate; id: string }
    | { type: 'addressbook-update-failed'; itemType: AddressBookItemType; action: AddressBookAction; id: string;
        error: string };

/** A state change of a call, whatever the dialect. */
export interface SessionStateEvent {
    type: 'state';
    /** `progress`, `proceeding`, `ringing`, `early-media`, `accepted`, `established`, `terminated`, or newer ones. */
    state: string;
    /** `terminated`: why. */
    reason: string | null;
    /** `early-media`, `accepted`: the remote SDP answer. */
    sdp: string | null;
    /** `proceeding`: the provisional response's status code. */
    code: number | null;
    /** `accepted` (and `early-media`, when the gateway sends it): the SIP Call-ID. */
    callId: string | null;
    /** `accepted`: the answer's headers matching the account's prefixes. */
    headers: HeaderMap | null;
}

/** A DTMF tone the far end sent (SIP INFO, or RFC 4733 when the gateway can see those). */
export interface SessionDtmfEvent {
    type: 'dtmf';
    digit: string;
    duration: number | null;
    method: string;
}

/** A re-INVITE: the far end's offer (`received`), the answer to ours (`accepted`), or ours failed (`failed`). */
export interface SessionUpdateEvent {
    type: 'update';
    /** `received`, `accepted`, `failed`, or newer ones. */
    state: string;
    sdp: string | null;
    reason: string | null;
}

/** The call went on hold or off it, by the browser (`local`) or by the far end (`remote`). */
export interface SessionHoldEvent {
    type: 'hold';
    held: boolean;
    originator: 'local' | 'remote';
}

/** How a transfer the browser asked for goes, as the far end reports it. */
export interface SessionTransferEvent {
    type: 'transfer';
    /** `progress`, `completed`, `failed`. */
    state: string;
    code: number | null;
    reason: string | null;
}

/** The far end asks the browser to call `referTo` instead (an incoming REFER). */
export interface SessionTransferRequestEvent {
    type: 'transfer-request';
    referTo: string;
    referredBy: string | null;
    replaces: boolean;
}

export type SessionEvent = SessionStateEvent | SessionDtmfEvent | SessionUpdateEvent | SessionHoldEvent
    | SessionTransferEvent | SessionTransferRequestEvent | IncomingMessageEvent | DispositionNotificationEvent;

/** Every message of the gateway the library acts on, in one shape. */
export type ServerMessage =
    | { kind: 'ready' }
    | { kind: 'resumed'; missed: number }
    | { kind: 'ack'; transaction: unknown }
    | { kind: 'error'; transaction: unknown; error: string }
    | { kind: 'account'; account: string; event: AccountEvent }
    | { kind: 'session'; session: string; event: SessionEvent }
    | { kind: 'public-key'; uri: string; publicKey: string | null };

type Json = Record<string, unknown>;

/**
 * The message in the internal shape, or null for what the library does not know (newer gateways may send more,
 * and messages of the other dialect are not understood either).
 */
export function decode(protocol: Protocol, message: Json): ServerMessage | null {
    switch (message.sylkrtc) {
        case 'ack':
            return { kind: 'ack', transaction: message.transaction };
        case 'error':
            return { kind: 'error', transaction: message.transaction, error: String(message.error ?? 'Unknown error') };
        default:
            return protocol === 'sylkRTC-2' ? decode2(message) : decode1(message);
    }
}

/** Which dialect a gateway speaks that selected no subprotocol, judging by its ready event; null if it is not one. */
export function protocolOfReady(message: Json): Protocol | null {
    if (message.sylkrtc === 'ready-event') {
        return 'sylkRTC-2';
    }
    if (message.sylkrtc === 'event' && message.event === 'ready') {
        return 'sylkRTC-1';
    }
    return null;
}

type SessionEventType = SessionEvent['type'];

/** The session event names of each dialect. */
const SESSION_EVENTS_2: Record<string, SessionEventType> = {
    state: 'state',
    dtmf: 'dtmf',
    update: 'update',
    hold: 'hold',
    transfer: 'transfer',
    'transfer-request': 'transfer-request',
    message: 'message',
    'disposition-notification': 'disposition-notification',
};
const SESSION_EVENTS_1: Record<string, SessionEventType> = {
    state: 'state',
    dtmf: 'dtmf',
    update: 'update',
    hold: 'hold',
    transfer: 'transfer',
    transfer_request: 'transfer-request',
    message: 'message',
    disposition_notification: 'disposition-notification',
};

// ---- sylkRTC-2: flat ----

function decode2(message: Json): ServerMessage | null {
    switch (message.sylkrtc) {
        case 'ready-event':
            return { kind: 'ready' };
        case 'resumed-event':
            return { kind: 'resumed', missed: number(message.missed) ?? 0 };
        case 'lookup-public-key-event':
            return publicKey(message);
        case 'account-event': {
            if (typeof message.account !== 'string') {
                return null;
            }
            const event = accountEvent(message, {
                'registration-state': 'registration-state',
                'incoming-session': 'incoming-session',
                'missed-session': 'missed-session',
                message: 'message',
                'disposition-notification': 'disposition-notification',
                'addressbook-fetched': 'addressbook-fetched',
                'sync-conversations': 'sync-conversations',
                sync: 'sync',
                'addressbook-updated': 'addressbook-updated',
                'addressbook-update-failed': 'addressbook-update-failed',
            }, message, message.session);
            return event && { kind: 'account', account: message.account, event };
        }
        case 'session-event': {
            if (typeof message.session !== 'string') {
                return null;
            }
            const event = sessionEvent(message, SESSION_EVENTS_2, message);
            return event && { kind: 'session', session: message.session, event };
        }
        default:
            return null;
    }
}

// ---- sylkRTC-1: nested under data ----

function decode1(message: Json): ServerMessage | null {
    switch (message.sylkrtc) {
        case 'event':
            if (message.event === 'resumed') {
                return { kind: 'resumed', missed: number(object(message.data).missed) ?? 0 };
            }
            if (message.event === 'lookup_public_key') {
                return publicKey(object(message.data));
            }
            return message.event === 'ready' ? { kind: 'ready' } : null;
        case 'account_event': {
            if (typeof message.account !== 'string') {
                return null;
            }
            const event = accountEvent(message, {
                registration_state: 'registration-state',
                incoming_session: 'incoming-session',
                incoming_call: 'incoming-session', // the July 2015 seed's name, with data.caller
                missed_session: 'missed-session',
                message: 'message',
                disposition_notification: 'disposition-notification',
                addressbook_fetched: 'addressbook-fetched',
                sync_conversations: 'sync-conversations',
                sync: 'sync',
                addressbook_updated: 'addressbook-updated',
                addressbook_update_failed: 'addressbook-update-failed',
            }, object(message.data), message.session);
            return event && { kind: 'account', account: message.account, event };
        }
        case 'session_event': {
            if (typeof message.session !== 'string') {
                return null;
            }
            const event = sessionEvent(message, SESSION_EVENTS_1, object(message.data));
            return event && { kind: 'session', session: message.session, event };
        }
        default:
            return null;
    }
}

// ---- shared ----

function accountEvent(message: Json, names: Record<string, AccountEvent['type']>, data: Json,
    session: unknown): AccountEvent | null {
    const name = eventName(message, names);
    switch (name) {
        case 'registration-state':
            return typeof data.state === 'string'
                ? { type: 'registration-state', state: data.state, reason: string(data.reason) }
                : null;
        case 'incoming-session':
            if (typeof session !== 'string' || session === '') {
                return null;
            }
            return {
                type: 'incoming-session',
                session,
                originator: originator(data.originator ?? data.caller),
                sdp: string(data.sdp) ?? '',
                callId: string(data.call_id),
                headers: headers(data.headers),
            };
        case 'missed-session':
            return { type: 'missed-session', originator: originator(data.originator) };
        case 'message':
            return messageEvent(data);
        case 'disposition-notification':
            return dispositionEvent(data);
        case 'addressbook-fetched':
            return { type: 'addressbook-fetched', addressbook: object(data.addressbook) };
        case 'sync-conversations':
            if (!Array.isArray(data.messages)) {
                return null;
            }
            // (an entry that is not one is left out: a device pages by the last id it got, so it gets later ones again)
            return { type: 'sync-conversations', messages: data.messages.map(storedMessage)
                .filter((item): item is StoredMessage => item !== null) };
        case 'sync': {
            const sync = accountSync(data);
            return sync && { type: 'sync', sync };
        }
        case 'addressbook-updated':
        case 'addressbook-update-failed':
            return addressBookEvent(name, data);
        default:
            return null;
    }
}

/**
 * addressbook-updated (`type`, `action`, and the entry under the key named by `type`, with a string `id`) or
 * addressbook-update-failed (`type`, `action`, `id`, `error`); null when malformed.
 */
function addressBookEvent(name: 'addressbook-updated' | 'addressbook-update-failed', data: Json): AccountEvent | null {
    const itemType = ADDRESS_BOOK_ITEM_TYPES.find((t) => t === data.type);
    const action = ADDRESS_BOOK_ACTIONS.find((a) => a === data.action);
    if (itemType === undefined || action === undefined) {
        return null;
    }
    if (name === 'addressbook-update-failed') {
        if (typeof data.id !== 'string' || data.id === '') {
            return null;
        }
        return { type: 'addressbook-update-failed', itemType, action, id: data.id,
            error: typeof data.error === 'string' && data.error !== '' ? data.error : 'Address book update failed' };
    }
    const item = data[itemType];
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
        return null;
    }
    const id = (item as Json).id;
    if (typeof id !== 'string' || id === '') {
        return null;
    }
    return { type: 'addressbook-updated', update: { type: itemType, action, item: item as Json }, id };
}

function storedMessage(value: unknown): StoredMessage | null {
    const item = object(value);
    if (typeof item.contact !== 'string' || item.contact === '' || typeof item.message_id !== 'string'
        || typeof item.content !== 'string' || typeof item.content_type !== 'string'
        || typeof item.timestamp !== 'string') {
        return null;
    }
    return {
        contact: item.contact,
        timestamp: item.timestamp,
        disposition: strings(item.disposition),
        messageId: item.message_id,
        contentType: item.content_type,
        content: item.content,
        direction: string(item.direction) ?? '',
        state: string(item.state),
    };
}

function accountSync(data: Json): AccountSync | null {
    const content = data.content;
    if (content === null || typeof content !== 'object' || Array.isArray(content)) {
        return null;
    }
    const c = content as Json;
    if (data.type === 'message' && data.action === 'add') {
        if (typeof c.uri !== 'string' || typeof c.message_id !== 'string' || typeof c.content !== 'string') {
            return null;
        }
        return {
            type: 'message',
            action: 'add',
            content: {
                account: string(c.account) ?? '',
                uri: c.uri,
                messageId: c.message_id,
                content: c.content,
                contentType: string(c.content_type) ?? 'text/plain',
                timestamp: string(c.timestamp),
            },
        };
    }
    if (typeof c.contact !== 'string' || c.contact === '') {
        return null;
    }
    if (data.type === 'message' && data.action === 'remove') {
        return typeof c.message_id === 'string'
            ? { type: 'message', action: 'remove',
                content: { contact: c.contact, messageId: c.message_id, direction: string(c.direction) } }
            : null;
    }
    if (data.type === 'conversation' && data.action === 'read') {
        return { type: 'conversation', action: 'read', content: { contact: c.contact } };
    }
    if (data.type === 'conversation' && data.action === 'remove') {
        return { type: 'conversation', action: 'remove', content: { contact: c.contact, timestamp: string(c.timestamp) } };
    }
    return null;
}

/** The answer to lookup-public-key: `uri`, and `public_key` a string or null (absent: null). */
function publicKey(data: Json): ServerMessage | null {
    if (typeof data.uri !== 'string' || data.uri === '') {
        return null;
    }
    const key = data.public_key ?? null;
    if (key !== null && typeof key !== 'string') {
        return null;
    }
    return { kind: 'public-key', uri: data.uri, publicKey: key };
}

function eventName<T extends string>(message: Json, names: Record<string, T>): T | undefined {
    return typeof message.event === 'string' && Object.prototype.hasOwnProperty.call(names, message.event)
        ? names[message.event] : undefined;
}

function messageEvent(data: Json): IncomingMessageEvent | null {
    if (typeof data.content !== 'string') {
        return null;
    }
    return {
        type: 'message',
        sender: originator(data.sender),
        content: data.content,
        contentType: string(data.content_type) ?? 'text/plain',
        messageId: string(data.message_id),
        timestamp: string(data.timestamp),
        dispositionNotification: strings(data.disposition_notification),
    };
}

function dispositionEvent(data: Json): DispositionNotificationEvent | null {
    if (typeof data.message_id !== 'string' || typeof data.state !== 'string') {
        return null;
    }
    return {
        type: 'disposition-notification',
        messageId: data.message_id,
        state: data.state,
        code: number(data.code),
        reason: string(data.reason),
        messageTimestamp: string(data.message_timestamp),
    };
}

function sessionEvent(message: Json, names: Record<string, SessionEventType>, data: Json): SessionEvent | null {
    const name = eventName(message, names);
    switch (name) {
        case 'state':
        case 'dtmf':
            return stateOrDtmf(name, data);
        case 'update':
            return typeof data.state === 'string'
                ? { type: 'update', state: data.state, sdp: string(data.sdp), reason: string(data.reason) }
                : null;
        case 'hold':
            if (typeof data.held !== 'boolean' || (data.originator !== 'local' && data.originator !== 'remote')) {
                return null;
            }
            return { type: 'hold', held: data.held, originator: data.originator };
        case 'transfer':
            return typeof data.state === 'string'
                ? { type: 'transfer', state: data.state, code: number(data.code), reason: string(data.reason) }
                : null;
        case 'transfer-request':
            if (typeof data.refer_to !== 'string' || data.refer_to === '') {
                return null;
            }
            return {
                type: 'transfer-request',
                referTo: data.refer_to,
                referredBy: string(data.referred_by),
                replaces: data.replaces === true,
            };
        case 'message':
            return messageEvent(data);
        case 'disposition-notification':
            return dispositionEvent(data);
        default:
            return null;
    }
}

function stateOrDtmf(name: 'state' | 'dtmf', data: Json): SessionEvent | null {
    if (name === 'state') {
        if (typeof data.state !== 'string') {
            return null;
        }
        return {
            type: 'state',
            state: data.state,
            reason: string(data.reason),
            sdp: string(data.sdp),
            code: typeof data.code === 'number' ? data.code : null,
            callId: string(data.call_id),
            headers: headers(data.headers),
        };
    }
    if (typeof data.digit !== 'string' || data.digit === '') {
        return null;
    }
    return {
        type: 'dtmf',
        digit: data.digit,
        duration: typeof data.duration === 'number' ? data.duration : null,
        method: string(data.method) ?? 'info',
    };
}

function object(value: unknown): Json {
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Json : {};
}

function string(value: unknown): string | null {
    return typeof value === 'string' ? value : null;
}

/** The strings of an array (none if it is not one). */
function strings(value: unknown): string[] {
    return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

function number(value: unknown): number | null {
    return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function originator(value: unknown): Originator {
    if (typeof value === 'string') {
        return { uri: value, displayName: null };
    }
    const v = object(value);
    return {
        uri: typeof v.uri === 'string' ? v.uri : '',
        displayName: typeof v.display_name === 'string' && v.display_name !== '' ? v.display_name : null,
    };
}

function headers(value: unknown): HeaderMap | null {
    if (value === null || typeof value !== 'object') {
        return null;
    }
    const result: HeaderMap = {};
    if (Array.isArray(value)) {
        // (the request shape, [{name, value}], in case a gateway sends that)
        for (const item of value) {
            const h = object(item);
            if (typeof h.name === 'string' && typeof h.value === 'string') {
                result[h.name] = h.value;
            }
        }
    } else {
        for (const [name, text] of Object.entries(value as Json)) {
            if (typeof text === 'string') {
                result[name] = text;
            }
        }
    }
    return result;
}

/** SIP headers for a request: `[{name, value}]` as given, or made from `{name: value}`. */
export type SipHeaders = Array<{ name: string; value: string }> | Record<string, string>;

/** The `headers` field of session-create / session-answer: `[{name, value}]`; throws a TypeError on bad input. */
export function encodeHeaders(value: SipHeaders, what: string): Array<{ name: string; value: string }> {
    const list = Array.isArray(value)
        ? value
        : value !== null && typeof value === 'object'
            ? Object.entries(value).map(([name, text]) => ({ name, value: text }))
            : null;
    if (list === null) {
        throw new TypeError(`${what}: headers must be [{name, value}] or {name: value}`);
    }
    return list.map((item, index) => {
        if (item === null || typeof item !== 'object' || typeof item.name !== 'string' || item.name === ''
            || typeof item.value !== 'string') {
            throw new TypeError(`${what}: header ${index} needs a name and a string value`);
        }
        return { name: item.name, value: item.value };
    });
}
