#!/usr/bin/env python3
"""Median-of-runs tables for scripts/bench.sh (Python 3 standard library only).

    summarize.py --one-line RUN.json           one status line for the progress output
    summarize.py --run-dir DIR [--bench BIN]   DIR/summary.md (+ DIR/report/<layout>-<scenario>/
                                               from `bench-client report`, when BIN is given)
    summarize.py --readme ROOT                 ROOT/README.md: how to read the tables, then the
                                               newest run of each machine under ROOT/<machine>/
    summarize.py --pattern-pages DIR [--pages patterns]
                                               in each patterns/<pattern>.md, the block between
                                               <!-- measured:begin --> and <!-- measured:end -->
                                               (under "## Measured numbers"): that pattern's cells
                                               of the run DIR beside the baselines of the run

A cell is (pattern, io, layout, scenario, rate); its runs are the files
<pattern>-<io>-<layout>-<scenario>[-rate]-run<k>.json. Each number is the median of the runs
with [min–max]; the correctness columns add the runs up (a cell is correct only if every run is).

When DIR/kernel-floor.json is there (scripts/baselines/kernel-floor.sh: the sender CPU of one
80-byte frame on loopback, written alone and 4 or 16 to a writev), the chat, cpu and saturate
tables say the floor in their caption and the chat tables add "× floor": server µs/delivery
divided by the 1-frame-per-call floor.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys

PATTERN_ORDER = ["single-thread", "acceptor-readers", "work-queue", "multi-accept", "reuseport", "node-ws",
                 "uws-js", "fastwebsockets", "fastwebsockets-mt"]
SCENARIOS = ["chat", "cpu", "saturate", "ping", "connect", "capped-connect", "tls-chat", "tls-connect",
             "deflate-chat"]
# Labels of the scenarios that run each cell twice (off and on): shown beside the io.
VARIANT_LABELS = ["tls", "deflate"]
SYSCALL_GROUPS = [
    ("sendmsg+writev", ["sendmsg", "sendto", "writev"]),
    ("write", ["write"]),
    ("read", ["read", "recvfrom", "readv"]),
    ("epoll_wait", ["epoll_wait", "epoll_pwait"]),
    ("epoll_ctl", ["epoll_ctl"]),
    ("futex", ["futex"]),
]


def load(path):
    with open(path) as f:
        return json.load(f)


def run_files(run_dir):
    return sorted(p for p in glob.glob(os.path.join(run_dir, "*.json"))
                  if os.path.basename(p) not in ("machine.json", KERNEL_FLOOR))


def pctl(doc, hist, key):
    h = (doc.get("histograms") or {}).get(hist)
    if not h:
        return None
    return h.get("percentiles", h).get(key)


def order_key(pattern):
    return PATTERN_ORDER.index(pattern) if pattern in PATTERN_ORDER else len(PATTERN_ORDER)


def fmt(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.{digits}f}"


def med(values, digits=0):
    """median [min–max] of the non-null values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt(m, digits)
    return f"{fmt(m, digits)} [{fmt(min(vals), digits)}–{fmt(max(vals), digits)}]"


def one_line(path):
    d = load(path)
    if "probe" in d and "runs" in d:  # kernel-floor.json
        return "sender CPU per frame: " + ", ".join(
            f"{fmt(r['sender_ns_per_frame'])} ns at {r['frames_per_call']}/call" for r in d["runs"])
    c = d.get("counters", {})
    kind = d.get("kind")
    if kind == "connect":
        ok = "ok" if c.get("failed", 0) == 0 else f"FAILED {c.get('failed')}"
        return (f"{ok} {fmt(d['rates'].get('handshakes_per_s'))} handshakes/s "
                f"upgrade p99 {fmt(pctl(d, 'upgrade_us', 'p99'))}us")
    ok = "ok" if d.get("correct") else f"NOT CORRECT (lost {c.get('lost')}, ooo {c.get('out_of_order')})"
    srv = (d.get("server") or {}).get("cpu_us_per_delivery")
    lb = " LOADER-BOUND" if (d.get("loader") or {}).get("loader_bound") else ""
    return (f"{ok} {fmt(d['rates'].get('delivered_per_s'))} del/s p50 {fmt(pctl(d, 'latency_us', 'p50'))}us "
            f"p99 {fmt(pctl(d, 'latency_us', 'p99'))}us srv {fmt(srv, 2)}us/del{lb}")


def cells(run_dir):
    """{(layout, scenario): {(pattern, io, rate): [docs]}}"""
    out = {}
    for path in run_files(run_dir):
        try:
            d = load(path)
        except (OSError, ValueError) as e:
            print(f"summarize.py: skipping {path}: {e}", file=sys.stderr)
            continue
        lab = d.get("labels", {})
        if "scenario" not in lab:
            continue
        d["_file"] = os.path.basename(path)
        io = lab.get("io", "?")
        for v in VARIANT_LABELS:  # e.g. tls=off and tls=on rows side by side
            if v in lab:
                io += f" {v}={lab[v]}"
        key = (lab.get("pattern", "?"), io, lab.get("rate", "na"))
        out.setdefault((lab.get("layout", "?"), lab["scenario"]), {}).setdefault(key, []).append(d)
    return out


def rate_num(r):
    try:
        return float(r)
    except ValueError:
        return 0.0


def correctness(docs):
    """(correct column, delivered/expected column) summed over runs."""
    n = len(docs)
    good = sum(1 for d in docs if d.get("correct"))
    c = [d.get("counters", {}) for d in docs]
    rec = sum(x.get("received", 0) for x in c)
    exp = sum(x.get("expected", 0) for x in c)
    bad = []
    for k in ("lost", "out_of_order", "duplicates", "malformed", "disconnects", "protocol_errors"):
        v = sum(x.get(k, 0) for x in c)
        if v:
            bad.append(f"{k} {v}")
    kicks = sum(int(d.get("close_codes", {}).get("1008", 0)) for d in docs)
    if kicks:
        bad.append(f"1008 kicks {kicks}")
    col = f"yes ({good}/{n})" if good == n else f"**NO** ({good}/{n}): " + ", ".join(bad or ["see JSON"])
    return col, f"{rec}/{exp}"


def loader_col(docs):
    lb = sum(1 for d in docs if (d.get("loader") or {}).get("loader_bound"))
    busy = max(((d.get("loader") or {}).get("busy_per_thread") or 0) for d in docs)
    return ("**YES** " if lb else "no ") + f"({lb}/{len(docs)}, max {busy * 100:.0f}%)"


def noise_col(docs):
    vals = [(d.get("host_noise") or {}).get("foreign_pct_of_machine") for d in docs]
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = max(vals)
    return f"**{m:.0f}%**" if m >= 5 else f"{m:.0f}%"


# ---- cells of a table, shared by summary.md and the pattern pages --------------------------

def server_us_col(docs):
    """Server CPU per delivery, µs: median [min–max]."""
    return med([(d.get("server") or {}).get("cpu_us_per_delivery") for d in docs], 2)


def delivered_col(docs):
    return med([d["rates"].get("delivered_per_s") for d in docs])


def pctl_col(docs, key, hist="latency_us"):
    return med([pctl(d, hist, key) for d in docs])


def handshakes_col(docs):
    return med([d["rates"].get("handshakes_per_s") for d in docs])


def failed_col(docs):
    failed = sum(d["counters"].get("failed", 0) for d in docs)
    att = sum(d["counters"].get("attempted", 0) for d in docs)
    return f"{failed}/{att}" if not failed else f"**{failed}**/{att}"


def kept_up_col(docs):
    """Runs whose server kept up (bench-client's verdicts.kept_up); "–" for files without it."""
    v = [(d.get("verdicts") or {}).get("kept_up") for d in docs]
    v = [x for x in v if x is not None]
    if not v:
        return "–"
    good = sum(1 for x in v if x)
    return f"yes ({good}/{len(v)})" if good == len(v) else f"**NO** ({good}/{len(v)})"


def times_floor_col(docs, floor_us):
    """The median server µs/delivery over the kernel floor (µs per frame): a ratio, "4.8×"."""
    vals = [(d.get("server") or {}).get("cpu_us_per_delivery") for d in docs]
    vals = [v for v in vals if v is not None]
    if not vals or not floor_us:
        return "–"
    return f"{statistics.median(vals) / floor_us:.1f}×"


# ---- the kernel floor (scripts/baselines/kernel-floor.sh) -----------------------------------

KERNEL_FLOOR = "kernel-floor.json"


def kernel_floor(run_dir):
    """The run's kernel-floor.json as {"doc": the JSON, "us": {frames per call: sender µs per
    frame}, "bytes": frame bytes}, or None when there is none (or it is unreadable)."""
    path = os.path.join(run_dir, KERNEL_FLOOR)
    if not os.path.exists(path):
        return None
    try:
        doc = load(path)
        us = {int(r["frames_per_call"]): r["sender_ns_per_frame"] / 1000 for r in doc["runs"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"summarize.py: ignoring {path}: {e}", file=sys.stderr)
        return None
    if not us:
        return None
    return {"doc": doc, "us": us, "bytes": doc.get("frame_bytes", 80)}


def fmt_us(x):
    """A floor in µs as its file has it in ns: 1531 ns -> 1.53, 396 ns -> 0.396."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def floor_unit(kf):
    """The floor a chat delivery is compared with: 1 frame per call (each delivery of a chat
    message goes to its own connection, so a server writing frames as they come pays at
    least that); the smallest batch measured if 1 was not."""
    return min(kf["us"]) if kf else None


def floor_sentence(kf, link, cpu_model=None):
    """One sentence for a table's caption, linking the file its figures are in. cpu_model: the
    run's (machine.json), to say so when the floor was measured on another CPU."""
    parts = []
    for k in sorted(kf["us"]):
        us = fmt_us(kf["us"][k])
        if k == 1:
            parts.append(f"{us} µs per {kf['bytes']}-byte frame written alone")
        elif not parts:
            parts.append(f"{us} µs per {kf['bytes']}-byte frame at {k} per call")
        else:
            parts.append(f"{us} µs at {k} per call")
    loads = [r.get("other_load_pct") for r in kf["doc"].get("runs", []) if r.get("other_load_pct") is not None]
    load_note = ""
    if loads:
        worst = max(loads)
        load_note = f" (other load during the probe: up to {'**' if worst >= 5 else ''}{worst:.0f} %{'**' if worst >= 5 else ''})"
    where = "same machine, this run"
    probe_cpu = (kf["doc"].get("machine") or {}).get("cpu")
    if cpu_model and probe_cpu and probe_cpu != cpu_model:
        where = f"measured on {probe_cpu}, not this run's CPU"
    return f"Kernel floor ({where}): {', '.join(parts)}{load_note} — [{KERNEL_FLOOR}]({link})."


def floor_ratio_sentence(kf):
    k = floor_unit(kf)
    alone = "written alone" if k == 1 else f"at {k} per call"
    return (f"× floor: server µs/delivery ÷ the floor of a frame {alone} (each delivery goes to its "
            "own connection, so a server that writes frames as they come pays at least that; "
            "below it, the server wrote several frames per call).")


def table(headers, rows, left=3):
    """A markdown table: the first `left` columns aligned left, the others right."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def sorted_cells(group):
    return sorted(group.items(), key=lambda kv: (rate_num(kv[0][2]), order_key(kv[0][0]), kv[0][1]))


def wire_bytes_per_delivery(d):
    """Payload bytes on the wire per delivered message (compressed size where compressed)."""
    c = d.get("counters", {})
    return c["wire_bytes_received"] / c["received"] if c.get("received") and "wire_bytes_received" in c else None


def chat_table(group, wire=False, floor_us=None):
    """wire: add the bytes on the wire per delivery (the deflate scenario). floor_us: add
    "× floor", server µs/delivery over this kernel floor (µs per frame)."""
    headers = ["rate msg/s", "pattern", "io", "runs", "server µs/delivery", "delivered/s",
               "p50 µs", "p99 µs", "p99.9 µs", "send_lag p99 µs", "correct", "delivered/expected",
               "loader-bound", "other load"]
    if wire:
        headers.insert(6, "wire bytes/delivery")
    if floor_us:
        headers.insert(5, "× floor")
    rows = []
    for (pattern, io, rate), docs in sorted_cells(group):
        row = [fmt(rate_num(rate)), f"**{pattern}**", io, len(docs), server_us_col(docs),
               delivered_col(docs), pctl_col(docs, "p50"), pctl_col(docs, "p99"), pctl_col(docs, "p99_9"),
               pctl_col(docs, "p99", "send_lag_us"),
               *correctness(docs), loader_col(docs), noise_col(docs)]
        if wire:
            row.insert(6, med([wire_bytes_per_delivery(d) for d in docs]))
        if floor_us:
            row.insert(5, times_floor_col(docs, floor_us))
        rows.append(row)
    return table(headers, rows)


def saturate_table(group):
    headers = ["pattern", "io", "runs", "deliveries/s", "server µs/delivery", "p50 µs", "p99 µs",
               "correct", "delivered/expected", "loader-bound", "other load"]
    rows = []
    for (pattern, io, _), docs in sorted_cells(group):
        rows.append([f"**{pattern}**", io, len(docs), delivered_col(docs), server_us_col(docs),
                     pctl_col(docs, "p50"), pctl_col(docs, "p99"),
                     *correctness(docs), loader_col(docs), noise_col(docs)])
    return table(headers, rows)


def ping_table(group):
    headers = ["pattern", "io", "runs", "RTT p50 µs", "p90 µs", "p99 µs", "p99.9 µs",
               "send_lag p99 µs", "correct", "delivered/expected", "loader-bound", "other load"]
    rows = []
    for (pattern, io, _), docs in sorted_cells(group):
        rows.append([f"**{pattern}**", io, len(docs),
                     *(pctl_col(docs, k) for k in ("p50", "p90", "p99", "p99_9")),
                     pctl_col(docs, "p99", "send_lag_us"),
                     *correctness(docs), loader_col(docs), noise_col(docs)])
    return table(headers, rows)


def server_us_per_handshake(d):
    """Server CPU (user+sys over the storm) per completed handshake, µs; None without them."""
    s, c = d.get("server") or {}, d.get("counters", {})
    if s.get("user_s") is None or not c.get("handshakes"):
        return None
    return (s["user_s"] + s["sys_s"]) * 1e6 / c["handshakes"]


def connect_table(group):
    headers = ["pattern", "io", "runs", "handshakes/s", "connect p99 µs", "upgrade p50 µs",
               "upgrade p99 µs", "server µs/handshake", "failed/attempted", "loader-bound", "other load"]
    rows = []
    for (pattern, io, _), docs in sorted_cells(group):
        rows.append([f"**{pattern}**", io, len(docs), handshakes_col(docs),
                     pctl_col(docs, "p99", "connect_us"), pctl_col(docs, "p50", "upgrade_us"),
                     pctl_col(docs, "p99", "upgrade_us"), med([server_us_per_handshake(d) for d in docs], 1),
                     failed_col(docs), loader_col(docs), noise_col(docs)])
    return table(headers, rows)


# ---- the capped connect storm (bench.sh capped-connect) ---------------------------------------

def cpu_cap(d):
    """The run's CPU cap in % of one CPU (label cpu_cap, else the JSON's cpu_cap), or None."""
    v = d.get("labels", {}).get("cpu_cap") or (d.get("cpu_cap") or {}).get("pct_of_one_cpu")
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def cap_ratio(d):
    """The known answer: server CPU over the storm ÷ its cap = handshakes/s × server
    µs/handshake ÷ (cap/100 × 10⁶ µs/s). About 1.0 when the server is what limits the storm."""
    hs, us, cap = d["rates"].get("handshakes_per_s"), server_us_per_handshake(d), cpu_cap(d)
    if not hs or us is None or not cap:
        return None
    return hs * us / 1e6 / (cap / 100)


def caps_of(group):
    """The caps of a group's runs, "50" (or "25 and 50" if they differ)."""
    caps = sorted({cpu_cap(d) for docs in group.values() for d in docs} - {None})
    return " and ".join(fmt(c) for c in caps) or "?"


def capped_connect_table(group):
    headers = ["pattern", "io", "runs", "handshakes/s", "server µs/handshake", "server CPU / cap",
               "failed/attempted", "loader-bound", "other load"]
    rows = []
    for (pattern, io, _), docs in sorted_cells(group):
        rows.append([f"**{pattern}**", io, len(docs), handshakes_col(docs),
                     med([server_us_per_handshake(d) for d in docs], 1), med([cap_ratio(d) for d in docs], 2),
                     failed_col(docs), loader_col(docs), noise_col(docs)])
    return table(headers, rows)


def capped_note(group):
    """The capped storm's caption: what was capped, how, and why."""
    return (f"The server process, every thread of it, in a cgroup whose CPU quota is {caps_of(group)} % of one "
            "CPU (moved in after it listened, before the loader started). Why: on loopback the loader's core "
            "also runs the server's half of each TCP handshake (SYN handling, the child socket, wake-ups), "
            "so the uncapped storm is loader-bound for a fast server and does not show its capacity; "
            "capped, the server is the bottleneck. Known answer: server CPU / cap = handshakes/s × server "
            "µs/handshake ÷ the cap, about 1.0 when the server limited the storm (below, something else "
            "did: read loader-bound and other load).")


def parse_perf(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or not parts[0].replace(".", "").isdigit():
                continue
            event = parts[2]
            name = "total" if event == "raw_syscalls:sys_enter" else event.rsplit("sys_enter_", 1)[-1]
            counts[name] = int(float(parts[0]))
    return counts


def parse_strace(path):
    counts, total = {}, 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and re.match(r"^\d+\.\d+$", parts[0]) and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
                total += int(parts[3])
    counts["total"] = total
    return counts


def syscall_table(run_dir):
    sdir = os.path.join(run_dir, "syscalls")
    rows, tool, cfg = [], None, {}
    for path in sorted(glob.glob(os.path.join(sdir, "*.json")), key=lambda p: order_key(load(p)["labels"].get("pattern"))):
        d = load(path)
        base = path[:-5]
        counts = None
        for t, parse in (("perf", parse_perf), ("strace", parse_strace)):
            if os.path.exists(f"{base}.{t}.txt"):
                counts, tool = parse(f"{base}.{t}.txt"), t
        if not counts:
            continue
        c, cfg = d["counters"], d.get("config", {})
        deliveries = c.get("received", 0) + c.get("join_notices", 0)
        per = lambda n: f"{n / deliveries:.3f}" if deliveries else "–"
        row = [f"**{d['labels'].get('pattern')}**", d["labels"].get("io"), fmt(deliveries),
               per(counts.get("total", 0))]
        for _, names in SYSCALL_GROUPS:
            row.append(per(sum(counts.get(n, 0) for n in names)))
        row.append(correctness([d])[0])
        rows.append(row)
    if not rows:
        return None
    headers = ["pattern", "io", "deliveries", "syscalls/delivery",
               *(f"{g}/delivery" for g, _ in SYSCALL_GROUPS), "correct"]
    note = (f"Counted with `{'perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*' if tool == 'perf' else 'strace -c -f'}` "
            f"attached to the server for a whole untimed chat run ({cfg.get('conns')} connections, rooms of "
            f"{cfg.get('conns', 0) // max(cfg.get('rooms', 1), 1)}, {fmt(cfg.get('rate'))} msg/s, {fmt(cfg.get('duration_s'))} s, "
            "split layout): connects, join notices and the run. Deliveries = frames the loader received "
            "(messages + join notices). sendmsg+writev = sendmsg+sendto+writev (socket output); write = write(2) "
            "(wschat: eventfd wake-ups between threads; node: socket writes too); read = read+recvfrom+readv; "
            "epoll_wait = epoll_wait+epoll_pwait.")
    return note + "\n\n" + table(headers, rows)


def title(scenario, group):
    d = next(iter(group.values()))[0]
    c = d.get("config", {})
    conns, rooms = c.get("conns"), c.get("rooms")
    per = f"rooms of {conns // rooms}: each message reaches {conns // rooms - 1}" if conns and rooms else "?"
    if scenario == "chat":
        return f"Chat fan-out at fixed rates ({conns} connections, {per})"
    if scenario == "deflate-chat":
        return (f"Chat without and with permessage-deflate ({c.get('payload')}-byte messages of chat-like "
                f"text, the loader offering deflate as Chromium does; {conns} connections, {per})")
    if scenario == "tls-chat":
        return f"Chat without and with TLS (wss://, --tls-self-signed; {conns} connections, {per})"
    if scenario == "tls-connect":
        return (f"Connect storm without and with TLS (wss://, full handshakes; {conns} handshakes then close, "
                f"{c.get('concurrency')} in flight)")
    if scenario == "cpu":
        work = d.get("labels", {}).get("work_us", "?")
        return f"CPU-bound chat (server --work-us {work} per message; {conns} connections, {per})"
    if scenario == "saturate":
        return f"Saturation (closed loop, {conns} connections, {per}, window {c.get('window')})"
    if scenario == "capped-connect":
        caps = caps_of(group)
        held = "half a core" if caps == "50" else f"{caps} % of a core"
        return (f"Connect storm, server held to {held} (cgroup CPU quota {caps} %; {conns} handshakes then "
                f"close, {c.get('concurrency')} in flight, {c.get('source_ips')} source IPs)")
    if scenario == "ping":
        return f"Ping round trip on /echo ({conns} connections, {fmt(c.get('rate'))} msg/s in total)"
    return (f"Connect storm on /echo ({conns} handshakes then close, {c.get('concurrency')} in flight, "
            f"{c.get('source_ips')} source IPs)")


LAYOUT_NOTES = {
    "split": ("layout **split**: server on cpu0, bench-client on cpu1. Multi-thread patterns run both "
              "their threads on the one core: this measures their cost, not their parallelism."),
    "shared": ("layout **shared**: server and bench-client unpinned on the 2 cores. The multi-thread "
               "patterns compete with the loader for the second core: read the loader-bound column."),
}
RENDER = {"chat": chat_table, "cpu": chat_table, "saturate": saturate_table, "ping": ping_table,
          "connect": connect_table, "capped-connect": capped_connect_table, "tls-chat": chat_table, "tls-connect": connect_table,
          "deflate-chat": lambda group: chat_table(group, wire=True)}


# The tables whose caption gives the kernel floor (the chat ones also get "× floor").
FLOOR_SCENARIOS = ("chat", "cpu", "saturate")


def messages_of(group):
    """Which messages the runs sent (config.messages); files from before bench-client sent
    text say nothing, and those runs sent binary."""
    kinds = sorted({d.get("config", {}).get("messages", "binary") for docs in group.values() for d in docs})
    return " and ".join(kinds)


def command_of(group):
    docs = next(iter(group.values()))
    cmd = docs[0].get("command", [])
    out = []
    skip = False
    for a in cmd:  # drop run-specific values: ports, pids, file names, labels
        if skip:
            skip = False
            continue
        if a in ("--json", "--server-pid", "--label", "--hgrm"):
            skip = True
            continue
        out.append(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", os.path.basename(a) if a.endswith("bench-client") else a))
    return " ".join(out)


def summary(run_dir, bench=None, link_prefix="", only=None, groups=None):
    """The run's tables (`only`: just these (layout, scenario) keys), and its syscall table.
    `groups`: the run's cells when the caller has read them already."""
    mpath = os.path.join(run_dir, "machine.json")
    m = load(mpath) if os.path.exists(mpath) else {}
    b = m.get("bench", {})
    groups = groups if groups is not None else cells(run_dir)
    # Every table is captioned with a link to the run's directory (its JSON, summary.md and
    # logs), so that scripts/check-claims.py can find each figure in the files it comes from.
    here = link_prefix or "./"
    source = f"Source: [{os.path.basename(os.path.normpath(run_dir))}/]({here})."
    kf = kernel_floor(run_dir)
    parts = []
    parts.append(f"Machine **{m.get('machine', '?')}**: {m.get('cpu_model')} ({m.get('hypervisor') or 'bare metal'}), "
                 f"{m.get('cpus_online')} CPUs, kernel {m.get('kernel')}, fd limit {m.get('fd_limit', {}).get('hard')}, "
                 f"somaxconn {m.get('sysctls', {}).get('net.core.somaxconn')}. "
                 f"Run [{b.get('started_utc', '?')}]({here}) (mode {b.get('mode', '?')}, {b.get('runs', '?')} run(s) per cell, "
                 f"{b.get('duration_s', '?')} s measured each) of commit `{b.get('git_head', '?')[:12]}`"
                 + (f" with {b.get('git_dirty_server_files')} uncommitted server/client file(s)"
                    if b.get("git_dirty_server_files", "0") not in ("0", 0) else "")
                 + f", produced by `{b.get('command', '?')}`.")
    notes = os.path.join(run_dir, "notes.md")  # written by hand after a run, kept with it
    if os.path.exists(notes):
        parts.append(f"> Notes ([notes.md]({link_prefix}notes.md)): "
                     + open(notes).read().strip().replace("\n", "\n> "))
    skipped = os.path.join(run_dir, "skipped.txt")
    if os.path.exists(skipped):
        parts.append("Skipped: " + "; ".join(open(skipped).read().split("\n")).strip("; "))
    failures = os.path.join(run_dir, "failures.txt")
    if os.path.exists(failures):
        parts.append("**Failed steps**: " + "; ".join(l for l in open(failures).read().splitlines() if l))
    for layout in ("split", "shared"):
        for scenario in SCENARIOS:
            group = groups.get((layout, scenario))
            if not group or (only is not None and (layout, scenario) not in only):
                continue
            sub = f"report/{layout}-{scenario}"
            # The kernel floor goes in the same paragraph as the source link: a table's rows
            # are checked against the links of the paragraph before it (check-claims.py).
            floor = ""
            if kf and scenario in FLOOR_SCENARIOS:
                floor = " " + floor_sentence(kf, f"{link_prefix}{KERNEL_FLOOR}", m.get("cpu_model"))
                if scenario == "chat":
                    floor += " " + floor_ratio_sentence(kf)
            rendered = (chat_table(group, floor_us=kf["us"][floor_unit(kf)]) if kf and scenario == "chat"
                        else RENDER[scenario](group))
            why = capped_note(group) + " " if scenario == "capped-connect" else ""
            parts.append(f"#### {title(scenario, group)} — {layout}\n\n{LAYOUT_NOTES[layout]} "
                         f"Messages: {messages_of(group)}. Command (per run, server address elided): `{command_of(group)}`. "
                         f"{why}{source}{floor}\n\n"
                         + rendered
                         + (f"\n\nPer-run rows and plots: [{sub}/report.md]({link_prefix}{sub}/report.md), "
                            f"[latency]({link_prefix}{sub}/latency.svg), [throughput]({link_prefix}{sub}/throughput.svg)."
                            if bench or os.path.exists(os.path.join(run_dir, sub, "report.md")) else ""))
            if bench:
                files = sorted(d["_file"] for docs in group.values() for d in docs)
                outdir = os.path.join(run_dir, sub)
                r = subprocess.run([bench, "report", *(os.path.join(run_dir, f) for f in files), "-o", outdir],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"summarize.py: bench-client report failed for {sub}: {r.stderr.strip()}")
    sc = syscall_table(run_dir)
    if sc:
        parts.append("#### Syscalls per delivery (untimed run)\n\n" + sc.replace("\n\n", f" {source}\n\n", 1))
    return "\n\n".join(parts) + "\n"


README_HEAD = """# Results

Generated by `scripts/bench.sh` (do not edit by hand: this file is rewritten after every run;
the text below the tables comes from `scripts/bench/summarize.py`). Each run lives in
`<machine>/<UTC timestamp>/`: `machine.json` (CPU, kernel, sysctls, fd limits, tool versions,
the exact `scripts/bench.sh` command and git commit), one raw bench-client JSON per run
(`<pattern>-<io>-<layout>-<scenario>[-rate]-run<k>.json`, with its HdrHistograms),
`summary.md` (the tables below), `notes.md` (optional, by hand: what happened during the run),
`kernel-floor.json` (full mode: `scripts/baselines/kernel-floor.sh`, the kernel's own cost of a
frame on loopback), `report/<layout>-<scenario>/` (`bench-client report`: per-run
rows, latency and throughput plots), `syscalls/` (perf or strace counts) and `logs/` (every
server's start-up line and every bench-client summary). Re-render with
`python3 scripts/bench/summarize.py --run-dir DIR --bench target/release/bench-client`.

## How to read the tables

- Each cell is the **median of its runs** (runs of a cell back to back, a fresh server per run),
  with **[min–max]** beside it when there was more than one run.
- **server µs/delivery**: server CPU (user+sys from /proc/PID/stat over the measured interval)
  divided by the deliveries measured. A chat delivery is one message reaching one receiver, so
  a message in a room of 50 is 49 deliveries. This is the number to compare patterns by while
  the server is not saturated, in the **split** layout.
- **× floor** (when the run has a `kernel-floor.json`): server µs/delivery divided by the
  kernel floor, the sender CPU of one 80-byte frame written alone to a loopback socket by a
  hand-written probe (`scripts/baselines/kernel-floor.sh`, same machine, after the timed runs;
  each caption gives it, and the floor at 4 and 16 frames per `writev`). Close to the floor, the server
  costs little beyond the syscalls it must make; below it, it writes several frames per call.
- **p50/p99/p99.9 µs**: latency from each message's *scheduled* send time to its arrival
  (coordinated-omission free; lost deliveries count at the time waited for them).
- **send_lag p99 µs**: how late the loader itself sent (actual send − scheduled). On a VM a
  sleeping thread wakes late, by far more at the tail than at the median, so read latency
  *together with* send_lag: a p99 close to send_lag p99 is the machine, not the server.
- **correct**: runs whose every delivery was accounted for (received == expected, nothing
  lost, reordered, duplicated or malformed), and what went wrong otherwise; **delivered/expected**
  adds the runs up. A 1008 kick is the server disconnecting a slow consumer (`--max-outbound`).
- <!-- not-measured: thresholds --> **other load**: the most CPU that processes other than the server and the loader used during
  any run of the cell, in % of the whole machine (`host_noise` in the run's JSON, from
  /proc/stat). bench.sh waits up to 60 s for a quiet machine before each run; **bold** (≥ 5 %)
  means something else ran alongside (a compile, a test suite) and the cell is suspect. Treat it
  as a flag, not a measurement: /proc/stat's busy ticks have been seen to exceed wall × CPUs on
  this VM under heavy load (values over 100 %), a known open question of the pipeline.
- <!-- not-measured: threshold --> **loader-bound**: runs in which bench-client used more than 90 % of its core, so that the
  numbers may describe the loader rather than the server; max is its busiest run.
- <!-- not-measured: definitions and the known answer --> **server µs/handshake** (connect storms): server CPU over the storm divided by the
  handshakes completed. On loopback the loader's core also runs the server's half of each TCP
  handshake (SYN handling, the child socket, wake-ups), so the plain storm is loader-bound for
  a fast server; the **capped** storm (`capped-connect`) holds the server process, all its
  threads, to a cgroup CPU quota (default half a core), so that the server is the bottleneck.
  Its **server CPU / cap** is handshakes/s × server µs/handshake ÷ the cap: the known answer is
  about 1.0 when the server limited the storm; well below 1, something else did.
- Rates rise until latency breaks: where delivered/s stops following the offered rate × 49,
  the server (or, on this machine, the one core it has) is saturated and latency grows with the
  backlog of the run.

## CPU layouts

- **split**: server and bench-client pinned to disjoint CPU lists (`--server-cpus`, default
  `0`; `--loader-cpus`, default `1`; each run's labels and machine.json record them). Cost per
  delivery without the loader in the way. The multi-thread patterns run `--threads N`
  (work-queue `--workers N`), N the number of server CPUs but at least 2: on the default
  lists all their threads share the one core, so they pay for their threads (cross-thread
  hand-offs, wake-ups) without a second core to gain from.
- **shared**: both unpinned on every CPU (N = all CPUs, at least 2). What the multi-thread
  patterns can do here — but on 2 cores they compete with the loader, so check loader-bound
  and send_lag before crediting a pattern with a gain.

## The machine and its limits

2 vCPUs (KVM), loopback only (127.0.0.1), hard fd limit 20,000 <!-- not-measured: a setting -->. Loopback means the kernel
runs the receiver's side of every send in the sender's context: a chat server's CPU is
mostly syscalls (what one `write` of an 80-byte frame costs is the kernel floor line under
each chat table), which is why syscalls per delivery are
counted in a separate untimed run (perf or strace slow the server down; never in a timed run).
One loader process on one core; no `merge` of several load machines.

The baseline **node-ws** is `scripts/baselines/node-ws/server.js` (Node 20, `ws` pinned in its
package-lock.json): the course's starting point, single-threaded on libuv, same protocol and
same bench-client. bench-client sends text messages by default (what browsers send: the server
validates their UTF-8 and sends each receiver `<name> says: <text>`), binary ones (forwarded
verbatim) with `--binary`; runs recorded before text became the default sent binary. Each
table's "Messages:" line says which its runs sent.
"""


def readme(root):
    sections = [README_HEAD]
    machines = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) if os.path.isdir(root) else []
    index = []
    for mach in machines:
        runs = sorted(d for d in os.listdir(os.path.join(root, mach))
                      if os.path.exists(os.path.join(root, mach, d, "machine.json")))
        if not runs:
            continue
        info = []
        for r in runs:
            b = load(os.path.join(root, mach, r, "machine.json")).get("bench", {})
            info.append((r, b))
        # Each table from the newest full run that has it (a run of one scenario does not hide
        # the matrix before it); with no full run, the newest run of any mode. The matrix, the
        # newest full run with the chat scenario, comes first and shows every table it has: a
        # later full-mode run of a few scenarios (a connect storm alone, say) adds the tables
        # the matrix lacks but neither heads the machine's section nor replaces a table of the
        # matrix with one of fewer servers (it is in the "Every run" index).
        full = [r for r, b in info if b.get("mode") == "full"] or runs[-1:]
        order = list(reversed(full))
        matrix = [r for r, b in info if r in full and "chat" in str(b.get("scenarios", "")).split()]
        if matrix:
            order.remove(matrix[-1])
            order.insert(0, matrix[-1])
        covered = set()
        for shown in order:
            run_dir = os.path.join(root, mach, shown)
            groups = cells(run_dir)
            keys = set(groups) - covered
            if not keys:
                continue
            covered |= keys
            sections.append(f"## {mach}: {shown}\n\n"
                            + summary(run_dir, link_prefix=f"{mach}/{shown}/", only=keys, groups=groups))
        for r, b in info:
            # A run without a summary (an experiment's directory) is linked as a directory.
            has_summary = os.path.exists(os.path.join(root, mach, r, "summary.md"))
            target = f"{mach}/{r}/summary.md" if has_summary else f"{mach}/{r}/"
            index.append(f"| [{mach}/{r}]({target}) | {b.get('mode', '?')} | "
                         f"`{b.get('command', '?')}` | `{b.get('git_head', '?')[:12]}` |")
    if index:
        sections.append("## Every run\n\n| run | mode | command | commit |\n|---|---|---|---|\n" + "\n".join(index))
    else:
        sections.append("No runs yet: `scripts/bench.sh --quick`.")
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("\n\n".join(s.rstrip("\n") for s in sections) + "\n")
    print(f"wrote {os.path.join(root, 'README.md')}", file=sys.stderr)


# ---- the pattern pages (--pattern-pages) ---------------------------------------------------

WSCHAT_PATTERNS = PATTERN_ORDER[:5]
BASELINES = PATTERN_ORDER[5:]
MEASURED_BEGIN, MEASURED_END = "<!-- measured:begin -->", "<!-- measured:end -->"
MEASURED_BLOCK = re.compile(r"<!-- measured:begin\b.*?-->.*?<!-- measured:end\b.*?-->", re.S)
# What a page holds between the markers until a run is rendered into it (no figures).
MEASURED_PLACEHOLDER = ("Generated by `scripts/bench/summarize.py --pattern-pages` from the newest "
                        "matrix run: none rendered yet.")
# The scenarios of a page's tables, in their order: chat-like ones share a table.
PAGE_CHAT, PAGE_CONNECT, PAGE_PING = ("chat", "cpu", "saturate"), ("connect",), ("ping",)
IO_ORDER = ["epoll", "uring"]


def page_cells(groups, pattern, scenarios):
    """[(layout, scenario, rate, [(name, io, docs)])]: each cell of the pattern (its io backends
    in IO_ORDER), then the baselines' cells of the same layout, scenario and rate."""
    out = []
    for layout in ("split", "shared"):
        for scenario in scenarios:
            group = groups.get((layout, scenario)) or {}
            for rate in sorted({r for (p, _, r) in group if p == pattern}, key=rate_num):
                mine = [(p, io, docs) for (p, io, r), docs in group.items() if p == pattern and r == rate]
                mine.sort(key=lambda t: (IO_ORDER.index(t[1]) if t[1] in IO_ORDER else len(IO_ORDER), t[1]))
                base = [(p, io, docs) for (p, io, r), docs in group.items() if p in BASELINES and r == rate]
                base.sort(key=lambda t: (order_key(t[0]), t[1]))
                out.append((layout, scenario, rate, mine + base))
    return out


def page_table(headers, cells_, pattern, row, rates=True):
    """One table of a pattern page: row(scenario, docs) gives the cells after the server's
    name, io and runs; layout, scenario and rate (rates=False: the layout only, for a table
    of one scenario) are printed where they change."""
    rows, last = [], None
    for layout, scenario, rate, servers in cells_:
        key = [layout] + ([scenario, fmt(rate_num(rate)) if rate != "na" else "–"] if rates else [])
        for name, io, docs in servers:
            lead = [""] * len(key) if key == last else key
            last = key
            rows.append(lead + [f"**{name}**" if name == pattern else name, io, len(docs)] + row(scenario, docs))
    lead = ["layout"] + (["scenario", "rate msg/s"] if rates else [])
    return table(lead + ["server", "io", "runs"] + headers, rows, left=len(lead) + 2)


def pattern_block(run_dir, pattern, pages_dir, groups=None, kf=None):
    """The text between a pattern page's markers for this run, or None when the run has no
    cell of the pattern. Every table's caption links the run's summary.md (which holds each
    figure as printed here) and, for the floor, kernel-floor.json."""
    groups = groups if groups is not None else cells(run_dir)
    if not any(p == pattern for g in groups.values() for (p, _, _) in g):
        return None
    m = load(os.path.join(run_dir, "machine.json")) if os.path.exists(os.path.join(run_dir, "machine.json")) else {}
    b = m.get("bench", {})
    rel = os.path.relpath(run_dir, pages_dir).replace(os.sep, "/")
    stamp = os.path.basename(os.path.normpath(run_dir))
    summary_link = f"[{stamp}/summary.md]({rel}/summary.md)"
    mine = {k: g for k, g in groups.items() if any(p == pattern for (p, _, _) in g)}
    baselines = sorted({p for g in mine.values() for (p, _, _) in g if p in BASELINES}, key=order_key)
    kinds = sorted({messages_of(g) for (_, sc), g in mine.items() if "connect" not in sc})
    messages = f", messages {' and '.join(kinds)}" if kinds else ""
    layouts = {layout for (layout, _), g in mine.items()}
    notes = []
    if "split" in layouts:
        cpus = (f" (server on CPUs {b['split_server_cpus']}, bench-client on {b.get('split_loader_cpus')})"
                if b.get("split_server_cpus") else "")
        notes.append(f"split, server and loader pinned apart{cpus}: the server's CPU per delivery "
                     "without the loader in the way")
    if "shared" in layouts:
        notes.append("shared, both unpinned: the multi-thread patterns get another core but compete "
                     "with the loader for it (see the loader-bound columns of the summary)")
    parts = [
        f"Generated by `scripts/bench/summarize.py --pattern-pages` (do not edit by hand) from the "
        f"matrix run {summary_link} ([its directory]({rel}/): one JSON per run, machine.json, logs) on "
        f"**{m.get('machine', '?')}** ({m.get('cpu_model')}, {m.get('hypervisor') or 'bare metal'}, "
        f"{m.get('cpus_online')} CPUs, kernel {m.get('kernel')}), commit `{b.get('git_head', '?')[:12]}`, "
        f"mode {b.get('mode', '?')}, {b.get('runs', '?')} run(s) per cell of {b.get('duration_s', '?')} s "
        f"measured each{messages}. "
        f"Each figure is the median of the runs with [min–max] beside it; **{pattern}** is this page's "
        f"pattern, "
        + (f"the other rows are the baselines of the same run ({', '.join(baselines)}: other servers, "
           f"same loader, same machine). " if baselines else "and the run had no baseline beside it. ")
        + ("Layouts: " + "; ".join(notes) + "." if notes else "")]
    floor_us = kf["us"][floor_unit(kf)] if kf else None

    def caption(scenarios):
        titles = []
        for sc in scenarios:
            g = groups.get(("split", sc)) or groups.get(("shared", sc))
            if g and any(p == pattern for (p, _, _) in g):
                titles.append(title(sc, g))
        text = f"{'; '.join(titles)}. Source: {summary_link}."
        if kf and scenarios == PAGE_CHAT:
            text += " " + floor_sentence(kf, f"{rel}/{KERNEL_FLOOR}", m.get("cpu_model"))
            text += " " + floor_ratio_sentence(kf)
        return text

    chat = page_cells(groups, pattern, PAGE_CHAT)
    if chat:
        headers = ["deliveries/s", "server µs/delivery"] + (["× floor"] if kf else []) + [
            "p50 µs", "p99 µs", "correct", "kept up"]

        def chat_row(scenario, docs):
            return ([delivered_col(docs), server_us_col(docs)]
                    + ([times_floor_col(docs, floor_us) if scenario == "chat" else "–"] if kf else [])
                    + [pctl_col(docs, "p50"), pctl_col(docs, "p99"), correctness(docs)[0], kept_up_col(docs)])
        parts.append(caption(PAGE_CHAT) + "\n\n" + page_table(headers, chat, pattern, chat_row))
    connect = page_cells(groups, pattern, PAGE_CONNECT)
    if connect:
        parts.append(caption(PAGE_CONNECT) + "\n\n" + page_table(
            ["handshakes/s", "failed/attempted", "loader-bound"], connect, pattern,
            lambda scenario, docs: [handshakes_col(docs), failed_col(docs), loader_col(docs)], rates=False))
    ping = page_cells(groups, pattern, PAGE_PING)
    if ping:
        parts.append(caption(PAGE_PING) + "\n\n" + page_table(
            ["RTT p50 µs", "p99 µs", "correct"], ping, pattern,
            lambda scenario, docs: [pctl_col(docs, "p50"), pctl_col(docs, "p99"), correctness(docs)[0]], rates=False))
    if not (chat or connect or ping):
        parts.append(f"This run has {pattern} only in scenarios these tables leave out; see {summary_link}.")
    return "\n\n".join(parts)


def replace_measured(text, body):
    """text with body between the measured markers; where the page has none yet, the markers
    go under "## Measured numbers", in place of its "None published yet." paragraph if any."""
    block = f"{MEASURED_BEGIN}\n{body.strip()}\n{MEASURED_END}"
    if MEASURED_BLOCK.search(text):
        return MEASURED_BLOCK.sub(lambda _: block, text, count=1)
    h = re.search(r"^## Measured numbers[ \t]*\n", text, re.M)
    if not h:
        raise ValueError('no "## Measured numbers" section')
    rest = text[h.end():]
    p = re.match(r"\s*None published yet\..*?(?=\n[ \t]*\n|\Z)", rest, re.S)
    if p:
        return text[:h.end()] + "\n" + block + rest[p.end():]
    return text[:h.end()] + "\n" + block + "\n" + rest


def pattern_pages(run_dir, pages_dir):
    """Rewrites the measured block of pages_dir/<pattern>.md for each pattern the run has."""
    summary_md = os.path.join(run_dir, "summary.md")
    if not os.path.exists(summary_md):
        raise SystemExit(f"summarize.py: no {summary_md}: render it first (--run-dir {run_dir}); "
                         "the pages link to it for every figure")
    groups, kf = cells(run_dir), kernel_floor(run_dir)
    with open(summary_md) as f:
        shows_floor = KERNEL_FLOOR in f.read()
    if kf and not shows_floor and any(sc in FLOOR_SCENARIOS for (_, sc) in groups):
        print(f"summarize.py: warning: {summary_md} does not show the run's {KERNEL_FLOOR} yet: "
              f"re-render it (--run-dir {run_dir})", file=sys.stderr)
    for pattern in WSCHAT_PATTERNS:
        page = os.path.join(pages_dir, f"{pattern}.md")
        if not os.path.exists(page):
            print(f"summarize.py: no {page}: skipped", file=sys.stderr)
            continue
        body = pattern_block(run_dir, pattern, pages_dir, groups, kf)
        if body is None:
            print(f"summarize.py: {run_dir} has no cell of {pattern}: {page} left as it was", file=sys.stderr)
            continue
        with open(page) as f:
            text = f.read()
        try:
            new = replace_measured(text, body)
        except ValueError as e:
            raise SystemExit(f"summarize.py: {page}: {e}")
        with open(page, "w") as f:
            f.write(new)
        print(f"wrote {page}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--one-line", metavar="RUN_JSON")
    g.add_argument("--run-dir", metavar="DIR")
    g.add_argument("--readme", metavar="ROOT")
    g.add_argument("--pattern-pages", metavar="DIR", help="a run directory whose cells go to the pattern pages")
    ap.add_argument("--bench", metavar="BIN", help="bench-client binary, to render report/ plots")
    ap.add_argument("--pages", metavar="DIR", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "patterns"),
                    help="the pattern pages' directory, for --pattern-pages (default: the repository's patterns/)")
    a = ap.parse_args()
    if a.one_line:
        print(one_line(a.one_line))
    elif a.pattern_pages:
        pattern_pages(a.pattern_pages, os.path.normpath(a.pages))
    elif a.run_dir:
        text = summary(a.run_dir, a.bench)
        with open(os.path.join(a.run_dir, "summary.md"), "w") as f:
            f.write(f"# {os.path.basename(os.path.normpath(a.run_dir))}\n\n" + text)
        print(f"wrote {os.path.join(a.run_dir, 'summary.md')}", file=sys.stderr)
    else:
        readme(a.readme)


if __name__ == "__main__":
    main()
