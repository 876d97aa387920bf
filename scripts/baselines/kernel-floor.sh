#!/usr/bin/env bash
# The kernel's floor for a chat delivery on loopback TCP: what one 80-byte frame costs the
# sender in CPU when it is written alone (write) or K to a call (writev), with no WebSocket
# server in the way. A hand-written probe (sendcost.c beside this file, a copy of
# /work/shared/tools/sendcost.c): a sender thread pinned to cpu0 (--sender-cpu) writes to N
# connected sockets in turn, a reader thread on cpu1 (--reader-cpu) drains them; it prints the sender's CPU (user +
# system, getrusage RUSAGE_THREAD) per delivered frame. On loopback the kernel runs the
# receiver's side of each send in the sender's context, so this is the syscall-bound cost
# every server in scripts/bench.sh pays per delivery, and the floor under its "server
# µs/delivery" column (1 frame per call is a server that writes per message; 16, one that
# corks well). The sender's time includes the softirq it runs (the loopback receive path)
# under tick accounting, not with CONFIG_IRQ_TIME_ACCOUNTING: the JSON says which (and the
# softirq share, softirq_pct).
#
#   scripts/baselines/kernel-floor.sh [--frames "1 4 16"] [--bytes 80] [--conns 19]
#                                     [--seconds 3] [--sender-cpu 0] [--reader-cpu 1] [--out FILE]
#
# scripts/bench.sh runs it after a full matrix with the split layout's first server CPU as
# --sender-cpu and its first loader CPU as --reader-cpu, into the run's kernel-floor.json
# (scripts/bench/summarize.py puts it beside the chat tables).
#
# Writes one JSON object (machine, command, one row per frames-per-call) to --out, else to
# stdout; the probe's own lines go to stderr. Needs gcc and 2 CPUs (by default it pins to cpu0 and
# cpu1).
# Each probe run is bounded by --seconds (killed at --seconds + 10). Other load on the machine
# distorts it: each row records the CPU share used by anything but the probe (other_load_pct).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
frames="1 4 16" bytes=80 conns=19 seconds=3 out= sender_cpu=0 reader_cpu=1
die() { echo "kernel-floor.sh: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
        --frames) frames=${2:?}; shift ;;
        --bytes) bytes=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --seconds) seconds=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        --sender-cpu) sender_cpu=${2:?}; shift ;;
        --reader-cpu) reader_cpu=${2:?}; shift ;;
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
[[ $sender_cpu =~ ^[0-9]+$ && $reader_cpu =~ ^[0-9]+$ ]] || die "--sender-cpu / --reader-cpu: one CPU number each"
((sender_cpu != reader_cpu)) || die "--sender-cpu and --reader-cpu must differ"
(($(nproc) >= 2)) || die "needs 2 CPUs (the probe pins its sender to cpu$sender_cpu and its reader to cpu$reader_cpu)"
# Each CPU alone: a list is accepted when any of its CPUs is usable, and sendcost's pinning
# would fail silently (an unpinned thread) on one that is not.
for c in "$sender_cpu" "$reader_cpu"; do
    taskset -c "$c" true 2>/dev/null || die "cannot run on cpu$c (see --sender-cpu / --reader-cpu; this process may use $(nproc) CPUs)"
done
command -v gcc >/dev/null || die "gcc is required"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kernel-floor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -pthread -o "$tmp/sendcost" "$root/scripts/baselines/sendcost.c"

python3 - "$tmp/sendcost" "$conns" "$bytes" "$seconds" "$(nproc)" \
    "scripts/baselines/kernel-floor.sh --frames \"$frames\" --bytes $bytes --conns $conns --seconds $seconds --sender-cpu $sender_cpu --reader-cpu $reader_cpu" \
    "$sender_cpu" "$reader_cpu" $frames <<'PY' >"${out:-/dev/stdout}"
import datetime, json, os, platform, re, resource, subprocess, sys

probe, conns, nbytes, secs, ncpu, command = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sender_cpu, reader_cpu = int(sys.argv[7]), int(sys.argv[8])
hz = os.sysconf("SC_CLK_TCK")

def machine():
    # jiffies: user, nice, system, idle, iowait, irq, softirq, steal, ...
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[0] + f[1] + f[2], f[6], sum(f)  # task time, softirq, total

def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

runs = []
for k in sys.argv[9:]:
    (b0, q0, t0), c0 = machine(), children_cpu()
    line = subprocess.run([probe, str(conns), str(nbytes), k, str(secs), str(sender_cpu), str(reader_cpu)], capture_output=True,
                          text=True, timeout=secs + 10, check=True).stdout.strip()
    (b1, q1, t1), c1 = machine(), children_cpu()
    print(line, file=sys.stderr)
    # "N=19 msg=80B frames/syscall=4: 518 ns sender CPU per delivered frame, 1918977 frames/s"
    m = re.search(r": ([0-9.]+) ns sender CPU per delivered frame, ([0-9.]+) frames/s", line)
    if not m:
        sys.exit(f"kernel-floor.sh: could not parse the probe's output: {line!r}")
    # Other load: the machine's CPU time minus the probe's own (sender and reader). Under tick
    # accounting a tick in softirq is shown as softirq in /proc/stat and still charged to the
    # interrupted task (the sender runs the loopback receive path), so softirq counts on the
    # machine's side; with CONFIG_IRQ_TIME_ACCOUNTING it is charged to no task (see the note).
    other = softirq = None
    if t1 > t0:
        wall = (t1 - t0) / hz
        other = max(0.0, 100.0 * ((b1 - b0 + q1 - q0) / hz - (c1 - c0)) / wall)
        softirq = 100.0 * (q1 - q0) / hz / wall
    runs.append({
        "frames_per_call": int(k),
        "syscall": "write" if k == "1" else "writev",
        "sender_ns_per_frame": float(m.group(1)),
        "frames_per_s": float(m.group(2)),
        "probe_cpu_s": round(c1 - c0, 3),
        "other_load_pct": None if other is None else round(other, 1),
        "softirq_pct": None if softirq is None else round(softirq, 1),
    })

def irq_time_accounting():
    import gzip
    for path in ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        try:
            text = (gzip.open if path.endswith(".gz") else open)(path, "rt").read()
        except OSError:
            continue
        return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text
    return None

model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
print(json.dumps({
    "probe": "sendcost (scripts/baselines/sendcost.c): sender CPU per delivered frame on loopback TCP",
    "command": command,
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpu": model, "cpus": ncpu, "kernel": platform.release()},
    "connections": conns, "frame_bytes": nbytes, "seconds_per_run": secs,
    "sender_cpu": sender_cpu, "reader_cpu": reader_cpu,
    "irq_time_accounting": irq_time_accounting(),
    "note": "other_load_pct: CPU time (user+nice+system+softirq, in % of one CPU) not used by the "
            "probe's threads; above a few % the numbers are disturbed. softirq_pct: softirq time "
            "(% of one CPU), mostly the loopback receive path the sender runs; with tick accounting "
            "(irq_time_accounting false) it is charged to the sender and included in "
            "sender_ns_per_frame; with CONFIG_IRQ_TIME_ACCOUNTING it would not be",
    "runs": runs,
}, indent=2))
PY
