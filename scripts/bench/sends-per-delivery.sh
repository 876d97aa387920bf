#!/usr/bin/env bash
# Sends per frame and CPU per delivery, epoll beside io_uring, on one layout: the question
# behind "io_uring issues more sends than epoll issues writevs". For each rate and run, a
# single-thread server (`taskset -c 0`) takes bench-client chat (`taskset -c 1`: 1,000
# connections, rooms of 50, 5 s) on each backend in turn, and /stats is saved after the load:
# `sendmsg` counts sendmsg(2) calls (epoll) or SENDMSG submissions (io_uring), `frames_out`
# the frames they carried.
#
#   scripts/bench/sends-per-delivery.sh OUT_DIR [--rates "1000 2000"] [--runs 3] [-- SERVER_ARGS...]
#
# SERVER_ARGS go to both servers (e.g. `-- --pattern reuseport --threads 2`: both loops then
# share core 0).
# Writes OUT_DIR/<io>-r<rate>-<run>.json (bench-client) and .stats.json (/stats), and prints a
# table. Loopback only; each run is bounded by bench-client's duration and drain.
# Messages: text, bench-client's default since 2026-12-06; results committed before that date
# sent binary messages. Frames and writes per delivery do not depend on the type.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:?usage: sends-per-delivery.sh OUT_DIR [--rates LIST] [--runs N]}
shift
rates="1000 2000" runs=3 server_args=()
while (($#)); do
    case $1 in
        --rates) rates=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --) shift; server_args=("$@"); break ;;
        *) echo "sends-per-delivery.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
for rate in $rates; do
    for run in $(seq 1 "$runs"); do
        for io in epoll uring; do
            port=$((19000 + RANDOM % 1000))
            taskset -c 0 target/release/wschat --addr "127.0.0.1:$port" --io "$io" "${server_args[@]}" >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 1 50); do
                (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
                sleep 0.1
            done
            taskset -c 1 target/release/bench-client chat --url "ws://127.0.0.1:$port" \
                --conns 1000 --rooms 20 --rate "$rate" --duration 5s --server-pid "$pid" \
                --quiet --json "$out/$io-r$rate-$run.json" >/dev/null 2>&1 || true
            curl -s "http://127.0.0.1:$port/stats" >"$out/$io-r$rate-$run.stats.json"
            kill -INT "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
done
python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "*-r*-*.json"))):
    if f.endswith(".stats.json"):
        continue
    io, rate, run = os.path.basename(f)[:-5].split("-")
    run_json = json.load(open(f))
    totals = json.load(open(f[:-5] + ".stats.json"))["totals"]
    lat = run_json["histograms"]["latency_us"]["percentiles"]
    rows.setdefault((int(rate[1:]), io), []).append((
        totals["sendmsg"] / totals["frames_out"], run_json["server"]["cpu_us_per_delivery"],
        lat["p50"], lat["p99"], run_json["correct"], run_json["verdicts"]["kept_up"]))
print("| msg/s | io | sends per frame (each run) | server µs/delivery (each run, median) | p50 µs (median) | p99 µs (median) | correct, kept up |")
print("|---:|---|---|---|---:|---:|---|")
for (rate, io), v in sorted(rows.items()):
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"| {rate} | {io} | {' / '.join(f'{x[0]:.3f}' for x in v)} | "
          f"{' / '.join(f'{x[1]:.2f}' for x in v)} ({med(1):.2f}) | {med(2):.0f} | {med(3):.0f} | "
          f"{all(x[4] for x in v)}, {all(x[5] for x in v)} |")
PY
