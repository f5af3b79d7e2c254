/**
 * sylkrtc.js: the browser client of sylkgateway's sylkRTC WebSocket API (WebRTC calls to and from SIP). It speaks
 * sylkRTC-2, and sylkRTC-1 with gateways that only know that.
 *
 *     import { connect } from './sylkrtc.js';
 *     const connection = connect('wss://gateway.example.com/webrtcgateway/ws');
 *     await connection.waitReady();
 *     const account = await connection.addAccount({ account: 'alice@example.com', password: 'secret' });
 *     await account.register();
 */

export { connect, Connection, REQUESTS } from './connection.js';
export type {
    AddAccountOptions,
    ConnectionEvents,
    ConnectionOptions,
    ConnectionState,
    ConnectionStateDetails,
    ReconnectOptions,
    ResumeDetails,
} from './connection.js';
export { PROTOCOLS } from './protocol.js';
export type {
    AccountSync,
    AddressBookAction,
    AddressBookItemType,
    AddressBookUpdate,
    HeaderMap,
    Protocol,
    SipHeaders,
    StoredMessage,
    SyncedMessage,
} from './protocol.js';
export { Account } from './account.js';
export type { AccountEvents, DeviceToken, MissedCall, RegistrationState, SyncConversationsOptions } from './account.js';
export { Call, TransferRequest } from './call.js';
export type {
    CallDirection,
    CallEvents,
    CallOptions,
    CallState,
    DtmfInfoOptions,
    DtmfOptions,
    HoldChange,
    HoldOptions,
    Identity,
    Originator,
    ReceivedDtmf,
    TransferOptions,
    TransferProgress,
    UpdateOptions,
} from './call.js';
export { DISPOSITION_STATES } from './messages.js';
export type { DispositionState, MessageOptions, MessageStatus, ReceivedMessage } from './messages.js';
export { Emitter } from './emitter.js';
export { SylkRTCError } from './errors.js';
export { md5 } from './md5.js';
export type { Environment, ResumeStorage } from './util.js';

/** The library's version. */
export const VERSION = '0.1.0';
