// Shared set-up for the tests: test() with its time bound; a connection on fakes, made ready; an added account.

import { describe, test as nodeTest } from 'node:test';

import { connect } from '../dist/sylkrtc.js';
import { FakeMediaStream, FakeRTCPeerConnection, FakeTrack, FakeWebSocket, PROTOCOLS, fakeEnv, flush } from './fakes.mjs';

export const URL = 'ws://gateway.test/webrtcgateway/ws';

/**
 * The bound on each test, so that one that hangs fails with its name instead of holding up the run. It is given
 * here, not with `node --test --test-timeout`, which Node 18 (Debian 12's nodejs) does not have.
 */
export const TEST_TIMEOUT_MS = 20_000;

/** node:test's test() with `{ timeout: TEST_TIMEOUT_MS }` unless its options give one: the tests import this one. */
export function test(name, options, fn) {
    return typeof options === 'function'
        ? nodeTest(name, { timeout: TEST_TIMEOUT_MS }, options)
        : nodeTest(name, { timeout: TEST_TIMEOUT_MS, ...options }, fn);
}

/**
 * A connection on fresh fakes, not opened by the "gateway" yet. `options` go to connect(), except `server`: the
 * subprotocols the fake gateway speaks (default both; ['sylkRTC-1'] for a gateway that only knows that one).
 * `resume` is false unless given: the suites about everything else send only their own requests, and a drop loses
 * everything as it did before connection-keep; keep.test.mjs is about resuming (on by default).
 */
export function newConnection(options = {}) {
    const { server, ...connectOptions } = options;
    const { clock, env } = fakeEnv();
    if (server !== undefined) {
        FakeWebSocket.serverProtocols = server;
    }
    const conn = connect(URL, { resume: false, ...connectOptions, env: { ...env, ...(options.env ?? {}) } });
    return { clock, env, conn, ws: FakeWebSocket.last };
}

/** A connection whose gateway sent `ready`. */
export async function readyConnection(options = {}) {
    const ctx = newConnection(options);
    ctx.ws.ready();
    await flush();
    if (ctx.conn.state !== 'ready') {
        throw new Error(`connection not ready: ${ctx.conn.state}`);
    }
    return ctx;
}

/** Adds an account (alice@sylk.test by default), acking the request. */
export async function addAccount(ctx, options = {}) {
    const promise = ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw', ...options });
    await flush();
    ctx.ws.ackAll('account-add');
    return promise;
}

/** Adds an account and registers it. */
export async function registeredAccount(ctx, options = {}) {
    const account = await addAccount(ctx, options);
    const registered = account.register();
    await flush();
    ctx.ws.ackAll('account-register');
    await registered;
    ctx.ws.registrationState(account.id, 'registering');
    ctx.ws.registrationState(account.id, 'registered');
    return account;
}

/** Records an emitter's events as [name, ...args] arrays. */
export function record(emitter, ...events) {
    const log = [];
    for (const event of events) {
        emitter.on(event, (...args) => log.push([event, ...args]));
    }
    return log;
}

/** Awaits a promise and returns its rejection (fails if it resolves). */
export async function rejection(promise) {
    try {
        await promise;
    } catch (error) {
        return error;
    }
    throw new Error('expected a rejection');
}

/**
 * Runs `suite(protocol)` once per dialect, in a describe() named after it. The suite's connections should pass
 * `server: [protocol]`: the fake gateway then speaks only that one, and the library falls back to it.
 */
export function eachDialect(suite) {
    for (const protocol of PROTOCOLS) {
        describe(protocol, () => suite(protocol));
    }
}

export const ANSWER = 'v=0\r\no=- 99 1 IN IP4 192.0.2.9\r\ns=remote answer\r\n';
export const OFFER = 'v=0\r\no=- 77 1 IN IP4 192.0.2.9\r\ns=remote offer\r\n';

/** A MediaStream of fake tracks: audio, and video if asked. */
export function mediaStream(video = false) {
    const tracks = [new FakeTrack('audio')];
    if (video) {
        tracks.push(new FakeTrack('video'));
    }
    return new FakeMediaStream(tracks);
}

/**
 * A ready connection to a gateway that speaks only `protocol`, an account, and an outgoing call to `uri` answered
 * (the answer applied: state accepted), with its requests acked. Returns the context with `account`, `call`, `pc`.
 */
export async function answeredOutgoingCall(protocol, { uri = 'bob@sylk.test', connection = {}, callOptions = {} } = {}) {
    const ctx = await readyConnection({ server: [protocol], ...connection });
    const account = await addAccount(ctx);
    const call = account.call(uri, { localStream: mediaStream(), ...callOptions });
    await flush();
    const pc = FakeRTCPeerConnection.last;
    ctx.ws.ackAll();
    ctx.ws.sessionState(call.id, 'progress');
    ctx.ws.sessionState(call.id, 'accepted', { sdp: ANSWER });
    await flush();
    if (call.state !== 'accepted') {
        throw new Error(`call not accepted: ${call.state}`);
    }
    return { ...ctx, account, call, pc };
}

/** The same for an incoming call from bob, answered by the library and accepted by the gateway. */
export async function answeredIncomingCall(protocol, options = {}) {
    const ctx = await readyConnection({ server: [protocol], ...(options.connection ?? {}) });
    const account = await registeredAccount(ctx);
    const calls = record(account, 'incomingCall');
    ctx.ws.incomingSession(account.id, 'in-1', { originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: OFFER });
    await flush();
    const call = calls[0][1];
    const answering = call.answer({ localStream: mediaStream() });
    await flush();
    ctx.ws.ackAll();
    await answering;
    ctx.ws.sessionState('in-1', 'accepted');
    await flush();
    return { ...ctx, account, call, pc: call.pc };
}
