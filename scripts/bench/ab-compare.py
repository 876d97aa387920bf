#!/usr/bin/env python3
"""Compare the two sides of an A/B set (scripts/bench/ab.sh) beyond one median.

    scripts/bench/ab-compare.py DIR A_LABEL B_LABEL [--loader target/release/bench-client]

For each rate found in DIR (files <label>-r<rate>-<round>.json), prints a markdown table:
the median over runs of server CPU per delivery and of p99, B's median relative to A's, the
p99 of all of a side's runs together (bench-client merge, written as
DIR/pooled-<label>-r<rate>.json), and a rank-sum (Mann-Whitney) comparison of the run p99s.
On this 2-core machine one run's p99 can be 2-5x another's within one backend, so a median of a
few runs can rank two equal servers either way; U near half of n_a * n_b (z near 0) means
the two sets of runs cannot be told apart.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys


# One run of an ab.sh set: <label>-r<rate>-<round>.json.
RUN = re.compile(r"^(?P<label>.+)-r(?P<rate>\d+)-(?P<round>\d+)\.json$")


def runs_of(directory):
    """{(label, rate): [paths in round order]} of every run in `directory`."""
    found = {}
    for path in glob.glob(os.path.join(directory, "*.json")):
        m = RUN.match(os.path.basename(path))
        if m:
            found.setdefault((m["label"], int(m["rate"])), []).append((int(m["round"]), path))
    return {key: [p for _, p in sorted(runs)] for key, runs in found.items()}


def p99(doc):
    return doc["histograms"]["latency_us"]["percentiles"]["p99"]


def rank_sum(a, b):
    """Mann-Whitney U of `a` against `b` (ties count half) and its normal-approximation z.

    U counts the pairs in which a's value is above b's: U > n_a * n_b / 2 (z > 0) means a
    tends to be higher."""
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    n, m = len(a), len(b)
    sd = math.sqrt(n * m * (n + m + 1) / 12.0)
    return u, n * m, (u - n * m / 2.0) / sd if sd else 0.0


def pooled_p99(loader, directory, label, rate, paths):
    out = os.path.join(directory, f"pooled-{label}-r{rate}.json")
    subprocess.run([loader, "merge", "-o", out, *paths], check=True,
                   stdout=subprocess.DEVNULL)
    with open(out) as f:
        return p99(json.load(f))


def main(argv):
    parser = argparse.ArgumentParser(description="Compare the two sides of an ab.sh set.")
    parser.add_argument("directory")
    parser.add_argument("a_label")
    parser.add_argument("b_label")
    parser.add_argument("--loader", default="target/release/bench-client",
                        help="bench-client, for merging each side's runs")
    args = parser.parse_args(argv)
    directory, a_label, b_label, loader = args.directory, args.a_label, args.b_label, args.loader
    runs = runs_of(directory)
    rates = sorted(rate for label, rate in runs if label == a_label)
    if not rates:
        sys.exit(f"ab-compare.py: no {a_label}-r<rate>-<round>.json in {directory}")
    missing = [rate for rate in rates if (b_label, rate) not in runs]
    if missing:
        sys.exit(f"ab-compare.py: no {b_label} runs at rate(s) {missing} in {directory}")
    print(f"| rate msg/s | runs | CPU µs/delivery, {b_label} vs {a_label} (median) | "
          f"p99 µs, median of runs | p99 µs, all runs pooled | rank-sum of run p99s, "
          f"{b_label} above {a_label} |")
    print("|---:|---:|---|---|---|---|")
    for rate in rates:
        side = {}
        for label in (a_label, b_label):
            paths = runs[(label, rate)]
            docs = [json.load(open(p)) for p in paths]
            side[label] = {
                "n": len(docs),
                "cpu": statistics.median(d["server"]["cpu_us_per_delivery"] for d in docs),
                "p99s": [p99(d) for d in docs],
                "pooled": pooled_p99(loader, directory, label, rate, paths),
            }
        a, b = side[a_label], side[b_label]
        u, pairs, z = rank_sum(b["p99s"], a["p99s"])
        pct = lambda x, y: f"{(x / y - 1) * 100:+.1f} %"
        print(f"| {rate} | {a['n']} + {b['n']} | {b['cpu']:.2f} vs {a['cpu']:.2f} "
              f"({pct(b['cpu'], a['cpu'])}) | {statistics.median(b['p99s']):.0f} vs "
              f"{statistics.median(a['p99s']):.0f} | {b['pooled']:.0f} vs {a['pooled']:.0f} | "
              f"U = {u:g} of {pairs}, z = {z:+.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
