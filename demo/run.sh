#!/bin/sh
# The local demo (`make run`): a Kamailio SIP registrar on 127.0.0.1:5070 serving the demo accounts of sylk.test,
# and the gateway in the foreground, configured by demo/config.ini to send all SIP there.
#
# Everything it writes goes to demo/run/ (git-ignored). Ctrl-C stops the gateway, then Kamailio.
# Needs the Debian packages kamailio and janus, and the virtualenv in .venv (`make run` sets both up).

set -eu

cd "$(dirname "$0")/.."   # the repository root
ROOT=$(pwd -P)

VENV=.venv
PYTHON="$VENV/bin/python"
TWISTD="$VENV/bin/twistd"
KAM_DIR="$ROOT/demo/run/kamailio"    # absolute paths: Kamailio changes its working directory to /
KAM_CONFIG="$ROOT/demo/kamailio/kamailio.cfg"
KAM_LOG="$KAM_DIR/kamailio.log"
KAM_PIDFILE="$KAM_DIR/kamailio.pid"
KAM_CTL="$KAM_DIR/kamailio_ctl"
SIP_HOST=127.0.0.1
SIP_PORT=5070
MESSAGE_PORT=5065  # the gateway's SIP entry point for MESSAGEs (demo/config.ini sip_messages_address)
WEB_PORT=10888
READY_TIMEOUT=10           # seconds for Kamailio to answer OPTIONS
KAMAILIO_STOP_TIMEOUT=5
GATEWAY_STOP_TIMEOUT=20    # the gateway unregisters every account before it exits

KAM_PID=""
GATEWAY_PID=""

die() {
    echo "demo/run.sh: $*" >&2
    exit 1
}

find_binary() {
    # Debian puts kamailio in /usr/sbin, which is not on every user's PATH
    PATH="$PATH:/usr/sbin:/usr/local/sbin:/sbin" command -v "$1" 2>/dev/null || true
}

# wait_bounded PID SECONDS KILL_TARGET: wait for our child PID; SIGKILL KILL_TARGET (a pid, or -pgid) if it
# has not exited after SECONDS.
wait_bounded() {
    (
        sleep "$2" &
        trap 'kill $! 2>/dev/null; exit 0' TERM
        wait $!
        kill -KILL "$3" 2>/dev/null && echo "demo/run.sh: killed $3 after $2 s" >&2
    ) &
    watchdog=$!
    wait "$1" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
}

stop_gateway() {
    [ -n "$GATEWAY_PID" ] || return 0
    pid=$GATEWAY_PID
    GATEWAY_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    wait_bounded "$pid" "$GATEWAY_STOP_TIMEOUT" "$pid"
}

stop_kamailio() {
    [ -n "$KAM_PID" ] || return 0
    pid=$KAM_PID
    KAM_PID=""
    # Kamailio leads its own process group, shared by its ~10 workers: signal the whole group
    kill -TERM "-$pid" 2>/dev/null || true
    wait_bounded "$pid" "$KAMAILIO_STOP_TIMEOUT" "-$pid"
    # the workers leave right after the main process; make sure none is left holding the port
    i=0
    while kill -0 "-$pid" 2>/dev/null && [ "$i" -lt 20 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "-$pid" 2>/dev/null || true
}

cleanup() {
    stop_gateway
    stop_kamailio
}

on_signal() {
    # Ignore further signals while stopping (it is bounded): `timeout` and terminals often deliver a second one, and
    # dying on it would leave Kamailio running.
    trap '' INT TERM HUP
    echo "demo/run.sh: stopping the demo..." >&2
    cleanup
    exit "$1"
}

trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# --- checks ---

[ -x "$TWISTD" ] || die "$TWISTD not found: run \`make run\` (it creates the virtualenv) rather than this script"
KAMAILIO=$(find_binary kamailio)
[ -n "$KAMAILIO" ] || die "kamailio not found: install the Debian package kamailio (\`make run\` does)"
command -v setsid >/dev/null 2>&1 || die "setsid not found (Debian package util-linux)"

# A port that is taken would make Kamailio or the gateway exit with a less helpful message.
"$PYTHON" - "$SIP_HOST" "$SIP_PORT" "$WEB_PORT" "$MESSAGE_PORT" <<'EOF' || exit 1
import socket, sys
host, sip_port, web_port, message_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
checks = [(socket.SOCK_DGRAM, "UDP", sip_port, "the demo SIP registrar (Kamailio)"),
          (socket.SOCK_STREAM, "TCP", sip_port, "the demo SIP registrar (Kamailio)"),
          (socket.SOCK_STREAM, "TCP", web_port, "the gateway's WebSocket server"),
          (socket.SOCK_DGRAM, "UDP", message_port, "the gateway's SIP entry point for messages"),
          (socket.SOCK_STREAM, "TCP", message_port, "the gateway's SIP entry point for messages")]
for kind, name, port, what in checks:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            sys.exit(f"demo/run.sh: {name} port {host}:{port}, needed by {what}, is already in use ({e.strerror}).\n"
                     f"  Find the owner with `ss -lnptu 'sport = :{port}'` (an earlier demo still running? the "
                     f"system's kamailio service? then `systemctl stop kamailio`) and try again.")
EOF

# --- Kamailio ---

mkdir -p "$KAM_DIR/db"
rm -f "$KAM_PIDFILE"
# The subscriber database (HA1 only) for the demo accounts. Prints "domain", then "account password ha1" lines.
ACCOUNTS=$("$PYTHON" - "$KAM_DIR/db" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "demo/kamailio")
from subscribers import DEMO_DOMAIN, DEMO_USERS, ha1, write_subscribers
write_subscribers(Path(sys.argv[1]), DEMO_DOMAIN, DEMO_USERS)
print(DEMO_DOMAIN)
for user, password in DEMO_USERS.items():
    print(f"{user}@{DEMO_DOMAIN} {password} {ha1(user, DEMO_DOMAIN, password)}")
EOF
)
DOMAIN=$(echo "$ACCOUNTS" | head -n 1)
ACCOUNTS=$(echo "$ACCOUNTS" | tail -n +2)

# Kamailio gets a session (and process group) of its own: Ctrl-C must not reach it before the gateway has
# unregistered, and stopping it must reach its workers too. A background job of a non-interactive shell is never a
# process group leader, so setsid does not fork: $! is Kamailio's main process (-DD keeps it in front of its
# workers) and the id of its process group. -E logs to stderr.
setsid "$KAMAILIO" -f "$KAM_CONFIG" -DD -E -m 32 -M 8 -P "$KAM_PIDFILE" -Y "$KAM_DIR" \
    -A "SIP_PORT=$SIP_PORT" -A "DOMAIN=\"$DOMAIN\"" -A "REALM=\"$DOMAIN\"" \
    -A "DBURL=\"text://$KAM_DIR/db\"" -A "CTL_SOCK=\"unix:$KAM_CTL\"" \
    -A "MESSAGE_STORE=\"sip:$SIP_HOST:$MESSAGE_PORT\"" \
    </dev/null >"$KAM_LOG" 2>&1 &
KAM_PID=$!

# Ready when Kamailio answers a SIP OPTIONS over UDP; bounded, and given up at once if Kamailio exits.
if ! "$PYTHON" - "$SIP_HOST" "$SIP_PORT" "$READY_TIMEOUT" "$KAM_PID" <<'EOF'
import socket, sys, time, uuid
host, port, timeout, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def alive():
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + timeout
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.bind((host, 0))
    sock.settimeout(0.2)
    local = sock.getsockname()[1]
    while time.monotonic() < deadline and alive():
        tag = uuid.uuid4().hex
        sock.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bK{tag[:16]};rport\r\n"
                     f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag={tag[16:24]}\r\nTo: <sip:{host}:{port}>\r\n"
                     f"Call-ID: {tag}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), (host, port))
        try:
            if sock.recv(65535).startswith(b"SIP/2.0 200"):
                sys.exit(0)
        except (TimeoutError, ConnectionRefusedError):
            time.sleep(0.05)
sys.exit(1)
EOF
then
    echo "demo/run.sh: Kamailio did not become ready within $READY_TIMEOUT s; the end of $KAM_LOG:" >&2
    tail -n 20 "$KAM_LOG" >&2
    exit 1
fi

# --- banner ---

cat <<EOF

================================================================================
 sylkgateway demo
   Demo phone    : http://127.0.0.1:$WEB_PORT/   (open it in two browser windows and call between them)
   WebSocket API : ws://127.0.0.1:$WEB_PORT/webrtcgateway/ws   (subprotocol sylkRTC-1)
   SIP registrar : Kamailio on udp/tcp $SIP_HOST:$SIP_PORT for domain $DOMAIN
                   log: demo/run/kamailio/kamailio.log
                   bindings: kamcmd -s unix:$KAM_CTL ul.dump brief
   Demo accounts (add_account takes the HA1, md5 of user:$DOMAIN:password, as its password):
EOF
echo "$ACCOUNTS" | while read -r account password ha1; do
    printf '     %-16s / %-8s  HA1 %s\n' "$account" "$password" "$ha1"
done
cat <<EOF
   Stop with Ctrl-C.
================================================================================

EOF

# --- the gateway ---
# Run as a job we wait for, so that a signal reaches the trap above at once (a plain foreground command would
# delay it until the gateway exits by itself); the trap then stops the gateway cleanly, then Kamailio.

"$TWISTD" -n --pidfile= sylkgateway -c demo/config.ini &
GATEWAY_PID=$!
status=0
wait "$GATEWAY_PID" || status=$?
GATEWAY_PID=""
exit "$status"
