#!/usr/bin/env bash
# A/B: two server binaries in the same chat scenario, runs alternated back to back, so that a
# change's cost is measured side by side on one machine in one sitting.
#
#   scripts/bench/ab.sh --a BIN --a-label NAME --b BIN --b-label NAME --out DIR
#                       [--runs 3] [--rates "1000 5000"] [--duration 5] [--quiet-wait 60]
#                       [-- SERVER_ARGS...]
#
# Layout: server `taskset -c 0`, bench-client (target/release, the same for both) `taskset -c
# 1`; chat --conns 1000 --rooms 20 (rooms of 50: each message reaches 49), text messages, one
# run of each binary per rate per round, A first in odd rounds and B first in even ones. Before
# each run it waits (at most --quiet-wait s) for the machine to be < 10 % busy, and records
# the other load during the run (scripts/bench/noise.py) in each JSON's host_noise.
# Writes DIR/<label>-r<rate>-<round>.json and DIR/README.md (medians and every run).
# Messages: text, bench-client's default since 2026-12-06 (the server's text path: UTF-8
# validation, "<name> says: "); A/B results committed before that date sent binary messages,
# so compare a new run with an old one only after checking config.messages in both JSONs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

die() { echo "ab.sh: $*" >&2; exit 2; }
a= al= b= bl= out= runs=3 rates="1000 5000" duration=5 quiet_wait=60 server_args=()
while (($#)); do
    case $1 in
        --a) a=$2; shift ;;
        --a-label) al=$2; shift ;;
        --b) b=$2; shift ;;
        --b-label) bl=$2; shift ;;
        --out) out=$2; shift ;;
        --runs) runs=$2; shift ;;
        --rates) rates=$2; shift ;;
        --duration) duration=$2; shift ;;
        --quiet-wait) quiet_wait=$2; shift ;;
        --) shift; server_args=("$@"); break ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
[[ -x $a && -x $b && -n $al && -n $bl && -n $out ]] || die "--a, --a-label, --b, --b-label and --out are required"
loader=target/release/bench-client
[[ -x $loader ]] || die "build the loader first: cargo build --release -p bench-client"
noise=scripts/bench/noise.py
mkdir -p "$out"

# run BIN LABEL RATE ROUND
run() {
    local bin=$1 label=$2 rate=$3 round=$4 log json pid addr
    log=$(mktemp)
    json=$out/$label-r$rate-$round.json
    read -r waited quiet_pct < <(python3 "$noise" wait-quiet "$quiet_wait")
    taskset -c 0 "$bin" --addr 127.0.0.1:0 "${server_args[@]}" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    [[ -n $addr ]] || { cat "$log"; die "$bin did not start"; }
    local busy0 t0 server0 times0 busy1 t1 server1 times1
    busy0=$(python3 "$noise" busy); t0=$(date +%s.%N); server0=$(python3 "$noise" proc $pid)
    times0=$(mktemp); times >"$times0"
    taskset -c 1 "$loader" chat --url "ws://$addr" --conns 1000 --rooms 20 --rate "$rate" \
        --warmup 1s --duration "${duration}s" --drain 3s --server-pid $pid --json "$json" -q \
        >/dev/null 2>&1 || echo "ab.sh: loader failed for $label rate $rate round $round" >&2
    busy1=$(python3 "$noise" busy); t1=$(date +%s.%N); server1=$(python3 "$noise" proc $pid)
    times1=$(mktemp); times >"$times1"
    kill -TERM $pid; wait $pid 2>/dev/null || true
    rm -f "$log"
    python3 "$noise" annotate "$json" "$busy0" "$busy1" "$t0" "$t1" "$server0" "$server1" \
        "$times0" "$times1" "$waited" "$quiet_pct" || echo "ab.sh: no host_noise for $json" >&2
    rm -f "$times0" "$times1"
    echo "ab.sh: $label rate=$rate round=$round done" >&2
}

for round in $(seq "$runs"); do
    for rate in $rates; do
        if ((round % 2)); then
            run "$a" "$al" "$rate" "$round"; run "$b" "$bl" "$rate" "$round"
        else
            run "$b" "$bl" "$rate" "$round"; run "$a" "$al" "$rate" "$round"
        fi
    done
done

python3 - "$out" "$al" "$bl" "$rates" "$*" <<'EOF'
import glob, json, os, statistics, sys
out, al, bl, rates = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
def load(label, rate):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, f"{label}-r{rate}-*.json"))):
        d = json.load(open(path))
        p = d["histograms"]["latency_us"]["percentiles"]
        noise = d.get("host_noise", {})
        runs.append({
            "file": os.path.basename(path),
            "p50": p.get("p50"), "p99": p.get("p99"),
            "cpu": d["server"].get("cpu_us_per_delivery"),
            "delivered": d["rates"].get("delivered_per_s"),
            "correct": d.get("correct"),
            "other": noise.get("foreign_pct_of_machine"),
        })
    return runs
def med(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    return statistics.median(vals) if vals else None
def fmt(v, nd=2):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
lines = ["# A/B: " + al + " vs " + bl, "",
         "`scripts/bench/ab.sh` (server `taskset -c 0`, bench-client `taskset -c 1`, chat --conns 1000 --rooms 20, "
         "runs alternated); medians of the runs below.", "",
         "| rate msg/s | server | server µs/delivery (min-max) | p50 µs | p99 µs | all correct |",
         "|---:|---|---:|---:|---:|---|"]
for rate in rates:
    for label in (al, bl):
        runs = load(label, rate)
        cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
        spread = f"{min(cpus):.2f}-{max(cpus):.2f}" if cpus else "-"
        lines.append(f"| {rate} | {label} | {fmt(med(runs,'cpu'))} ({spread}) | {fmt(med(runs,'p50'),0)} | "
                     f"{fmt(med(runs,'p99'),0)} | {all(r['correct'] for r in runs)} |")
lines += ["", "Every run:", "", "| file | server µs/delivery | p50 µs | p99 µs | delivered/s | correct | other load % |",
          "|---|---:|---:|---:|---:|---|---:|"]
for rate in rates:
    for label in (al, bl):
        for r in load(label, rate):
            lines.append(f"| [{r['file']}]({r['file']}) | {fmt(r['cpu'])} | {fmt(r['p50'],0)} | {fmt(r['p99'],0)} | "
                         f"{fmt(r['delivered'],0)} | {r['correct']} | {fmt(r['other'],1)} |")
open(os.path.join(out, "README.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
