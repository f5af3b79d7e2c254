// The sylkgateway demo softphone: one connection, one account, one call at a time, on sylkrtc.js.
// Plain ES module, no build step, nothing loaded from elsewhere.
//
// For browser tests:
// - window.demo = {connection, account, call, incoming, localStream}: the current objects (call stays set after it
//   ended, until the next one);
// - data-testid on every control and display:
//     ws-url protocol ("" for sylkRTC-2 falling back to sylkRTC-1, or "sylkRTC-2"/"sylkRTC-1" only) connect
//     disconnect connection-state (idle|connecting|ready|disconnected|reconnecting|closed: reconnecting while the
//     socket is down and the gateway keeps the account and the call, whose state and controls stay as they were)
//     connection-protocol (the dialect the gateway selected, "sylkRTC-2" or "sylkRTC-1", empty while there is no
//     socket) connection-detail
//     account password display-name register unregister registration-state (none|registering|registered|failed|
//     unregistered) registration-reason
//     dial-uri video call hangup call-state (idle|connecting|incoming|progress|proceeding|ringing|early-media|
//     accepted|established|terminated) call-remote call-reason ("(486 Busy Here)") incoming (the banner; hidden
//     when nothing rings) incoming-kind ("call" or "video call") incoming-from answer ("Answer", or "Answer with
//     video" when the offer has video) answer-audio (shown only then: answers without the camera) incoming-note
//     reject dtmf-0..dtmf-9 dtmf-star dtmf-hash dtmf-A..dtmf-D dtmf-info (send the keypad's tones as SIP INFO
//     instead of RFC 4733) dtmf-sent dtmf-received dtmf-note
//     hold (Hold/Resume) hold-state ("" or "on hold", "held by the far end", both) transfer-uri transfer
//     transfer-state ("progress 100 Trying", "completed 200 OK", ...) transfer-request (the banner of the far end's
//     transfer request; hidden when none) transfer-request-from transfer-request-to transfer-accept transfer-reject
//     message-uri message-in-call message-text send-message messages (a list: one <li> per message, class "in" or
//     "out", data-message-id; outgoing ones show their status in a message-status span: "sending", "sent",
//     "accepted 200 OK", "failed 404 Not Found")
//     remote-audio remote-video local-video remote-video-box local-video-box (hidden unless their stream has video)
//     log clear-log
// - window.demo.events: every call-control event of the calls and the account, as [name, ...details] (hold,
//   updateReceived, updated, updateFailed, transfer, transferRequest, message, messageStatus, sync)
// - once registered, the account's message history is shown in `messages` (items of class "history"), and what
//   its other devices send shows as "to X (another device):"
// - query parameters prefill the form: ?ws=URL&protocol=sylkRTC-1&account=A&name=N&uri=U&video=1&dtmfinfo=1
//   &to=MESSAGE-URI&transfer=TRANSFER-URI. Never the password, and `ws` only on the page's own origin: a link
//   must not be able to make the page send someone's credentials to another server. Without ?account= the account
//   is the last one this window added (sessionStorage), or none.
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
    /** The far end's transfer request in the banner, or null. */
    transferRequest: null,
    /** Call-control events, for tests: [name, details]. */
    events: [],
};
window.demo = demo;

let credentials = null; // what the account was added with, to notice changes

// The account is remembered per window (sessionStorage is per tab), not per browser: a reload keeps it, while a
// second window starts empty instead of registering the first one's account again. Storage may be disabled, and
// then throws: the field just starts empty.
const ACCOUNT_KEY = 'sylkgateway-demo-account';

function rememberedAccount() {
    try {
        return sessionStorage.getItem(ACCOUNT_KEY) ?? '';
    } catch {
        return '';
    }
}

function rememberAccount(address) {
    try {
        sessionStorage.setItem(ACCOUNT_KEY, address);
    } catch {
        // storage disabled: nothing to remember it in
    }
}

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
    const inCall = call !== null && ['accepted', 'established'].includes(call.state);
    $('hold').disabled = !inCall;
    $('hold').textContent = call && call.onHold ? 'Resume' : 'Hold';
    $('transfer').disabled = !inCall;
    const held = [];
    if (call && call.state !== 'terminated') {
        if (call.onHold) {
            held.push('on hold');
        }
        if (call.remoteHold) {
            held.push('held by the far end');
        }
    }
    $('hold-state').textContent = held.join(', ');
    const request = demo.transferRequest;
    const pending = request !== null && request.state === 'pending' && request.call.state !== 'terminated';
    $('transfer-request').hidden = !pending;
    $('transfer-request-from').textContent = pending ? describe(request.call.remoteIdentity) : '';
    $('transfer-request-to').textContent = pending ? request.referTo : '';

    const incoming = demo.incoming;
    const video = isActive(incoming) && offersVideo(incoming);
    $('incoming').hidden = !isActive(incoming);
    $('incoming-from').textContent = incoming ? describe(incoming.remoteIdentity) : '';
    $('incoming-kind').textContent = video ? 'video call' : 'call';
    $('answer').textContent = video ? 'Answer with video' : 'Answer';
    $('answer-audio').hidden = !video;
    $('incoming-note').hidden = !video;
}

/** Whether an incoming call's offer has video (an m=video line with a port: port 0 is a declined stream). */
function offersVideo(call) {
    return /\nm=video [1-9]/.test(call.remoteOffer ?? '');
}

/** Shows `stream` in a video box only if it has video: an audio call shows no empty boxes. */
function showVideo(which, stream) {
    const video = stream !== null && stream.getVideoTracks().length > 0;
    $(`${which}-video`).srcObject = video ? stream : null;
    $(`${which}-video-box`).hidden = !video;
}

function describe(identity) {
    return identity.displayName ? `${identity.displayName} <${identity.uri}>` : identity.uri;
}

// ---------------------------------------------------------------------------------------------------------------
// connection

function defaultUrl() {
    if (location.host) {
        // `ws` beside the page: /webrtcgateway/ws, or under whatever path a host web server (SylkServer) mounts it
        const url = new URL('ws', location.href);
        url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
        return url.href;
    }
    return 'ws://127.0.0.1:10888/webrtcgateway/ws';
}

/** `url` if it is a WebSocket URL on the page's own origin (ws: for http:, wss: for https:, same host and port),
 *  else null. */
function sameOriginWsUrl(url) {
    let parsed;
    try {
        parsed = new URL(url);
    } catch {
        return null;
    }
    const pageScheme = { 'ws:': 'http:', 'wss:': 'https:' }[parsed.protocol];
    return pageScheme === location.protocol && parsed.host === location.host ? parsed.href : null;
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
        if (details.code === 4409) {
            detail += ': taken over by another tab or window';
        }
        if (details.resuming) {
            detail += `${detail ? '; ' : ''}the gateway keeps the account and the call`;
        }
        if (details.retryIn !== undefined) {
            detail += `${detail ? '; ' : ''}retrying in ${(details.retryIn / 1000).toFixed(1)} s`;
        }
        const shown = details.resuming ? 'reconnecting' : state;
        $('connection-state').textContent = shown;
        $('connection-state').classList.toggle('reconnecting', shown === 'reconnecting');
        $('connection-detail').textContent = detail;
        const dialect = state === 'ready' && connection.protocol ? ` speaking ${connection.protocol}` : '';
        log(`connection: ${previous} → ${state}${dialect}${detail ? ` (${detail})` : ''}`,
            state === 'disconnected' && !details.resuming);
        if (state === 'closed') {
            demo.account = null;
            credentials = null;
        }
        render();
    });
    connection.on('serverError', (message) => log(`gateway error: ${message}`, true));
    connection.on('resumed', ({ missed }) => {
        log(`connection resumed: the account and the call go on${missed ? ` (${missed} events missed)` : ''}`);
    });
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
    rememberAccount(address);
    let historyShown = false;
    account.on('registrationStateChanged', (state, previous, reason) => {
        log(`registration: ${previous ?? 'none'} → ${state ?? 'none'}${reason ? ` (${reason})` : ''}`, state === 'failed');
        if (account === demo.account) {
            $('registration-reason').textContent = reason ? `(${reason})` : '';
        }
        if (state === 'registered' && !historyShown) {
            historyShown = true;
            showHistory(account);
        }
        render();
    });
    account.on('sync', (sync) => showSync(sync));
    account.on('incomingCall', onIncomingCall);
    account.on('missedCall', ({ originator }) => log(`missed call from ${describe(originator)}`));
    account.on('message', (message) => showReceivedMessage(message, null));
    account.on('messageStatus', (status) => showMessageStatus(status, null));
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
    showVideo('local', null);
}

/** Makes `call` the current call and shows it (ending the current one, unless `keepPrevious`). */
function showCall(call, localStream, keepPrevious = false) {
    if (isActive(demo.call) && demo.call !== call && !keepPrevious) {
        demo.call.terminate();
    }
    stopLocalMedia();
    demo.call = call;
    demo.localStream = localStream;
    $('dtmf-sent').textContent = '';
    $('dtmf-received').textContent = '';
    $('transfer-state').textContent = '';
    showVideo('local', localStream);
    call.on('stateChanged', (state, previous, reason) => {
        const callId = state === 'accepted' && call.callId ? ` Call-ID ${call.callId}` : '';
        log(`call ${call.id.slice(0, 8)}: ${previous} → ${state}${reason ? ` (${reason})` : ''}${callId}`);
        if (state === 'terminated' && call === demo.call) {
            stopLocalMedia();
            $('remote-audio').srcObject = null;
            showVideo('remote', null);
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
    const short = call.id.slice(0, 8);
    call.on('hold', ({ held, originator }) => {
        note('hold', { held, originator });
        log(`call ${short}: ${held ? 'on hold' : 'off hold'} (${originator === 'local' ? 'by us' : 'by the far end'})`);
        render();
    });
    call.on('updateReceived', () => {
        note('updateReceived', {});
        log(`call ${short}: the far end sent a re-INVITE; answering it`);
    });
    call.on('updated', ({ originator }) => {
        note('updated', { originator });
        log(`call ${short}: ${originator === 'local' ? 'our' : "the far end's"} re-INVITE went through`);
        render();
    });
    call.on('updateFailed', ({ originator, reason }) => {
        note('updateFailed', { originator, reason });
        log(`call ${short}: ${originator === 'local' ? 'our' : "the far end's"} re-INVITE failed (${reason})`, true);
        render();
    });
    call.on('transfer', ({ state, code, reason }) => {
        note('transfer', { state, code, reason });
        const text = [state, code, reason].filter((part) => part !== null && part !== undefined).join(' ');
        log(`call ${short}: transfer ${text}`, state === 'failed');
        if (call === demo.call) {
            $('transfer-state').textContent = text;
        }
    });
    call.on('transferRequest', (request) => {
        note('transferRequest', { referTo: request.referTo, referredBy: request.referredBy, replaces: request.replaces });
        log(`call ${short}: ${request.referredBy ?? 'the far end'} asks to transfer us to ${request.referTo}`);
        demo.transferRequest = request;
        render();
    });
    call.on('message', (message) => showReceivedMessage(message, call));
    call.on('messageStatus', (status) => showMessageStatus(status, call));
    call.on('streamAdded', (stream) => {
        log(`call ${call.id.slice(0, 8)}: remote stream (${stream.getTracks().map((t) => t.kind).join(', ')})`);
        if (call !== demo.call) {
            return;
        }
        $('remote-audio').srcObject = stream;
        showVideo('remote', stream);
        // a re-INVITE can add or remove the far end's video later
        const update = () => {
            if (call === demo.call && call.state !== 'terminated') {
                showVideo('remote', stream);
            }
        };
        stream.addEventListener('addtrack', update);
        stream.addEventListener('removetrack', update);
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

/** Answers the ringing call, with the camera if `withVideo` and the offer has video. */
async function answer(withVideo) {
    const call = demo.incoming;
    if (!isActive(call)) {
        return;
    }
    nextIncoming(call);
    const offered = offersVideo(call);
    const video = withVideo && offered;
    log(`answering ${describe(call.remoteIdentity)}${offered ? (video ? ' with video' : ' without camera') : ''}`);
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

async function toggleHold() {
    const call = demo.call;
    if (!isActive(call)) {
        return;
    }
    try {
        if (call.onHold) {
            await call.unhold();
        } else {
            await call.hold();
        }
    } catch (error) {
        logError(call.onHold ? 'resume' : 'hold', error);
    }
    render();
}

async function transfer() {
    const call = demo.call;
    const uri = $('transfer-uri').value.trim();
    if (!isActive(call) || !uri) {
        return;
    }
    try {
        $('transfer-state').textContent = 'requested';
        await call.transfer(uri);
        log(`call ${call.id.slice(0, 8)}: transferring to ${uri}`);
    } catch (error) {
        $('transfer-state').textContent = '';
        logError('transfer', error);
    }
}

async function acceptTransfer() {
    const request = demo.transferRequest;
    demo.transferRequest = null;
    if (!request || request.state !== 'pending') {
        render();
        return;
    }
    try {
        const localStream = await getLocalMedia(false);
        const call = request.accept({ localStream });
        log(`calling ${request.referTo} for the transfer`);
        showCall(call, localStream, true); // the far end hangs up the old call once this one is answered
    } catch (error) {
        logError('transfer', error);
    }
    render();
}

async function rejectTransfer() {
    const request = demo.transferRequest;
    demo.transferRequest = null;
    render();
    if (request && request.state === 'pending') {
        try {
            await request.reject();
            log(`refused the transfer to ${request.referTo}`);
        } catch (error) {
            logError('refuse the transfer', error);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// messages

let messageCounter = 0;

function note(name, details) {
    demo.events.push([name, details]);
}

function messageItem(direction, who, content, id) {
    const item = document.createElement('li');
    item.className = direction;
    item.dataset.direction = direction;
    if (id) {
        item.dataset.messageId = id;
    }
    const whoSpan = document.createElement('span');
    whoSpan.className = 'who';
    whoSpan.textContent = who;
    const text = document.createElement('span');
    text.className = 'content';
    text.textContent = content;
    item.append(whoSpan, text);
    const list = $('messages');
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
}

function setMessageStatus(item, text, failed = false) {
    let status = item.querySelector('.status');
    if (!status) {
        status = document.createElement('span');
        status.className = 'status';
        status.dataset.testid = 'message-status';
        item.append(status);
    }
    status.textContent = text;
    item.classList.toggle('failed', failed);
}

function showReceivedMessage(message, call) {
    note('message', { ...message, session: call ? call.id : null });
    const where = call ? ' (in the call)' : '';
    log(`message from ${describe(message.sender)}${where}: ${message.content}`);
    messageItem('in', `${describe(message.sender)}${where}:`, message.content, message.messageId);
}

// The account's stored messages (the gateway keeps them once it is registered): shown once, after registering.
async function showHistory(account) {
    let entries;
    try {
        entries = await account.syncConversations();
    } catch (error) {
        log(`no message history: ${error && error.message ? error.message : error}`);
        return;
    }
    let shown = 0;
    for (const entry of entries) {
        if (!['text/plain', 'text/html'].includes(entry.contentType) || hasMessage(entry.messageId)) {
            continue;
        }
        const outgoing = entry.direction === 'outgoing';
        const item = messageItem(outgoing ? 'out' : 'in', outgoing ? `to ${entry.contact}:` : `${entry.contact}:`,
            entry.content, entry.messageId);
        item.classList.add('history');
        if (outgoing && entry.state) {
            setMessageStatus(item, entry.state, ['failed', 'forbidden', 'error'].includes(entry.state));
        }
        shown += 1;
    }
    log(`message history: ${shown} message${shown === 1 ? '' : 's'}`);
}

// What the account's other devices did (they are this account on other pages, apps or gateways).
function showSync(sync) {
    note('sync', sync);
    if (sync.type === 'message' && sync.action === 'add' && !hasMessage(sync.content.messageId)) {
        messageItem('out', `to ${sync.content.uri} (another device):`, sync.content.content, sync.content.messageId);
    } else if (sync.type === 'message' && sync.action === 'remove') {
        [...$('messages').children].find((li) => li.dataset.messageId === sync.content.messageId)?.remove();
    } else if (sync.type === 'conversation') {
        log(`another device: conversation with ${sync.content.contact} ${sync.action === 'read' ? 'read' : 'removed'}`);
    }
}

function hasMessage(messageId) {
    return [...$('messages').children].some((li) => li.dataset.messageId === messageId);
}

function showMessageStatus(status, call) {
    note('messageStatus', { ...status, session: call ? call.id : null });
    const text = [status.state, status.code, status.reason].filter((part) => part !== null && part !== undefined).join(' ');
    log(`message ${status.messageId.slice(0, 12)}: ${text}`, ['failed', 'forbidden', 'error'].includes(status.state));
    const item = [...$('messages').children].find((li) => li.dataset.direction === 'out'
        && li.dataset.messageId === status.messageId);
    if (item) {
        setMessageStatus(item, text, ['failed', 'forbidden', 'error'].includes(status.state));
    }
}

async function sendMessage() {
    const content = $('message-text').value;
    const inCall = $('message-in-call').checked;
    const uri = $('message-uri').value.trim();
    const messageId = `demo-${Date.now().toString(36)}-${++messageCounter}`;
    let item = null;
    try {
        if (inCall) {
            const call = demo.call;
            if (!isActive(call)) {
                throw new Error('there is no call');
            }
            item = messageItem('out', `to ${describe(call.remoteIdentity)} (in the call):`, content, messageId);
            setMessageStatus(item, 'sending');
            await call.sendMessage(content, { messageId });
        } else {
            if (!uri) {
                throw new Error('whom to? (the To field)');
            }
            const account = await ensureAccount();
            item = messageItem('out', `to ${uri}:`, content, messageId);
            setMessageStatus(item, 'sending');
            await account.sendMessage(uri, content, { messageId });
        }
        $('message-text').value = '';
        if (item.querySelector('.status').textContent === 'sending') {
            setMessageStatus(item, 'sent');
        }
    } catch (error) {
        if (item) {
            setMessageStatus(item, `not sent: ${error && error.message ? error.message : error}`, true);
        }
        logError('message', error);
    }
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
    const wsParam = params.get('ws');
    const wsUrl = wsParam === null ? null : sameOriginWsUrl(wsParam);
    if (wsParam !== null && wsUrl === null) {
        log(`ignored ?ws=${wsParam}: only a WebSocket URL on this page's own origin is taken`, true);
    }
    $('ws-url').value = wsUrl ?? defaultUrl();
    $('protocol').value = ['sylkRTC-2', 'sylkRTC-1'].includes(params.get('protocol')) ? params.get('protocol') : '';
    $('dtmf-info').checked = params.get('dtmfinfo') === '1';
    $('account').value = params.get('account') ?? rememberedAccount();
    $('display-name').value = params.get('name') ?? '';
    $('dial-uri').value = params.get('uri') ?? '';
    $('video').checked = params.get('video') === '1';
    $('message-uri').value = params.get('to') ?? '';
    $('transfer-uri').value = params.get('transfer') ?? '';
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
    $('answer').addEventListener('click', () => answer(true));
    $('answer-audio').addEventListener('click', () => answer(false));
    $('reject').addEventListener('click', reject);
    for (const key of document.querySelectorAll('#keypad button')) {
        key.addEventListener('click', () => sendTone(key.dataset.tone));
    }
    $('hold').addEventListener('click', toggleHold);
    $('transfer-form').addEventListener('submit', (event) => {
        event.preventDefault();
        transfer();
    });
    $('transfer-accept').addEventListener('click', acceptTransfer);
    $('transfer-reject').addEventListener('click', rejectTransfer);
    $('message-form').addEventListener('submit', (event) => {
        event.preventDefault();
        sendMessage();
    });
    $('clear-log').addEventListener('click', () => $('log').replaceChildren());
    window.addEventListener('pagehide', () => demo.connection && demo.connection.close());
    render();
    log('ready: press Register (or Call) to connect');
}

init();
