#!/usr/bin/env bash
# mem_bench.sh - memory per session of a release hearth: N accounts, N concurrent
# authenticated TLS sessions, RSS before / with N / after close, KiB per session, logins/s.
#
# usage: scripts/mem_bench.sh [N] [--mech PLAIN|SCRAM-SHA-1] [--keep]
#   N defaults to 1000. HEARTH_BIN overrides the binary (default target/release/hearth,
#   built with `cargo build --release` if missing). Everything lives in a temp folder that is
#   removed at the end (kept with --keep). Loopback only; every wait is bounded.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=1000
MECH=PLAIN
KEEP=false
while [ $# -gt 0 ]; do
  case $1 in
    --mech) MECH=$2; shift 2;;
    --keep) KEEP=true; shift;;
    -h|--help) sed -n '2,9p' "$0"; exit 0;;
    [0-9]*) N=$1; shift;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
done

HEARTH_BIN=${HEARTH_BIN:-$ROOT/target/release/hearth}
if [ ! -x "$HEARTH_BIN" ]; then
  echo "== building release binary"
  cargo build --release
fi
PY=python3
[ -x "$ROOT/tests/interop/.venv/bin/python" ] && PY=$ROOT/tests/interop/.venv/bin/python

DIR=$(mktemp -d "${TMPDIR:-/tmp}/hearth-membench-XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  if $KEEP; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

read -r PORT TLS_PORT < <("$PY" - <<'EOF'
import socket
s = [socket.socket() for _ in range(2)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
for x in s:
    x.close()
EOF
)

cat > "$DIR/hearth.toml" <<EOF
domains = ["localhost"]
data_dir = "data"
log_level = "warn"

[c2s]
listen = ["127.0.0.1:$PORT"]
listen_tls = ["127.0.0.1:$TLS_PORT"]
auth_timeout_secs = 120
auth_failure_delay_ms = 1000
max_auth_failures = 3

[limits]
max_connections = $((N + 64))
max_stanza_bytes = 262144
max_depth = 64
EOF

hearth() { "$HEARTH_BIN" --config "$DIR/hearth.toml" "$@"; }

echo "== creating $N accounts (server stopped)"
t0=$(date +%s)
for i in $(seq 0 $((N - 1))); do
  printf 'pw\n' | hearth user add "u$i@localhost" >/dev/null 2>>"$DIR/useradd.err" || {
    echo "user add u$i failed:" >&2; tail -5 "$DIR/useradd.err" >&2; exit 1; }
done
echo "   $(( $(date +%s) - t0 )) s"

echo "== starting hearth on 127.0.0.1:$PORT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Not through the shell function: $! must be the server itself.
"$HEARTH_BIN" --config "$DIR/hearth.toml" serve >"$DIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null; then
    break
  fi
  kill -0 "$PID" 2>/dev/null || { echo "hearth exited:" >&2; tail -20 "$DIR/server.log" >&2; exit 1; }
  sleep 0.05
done
sleep 1 # let the probe connection go and the heap settle

echo "== $N sessions ($MECH over STARTTLS)"
set +e
timeout 600 "$PY" "$ROOT/scripts/sessions_rss.py" --port "$PORT" --domain localhost -n "$N" \
  --user 'u%d' --password pw --mech "$MECH" --pid "$PID" --timeout 120 --settle 2 \
  --json "$DIR/result.json"
rc=$?
set -e
# KiB per session above also counts the login code the first sessions page in (the binary's
# pages are mapped as they are first run; a few hundred KiB since build.rs links start-up
# code first); the heap's share alone:
if [ $rc -eq 0 ] && [ -s "$DIR/result.json" ]; then
  "$PY" -c 'import json, sys; d = json.loads(open(sys.argv[1]).readline())
print("anon KiB per session: %.2f" % ((d["anon_n_kib"] - d["anon_before_kib"]) / d["n"]))' \
    "$DIR/result.json"
fi
if [ $rc -ne 0 ]; then
  echo "sessions_rss.py exit $rc; server log tail:" >&2
  tail -20 "$DIR/server.log" >&2
fi
exit $rc
