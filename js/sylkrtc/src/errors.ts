/** The error every failed request rejects with. */
export class SylkRTCError extends Error {
    /** The request's `sylkrtc` type, e.g. `account-register`; null for errors not tied to a request. */
    readonly request: string | null;
    /** The request's transaction id, when it was sent. */
    readonly transaction: string | null;
    /**
     * Why it failed: `server` (the gateway answered `error`), `timeout` (no answer in time), `not-ready` (refused
     * locally: the connection was not ready), `connection-lost` (the socket closed before the answer), or `local`
     * (the library refused it, e.g. wrong state).
     */
    readonly kind: 'server' | 'timeout' | 'not-ready' | 'connection-lost' | 'local';

    constructor(
        message: string,
        kind: SylkRTCError['kind'],
        request: string | null = null,
        transaction: string | null = null,
    ) {
        super(message);
        this.name = 'SylkRTCError';
        this.kind = kind;
        this.request = request;
        this.transaction = transaction;
    }
}
