#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against a release build of wschat.
#
#   scripts/autobahn.sh [--pattern P] [--io B] [--all | --cases LIST] [--timeout SECS]
#                       [--bin PATH] [--name NAME] [-- SERVER_ARGS...]
#   scripts/autobahn.sh --matrix [--all | --cases LIST] [--jobs N] [--out DIR]
#   scripts/autobahn.sh --setup-only      # only create/refresh the wstest virtualenv
#
# The server runs as `wschat --addr 127.0.0.1:0 --max-message 20000000 --max-outbound
# 100000000 --deflate [--pattern P] [--io B] SERVER_ARGS...`; the script reads its stdout for
# `listening on 127.0.0.1:PORT` and points the suite at ws://127.0.0.1:PORT/echo.
# (--deflate changes nothing for sections 1-10, whose client offers no extension.)
# By default sections 1-10 run (~50 s); 12 and 13, permessage-deflate, take about 10 minutes
# more on a 2-CPU machine (wstest, Python 2.7 even with wsaccel, is the bottleneck).
# --all: sections 1-13. --cases: comma-separated case ids or globs, run as given (e.g.
# `12.*,13.*`). --timeout: bound on the wstest run (default 900 s, 3600 s with --all).
# --bin: test that server binary instead of building target/release/wschat.
# --name: the report directory's name (default PATTERN-IO).
#
# --matrix: the same cases against every pattern on both backends (multi-thread patterns with
# two loops or two workers) and io_uring without its optional features: 11 runs, each as
# above, at most --jobs N at once (default 1; wstest takes about one core per run). Prints a
# table of outcomes per run; with --out DIR also writes DIR/<run>.json (the suite's
# index.json: every case's outcome and duration) and DIR/summary.md. The committed full
# matrix: `scripts/autobahn.sh --matrix --all --jobs 2 --out results/autobahn/<date>`.
#
# The suite (wstest) runs on Python 2.7 only. It lives in a virtualenv under
# ${WSCHAT_CACHE:-$HOME/.cache/wschat}/autobahn-venv, made from pyenv's 2.7.18 (or
# $WSCHAT_PY27), and is rebuilt whenever scripts/autobahn/requirements.txt changes.
#
# The report goes to target/autobahn/<pattern>-<io>/ (open reports/index.html there).
# Exit status: 0 when no case FAILED; 1 on FAILED cases, a run without results or any
# other error; 3 when Python 2.7 or the virtualenv cannot be had (the tool is missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIREMENTS=$ROOT/scripts/autobahn/requirements.txt
SUMMARIZE=$ROOT/scripts/autobahn/summarize.py
CACHE=${WSCHAT_CACHE:-$HOME/.cache/wschat}
VENV=$CACHE/autobahn-venv
BOOTSTRAP=$CACHE/virtualenv-bootstrap
# virtualenv 20.22 dropped support for creating Python 2 environments. Its own
# dependencies are pinned too; it runs on the machine's python3.
BOOTSTRAP_PINS=(virtualenv==20.21.1 distlib==0.4.4 filelock==3.32.7 platformdirs==3.11.0)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
EXIT_TOOL_MISSING=3

usage() {
    sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}

log() { printf 'autobahn.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
tool_missing() { log "$*"; exit "$EXIT_TOOL_MISSING"; }

# --- options ---------------------------------------------------------------------------
pattern=""  # names the report directory
io=""
server_args=(--addr 127.0.0.1:0 --max-message 20000000 --max-outbound 100000000)
cases="*"
all=false
wstest_timeout=""
setup_only=false
server_bin=""
server_extra=()
run_name=""
matrix=false
jobs=1
out=""
case_flags=()   # what the runs of --matrix are given
while (($#)); do
    case $1 in
        --pattern) pattern=${2:?--pattern needs a value}; server_args+=("$1" "$2"); shift 2 ;;
        --io) io=${2:?--io needs a value}; server_args+=("$1" "$2"); shift 2 ;;
        --cases) cases=${2:?--cases needs a value}; all=true; case_flags+=("$1" "$2"); shift 2 ;;
        --all) all=true; case_flags+=("$1"); shift ;;
        --timeout) wstest_timeout=${2:?--timeout needs a value}; case_flags+=("$1" "$2"); shift 2 ;;
        --bin) server_bin=${2:?--bin needs a value}; shift 2 ;;
        --name) run_name=${2:?--name needs a value}; shift 2 ;;
        --matrix) matrix=true; shift ;;
        --jobs) jobs=${2:?--jobs needs a value}; shift 2
            [[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs takes a positive whole number" ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --setup-only) setup_only=true; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; server_extra=("$@"); break ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [[ -z $wstest_timeout ]]; then
    if $all; then wstest_timeout=3600; else wstest_timeout=900; fi
fi
# /echo accepts permessage-deflate, for sections 12 and 13.
server_args+=(--deflate)

# --pattern/--io given after `--` also name the report directory.
for ((i = 0; i < ${#server_extra[@]}; i++)); do
    case ${server_extra[i]} in
        --pattern) pattern=${server_extra[i + 1]:-$pattern} ;;
        --pattern=*) pattern=${server_extra[i]#--pattern=} ;;
        --io) io=${server_extra[i + 1]:-$io} ;;
        --io=*) io=${server_extra[i]#--io=} ;;
    esac
done

# --- the wstest virtualenv -------------------------------------------------------------
find_python27() {
    if [[ -n ${WSCHAT_PY27:-} ]]; then
        printf '%s\n' "$WSCHAT_PY27"
        return
    fi
    local root
    root=$(pyenv root 2>/dev/null) || root=${PYENV_ROOT:-$HOME/.pyenv}
    printf '%s\n' "$root/versions/2.7.18/bin/python"
}

setup_venv() {
    local py27 want have=""
    py27=$(find_python27)
    [[ -x $py27 ]] || tool_missing "Python 2.7 not found at $py27 (install: pyenv install 2.7.18)"
    "$py27" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null ||
        tool_missing "$py27 is not a working Python 2.7"
    command -v python3 >/dev/null || tool_missing "python3 not found"

    want=$(cat "$REQUIREMENTS" <(printf '%s\n' "$py27" "${BOOTSTRAP_PINS[@]}") | sha256sum | cut -d' ' -f1)
    [[ -f $VENV/.requirements-sha256 ]] && have=$(<"$VENV/.requirements-sha256")
    if [[ $have == "$want" && -x $VENV/bin/wstest ]]; then
        log "reusing virtualenv $VENV"
        return
    fi

    log "creating virtualenv $VENV (Python 2.7, Autobahn|Testsuite)"
    local start=$SECONDS
    mkdir -p "$CACHE"
    if [[ ! -f $BOOTSTRAP/.pins ]] || [[ $(<"$BOOTSTRAP/.pins") != "${BOOTSTRAP_PINS[*]}" ]]; then
        rm -rf "$BOOTSTRAP"
        python3 -m pip install --quiet --disable-pip-version-check --no-input \
            --root-user-action=ignore --target "$BOOTSTRAP" "${BOOTSTRAP_PINS[@]}" ||
            tool_missing "could not install ${BOOTSTRAP_PINS[0]} for python3"
        printf '%s' "${BOOTSTRAP_PINS[*]}" >"$BOOTSTRAP/.pins"
    fi
    rm -rf "$VENV"
    PYTHONPATH=$BOOTSTRAP VIRTUALENV_OVERRIDE_APP_DATA=$CACHE/virtualenv-app-data \
        python3 -m virtualenv --quiet --no-periodic-update -p "$py27" "$VENV" ||
        tool_missing "could not create a Python 2.7 virtualenv at $VENV"
    # --no-deps: requirements.txt is the complete lock (see the file).
    "$VENV/bin/pip" install --quiet --no-python-version-warning --disable-pip-version-check \
        --no-input --no-deps -r "$REQUIREMENTS" ||
        tool_missing "could not install $REQUIREMENTS into $VENV"
    "$VENV/bin/pip" check --no-python-version-warning --disable-pip-version-check >/dev/null ||
        tool_missing "pip check failed in $VENV"
    "$VENV/bin/wstest" --autobahnversion >/dev/null 2>&1 ||
        tool_missing "wstest does not start in $VENV"
    printf '%s\n' "$want" >"$VENV/.requirements-sha256"
    log "virtualenv ready in $((SECONDS - start))s"
}

setup_venv
if $setup_only; then
    exit 0
fi

# --- build and start the server --------------------------------------------------------
if [[ -z $server_bin ]]; then
    log "building wschat (release)"
    (cd "$ROOT" && cargo build --release --bin wschat) || die "cargo build failed"
    server_bin=$TARGET_DIR/release/wschat
fi

# --- the matrix: this script once per pattern x io, then a table ------------------------
if $matrix; then
    ((${#server_extra[@]} == 0)) || die "--matrix takes no server arguments"
    # name pattern io server-args...
    runs=()
    for b in epoll uring; do
        runs+=("single-thread-$b single-thread $b"
            "acceptor-readers-$b acceptor-readers $b --threads 2"
            "work-queue-$b work-queue $b --workers 2"
            "multi-accept-$b multi-accept $b --threads 2"
            "reuseport-$b reuseport $b --threads 2")
    done
    runs+=("single-thread-uring-nofeatures single-thread uring --uring-features none")
    logs=$TARGET_DIR/autobahn/matrix-logs
    rm -rf "$logs"
    mkdir -p "$logs"
    [[ -n $out ]] && mkdir -p "$out"
    log "matrix: ${#runs[@]} runs, $jobs at a time (logs: $logs)"
    start=$SECONDS
    failed=()
    declare -A pids=()
    reap() { # waits for one run to end; records a failure
        local pid name status=0
        wait -n -p pid "${!pids[@]}" || status=$?
        name=${pids[$pid]}
        unset "pids[$pid]"
        ((status == 0)) || failed+=("$name (exit $status)")
        log "matrix: $name done (exit $status, $((SECONDS - start))s since the start)"
    }
    for entry in "${runs[@]}"; do
        read -r name p b extra <<<"$entry"
        ((${#pids[@]} < jobs)) || reap
        # shellcheck disable=SC2086 # extra is a word list on purpose
        bash "${BASH_SOURCE[0]}" --pattern "$p" --io "$b" --name "$name" --bin "$server_bin" \
            "${case_flags[@]}" ${extra:+-- $extra} >"$logs/$name.log" 2>&1 &
        pids[$!]=$name
    done
    while ((${#pids[@]})); do reap; done
    head=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    python3 - "$TARGET_DIR/autobahn" "$logs" "$out" "$((SECONDS - start))" "$jobs" "${case_flags[*]}" \
        "$head $(date -u +%Y-%m-%d)" "${runs[@]}" <<'PY'
import json, os, re, sys
from collections import Counter
base, logs, out, wall, jobs, flags, made, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8:]
commit, day = made.split()
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
rows, non_ok = [], {}
for entry in runs:
    name, pattern, io, *extra = entry.split()
    counts, close_counts, secs = Counter(), Counter(), "?"
    try:
        with open(os.path.join(base, name, "reports", "index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = {}
    for cases in index.values():
        for cid, e in cases.items():
            counts[e.get("behavior")] += 1
            close_counts[e.get("behaviorClose")] += 1
            if e.get("behavior") != "OK":
                non_ok.setdefault(cid, []).append((e.get("behavior"), name))
    if out and index:
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(index, f, indent=1, sort_keys=True)
    m = re.search(r"wstest finished in (\d+)s", open(os.path.join(logs, name + ".log")).read())
    if m:
        secs = m.group(1)
    server = " ".join([f"--pattern {pattern} --io {io}"] + extra)
    rows.append(f"| {name} | `{server}` | {sum(counts.values())} | "
                + " | ".join(str(counts[o]) for o in order) + f" | {close_counts['FAILED']} | {secs} |")
head = ("| run | server | cases | " + " | ".join(order) + " | close FAILED | wstest s |\n"
        "|---|---|---:|" + "---:|" * (len(order) + 2))
text = (f"Autobahn|Testsuite fuzzing client against `/echo` (server `--deflate`), cases: "
        f"{flags or 'sections 1-10'}; {len(runs)} runs, {jobs} at a time, {wall} s in all; "
        f"commit `{commit}`, {day}.\n\n"
        + head + "\n" + "\n".join(rows) + "\n")
def case_key(cid):
    return [int(p) if p.isdigit() else p for p in cid.split(".")]
if non_ok:
    lines = []
    for cid, seen in sorted(non_ok.items(), key=lambda kv: case_key(kv[0])):
        outcomes = {o for o, _ in seen}
        if len(seen) == len(runs) and len(outcomes) == 1:
            lines.append(f"{cid}: {outcomes.pop()} in every run")
        else:
            lines.append(f"{cid}: " + ", ".join(f"{o} ({n})" for o, n in seen))
    text += "\nCases not OK: " + "; ".join(lines) + ".\n"
print(text)
if out:
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("# Autobahn|Testsuite matrix\n\n" + text)
PY
    if ((${#failed[@]})); then
        log "matrix: FAILED: ${failed[*]}"
        exit 1
    fi
    log "matrix: every run passed"
    exit 0
fi

run_name=${run_name:-${pattern:-single-thread}-${io:-epoll}}
run_dir=$TARGET_DIR/autobahn/$run_name
rm -rf "$run_dir"
mkdir -p "$run_dir"

server_args+=("${server_extra[@]}")

server_pid=""
wstest_pid=""
stop_wstest() {
    [[ -n $wstest_pid ]] || return 0
    kill -TERM "$wstest_pid" 2>/dev/null || true # timeout(1) passes it on to wstest
    wait "$wstest_pid" 2>/dev/null || true
    wstest_pid=""
}
stop_server() {
    [[ -n $server_pid ]] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$server_pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            log "server did not stop within 10s of SIGTERM; sending SIGKILL"
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
    fi
    local code=0
    wait "$server_pid" 2>/dev/null || code=$?
    log "server exited with status $code"
    server_pid=""
}
trap 'stop_wstest; stop_server' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$run_dir/server.stdout"
log "starting: $server_bin ${server_args[*]}"
"$server_bin" "${server_args[@]}" >"$run_dir/server.stdout" 2>"$run_dir/server.stderr" &
server_pid=$!

# Wait (bounded) for "listening on 127.0.0.1:PORT" on the server's stdout.
port=""
deadline=$((SECONDS + 30))
while [[ -z $port ]]; do
    if [[ $(<"$run_dir/server.stdout") =~ listening\ on\ +(ws://)?127\.0\.0\.1:([0-9]+) ]] &&
        ((BASH_REMATCH[2] > 0)); then
        port=${BASH_REMATCH[2]}
    elif ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$run_dir/server.stdout" "$run_dir/server.stderr" >&2 || true
        die "the server exited before printing 'listening on 127.0.0.1:PORT' on stdout"
    elif ((SECONDS >= deadline)); then
        tail -n 20 "$run_dir/server.stdout" "$run_dir/server.stderr" >&2 || true
        die "no 'listening on 127.0.0.1:PORT' line on the server's stdout within 30s"
    else
        sleep 0.1
    fi
done
log "server (pid $server_pid) listening on 127.0.0.1:$port"

# --- run the fuzzing client ------------------------------------------------------------
spec=$run_dir/fuzzingclient.json
python3 - "$spec" "$run_dir/reports" "wschat-$run_name" "ws://127.0.0.1:$port/echo" "$cases" "$all" <<'PY'
import json, sys
spec, outdir, agent, url, cases, run_all = sys.argv[1:]
with open(spec, "w") as f:
    json.dump({
        "outdir": outdir,
        "servers": [{"agent": agent, "url": url}],
        "cases": [c.strip() for c in cases.split(",") if c.strip()],
        # Sections 12 and 13 (permessage-deflate) take ~45 minutes: only with --all or
        # when named by --cases.
        "exclude-cases": [] if run_all == "true" else ["12.*", "13.*"],
        "exclude-agent-cases": {},
    }, f, indent=2)
    f.write("\n")
PY

log "running wstest -m fuzzingclient (cases: $cases, at most ${wstest_timeout}s; log: $run_dir/wstest.log)"
start=$SECONDS
# In the background, so that the INT/TERM traps run at once rather than after wstest.
timeout --kill-after=30 "$wstest_timeout" "$VENV/bin/wstest" -m fuzzingclient -s "$spec" \
    >"$run_dir/wstest.log" 2>&1 &
wstest_pid=$!
status=0
wait "$wstest_pid" || status=$?
wstest_pid=""
log "wstest finished in $((SECONDS - start))s with status $status"

server_died=false
if ! kill -0 "$server_pid" 2>/dev/null; then
    server_died=true
    log "error: the server exited during the run"
    tail -n 20 "$run_dir/server.stderr" >&2 || true
fi
stop_server

if ((status != 0)); then
    tail -n 10 "$run_dir/wstest.log" >&2 || true
    if ((status == 124 || status == 137)); then
        log "wstest timed out after ${wstest_timeout}s; last case started:"
        grep -i 'case' "$run_dir/wstest.log" | tail -n 1 >&2 || true
    fi
fi

[[ -f $run_dir/reports/index.html ]] && log "report: $run_dir/reports/index.html"
summary_status=0
python3 "$SUMMARIZE" "$run_dir/reports" || summary_status=$?
((status == 0 && summary_status == 0)) && ! $server_died
