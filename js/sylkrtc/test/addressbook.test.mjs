// Address book updates (account-update-addressbook): the addressbook-updated / addressbook-update-failed events that
// answer them, and the updates of the account's other devices, in both dialects.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { SylkRTCError } from '../dist/sylkrtc.js';
import { flush } from './fakes.mjs';
import { addAccount, eachDialect, readyConnection, record, rejection, test } from './helpers.mjs';

const BOB = { id: 'c1', name: 'Bob', uri: 'bob@sylk.test', tags: ['work'] };
const FRIENDS = { id: 'g1', name: 'Friends', contacts: ['c1'] };
const POLICY = { id: 'p1', uri: 'mallory@sylk.test', policy: 'block' };

eachDialect((protocol) => {
    const withAccount = async (options = {}) => {
        const ctx = await readyConnection({ server: [protocol], ...options });
        const account = await addAccount(ctx);
        return { ...ctx, account };
    };

    describe('updateAddressBook()', () => {
        test('sends account-update-addressbook and resolves with the entry of the addressbook-updated event after the ack',
            async () => {
                const { ws, account, clock } = await withAccount();
                const log = record(account, 'addressBookUpdated');
                const data = { ...BOB };
                const adding = account.updateAddressBook('contact', 'add', data);
                await flush();
                const [request] = ws.requests('account-update-addressbook');
                const { transaction, ...fields } = request;
                assert.equal(typeof transaction, 'string');
                assert.deepEqual(fields, { sylkrtc: 'account-update-addressbook', account: 'alice@sylk.test',
                    action: 'add', type: 'contact', data: BOB });
                let settled = false;
                adding.then(() => { settled = true; }, () => { settled = true; });
                ws.ack(request);
                await flush();
                assert.equal(settled, false, 'not on the ack');
                ws.addressbookUpdated(account.id, 'contact', 'add', { ...BOB, created: '2026-11-26T07:00:00Z' });
                const item = await adding;
                assert.deepEqual(item, { ...BOB, created: '2026-11-26T07:00:00Z' });
                assert.deepEqual(log, [['addressBookUpdated', { type: 'contact', action: 'add',
                    item: { ...BOB, created: '2026-11-26T07:00:00Z' } }]]);
                assert.notEqual(log[0][1].item, item, 'the event and the promise get copies of their own');
                assert.deepEqual(data, BOB, 'the data passed is left alone');
                assert.deepEqual(clock.pending(), [], 'no timer left');
            });

        test('groups and policies; delete with just the id; the event may come before the ack', async () => {
            const { ws, account, clock } = await withAccount();
            const group = account.updateAddressBook('group', 'update', FRIENDS);
            const policy = account.updateAddressBook('policy', 'add', POLICY);
            const removal = account.updateAddressBook('contact', 'delete', { id: 'c1' });
            await flush();
            assert.deepEqual(ws.requests('account-update-addressbook').map((r) => [r.type, r.action, r.data]), [
                ['group', 'update', FRIENDS], ['policy', 'add', POLICY], ['contact', 'delete', { id: 'c1' }],
            ]);
            ws.addressbookUpdated(account.id, 'contact', 'delete', { id: 'c1' }); // before the acks, out of order
            ws.addressbookUpdated(account.id, 'policy', 'add', POLICY);
            ws.ackAll();
            ws.addressbookUpdated(account.id, 'group', 'update', FRIENDS);
            assert.deepEqual(await group, FRIENDS);
            assert.deepEqual(await policy, POLICY);
            assert.deepEqual(await removal, { id: 'c1' });
            assert.deepEqual(clock.pending(), []);
        });

        test('an event answers only the update of its type, action and id; the same one twice is answered in order',
            async () => {
                const { ws, account } = await withAccount();
                const log = record(account, 'addressBookUpdated');
                const first = account.updateAddressBook('contact', 'update', { id: 'c1', name: 'Bob' });
                const second = account.updateAddressBook('contact', 'update', { id: 'c1', name: 'Robert' });
                await flush();
                ws.ackAll();
                await flush();
                let settled = 0;
                first.then(() => settled++);
                second.then(() => settled++);
                ws.addressbookUpdated(account.id, 'contact', 'add', { id: 'c1' }); // another action
                ws.addressbookUpdated(account.id, 'group', 'update', { id: 'c1' }); // another type
                ws.addressbookUpdated(account.id, 'contact', 'update', { id: 'c2' }); // another id
                ws.addressbookUpdated('bob@sylk.test', 'contact', 'update', { id: 'c1' }); // another account's
                await flush();
                assert.equal(settled, 0);
                assert.equal(log.length, 3, 'the others are still news');
                ws.addressbookUpdated(account.id, 'contact', 'update', { id: 'c1', name: 'Bob' });
                ws.addressbookUpdated(account.id, 'contact', 'update', { id: 'c1', name: 'Robert' });
                assert.deepEqual(await first, { id: 'c1', name: 'Bob' });
                assert.deepEqual(await second, { id: 'c1', name: 'Robert' });
            });

        test('rejects with the error of an addressbook-update-failed event for its type, action and id', async () => {
            const { ws, account, clock } = await withAccount();
            const log = record(account, 'addressBookUpdated');
            const adding = account.updateAddressBook('contact', 'add', BOB);
            const deleting = account.updateAddressBook('group', 'delete', { id: 'g1' });
            await flush();
            ws.ackAll();
            ws.addressbookUpdateFailed(account.id, 'contact', 'add', 'c2', 'Contact c2 exists'); // nobody asked
            ws.addressbookUpdateFailed(account.id, 'contact', 'update', 'c1', 'No such contact'); // another action
            ws.addressbookUpdateFailed(account.id, 'contact', 'add', 'c1', 'Contact c1 exists');
            const error = await rejection(adding);
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'account-update-addressbook');
            assert.equal(error.message, 'Contact c1 exists');
            ws.addressbookUpdateFailed(account.id, 'group', 'delete', 'g1', undefined); // no error text
            const deleteError = await rejection(deleting);
            assert.equal(deleteError.kind, 'server');
            assert.equal(deleteError.message, 'Address book update failed');
            assert.deepEqual(log, [], 'failures are not updates');
            assert.deepEqual(clock.pending(), []);
        });

        test('rejects with the gateway\'s error answer, or when no event comes within the request timeout', async () => {
            const { ws, account, clock } = await withAccount({ requestTimeout: 3000 });
            const refused = account.updateAddressBook('contact', 'add', BOB);
            await flush();
            ws.error(ws.requests('account-update-addressbook')[0], 'The address book of alice@sylk.test is unavailable');
            const error = await rejection(refused);
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'account-update-addressbook');
            assert.equal(error.message, 'The address book of alice@sylk.test is unavailable');
            const silent = rejection(account.updateAddressBook('contact', 'add', BOB));
            await flush();
            ws.ackAll();
            await clock.tick(2999);
            ws.addressbookUpdated(account.id, 'contact', 'update', BOB); // not its action
            ws.addressbookFetched(account.id, {}); // another event
            await clock.tick(1);
            const timeout = await silent;
            assert.equal(timeout.kind, 'timeout');
            assert.equal(timeout.request, 'account-update-addressbook');
            assert.match(timeout.message, /no address book update from the gateway within 3 s/);
            assert.deepEqual(clock.pending(), []);
            ws.addressbookUpdated(account.id, 'contact', 'add', BOB); // too late: only news
        });

        test('rejects when the account is removed, or the connection is lost, before the ack or after it', async () => {
            const first = await withAccount();
            const acked = rejection(first.account.updateAddressBook('contact', 'add', BOB));
            await flush();
            first.ws.ackAll();
            await flush();
            const unacked = rejection(first.account.updateAddressBook('group', 'add', FRIENDS));
            await flush();
            const removing = first.conn.removeAccount(first.account);
            await flush();
            first.ws.ackAll('account-remove');
            await removing;
            for (const error of [await acked, await unacked]) {
                assert.equal(error.kind, 'local');
                assert.equal(error.request, 'account-update-addressbook');
                assert.match(error.message, /was removed/);
            }
            first.ws.ackAll(); // (the unacked request's own timer ends with its ack)
            await flush();
            assert.deepEqual(first.clock.pending(), []);
            assert.equal((await rejection(first.account.updateAddressBook('contact', 'add', BOB))).kind, 'local');

            const second = await withAccount();
            const before = rejection(second.account.updateAddressBook('contact', 'add', BOB));
            await flush();
            second.ws.ackAll();
            await flush();
            const after = rejection(second.account.updateAddressBook('contact', 'delete', { id: 'c1' }));
            await flush();
            second.ws.drop(1006);
            for (const error of [await before, await after]) {
                assert.equal(error.kind, 'connection-lost');
                assert.equal(error.request, 'account-update-addressbook');
            }
            assert.equal(second.clock.pending().length, 1, 'only the reconnect timer');
        });

        test('bad arguments are TypeErrors, and nothing is sent', async () => {
            const { ws, account } = await withAccount();
            const bad = [
                ['contacts', 'add', BOB], ['', 'add', BOB], [undefined, 'add', BOB], ['Contact', 'add', BOB],
                ['contact', 'remove', BOB], ['contact', 'ADD', BOB], ['contact', null, BOB],
                ['contact', 'add'], ['contact', 'add', null], ['contact', 'add', 'c1'], ['contact', 'add', [BOB]],
                ['contact', 'add', {}], ['contact', 'add', { id: '' }], ['contact', 'add', { id: 7 }],
                ['contact', 'delete', { id: 'x'.repeat(257) }], ['contact', 'add', { name: 'Bob' }],
            ];
            for (const args of bad) {
                await assert.rejects(account.updateAddressBook(...args), TypeError, JSON.stringify(args));
            }
            assert.deepEqual(ws.sent.filter((m) => m.sylkrtc !== 'account-add'), []);
            const longest = account.updateAddressBook('contact', 'delete', { id: 'x'.repeat(256) });
            await flush();
            assert.equal(ws.requests('account-update-addressbook').length, 1, 'an id of 256 characters will do');
            ws.ackAll();
            ws.addressbookUpdated(account.id, 'contact', 'delete', { id: 'x'.repeat(256) });
            assert.deepEqual(await longest, { id: 'x'.repeat(256) });
        });
    });

    describe('addressBookUpdated events', () => {
        test('the updates of the account\'s other devices come as addressBookUpdated events', async () => {
            const { ws, account } = await withAccount();
            const log = record(account, 'addressBookUpdated');
            ws.addressbookUpdated(account.id, 'contact', 'add', BOB);
            ws.addressbookUpdated(account.id, 'group', 'update', FRIENDS);
            ws.addressbookUpdated(account.id, 'policy', 'delete', { id: 'p1' });
            await flush();
            assert.deepEqual(log, [
                ['addressBookUpdated', { type: 'contact', action: 'add', item: BOB }],
                ['addressBookUpdated', { type: 'group', action: 'update', item: FRIENDS }],
                ['addressBookUpdated', { type: 'policy', action: 'delete', item: { id: 'p1' } }],
            ]);
        });

        test('malformed events are ignored, and answer no update', async () => {
            const { ws, account } = await withAccount();
            const log = record(account, 'addressBookUpdated');
            const adding = account.updateAddressBook('contact', 'add', BOB);
            await flush();
            ws.ackAll();
            const event = (fields) => ws.accountEvent(account.id, 'addressbook-updated', fields);
            const failed = (fields) => ws.accountEvent(account.id, 'addressbook-update-failed', fields);
            event({ type: 'contact', action: 'add' }); // no item
            event({ type: 'contact', action: 'add', group: BOB }); // the item under another key
            event({ type: 'contact', action: 'add', contact: [BOB] });
            event({ type: 'contact', action: 'add', contact: JSON.stringify(BOB) });
            event({ type: 'contact', action: 'add', contact: { name: 'Bob' } }); // no id
            event({ type: 'contact', action: 'add', contact: { id: 1 } });
            event({ type: 'contact', action: 'add', contact: { id: '' } });
            event({ type: 'contacts', action: 'add', contacts: BOB });
            event({ type: 'contact', action: 'remove', contact: BOB });
            event({ action: 'add', contact: BOB });
            event({ type: 'contact', contact: BOB });
            failed({ type: 'contact', action: 'add', error: 'no id' });
            failed({ type: 'contact', action: 'add', error: 'bad id', id: 5 });
            failed({ type: 'contact', action: 'remove', error: 'bad action', id: 'c1' });
            failed({ action: 'add', error: 'no type', id: 'c1' });
            await flush();
            assert.deepEqual(log, []);
            ws.addressbookUpdated(account.id, 'contact', 'add', BOB);
            assert.deepEqual(await adding, BOB);
            assert.equal(log.length, 1);
        });
    });
});

describe('the wire shapes of the address book update events', () => {
    test('sylkRTC-2: flat account-event addressbook-updated and addressbook-update-failed', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-2'] });
        const account = await addAccount(ctx);
        const log = record(account, 'addressBookUpdated');
        const adding = account.updateAddressBook('contact', 'add', BOB);
        const deleting = account.updateAddressBook('group', 'delete', { id: 'g1' });
        await flush();
        const receive = (message) => ctx.ws.receive(message);
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook_updated',
            data: { type: 'contact', action: 'add', contact: BOB } });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook_updated', type: 'contact',
            action: 'add', contact: BOB });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook-updated',
            data: { type: 'contact', action: 'add', contact: BOB } });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook_update_failed',
            data: { type: 'group', action: 'delete', error: 'no', id: 'g1' } });
        ctx.ws.ackAll();
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook-updated', type: 'contact',
            action: 'add', contact: BOB });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook-update-failed', type: 'group',
            action: 'delete', error: 'No such group', id: 'g1' });
        assert.deepEqual(await adding, BOB);
        assert.equal((await rejection(deleting)).message, 'No such group');
        assert.deepEqual(log, [['addressBookUpdated', { type: 'contact', action: 'add', item: BOB }]]);
    });

    test('sylkRTC-1: account_event addressbook_updated and addressbook_update_failed with data', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-1'] });
        const account = await addAccount(ctx);
        const log = record(account, 'addressBookUpdated');
        const adding = account.updateAddressBook('policy', 'add', POLICY);
        const updating = account.updateAddressBook('contact', 'update', BOB);
        await flush();
        const receive = (message) => ctx.ws.receive(message);
        // sylkRTC-2 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook-updated', type: 'policy',
            action: 'add', policy: POLICY });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook-updated',
            data: { type: 'policy', action: 'add', policy: POLICY } });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook_updated', type: 'policy',
            action: 'add', policy: POLICY });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'addressbook-update-failed', type: 'contact',
            action: 'update', error: 'no', id: 'c1' });
        ctx.ws.ackAll();
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook_updated',
            data: { type: 'policy', action: 'add', policy: POLICY } });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'addressbook_update_failed',
            data: { type: 'contact', action: 'update', error: 'No such contact', id: 'c1' } });
        assert.deepEqual(await adding, POLICY);
        const error = await rejection(updating);
        assert.equal(error.kind, 'server');
        assert.equal(error.message, 'No such contact');
        assert.deepEqual(log, [['addressBookUpdated', { type: 'policy', action: 'add', item: POLICY }]]);
    });
});
