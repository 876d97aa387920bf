#!/usr/bin/env python3
"""Markdown table of scripts/idle-memory.py runs: one row per pattern x io x kind x N, the
bytes per connection of each run, the target and whether every run met it; with --hold runs,
also the bytes per connection after the hold (heartbeats gone round), which the target
applies to as well.

    scripts/idle-memory-table.py results/memory/<date>/raw
"""
import json
import pathlib
import sys
from collections import defaultdict

TARGET = {"echo": 256, "chat": 512}
PATTERNS = ["single-thread", "acceptor-readers", "work-queue", "multi-accept", "reuseport"]


def main():
    cells = defaultdict(list)
    for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
        r = json.loads(path.read_text())
        threads = r["threads"] or 1
        cells[(r["kind"], r["conns"], r["pattern"], r["io"], threads)].append(r)
    held = any(r.get("hold_s") for runs in cells.values() for r in runs)
    extra = " after --hold (each run) |" if held else ""
    print("| kind | N | pattern | io | threads | B/conn (each run) |" + extra
          + " target | met | correct |")
    print("|---|---:|---|---|---:|---|" + ("---|" if held else "") + "---:|---|---|")
    order = lambda k: (k[0] != "echo", k[1], PATTERNS.index(k[2]), k[3])
    for key in sorted(cells, key=order):
        kind, n, pattern, io, threads = key
        runs = cells[key]
        per = " / ".join(f"{r['bytes_per_conn']:.0f}" for r in runs)
        values = [r["bytes_per_conn"] for r in runs]
        if held:
            values += [r["held_bytes_per_conn"] for r in runs]
            per += " | " + " / ".join(f"{r['held_bytes_per_conn']:.0f}" for r in runs)
        met = all(v <= TARGET[kind] for v in values)
        correct = all(r["correct"] for r in runs)
        print(f"| {kind} | {n:,} | {pattern} | {io} | {threads} | {per} "
              f"| {TARGET[kind]} | {'yes' if met else 'no'} | {'yes' if correct else 'NO'} |")


if __name__ == "__main__":
    main()
