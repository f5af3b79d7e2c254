/** Small helpers shared by the modules: ids, address parsing, the environment (browser globals or fakes). */

/** The browser APIs the library uses. All default to the globals; tests and other environments pass their own. */
export interface Environment {
    /** WebSocket constructor (default: `globalThis.WebSocket`). */
    WebSocket: WebSocketConstructor;
    /** RTCPeerConnection constructor (default: `globalThis.RTCPeerConnection`). */
    RTCPeerConnection: PeerConnectionConstructor;
    /** MediaStream constructor, for remote tracks that arrive without a stream (default: `globalThis.MediaStream`). */
    MediaStream?: MediaStreamConstructor;
    setTimeout: (callback: () => void, ms: number) => unknown;
    clearTimeout: (handle: unknown) => void;
    /** A number in [0, 1): reconnect jitter (default: `Math.random`). */
    random: () => number;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;
export type PeerConnectionConstructor = new (configuration?: RTCConfiguration) => RTCPeerConnection;
export type MediaStreamConstructor = new (tracks?: MediaStreamTrack[]) => MediaStream;

const g = globalThis as unknown as Record<string, unknown>;

export function defaultEnvironment(overrides: Partial<Environment> = {}): Environment {
    return {
        WebSocket: (overrides.WebSocket ?? g.WebSocket) as WebSocketConstructor,
        RTCPeerConnection: (overrides.RTCPeerConnection ?? g.RTCPeerConnection) as PeerConnectionConstructor,
        MediaStream: (overrides.MediaStream ?? g.MediaStream) as MediaStreamConstructor | undefined,
        setTimeout: overrides.setTimeout ?? ((callback, ms) => setTimeout(callback, ms)),
        clearTimeout: overrides.clearTimeout ?? ((handle) => clearTimeout(handle as ReturnType<typeof setTimeout>)),
        random: overrides.random ?? Math.random,
    };
}

/**
 * A random (version 4) UUID. `crypto.randomUUID` exists only in secure contexts (https, localhost), so it is built
 * from `crypto.getRandomValues`, which exists everywhere.
 */
export function uuid4(): string {
    const bytes = new Uint8Array(16);
    const c = (g.crypto as Crypto | undefined);
    if (c && typeof c.getRandomValues === 'function') {
        c.getRandomValues(bytes);
    } else {
        for (let i = 0; i < 16; i++) {
            bytes[i] = Math.floor(Math.random() * 256);
        }
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export interface SipAddress {
    user: string;
    domain: string;
    /** `user@domain`, without scheme, domain in lower case: the form the gateway uses in its events. */
    aor: string;
}

/** Parses `user@domain`, `sip:user@domain` or `sips:user@domain`; throws a TypeError for anything else. */
export function parseAddress(address: string, what = 'account'): SipAddress {
    if (typeof address !== 'string') {
        throw new TypeError(`${what} must be a string like user@domain`);
    }
    const bare = address.trim().replace(/^sips?:/i, '');
    const at = bare.lastIndexOf('@');
    const user = bare.slice(0, at);
    const domain = bare.slice(at + 1).toLowerCase();
    if (at <= 0 || domain === '' || /[\s@]/.test(domain) || /\s/.test(user)) {
        throw new TypeError(`Invalid ${what} ${JSON.stringify(address)}: expected user@domain`);
    }
    return { user, domain, aor: `${user}@${domain}` };
}

export function errorMessage(error: unknown): string {
    return error instanceof Error ? error.message : String(error);
}

/**
 * A secret for `connection-keep`: 24 random bytes (192 bits) as base64url without padding (32 characters); null
 * where there is no `crypto.getRandomValues` (a secret is never made from `Math.random`).
 */
export function resumeToken(): string | null {
    const c = g.crypto as Crypto | undefined;
    if (!c || typeof c.getRandomValues !== 'function') {
        return null;
    }
    const bytes = c.getRandomValues(new Uint8Array(24));
    let binary = '';
    for (const byte of bytes) {
        binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Whether `value` has the form of a resume token (what the gateway takes: 22 to 128 base64url characters). */
export function isResumeToken(value: unknown): value is string {
    return typeof value === 'string' && /^[A-Za-z0-9_-]{22,128}$/.test(value);
}

/** Where a connection keeps its resume token: the part of the Web Storage interface it uses. */
export interface ResumeStorage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
}

/** The page's `sessionStorage` (one per tab, kept across reloads), or null where there is none or it is blocked. */
export function defaultResumeStorage(): ResumeStorage | null {
    try {
        const storage = g.sessionStorage as ResumeStorage | undefined;
        return storage && typeof storage.getItem === 'function' ? storage : null;
    } catch {
        return null; // sandboxed frames and some privacy modes throw on access
    }
}
