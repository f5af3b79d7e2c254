import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { Account, SylkRTCError, md5 } from '../dist/sylkrtc.js';
import { flush } from './fakes.mjs';
import { addAccount, eachDialect, readyConnection, record, registeredAccount, rejection, test } from './helpers.mjs';

eachDialect((protocol) => {
    const ready = (options = {}) => readyConnection({ server: [protocol], ...options });

    describe('addAccount', () => {
        test('sends account-add with the HA1, never the password', async () => {
            const ctx = await ready();
            assert.equal(ctx.conn.protocol, protocol);
            const account = await addAccount(ctx, { displayName: 'Alice' });
            assert.ok(account instanceof Account);
            assert.equal(account.id, 'alice@sylk.test');
            assert.equal(account.registrationState, null);
            const [request] = ctx.ws.sent;
            assert.deepEqual(Object.keys(request).sort(), ['account', 'display_name', 'password', 'sylkrtc', 'transaction']);
            assert.equal(request.sylkrtc, 'account-add');
            assert.equal(request.account, 'alice@sylk.test');
            assert.equal(request.password, '7f8510a933cb20c6d71877eb45211e81');
            assert.equal(request.display_name, 'Alice');
            assert.ok(!JSON.stringify(ctx.ws.sent).includes('alicepw'));
            assert.deepEqual(ctx.conn.accounts, [account]);
            assert.equal(ctx.conn.getAccount('sip:alice@SYLK.test'), account);
        });

        test('accepts sip: addresses and mixed case; the realm defaults to the lower-case domain', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx, { account: 'sip:Alice@Sylk.Test' });
            assert.equal(account.id, 'Alice@sylk.test');
            assert.equal(ctx.ws.sent[0].account, 'Alice@sylk.test');
            assert.equal(ctx.ws.sent[0].password, md5('Alice:sylk.test:alicepw'));
        });

        test('realm, ha1, userAgent and incomingHeaderPrefixes options', async () => {
            const ctx = await ready({ userAgent: 'Connection UA' });
            await addAccount(ctx, { realm: 'other.realm', incomingHeaderPrefixes: ['X-', 'P-Asserted'] });
            await addAccount(ctx, { account: 'bob@sylk.test', password: 'ABCDEF0123456789ABCDEF0123456789', ha1: true,
                userAgent: 'Bob UA', incomingHeaderPrefixes: [] });
            const [alice, bob] = ctx.ws.sent;
            assert.equal(alice.password, md5('alice:other.realm:alicepw'));
            assert.equal(alice.user_agent, 'Connection UA');
            assert.deepEqual(alice.incoming_header_prefixes, ['X-', 'P-Asserted']);
            assert.equal(bob.password, 'abcdef0123456789abcdef0123456789');
            assert.equal(bob.user_agent, 'Bob UA');
            assert.ok(!('incoming_header_prefixes' in bob), 'an empty list is not sent');
        });

        test('bad arguments are refused locally', async () => {
            const ctx = await ready();
            await assert.rejects(ctx.conn.addAccount({ account: 'alice', password: 'x' }), TypeError);
            await assert.rejects(ctx.conn.addAccount({ account: 'alice@', password: 'x' }), TypeError);
            await assert.rejects(ctx.conn.addAccount({ account: 'alice@sylk.test', password: '' }), TypeError);
            await assert.rejects(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'plain', ha1: true }),
                /must be an HA1/);
            await assert.rejects(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'x',
                incomingHeaderPrefixes: 'X-' }), TypeError);
            assert.deepEqual(ctx.ws.sent, []);
            await addAccount(ctx);
            const error = await rejection(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'alicepw' }));
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.message, 'Account alice@sylk.test already added');
            assert.equal(ctx.ws.sent.length, 1);
        });
    });

    describe('registration', () => {
        test('register() resolves on the ack; states come as events with their reasons', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const log = record(account, 'registrationStateChanged');
            const registering = account.register();
            await flush();
            const request = ctx.ws.sent.at(-1);
            assert.deepEqual(Object.keys(request).sort(), ['account', 'sylkrtc', 'transaction']);
            assert.equal(request.sylkrtc, 'account-register');
            assert.equal(request.account, 'alice@sylk.test');
            ctx.ws.ack(request);
            await registering;
            ctx.ws.registrationState('alice@sylk.test', 'registering');
            ctx.ws.registrationState('alice@sylk.test', 'registered');
            ctx.ws.registrationState('alice@sylk.test', 'registered'); // a repeated state is not an event
            ctx.ws.registrationState('bob@sylk.test', 'failed', '403 Forbidden'); // not ours
            await flush();
            assert.equal(account.registrationState, 'registered');
            const unregistering = account.unregister();
            await flush();
            assert.equal(ctx.ws.sent.at(-1).sylkrtc, 'account-unregister');
            ctx.ws.ackAll();
            await unregistering;
            if (protocol === 'sylkRTC-2') { // the ack ends it: the gateway, like SylkServer, says no more
                assert.equal(account.registrationState, 'unregistered');
            } else {
                assert.equal(account.registrationState, 'registered');
                ctx.ws.registrationState('alice@sylk.test', 'unregistered');
            }
            await flush();
            assert.deepEqual(log, [
                ['registrationStateChanged', 'registering', null, null],
                ['registrationStateChanged', 'registered', 'registering', null],
                ['registrationStateChanged', 'unregistered', 'registered', null],
            ]);
        });

        test('a failed registration carries the reason', async () => {
            const ctx = await ready();
            const account = await addAccount(ctx);
            const log = record(account, 'registrationStateChanged');
            const registering = account.register();
            await flush();
            ctx.ws.ackAll();
            await registering;
            ctx.ws.registrationState('alice@sylk.test', 'registering');
            ctx.ws.registrationState('alice@sylk.test', 'failed', '401 Unauthorized');
            await flush();
            assert.deepEqual(log.at(-1), ['registrationStateChanged', 'failed', 'registering', '401 Unauthorized']);
        });

        test('a refused register() rejects with the gateway error', async () => {
            const ctx = await ready();
            const account = await registeredAccount(ctx);
            const again = account.register();
            await flush();
            ctx.ws.error(ctx.ws.sent.at(-1), 'Cannot register account alice@sylk.test: it is registered');
            const error = await rejection(again);
            assert.equal(error.message, 'Cannot register account alice@sylk.test: it is registered');
            assert.equal(error.request, 'account-register');
        });
    });

    describe('removeAccount', () => {
        test('sends account-remove and forgets the account', async () => {
            const ctx = await ready();
            const account = await registeredAccount(ctx);
            const log = record(account, 'removed', 'registrationStateChanged');
            const removing = ctx.conn.removeAccount('alice@sylk.test');
            await flush();
            const request = ctx.ws.sent.at(-1);
            assert.equal(request.sylkrtc, 'account-remove');
            assert.equal(request.account, 'alice@sylk.test');
            assert.deepEqual(ctx.conn.accounts, [account], 'kept until the ack');
            ctx.ws.ack(request);
            await removing;
            assert.deepEqual(ctx.conn.accounts, []);
            assert.equal(account.active, false);
            assert.deepEqual(log, [
                ['registrationStateChanged', 'unregistered', 'registered', 'Account removed'],
                ['removed', 'Account removed'],
            ]);
            await assert.rejects(account.register(), /was removed/);
            await assert.rejects(ctx.conn.removeAccount(account), /Unknown account/);
        });
    });

    describe('incoming and missed calls', () => {
        test('incoming-session makes an incoming Call; missed-session a missedCall', async () => {
            const ctx = await ready();
            const account = await registeredAccount(ctx);
            const log = record(account, 'incomingCall', 'missedCall');
            ctx.ws.incomingSession('alice@sylk.test', 'in-1', {
                originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: 'v=0\r\ns=offer\r\n',
                call_id: 'a84b4c76e66710@192.0.2.4', headers: { 'X-Caller-Info': 'call from bob' },
            });
            ctx.ws.incomingSession('alice@sylk.test', 'in-1', { originator: { uri: 'bob@sylk.test' }, sdp: 'v=0\r\n' });
            // (the same id again: ignored)
            ctx.ws.missedSession('alice@sylk.test', { uri: 'carol@sylk.test' });
            await flush();
            assert.equal(log.length, 2);
            const call = log[0][1];
            assert.equal(call.id, 'in-1');
            assert.equal(call.direction, 'incoming');
            assert.equal(call.state, 'incoming');
            assert.equal(call.account, account);
            assert.deepEqual(call.remoteIdentity, { uri: 'bob@sylk.test', displayName: 'Bob' });
            assert.equal(call.remoteOffer, 'v=0\r\ns=offer\r\n');
            assert.equal(call.pc, null);
            if (protocol === 'sylkRTC-2') {
                assert.equal(call.callId, 'a84b4c76e66710@192.0.2.4');
                assert.deepEqual(call.remoteHeaders, { 'X-Caller-Info': 'call from bob' });
            } else {
                assert.equal(call.callId, null); // sylkRTC-1 has neither
                assert.deepEqual(call.remoteHeaders, {});
            }
            assert.deepEqual(account.calls, [call]);
            assert.deepEqual(ctx.conn.calls, [call]);
            assert.deepEqual(log[1], ['missedCall', { originator: { uri: 'carol@sylk.test', displayName: null } }]);
        });
    });
});

describe('the wire shapes of account events', () => {
    test('sylkRTC-2: flat account-event messages with dash names', async () => {
        const ctx = await readyConnection();
        assert.equal(ctx.conn.protocol, 'sylkRTC-2');
        const account = await addAccount(ctx);
        const log = record(account, 'registrationStateChanged', 'incomingCall', 'missedCall');
        const receive = (message) => ctx.ws.receive(message);
        receive({ sylkrtc: 'account-event', account: 'alice@sylk.test', event: 'registration-state', state: 'registering' });
        receive({ sylkrtc: 'account-event', account: 'alice@sylk.test', event: 'registration-state', state: 'failed',
            reason: '403 Forbidden' });
        receive({ sylkrtc: 'account-event', account: 'alice@sylk.test', event: 'incoming-session', session: 'in-9',
            originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: 'v=0\r\n', call_id: 'c1',
            headers: { 'X-A': '1' } });
        receive({ sylkrtc: 'account-event', account: 'alice@sylk.test', event: 'missed-session',
            originator: { uri: 'carol@sylk.test' } });
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account_event', account: 'alice@sylk.test', event: 'registration_state',
            data: { state: 'registered' } });
        await flush();
        assert.deepEqual(log.map((e) => e[0] === 'incomingCall' ? [e[0], e[1].id, e[1].callId, e[1].remoteHeaders] : e), [
            ['registrationStateChanged', 'registering', null, null],
            ['registrationStateChanged', 'failed', 'registering', '403 Forbidden'],
            ['incomingCall', 'in-9', 'c1', { 'X-A': '1' }],
            ['missedCall', { originator: { uri: 'carol@sylk.test', displayName: null } }],
        ]);
    });

    test('sylkRTC-1: account_event messages with data; the seed\'s incoming_call too', async () => {
        const ctx = await readyConnection({ protocols: ['sylkRTC-1'] });
        assert.equal(ctx.conn.protocol, 'sylkRTC-1');
        const account = await addAccount(ctx);
        const log = record(account, 'registrationStateChanged', 'incomingCall', 'missedCall');
        const receive = (message) => ctx.ws.receive(message);
        receive({ sylkrtc: 'account_event', account: 'alice@sylk.test', event: 'registration_state',
            data: { state: 'failed', reason: '401 Unauthorized' } });
        receive({ sylkrtc: 'account_event', account: 'alice@sylk.test', session: 'in-1', event: 'incoming_session',
            data: { originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: 'v=0\r\n' } });
        receive({ sylkrtc: 'account_event', account: 'alice@sylk.test', session: 'in-2', event: 'incoming_call',
            data: { caller: 'dave@sylk.test', sdp: 'v=0\r\n' } });
        receive({ sylkrtc: 'account_event', account: 'alice@sylk.test', event: 'missed_session',
            data: { originator: { uri: 'carol@sylk.test', display_name: 'Carol' } } });
        // sylkRTC-2 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account-event', account: 'alice@sylk.test', event: 'registration-state', state: 'registered' });
        await flush();
        assert.deepEqual(log.map((e) => e[0] === 'incomingCall' ? [e[0], e[1].id, e[1].remoteIdentity] : e), [
            ['registrationStateChanged', 'failed', null, '401 Unauthorized'],
            ['incomingCall', 'in-1', { uri: 'bob@sylk.test', displayName: 'Bob' }],
            ['incomingCall', 'in-2', { uri: 'dave@sylk.test', displayName: null }],
            ['missedCall', { originator: { uri: 'carol@sylk.test', displayName: 'Carol' } }],
        ]);
    });
});
