#!/usr/bin/env python3
"""Record the machine a benchmark runs on, as JSON (stdlib only).

    machine.py NAME OUT.json [KEY=VALUE ...]

NAME is the machine label used in results/<NAME>/. Extra KEY=VALUE pairs go under "bench"
(the recorded command, mode, git commit, ...). Values that cannot be read are null.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_model():
    text = read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def hypervisor():
    text = run("lscpu") or ""
    for line in text.splitlines():
        if line.startswith("Hypervisor vendor:"):
            return line.split(":", 1)[1].strip()
    return None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, out = sys.argv[1], sys.argv[2]
    bench = {}
    for pair in sys.argv[3:]:
        key, _, value = pair.partition("=")
        bench[key] = value
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    sysctls = {
        key: read("/proc/sys/" + key.replace(".", "/"))
        for key in (
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_syncookies",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_fin_timeout",
            "net.core.netdev_max_backlog",
            "fs.file-max",
            "fs.nr_open",
            "kernel.perf_event_paranoid",
        )
    }
    doc = {
        "machine": name,
        "recorded_unix_s": int(time.time()),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "hypervisor": hypervisor(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "arch": platform.machine(),
        "mem_total": next((l.split(":", 1)[1].strip() for l in (read("/proc/meminfo") or "").splitlines()
                           if l.startswith("MemTotal")), None),
        "fd_limit": {"soft": soft, "hard": hard},
        "sysctls": sysctls,
        "tools": {
            "rustc": run("rustc", "--version"),
            "node": run("node", "--version"),
            "perf": run("perf", "--version"),
            "strace": (run("strace", "-V") or "").split("\n")[0] or None,
            "python": platform.python_version(),
        },
        "bench": bench,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()
