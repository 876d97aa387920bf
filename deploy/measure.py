#!/usr/bin/env python3
"""One cluster measurement, run by deploy/bench-cluster.sh inside `deploy/run.sh -- ...`.

Runs bench-client against URL and samples the CPU time of every process of the deployment
(each node, and each node's broker thread separately; redis-server; haproxy; nginx and its
workers) over a window inside bench-client's measured interval. Writes one JSON document:
bench-client's own result under "bench", the CPU shares under "cpu", node counters under
"nodes".

    measure.py --bench-client PATH --url ws://... --out FILE --label K=V ... -- BENCH ARGS...
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path):
    """utime + stime of a /proc/.../stat file, in seconds (0 if gone)."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid):
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]
    except OSError:
        return []


def broker_tid(pid):
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == "broker":
                    return int(tid)
    except OSError:
        pass
    return None


def sample(procs):
    """{name: cpu seconds} for every tracked process or thread."""
    out = {}
    for name, paths in procs.items():
        out[name] = sum(cpu_seconds(p) for p in paths)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-client", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", default="chat")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    extra = [a for a in args.rest if a != "--"]

    env = os.environ
    node_pids = [int(p) for p in env.get("WSCHAT_NODE_PIDS", "").split()]
    procs = {}
    for i, pid in enumerate(node_pids, 1):
        procs[f"node{i}"] = [f"/proc/{pid}/stat"]
        tid = broker_tid(pid)
        if tid:
            procs[f"node{i}.broker"] = [f"/proc/{pid}/task/{tid}/stat"]
    if env.get("WSCHAT_REDIS_PID"):
        procs["redis"] = [f"/proc/{env['WSCHAT_REDIS_PID']}/stat"]
    if "8000" in args.url:
        procs["haproxy"] = [f"/proc/{env['WSCHAT_HAPROXY_PID']}/stat"]
    if "8001" in args.url:
        ngx = int(env["WSCHAT_NGINX_PID"])
        procs["nginx"] = [f"/proc/{p}/stat" for p in [ngx] + children(ngx)]

    bench_json = args.out + ".bench.json"
    cmd = [args.bench_client, args.kind, "--url", args.url, "--duration", f"{args.duration}s",
           "--warmup", f"{args.warmup}s", "--json", bench_json, "-q"]
    cmd += [f"--label={l}" for l in args.label] + extra
    started = time.monotonic()
    bench = subprocess.Popen(cmd)
    # The CPU window: well inside the measured interval (connecting and settling take well
    # under a second at these sizes; the first second of measurement is skipped too).
    time.sleep(args.warmup + 1.5)
    t0, c0 = time.monotonic(), sample(procs)
    time.sleep(max(1.0, args.duration - 2.5))
    t1, c1 = time.monotonic(), sample(procs)
    try:
        status = bench.wait(timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        bench.kill()
        status = -1
    wall = t1 - t0
    cpu = {name: round((c1[name] - c0[name]) / wall, 4) for name in procs}
    nodes = []
    for url in env.get("WSCHAT_NODE_URLS", "").split():
        try:
            with urllib.request.urlopen(url.replace("ws://", "http://") + "/stats", timeout=5) as r:
                stats = json.load(r)
            nodes.append({k: v for k, v in stats["totals"].items()
                          # "writev" is the name "sendmsg" had before it was renamed (older servers).
                          if k.startswith("cluster_") or k in ("frames_out", "sendmsg", "writev")})
        except OSError as e:
            nodes.append({"error": str(e)})
    try:
        with open(bench_json) as f:
            result = json.load(f)
        os.unlink(bench_json)
    except (OSError, ValueError):
        result = None
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    doc = {
        "loadavg_after": loadavg,
        "labels": dict(l.split("=", 1) for l in args.label),
        "bench_status": status,
        "cpu_window_s": round(wall, 3),
        "cpu_cores": cpu,
        "nodes": nodes,
        "bench": result,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
