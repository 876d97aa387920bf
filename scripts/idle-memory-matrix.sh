#!/usr/bin/env bash
# Idle memory per connection over patterns x io x kind x N, each cell run --runs times, one
# after another (RSS is not timing, but each run holds up to 19,000 sockets on a shared
# machine). Loopback only; every run is bounded by scripts/idle-memory.py's deadline.
#
#   scripts/idle-memory-matrix.sh OUT_DIR [--runs 2] [--conns "10000 19000"]
#       [--patterns "single-thread"] [--ios "epoll uring"] [--kinds "echo chat"]
#       [--threads 2] [-- SERVER_ARGS...]
#
# Writes OUT_DIR/raw/<kind>-<pattern>-<io>-<conns>-run<k>.json (one JSON object each; a run
# that fails leaves a .err file instead) and skips cells already there, so a matrix can be
# extended or resumed. Multi-thread patterns get --threads (default 2); single-thread none.
# scripts/idle-memory-table.py OUT_DIR/raw prints the markdown table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${1:?usage: idle-memory-matrix.sh OUT_DIR [options]}
shift
runs=2 conns="10000 19000" patterns=single-thread ios="epoll uring" kinds="echo chat"
threads=2 server_args=()
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --patterns) patterns=$2; shift 2 ;;
        --ios) ios=$2; shift 2 ;;
        --kinds) kinds=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --) shift; server_args=("$@"); break ;;
        *) echo "idle-memory-matrix.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$out/raw"
for n in $conns; do
    for pattern in $patterns; do
        for io in $ios; do
            for kind in $kinds; do
                for ((k = 1; k <= runs; k++)); do
                    file=$out/raw/$kind-$pattern-$io-$n-run$k.json
                    [[ -s $file ]] && continue
                    args=(--conns "$n" --io "$io" --pattern "$pattern")
                    [[ $pattern != single-thread ]] && args+=(--threads "$threads")
                    [[ $kind == chat ]] && args+=(--path '/chat/{room}?name={name}' --room-size 50)
                    ((${#server_args[@]})) && args+=(-- "${server_args[@]}")
                    echo "== $kind $pattern $io $n run $k" >&2
                    if python3 scripts/idle-memory.py "${args[@]}" >"$file.tmp" 2>"$file.err"; then
                        mv "$file.tmp" "$file"
                        rm -f "$file.err"
                        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   ", r["bytes_per_conn"], "B/conn, correct:", r["correct"])' "$file" >&2
                    else
                        rm -f "$file.tmp"
                        tail -3 "$file.err" >&2
                    fi
                done
            done
        done
    done
done
