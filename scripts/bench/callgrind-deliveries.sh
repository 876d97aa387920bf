#!/usr/bin/env bash
# Instructions per delivered frame, from callgrind: a measure of a change's CPU cost that a
# busy machine does not disturb (valgrind counts instructions, not time), for A/B of hot-path
# changes when no quiet machine is at hand.
#
#   scripts/bench/callgrind-deliveries.sh BIN [--conns 200] [--rooms 10] [--rate 200]
#                                         [--duration 5s] [--out DIR] [-- SERVER_ARGS...]
#
# Starts BIN (epoll only: valgrind 3.19 cannot run the io_uring backend) under
# `valgrind --tool=callgrind` on a loopback port, lets bench-client (target/release) open
# --conns chat members in --rooms rooms, zeroes the counters once every member has joined,
# then runs the chat load (--rate messages/s in all for --duration s, plus bench-client's
# warm-up and drain) and dumps the counters when it ends. Prints, and writes to
# DIR/summary.txt: the instructions the server executed (Ir, every thread), the frames it sent
# meanwhile (/stats frames_out: deliveries, and nothing else in a chat run), and their ratio.
# Bounded: one bench-client run; the server is killed at the end. The ratio includes each
# member's share of the closes at the end (the same in A and B).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

die() { echo "callgrind-deliveries.sh: $*" >&2; exit 2; }
bin=${1:-}
[[ -x $bin ]] || die "usage: $0 BIN [--conns N] [--rooms N] [--rate N] [--duration 5s] [--out DIR] [-- SERVER_ARGS...]"
shift
conns=200 rooms=10 rate=200 duration=5s out= server_args=()
while (($#)); do
    case $1 in
        --conns) conns=$2; shift ;;
        --rooms) rooms=$2; shift ;;
        --rate) rate=$2; shift ;;
        --duration) duration=$2; shift ;;
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

"$loader" chat --url "ws://127.0.0.1:$port" --conns "$conns" --rooms "$rooms" --rate "$rate" \
    --duration "$duration" --settle-timeout 120s --connect-timeout 60s --json "$out/load.json" -q \
    >"$out/load.log" 2>&1 &
loader_pid=$!
# Zero once every member is in (their joins and notices are set-up, not load).
for _ in $(seq 1200); do
    [[ $(counter members) -ge $conns ]] && break
    kill -0 $loader_pid 2>/dev/null || die "bench-client ended before the members joined (see $out/load.log)"
    sleep 0.1
done
callgrind_control -z $server >/dev/null
before=$(counter frames_out)
wait $loader_pid || die "bench-client failed (see $out/load.log)"
after=$(counter frames_out)
callgrind_control -d $server >/dev/null
ir=$(cat "$out"/callgrind.out.* | awk '/^summary:/ { s += $2 } END { print s }')
frames=$((after - before))
{
    echo "binary: $bin"
    echo "load: bench-client chat --conns $conns --rooms $rooms --rate $rate --duration $duration"
    echo "server instructions (Ir, all threads, from zero after the joins to the dump): $ir"
    echo "frames sent meanwhile (/stats frames_out): $frames"
    python3 -c "print(f'instructions per frame: {$ir / max($frames, 1):.0f}')"
} | tee "$out/summary.txt"
