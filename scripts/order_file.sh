#!/usr/bin/env bash
# order_file.sh - regenerate scripts/hearth.order, the list of functions a release hearth runs
# from start to idle and through a few logins, which build.rs hands to the linker
# (lld --symbol-ordering-file) so that they sit together at the start of .text.
#
# usage: scripts/order_file.sh [BIN...]
#   Each BIN must be a release build with symbols (HEARTH_KEEP_SYMBOLS=1, see build.rs: the
#   same profile as the release build, or the names differ); without BINs it builds one in
#   target/order. Several BINs (say a glibc and a
#   static musl build) give one file with the functions of each; names the linker does not
#   find in a build are ignored. Needs valgrind (callgrind) and python3. Loopback only;
#   every wait is bounded.
#
# Why: the kernel maps 64 KiB of file pages around every page a process touches
# (fault-around), so start-up code scattered over 2.5 MB of .text made almost the whole
# binary resident at idle. The file is ordered start-up first, then what logins add.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/scripts/hearth.order

BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
  echo "== building a release binary with symbols (target/order)"
  CARGO_TARGET_DIR=target/order HEARTH_KEEP_SYMBOLS=1 cargo build --release
  BINS=("$ROOT/target/order/release/hearth")
fi
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hearth-order-XXXXXX")
VPID=
cleanup() {
  if [ -n "$VPID" ] && kill -0 "$VPID" 2>/dev/null; then kill -KILL "$VPID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

serve_under_callgrind() { # OUT
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$1" \
    "$BIN" --config "$D/hearth.toml" serve >"$D/vg.log" 2>&1 &
  VPID=$!
  for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    kill -0 "$VPID" 2>/dev/null || { echo "hearth exited:" >&2; tail -20 "$D/vg.log" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2
}
stop_server() {
  kill -TERM "$VPID"
  for _ in $(seq 300); do kill -0 "$VPID" 2>/dev/null || break; sleep 0.1; done
  wait "$VPID" 2>/dev/null || true
  VPID=
}

n=0
for BIN in "${BINS[@]}"; do
  n=$((n + 1))
  BIN=$(readlink -f "$BIN")
  D=$WORK/run$n
  mkdir -p "$D"
  read -r PORT TLS_PORT S2S_PORT < <(python3 - <<'EOF'
import socket
s = [socket.socket() for _ in range(3)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
for x in s:
    x.close()
EOF
)
  # What a real deployment starts: a config file, both c2s listeners, federation on
  # (resolv.conf, s2s listener), a generated self-signed certificate.
  cat >"$D/hearth.toml" <<EOF
domains = ["localhost"]
data_dir = "data"
log_level = "info"
[c2s]
listen = ["127.0.0.1:$PORT"]
listen_tls = ["127.0.0.1:$TLS_PORT"]
[s2s]
listen = ["127.0.0.1:$S2S_PORT"]
EOF
  echo "== callgrind: $BIN"
  # Run a: first start in an empty folder (creates the database), stopped at idle.
  serve_under_callgrind "$D/a.out"
  stop_server
  for u in u0 u1; do
    printf 'pw\n' | "$BIN" --config "$D/hearth.toml" user add "$u@localhost" >/dev/null
  done
  # Run b: a restart with accounts; b.out.1 = start-up to idle, b.out = logins (PLAIN and
  # SCRAM over STARTTLS) and shutdown.
  serve_under_callgrind "$D/b.out"
  timeout 60 callgrind_control -d "$VPID" >/dev/null 2>&1
  for mech in PLAIN SCRAM-SHA-1; do
    timeout 120 python3 "$ROOT/scripts/sessions_rss.py" --port "$PORT" --domain localhost -n 2 \
      --user 'u%d' --password pw --mech "$mech" --timeout 60 --settle 1 >/dev/null
  done
  stop_server
  printf '%s\n' "$D/a.out" "$D/b.out.1" "$D/b.out" >"$D/parts"
  # Run c, native: valgrind's CPU picks other ifunc and ring variants (memmove, SHA) than the
  # real one does; the functions whose first run faults a page in, from `perf` if it can.
  : >"$D/native"
  if command -v perf >/dev/null; then
    rm -rf "$D/data"
    perf record -q -e page-faults -c 1 -d -o "$D/perf.data" \
      "$BIN" --config "$D/hearth.toml" serve >"$D/native.log" 2>&1 &
    PPID_=$!
    for _ in $(seq 100); do
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
      sleep 0.1
    done
    sleep 1
    pkill -TERM -P "$PPID_" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$PPID_" 2>/dev/null || break; sleep 0.1; done
    wait "$PPID_" 2>/dev/null || true
    # Instruction fetches (address = ip) in the binary: "addr sym (dso) ip sym (dso)".
    perf script -i "$D/perf.data" --no-demangle -F ip,addr,sym,dso 2>/dev/null |
      awk -v bin="($BIN)" '$1 == $4 && $3 == bin { print $2 }' >"$D/native" || true
  fi
  printf '%s\n' "$BIN" >"$D/bin"
done

# Functions of the hearth binary (not libc.so's) in each part; every binary's start-up before
# any binary's logins; first occurrence wins; callgrind's "'2" recursion suffixes dropped.
python3 - "$OUT" "$WORK" <<'EOF'
import glob, os, re, subprocess, sys
out, work = sys.argv[1], sys.argv[2]
pat = re.compile(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$")


def functions(part, binary):
    """The binary's functions with cost in one callgrind output, in file order."""
    obs, names, ob, fns = {}, {}, None, []
    for line in open(part, errors="replace"):
        m = pat.match(line.rstrip("\n"))
        if not m:
            continue
        kind, idx, name = m.groups()
        if kind in ("ob", "cob"):
            if name:
                obs[idx] = name
            if kind == "ob":
                ob = obs.get(idx)
        else:
            if name:
                names[idx] = name
            if kind == "fn" and ob == binary:
                fn = re.sub(r"'\d+$", "", names[idx])
                if not fn.startswith(("0x", "(")):
                    fns.append(fn)
    return fns


runs = sorted(glob.glob(os.path.join(work, "run*")))
steps = [[] for _ in range(4)]  # a.out, b.out.1, native, b.out; each over all binaries
symbols = set()
for run in runs:
    binary = open(os.path.join(run, "bin")).read().strip()
    parts = [p.strip() for p in open(os.path.join(run, "parts")) if p.strip()]
    steps[0] += functions(parts[0], binary)
    steps[1] += functions(parts[1], binary)
    steps[2] += [fn for fn in open(os.path.join(run, "native")).read().split() if fn[0] != "["]
    steps[3] += functions(parts[2], binary)
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True)
    symbols.update(line.split()[-1] for line in nm.stdout.splitlines() if line.strip())
# Names of the previous file that one of the binaries has and callgrind did not see: native
# finds of earlier rounds (perf sees only the first function run on a page that no other
# fault brought in, so a round over a binary linked with the last file finds a few more).
callgrind = set(steps[0] + steps[1] + steps[3])
if os.path.exists(out):
    old = (line.strip() for line in open(out))
    steps[2] += [fn for fn in old if fn in symbols and fn not in callgrind]
seen, order = set(), []
for name, step in zip(("start-up, empty folder", "restart", "native", "logins"), steps):
    for fn in step:
        if fn not in seen:
            seen.add(fn)
            order.append(fn)
    print(f"{name}: {len(order)} functions so far")
with open(out, "w") as f:
    f.write("".join(fn + "\n" for fn in order))
print(f"{len(order)} functions -> {out}")
EOF
