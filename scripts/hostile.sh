#!/usr/bin/env bash
# Hostile clients against the release server, on loopback: the heavy version of each attack
# that tests/integration/hostile.rs runs small (A-G of the hardening spec):
#   A pong-flood         300 MB of pings from a client that never reads its pongs
#   B ping-flood         writes of 1,000 pings each (2,000 writes) from a client that reads
#   C who-flood          500 members with 32-character names, one write of 6,000 /who
#   D deflate-bombs      4,096 frames of 1 KB of deflate, each inflating to 1 MiB (--deflate)
#   E endless-message    100 messages whose fragments keep coming, FIN never (--idle-timeout 2s)
#   F tls-over-capacity  2,000 TLS handshakes beyond --max-conns 8 (--tls-self-signed)
#   G mass-disconnect    2,000 members of one room close at once
# Each attack gets a fresh server on 127.0.0.1 (an ephemeral port, read from its start-up
# line); scripts/hostile/attack.py (Python 3 stdlib) attacks it, samples its RSS every 50 ms,
# reads /stats, checks an ordinary client on the attacker's loop, and writes one JSON per
# attack plus README.md (attack | what the server did | RSS before / peak / after) into
# results/hostile/<UTC date>/. Every attack is bounded in count and time (and stops feeding a
# server whose RSS grew by 2 GiB).
#
#   scripts/hostile.sh [--quick] [--pattern P] [--io epoll|uring] [--only A,B,..] [--out DIR]
#                      [--bin PATH]
#
#   --quick    a short version (smaller counts; about a minute in all)
#   --pattern  the server's pattern (default single-thread); multi-loop patterns get 2 loops
#   --io       epoll (default) or uring
#   --only     a comma-separated subset of attacks, by letter or name
#   --out      the results directory (default results/hostile/<UTC date>)
#   --bin      the server binary to attack, e.g. an older build to compare (default: build
#              target/release/wschat from this tree); its commit is then recorded as "given"
# Exit status: 0 when every attack held (the hardened behaviour), 3 when one did not, other
# non-zero when the script itself failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
quick=()
pattern=single-thread
io=epoll
only=""
out=""
bin=""
while (($#)); do
    case $1 in
        --quick) quick=(--quick); shift ;;
        --pattern) pattern=$2; shift 2 ;;
        --io) io=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "hostile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
out=${out:-results/hostile/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock || commit+="-dirty"

loops=()
case $pattern in
    single-thread) ;;
    work-queue) loops=(--workers 2) ;;
    *) loops=(--threads 2) ;;
esac

if [[ -z $bin ]]; then
    echo "building the release server ..."
    cargo build --release -q -p wschat
    bin=target/release/wschat
else
    [[ -x $bin ]] || { echo "hostile.sh: --bin $bin is not an executable" >&2; exit 2; }
    commit="given:$bin"
fi

# attack letter, name, server flags, attack.py flags
attacks=(
    "A pong-flood"
    "B ping-flood"
    "C who-flood"
    "D deflate-bombs --deflate"
    "E endless-message --idle-timeout 2s --ping-interval 0s"
    "F tls-over-capacity --tls-self-signed --max-conns 8"
    "G mass-disconnect"
)
[[ ${#quick[@]} -gt 0 ]] && attacks[4]="E endless-message --idle-timeout 1s --ping-interval 0s"

log=$(mktemp)
server=""
stop_server() {
    [[ -n $server ]] || return 0
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}
trap 'stop_server; rm -f "$log"' EXIT

held=0
ran=0
for entry in "${attacks[@]}"; do
    read -r letter name flags <<<"$entry"
    read -ra flags <<<"${flags:-}"
    if [[ -n $only && ! ",$only," =~ ,($letter|$name), ]]; then
        continue
    fi
    echo
    args=(--pattern "$pattern" --io "$io" "${loops[@]}" "${flags[@]}")
    echo "$letter $name: wschat ${args[*]}"
    "$bin" --addr 127.0.0.1:0 "${args[@]}" >"$log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    [[ -n $addr ]] || {
        echo "hostile.sh: $bin printed no address within 10 s; its output:" >&2
        cat "$log" >&2
        exit 1
    }
    extra=()
    [[ $name == tls-over-capacity ]] && extra=(--tls --max-conns 8)
    [[ $name == endless-message ]] && extra=(--idle-timeout "${flags[1]%s}")
    json="$out/$pattern-$io-$letter-$name.json"
    status=0
    timeout 300 python3 scripts/hostile/attack.py run "$name" --addr "$addr" --pid "$server" \
        --out "$json" --pattern "$pattern" --io "$io" --commit "$commit" \
        --server-args "${args[*]}" "${quick[@]}" "${extra[@]}" || status=$?
    stop_server
    if ((status != 0)); then
        echo "$name: the attacker failed (exit $status); server log:" >&2
        sed 's/^/   /' "$log" >&2
        exit 1
    fi
    ran=$((ran + 1))
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["held"] else 1)' \
        "$json" && held=$((held + 1))
done

echo
python3 scripts/hostile/attack.py report "$out" >/dev/null
echo "results: $out (README.md and one JSON per attack); $held of $ran attacks held"
((held == ran)) || exit 3
