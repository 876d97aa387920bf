#!/usr/bin/env python3
"""Helpers of scripts/experiments/ (stdlib only).

    exp.py machine-name                      <cpu>-<N>cpu, as scripts/bench.sh names machines
    exp.py hdr-buckets RUN.json HIST EDGES   counts of a bench-client histogram between edges (µs)
    exp.py render                            results/experiments/README.md and the experiment
                                             sections of patterns/*.md from every result.json

Every experiment writes results/experiments/<name>/result.json:
    {"name", "title", "command", "verdict": [lines], "sections": [markdown], "patterns": [pages],
     "data": {...}}
plus machine.json and noise.json beside it; `render` turns them into markdown.
"""
import base64
import json
import os
import re
import statistics
import struct
import sys
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXP_DIR = os.path.join(ROOT, "results", "experiments")
ORDER = ["accept-queue", "herd", "imbalance", "cpu-work", "nagle", "reuseport-spread"]


def machine_name():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1]
                break
    words = [w for w in re.split(r"[^a-z0-9]+", model.lower()) if w and w not in ("processor", "cpu", "r", "tm")]
    return "-".join(words[:2] or ["unknown"]) + f"-{os.cpu_count()}cpu"


# ---- HdrHistogram V2 (compressed) decoding: enough to read bench-client's histograms ------
def _zigzag_leb128(buf):
    i, out = 0, []
    while i < len(buf):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80 or shift >= 63:
                if shift >= 63 and b & 0x80:  # 9th byte carries 8 bits
                    b = buf[i]
                    i += 1
                    value |= b << 56
                break
        out.append((value >> 1) ^ -(value & 1))
    return out


def hdr_decode(b64):
    """[(value, count)] of a V2 compressed histogram (base64)."""
    raw = base64.b64decode(b64)
    cookie, length = struct.unpack(">II", raw[:8])
    if cookie & 0xF == 4:  # V2 compressed: zlib around a V2 encoding
        payload = zlib.decompress(raw[8:8 + length])
    else:  # V2 (the Rust crate's cookie 0x1c849313)
        payload = raw
    (_cookie, plen, _offset, digits, lowest, _highest, _ratio) = struct.unpack(">IIIIqqd", payload[:40])
    counts = _zigzag_leb128(payload[40:40 + plen])
    largest = 2 * 10 ** digits
    sub_bucket_count = 1 << (largest - 1).bit_length()
    half = sub_bucket_count // 2
    half_mag = half.bit_length() - 1
    unit = max(lowest, 1).bit_length() - 1
    out, idx = [], 0
    for c in counts:
        if c < 0:
            idx += -c
            continue
        if c:
            bucket = (idx >> half_mag) - 1
            sub = (idx & (half - 1)) + half
            if bucket < 0:
                sub -= half
                bucket = 0
            out.append((sub << (bucket + unit), c))
        idx += 1
    return out


def hist_values(run, name):
    h = run.get("histograms", {}).get(name)
    if not h or not h.get("hdr_v2_base64"):
        return []
    return hdr_decode(h["hdr_v2_base64"])


def count_between(values, lo, hi):
    return sum(c for v, c in values if lo <= v < hi)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    if x is None:
        return "—"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c) for c in r) + " |")
    return "\n".join(lines)


def load(path):
    with open(path) as f:
        return json.load(f)


def thread_delta(before, after, roles=("loop", "reader", "io")):
    """Per-thread counter differences between two /stats documents."""
    b = {t["id"]: t for t in before["threads"]}
    out = []
    for t in after["threads"]:
        if roles and t.get("role") not in roles:
            continue
        d = {k: (v - b.get(t["id"], {}).get(k, 0)) if isinstance(v, (int, float)) and k != "id" else v
             for k, v in t.items()}
        out.append(d)
    return out


def spread(xs):
    """max/mean of a list of counts (1.0 = even)."""
    xs = list(xs)
    m = sum(xs) / len(xs) if xs else 0
    return max(xs) / m if m else None


def chi_square(xs):
    n = sum(xs)
    e = n / len(xs)
    return sum((x - e) ** 2 / e for x in xs) if e else None


# ---- rendering ---------------------------------------------------------------------------
def render():
    results = []
    for name in ORDER + sorted(set(os.listdir(EXP_DIR)) - set(ORDER)):
        p = os.path.join(EXP_DIR, name, "result.json")
        if os.path.exists(p):
            results.append((name, load(p)))
    machine = None
    for name, _ in results:
        mp = os.path.join(EXP_DIR, name, "machine.json")
        if os.path.exists(mp):
            machine = load(mp)
            break
    lines = [
        "# Experiments",
        "",
        "Generated by `python3 scripts/experiments/exp.py render` from each experiment's",
        "`result.json` (do not edit by hand). Each experiment is one command,",
        "`scripts/experiments/<name>.sh`, runs in a network namespace of its own (so the",
        "sysctls it changes never touch the rest of the machine), and writes",
        "`results/experiments/<name>/`: `result.json` (verdict, tables, numbers), `machine.json`",
        "(CPU, kernel, sysctls, fd limits), `noise.json` (all CPU use on the machine during the",
        "run, ours included) and `raw/` (server logs, `/stats` snapshots, bench-client JSON).",
        "",
    ]
    if machine:
        lines += [
            "## The machine",
            "",
            f"{machine.get('cpu_model')}, {machine.get('cpus_online')} CPUs ({machine.get('hypervisor') or 'bare metal?'}), "
            f"kernel {machine.get('kernel')}, fd limit {machine['fd_limit']['soft']}/{machine['fd_limit']['hard']}, "
            "loopback only. Other engineers built and tested on the same machine while these ran: "
            "each section gives the machine's busy share during its run, and the experiments "
            "prefer counts (wake-ups, overflows, stalls, spreads) to latency where that noise "
            "would decide the answer.",
            "",
        ]
    lines += ["## Summary", "", "| experiment | command | verdict |", "|---|---|---|"]
    for name, r in results:
        lines.append(f"| [{r['title']}](#{anchor(r['title'])}) | `{r['command']}` | {r['verdict'][0]} |")
    lines.append("")
    for name, r in results:
        noise = os.path.join(EXP_DIR, name, "noise.json")
        n = load(noise) if os.path.exists(noise) else {}
        m = os.path.join(EXP_DIR, name, "machine.json")
        when = ""
        if os.path.exists(m):
            md = load(m)
            import time
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(md.get("recorded_unix_s", 0)))
        lines += [f"## {r['title']}", "", f"`{r['command']}` — run {when}, {n.get('wall_s', '?')} s, "
                  f"machine {n.get('machine_busy_pct', '?')} % busy (all processes). "
                  f"Raw data: [`{name}/`]({name}/).", "", "**Verdict**", ""]
        lines += [f"- {v}" for v in r["verdict"]]
        lines.append("")
        for s in r.get("sections", []):
            lines += [s, ""]
    with open(os.path.join(EXP_DIR, "README.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    # patterns pages: one section, between markers, appended at the end if absent
    pages = {}
    for name, r in results:
        for page in r.get("patterns", []):
            pages.setdefault(page, []).append((name, r))
    for page, rs in pages.items():
        path = os.path.join(ROOT, "patterns", page)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        body = ["<!-- experiments:begin (generated by scripts/experiments/exp.py render) -->",
                "## Experiments", "",
                "Measured by `scripts/experiments/` on this 2-core machine; full tables, the machine and the "
                "raw data in [results/experiments/](../results/experiments/README.md).", ""]
        for name, r in rs:
            body.append(f"- **[{r['title']}](../results/experiments/README.md#{anchor(r['title'])})** "
                        f"(`{r['command']}`): " + " ".join(r.get("page_lines", {}).get(page, r["verdict"][:2])))
        body.append("<!-- experiments:end -->")
        block = "\n".join(body)
        if "<!-- experiments:begin" in text:
            text = re.sub(r"<!-- experiments:begin.*?<!-- experiments:end -->", lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        with open(path, "w") as f:
            f.write(text)
    print(f"rendered {len(results)} experiments into results/experiments/README.md and {len(pages)} pattern pages")


def anchor(title):
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    cmd = sys.argv[1]
    if cmd == "machine-name":
        print(machine_name())
    elif cmd == "hdr-buckets":
        run = load(sys.argv[2])
        vals = hist_values(run, sys.argv[3])
        edges = [int(x) for x in sys.argv[4].split(",")]
        print(json.dumps([count_between(vals, lo, hi) for lo, hi in zip(edges, edges[1:])]))
    elif cmd == "render":
        render()
    else:
        sys.exit(f"exp.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
