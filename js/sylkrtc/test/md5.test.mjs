import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { md5 } from '../dist/sylkrtc.js';
import { test } from './helpers.mjs';

test('RFC 1321 test suite', () => {
    const suite = {
        '': 'd41d8cd98f00b204e9800998ecf8427e',
        a: '0cc175b9c0f1b6a831c399e269772661',
        abc: '900150983cd24fb0d6963f7d28e17f72',
        'message digest': 'f96b697d7cb7938d525a2f31aaf161d0',
        abcdefghijklmnopqrstuvwxyz: 'c3fcd3d76192e4007dfb496cca67e13b',
        ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789: 'd174ab98d277d9f5a5611c2c9f419d9f',
        '12345678901234567890123456789012345678901234567890123456789012345678901234567890':
            '57edf4a22be3c955ac49da2e2107b67a',
    };
    for (const [input, digest] of Object.entries(suite)) {
        assert.equal(md5(input), digest, `md5(${JSON.stringify(input)})`);
    }
});

test('the HA1 of the demo account alice@sylk.test', () => {
    assert.equal(md5('alice:sylk.test:alicepw'), '7f8510a933cb20c6d71877eb45211e81');
});

test('agrees with node:crypto on every length around the block boundaries, and on UTF-8 text', () => {
    for (let length = 0; length <= 200; length++) {
        const text = 'x'.repeat(length);
        assert.equal(md5(text), createHash('md5').update(text, 'utf8').digest('hex'), `length ${length}`);
    }
    for (const text of ['Saúl:sip2sip.info:pässwörd', '日本語:例え.jp:パスワード', '😀'.repeat(40)]) {
        assert.equal(md5(text), createHash('md5').update(text, 'utf8').digest('hex'), text);
    }
    const long = 'sylkRTC-1 '.repeat(10000);
    assert.equal(md5(long), createHash('md5').update(long, 'utf8').digest('hex'));
});
