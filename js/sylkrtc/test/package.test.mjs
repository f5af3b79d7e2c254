import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as sylkrtc from '../dist/sylkrtc.js';
import { test } from './helpers.mjs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

test('the bundle exports the API', () => {
    for (const name of ['connect', 'Connection', 'Account', 'Call', 'TransferRequest', 'Emitter', 'SylkRTCError', 'md5']) {
        assert.equal(typeof sylkrtc[name], 'function', name);
    }
    assert.deepEqual(sylkrtc.DISPOSITION_STATES, ['delivered', 'displayed', 'failed', 'forbidden', 'error']);
    assert.deepEqual(sylkrtc.PROTOCOLS, ['sylkRTC-2', 'sylkRTC-1']);
    assert.ok(Object.isFrozen(sylkrtc.PROTOCOLS));
    assert.equal(sylkrtc.VERSION, pkg.version);
});

test('the request names are those of docs/api.md (the dash names)', () => {
    assert.deepEqual(sylkrtc.REQUESTS, {
        addAccount: 'account-add',
        removeAccount: 'account-remove',
        register: 'account-register',
        unregister: 'account-unregister',
        call: 'session-create',
        answer: 'session-answer',
        trickle: 'session-trickle',
        terminate: 'session-terminate',
        dtmfInfo: 'session-dtmf-info',
        update: 'session-update',
        hold: 'session-hold',
        unhold: 'session-unhold',
        transfer: 'session-transfer',
        transferReject: 'session-transfer-reject',
        sessionMessage: 'session-message',
        message: 'account-message',
        dispositionNotification: 'account-disposition-notification',
        deviceToken: 'account-devicetoken',
        fetchAddressBook: 'account-fetch-addressbook',
        updateAddressBook: 'account-update-addressbook',
        syncConversations: 'account-sync-conversations',
        markConversationRead: 'account-mark-conversation-read',
        removeMessage: 'account-remove-message',
        removeConversation: 'account-remove-conversation',
        lookupPublicKey: 'lookup-public-key',
        keep: 'connection-keep',
        resume: 'connection-resume',
    });
});

test('no runtime dependencies', () => {
    assert.equal(pkg.dependencies, undefined);
    assert.deepEqual(Object.keys(pkg.devDependencies).sort(), ['esbuild', 'typescript']);
    const bundle = readFileSync(new URL('../dist/sylkrtc.js', import.meta.url), 'utf8');
    assert.doesNotMatch(bundle, /^\s*import\s/m, 'the bundle imports nothing');
});

test('the emitter: on, once, off; a throwing listener is reported and does not stop the others', () => {
    class Thing extends sylkrtc.Emitter {
        fire(...args) {
            this.emit('x', ...args);
        }
    }
    const thing = new Thing();
    const seen = [];
    const a = (v) => seen.push(`a${v}`);
    const thrown = [];
    globalThis.reportError = (error) => thrown.push(error.message);
    try {
        thing.on('x', () => { throw new Error('listener bug'); });
        thing.on('x', a).once('x', (v) => seen.push(`once${v}`));
        thing.fire(1);
        thing.fire(2);
        thing.off('x', a);
        thing.fire(3);
    } finally {
        delete globalThis.reportError;
    }
    assert.deepEqual(seen, ['a1', 'once1', 'a2']);
    assert.deepEqual(thrown, ['listener bug', 'listener bug', 'listener bug']);
});

test('the package can be published and depended on: an ES module with its types, built before publishing', () => {
    assert.equal(pkg.private, undefined);
    assert.equal(pkg.type, 'module');
    assert.deepEqual(pkg.exports['.'], { types: './dist/sylkrtc.d.ts', default: './dist/sylkrtc.js' });
    assert.deepEqual(pkg.files, ['dist', 'README.md', 'API.md']);
    assert.equal(pkg.scripts.prepublishOnly, 'npm run build');
    assert.match(pkg.version, /^\d+\.\d+\.\d+$/);
});
