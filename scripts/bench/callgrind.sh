#!/usr/bin/env bash
# User-space instructions the server executes per delivered frame or per handshake, from
# callgrind: a measure of a change's CPU cost that a busy machine does not disturb (valgrind
# counts instructions, not time), for A/B of hot-path changes when no quiet machine is at
# hand. Kernel work (the send path, most of a delivery's cost) is not counted.
#
#   scripts/bench/callgrind.sh deliveries BIN [--conns 200] [--rooms 10] [--rate 200]
#                              [--duration 5s] [--out DIR] [-- SERVER_ARGS...]
#   scripts/bench/callgrind.sh handshakes BIN [--conns 3000] [--concurrency 64]
#                              [--out DIR] [-- SERVER_ARGS...]
#
# Starts BIN (epoll only: valgrind 3.19 cannot run the io_uring backend) under
# `valgrind --tool=callgrind` on a loopback port, zeroes its counters, runs one bench-client
# load (target/release) and dumps the counters once every connection is gone. deliveries:
# --conns chat members in --rooms rooms, --rate messages/s in all for --duration (plus
# bench-client's warm-up); the unit is a frame sent (/stats frames_out: the deliveries and
# the members' join and leave notices, whose count and cost are the same in A and B, as are
# the handshakes and closes in the instructions). handshakes: a connect storm of --conns
# upgrades to /echo, each closed right after its 101; the unit is an accepted connection
# (/stats accepted). Prints, and writes to DIR/summary.txt, the instructions (Ir, every
# thread), the units and their ratio. Bounded: one bench-client run; the server is killed at
# the end.
# Messages (chat): text, bench-client's default since 2026-12-06, so the count includes the
# server's UTF-8 validation and "<name> says: " framing; counts committed before that date
# were taken with binary messages (forwarded verbatim) and are not comparable with new ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

die() { echo "callgrind.sh: $*" >&2; exit 2; }
usage="usage: $0 deliveries|handshakes BIN [options] [-- SERVER_ARGS...] (see the header)"
measure=${1:-}
bin=${2:-}
[[ $measure == deliveries || $measure == handshakes ]] || die "$usage"
[[ -x $bin ]] || die "$usage"
shift 2
if [[ $measure == deliveries ]]; then conns=200; else conns=3000; fi
rooms=10 rate=200 duration=5s concurrency=64 out= server_args=()
while (($#)); do
    case $1 in
        --conns) conns=$2; shift ;;
        --rooms) rooms=$2; shift ;;
        --rate) rate=$2; shift ;;
        --duration) duration=$2; shift ;;
        --concurrency) concurrency=$2; shift ;;
        --out) out=$2; shift ;;
        --) shift; server_args=("$@"); break ;;
        *) die "unknown argument '$1'" ;;
    esac
    shift
done
loader=target/release/bench-client
[[ -x $loader ]] || die "build the loader first: cargo build --release -p bench-client"
command -v valgrind >/dev/null || die "valgrind is not installed"
out=${out:-$(mktemp -d)}
mkdir -p "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
    "$bin" --addr "127.0.0.1:$port" --io epoll "${server_args[@]}" >"$out/server.log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT

counter() { curl -sf "http://127.0.0.1:$port/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['totals']['$1'])"; }
for _ in $(seq 600); do counter members >/dev/null 2>&1 && break; sleep 0.1; done
counter members >/dev/null || die "the server did not start under valgrind (see $out/server.log)"

# Zeroed before the load starts, so that the instructions and the units count the same
# events whatever the timing (zeroing once the members had joined raced with the first
# messages: +-5 % between runs of one binary).
callgrind_control -z $server >/dev/null
if [[ $measure == deliveries ]]; then
    unit=frames_out
    what="bench-client chat --conns $conns --rooms $rooms --rate $rate --duration $duration"
    before=$(counter $unit)
    "$loader" chat --url "ws://127.0.0.1:$port" --conns "$conns" --rooms "$rooms" --rate "$rate" \
        --duration "$duration" --settle-timeout 120s --connect-timeout 60s --json "$out/load.json" \
        -q >"$out/load.log" 2>&1 || die "bench-client failed (see $out/load.log)"
else
    unit=accepted
    what="bench-client connect --conns $conns --concurrency $concurrency (/echo, churn)"
    before=$(counter $unit)
    "$loader" connect --url "ws://127.0.0.1:$port/echo" --conns "$conns" \
        --concurrency "$concurrency" --timeout 60s --json "$out/load.json" -q \
        >"$out/load.log" 2>&1 || die "bench-client failed (see $out/load.log)"
fi
# The closes are done once /stats shows no connection but its own request.
for _ in $(seq 600); do [[ $(counter active) -le 1 ]] && break; sleep 0.1; done
after=$(counter $unit)
callgrind_control -d $server >/dev/null
ir=$(cat "$out"/callgrind.out.* | awk '/^summary:/ { s += $2 } END { print s }')
units=$((after - before))
{
    echo "binary: $bin"
    echo "load: $what"
    echo "server instructions (Ir, all threads, from the zero to the dump): $ir"
    echo "$unit meanwhile (/stats): $units"
    python3 -c "print(f'instructions per ${unit/frames_out/frame}: {$ir / max($units, 1):.0f}')"
} | tee "$out/summary.txt"
