// The account's messages (out of calls), disposition notifications, push tokens and address book, in both dialects.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { SylkRTCError } from '../dist/sylkrtc.js';
import { flush } from './fakes.mjs';
import { addAccount, eachDialect, readyConnection, record, registeredAccount, rejection, test } from './helpers.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

eachDialect((protocol) => {
    const ready = (options = {}) => readyConnection({ server: [protocol], ...options });
    const withAccount = async (options) => {
        const ctx = await ready(options);
        const account = await addAccount(ctx);
        return { ...ctx, account, log: record(account, 'message', 'messageStatus') };
    };

    describe('sendMessage()', () => {
        test('sends account-message and resolves with the message id; the outcome is a messageStatus', async () => {
            const { ws, account, log } = await withAccount();
            const sending = account.sendMessage('bob', 'Hello Bob');
            await flush();
            const [request] = ws.requests('account-message');
            assert.deepEqual(Object.keys(request).sort(), ['account', 'content', 'content_type', 'message_id', 'sylkrtc',
                'timestamp', 'transaction', 'uri']);
            assert.equal(request.account, 'alice@sylk.test');
            assert.equal(request.uri, 'bob@sylk.test');
            assert.equal(request.content, 'Hello Bob');
            assert.equal(request.content_type, 'text/plain');
            assert.match(request.message_id, UUID);
            assert.ok(Math.abs(Date.parse(request.timestamp) - Date.now()) < 60000);
            ws.ack(request);
            const id = await sending;
            assert.equal(id, request.message_id);
            ws.dispositionNotification({ account: account.id }, { message_id: id, message_timestamp: request.timestamp,
                state: 'accepted', code: 200, reason: 'OK' });
            ws.dispositionNotification({ account: account.id }, { message_id: id, state: 'displayed', code: 200,
                reason: 'OK' }); // the recipient's IMDN
            ws.dispositionNotification({ account: 'bob@sylk.test' }, { message_id: id, state: 'failed', reason: 'x' });
            await flush();
            assert.deepEqual(log, [
                ['messageStatus', { messageId: id, state: 'accepted', code: 200, reason: 'OK', timestamp: request.timestamp }],
                ['messageStatus', { messageId: id, state: 'displayed', code: 200, reason: 'OK', timestamp: null }],
            ]);
        });

        test('contentType, messageId and timestamp; a failure to deliver', async () => {
            const { ws, account, log } = await withAccount();
            const sending = account.sendMessage('sip:Bob@Example.COM', '{"a": 1}', { contentType: 'application/json',
                messageId: 'my-id', timestamp: '2026-11-26T07:00:00Z' });
            await flush();
            const [request] = ws.requests('account-message');
            assert.deepEqual([request.uri, request.content_type, request.message_id, request.timestamp],
                ['Bob@example.com', 'application/json', 'my-id', '2026-11-26T07:00:00Z']);
            ws.ack(request);
            assert.equal(await sending, 'my-id');
            ws.dispositionNotification({ account: account.id }, { message_id: 'my-id',
                message_timestamp: '2026-11-26T07:00:00Z', state: 'failed', code: 404, reason: 'Not Found' });
            await flush();
            assert.deepEqual(log, [['messageStatus', { messageId: 'my-id', state: 'failed', code: 404,
                reason: 'Not Found', timestamp: '2026-11-26T07:00:00Z' }]]);
        });

        test('bad arguments are refused locally; the gateway\'s refusal rejects', async () => {
            const { ws, account, conn } = await withAccount();
            await assert.rejects(account.sendMessage('bob@', 'x'), TypeError);
            await assert.rejects(account.sendMessage('bob', null), TypeError);
            await assert.rejects(account.sendMessage('bob', 'x'.repeat(16385)), TypeError);
            await assert.rejects(account.sendMessage('bob', 'x', { contentType: 'text' }), TypeError);
            await assert.rejects(account.sendMessage('bob', 'x', { messageId: '' }), TypeError);
            await assert.rejects(account.sendMessage('bob', 'x', { timestamp: new Date(NaN) }), TypeError);
            assert.deepEqual(ws.requests('account-message'), []);
            const sending = account.sendMessage('bob', 'x'.repeat(16384));
            await flush();
            ws.error(ws.requests('account-message')[0], "invalid field 'uri': not a SIP address");
            const error = await rejection(sending);
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'account-message');
            const removing = conn.removeAccount(account);
            await flush();
            ws.ackAll();
            await removing;
            assert.equal((await rejection(account.sendMessage('bob', 'x'))).kind, 'local');
        });
    });

    describe('incoming messages', () => {
        test('a message event of the account, with what the sender wants to hear back', async () => {
            const ctx = await ready();
            const account = await registeredAccount(ctx);
            const log = record(account, 'message', 'messageStatus');
            ctx.ws.message({ account: account.id }, { sender: { uri: 'bob@sylk.test', display_name: 'Bob' },
                timestamp: '2026-11-26T07:01:00Z', message_id: '5d0f', content_type: 'text/plain', content: 'Hi Alice',
                disposition_notification: ['positive-delivery', 'display'] });
            ctx.ws.message({ account: account.id }, { sender: { uri: 'carol@sylk.test' }, timestamp: 't',
                message_id: 'm2', content_type: 'text/plain', content: '' });
            ctx.ws.message({ account: 'bob@sylk.test' }, { sender: { uri: 'x@y' }, timestamp: 't', message_id: 'm3',
                content_type: 'text/plain', content: 'not for alice' });
            await flush();
            assert.deepEqual(log, [
                ['message', { sender: { uri: 'bob@sylk.test', displayName: 'Bob' }, content: 'Hi Alice',
                    contentType: 'text/plain', messageId: '5d0f', timestamp: '2026-11-26T07:01:00Z',
                    dispositionNotification: ['positive-delivery', 'display'] }],
                ['message', { sender: { uri: 'carol@sylk.test', displayName: null }, content: '',
                    contentType: 'text/plain', messageId: 'm2', timestamp: 't', dispositionNotification: [] }],
            ]);
        });

        test('sendDispositionNotification() sends account-disposition-notification', async () => {
            const { ws, account } = await withAccount();
            const sending = account.sendDispositionNotification('bob@sylk.test', '5d0f', 'displayed',
                '2026-11-26T07:01:00Z');
            await flush();
            const [request] = ws.requests('account-disposition-notification');
            assert.deepEqual(Object.keys(request).sort(), ['account', 'message_id', 'state', 'sylkrtc', 'timestamp',
                'transaction', 'uri']);
            assert.deepEqual([request.account, request.uri, request.message_id, request.state, request.timestamp],
                ['alice@sylk.test', 'bob@sylk.test', '5d0f', 'displayed', '2026-11-26T07:01:00Z']);
            ws.ack(request);
            await sending;
            const without = account.sendDispositionNotification('bob', 'm2', 'delivered');
            await flush();
            assert.ok(!('timestamp' in ws.requests('account-disposition-notification')[1]));
            ws.ackAll();
            await without;
            await assert.rejects(account.sendDispositionNotification('bob', 'm2', 'read'), TypeError);
            await assert.rejects(account.sendDispositionNotification('bob', '', 'delivered'), TypeError);
            await assert.rejects(account.sendDispositionNotification('bob', 'm2', 'delivered', 7), TypeError);
            assert.equal(ws.requests('account-disposition-notification').length, 2);
        });
    });

    describe('setDeviceToken()', () => {
        test('sends account-devicetoken with the fields given', async () => {
            const { ws, account } = await withAccount();
            const setting = account.setDeviceToken({ token: 'f00d', platform: 'android', device: '3f2a', silent: false,
                app: 'com.example.sylk' });
            await flush();
            const [request] = ws.requests('account-devicetoken');
            assert.deepEqual(Object.keys(request).sort(), ['account', 'app', 'device', 'platform', 'silent', 'sylkrtc',
                'token', 'transaction']);
            assert.deepEqual([request.account, request.token, request.platform, request.device, request.silent, request.app],
                ['alice@sylk.test', 'f00d', 'android', '3f2a', false, 'com.example.sylk']);
            ws.ack(request);
            await setting;
            const forgetting = account.setDeviceToken({ token: null, device: '3f2a' });
            await flush();
            assert.deepEqual(Object.keys(ws.requests('account-devicetoken')[1]).sort(),
                ['account', 'device', 'sylkrtc', 'transaction']);
            ws.ackAll();
            await forgetting;
            await assert.rejects(account.setDeviceToken(null), TypeError);
            await assert.rejects(account.setDeviceToken({ token: 42 }), TypeError);
            await assert.rejects(account.setDeviceToken({ token: 'a', silent: 'no' }), TypeError);
            assert.equal(ws.requests('account-devicetoken').length, 2);
        });
    });

    describe('fetchAddressBook()', () => {
        test('resolves with the address book of the addressbook-fetched event, which comes before the ack', async () => {
            const { ws, account, clock } = await withAccount();
            const fetching = account.fetchAddressBook();
            await flush();
            const [request] = ws.requests('account-fetch-addressbook');
            assert.deepEqual(Object.keys(request).sort(), ['account', 'sylkrtc', 'transaction']);
            const book = { contacts: [{ name: 'Bob', uri: 'bob@sylk.test' }] };
            ws.addressbookFetched(account.id, book); // as the gateway sends it: the event, then the ack
            ws.ack(request);
            assert.deepEqual(await fetching, book);
            assert.deepEqual(clock.pending(), [], 'no timer left');
        });

        test('or after the ack; two at once are answered in order', async () => {
            const { ws, account } = await withAccount();
            const first = account.fetchAddressBook();
            const second = account.fetchAddressBook();
            await flush();
            ws.ackAll();
            await flush();
            ws.addressbookFetched(account.id, { n: 1 });
            ws.addressbookFetched(account.id, {});
            ws.addressbookFetched(account.id, { n: 3 }); // nobody asked: ignored
            assert.deepEqual(await first, { n: 1 });
            assert.deepEqual(await second, {});
        });

        test('rejects with the gateway\'s error, or when nothing comes within the request timeout', async () => {
            const { ws, account, clock } = await withAccount({ requestTimeout: 3000 });
            const refused = account.fetchAddressBook();
            await flush();
            ws.error(ws.requests('account-fetch-addressbook')[0], 'The address book of alice@sylk.test is unavailable');
            const error = await rejection(refused);
            assert.equal(error.kind, 'server');
            assert.equal(error.message, 'The address book of alice@sylk.test is unavailable');
            const silent = rejection(account.fetchAddressBook());
            await flush();
            ws.ackAll();
            await clock.tick(2999);
            ws.addressbookFetched('bob@sylk.test', { n: 1 }); // another account's
            await clock.tick(1);
            const timeout = await silent;
            assert.equal(timeout.kind, 'timeout');
            assert.equal(timeout.request, 'account-fetch-addressbook');
            assert.deepEqual(clock.pending(), []);
        });

        test('rejects when the account is removed or the connection is lost', async () => {
            const { ws, account, conn } = await withAccount();
            const lost = rejection(account.fetchAddressBook());
            await flush();
            ws.drop(1006);
            assert.equal((await lost).kind, 'connection-lost');
            conn.close();
            assert.equal((await rejection(account.fetchAddressBook())).kind, 'local');
        });
    });
});

describe('the wire shapes of account message events', () => {
    test('sylkRTC-2: flat account-event messages with dash names', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-2'] });
        const account = await addAccount(ctx);
        const log = record(account, 'message', 'messageStatus');
        const fetching = account.fetchAddressBook();
        const send = (fields) => ctx.ws.receive({ sylkrtc: 'account-event', account: account.id, ...fields });
        send({ event: 'message', sender: { uri: 'bob@sylk.test', display_name: 'Bob' }, timestamp: 't',
            message_id: 'm1', content_type: 'text/plain', content: 'Hi' });
        send({ event: 'disposition-notification', message_id: 'm0', message_timestamp: 't0', state: 'accepted',
            code: 200, reason: 'OK' });
        send({ event: 'addressbook-fetched', addressbook: { a: 1 } });
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        ctx.ws.receive({ sylkrtc: 'account_event', account: account.id, event: 'message',
            data: { sender: { uri: 'x@y' }, content: 'no' } });
        send({ event: 'disposition_notification', message_id: 'm0', state: 'failed' });
        await flush();
        assert.deepEqual(log, [
            ['message', { sender: { uri: 'bob@sylk.test', displayName: 'Bob' }, content: 'Hi', contentType: 'text/plain',
                messageId: 'm1', timestamp: 't', dispositionNotification: [] }],
            ['messageStatus', { messageId: 'm0', state: 'accepted', code: 200, reason: 'OK', timestamp: 't0' }],
        ]);
        assert.deepEqual(await fetching, { a: 1 });
    });

    test('sylkRTC-1: account_event messages with data and underscore names', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-1'] });
        const account = await addAccount(ctx);
        const log = record(account, 'message', 'messageStatus');
        const fetching = account.fetchAddressBook();
        const send = (fields) => ctx.ws.receive({ sylkrtc: 'account_event', account: account.id, ...fields });
        send({ event: 'message', data: { sender: { uri: 'bob@sylk.test' }, timestamp: 't', message_id: 'm1',
            content_type: 'text/plain', content: 'Hi', disposition_notification: ['positive-delivery'] } });
        send({ event: 'disposition_notification', data: { message_id: 'm0', state: 'delivered', code: 200,
            reason: 'OK' } });
        send({ event: 'addressbook-fetched', data: { addressbook: { wrong: 'dialect' } } }); // ignored
        send({ event: 'addressbook_fetched', data: { addressbook: { a: 1 } } });
        ctx.ws.receive({ sylkrtc: 'account-event', account: account.id, event: 'message', sender: { uri: 'x@y' },
            content: 'no' });
        await flush();
        assert.deepEqual(log, [
            ['message', { sender: { uri: 'bob@sylk.test', displayName: null }, content: 'Hi', contentType: 'text/plain',
                messageId: 'm1', timestamp: 't', dispositionNotification: ['positive-delivery'] }],
            ['messageStatus', { messageId: 'm0', state: 'delivered', code: 200, reason: 'OK', timestamp: null }],
        ]);
        assert.deepEqual(await fetching, { a: 1 });
    });
});
