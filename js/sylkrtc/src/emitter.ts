/** A minimal typed event emitter: `on`, `once`, `off`. Used by Connection, Account and Call. */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => void;
export type EventMap = { [event: string]: Listener };

export class Emitter<Events extends EventMap> {
    private _listeners = new Map<keyof Events, Listener[]>();

    /** Calls `listener` every time `event` is emitted. Returns `this`, so calls can be chained. */
    on<E extends keyof Events>(event: E, listener: Events[E]): this {
        const list = this._listeners.get(event);
        if (list) {
            list.push(listener);
        } else {
            this._listeners.set(event, [listener]);
        }
        return this;
    }

    /** Calls `listener` the next time `event` is emitted, then forgets it. */
    once<E extends keyof Events>(event: E, listener: Events[E]): this {
        const wrapper = ((...args: unknown[]) => {
            this.off(event, wrapper as Events[E]);
            listener(...args);
        }) as Events[E];
        (wrapper as { _original?: Listener })._original = listener;
        return this.on(event, wrapper);
    }

    /** Removes `listener` (added with `on` or `once`); without a listener, removes all of the event's listeners. */
    off<E extends keyof Events>(event: E, listener?: Events[E]): this {
        if (listener === undefined) {
            this._listeners.delete(event);
            return this;
        }
        const list = this._listeners.get(event);
        if (list) {
            const index = list.findIndex(
                (l) => l === listener || (l as { _original?: Listener })._original === listener,
            );
            if (index >= 0) {
                list.splice(index, 1);
            }
            if (list.length === 0) {
                this._listeners.delete(event);
            }
        }
        return this;
    }

    /**
     * Calls the event's listeners in the order they were added. A listener that throws does not stop the others
     * nor the library: its exception is reported as an uncaught error (`reportError`, as browsers do for event
     * listeners), or re-thrown asynchronously where there is no `reportError`.
     */
    protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
        const list = this._listeners.get(event);
        if (!list) {
            return;
        }
        for (const listener of [...list]) {
            try {
                listener(...args);
            } catch (error) {
                reportListenerError(error);
            }
        }
    }
}

function reportListenerError(error: unknown): void {
    const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
    if (typeof report === 'function') {
        report(error);
    } else {
        queueMicrotask(() => {
            throw error;
        });
    }
}
