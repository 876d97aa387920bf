#!/usr/bin/env bash
# Experiment 5: Nagle's algorithm, per round trip (scripts/experiments/nagle-probe.py).
#   writer     a minimal writer (Python sockets) doing write, write, read against a peer that
#              answers only once it has both parts (so it delays its ACK), TCP_NODELAY off
#              and on taking turns round trip by round trip on two connections, in one run:
#              the writer's Nagle alone
#   chat       wschat with and without --no-nodelay: S sends m1, then m2 300 µs later (the
#              server reads them in two loop iterations and writes to R twice, R sending
#              nothing in between), R answers once it has both, S waits for the answer
#   chat-joined  the same with m1 and m2 in one write (one iteration: one sendmsg to R)
#   echo-two / echo-two-gap  /echo, two frames in two client writes, back to back or 300 µs
#              apart (the old experiment's cases)
#   writes     strace of the server (sendmsg/recvfrom) during each wschat case: per round
#              trip, one sendmsg or two, and whether the server read from that client between
# Every round trip's latency is kept (raw/*.json); the tables are percentiles over them.
# Layout (2 cores): wschat pinned to CPU 1 (taskset -a -p), the probes to CPU 0; the
# writer's peer on CPU 1.
#
#   scripts/experiments/nagle.sh [--round-trips 300] [--strace-round-trips 100]
#   scripts/experiments/nagle.sh --summary-only DATE   tables and verdict again from nagle/DATE/raw
# Writes results/experiments/nagle/<UTC date>/ and nagle/result.json. About 1.5 minutes.
set -euo pipefail
EXP_COMMAND="scripts/experiments/nagle.sh${*:+ $*}"
EXP_NO_BENCH=1
source "$(dirname "$0")/lib.sh"
n=300 ns_=100 only=
while (($#)); do
    case $1 in
        --round-trips) n=$2; shift ;;
        --strace-round-trips) ns_=$2; shift ;;
        --summary-only) only=$2; shift ;;
        -h | --help) exp_usage; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -n $only ]]; then
    OUT=$root/results/experiments/nagle day=$only
    n=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["variants"]["nodelay_off"]["count"])' "$OUT/$day/raw/writer.json")
    EXP_COMMAND=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["command"])' "$OUT/$day/result.json")
else
    command -v strace >/dev/null || die "strace is needed (apt-get install strace)"
    exp_init nagle
    rmdir "$OUT/raw" 2>/dev/null || true
    day=$(date -u +%F)
    DAY=$OUT/$day
    raw=$DAY/raw
    mkdir -p "$raw"
    rm -f "$raw"/*
    P="$root/scripts/experiments/nagle-probe.py"
    probe() { ns taskset -c 0 timeout 200 python3 "$P" "$@"; }

    note "writer: $n round trips each, NODELAY off and on in turn"
    probe raw "$n" 0 1 >"$raw/writer.json"

    for nd in nodelay no-nodelay; do
        extra=(); [[ $nd == no-nodelay ]] && extra=(--no-nodelay)
        start_server "$raw/server-$nd.log" --pattern single-thread --io epoll "${extra[@]}"
        taskset -a -p -c 1 "$SERVER_PID" >/dev/null
        for t in "chat split" "chat joined" "echo two" "echo two-gap"; do
            read -r kind mode <<<"$t"
            name=$kind-$mode; [[ $mode == split ]] && name=chat
            note "$nd $name: $n round trips"
            probe "$kind" "$PORT" "$n" "$mode" >"$raw/$nd-$name.json"
            strace -f -p "$SERVER_PID" -e trace=recvfrom,recvmsg,read,readv,sendmsg,writev,write -s 64 \
                -o "$raw/$nd-$name.strace" 2>/dev/null &
            st=$!
            sleep 1 # strace attaches
            probe "$kind" "$PORT" "$ns_" "$mode" >"$raw/$nd-$name.under-strace.json"
            kill -INT "$st" 2>/dev/null || true
            wait "$st" 2>/dev/null || true
            python3 "$P" writes "$raw/$nd-$name.strace" "$kind" >"$raw/$nd-$name.writes.json"
            gzip -f "$raw/$nd-$name.strace"
        done
        stop_server
    done
    exp_noise
    cp "$OUT/machine.json" "$OUT/noise.json" "$DAY/"
fi
python3 - "$OUT" "$day" "$n" "$EXP_COMMAND" <<'EOF'
import json, os, sys
out, day, n, command = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
raw = os.path.join(out, day, "raw")
L = lambda f: json.load(open(os.path.join(raw, f)))
link = lambda f: f"[{f}]({day}/raw/{f})"  # relative to nagle/; re-rooted for the README below
rows, data = [], {}
w = L("writer.json")
hdr = ["case", "writer", "round trips", "p50 ms", "p90 ms", "p99 ms", "max ms", "over 30 ms", "raw"]
for k in ("nodelay_off", "nodelay_on"):
    v = w["variants"][k]
    data[f"writer-{k}"] = {x: y for x, y in v.items() if x != "latency_ms"}
    rows.append(["write, write, read vs delayed-ACK peer", "TCP_NODELAY " + k.split("_")[1], v["count"], v["p50_ms"], v["p90_ms"],
                 v["p99_ms"], v["max_ms"], f"{v['over_30ms']} of {v['count']}", link("writer.json")])
what = {"chat": "chat: m1, m2 300 µs apart, then R answers", "chat-joined": "chat: m1+m2 in one write, then R answers",
        "echo-two": "/echo: two frames back to back", "echo-two-gap": "/echo: two frames 300 µs apart"}
wrows = []
for name in what:
    for nd in ("nodelay", "no-nodelay"):
        v = L(f"{nd}-{name}.json")
        data[f"{nd}-{name}"] = {x: y for x, y in v.items() if x != "latency_ms"}
        rows.append([what[name], "wschat " + ("--no-nodelay" if nd == "no-nodelay" else "default (NODELAY)"), v["count"],
                     v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"], f"{v['over_30ms']} of {v['count']}", link(f"{nd}-{name}.json")])
        c, u = L(f"{nd}-{name}.writes.json"), L(f"{nd}-{name}.under-strace.json")
        # round trip i is latency_ms[i] when none was lost
        slow = {i for i, x in enumerate(u["latency_ms"]) if x > 30} if u["lost"] == 0 else set()
        c["stalled_and_two_sendmsg"] = len(slow & set(c["two_sendmsg_round_trips"]))
        c["stalled_under_strace"] = len(slow)
        data[f"{nd}-{name}-writes"] = c
        wrows.append([what[name], "--no-nodelay" if nd == "no-nodelay" else "default", c["round_trips"], c["one_sendmsg"],
                      c["two_sendmsg_no_read_between"], c["two_sendmsg_read_between"], f"{u['over_30ms']} of {u['count']}", c["stalled_and_two_sendmsg"],
                      link(f"{nd}-{name}.writes.json")])
fmt = lambda r: "| " + " | ".join(str(x) for x in r) + " |"
table = "\n".join([fmt(hdr), fmt(["---"] * len(hdr))] + [fmt(r) for r in rows])
whdr = ["case", "server", "round trips", "1 sendmsg (both frames)", "2 sendmsg, no read between", "2 sendmsg, read between",
        "over 30 ms (under strace)", "of those, two sendmsg", "raw"]
wtable = "\n".join([fmt(whdr), fmt(["---"] * len(whdr))] + [fmt(r) for r in wrows])
here = lambda t: t.replace("](" + day + "/", "](")  # tables.md sits in nagle/<day>/
open(os.path.join(out, day, "tables.md"), "w").write(
    f"Generated by `{command}`.\n\n## Round trips\n\n{here(table)}\n\n## Server writes per round trip (strace)\n\n{here(wtable)}\n")
g = lambda k, f: data[k][f]
ov = lambda k: f"{g(k, 'over_30ms')} of {g(k, 'count')}"
w2 = lambda k: data[k]["two_sendmsg_no_read_between"]
# links relative to results/experiments/README.md; the pattern page gets them re-rooted below
d = f"nagle/{day}"
verdict = [
    f"Holds for the writer: write, write, read against a delayed-ACK peer stalled on {ov('writer-nodelay_off')} round trips with "
    f"Nagle on (p50 {g('writer-nodelay_off', 'p50_ms')} ms, p99 {g('writer-nodelay_off', 'p99_ms')} ms) and on "
    f"{ov('writer-nodelay_on')} with TCP_NODELAY (p50 {g('writer-nodelay_on', 'p50_ms')} ms, p99 {g('writer-nodelay_on', 'p99_ms')} ms, "
    f"max {g('writer-nodelay_on', 'max_ms')} ms), one run, the two taking turns round trip by round trip "
    f"([raw]({d}/raw/writer.json), [method]({d}/README.md)).",
    f"wschat --no-nodelay stalls where it writes twice to one client that sends nothing in between: two chat messages read "
    f"in two loop iterations, then the receiver answers: {ov('no-nodelay-chat')} round trips over 30 ms "
    f"(p50 {g('no-nodelay-chat', 'p50_ms')} ms, [raw]({d}/raw/no-nodelay-chat.json)) against {ov('nodelay-chat')} by default "
    f"(p99 {g('nodelay-chat', 'p99_ms')} ms, [raw]({d}/raw/nodelay-chat.json)); strace shows the two sendmsg calls to the "
    f"receiver with no read from it between in {w2('nodelay-chat-writes')} of {data['nodelay-chat-writes']['round_trips']} round trips "
    f"by default ([count]({d}/raw/nodelay-chat.writes.json)), and under strace with --no-nodelay "
    f"{data['no-nodelay-chat-writes']['stalled_and_two_sendmsg']} of the {g('no-nodelay-chat-writes', 'two_sendmsg_no_read_between')} "
    f"round trips written that way stalled, and {data['no-nodelay-chat-writes']['stalled_under_strace'] - data['no-nodelay-chat-writes']['stalled_and_two_sendmsg']} "
    f"of the others ([count]({d}/raw/no-nodelay-chat.writes.json)). "
    f"Both messages read in one iteration leave in one sendmsg and never stall ({ov('no-nodelay-chat-joined')}, "
    f"[raw]({d}/raw/no-nodelay-chat-joined.json)).",
    f"/echo, the old experiment's case, rarely meets it: two frames 300 µs apart stalled {ov('no-nodelay-echo-two-gap')} with "
    f"--no-nodelay ([raw]({d}/raw/no-nodelay-echo-two-gap.json)): the client's second frame normally follows the first echo "
    f"and carries its ACK, so only a round trip where the server sent that echo after the second frame had left can stall; "
    f"back to back {ov('no-nodelay-echo-two')} ([raw]({d}/raw/no-nodelay-echo-two.json)): both frames are read in one "
    f"iteration and leave in one sendmsg ({data['no-nodelay-echo-two-writes']['one_sendmsg']} of "
    f"{data['no-nodelay-echo-two-writes']['round_trips']} under strace, [count]({d}/raw/no-nodelay-echo-two.writes.json)). "
    f"Under strace, which slows the server, the 300 µs case stalled {data['no-nodelay-echo-two-gap-writes']['stalled_under_strace']} "
    f"of {data['no-nodelay-echo-two-gap-writes']['round_trips']}, {data['no-nodelay-echo-two-gap-writes']['stalled_and_two_sendmsg']} of them "
    f"written in two sendmsg ([count]({d}/raw/no-nodelay-echo-two-gap.writes.json)).",
]
sections = [f"Every round trip counted ({n} per case), percentiles over all of them; the method, the layout, the "
            f"strace counts and why in [{d}/README.md]({d}/README.md); tables in [{d}/tables.md]({d}/tables.md). "
            "The run of 2026-11-26 (its client set TCP_NODELAY, its verdict quoted medians of two runs' summaries) is kept "
            "in [nagle/2026-11-26/](nagle/2026-11-26/); its raw files held round trips of 41.8, 44.1 and 44.2 ms that the "
            "summary did not show.",
            table.replace("](" + day + "/", "](" + d + "/")]
page = [v.replace("](nagle/", "](../results/experiments/nagle/") for v in verdict[:2]]
doc = {"name": "nagle", "title": "5. Nagle's algorithm", "command": command, "verdict": verdict, "sections": sections,
       "patterns": ["single-thread.md"], "page_lines": {"single-thread.md": page}, "data": data}
json.dump(doc, open(os.path.join(out, "result.json"), "w"), indent=1)
json.dump(doc, open(os.path.join(out, day, "result.json"), "w"), indent=1)
print("\n".join(verdict))
print(table)
print(wtable)
EOF
python3 "$root/scripts/experiments/exp.py" render >&2
