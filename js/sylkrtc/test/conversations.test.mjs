// The account's stored history (sync-conversations), read marks and removals, the sync events of its other
// devices, and public key lookups, in both dialects.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { SylkRTCError } from '../dist/sylkrtc.js';
import { flush } from './fakes.mjs';
import { addAccount, eachDialect, readyConnection, record, rejection, test } from './helpers.mjs';

/** A stored entry as the gateway sends it. */
const ENTRY = {
    contact: 'bob@sylk.test', timestamp: '2026-11-26T07:01:00Z', disposition: ['positive-delivery', 'display'],
    message_id: 'm1', content_type: 'text/plain', content: 'Hi Alice', direction: 'incoming', state: 'received',
};
/** The same, as the library gives it. */
const STORED = {
    contact: 'bob@sylk.test', timestamp: '2026-11-26T07:01:00Z', disposition: ['positive-delivery', 'display'],
    messageId: 'm1', contentType: 'text/plain', content: 'Hi Alice', direction: 'incoming', state: 'received',
};
const READ_MARK = {
    contact: 'bob@sylk.test', timestamp: '2026-11-26T07:02:00Z', disposition: [], message_id: 'r1',
    content_type: 'application/sylk-conversation-read', content: '{"contact": "bob@sylk.test"}', direction: '',
    state: null,
};

eachDialect((protocol) => {
    const ready = (options = {}) => readyConnection({ server: [protocol], ...options });
    const withAccount = async (options) => {
        const ctx = await ready(options);
        const account = await addAccount(ctx);
        return { ...ctx, account };
    };

    describe('syncConversations()', () => {
        test('sends account-sync-conversations and resolves with the sync-conversations event after the ack', async () => {
            const { ws, account, clock } = await withAccount();
            const syncing = account.syncConversations();
            await flush();
            const [request] = ws.requests('account-sync-conversations');
            assert.deepEqual(Object.keys(request).sort(), ['account', 'sylkrtc', 'transaction']);
            assert.equal(request.account, 'alice@sylk.test');
            ws.ack(request);
            await flush();
            ws.syncConversations(account.id, [ENTRY, READ_MARK]);
            assert.deepEqual(await syncing, [STORED, {
                contact: 'bob@sylk.test', timestamp: '2026-11-26T07:02:00Z', disposition: [], messageId: 'r1',
                contentType: 'application/sylk-conversation-read', content: '{"contact": "bob@sylk.test"}',
                direction: '', state: null,
            }]);
            assert.deepEqual(clock.pending(), [], 'no timer left');
        });

        test('messageId, since (a string or a Date) and limit are sent as given', async () => {
            const { ws, account } = await withAccount();
            const first = account.syncConversations({ messageId: 'm0', limit: 100 });
            const second = account.syncConversations({ since: '2026-11-26T07:00:00Z' });
            const third = account.syncConversations({ since: new Date(Date.UTC(2026, 10, 26, 7)), limit: 5000 });
            await flush();
            const requests = ws.requests('account-sync-conversations');
            assert.deepEqual(requests.map(({ transaction, ...fields }) => fields), [
                { sylkrtc: 'account-sync-conversations', account: 'alice@sylk.test', message_id: 'm0', limit: 100 },
                { sylkrtc: 'account-sync-conversations', account: 'alice@sylk.test', since: '2026-11-26T07:00:00Z' },
                { sylkrtc: 'account-sync-conversations', account: 'alice@sylk.test', since: '2026-11-26T07:00:00.000Z',
                    limit: 5000 },
            ]);
            ws.ackAll();
            await flush();
            // answered in order; one nobody asked for is ignored
            ws.syncConversations(account.id, [ENTRY]);
            ws.syncConversations(account.id, []);
            ws.syncConversations(account.id, [READ_MARK]);
            ws.syncConversations(account.id, [ENTRY]);
            assert.deepEqual(await first, [STORED]);
            assert.deepEqual(await second, []);
            assert.equal((await third)[0].messageId, 'r1');
        });

        test('the event may come before the ack', async () => {
            const { ws, account, clock } = await withAccount();
            const syncing = account.syncConversations({ limit: 1 });
            await flush();
            ws.syncConversations(account.id, [ENTRY]);
            ws.ackAll();
            assert.deepEqual(await syncing, [STORED]);
            assert.deepEqual(clock.pending(), []);
        });

        test('bad options are TypeErrors, and nothing is sent', async () => {
            const { ws, account } = await withAccount();
            for (const options of [null, 'm1', { messageId: '' }, { messageId: 7 }, { messageId: 'x'.repeat(257) },
                { since: '' }, { since: 1700000000 }, { since: new Date('nonsense') }, { limit: 0 }, { limit: 5001 },
                { limit: 1.5 }, { limit: '10' }]) {
                await assert.rejects(account.syncConversations(options), TypeError, JSON.stringify(options));
            }
            assert.deepEqual(ws.sent.filter((m) => m.sylkrtc !== 'account-add'), []);
        });

        test('rejects with the gateway\'s error, or when no event comes within the request timeout', async () => {
            const { ws, account, clock } = await withAccount({ requestTimeout: 3000 });
            const refused = account.syncConversations();
            await flush();
            ws.error(ws.requests('account-sync-conversations')[0],
                'Account alice@sylk.test must register before its conversations can be synced');
            const error = await rejection(refused);
            assert.ok(error instanceof SylkRTCError);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'account-sync-conversations');
            assert.equal(error.message, 'Account alice@sylk.test must register before its conversations can be synced');
            const silent = rejection(account.syncConversations());
            await flush();
            ws.ackAll();
            await clock.tick(2999);
            ws.syncConversations('bob@sylk.test', [ENTRY]); // another account's
            ws.addressbookFetched(account.id, {}); // another event
            await clock.tick(1);
            const timeout = await silent;
            assert.equal(timeout.kind, 'timeout');
            assert.equal(timeout.request, 'account-sync-conversations');
            assert.match(timeout.message, /no conversations from the gateway within 3 s/);
            assert.deepEqual(clock.pending(), []);
            ws.syncConversations(account.id, [ENTRY]); // too late: nobody waits
        });

        test('rejects when the account is removed, even after the ack', async () => {
            const { ws, account, conn, clock } = await withAccount();
            const syncing = rejection(account.syncConversations());
            const fetching = rejection(account.fetchAddressBook());
            await flush();
            ws.ackAll();
            await flush();
            const removing = conn.removeAccount(account);
            await flush();
            ws.ackAll('account-remove');
            await removing;
            const [error, bookError] = [await syncing, await fetching];
            assert.equal(error.kind, 'local');
            assert.equal(error.request, 'account-sync-conversations');
            assert.match(error.message, /was removed/);
            assert.equal(bookError.request, 'account-fetch-addressbook');
            assert.deepEqual(clock.pending(), []);
            assert.equal((await rejection(account.syncConversations())).kind, 'local');
        });

        test('rejects when the connection is lost, before the ack or after it', async () => {
            const { ws, account, clock } = await withAccount();
            const acked = rejection(account.syncConversations());
            await flush();
            ws.ackAll();
            await flush();
            const unanswered = rejection(account.syncConversations());
            await flush();
            ws.drop(1006);
            for (const error of [await acked, await unanswered]) {
                assert.equal(error.kind, 'connection-lost');
                assert.equal(error.request, 'account-sync-conversations');
            }
            assert.equal(clock.pending().length, 1, 'only the reconnect timer');
        });

        test('malformed events are ignored; malformed entries are left out', async () => {
            const { ws, account } = await withAccount();
            const syncing = account.syncConversations();
            await flush();
            ws.ackAll();
            ws.accountEvent(account.id, 'sync-conversations', { messages: 'none' });
            ws.accountEvent(account.id, 'sync-conversations', {});
            await flush();
            const { message_id: _, ...noId } = ENTRY;
            ws.syncConversations(account.id, [ENTRY, null, 'm2', noId, { ...ENTRY, content: { text: 'no' } },
                { ...ENTRY, contact: '' }, { ...ENTRY, timestamp: 7 }, { ...ENTRY, message_id: 'm3', disposition: 'x',
                    direction: null, state: 5 }]);
            assert.deepEqual(await syncing, [STORED, { ...STORED, messageId: 'm3', disposition: [], direction: '',
                state: null }]);
        });
    });

    describe('read marks and removals', () => {
        test('send their requests with the contact as user@domain and resolve on the ack', async () => {
            const { ws, account } = await withAccount();
            const done = [
                account.markConversationRead('bob'),
                account.removeMessage('sip:bob@Sylk.Test', 'm1'),
                account.removeConversation('carol@example.com'),
            ];
            await flush();
            assert.deepEqual(ws.unanswered().map(({ transaction, ...fields }) => fields), [
                { sylkrtc: 'account-mark-conversation-read', account: 'alice@sylk.test', contact: 'bob@sylk.test' },
                { sylkrtc: 'account-remove-message', account: 'alice@sylk.test', contact: 'bob@sylk.test',
                    message_id: 'm1' },
                { sylkrtc: 'account-remove-conversation', account: 'alice@sylk.test', contact: 'carol@example.com' },
            ]);
            let settled = 0;
            done.forEach((promise) => promise.then(() => settled++));
            await flush();
            assert.equal(settled, 0, 'not before the ack');
            ws.ackAll();
            assert.deepEqual(await Promise.all(done), [undefined, undefined, undefined]);
        });

        test('reject with the gateway\'s error; bad arguments are TypeErrors; a removed account refuses', async () => {
            const { ws, account, conn } = await withAccount();
            const marking = account.markConversationRead('bob@sylk.test');
            await flush();
            ws.error(ws.requests('account-mark-conversation-read')[0], 'This gateway keeps no message history');
            const error = await rejection(marking);
            assert.equal(error.kind, 'server');
            assert.equal(error.request, 'account-mark-conversation-read');
            assert.equal(error.message, 'This gateway keeps no message history');
            const sent = ws.sent.length;
            await assert.rejects(account.markConversationRead('bob@'), /Invalid contact/);
            await assert.rejects(account.removeConversation(42), TypeError);
            await assert.rejects(account.removeMessage('bob', ''), TypeError);
            await assert.rejects(account.removeMessage('bob', 'x'.repeat(257)), TypeError);
            await assert.rejects(account.removeMessage('bob'), TypeError);
            assert.equal(ws.sent.length, sent);
            conn.close();
            for (const promise of [account.markConversationRead('bob'), account.removeMessage('bob', 'm1'),
                account.removeConversation('bob')]) {
                assert.equal((await rejection(promise)).kind, 'local');
            }
        });
    });

    describe('sync events', () => {
        test('what the account\'s other devices did comes as sync events', async () => {
            const { ws, account } = await withAccount();
            const log = record(account, 'sync', 'message');
            ws.sync(account.id, 'message', 'add', { sylkrtc: 'account-message', account: 'alice@sylk.test',
                uri: 'bob@sylk.test', message_id: 'm7', content: 'Hello Bob', content_type: 'text/plain',
                timestamp: '2026-11-26T07:00:00Z' });
            ws.sync(account.id, 'message', 'remove', { contact: 'bob@sylk.test', message_id: 'm7', direction: 'outgoing' });
            ws.sync(account.id, 'conversation', 'read', { contact: 'bob@sylk.test' });
            ws.sync(account.id, 'conversation', 'remove', { contact: 'bob@sylk.test', timestamp: '2026-11-26T08:00:00Z' });
            ws.sync(account.id, 'message', 'add', { uri: 'bob@sylk.test', message_id: 'm8', content: 'x' }); // minimal
            await flush();
            assert.deepEqual(log, [
                ['sync', { type: 'message', action: 'add', content: { account: 'alice@sylk.test', uri: 'bob@sylk.test',
                    messageId: 'm7', content: 'Hello Bob', contentType: 'text/plain', timestamp: '2026-11-26T07:00:00Z' } }],
                ['sync', { type: 'message', action: 'remove', content: { contact: 'bob@sylk.test', messageId: 'm7',
                    direction: 'outgoing' } }],
                ['sync', { type: 'conversation', action: 'read', content: { contact: 'bob@sylk.test' } }],
                ['sync', { type: 'conversation', action: 'remove', content: { contact: 'bob@sylk.test',
                    timestamp: '2026-11-26T08:00:00Z' } }],
                ['sync', { type: 'message', action: 'add', content: { account: '', uri: 'bob@sylk.test', messageId: 'm8',
                    content: 'x', contentType: 'text/plain', timestamp: null } }],
            ]);
        });

        test('unknown or malformed sync events are ignored', async () => {
            const { ws, account } = await withAccount();
            const log = record(account, 'sync');
            ws.sync(account.id, 'message', 'read', { contact: 'bob@sylk.test' }); // no such action for messages
            ws.sync(account.id, 'conversation', 'add', { contact: 'bob@sylk.test' });
            ws.sync(account.id, 'call', 'remove', { contact: 'bob@sylk.test' });
            ws.sync(account.id, 'conversation', 'read', null);
            ws.sync(account.id, 'conversation', 'read', '{"contact": "bob@sylk.test"}'); // content as text
            ws.sync(account.id, 'conversation', 'read', { contact: '' });
            ws.sync(account.id, 'conversation', 'remove', {});
            ws.sync(account.id, 'message', 'remove', { contact: 'bob@sylk.test' }); // no message_id
            ws.sync(account.id, 'message', 'add', { uri: 'bob@sylk.test', content: 'no id' });
            ws.sync(account.id, 'message', 'add', { message_id: 'm1', content: 'no uri' });
            ws.accountEvent(account.id, 'sync', { action: 'read', content: { contact: 'bob@sylk.test' } });
            ws.sync('bob@sylk.test', 'conversation', 'read', { contact: 'alice@sylk.test' }); // another account's
            await flush();
            assert.deepEqual(log, []);
        });
    });

    describe('lookupPublicKey()', () => {
        const KEY = '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF...\n-----END PGP PUBLIC KEY BLOCK-----\n';

        test('sends lookup-public-key with only the uri and resolves with the key of the event after the ack',
            async () => {
                const { ws, conn, clock } = await ready();
                const looking = conn.lookupPublicKey('sip:bob@Sylk.Test');
                await flush();
                const [request] = ws.requests('lookup-public-key');
                assert.deepEqual(Object.keys(request).sort(), ['sylkrtc', 'transaction', 'uri']);
                assert.equal(request.uri, 'bob@sylk.test');
                ws.ack(request);
                await flush();
                ws.publicKey('bob@sylk.test', KEY);
                assert.equal(await looking, KEY);
                assert.deepEqual(clock.pending(), []);
            });

        test('several at once are answered by uri, in any order; null when there is none', async () => {
            const { ws, conn } = await ready();
            const bob = conn.lookupPublicKey('bob@sylk.test');
            const carol = conn.lookupPublicKey('carol@sylk.test');
            const bobAgain = conn.lookupPublicKey('bob@sylk.test');
            await flush();
            assert.deepEqual(ws.requests('lookup-public-key').map((r) => r.uri),
                ['bob@sylk.test', 'carol@sylk.test', 'bob@sylk.test']);
            ws.publicKey('carol@sylk.test', null); // (before the acks)
            ws.publicKey('dave@sylk.test', KEY); // nobody asked
            ws.ackAll();
            ws.publicKey('bob@sylk.test', KEY);
            ws.publicKey('bob@SYLK.test', 'newer key');
            assert.equal(await carol, null);
            assert.equal(await bob, KEY);
            assert.equal(await bobAgain, 'newer key');
        });

        test('rejects with the gateway\'s error, on timeout, when the connection closes; TypeError for a bad uri',
            async () => {
                const { ws, conn, clock } = await ready({ requestTimeout: 2000 });
                await assert.rejects(conn.lookupPublicKey('bob'), TypeError);
                await assert.rejects(conn.lookupPublicKey(null), TypeError);
                assert.deepEqual(ws.sent, []);
                const refused = conn.lookupPublicKey('bob@sylk.test');
                await flush();
                ws.error(ws.requests('lookup-public-key')[0], 'This gateway keeps no public keys');
                const error = await rejection(refused);
                assert.equal(error.kind, 'server');
                assert.equal(error.request, 'lookup-public-key');
                assert.equal(error.message, 'This gateway keeps no public keys');
                const silent = rejection(conn.lookupPublicKey('bob@sylk.test'));
                await flush();
                ws.ackAll();
                ws.publicKey('carol@sylk.test', KEY);
                await clock.tick(2000);
                const timeout = await silent;
                assert.equal(timeout.kind, 'timeout');
                assert.equal(timeout.request, 'lookup-public-key');
                assert.match(timeout.message, /no public key from the gateway within 2 s/);
                assert.deepEqual(clock.pending(), []);
                const closing = rejection(conn.lookupPublicKey('bob@sylk.test'));
                await flush();
                ws.ackAll();
                conn.close();
                const closed = await closing;
                assert.equal(closed.kind, 'connection-lost');
                assert.equal(closed.request, 'lookup-public-key');
                assert.equal((await rejection(conn.lookupPublicKey('bob@sylk.test'))).kind, 'not-ready');
            });

        test('a malformed answer is ignored', async () => {
            const { ws, conn } = await ready();
            const looking = conn.lookupPublicKey('bob@sylk.test');
            await flush();
            ws.ackAll();
            ws.publicKey('bob@sylk.test', 42);
            ws.publicKey('bob@sylk.test', { key: KEY });
            ws.publicKey('', KEY);
            ws.publicKey(undefined, KEY);
            ws.publicKey('not an address', KEY);
            ws.publicKey('bob@sylk.test', undefined); // no public_key at all: none
            assert.equal(await looking, null);
        });
    });
});

describe('the wire shapes of the messaging events', () => {
    test('sylkRTC-2: flat account-event sync and sync-conversations; lookup-public-key-event', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-2'] });
        const account = await addAccount(ctx);
        const log = record(account, 'sync');
        const syncing = account.syncConversations();
        const looking = ctx.conn.lookupPublicKey('bob@sylk.test');
        await flush();
        const receive = (message) => ctx.ws.receive(message);
        // sylkRTC-1 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account_event', account: account.id, event: 'sync_conversations', data: { messages: [] } });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'sync_conversations', messages: [] });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'sync',
            data: { type: 'conversation', action: 'read', content: { contact: 'x@y' } } });
        receive({ sylkrtc: 'event', event: 'lookup_public_key', data: { uri: 'bob@sylk.test', public_key: 'no' } });
        ctx.ws.ackAll();
        receive({ sylkrtc: 'account-event', account: account.id, event: 'sync-conversations', messages: [ENTRY] });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'sync', type: 'conversation', action: 'read',
            content: { contact: 'bob@sylk.test' } });
        receive({ sylkrtc: 'lookup-public-key-event', uri: 'bob@sylk.test', public_key: 'K' });
        await flush();
        assert.deepEqual(await syncing, [STORED]);
        assert.equal(await looking, 'K');
        assert.deepEqual(log, [['sync', { type: 'conversation', action: 'read', content: { contact: 'bob@sylk.test' } }]]);
    });

    test('sylkRTC-1: account_event sync and sync_conversations with data; event lookup_public_key', async () => {
        const ctx = await readyConnection({ server: ['sylkRTC-1'] });
        const account = await addAccount(ctx);
        const log = record(account, 'sync');
        const syncing = account.syncConversations();
        const looking = ctx.conn.lookupPublicKey('bob@sylk.test');
        await flush();
        const receive = (message) => ctx.ws.receive(message);
        // sylkRTC-2 shapes are not this socket's dialect: ignored
        receive({ sylkrtc: 'account-event', account: account.id, event: 'sync-conversations', messages: [] });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'sync-conversations', data: { messages: [] } });
        receive({ sylkrtc: 'account-event', account: account.id, event: 'sync', type: 'conversation', action: 'read',
            content: { contact: 'x@y' } });
        receive({ sylkrtc: 'lookup-public-key-event', uri: 'bob@sylk.test', public_key: 'no' });
        receive({ sylkrtc: 'event', event: 'lookup-public-key', data: { uri: 'bob@sylk.test', public_key: 'no' } });
        ctx.ws.ackAll();
        receive({ sylkrtc: 'account_event', account: account.id, event: 'sync_conversations', data: { messages: [ENTRY] } });
        receive({ sylkrtc: 'account_event', account: account.id, event: 'sync',
            data: { type: 'message', action: 'remove', content: { contact: 'bob@sylk.test', message_id: 'm1',
                direction: 'incoming' } } });
        receive({ sylkrtc: 'event', event: 'lookup_public_key', data: { uri: 'bob@sylk.test', public_key: null } });
        await flush();
        assert.deepEqual(await syncing, [STORED]);
        assert.equal(await looking, null);
        assert.deepEqual(log, [['sync', { type: 'message', action: 'remove', content: { contact: 'bob@sylk.test',
            messageId: 'm1', direction: 'incoming' } }]]);
    });
});
