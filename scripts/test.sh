#!/usr/bin/env bash
# The project's test command.
#
#   scripts/test.sh                # cargo test, then every external suite whose tools are here
#   scripts/test.sh --quick        # cargo test only
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

# skip NAME INSTALL_HINT: a suite whose tools are missing.
skip() {
    echo "SKIPPED: $1 (install: $2)"
    skipped+=("$1")
    if $require_all; then
        failed+=("$1 (missing tools; --require-all)")
    fi
}

run "layer check" bash scripts/check-layers.sh
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
        # Every pattern, multi-thread ones with two loops (or two workers): the protocol
        # must not depend on how threads are arranged.
        # Every pattern on both backends, and io_uring's fallbacks once.
        for io in epoll uring; do
            run "autobahn single-thread/$io" bash scripts/autobahn.sh --pattern single-thread --io "$io"
            run "autobahn acceptor-readers/$io" bash scripts/autobahn.sh --pattern acceptor-readers --io "$io" -- --threads 2
            run "autobahn work-queue/$io" bash scripts/autobahn.sh --pattern work-queue --io "$io" -- --workers 2
            run "autobahn multi-accept/$io" bash scripts/autobahn.sh --pattern multi-accept --io "$io" -- --threads 2
            run "autobahn reuseport/$io" bash scripts/autobahn.sh --pattern reuseport --io "$io" -- --threads 2
        done
        run "autobahn single-thread/uring, no features" bash scripts/autobahn.sh --pattern single-thread --io uring -- --uring-features none
        # permessage-deflate (sections 12-13): the full 216 cases take ~50 minutes here (wstest
        # is the bottleneck), so CI runs the first 9 cases of every subsection (108 cases,
        # ~6 minutes: the small and medium messages); `scripts/autobahn.sh --all` runs them all.
        deflate_sample=$(for s in 12.1 12.2 12.3 12.4 12.5 13.1 13.2 13.3 13.4 13.5 13.6 13.7; do
            for j in 1 2 3 4 5 6 7 8 9; do printf '%s.%s,' "$s" "$j"; done
        done)
        run "autobahn single-thread/epoll, deflate sample (12-13)" bash scripts/autobahn.sh --pattern single-thread --cases "${deflate_sample%,}"
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
