#!/usr/bin/env bash
# Soak: churns many short-lived connections through the server while long-lived clients chat,
# and checks that nothing leaks and every message is accounted for. Loopback only; bounded in
# count and time.
#
#   scripts/soak.sh [--pattern P] [--churn 100000] [--clients 5000] [--rate 2000]
#                   [--duration 120s] [--out results/soak] [-- SERVER_ARGS...]
#
# Long-lived clients: bench-client chat (--clients connections in rooms of 50, --rate msg/s,
# --require-correct: every delivery accounted for). Churn: scripts/soak/churn.py (handshake,
# a few echoed messages, a clean close, over 127.0.0.1..4). Before and after: the server's
# RSS and open descriptors (after the churn has ended and the server has settled).
# Writes <out>/<date>-<pattern>.json and prints a verdict.
# Messages: text, bench-client's default (since 2026-12-06; binary before): the server's text
# path, UTF-8 validation and "<name> says: " included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pattern=single-thread churn=100000 clients=5000 rate=2000 duration=120s out=results/soak
server_args=()
while (($#)); do
    case $1 in
        --pattern) pattern=$2; shift 2 ;;
        --churn) churn=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --) shift; server_args=("$@"); break ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p wschat -p bench-client
bin=target/release
mkdir -p "$out"
log=$(mktemp)
# Multi-thread patterns get two loops (or two workers) unless told otherwise.
case $pattern in
    single-thread) threads=() ;;
    work-queue) threads=(--workers 2) ;;
    *) threads=(--threads 2) ;;
esac
"$bin/wschat" --addr 127.0.0.1:0 --pattern "$pattern" "${threads[@]}" "${server_args[@]}" >"$log" 2>&1 &
server=$!
cleanup() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
[[ -n $addr ]] || { echo "soak.sh: the server did not start:"; cat "$log"; exit 1; }

rss() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
fds() { ls "/proc/$server/fd" | wc -l; }
rss_before=$(rss) fds_before=$(fds)
echo "soak: $pattern on $addr: $clients long-lived clients at $rate msg/s for $duration, churning $churn connections"

rooms=$(((clients + 49) / 50))
chat_json=$(mktemp)
"$bin/bench-client" chat --url "ws://$addr" --conns "$clients" --rooms "$rooms" --rate "$rate" \
    --duration "$duration" --warmup 2s --source-ips 4 --require-correct --server-pid "$server" \
    --json "$chat_json" -q &
chat=$!
sleep 5 # the long-lived clients connect first
churn_json=$(python3 scripts/soak/churn.py --addr "$addr" --conns "$churn" --time-limit 600)
chat_status=0
wait "$chat" || chat_status=$?
sleep 3 # closing handshakes finish (close timeout 2 s)
rss_after=$(rss) fds_after=$(fds)
stats=$(curl -s "http://$addr/stats")

result="$out/$(date -u +%Y-%m-%dT%H%M%SZ)-$pattern.json"
python3 - "$chat_json" "$result" <<PY
import json, sys
chat = json.load(open(sys.argv[1]))
churn = json.loads('''$churn_json''')
stats = json.loads('''$stats''')
doc = {
    "pattern": "$pattern", "server_args": "${server_args[*]}", "addr": "$addr",
    "command": "scripts/soak.sh --pattern $pattern --churn $churn --clients $clients --rate $rate --duration $duration",
    "server": {"rss_kib_before": $rss_before, "rss_kib_after": $rss_after,
               "fds_before": $fds_before, "fds_after": $fds_after},
    "churn": churn,
    "long_lived": {"correct": chat.get("correct"), "counters": chat.get("counters"),
                   "close_codes": chat.get("close_codes"), "rates": chat.get("rates"),
                   "latency_us": {k: v for k, v in chat["histograms"]["latency_us"].items() if k != "v2_base64"}},
    "bench_client_exit": $chat_status,
    "stats_totals": stats["totals"],
}
json.dump(doc, open(sys.argv[2], "w"), indent=2)
c = chat["counters"]
ok = ($chat_status == 0 and churn["failed"] == 0 and churn["mismatched"] == 0
      and churn["echoed"] + churn["chat_joins"] == churn["sent"] and $fds_after <= $fds_before)
print(f"soak: churn {churn['opened']} connections in {churn['seconds']} s, failed {churn['failed']}, "
      f"echoes {churn['echoed']}/{churn['sent'] - churn['chat_joins']}; long-lived: received "
      f"{c['received']}/{c['expected']}, lost {c['lost']}, out of order {c['out_of_order']}")
print(f"soak: server RSS {$rss_before} -> {$rss_after} KiB, descriptors {$fds_before} -> {$fds_after}")
print(f"soak: {'PASS' if ok else 'FAIL'} ({sys.argv[2]})")
sys.exit(0 if ok else 1)
PY
