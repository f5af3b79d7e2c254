/**
 * Calls waiting for the event that answers their request. Such events (`addressbook-fetched`, `sync-conversations`,
 * `lookup-public-key-event`, `addressbook-updated` and `addressbook-update-failed`) carry no transaction: they answer
 * the oldest request waiting for one of their kind (and key, such as the uri of a public key lookup, or the type,
 * action and id of an address book update). A waiter waits from before its request is sent, so the event may
 * come before the request's ack as well as after it.
 */

import { SylkRTCError } from './errors.js';
import type { Environment } from './util.js';

interface Waiter<T> {
    key: string;
    resolve: (value: T) => void;
    reject: (error: Error) => void;
    timer: unknown;
}

/** @internal */
export class EventWaiters<T> {
    private _waiting: Array<Waiter<T>> = [];

    constructor(private readonly _env: Pick<Environment, 'setTimeout' | 'clearTimeout'>) {}

    /** How many are waiting. */
    get size(): number {
        return this._waiting.length;
    }

    /**
     * Waits for the next value under `key`: starts waiting, then calls `send` (the request). Rejects with the
     * request's error, or when no value came within `timeout` ms (a `timeout` SylkRTCError saying `what` did not come).
     */
    wait(request: string, what: string, timeout: number, send: () => Promise<void>, key = ''): Promise<T> {
        return new Promise<T>((resolve, reject) => {
            const waiter: Waiter<T> = {
                key,
                resolve,
                reject,
                // (set before the request's own timer: on a silent gateway this one speaks first, and says more)
                timer: this._env.setTimeout(() => {
                    if (this._drop(waiter)) {
                        reject(new SylkRTCError(`Request ${request} timed out: no ${what} from the gateway within `
                            + `${timeout / 1000} s`, 'timeout', request));
                    }
                }, timeout),
            };
            this._waiting.push(waiter);
            send().catch((error: unknown) => {
                if (this._drop(waiter)) {
                    reject(error as Error);
                }
            });
        });
    }

    /** Resolves the oldest waiter under `key` with `value`; false if none was waiting. */
    resolve(value: T, key = ''): boolean {
        const waiter = this._take(key);
        waiter?.resolve(value);
        return waiter !== undefined;
    }

    /** Rejects the oldest waiter under `key` with `error`; false if none was waiting. */
    reject(error: Error, key = ''): boolean {
        const waiter = this._take(key);
        waiter?.reject(error);
        return waiter !== undefined;
    }

    /** The oldest waiter under `key`, no longer waiting; undefined if none was. */
    private _take(key: string): Waiter<T> | undefined {
        const waiter = this._waiting.find((w) => w.key === key);
        return waiter !== undefined && this._drop(waiter) ? waiter : undefined;
    }

    /** Rejects every waiter with the error `error()` makes. */
    rejectAll(error: () => Error): void {
        for (const waiter of [...this._waiting]) {
            if (this._drop(waiter)) {
                waiter.reject(error());
            }
        }
    }

    private _drop(waiter: Waiter<T>): boolean {
        const index = this._waiting.indexOf(waiter);
        if (index < 0) {
            return false;
        }
        this._waiting.splice(index, 1);
        this._env.clearTimeout(waiter.timer);
        return true;
    }
}
