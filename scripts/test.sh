#!/usr/bin/env bash
# The project's test command.
#
#   scripts/test.sh                # cargo test, then every external suite whose tools are here
#   scripts/test.sh --quick        # the script checks and cargo test only
#   scripts/test.sh --require-all  # a suite whose tools are missing is a failure, not a skip
#
# External suites: Autobahn|Testsuite (scripts/autobahn.sh; needs pyenv's Python 2.7.18).
# Exits non-zero if anything failed (or, with --require-all, was skipped).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=false
require_all=false
for arg in "$@"; do
    case $arg in
        --quick) quick=true ;;
        --require-all) require_all=true ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "test.sh: unknown option: $arg" >&2; exit 2 ;;
    esac
done

passed=()
failed=()
skipped=()

section() { printf '\n==> %s\n' "$*"; }

# run NAME COMMAND...: run one step, record whether it passed.
run() {
    local name=$1
    shift
    section "$name: $*"
    if "$@"; then
        passed+=("$name")
    else
        failed+=("$name")
    fi
}

# finish_background PID LOG: waits for a step started in the background, shows its output,
# and returns its status (for `run`).
finish_background() {
    local status=0
    wait "$1" || status=$?
    cat "$2"
    rm -f "$2"
    return "$status"
}

# skip NAME INSTALL_HINT: a suite whose tools are missing.
skip() {
    echo "SKIPPED: $1 (install: $2)"
    skipped+=("$1")
    if $require_all; then
        failed+=("$1 (missing tools; --require-all)")
    fi
}

run "layer check" bash scripts/check-layers.sh
run "layer check self-test" bash scripts/check-layers-test.sh
run "tune-kernel test" bash scripts/tune-kernel-test.sh
run "claim check" python3 scripts/check-claims.py
run "claim check self-test" python3 scripts/check-claims-test.py
run "summarize self-test" python3 scripts/bench/summarize-test.py
run "A/B comparison self-test" python3 scripts/bench/ab-compare-test.py
run "cargo test" cargo test --workspace --all-targets
run "doc tests" cargo test --workspace --doc

if ! $quick; then
    # Autobahn|Testsuite: present when the Python 2.7 virtualenv can be set up
    # (scripts/autobahn.sh exits 3 when it cannot).
    section "autobahn: setting up wstest"
    setup=0
    bash scripts/autobahn.sh --setup-only || setup=$?
    if ((setup == 3)); then
        skip autobahn "pyenv install 2.7.18 && scripts/autobahn.sh --setup-only"
    elif ((setup != 0)); then
        failed+=("autobahn (setup)")
    else
        # Sections 12-13 (permessage-deflate, 216 cases, wstest-bound: about 19 minutes here)
        # on single-thread/epoll, in the background beside the 1-10 matrix: each wstest run
        # takes about one core. `scripts/autobahn.sh --matrix --all` runs 1-13 everywhere.
        deflate_log=$(mktemp "${TMPDIR:-/tmp}/wschat-autobahn-deflate.XXXXXX")
        bash scripts/autobahn.sh --pattern single-thread --cases "12.*,13.*" \
            --name single-thread-epoll-deflate >"$deflate_log" 2>&1 &
        deflate_pid=$!
        # Sections 1-10 on every pattern (multi-thread ones with two loops or two workers: the
        # protocol must not depend on how threads are arranged) on both backends, and
        # io_uring without its optional features: 11 runs, one at a time.
        run "autobahn matrix, sections 1-10" bash scripts/autobahn.sh --matrix
        run "autobahn single-thread/epoll, sections 12-13" finish_background "$deflate_pid" "$deflate_log"
    fi
fi

# The benchmark pipeline, tiny: release build, single-thread + reuseport (+ the Node baseline
# when node is here), chat 50 connections 2 s, 1 run; fails unless JSON is written, every
# delivery is accounted for and the report renders. No timing thresholds. Results go to a
# temporary folder, never to results/.
if ! $quick; then
    bench_out=$(mktemp -d "${TMPDIR:-/tmp}/wschat-bench-smoke.XXXXXX")
    run "bench smoke" bash scripts/bench.sh --smoke --out "$bench_out"
    rm -rf "$bench_out"
fi

# The browser page in Debian's Chromium (tests/browser/run.sh: playwright-core, node:test,
# three patterns), then interop with client libraries we did not write (scripts/interop.sh:
# Python websockets, Node ws, curl), for a single-thread and a multi-thread server.
if ! $quick; then
    if [[ -x ${CHROMIUM:-/usr/bin/chromium} ]] && command -v node >/dev/null && command -v npm >/dev/null; then
        run "browser" bash tests/browser/run.sh
    else
        skip browser "apt-get install chromium && (cd tests/browser && npm ci)"
    fi
    if command -v python3 >/dev/null && command -v node >/dev/null && command -v npm >/dev/null; then
        run "interop single-thread" bash scripts/interop.sh
        run "interop multi-accept" bash scripts/interop.sh -- --pattern multi-accept --threads 2
    else
        skip interop "python3 (with venv) and Node.js 20 with npm, then scripts/interop.sh"
    fi
fi

# list NAME...: the names joined with ", ", or "none".
list() {
    (($#)) || { echo none; return; }
    local joined
    joined=$(printf ', %s' "$@")
    echo "${joined#, }"
}

section summary
echo "passed:  $(list "${passed[@]}")"
echo "skipped: $(list "${skipped[@]}")"
echo "failed:  $(list "${failed[@]}")"
((${#failed[@]} == 0))
