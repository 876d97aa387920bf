#!/usr/bin/env python3
"""Inclusive samples of named kernel or user functions in two perf recordings, side by side.

    scripts/bench/perf-compare.py A.perf.data B.perf.data FUNCTION...

A sample counts for a function if the function is anywhere on its call chain, so the
figure is the time spent in the function and everything it called. Record each server the
same way for the same time, under the same load, e.g. (server on cpu0, loader on cpu1):

    perf record -e cpu-clock -F 4000 -g -p "$(pgrep -x wschat)" -o A.perf.data -- sleep 4

Prints the total samples of each recording, then one line per function: A, B, B - A.
Sample counts are time: compare them only between recordings of equal length.
"""
import collections
import subprocess
import sys


def inclusive(path):
    """Samples per function on any frame of the chain, and the number of samples."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    counts, samples = collections.Counter(), 0
    for block in out.split("\n\n"):
        frames = set()
        for line in block.strip().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.add(parts[1].strip())
        if frames:
            samples += 1
            counts.update(frames)
    return counts, samples


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    (a, na), (b, nb) = inclusive(argv[1]), inclusive(argv[2])
    print(f"samples {na:6d} {nb:6d}")
    for name in argv[3:]:
        print(f"{a[name]:6d} {b[name]:6d} {b[name] - a[name]:+6d}  {name}")


if __name__ == "__main__":
    main(sys.argv)
