#!/usr/bin/env bash
# Experiment 2: the thundering herd. multi-accept with --accept-wakeup all (every waiting
# loop is woken per connection) vs exclusive (EPOLLEXCLUSIVE: one) vs reuseport (one queue
# per loop), --threads 2 4 8 16 (more threads than this machine's cores from 4 up), on
# --io epoll and --io uring, driven two ways:
#   paced   probes.py paced: connect+close, 2 ms apart: every arrival finds the pool asleep
#   storm   bench-client connect --conns 1000 --concurrency 50 (churn): the pool is busy
#
#   scripts/experiments/herd.sh [--runs 3] [--threads "2 4 8 16"] [--ios "epoll uring"]
#
# Per run, from /stats before/after: real wake-ups (voluntary context switches of the loop
# threads, /proc) and futile accepts per accepted connection, the spread of accepted
# connections over threads (max/mean; 1.0 is even), and server CPU per connection
# (/proc/PID/task/*/schedstat, ns). The idle rate of context switches (1 s with no load) is
# measured per server and subtracted. Writes results/experiments/herd/. About 3 minutes.
set -euo pipefail
EXP_COMMAND="scripts/experiments/herd.sh${*:+ $*}"
source "$(dirname "$0")/lib.sh"
runs=3 threads="2 4 8 16" ios="epoll uring" paced_n=200 storm_n=1000
while (($#)); do
    case $1 in
        --runs) runs=$2; shift ;;
        --threads) threads=$2; shift ;;
        --ios) ios=$2; shift ;;
        -h | --help) exp_usage; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
exp_init herd
raw=$OUT/raw
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

for io in $ios; do
    for mode in all exclusive reuseport; do
        for t in $threads; do
            tag=$io-$mode-t$t
            if [[ $mode == reuseport ]]; then
                start_server "$raw/$tag.server.log" --pattern reuseport --threads "$t" --io "$io"
            else
                start_server "$raw/$tag.server.log" --pattern multi-accept --accept-wakeup "$mode" --threads "$t" --io "$io"
            fi
            sleep 0.3
            stats "$raw/$tag-idle0.json"; sleep 1; stats "$raw/$tag-idle1.json"
            for r in $(seq "$runs"); do
                c0=$(cpu_ns "$SERVER_PID"); stats "$raw/$tag-paced-run$r-0.json"
                ns python3 "$root/scripts/experiments/probes.py" paced "$PORT" "$paced_n" 2 >"$raw/$tag-paced-run$r.probe.json"
                stats "$raw/$tag-paced-run$r-1.json"; c1=$(cpu_ns "$SERVER_PID")
                echo "$c0 $c1" >"$raw/$tag-paced-run$r.cpu"
                c0=$(cpu_ns "$SERVER_PID"); stats "$raw/$tag-storm-run$r-0.json"
                bench connect --url "ws://127.0.0.1:$PORT/echo" --conns "$storm_n" --concurrency 50 --timeout 10s \
                    --time-limit 60s -q --json "$raw/$tag-storm-run$r.bench.json" >/dev/null 2>&1 || note "storm $tag run $r failed"
                stats "$raw/$tag-storm-run$r-1.json"; c1=$(cpu_ns "$SERVER_PID")
                echo "$c0 $c1" >"$raw/$tag-storm-run$r.cpu"
            done
            stop_server
            note "$tag done"
        done
    done
done
exp_noise

python3 - "$OUT" "$ios" "$threads" "$runs" "$EXP_COMMAND" "$paced_n" "$storm_n" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__ if '__file__' in dir() else sys.argv[0])), ""))
sys.path.insert(0, os.path.join(sys.argv[1], "..", "..", "..", "scripts", "experiments"))
import exp
out, ios, threads, runs, command, paced_n, storm_n = sys.argv[1], sys.argv[2].split(), [int(x) for x in sys.argv[3].split()], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
raw = os.path.join(out, "raw")
L = lambda p: exp.load(os.path.join(raw, p))
data, rows = {}, {}
for io in ios:
    for mode in ("all", "exclusive", "reuseport"):
        for t in threads:
            tag = f"{io}-{mode}-t{t}"
            if not os.path.exists(os.path.join(raw, f"{tag}-idle1.json")):
                continue
            i0, i1 = L(f"{tag}-idle0.json"), L(f"{tag}-idle1.json")
            idle_rate = sum(d["voluntary_switches"] for d in exp.thread_delta(i0, i1, ("loop",))) / max(1e-3, i1["uptime_secs"] - i0["uptime_secs"])
            for drive in ("paced", "storm"):
                per = []
                for r in range(1, runs + 1):
                    try:
                        a, b = L(f"{tag}-{drive}-run{r}-0.json"), L(f"{tag}-{drive}-run{r}-1.json")
                    except (OSError, ValueError):
                        continue
                    d = exp.thread_delta(a, b, ("loop",))
                    acc = [x["accepted"] for x in d]
                    n = sum(acc)
                    secs = b["uptime_secs"] - a["uptime_secs"]
                    vcs = sum(x["voluntary_switches"] for x in d) - idle_rate * secs
                    c0, c1 = map(int, open(os.path.join(raw, f"{tag}-{drive}-run{r}.cpu")).read().split())
                    per.append({"accepted": n, "per_thread": acc, "vcs_per_conn": vcs / n if n else None,
                                "futile_per_conn": sum(x["futile_accepts"] for x in d) / n if n else None,
                                "listener_wakeups_per_conn": sum(x["listener_wakeups"] for x in d) / n if n else None,
                                "cpu_us_per_conn": (c1 - c0) / 1000 / n if n else None,
                                "spread": exp.spread(acc), "idle_vcs_per_s": idle_rate, "secs": secs})
                data[f"{tag}-{drive}"] = per
                m = lambda k: exp.med([x[k] for x in per])
                mid = sorted(per, key=lambda x: x["spread"] or 0)[len(per) // 2] if per else None
                rows.setdefault((io, drive), []).append([
                    mode, t, ("yes" if t > 2 else "no"), m("accepted"), m("vcs_per_conn"), m("futile_per_conn"),
                    m("listener_wakeups_per_conn"), m("cpu_us_per_conn"), m("spread"),
                    "/".join(str(x) for x in mid["per_thread"]) if mid else "—"])
hdr = ["mode", "threads", "threads > cores", "accepted", "wake-ups (vol. switches) / conn", "futile accepts / conn",
       "listener wake-ups / conn", "server CPU µs / conn", "spread max/mean", "accepted per thread (median run)"]
sections = [f"`multi-accept --accept-wakeup all|exclusive` and `reuseport`, `--threads` {', '.join(map(str, threads))} "
            f"(this machine has 2 cores: 4 and more threads oversubscribe it). **paced**: {paced_n} connect+close, 2 ms apart "
            f"(the pool is asleep at each arrival); **storm**: bench-client connect {storm_n} handshakes, 50 in flight. "
            f"Medians of {runs} runs per cell, one server per row; wake-ups are the loop threads' voluntary context "
            "switches minus their idle rate (measured 1 s per server), per accepted connection (the /stats request included)."]
for (io, drive), rs in rows.items():
    sections += [f"**{io}, {drive}**", exp.table(hdr, rs)]
def cell(io, drive, mode, t, k):
    per = data.get(f"{io}-{mode}-t{t}-{drive}", [])
    return exp.med([x[k] for x in per])
tmax = max(threads)
v = []
for io in ios:
    a2, e2 = cell(io, "paced", "all", 2, "vcs_per_conn"), cell(io, "paced", "exclusive", 2, "vcs_per_conn")
    aM, eM = cell(io, "paced", "all", tmax, "vcs_per_conn"), cell(io, "paced", "exclusive", tmax, "vcs_per_conn")
    rM = cell(io, "paced", "reuseport", tmax, "vcs_per_conn")
    sa, se = cell(io, "storm", "all", tmax, "vcs_per_conn"), cell(io, "storm", "exclusive", tmax, "vcs_per_conn")
    spe, spa = cell(io, "paced", "exclusive", 2, "spread"), cell(io, "paced", "all", 2, "spread")
    f = lambda x: "—" if x is None else f"{x:.2f}"
    v.append(f"{io}: paced connects to an idle pool: `all` costs {f(a2)} wake-ups per connection with 2 threads and {f(aM)} "
             f"with {tmax} (exclusive {f(e2)} and {f(eM)}, reuseport {f(rM)}): the herd grows with the pool, about one wake-up "
             f"per sleeping thread. Storm, {tmax} threads: all {f(sa)}, exclusive {f(se)}.")
    fut = cell(io, 'paced', 'all', tmax, 'futile_per_conn')
    v.append(f"{io}: futile accepts per connection (`all`, paced, {tmax} threads) {f(fut)}"
             + (": far below the wake-ups, because epoll re-checks the listener and puts most losers back to sleep inside "
                "epoll_wait, unseen by user space" if io == "epoll" else
                ": nearly every loser returns to user space and fails its accept (a poll completion cannot be taken back)")
             + f". Spread (max/mean, 2 threads, paced; 1.0 is even): exclusive {f(spe)}, all {f(spa)}, "
             f"reuseport {f(cell(io, 'paced', 'reuseport', 2, 'spread'))}"
             + (": EPOLLEXCLUSIVE wakes the same waiter every time an idle pool is reached." if io == "epoll" else
                ": single-shot accepts re-armed per connection queue the loops in turn, so exclusive alternates."))
verdict = [v[0]] + v[1:]
doc = {"name": "herd", "title": "2. Thundering herd", "command": command, "verdict": verdict, "sections": sections,
       "patterns": ["multi-accept.md", "reuseport.md"], "data": data}
json.dump(doc, open(os.path.join(out, "result.json"), "w"), indent=1)
print("\n".join(verdict))
EOF
python3 "$root/scripts/experiments/exp.py" render >&2
