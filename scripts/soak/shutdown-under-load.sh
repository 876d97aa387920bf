#!/usr/bin/env bash
# Graceful shutdown under load: thousands of clients connected and sending, then SIGTERM.
# Checks that the server stops accepting, sends close 1001 to every client, exits 0 within
# --shutdown-timeout, and reports how long it took and the close codes the clients saw.
#
#   scripts/soak/shutdown-under-load.sh [--pattern P] [--clients 3000] [--rate 3000] [-- SERVER_ARGS...]
# Messages: text, bench-client's default (since 2026-12-06; binary before); the check is about
# the close codes, which do not depend on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
pattern=reuseport clients=3000 rate=3000
server_args=()
while (($#)); do
    case $1 in
        --pattern) pattern=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --) shift; server_args=("$@"); break ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "shutdown-under-load.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p wschat -p bench-client
log=$(mktemp) json=$(mktemp)
case $pattern in single-thread) threads=() ;; work-queue) threads=(--workers 2) ;; *) threads=(--threads 2) ;; esac
"$bin/wschat" --addr 127.0.0.1:0 --pattern "$pattern" "${threads[@]}" "${server_args[@]}" >"$log" 2>&1 &
server=$!
trap 'kill -KILL $server 2>/dev/null || true; rm -f "$log" "$json"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
"$bin/bench-client" chat --url "ws://$addr" --conns "$clients" --rooms $((clients / 50)) --rate "$rate" \
    --duration 30s --warmup 1s --drain 2s --source-ips 4 --json "$json" -q >/dev/null 2>&1 &
loader=$!
sleep 12 # connected, and sending for several seconds
start=$(date +%s.%N)
kill -TERM "$server"
status=0
wait "$server" || status=$?
took=$(python3 -c "import time; print(round(time.time() - $start, 3))")
wait "$loader" || true
python3 - "$json" "$status" "$took" "$pattern" "$clients" "$rate" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
status, took, pattern, clients, rate = sys.argv[2:]
codes = doc.get("close_codes", {})
c = doc["counters"]
print(f"shutdown under load: {pattern}, {clients} clients sending {rate} msg/s: exit status {status} "
      f"after {took} s; close codes seen by the clients: {codes}; disconnects {c.get('disconnects')}")
ok = status == "0" and codes.get("1001", 0) >= int(clients) * 0.99
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
