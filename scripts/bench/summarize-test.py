#!/usr/bin/env python3
"""Tests for scripts/bench/summarize.py: the kernel floor beside the chat tables, the capped
connect storm's table (and its known-answer column), which runs results/README.md shows, and the
generated measured block of the pattern pages. Each case builds a small run directory (a
machine.json, a few bench-client JSON files, a kernel-floor.json) in a temporary directory;
the end-to-end case also runs scripts/check-claims.py on the pages it generated. The real tree
is never touched.

    scripts/bench/summarize-test.py     # or: python3 -m unittest scripts/bench/summarize-test.py

Standard library only; takes about a second.
"""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK_CLAIMS = os.path.join(HERE, "..", "check-claims.py")
spec = importlib.util.spec_from_file_location("summarize", os.path.join(HERE, "summarize.py"))
summarize = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summarize)

STAMP = "2026-12-06T101500Z"
MACHINE = {"machine": "test-2cpu", "cpu_model": "Test CPU", "cpus_online": 2, "hypervisor": "KVM",
           "kernel": "6.1.0", "fd_limit": {"hard": 20000}, "sysctls": {"net.core.somaxconn": "4096"},
           "bench": {"command": "scripts/bench.sh", "mode": "full", "git_head": "0123456789abcdef0123",
                     "started_utc": STAMP, "runs": "2", "duration_s": "5",
                     "scenarios": "chat saturate connect ping cpu",
                     "split_server_cpus": "0", "split_loader_cpus": "1"}}
FLOOR = {"probe": "sendcost", "machine": {"cpu": "Test CPU", "cpus": 2}, "frame_bytes": 80,
         "runs": [{"frames_per_call": 1, "sender_ns_per_frame": 1531.0, "other_load_pct": 1.2},
                  {"frames_per_call": 4, "sender_ns_per_frame": 396.0, "other_load_pct": 0.8},
                  {"frames_per_call": 16, "sender_ns_per_frame": 126.0, "other_load_pct": 0.9}]}


def chat_doc(pattern, io, layout, scenario, rate, run, us, p50, kept_up=True):
    return {"kind": "chat" if scenario != "saturate" else "saturate",
            "labels": {"pattern": pattern, "io": io, "layout": layout, "scenario": scenario,
                       "rate": rate, "run": str(run), "work_us": "0"},
            "command": ["bench-client", "chat", "--url", "ws://127.0.0.1:4000", "--conns", "1000"],
            "config": {"conns": 1000, "rooms": 20, "window": 8, "messages": "text"},
            "counters": {"received": 245000, "expected": 245000},
            "rates": {"delivered_per_s": 49000.0},
            "histograms": {"latency_us": {"percentiles": {"p50": p50, "p90": p50 * 2, "p99": p50 * 5,
                                                          "p99_9": p50 * 9}},
                           "send_lag_us": {"percentiles": {"p99": 180}}},
            "correct": True, "verdicts": {"kept_up": kept_up},
            "loader": {"busy_per_thread": 0.4, "loader_bound": False},
            "server": {"cpu_us_per_delivery": us, "user_s": 0.1, "sys_s": 1.0}}


def connect_doc(pattern, io, run, hs):
    return {"kind": "connect",
            "labels": {"pattern": pattern, "io": io, "layout": "split", "scenario": "connect",
                       "rate": "na", "run": str(run)},
            "command": ["bench-client", "connect"], "config": {"conns": 5000, "concurrency": 100, "source_ips": 8},
            "counters": {"handshakes": 5000, "attempted": 5000, "failed": 0},
            "rates": {"handshakes_per_s": hs},
            "histograms": {"connect_us": {"percentiles": {"p99": 900}},
                           "upgrade_us": {"percentiles": {"p50": 300, "p99": 1200}}},
            "correct": None, "loader": {"busy_per_thread": 0.97, "loader_bound": True},
            "server": {"user_s": 0.2, "sys_s": 0.3}}


def capped_doc(pattern, io, run, hs, server_s, cap="50", handshakes=20000, loader_busy=0.55):
    """A capped-connect run: server_s of server CPU (user+sys) over `handshakes` handshakes."""
    d = connect_doc(pattern, io, run, hs)
    d["labels"].update(scenario="capped-connect", cpu_cap=cap)
    d["config"]["conns"] = handshakes
    d["counters"].update(handshakes=handshakes, attempted=handshakes)
    d["server"] = {"user_s": round(server_s * 0.3, 6), "sys_s": round(server_s * 0.7, 6)}
    d["loader"] = {"busy_per_thread": loader_busy, "loader_bound": False}
    d["cpu_cap"] = {"pct_of_one_cpu": int(cap), "quota_us": 100 * int(cap), "period_us": 10000,
                    "cgroup": "v1", "periods": 60, "throttled_periods": 58, "throttled_ms": 150.0}
    return d


def write_doc(run, d):
    """d under the file name bench.sh gives it."""
    lab = d["labels"]
    rate = "" if lab["rate"] == "na" else "-" + lab["rate"]
    variant = f"-cpu_cap_{lab['cpu_cap']}" if "cpu_cap" in lab else ""
    write(os.path.join(run, f"{lab['pattern']}-{lab['io']}-{lab['layout']}-{lab['scenario']}{rate}{variant}"
                            f"-run{lab['run']}.json"), d)


def write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if isinstance(doc, str):
            f.write(doc)
        else:
            json.dump(doc, f)


def read(path):
    with open(path) as f:
        return f.read()


def quietly(fn, *args):
    """fn(*args) with what summarize.py says on stderr kept out of the test output."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


def make_run(root, floor=True):
    """A run directory under root/results/test-2cpu/STAMP; returns its path."""
    run = os.path.join(root, "results", "test-2cpu", STAMP)
    write(os.path.join(run, "machine.json"), MACHINE)
    docs = [
        chat_doc("single-thread", "epoll", "split", "chat", "1000", 1, 7.3519, 2623),
        chat_doc("single-thread", "epoll", "split", "chat", "1000", 2, 7.01, 2057),
        chat_doc("single-thread", "uring", "split", "chat", "1000", 1, 6.53, 1512, kept_up=False),
        chat_doc("node-ws", "libuv", "split", "chat", "1000", 1, 11.63, 551),
        chat_doc("reuseport", "epoll", "split", "chat", "1000", 1, 6.67, 423),
        chat_doc("single-thread", "epoll", "shared", "saturate", "na", 1, 1.21, 9000),
        chat_doc("node-ws", "libuv", "shared", "saturate", "na", 1, 3.4, 12000),
    ]
    for d in docs:
        lab = d["labels"]
        rate = "" if lab["rate"] == "na" else "-" + lab["rate"]
        write(os.path.join(run, f"{lab['pattern']}-{lab['io']}-{lab['layout']}-{lab['scenario']}{rate}-run{lab['run']}.json"), d)
    for name, io, hs in (("single-thread", "epoll", 48232.5), ("uws-js", "uws", 35953.0)):
        write(os.path.join(run, f"{name}-{io}-split-connect-run1.json"), connect_doc(name, io, 1, hs))
    if floor:
        write(os.path.join(run, "kernel-floor.json"), FLOOR)
    return run


PAGE = """# single-thread

Intro.

## Measured numbers

None published yet. Latency and throughput tables come from `bench-client`
(`scripts/bench.sh`, `results/`) and will be added here.

<!-- experiments:begin (generated) -->
## Experiments
<!-- experiments:end -->
"""


class KernelFloor(unittest.TestCase):
    def test_caption_and_ratio_column_when_the_file_is_there(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root)
            kf = summarize.kernel_floor(run)
            self.assertEqual(summarize.floor_unit(kf), 1)
            self.assertAlmostEqual(kf["us"][16], 0.126)
            text = summarize.summary(run)
            self.assertIn("Kernel floor (same machine, this run): 1.53 µs per 80-byte frame written alone, "
                          "0.396 µs at 4 per call, 0.126 µs at 16 per call", text)
            self.assertIn("[kernel-floor.json](kernel-floor.json)", text)
            self.assertIn("| × floor |", text)
            self.assertIn("| 4.7× |", text)  # median 7.18 of 7.35 and 7.01, over 1.531
            # chat and saturate captions, not connect's
            self.assertEqual(text.count("Kernel floor ("), 2)
            # results/README.md links from its own directory
            self.assertIn("(test-2cpu/x/kernel-floor.json)", summarize.summary(run, link_prefix="test-2cpu/x/"))

    def test_no_file_no_floor(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root, floor=False)
            self.assertIsNone(summarize.kernel_floor(run))
            text = summarize.summary(run)
            self.assertNotIn("Kernel floor", text)
            self.assertNotIn("× floor", text)

    def test_an_unreadable_file_is_ignored(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root, floor=False)
            write(os.path.join(run, "kernel-floor.json"), "")
            self.assertIsNone(quietly(summarize.kernel_floor, run))
            self.assertNotIn("Kernel floor", quietly(summarize.summary, run))

    def test_another_cpu_is_said(self):
        kf = {"doc": {"machine": {"cpu": "Other CPU"}, "runs": []}, "us": {1: 1.5}, "bytes": 80}
        self.assertIn("measured on Other CPU, not this run's CPU", summarize.floor_sentence(kf, "x", "Test CPU"))

    def test_ratio(self):
        docs = [{"server": {"cpu_us_per_delivery": v}} for v in (7.5, 3.0, 4.5)]
        self.assertEqual(summarize.times_floor_col(docs, 1.5), "3.0×")
        self.assertEqual(summarize.times_floor_col([{"server": {}}], 1.5), "–")

    def test_one_line(self):
        with tempfile.TemporaryDirectory() as root:
            path = os.path.join(root, "kernel-floor.json")
            write(path, FLOOR)
            self.assertEqual(summarize.one_line(path),
                             "sender CPU per frame: 1 531 ns at 1/call, 396 ns at 4/call, 126 ns at 16/call")


def make_storm_run(root, stamp="2026-12-06T180000Z", mode="full"):
    """A run of the connect storms alone (bench.sh --scenarios "connect capped-connect")."""
    run = os.path.join(root, "results", "test-2cpu", stamp)
    bench = dict(MACHINE["bench"], mode=mode, started_utc=stamp, scenarios="connect capped-connect",
                 command='scripts/bench.sh --scenarios "connect capped-connect"')
    write(os.path.join(run, "machine.json"), dict(MACHINE, bench=bench))
    # 14.5 µs and 15.5 µs of server CPU per handshake
    write_doc(run, capped_doc("single-thread", "epoll", 1, 34029.0, 0.29))
    write_doc(run, capped_doc("single-thread", "epoll", 2, 31001.0, 0.31))
    write_doc(run, capped_doc("uws-js", "uws", 1, 23863.0, 0.42))
    write_doc(run, connect_doc("single-thread", "epoll", 1, 50111.0))
    return run


class CappedConnect(unittest.TestCase):
    def test_known_answer(self):
        d = capped_doc("single-thread", "epoll", 1, 34029.0, 0.29)
        self.assertAlmostEqual(summarize.server_us_per_handshake(d), 14.5)
        # 34 029/s x 14.5 µs = 0.493 of a core, at a cap of half a core
        self.assertAlmostEqual(summarize.cap_ratio(d), 34029 * 14.5e-6 / 0.5)
        # a quarter of a core: the same server CPU is twice the cap
        self.assertAlmostEqual(summarize.cap_ratio(capped_doc("x", "y", 1, 34029.0, 0.29, cap="25")),
                               34029 * 14.5e-6 / 0.25)
        # the cap from the JSON when the label is missing; none at all: no answer
        del d["labels"]["cpu_cap"]
        self.assertEqual(summarize.cpu_cap(d), 50)
        del d["cpu_cap"]
        self.assertIsNone(summarize.cap_ratio(d))
        self.assertIsNone(summarize.server_us_per_handshake({"server": {}, "counters": {"handshakes": 5}}))

    def test_table_and_caption(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_storm_run(root)
            text = summarize.summary(run)
            self.assertIn("#### Connect storm, server held to half a core (cgroup CPU quota 50 %; 20000 "
                          "handshakes then close, 100 in flight, 8 source IPs) — split", text)
            self.assertIn("| pattern | io | runs | handshakes/s | server µs/handshake | server CPU / cap | "
                          "failed/attempted | loader-bound | other load |", text)
            # medians: 32 515/s, 15.0 µs, (0.987 + 0.961) / 2
            self.assertIn("| **single-thread** | epoll | 2 | 32 515 [31 001–34 029] | 15.0 [14.5–15.5] | "
                          "0.97 [0.96–0.99] | 0/40000 | no (0/2, max 55%) | – |", text)
            self.assertIn("| **uws-js** | uws | 1 | 23 863 | 21.0 | 1.00 | 0/20000 |", text)
            # the why, in the paragraph of the source link
            self.assertIn("runs the server's half of each TCP handshake", text)
            self.assertRegex(text, r"about 1\.0 when the server limited the storm[^\n]*Source: ")
            # and the plain storm's table beside it, from the same run directory
            self.assertIn("#### Connect storm on /echo (5000 handshakes then close", text)
            self.assertIn("| **single-thread** | epoll | 1 | 50 111 |", text)
            self.assertNotIn("Kernel floor", text)

    def test_another_cap_is_said(self):
        group = {("single-thread", "epoll", "na"): [capped_doc("single-thread", "epoll", 1, 20000.0, 0.5,
                                                              cap="25")]}
        self.assertIn("server held to 25 % of a core (cgroup CPU quota 25 %;",
                      summarize.title("capped-connect", group))
        # 20 000/s x 25 µs = half a core, twice a cap of a quarter
        self.assertIn("| 25.0 | 2.00 |", summarize.capped_connect_table(group))

    def test_a_storm_only_run_renders_on_the_command_line(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_storm_run(root)
            r = subprocess.run([sys.executable, os.path.join(HERE, "summarize.py"), "--run-dir", run],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("server CPU / cap", read(os.path.join(run, "summary.md")))


class Readme(unittest.TestCase):
    def test_a_later_storm_only_run_does_not_head_the_machine(self):
        with tempfile.TemporaryDirectory() as root:
            matrix = make_run(root)
            storm = make_storm_run(root)  # newer, also mode full
            quietly(summarize.readme, os.path.join(root, "results"))
            text = read(os.path.join(root, "results", "README.md"))
            sections = [l for l in text.splitlines() if l.startswith("## test-2cpu: ")]
            self.assertEqual(sections, [f"## test-2cpu: {STAMP}", "## test-2cpu: 2026-12-06T180000Z"])
            head = text[text.index(sections[0]):text.index(sections[1])]
            # the matrix keeps its connect table; the storm run adds only what it lacks
            self.assertIn("| **single-thread** | epoll | 1 | 48 232 |", head)
            tail = text[text.index(sections[1]):text.index("## Every run")]
            self.assertIn("server CPU / cap", tail)
            self.assertNotIn("50 111", tail)
            self.assertNotIn("#### Connect storm on /echo", tail)
            # both are in the index
            self.assertIn(f"[test-2cpu/{os.path.basename(storm)}]", text)
            self.assertIn(f"[test-2cpu/{os.path.basename(matrix)}]", text)

    def test_without_a_matrix_the_newest_full_run_comes_first(self):
        with tempfile.TemporaryDirectory() as root:
            make_storm_run(root, "2026-12-06T170000Z")
            make_storm_run(root, "2026-12-06T180000Z")
            quietly(summarize.readme, os.path.join(root, "results"))
            text = read(os.path.join(root, "results", "README.md"))
            sections = [l for l in text.splitlines() if l.startswith("## test-2cpu: ")]
            self.assertEqual(sections, ["## test-2cpu: 2026-12-06T180000Z"])


class MeasuredBlock(unittest.TestCase):
    def test_markers_replace_the_none_published_paragraph(self):
        out = summarize.replace_measured(PAGE, "BODY")
        self.assertIn("## Measured numbers\n\n<!-- measured:begin -->\nBODY\n<!-- measured:end -->\n\n"
                      "<!-- experiments:begin", out)
        self.assertNotIn("None published", out)
        # and then only the block changes
        again = summarize.replace_measured(out.replace("## Experiments", "## Experiments\nkept"), "NEW")
        self.assertIn("<!-- measured:begin -->\nNEW\n<!-- measured:end -->", again)
        self.assertIn("kept", again)
        self.assertNotIn("BODY", again)

    def test_other_text_of_the_section_stays_outside(self):
        page = "## Measured numbers\n\nOther text, kept.\n\n## Next\n"
        out = summarize.replace_measured(page, "BODY")
        self.assertEqual(out, "## Measured numbers\n\n<!-- measured:begin -->\nBODY\n<!-- measured:end -->\n\n"
                              "Other text, kept.\n\n## Next\n")

    def test_a_page_without_the_section_is_an_error(self):
        with self.assertRaises(ValueError):
            summarize.replace_measured("# Title\n", "BODY")


class PatternPages(unittest.TestCase):
    def test_pages_generated_from_a_run_pass_check_claims(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root)
            with open(os.path.join(run, "summary.md"), "w") as f:
                f.write(summarize.summary(run))
            pages = os.path.join(root, "patterns")
            for p in ("single-thread", "reuseport", "work-queue"):
                write(os.path.join(pages, f"{p}.md"), PAGE.replace("# single-thread", f"# {p}"))
            quietly(summarize.pattern_pages, run, pages)
            page = os.path.join(pages, "single-thread.md")
            text = read(page)
            block = text[text.index("<!-- measured:begin -->"):text.index("<!-- measured:end -->")]
            self.assertIn(f"[{STAMP}/summary.md](../results/test-2cpu/{STAMP}/summary.md)", block)
            self.assertIn(f"[its directory](../results/test-2cpu/{STAMP}/)", block)
            self.assertIn("commit `0123456789ab`", block)
            self.assertIn(f"(../results/test-2cpu/{STAMP}/kernel-floor.json)", block)
            self.assertIn("| split | chat | 1 000 | **single-thread** | epoll | 2 | 49 000 [49 000–49 000] | "
                          "7.18 [7.01–7.35] | 4.7× | 2 340 [2 057–2 623] |", block)
            self.assertIn("| **single-thread** | uring | 1 |", block)
            self.assertIn("| **NO** (0/1) |", block)  # uring did not keep up
            self.assertIn("| node-ws | libuv | 1 |", block)  # the baseline beside it
            self.assertNotIn("reuseport", block)  # another pattern is not a baseline
            self.assertIn("| shared | saturate | – | **single-thread** |", block)
            self.assertIn("| split | **single-thread** | epoll | 1 | 48 232 |", block)  # connect
            self.assertIn("| uws-js | uws | 1 | 35 953 |", block)
            # a pattern the run does not have: its page is left alone
            self.assertEqual(read(os.path.join(pages, "work-queue.md")),
                             PAGE.replace("# single-thread", "# work-queue"))
            r = subprocess.run([sys.executable, CHECK_CLAIMS, "--root", root], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("0 problem(s)", r.stdout)
            # and the links are what the figures are checked against: a wrong one fails
            with open(page, "w") as f:
                f.write(text.replace("7.18 [7.01–7.35]", "7.48 [7.01–7.35]"))
            r = subprocess.run([sys.executable, CHECK_CLAIMS, "--root", root], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn('figure "7.48" not found', r.stdout)

    def test_no_summary_is_an_error(self):
        with tempfile.TemporaryDirectory() as root:
            run = make_run(root)
            with self.assertRaises(SystemExit):
                summarize.pattern_pages(run, os.path.join(root, "patterns"))


if __name__ == "__main__":
    unittest.main()
