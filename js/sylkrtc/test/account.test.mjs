import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Account, SylkRTCError, md5 } from '../dist/sylkrtc.js';
import { flush } from './fakes.mjs';
import { addAccount, readyConnection, record, registeredAccount, rejection } from './helpers.mjs';

describe('addAccount', () => {
    test('sends account-add with the HA1, never the password', async () => {
        const ctx = await readyConnection();
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
        const ctx = await readyConnection();
        const account = await addAccount(ctx, { account: 'sip:Alice@Sylk.Test' });
        assert.equal(account.id, 'Alice@sylk.test');
        assert.equal(ctx.ws.sent[0].account, 'Alice@sylk.test');
        assert.equal(ctx.ws.sent[0].password, md5('Alice:sylk.test:alicepw'));
    });

    test('realm, ha1 and userAgent options', async () => {
        const ctx = await readyConnection({ userAgent: 'Connection UA' });
        await addAccount(ctx, { realm: 'other.realm' });
        await addAccount(ctx, { account: 'bob@sylk.test', password: 'ABCDEF0123456789ABCDEF0123456789', ha1: true,
            userAgent: 'Bob UA' });
        const [alice, bob] = ctx.ws.sent;
        assert.equal(alice.password, md5('alice:other.realm:alicepw'));
        assert.equal(alice.user_agent, 'Connection UA');
        assert.equal(bob.password, 'abcdef0123456789abcdef0123456789');
        assert.equal(bob.user_agent, 'Bob UA');
    });

    test('bad arguments are refused locally', async () => {
        const ctx = await readyConnection();
        await assert.rejects(ctx.conn.addAccount({ account: 'alice', password: 'x' }), TypeError);
        await assert.rejects(ctx.conn.addAccount({ account: 'alice@', password: 'x' }), TypeError);
        await assert.rejects(ctx.conn.addAccount({ account: 'alice@sylk.test', password: '' }), TypeError);
        await assert.rejects(ctx.conn.addAccount({ account: 'alice@sylk.test', password: 'plain', ha1: true }),
            /must be an HA1/);
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
        const ctx = await readyConnection();
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
        ctx.ws.registrationState('alice@sylk.test', 'unregistered');
        await flush();
        assert.deepEqual(log, [
            ['registrationStateChanged', 'registering', null, null],
            ['registrationStateChanged', 'registered', 'registering', null],
            ['registrationStateChanged', 'unregistered', 'registered', null],
        ]);
    });

    test('a failed registration carries the reason', async () => {
        const ctx = await readyConnection();
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
        const ctx = await readyConnection();
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
        const ctx = await readyConnection();
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
    test('incoming_session makes an incoming Call; missed_session a missedCall', async () => {
        const ctx = await readyConnection();
        const account = await registeredAccount(ctx);
        const log = record(account, 'incomingCall', 'missedCall');
        ctx.ws.receive({
            sylkrtc: 'account_event', account: 'alice@sylk.test', session: 'in-1', event: 'incoming_session',
            data: { originator: { uri: 'bob@sylk.test', display_name: 'Bob' }, sdp: 'v=0\r\ns=offer\r\n' },
        });
        ctx.ws.receive({
            sylkrtc: 'account_event', account: 'alice@sylk.test', session: 'in-1', event: 'incoming_session',
            data: { originator: { uri: 'bob@sylk.test' }, sdp: 'v=0\r\n' },
        }); // the same id again: ignored
        ctx.ws.receive({
            sylkrtc: 'account_event', account: 'alice@sylk.test', event: 'missed_session',
            data: { originator: { uri: 'carol@sylk.test' } },
        });
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
        assert.deepEqual(account.calls, [call]);
        assert.deepEqual(ctx.conn.calls, [call]);
        assert.deepEqual(log[1], ['missedCall', { originator: { uri: 'carol@sylk.test', displayName: null } }]);
    });
});
