#!/usr/bin/env bash
# ARCHIVE=false leaves the message archive (on by default) out of the measurement.
# Disk cost of offline messages: starts a release hearth in a temp folder (on the same file
# system as the repository, not tmpfs, so that writes reach a block device), creates two users,
# logs the sender in with a small raw XMPP client (Python stdlib: STARTTLS, PLAIN, bind), sends
# N (default 10,000) messages in one burst to the other user, who is offline, waits until the
# server has answered a ping sent after the burst (everything before it is handled), and
# reports from /proc/PID/io:
#   write_bytes / N : bytes the server caused to be written to storage per offline message
#                     (page granularity: Linux counts dirtied pages), and
#   wchar / N       : bytes handed to write(2)-like calls per message (sockets and log included),
# plus the data file size. Bounded (the client gives up after TIMEOUT seconds) and cleans up
# (server stopped by its PID, folder removed unless KEEP=1).
#
# Usage: scripts/offline_write_bytes.sh            (N=10000 HEARTH_BIN=target/release/hearth)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HEARTH_BIN=${HEARTH_BIN:-$ROOT/target/release/hearth}
N=${N:-10000}
TIMEOUT=${TIMEOUT:-300}
PY=${PYTHON:-python3}

[ -x "$HEARTH_BIN" ] || { echo "no hearth binary at $HEARTH_BIN (cargo build --release)" >&2; exit 2; }
mkdir -p "$ROOT/target"
DIR=$(mktemp -d "$ROOT/target/offline-bytes.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

read -r PORT TLS_PORT < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

cat > "$DIR/hearth.toml" <<EOF
domains = ["localhost"]
data_dir = "data"
log_level = "warn"

[c2s]
listen = ["127.0.0.1:$PORT"]
listen_tls = ["127.0.0.1:$TLS_PORT"]

[archive]
enabled = ${ARCHIVE:-true}

[limits]
max_connections = 64
max_offline_per_account = $((N + 100))
max_offline_total = $((N + 100))
EOF

for u in sender recipient; do
  echo "$u-secret" | timeout 30 "$HEARTH_BIN" --config "$DIR/hearth.toml" user add "$u@localhost" >/dev/null
done

"$HEARTH_BIN" --config "$DIR/hearth.toml" serve >"$DIR/server.log" 2>&1 &
PID=$!
for i in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { echo "hearth exited:" >&2; cat "$DIR/server.log" >&2; exit 1; }
  [ "$i" = 100 ] && { echo "hearth not listening after 10 s" >&2; exit 1; }
  sleep 0.1
done

io() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/io"; }
W0=$(io write_bytes); C0=$(io wchar)

RESULT=$(timeout "$TIMEOUT" "$PY" - "$PORT" "$N" <<'EOF'
import base64, re, socket, ssl, sys, time

port, n = int(sys.argv[1]), int(sys.argv[2])
DOMAIN = "localhost"
HEADER = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams'>").encode()

sock = socket.create_connection(("127.0.0.1", port), timeout=30)
conn = sock
buf = b""

def read_until(pattern: bytes) -> bytes:
    global buf
    while not re.search(pattern, buf):
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit(f"server closed; got {buf[-500:]!r}")
        buf += chunk
    m = re.search(pattern, buf)
    out, buf = buf[:m.end()], buf[m.end():]
    return out

conn.sendall(HEADER); read_until(rb"</stream:features>")
conn.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); read_until(rb"<proceed[^>]*/>")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conn = ctx.wrap_socket(sock, server_hostname=DOMAIN)
conn.sendall(HEADER); read_until(rb"</stream:features>")
cred = base64.b64encode(b"\0sender\0sender-secret").decode()
conn.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>".encode())
if b"<success" not in read_until(rb"<success[^>]*/>|</success>|</failure>"):
    sys.exit("authentication failed")
conn.sendall(HEADER); read_until(rb"</stream:features>")
conn.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>w</resource></bind></iq>")
read_until(rb"</iq>")

body = "offline message body of a typical length, about sixty bytes"
batch = []
t0 = time.monotonic()
for i in range(n):
    batch.append(f"<message to='recipient@localhost' type='chat' id='m{i}'><body>{body} {i}</body></message>")
    if len(batch) == 200:
        conn.sendall("".join(batch).encode()); batch = []
if batch:
    conn.sendall("".join(batch).encode())
conn.sendall(f"<iq type='get' id='done' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
# Everything the server answered before the ping's result: errors are refused messages.
answered = read_until(rb"<iq[^>]*id=['\"]done['\"][^>]*(/>|>.*?</iq>)")
elapsed = time.monotonic() - t0
errors = len(re.findall(rb"type=['\"]error['\"]", answered))
conn.sendall(b"</stream:stream>")
print(f"{errors} {elapsed:.2f}")
EOF
) || { echo "client failed or timed out after ${TIMEOUT}s" >&2; tail -20 "$DIR/server.log" >&2; exit 1; }
read -r ERRORS ELAPSED <<<"$RESULT"

sleep 1  # let a pending group commit land
W1=$(io write_bytes); C1=$(io wchar)
DW=$((W1 - W0)); DC=$((C1 - C0))
DATA_BYTES=$(du -sb "$DIR/data" | cut -f1)
DB_FILES=$(find "$DIR/data" -type f -printf '%s %p\n' | sed "s|$DIR/||" | sort -k2)

echo "messages sent:            $N in ${ELAPSED}s (errors back: $ERRORS)"
echo "write_bytes delta:        $DW  ->  $(awk -v d="$DW" -v n="$N" 'BEGIN { printf "%.1f", d / n }') bytes/message"
echo "wchar delta:              $DC  ->  $(awk -v d="$DC" -v n="$N" 'BEGIN { printf "%.1f", d / n }') bytes/message"
echo "data folder size:         $DATA_BYTES bytes"
echo "data files:"
echo "$DB_FILES" | sed 's/^/  /'
if [ "$ERRORS" != 0 ]; then
  echo "WARNING: $ERRORS messages were refused (not stored); the per-message figures are off" >&2
  exit 1
fi
