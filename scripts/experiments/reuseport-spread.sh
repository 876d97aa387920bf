#!/usr/bin/env bash
# Experiment 6: reuseport spread, and what happens to queued connections when one of the
# listeners closes.
#   spread    probes.py spread: M SO_REUSEPORT listeners (M = 2, 4, 8) on one port in one
#             process, N = 2000 connections; per-listener counts, max/mean, chi-square
#   wschat    wschat --pattern reuseport --threads 4, bench-client connect 2000: /stats accepted
#   pitfall   two wschat reuseport processes (one loop each) on one port, each stalled after
#             its first accept (--accept-delay-us), 40 clients connected and queued; process A
#             is killed: the clients queued on A's listener are reset. Then again with
#             net.ipv4.tcp_migrate_req=1 (Linux 5.14+): they move to B's queue.
#
#   scripts/experiments/reuseport-spread.sh [--runs 3]
# Writes results/experiments/reuseport-spread/. About 1 minute.
set -euo pipefail
EXP_COMMAND="scripts/experiments/reuseport-spread.sh${*:+ $*}"
source "$(dirname "$0")/lib.sh"
runs=3
while (($#)); do
    case $1 in
        --runs) runs=$2; shift ;;
        -h | --help) exp_usage; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
exp_init reuseport-spread
raw=$OUT/raw
P="$root/scripts/experiments/probes.py"
for r in $(seq "$runs"); do
    for m in 2 4 8; do
        ns python3 "$P" spread $((9000 + m)) "$m" 2000 >"$raw/spread-m$m-run$r.json"
    done
    start_server "$raw/wschat-run$r.server.log" --pattern reuseport --threads 4
    stats "$raw/wschat-run$r-0.json"
    bench connect --url "ws://127.0.0.1:$PORT/echo" --conns 2000 --concurrency 50 -q --json "$raw/wschat-run$r.json" >/dev/null 2>&1 || true
    stats "$raw/wschat-run$r-1.json"
    stop_server
done
note "spread done"
for migrate in 0 1; do
    set_sysctl net.ipv4.tcp_migrate_req "$migrate" || { note "no tcp_migrate_req"; continue; }
    for r in $(seq "$runs"); do
        tag=pitfall-migrate$migrate-run$r
        port=$((8100 + r + 10 * migrate))
        start_server "$raw/$tag-A.log" --addr 127.0.0.1:$port --pattern reuseport --threads 1 --accept-delay-us 8000000 --backlog 128
        A=$SERVER_PID
        start_server "$raw/$tag-B.log" --addr 127.0.0.1:$port --pattern reuseport --threads 1 --accept-delay-us 8000000 --backlog 128
        B=$SERVER_PID
        fifo=$raw/$tag.fifo; rm -f "$fifo"; mkfifo "$fifo"
        ns python3 "$P" hold "$port" 40 20 <"$fifo" >"$raw/$tag.json" &
        holder=$!
        exec 3>"$fifo"
        for _ in $(seq 100); do grep -q opened "$raw/$tag.json" 2>/dev/null && break; sleep 0.05; done
        sleep 0.3
        ns ss -Hlnt "sport = :$port" >"$raw/$tag.ss-before"
        kill -KILL "$A"; wait "$A" 2>/dev/null || true
        sleep 0.2
        ns ss -Hlnt "sport = :$port" >"$raw/$tag.ss-after"
        echo go >&3; exec 3>&-
        wait "$holder" || true
        rm -f "$fifo"
        stop_server "$B"
        note "$tag: $(tail -1 "$raw/$tag.json") queues before: $(awk '{printf "%s ", $2}' "$raw/$tag.ss-before") after: $(awk '{printf "%s ", $2}' "$raw/$tag.ss-after")"
    done
done
exp_noise
python3 - "$OUT" "$runs" "$EXP_COMMAND" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "..", "..", "..", "scripts", "experiments"))
import exp
out, runs, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = os.path.join(out, "raw")
crit = {1: 3.84, 3: 7.81, 7: 14.07}  # chi-square, p = 0.05
rows, data = [], {"spread": {}, "wschat": [], "pitfall": {}}
for m in (2, 4, 8):
    per = []
    for r in range(1, runs + 1):
        try:
            d = exp.load(os.path.join(raw, f"spread-m{m}-run{r}.json"))
        except (OSError, ValueError):
            continue
        c = d["counts"]
        per.append({"counts": c, "max_mean": exp.spread(c), "chi2": exp.chi_square(c)})
    data["spread"][m] = per
    rows.append([m, 2000, "; ".join("/".join(map(str, x["counts"])) for x in per), exp.med([x["max_mean"] for x in per]),
                 exp.med([x["chi2"] for x in per]), crit[m - 1], sum(1 for x in per if x["chi2"] > crit[m - 1])])
wrows = []
for r in range(1, runs + 1):
    try:
        a, b = exp.load(os.path.join(raw, f"wschat-run{r}-0.json")), exp.load(os.path.join(raw, f"wschat-run{r}-1.json"))
    except (OSError, ValueError):
        continue
    acc = [x["accepted"] for x in exp.thread_delta(a, b, ("loop",))]
    data["wschat"].append(acc)
    wrows.append([r, "/".join(map(str, acc)), exp.spread(acc), exp.chi_square(acc)])
prows = []
for mig in (0, 1):
    per = []
    for r in range(1, runs + 1):
        tag = f"pitfall-migrate{mig}-run{r}"
        try:
            lines = open(os.path.join(raw, f"{tag}.json")).read().splitlines()
            fates = json.loads(lines[-1])
            qb = [int(l.split()[1]) for l in open(os.path.join(raw, f"{tag}.ss-before")) if l.split()]
            qa = [int(l.split()[1]) for l in open(os.path.join(raw, f"{tag}.ss-after")) if l.split()]
        except (OSError, ValueError, IndexError):
            continue
        per.append({"fates": fates, "queues_before": qb, "queues_after": qa})
        prows.append([mig, r, "/".join(map(str, qb)), "/".join(map(str, qa)), fates.get("reset"), fates.get("alive"), fates.get("closed")])
    data["pitfall"][mig] = per
g = lambda mig, k: exp.med([x["fates"].get(k) for x in data["pitfall"].get(mig, [])])
s8 = exp.med([x["max_mean"] for x in data["spread"][8]])
verdict = [
    f"The hash spreads evenly in aggregate: 2000 connections over 8 listeners, max/mean {s8:.2f} (median of {runs}); chi-square "
    f"stays under the 5 % critical value in {sum(1 for m in (2,4,8) for x in data['spread'][m] if x['chi2'] <= crit[m-1])} of "
    f"{sum(len(data['spread'][m]) for m in (2,4,8))} runs: what a uniform random choice gives, not round-robin.",
    f"Pitfall holds: killing one of two reuseport processes reset {g(0,'reset')} of 40 clients (median), exactly the ones waiting "
    f"in its accept queue ({exp.med([sum(x['queues_before']) - sum(x['queues_after']) for x in data['pitfall'].get(0, [])])} "
    f"vanished from ss); the one it had accepted got a FIN. With tcp_migrate_req=1: {g(1,'reset')} resets, the queued "
    f"connections moved to the surviving listener's queue (Recv-Q after: {'/'.join(str(sum(x['queues_after'])) for x in data['pitfall'].get(1, []))}).",
]
sections = ["**Spread** (`probes.py spread`: M listeners with SO_REUSEPORT in one process, 2000 connections, each run a "
            "fresh set of ephemeral ports). The chi-square column tests the counts against an even split (5 % critical value "
            "for M−1 degrees of freedom).",
            exp.table(["listeners", "connections", "per listener (each run)", "max/mean", "chi-square", "5 % critical", "runs over it"], rows),
            "**wschat reuseport --threads 4** (bench-client connect 2000, 50 in flight): `accepted` per loop.",
            exp.table(["run", "accepted per loop", "max/mean", "chi-square"], wrows),
            "**The pitfall**: two `wschat --pattern reuseport --threads 1 --accept-delay-us 8000000` processes on one port, "
            "each stalled after its first accept; 40 clients connect and wait in the two queues (Recv-Q); process A is killed "
            "(SIGKILL: its listener closes). Fates of the 40 clients 0.5 s later.",
            exp.table(["tcp_migrate_req", "run", "queues before (ss Recv-Q)", "queue after", "reset", "alive", "closed"], prows),
            "When a SO_REUSEPORT listener closes, the connections completed in its accept queue belong to it and are reset "
            "with it, although another listener on the same port could have taken them; new SYNs simply hash over the "
            "remaining listeners. `net.ipv4.tcp_migrate_req=1` (Linux 5.14) makes the kernel move them (and requests "
            "still in the SYN stage) to another listener of the group. The per-group alternative is an "
            "`SK_REUSEPORT` BPF program (`SO_ATTACH_REUSEPORT_EBPF`, program type `BPF_PROG_TYPE_SK_REUSEPORT`), which picks "
            "the listener for every new connection from a `REUSEPORT_SOCKARRAY` map: a server can then drain a listener "
            "by removing it from the map before closing it, or steer by load; with attach type "
            "`BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` the same program also chooses where migrated requests go. wschat has "
            "no BPF program; it relies on the hash."]
doc = {"name": "reuseport-spread", "title": "6. Reuseport spread and the closing listener", "command": command,
       "verdict": verdict, "sections": sections, "patterns": ["reuseport.md"], "data": data}
json.dump(doc, open(os.path.join(out, "result.json"), "w"), indent=1)
print("\n".join(verdict))
EOF
python3 "$root/scripts/experiments/exp.py" render >&2
