/** Instant messages (SIP MESSAGE through the gateway): what is sent, what comes back, in the library's shapes. */

import type { DispositionNotificationEvent, IncomingMessageEvent } from './protocol.js';
import { uuid4 } from './util.js';

/** The gateway's limit on a message's content (characters). */
export const MAX_MESSAGE_LENGTH = 16384;

/** What an IMDN can tell the sender of a message (`sendDispositionNotification`). */
export const DISPOSITION_STATES = ['delivered', 'displayed', 'failed', 'forbidden', 'error'] as const;
export type DispositionState = typeof DISPOSITION_STATES[number];

export interface MessageOptions {
    /** A MIME type (default `text/plain`). */
    contentType?: string;
    /** The id repeated in the message's `messageStatus` events (default: a new UUID). */
    messageId?: string;
    /** When the message was written: an ISO 8601 string or a Date (default: now). */
    timestamp?: string | Date;
}

/** A message from someone (the `message` event of an Account, or of a Call for one inside the call). */
export interface ReceivedMessage {
    /** The sender: `{uri, displayName}`. */
    sender: { uri: string; displayName: string | null };
    content: string;
    contentType: string;
    /** The sender's id for it (or one the gateway made up for a plain MESSAGE). */
    messageId: string | null;
    /** When it was written (or when it arrived), ISO 8601. */
    timestamp: string | null;
    /** What the sender wants to hear back, e.g. `['positive-delivery', 'display']` (empty: nothing). */
    dispositionNotification: string[];
}

/** What became of a message (the `messageStatus` event). */
export interface MessageStatus {
    messageId: string;
    /**
     * `accepted` or `failed`: the SIP answer to a message sent from here (`code`, `reason`: `200 OK`, `404 Not
     * Found`, `408 Request Timeout`...); or what the recipient reported (an IMDN): `delivered`, `displayed`,
     * `failed`, `forbidden`, `error`.
     */
    state: string;
    code: number | null;
    reason: string | null;
    /** The timestamp of the message it is about, when known. */
    timestamp: string | null;
}

/** The fields of account-message / session-message, and the message id; throws a TypeError on bad input. */
export function messageFields(content: unknown, options: MessageOptions, what: string):
    { fields: Record<string, unknown>; messageId: string } {
    if (typeof content !== 'string') {
        throw new TypeError(`${what}: content must be a string`);
    }
    if (content.length > MAX_MESSAGE_LENGTH) {
        throw new TypeError(`${what}: content is longer than ${MAX_MESSAGE_LENGTH} characters`);
    }
    const opts = options ?? {};
    const messageId = opts.messageId ?? uuid4();
    if (typeof messageId !== 'string' || messageId === '' || messageId.length > 256) {
        throw new TypeError(`${what}: messageId must be a string of 1 to 256 characters`);
    }
    const contentType = opts.contentType ?? 'text/plain';
    if (typeof contentType !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+/.test(contentType)) {
        throw new TypeError(`${what}: contentType must be a MIME type like text/plain`);
    }
    return {
        fields: { message_id: messageId, content, content_type: contentType, timestamp: timestampOf(opts.timestamp, what) },
        messageId,
    };
}

/** An ISO 8601 timestamp (now by default); throws a TypeError for anything else. */
export function timestampOf(value: string | Date | undefined, what: string): string {
    if (value === undefined) {
        return new Date().toISOString();
    }
    if (value instanceof Date && !Number.isNaN(value.getTime())) {
        return value.toISOString();
    }
    if (typeof value === 'string' && value !== '' && value.length <= 64) {
        return value;
    }
    throw new TypeError(`${what}: timestamp must be an ISO 8601 string or a valid Date`);
}

/** @internal */
export function receivedMessage(event: IncomingMessageEvent): ReceivedMessage {
    return {
        sender: { ...event.sender },
        content: event.content,
        contentType: event.contentType,
        messageId: event.messageId,
        timestamp: event.timestamp,
        dispositionNotification: [...event.dispositionNotification],
    };
}

/** @internal */
export function messageStatus(event: DispositionNotificationEvent): MessageStatus {
    return {
        messageId: event.messageId,
        state: event.state,
        code: event.code,
        reason: event.reason,
        timestamp: event.messageTimestamp,
    };
}
