#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report directory.

    python3 scripts/autobahn/summarize.py target/autobahn/<pattern>-<io>/reports

Reads index.json (agent -> case id -> {behavior, behaviorClose, reportfile, ...}) and
prints the count of each outcome, the ids of FAILED cases with what the suite expected,
and the ids of NON-STRICT / INFORMATIONAL / UNIMPLEMENTED cases. A case passes when its
`behavior` is not FAILED. The last line is `autobahn: N passed, M failed`.

Exit status: 0 if every case passed, 1 if any FAILED or there are no results.
"""

import json
import os
import sys
from collections import Counter

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
LISTED = ["NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"]


def case_key(case_id):
    """Sort "9.10.2" after "9.2.1"."""
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]


def counts_line(counter):
    names = ORDER + sorted(k for k in counter if k not in ORDER)
    return ", ".join(f"{n} {counter[n]}" for n in names if counter[n] or n in ORDER)


def shorten(value, limit=300):
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def describe(outdir, entry):
    """Details from the per-case JSON report, for a failing case."""
    path = os.path.join(outdir, entry.get("reportfile", ""))
    try:
        with open(path) as f:
            case = json.load(f)
    except (OSError, ValueError):
        return [f"(no per-case report at {path})"]
    lines = [
        f"description: {shorten(case.get('description', ''))}",
        f"expectation: {shorten(case.get('expectation', ''))}",
        f"expected:    {shorten(json.dumps(case.get('expected')))}",
        f"received:    {shorten(json.dumps(case.get('received')))}",
        f"result:      {shorten(case.get('result', ''))}",
        f"close:       {shorten(case.get('resultClose', ''))} (expected "
        f"{json.dumps(case.get('expectedClose'))}; server sent code "
        f"{case.get('remoteCloseCode')}, clean {case.get('wasClean')}, "
        f"{case.get('wasNotCleanReason') or 'no unclean reason'})",
        f"report:      {path}",
    ]
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    index_path = os.path.join(outdir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn: no results ({index_path}: {e})")
        return 1

    cases = {}
    for agent, agent_cases in sorted(index.items()):
        for case_id, entry in agent_cases.items():
            key = case_id if len(index) == 1 else f"{agent}:{case_id}"
            cases[key] = entry
    if not cases:
        print(f"autobahn: no results (no cases in {index_path})")
        return 1

    ids = sorted(cases, key=case_key)
    behavior = Counter(cases[i]["behavior"] for i in ids)
    behavior_close = Counter(cases[i]["behaviorClose"] for i in ids)

    print(f"Autobahn|Testsuite: {len(ids)} cases ({', '.join(sorted(index))})")
    print(f"  behavior:      {counts_line(behavior)}")
    print(f"  behaviorClose: {counts_line(behavior_close)}")

    for outcome in LISTED:
        listed = [i for i in ids if cases[i]["behavior"] == outcome]
        if listed:
            print(f"{outcome} ({len(listed)}): {' '.join(listed)}")

    odd_close = [
        f"{i}={cases[i]['behaviorClose']}"
        for i in ids
        if cases[i]["behavior"] != "FAILED"
        and cases[i]["behaviorClose"] not in ("OK", "INFORMATIONAL")
    ]
    if odd_close:
        print(f"behaviorClose not OK, behavior not FAILED ({len(odd_close)}): {' '.join(odd_close)}")

    failed = [i for i in ids if cases[i]["behavior"] == "FAILED"]
    if failed:
        print(f"FAILED ({len(failed)}): {' '.join(failed)}")
        for i in failed:
            print(f"  case {i} (behaviorClose {cases[i]['behaviorClose']})")
            for line in describe(outdir, cases[i]):
                print(f"    {line}")

    print(f"autobahn: {len(ids) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
