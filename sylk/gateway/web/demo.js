// The sylkgateway demo softphone: one connection, one account, one call at a time, on sylkrtc.js.
// Plain ES module, no build step, nothing loaded from elsewhere.
//
// For browser tests:
// - window.demo = {connection, account, call, incoming, localStream}: the current objects (call stays set after it
//   ended, until the next one);
// - data-testid on every control and display:
//     ws-url protocol ("" for sylkRTC-2 falling back to sylkRTC-1, or "sylkRTC-2"/"sylkRTC-1" only) connect
//     disconnect connection-state (idle|connecting|ready|disconnected|closed) connection-protocol (the dialect the
//     gateway selected, "sylkRTC-2" or "sylkRTC-1", empty while there is no socket) connection-detail
//     account password display-name register unregister registration-state (none|registering|registered|failed|
//     unregistered) registration-reason
//     dial-uri video call hangup call-state (idle|connecting|incoming|progress|proceeding|ringing|early-media|
//     accepted|established|terminated) call-remote call-reason ("(486 Busy Here)") incoming (the banner; hidden
//     when nothing rings) incoming-from answer reject dtmf-0..dtmf-9 dtmf-star dtmf-hash dtmf-A..dtmf-D
//     dtmf-info (send the keypad's tones as SIP INFO instead of RFC 4733) dtmf-sent dtmf-received
//     remote-audio remote-video local-video log clear-log
// - query parameters prefill the form: ?ws=URL&protocol=sylkRTC-1&account=A&password=P&name=N&uri=U&video=1&dtmfinfo=1
// Register (and Call) connect and add the account by themselves when needed.

import { connect } from './sylkrtc.js';

const $ = (id) => document.getElementById(id);

const demo = {
    /** The Connection, or null. */
    connection: null,
    /** The Account on it, or null. */
    account: null,
    /** The current call (outgoing, or answered), or null; the last one stays here after it ended. */
    call: null,
    /** The incoming call ringing in the banner, or null. */
    incoming: null,
    /** The local media of the current call (ours to stop). */
    localStream: null,
};
window.demo = demo;

let credentials = null; // what the account was added with, to notice changes

// ---------------------------------------------------------------------------------------------------------------
// log

function log(text, isError = false) {
    const item = document.createElement('li');
    const time = new Date().toISOString().slice(11, 23);
    item.textContent = `${time} ${text}`;
    if (isError) {
        item.className = 'error';
    }
    const list = $('log');
    list.append(item);
    while (list.children.length > 500) {
        list.firstElementChild.remove();
    }
    list.scrollTop = list.scrollHeight;
}

function logError(what, error) {
    log(`${what}: ${error && error.message ? error.message : error}`, true);
}

// ---------------------------------------------------------------------------------------------------------------
// state display

function isActive(call) {
    return call !== null && call.state !== 'terminated';
}

function render() {
    const connection = demo.connection;
    const connected = connection !== null && connection.state !== 'closed';
    $('connect').disabled = connected;
    $('disconnect').disabled = !connected;
    $('ws-url').disabled = connected;
    $('protocol').disabled = connected;
    $('connection-protocol').textContent = connection && connection.protocol ? connection.protocol : '';

    const account = demo.account && demo.account.active ? demo.account : null;
    const registration = account ? account.registrationState : null;
    $('registration-state').textContent = registration ?? 'none';
    const registered = registration === 'registering' || registration === 'registered';
    $('register').disabled = registered;
    $('unregister').disabled = !registered;

    const call = demo.call;
    $('call-state').textContent = call ? call.state : 'idle';
    $('call-remote').textContent = call ? `${call.direction === 'outgoing' ? 'to' : 'from'} ${describe(call.remoteIdentity)}` : '';
    $('call-reason').textContent = call && call.state === 'terminated' && call.reason ? `(${call.reason})` : '';
    $('call').disabled = isActive(call);
    $('hangup').disabled = !isActive(call);
    const media = call !== null && ['early-media', 'accepted', 'established'].includes(call.state);
    for (const key of document.querySelectorAll('#keypad button')) {
        key.disabled = !media;
    }

    const incoming = demo.incoming;
    $('incoming').hidden = !isActive(incoming);
    $('incoming-from').textContent = incoming ? describe(incoming.remoteIdentity) : '';
}

function describe(identity) {
    return identity.displayName ? `${identity.displayName} <${identity.uri}>` : identity.uri;
}

// ---------------------------------------------------------------------------------------------------------------
// connection

function defaultUrl() {
    if (location.host) {
        return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/webrtcgateway/ws`;
    }
    return 'ws://127.0.0.1:10888/webrtcgateway/ws';
}

/** The connection to the URL (and with the protocols) in the form, opened if needed. */
function openConnection() {
    const url = $('ws-url').value.trim();
    const protocols = $('protocol').value ? [$('protocol').value] : undefined;
    const wanted = (protocols ?? ['sylkRTC-2', 'sylkRTC-1']).join();
    if (demo.connection && demo.connection.state !== 'closed' && demo.connection.url === url
        && demo.connection.protocols.join() === wanted) {
        return demo.connection;
    }
    closeConnection();
    const connection = connect(url, protocols ? { protocols } : {});
    demo.connection = connection;
    log(`connecting to ${url} (offering ${connection.protocols.join(', ')})`);
    connection.on('stateChanged', (state, previous, details) => {
        if (connection !== demo.connection) {
            return;
        }
        let detail = '';
        if (details.code !== undefined) {
            detail = `closed with ${details.code}${details.reason ? ` ${details.reason}` : ''}`;
        } else if (details.reason) {
            detail = details.reason;
        }
        if (details.retryIn !== undefined) {
            detail += `${detail ? '; ' : ''}retrying in ${(details.retryIn / 1000).toFixed(1)} s`;
        }
        $('connection-state').textContent = state;
        $('connection-detail').textContent = detail;
        const dialect = state === 'ready' && connection.protocol ? ` speaking ${connection.protocol}` : '';
        log(`connection: ${previous} → ${state}${dialect}${detail ? ` (${detail})` : ''}`, state === 'disconnected');
        if (state === 'closed') {
            demo.account = null;
            credentials = null;
        }
        render();
    });
    connection.on('serverError', (message) => log(`gateway error: ${message}`, true));
    $('connection-state').textContent = connection.state;
    $('connection-detail').textContent = '';
    render();
    return connection;
}

function closeConnection() {
    const connection = demo.connection;
    if (connection && connection.state !== 'closed') {
        connection.close();
    }
    demo.account = null;
    credentials = null;
    render();
}

// ---------------------------------------------------------------------------------------------------------------
// account

/** The account of the form, added on the connection (replacing another one) if needed. */
async function ensureAccount() {
    const connection = openConnection();
    await connection.waitReady(20000);
    const address = $('account').value.trim();
    const password = $('password').value;
    const displayName = $('display-name').value.trim();
    const wanted = JSON.stringify([address, password, displayName]);
    if (demo.account && demo.account.active && credentials === wanted) {
        return demo.account;
    }
    if (demo.account && demo.account.active) {
        log(`removing account ${demo.account.id}`);
        await connection.removeAccount(demo.account);
    }
    demo.account = null;
    credentials = null;
    const stale = connection.getAccount(address);
    if (stale) {
        await connection.removeAccount(stale);
    }
    const account = await connection.addAccount({ account: address, password, displayName: displayName || undefined });
    log(`account ${account.id} added`);
    demo.account = account;
    credentials = wanted;
    account.on('registrationStateChanged', (state, previous, reason) => {
        log(`registration: ${previous ?? 'none'} → ${state ?? 'none'}${reason ? ` (${reason})` : ''}`, state === 'failed');
        if (account === demo.account) {
            $('registration-reason').textContent = reason ? `(${reason})` : '';
        }
        render();
    });
    account.on('incomingCall', onIncomingCall);
    account.on('missedCall', ({ originator }) => log(`missed call from ${describe(originator)}`));
    account.on('removed', (reason) => {
        log(`account ${account.id} removed (${reason})`);
        if (account === demo.account) {
            demo.account = null;
            credentials = null;
        }
        render();
    });
    render();
    return account;
}

async function register() {
    try {
        const account = await ensureAccount();
        $('registration-reason').textContent = '';
        await account.register();
    } catch (error) {
        logError('register', error);
    }
    render();
}

async function unregister() {
    try {
        if (demo.account) {
            await demo.account.unregister();
        }
    } catch (error) {
        logError('unregister', error);
    }
    render();
}

// ---------------------------------------------------------------------------------------------------------------
// calls

async function getLocalMedia(video) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        log('no getUserMedia here (is the page served over https or from localhost?): the call only receives', true);
        return null;
    }
    try {
        return await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (error) {
        if (video) {
            logError('getUserMedia(audio, video) failed; trying audio only', error);
            return getLocalMedia(false);
        }
        logError('getUserMedia(audio) failed; the call only receives', error);
        return null;
    }
}

function stopLocalMedia() {
    if (demo.localStream) {
        for (const track of demo.localStream.getTracks()) {
            track.stop();
        }
    }
    demo.localStream = null;
    $('local-video').srcObject = null;
}

/** Makes `call` the current call and shows it. */
function showCall(call, localStream) {
    if (isActive(demo.call) && demo.call !== call) {
        demo.call.terminate();
    }
    stopLocalMedia();
    demo.call = call;
    demo.localStream = localStream;
    $('dtmf-sent').textContent = '';
    $('dtmf-received').textContent = '';
    if (localStream && localStream.getVideoTracks().length > 0) {
        $('local-video').srcObject = localStream;
    }
    call.on('stateChanged', (state, previous, reason) => {
        const callId = state === 'accepted' && call.callId ? ` Call-ID ${call.callId}` : '';
        log(`call ${call.id.slice(0, 8)}: ${previous} → ${state}${reason ? ` (${reason})` : ''}${callId}`);
        if (state === 'terminated' && call === demo.call) {
            stopLocalMedia();
            $('remote-audio').srcObject = null;
            $('remote-video').srcObject = null;
        }
        render();
    });
    call.on('proceeding', (code) => log(`call ${call.id.slice(0, 8)}: provisional response ${code ?? ''}`));
    call.on('dtmf', ({ digit, method }) => {
        log(`call ${call.id.slice(0, 8)}: DTMF ${digit} received (${method})`);
        if (call === demo.call) {
            $('dtmf-received').textContent += digit;
        }
    });
    call.on('streamAdded', (stream) => {
        log(`call ${call.id.slice(0, 8)}: remote stream (${stream.getTracks().map((t) => t.kind).join(', ')})`);
        if (call !== demo.call) {
            return;
        }
        $('remote-audio').srcObject = stream;
        if (stream.getVideoTracks().length > 0) {
            $('remote-video').srcObject = stream;
        }
    });
    render();
}

async function placeCall() {
    const uri = $('dial-uri').value.trim();
    try {
        const account = await ensureAccount();
        const video = $('video').checked;
        const localStream = await getLocalMedia(video);
        const call = account.call(uri, { localStream });
        log(`calling ${call.remoteIdentity.uri}${video ? ' with video' : ''}`);
        showCall(call, localStream);
    } catch (error) {
        logError('call', error);
    }
}

function onIncomingCall(call) {
    log(`incoming call from ${describe(call.remoteIdentity)}`);
    if (isActive(demo.incoming)) {
        // one banner: the newer call waits until the first is answered, rejected or gone
        log(`(already ringing: ${describe(demo.incoming.remoteIdentity)})`);
    }
    demo.incoming = demo.incoming && isActive(demo.incoming) ? demo.incoming : call;
    call.on('stateChanged', (state, previous, reason) => {
        if (state === 'terminated' && call === demo.incoming) {
            log(`incoming call from ${describe(call.remoteIdentity)} ended (${reason})`);
            nextIncoming(call);
        }
        render();
    });
    render();
}

/** After the banner's call is gone (answered, rejected, ended), show another one still ringing, if any. */
function nextIncoming(gone) {
    const account = demo.account;
    demo.incoming = account ? account.calls.find((c) => c.state === 'incoming' && c !== gone) ?? null : null;
}

async function answer() {
    const call = demo.incoming;
    if (!isActive(call)) {
        return;
    }
    nextIncoming(call);
    const video = $('video').checked && /\r?\nm=video /.test(call.remoteOffer ?? '');
    const localStream = await getLocalMedia(video);
    showCall(call, localStream);
    try {
        await call.answer({ localStream });
    } catch (error) {
        logError('answer', error);
    }
    render();
}

async function reject() {
    const call = demo.incoming;
    if (!isActive(call)) {
        return;
    }
    try {
        await call.reject();
    } catch (error) {
        logError('reject', error);
    }
    render();
}

async function hangup() {
    if (isActive(demo.call)) {
        try {
            await demo.call.terminate();
        } catch (error) {
            logError('hang up', error);
        }
    }
    render();
}

async function sendTone(tone) {
    const call = demo.call;
    if (!call) {
        return;
    }
    const info = $('dtmf-info').checked;
    try {
        if (info) {
            await call.sendDtmfInfo(tone); // as SIP INFO, through the gateway (acks come in order)
            if (call === demo.call) {
                $('dtmf-sent').textContent += tone;
            }
        } else {
            call.sendDtmf(tone); // RFC 4733, in the audio
            $('dtmf-sent').textContent += tone;
        }
        log(`DTMF ${tone}${info ? ' (SIP INFO)' : ''}`);
    } catch (error) {
        logError('DTMF', error);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// wiring

function prefill() {
    const params = new URLSearchParams(location.search);
    $('ws-url').value = params.get('ws') ?? defaultUrl();
    $('protocol').value = ['sylkRTC-2', 'sylkRTC-1'].includes(params.get('protocol')) ? params.get('protocol') : '';
    $('dtmf-info').checked = params.get('dtmfinfo') === '1';
    $('account').value = params.get('account') ?? 'alice@sylk.test';
    $('password').value = params.get('password') ?? 'alicepw';
    $('display-name').value = params.get('name') ?? '';
    $('dial-uri').value = params.get('uri') ?? '';
    $('video').checked = params.get('video') === '1';
}

function init() {
    prefill();
    $('connection-state').textContent = 'idle';
    $('connection-form').addEventListener('submit', (event) => {
        event.preventDefault();
        try {
            openConnection();
        } catch (error) {
            logError('connect', error);
        }
    });
    $('disconnect').addEventListener('click', () => {
        closeConnection();
        log('disconnected');
    });
    $('account-form').addEventListener('submit', (event) => {
        event.preventDefault();
        register();
    });
    $('unregister').addEventListener('click', unregister);
    $('dial-form').addEventListener('submit', (event) => {
        event.preventDefault();
        placeCall();
    });
    $('hangup').addEventListener('click', hangup);
    $('answer').addEventListener('click', answer);
    $('reject').addEventListener('click', reject);
    for (const key of document.querySelectorAll('#keypad button')) {
        key.addEventListener('click', () => sendTone(key.dataset.tone));
    }
    $('clear-log').addEventListener('click', () => $('log').replaceChildren());
    window.addEventListener('pagehide', () => demo.connection && demo.connection.close());
    render();
    log('ready: press Register (or Call) to connect');
}

init();
