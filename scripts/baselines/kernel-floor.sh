#!/usr/bin/env bash
# The kernel's floor for a chat delivery on loopback TCP: what one 80-byte frame costs the
# sender in CPU when it is written alone (write) or K to a call (writev), with no WebSocket
# server in the way. A hand-written probe (sendcost.c beside this file, a copy of
# /work/shared/tools/sendcost.c): a sender thread pinned to cpu0 writes to N connected
# sockets in turn, a reader thread on cpu1 drains them; it prints the sender's CPU (user +
# system, getrusage RUSAGE_THREAD) per delivered frame. On loopback the kernel runs the
# receiver's side of each send in the sender's context, so this is the syscall-bound cost
# every server in scripts/bench.sh pays per delivery, and the floor under its "server
# µs/delivery" column (1 frame per call is a server that writes per message; 16, one that
# corks well).
#
#   scripts/baselines/kernel-floor.sh [--frames "1 4 16"] [--bytes 80] [--conns 19]
#                                     [--seconds 3] [--out FILE]
#
# Writes one JSON object (machine, command, one row per frames-per-call) to --out, else to
# stdout; the probe's own lines go to stderr. Needs gcc and 2 CPUs (it pins to cpu0 and cpu1).
# Each probe run is bounded by --seconds (and `timeout` at --seconds + 10). Other load on the
# machine distorts it: it records the machine's busy share during each run (other_load_pct).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
frames="1 4 16" bytes=80 conns=19 seconds=3 out=
die() { echo "kernel-floor.sh: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
        --frames) frames=${2:?}; shift ;;
        --bytes) bytes=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --seconds) seconds=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
    shift
done
for k in $frames; do
    [[ $k =~ ^[0-9]+$ ]] && ((k >= 1 && k <= 64)) || die "--frames: 1..64 per call (sendcost's iovec array), not $k"
done
[[ $bytes =~ ^[0-9]+$ ]] && ((bytes >= 2 && bytes <= 127)) || die "--bytes: 2..127 (a frame with a 7-bit length)"
[[ $conns =~ ^[0-9]+$ ]] && ((conns >= 1 && conns <= 4000)) || die "--conns: 1..4000"
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--seconds must be a number"
(($(nproc) >= 2)) || die "needs 2 CPUs (the probe pins its sender to cpu0 and its reader to cpu1)"
command -v gcc >/dev/null || die "gcc is required"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kernel-floor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -pthread -o "$tmp/sendcost" "$root/scripts/baselines/sendcost.c"

# busy: the machine's non-idle jiffies and total jiffies, from /proc/stat.
busy() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
limit=$(python3 -c "print(int(float('$seconds') + 10))")
rows=()
for k in $frames; do
    read -r b0 t0 < <(busy)
    line=$(timeout --kill-after=5 "$limit" "$tmp/sendcost" "$conns" "$bytes" "$k" "$seconds")
    read -r b1 t1 < <(busy)
    echo "$line" >&2
    # "N=19 msg=80B frames/syscall=4: 1712 ns sender CPU per delivered frame, 1168000 frames/s"
    ns=$(sed -n 's/.*: \([0-9.]*\) ns sender CPU per delivered frame.*/\1/p' <<<"$line")
    fps=$(sed -n 's/.*frame, \([0-9.]*\) frames\/s.*/\1/p' <<<"$line")
    [[ -n $ns && -n $fps ]] || die "could not parse the probe's output: $line"
    # The probe's two threads keep two CPUs busy; whatever is beyond that was other load
    # (approximate: the reader thread sleeps in epoll_wait when it has drained everything).
    rows+=("$k $ns $fps $b0 $t0 $b1 $t1")
done

python3 - "$conns" "$bytes" "$seconds" "$(nproc)" "kernel-floor.sh${frames:+ --frames \"$frames\"} --bytes $bytes --conns $conns --seconds $seconds" "${rows[@]}" <<'PY' >"${out:-/dev/stdout}"
import json, platform, sys, datetime
conns, nbytes, secs, ncpu, command = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
runs = []
for row in sys.argv[6:]:
    k, ns, fps, b0, t0, b1, t1 = row.split()
    dt = int(t1) - int(t0)
    busy = 100.0 * (int(b1) - int(b0)) / dt if dt > 0 else None
    runs.append({
        "frames_per_call": int(k),
        "syscall": "write" if k == "1" else "writev",
        "sender_ns_per_frame": float(ns),
        "sender_us_per_frame": round(float(ns) / 1000, 3),
        "frames_per_s": float(fps),
        "machine_busy_pct": None if busy is None else round(busy, 1),
    })
print(json.dumps({
    "probe": "sendcost (scripts/baselines/sendcost.c): sender CPU per delivered frame on loopback TCP",
    "command": "scripts/baselines/" + command,
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpu": model, "cpus": ncpu, "kernel": platform.release()},
    "connections": conns, "frame_bytes": nbytes, "seconds_per_run": secs,
    "note": "machine_busy_pct: the whole machine's busy share during the run; the probe itself keeps about one CPU busy (its reader less), so well above 50 % means other load",
    "runs": runs,
}, indent=2))
PY
