#!/usr/bin/env python3
"""Other load on the machine during a benchmark run (stdlib only). Another process using the
CPU (a compile, a test suite) invalidates a run on 2 cores; this measures it so that every
result carries it, and waits for a quiet machine before each run.

    noise.py busy                       CPU-seconds all CPUs have been busy since boot (/proc/stat)
    noise.py proc PID                   CPU-seconds of process PID (all threads; 0 if gone)
    noise.py wait-quiet MAX_S [PCT]     wait (1 s samples) until the machine is below PCT % busy
                                        (default 10, of all CPUs), at most MAX_S seconds; prints
                                        "<waited s> <last busy %>"
    noise.py annotate RUN.json BUSY0 BUSY1 T0 T1 SERVER0 SERVER1 TIMES0 TIMES1 WAITED_S BUSY_PCT
                                        adds "host_noise" to RUN.json: CPU used by processes other
                                        than the server and the loader during the run
"""
import json
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / HZ


def proc(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_quiet(max_s, pct):
    ncpu = os.cpu_count() or 1
    start = time.monotonic()
    while True:
        b0, t0 = busy(), time.monotonic()
        time.sleep(1.0)
        share = (busy() - b0) / ((time.monotonic() - t0) * ncpu) * 100
        waited = time.monotonic() - start
        if share < pct or waited >= max_s:
            print(f"{waited:.0f} {share:.0f}")
            return


def children(path):
    """CPU-seconds of waited-for children from the second line of bash `times` output."""
    import re
    with open(path) as f:
        lines = f.read().splitlines()
    m = re.match(r"(\d+)m([\d.]+)s (\d+)m([\d.]+)s", lines[1] if len(lines) > 1 else "")
    return int(m[1]) * 60 + float(m[2]) + int(m[3]) * 60 + float(m[4]) if m else 0.0


def annotate(path, b0, b1, t0, t1, s0, s1, times0, times1, waited, idle_pct):
    ncpu = os.cpu_count() or 1
    total = float(b1) - float(b0)
    wall = float(t1) - float(t0)
    server = float(s1) - float(s0)
    loader = children(times1) - children(times0)
    foreign = max(0.0, total - float(server) - float(loader))
    with open(path) as f:
        doc = json.load(f)
    doc["host_noise"] = {
        "about": "scripts/bench.sh: CPU used on the machine during the whole run (connect to drain) "
                 "by anything other than the server and the loader",
        "wall_s": round(float(wall), 3),
        "machine_busy_cpu_s": round(total, 3),
        "server_cpu_s": round(float(server), 3),
        "loader_cpu_s": round(float(loader), 3),
        "foreign_cpu_s": round(foreign, 3),
        # /proc/stat counts in 10 ms ticks: too coarse for runs under a second
        "foreign_pct_of_machine": round(foreign / (wall * ncpu) * 100, 1) if wall >= 1.0 else None,
        "waited_for_quiet_s": float(waited),
        "busy_pct_before": float(idle_pct),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "busy":
        print(f"{busy():.2f}")
    elif a[0] == "proc":
        print(f"{proc(a[1]):.2f}")
    elif a[0] == "wait-quiet":
        wait_quiet(float(a[1]), float(a[2]) if len(a) > 2 else 10.0)
    elif a[0] == "annotate" and len(a) == 12:
        annotate(*a[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
