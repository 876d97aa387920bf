#!/usr/bin/env bash
# Experiment 5: Nagle's algorithm. The server with TCP_NODELAY (default) vs --no-nodelay:
#   ping       bench-client ping --conns 1 --rate 200: one write per round trip
#   chat       probes.py nagle-chat: a passive receiver gets small messages 1-20 ms apart
#   two        probes.py nagle-ping two: each request is two frames in two writes, the
#              reply is two echoes (write-write-read on the server side)
#   two-gap    the same with 300 µs between the client's two writes (the server reads them
#              in two loop iterations, so its two echoes are two writes)
#   one        probes.py nagle-ping one: one frame per round trip, for comparison
# on --io epoll and uring. Counts round trips / deliveries over 30 ms (Nagle waiting for a
# delayed ACK: 40 ms minimum on Linux) and p50/p99.
#
#   scripts/experiments/nagle.sh [--runs 2] [--ios "epoll uring"]
# Writes results/experiments/nagle/. About 2 minutes.
set -euo pipefail
EXP_COMMAND="scripts/experiments/nagle.sh${*:+ $*}"
source "$(dirname "$0")/lib.sh"
runs=2 ios="epoll uring"
while (($#)); do
    case $1 in
        --runs) runs=$2; shift ;;
        --ios) ios=$2; shift ;;
        -h | --help) exp_usage; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
exp_init nagle
raw=$OUT/raw
P="$root/scripts/experiments/probes.py"
for r in $(seq "$runs"); do
    for io in $ios; do
        for nd in nodelay no-nodelay; do
            tag=$io-$nd
            extra=(); [[ $nd == no-nodelay ]] && extra=(--no-nodelay)
            start_server "$raw/$tag-run$r.server.log" --pattern single-thread --io "$io" "${extra[@]}"
            bench ping --url "ws://127.0.0.1:$PORT/echo" --conns 1 --rate 200 --duration 4s --warmup 1s -q \
                --json "$raw/$tag-ping-run$r.json" >/dev/null 2>&1 || note "$tag ping failed"
            ns python3 "$P" nagle-chat "$PORT" 300 1 20 >"$raw/$tag-chat-run$r.json"
            for mode in one two two-gap; do
                ns timeout 60 python3 "$P" nagle-ping "$PORT" 200 "$mode" >"$raw/$tag-$mode-run$r.json"
            done
            stop_server
            note "$tag run $r: chat $(cat "$raw/$tag-chat-run$r.json" | head -c 160)"
        done
    done
done
exp_noise
python3 - "$OUT" "$runs" "$ios" "$EXP_COMMAND" <<'EOF'
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "..", "..", "..", "scripts", "experiments"))
import exp
out, runs, ios, command = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
raw = os.path.join(out, "raw")
data, rows = {}, []
for io in ios:
    for nd in ("nodelay", "no-nodelay"):
        for test in ("ping", "one", "chat", "two", "two-gap"):
            per = []
            for r in range(1, runs + 1):
                p = os.path.join(raw, f"{io}-{nd}-{test}-run{r}.json")
                try:
                    d = exp.load(p)
                except (OSError, ValueError):
                    continue
                if test == "ping":
                    v = exp.hist_values(d, "latency_us")
                    pc = d["histograms"]["latency_us"]["percentiles"]
                    d = {"count": pc["count"], "p50_ms": pc["p50"] / 1000, "p99_ms": pc["p99"] / 1000, "max_ms": pc["max"] / 1000,
                         "stalls_over_30ms": exp.count_between(v, 30_000, 10**12)}
                per.append(d)
            data[f"{io}-{nd}-{test}"] = per
            m = lambda k: exp.med([x.get(k) for x in per])
            rows.append([io, nd, test, m("count"), m("p50_ms"), m("p99_ms"), m("max_ms"), m("stalls_over_30ms")])
hdr = ["io", "server", "test", "samples", "p50 ms", "p99 ms", "max ms", "over 30 ms"]
g = lambda io, nd, t, k: exp.med([x.get(k) for x in data.get(f"{io}-{nd}-{t}", [])])
f = lambda x: "—" if x is None else (f"{x:.0f}" if isinstance(x, int) or float(x).is_integer() else f"{x:.2f}")
io = ios[0]
verdict = [
    f"One write per round trip: no difference ({io} ping p99 {f(g(io,'nodelay','ping','p99_ms'))} ms with NODELAY, "
    f"{f(g(io,'no-nodelay','ping','p99_ms'))} ms without; stalls over 30 ms: {f(g(io,'nodelay','ping','stalls_over_30ms'))} vs "
    f"{f(g(io,'no-nodelay','ping','stalls_over_30ms'))}): Nagle only holds a small segment while earlier data is unacknowledged, "
    "and each echo goes out when the previous one was long since acknowledged.",
    f"Write-write-read (two frames, two server writes, then the client waits): {f(g(io,'no-nodelay','two-gap','stalls_over_30ms'))} of 200 "
    f"round trips stalled over 30 ms without NODELAY (p50 {f(g(io,'no-nodelay','two-gap','p50_ms'))} ms, p99 {f(g(io,'no-nodelay','two-gap','p99_ms'))}) "
    f"against {f(g(io,'nodelay','two-gap','stalls_over_30ms'))} with it; back to back (no gap): {f(g(io,'no-nodelay','two','stalls_over_30ms'))}. "
    + ("Nagle met delayed ACK as the course says." if (g(io,'no-nodelay','two-gap','stalls_over_30ms') or 0) >= 5 else
       "The course's 40 ms stall did not show on this kernel over loopback; our explanation (not verified with a packet capture): the client ACKed the first echo at once "
       "(quick-ACK: a connection that has sent little stays in quick-ACK mode, and loopback's RTT is microseconds), so the "
       "server's second write found nothing unacknowledged. Per-iteration writev batching would hide it anyway when both "
       "frames arrive in one read."),
    f"Passive chat receiver, messages 1-20 ms apart: {f(g(io,'no-nodelay','chat','stalls_over_30ms'))} of 300 deliveries over 30 ms "
    f"without NODELAY (p99 {f(g(io,'no-nodelay','chat','p99_ms'))} ms), {f(g(io,'nodelay','chat','stalls_over_30ms'))} with it "
    f"(p99 {f(g(io,'nodelay','chat','p99_ms'))} ms)"
    + (": no stall either: each message was ACKed before the next one was written." if (g(io,'no-nodelay','chat','stalls_over_30ms') or 0) < 5 else "."),
]
sections = ["Server `--pattern single-thread` with and without `--no-nodelay`. **ping**: bench-client ping, 1 connection, "
            "200 round trips/s, 4 s. **one**: 200 echo round trips of one frame (2 ms apart). **chat**: 300 small messages "
            "from one sender to one passive receiver, gaps uniform in 1-20 ms. **two**: 200 round trips, each request two "
            "frames in two client writes (TCP_NODELAY on the client), the reply two echoes. **two-gap**: the same with 300 µs "
            f"between the two writes. Medians of {runs} runs.", exp.table(hdr, rows),
            "Why: a sender with Nagle on holds a small segment while any of its data is unacknowledged; a receiver "
            "delays its ACK (Linux: 40 ms at least, fewer in quick-ACK mode) hoping to piggyback it on a reply. "
            "A passive receiver never replies, and a request-reply client sends nothing until the whole reply is in: "
            "the second small write waits for the delayed ACK. wschat flushes each connection once per loop "
            "iteration (one writev), so frames handled in one iteration never meet Nagle; only output split "
            "across iterations does."]
doc = {"name": "nagle", "title": "5. Nagle's algorithm", "command": command, "verdict": verdict, "sections": sections,
       "patterns": ["single-thread.md"], "data": data}
json.dump(doc, open(os.path.join(out, "result.json"), "w"), indent=1)
print("\n".join(verdict))
EOF
python3 "$root/scripts/experiments/exp.py" render >&2
