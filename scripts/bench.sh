#!/usr/bin/env bash
# The benchmark matrix: every pattern (and the Node `ws` baseline) x io x CPU layout x scenario,
# measured by bench-client, raw JSON per run, then median-of-runs tables and plots.
#
#   scripts/bench.sh                 # full matrix, 3 runs per cell (about 30 minutes on 2 cores)
#   scripts/bench.sh --quick         # all patterns, fewer scenarios, 2 s runs, 1 run (< 2 minutes)
#   scripts/bench.sh --smoke         # CI: single-thread + reuseport (+ node), chat and deflate, 50 conns 2 s, 1 run
#   scripts/bench.sh --cluster [...] # scale-out: 1 node vs 2 and 3 behind HAProxy and nginx, through
#                                    # Redis, in network namespaces (root; deploy/bench-cluster.sh,
#                                    # whose options follow; results in results/cluster/)
#
# Options (after the mode; each overrides the mode's default):
#   --out DIR            results root (default: results/); runs go to DIR/<machine>/<timestamp>/
#                        and DIR/README.md is regenerated. Use a temporary DIR for experiments.
#   --machine NAME       machine label (default: <cpu model>-<N>cpu, e.g. amd-epyc-2cpu)
#   --patterns "P ..."   wschat patterns (default: all five); node-ws is the baseline, see --no-node
#   --ios "epoll uring"  io backends to try (default: epoll); one the binary rejects is skipped
#   --layouts "split shared"   CPU layouts (default full: both; quick/smoke: split)
#   --server-cpus LIST   the split layout's server CPUs, a taskset list such as 0-15 (default: 0)
#   --loader-cpus LIST   the split layout's bench-client CPUs (default: 1); must not overlap
#   --scenarios "..."    of: chat saturate connect capped-connect ping cpu tls deflate (default
#                        full: all)
#   --shared-scenarios "..."   scenarios also run in the shared layout (default: chat saturate cpu)
#   --rates "R ..."      chat rates, messages/s (default: 1000 2000 5000 10000)
#   --shared-rates "R ..."     chat rates in the shared layout (default: 2000 5000)
#   --tls-rate R         the one chat rate of the tls scenario (default: 2000; smoke: 500)
#   --deflate-rates "R ..."   chat rates of the deflate scenario (default: 200 1000 2000; smoke: 500)
#   --storm-cap PCT      the capped-connect scenario's CPU quota for the server, in % of one CPU
#                        (1-100, default 50)
#   --runs N             runs per cell, back to back (default full: 3)
#   --duration SECS      measured seconds per run (default full: 5)
#   --no-node            skip the Node baseline
#   --baselines "B ..."  other servers beside wschat, opt-in (default: none): uws-js (uWebSockets.js,
#                        scripts/baselines/uws-js), fastwebsockets (tokio current-thread runtime) and
#                        fastwebsockets-mt (multi-thread runtime, 2 workers), both from
#                        scripts/baselines/fastwebsockets. Not in --smoke unless given.
#   --no-syscalls, --syscalls   skip / do the syscall-count runs (default: full mode only)
#   --no-kernel-floor, --kernel-floor   skip / do the kernel-floor probe after the timed runs
#                        (default: full mode only; see "The kernel floor" below)
#   --no-build           use the existing release binaries (in $CARGO_TARGET_DIR, else target/)
#   --quiet-wait SECS    before each run, wait at most SECS for the machine to be < 10 % busy
#                        (default 60; smoke 0). Other load is recorded per run either way.
#   -h, --help           this text
#
# CPU layouts (written into every result's labels as layout=..., with server_cpus=... and
# loader_cpus=...; machine.json records the lists):
#   split   server on --server-cpus (taskset -c, default cpu0), bench-client on --loader-cpus
#           (default cpu1): server CPU per delivery without the loader in the way. On the
#           default lists the multi-thread patterns run all their threads on ONE core
#           (--threads 2 / --workers 2 still): they pay for their threads without getting a
#           second core. On a bigger machine, e.g. --server-cpus 0-15 --loader-cpus 16-31.
#   shared  server and loader unpinned on every CPU: what the multi-thread patterns can do,
#           competing with the loader (check the loader-bound column).
#
# Scenarios (server: multi-thread patterns --threads N, work-queue --workers N, where N is the
# number of the layout's server CPUs, at least 2):
#   chat      chat --conns 1000 --rooms 20 (rooms of 50: each message reaches 49) at each --rate
#   saturate  saturate --conns 200 --rooms 4 --window 8 (closed loop: maximum deliveries/s)
#   connect   connect --conns 20000 --concurrency 100 --source-ips 8 on /echo (handshakes/s;
#             quick: 20000 too, smoke: 200). On loopback the loader's core also runs the
#             server's half of each TCP handshake (SYN handling, the child socket, wake-ups:
#             about 19 µs of loader CPU per handshake against wschat's 14.5), so this storm is
#             loader-bound for a fast server and does not show the server's capacity.
#   capped-connect   the same storm, split layout only, with the server process (all its
#             threads) held to --storm-cap % of one CPU by a cgroup CPU quota (period 10 ms;
#             100 ms below 10 %, the kernel's quota being at least 1 ms): the server is the
#             bottleneck again, so handshakes/s x server CPU per handshake comes out at the
#             cap (the table's "server CPU / cap" column, ~1.0; by hand at 50 %: wschat epoll
#             34,029/s x 14.5 µs, uWebSockets.js 23,863/s x 21 µs, fastwebsockets 21,338/s x
#             23 µs, the loader 44-69 % busy). A storm lasts well under a second, too short
#             for the other-load column (it needs 1 s). Label cpu_cap=PCT; the
#             JSON's cpu_cap object has the quota and cpu.stat's throttling during the run.
#             Needs root and the cgroup cpu controller (v1 cpu.cfs_quota_us, or v2 cpu.max);
#             without them the scenario is skipped (a line in skipped.txt). One cgroup,
#             wschat-bench-<bench.sh PID>, removed on exit; the server is moved in after it
#             printed its listening line and every thread of it checked to be in it before
#             the loader starts (a thread outside is a failed run, never an uncapped one).
#   ping      ping --conns 10 --rate 1000 on /echo (round trip)
#   cpu       server --work-us 50; chat --conns 1000 --rooms 200 (rooms of 5) --rate 4000
#   tls       the chat (at --tls-rate) and the connect storm above (as many handshakes), each
#             twice: against the server as it is (label tls=off, ws://) and with
#             --tls-self-signed (tls=on, wss:// --insecure: full handshakes, no resumption).
#             Scenario labels tls-chat and tls-connect; the tables put tls=off and tls=on
#             side by side (server CPU per delivery and per handshake, handshakes/s). Not for
#             node-ws.
#   deflate   the chat at each --deflate-rates with 256-byte messages of chat-like text
#             (--payload 256 --fill text), bench-client offering permessage-deflate as
#             Chromium does (--deflate: it compresses what it sends and inflates what it
#             gets), twice: against the server as it is (label deflate=off: the offer is
#             declined) and with --deflate (deflate=on). Scenario label deflate-chat; the
#             table adds the bytes on the wire per delivery. node-ws too (its --deflate: the
#             same terms; `ws` compresses once per receiver).
#
# Messages: every scenario that sends messages (chat, saturate, cpu, tls-chat, deflate-chat,
# ping) sends bench-client's default, text messages: what a browser sends, so the server's
# text path is measured (UTF-8 validation, "<name> says: <text>", a frame per receiver longer
# than the sender's; ping: echoed as sent). Runs committed before 2026-12-06 sent binary
# messages (forwarded verbatim), bench-client's default then; every table says which
# ("Messages:" in results/README.md, the messages column of report.md).
#
# Syscalls per delivery come from a separate, untimed run per pattern (chat 1000 conns, rooms
# of 50, 1000 msg/s, split layout) with `perf stat -e syscalls:sys_enter_*` attached to the
# server, or `strace -c -f` when perf cannot count tracepoints. Neither is needed by CI;
# install with `apt-get install linux-perf strace` (Debian) if missing.
#
# The kernel floor: after the timed runs (and the syscall runs), scripts/baselines/kernel-floor.sh
# (a hand-written probe, no WebSocket server: a writev loop over 19 loopback sockets, 80-byte
# frames, 1, 4 and 16 frames per call; about 10 s) writes DIR/kernel-floor.json, its sender
# pinned to the split layout's first server CPU and its reader to the first loader CPU. The
# tables of chat, cpu and saturate then give the floor in their caption, and the chat tables
# "× floor" (server µs/delivery over the 1-frame-per-call floor). It needs gcc: when the probe
# fails, that is a note in skipped.txt, not a failed matrix. By hand, into an existing run:
#   scripts/baselines/kernel-floor.sh --sender-cpu 0 --reader-cpu 1 --out DIR/kernel-floor.json
#   python3 scripts/bench/summarize.py --run-dir DIR && python3 scripts/bench/summarize.py --readme results
#
# The Node baseline (scripts/baselines/node-ws, label pattern=node-ws io=libuv) needs node and
# npm; its node_modules is installed with `npm ci` from the committed package-lock.json.
# --baselines adds others (each README.md says what differs from wschat's protocol): uws-js
# (label io=uws; needs node and npm, `npm ci` as node-ws; fails if the native uWS addon does
# not load) and fastwebsockets / fastwebsockets-mt (label io=tokio; built with cargo from their
# own Cargo.lock unless --no-build). They run the chat, cpu, saturate, connect and ping
# scenarios; none of them has TLS, and only node-ws has deflate, so they skip tls and deflate.
#
# Every run is bounded (bench-client durations and timeouts, plus `timeout`); every server is
# stopped with SIGTERM and waited for (SIGKILL after 10 s). Exits non-zero if a step failed;
# --smoke also fails when a run's deliveries are not all accounted for (--require-correct).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
invocation="scripts/bench.sh${*:+ $*}"

usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }
die() { echo "bench.sh: $*" >&2; exit 2; }
note() { printf 'bench.sh: %s\n' "$*" >&2; }

# ---- options ------------------------------------------------------------------------------
mode=full
out=results
machine=
patterns="single-thread acceptor-readers work-queue multi-accept reuseport"
ios="epoll"
layouts= scenarios= shared_scenarios= rates= shared_rates= runs= duration= tls_rate=
server_cpus=0 loader_cpus=1
deflate_rates=
node=true syscalls= build=true quiet_max= baselines= kernel_floor=
storm_cap=50
while (($#)); do
    case $1 in
        --cluster) shift; exec "$root/deploy/bench-cluster.sh" "$@" ;;
        --quick) mode=quick ;;
        --smoke | --ci) mode=smoke ;;
        --full) mode=full ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --machine) machine=${2:?--machine needs a name}; shift ;;
        --patterns) patterns=${2?}; shift ;;
        --ios) ios=${2:?}; shift ;;
        --layouts) layouts=${2:?}; shift ;;
        --server-cpus) server_cpus=${2:?}; shift ;;
        --loader-cpus) loader_cpus=${2:?}; shift ;;
        --scenarios) scenarios=${2?}; shift ;;
        --shared-scenarios) shared_scenarios=${2?}; shift ;;
        --rates) rates=${2:?}; shift ;;
        --shared-rates) shared_rates=${2:?}; shift ;;
        --tls-rate) tls_rate=${2:?}; shift ;;
        --deflate-rates) deflate_rates=${2:?}; shift ;;
        --storm-cap) storm_cap=${2:?--storm-cap needs a percentage}; shift ;;
        --runs) runs=${2:?}; shift ;;
        --duration) duration=${2:?}; shift ;;
        --no-node) node=false ;;
        --baselines) baselines=${2?}; shift ;;
        --no-syscalls) syscalls=false ;;
        --syscalls) syscalls=true ;;
        --no-kernel-floor) kernel_floor=false ;;
        --kernel-floor) kernel_floor=true ;;
        --no-build) build=false ;;
        --quiet-wait) quiet_max=${2:?}; shift; [[ $quiet_max =~ ^[0-9]+$ ]] || die "--quiet-wait takes whole seconds" ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# Mode defaults (only where not given).
conns=1000 rooms=20 smoke_extra=()
case $mode in
    full)
        : "${layouts:=split shared}" "${scenarios:=chat saturate connect capped-connect ping cpu tls deflate}"
        : "${shared_scenarios:=chat saturate cpu}" "${rates:=1000 2000 5000 10000}"
        : "${shared_rates:=2000 5000}" "${runs:=3}" "${duration:=5}"
        warmup=1 connect_conns=20000
        : "${syscalls:=true}" "${kernel_floor:=true}" ;;
    quick)
        : "${layouts:=split}" "${scenarios:=chat saturate ping}" "${shared_scenarios:=}"
        : "${rates:=1000 5000}" "${shared_rates:=2000}" "${runs:=1}" "${duration:=2}"
        warmup=1 connect_conns=20000
        : "${syscalls:=false}" "${kernel_floor:=false}" ;;
    smoke)
        [[ $patterns == "single-thread acceptor-readers work-queue multi-accept reuseport" ]] &&
            patterns="single-thread reuseport"
        : "${layouts:=split}" "${scenarios:=chat deflate}" "${shared_scenarios:=}"
        : "${rates:=500}" "${shared_rates:=500}" "${runs:=1}" "${duration:=2}" "${tls_rate:=500}"
        : "${deflate_rates:=500}"
        conns=50 rooms=5 warmup=0.5 connect_conns=200
        : "${syscalls:=false}" "${kernel_floor:=false}"
        smoke_extra=(--require-correct) ;;
esac
: "${tls_rate:=2000}" "${deflate_rates:=200 1000 2000}"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ $duration =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--duration must be seconds"
for s in $scenarios $shared_scenarios; do
    case $s in chat | saturate | connect | capped-connect | ping | cpu | tls | deflate) ;;
        *) die "unknown scenario: $s" ;; esac
done
[[ " $shared_scenarios " == *" capped-connect "* ]] &&
    die "capped-connect runs in the split layout only (not in --shared-scenarios)"
if ! [[ $storm_cap =~ ^[0-9]+$ ]] || ((10#$storm_cap < 1 || 10#$storm_cap > 100)); then
    die "--storm-cap takes a whole percentage of one CPU, 1 to 100 (got '$storm_cap')"
fi
storm_cap=$((10#$storm_cap))
for l in $layouts; do
    case $l in split | shared) ;; *) die "unknown layout: $l" ;; esac
done
for p in $patterns; do
    case $p in single-thread | acceptor-readers | work-queue | multi-accept | reuseport) ;;
        *) die "unknown pattern: $p" ;; esac
done
for b in $baselines; do
    case $b in uws-js | fastwebsockets | fastwebsockets-mt) ;;
        *) die "unknown baseline: $b (uws-js, fastwebsockets, fastwebsockets-mt)" ;; esac
done
# cpu_list_count LIST: how many CPUs a taskset list names (0-3,8 -> 5); fails on bad syntax.
cpu_list_count() {
    python3 - "$1" <<'PY'
import re, sys
cpus = set()
for part in sys.argv[1].split(","):
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
    if not m or (m[2] and int(m[2]) < int(m[1])):
        sys.exit(f"not a CPU list: {sys.argv[1]!r} (e.g. 0-3,8)")
    cpus.update(range(int(m[1]), int(m[2] or m[1]) + 1))
print(len(cpus), *sorted(cpus))
PY
}
counted=$(cpu_list_count "$server_cpus") || die "--server-cpus: a list of CPUs such as 0-3,8"
read -r server_ncpus server_set <<<"$counted"
counted=$(cpu_list_count "$loader_cpus") || die "--loader-cpus: a list of CPUs such as 4-7"
read -r loader_ncpus loader_set <<<"$counted"
for c in $server_set; do
    [[ " $loader_set " == *" $c "* ]] && die "--server-cpus and --loader-cpus overlap (cpu $c)"
done
if [[ " $layouts " == *" split "* ]]; then
    taskset -c "$server_cpus" true 2>/dev/null && taskset -c "$loader_cpus" true 2>/dev/null ||
        die "the split layout needs CPUs $server_cpus (server) and $loader_cpus (loader), which this process may not all use (it may use $(nproc)); see --server-cpus / --loader-cpus, or use --layouts shared"
fi
# Threads of the multi-thread patterns (and workers of work-queue) per layout: the layout's
# server CPUs, at least 2 (so that a pattern always has threads to distribute).
threads_for() {
    local n
    if [[ $1 == split ]]; then n=$server_ncpus; else n=$(nproc); fi
    echo $((n < 2 ? 2 : n))
}
for tool in python3 taskset timeout; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

if [[ -z $machine ]]; then
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    machine=$(printf '%s' "${model:-unknown}" | tr 'A-Z' 'a-z' | sed -E 's/\((r|tm)\)//g; s/ cpu @.*//; s/[^a-z0-9]+/-/g; s/^-|-$//g')-$(nproc)cpu
fi
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
dir=$out/$machine/$stamp
mkdir -p "$dir/logs"
started=$SECONDS
failures=()

# Where the build below puts them: cargo honours $CARGO_TARGET_DIR, so must this.
wschat=${CARGO_TARGET_DIR:-target}/release/wschat
bench=${CARGO_TARGET_DIR:-target}/release/bench-client

# ---- build --------------------------------------------------------------------------------
if $build; then
    note "building release binaries (cargo build --release --workspace)"
    cargo build --release --workspace --quiet
fi
[[ -x $wschat && -x $bench ]] || die "missing $wschat or $bench (build with cargo build --release --workspace)"

# ---- the Node baseline ----------------------------------------------------------------------
nodedir=scripts/baselines/node-ws
if $node; then
    if ! command -v node >/dev/null; then
        note "SKIPPED node-ws baseline: node not found (install: apt-get install nodejs npm)"
        node=false
    elif [[ ! -d $nodedir/node_modules/ws ]]; then
        note "installing the node-ws baseline (npm ci in $nodedir)"
        if ! (cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
            note "SKIPPED node-ws baseline: npm ci failed"
            node=false
        fi
    fi
fi

# ---- the opt-in baselines (--baselines) --------------------------------------------------------
# Asked for by name, so a missing tool or a failed install is an error, not a skip.
uwsdir=scripts/baselines/uws-js
fwsdir=scripts/baselines/fastwebsockets
fws=${CARGO_TARGET_DIR:-$fwsdir/target}/release/wschat-baseline-fastwebsockets
if [[ " $baselines " == *" uws-js "* ]]; then
    command -v node >/dev/null || die "--baselines uws-js needs node and npm (apt-get install nodejs npm)"
    if [[ ! -d $uwsdir/node_modules/@trufflesuite/uws-js-unofficial ]]; then
        note "installing the uws-js baseline (npm ci in $uwsdir)"
        (cd "$uwsdir" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $uwsdir"
    fi
fi
if [[ " $baselines " == *" fastwebsockets"* ]]; then
    if $build; then
        note "building the fastwebsockets baseline (cargo build --release in $fwsdir)"
        cargo build --release --quiet --locked --manifest-path "$fwsdir/Cargo.toml"
    fi
    [[ -x $fws ]] || die "missing $fws (cargo build --release --manifest-path $fwsdir/Cargo.toml)"
fi

# is_baseline NAME: true for a server that is not wschat.
is_baseline() { [[ $1 == node-ws || $1 == uws-js || $1 == fastwebsockets || $1 == fastwebsockets-mt ]]; }

# ---- machine record -----------------------------------------------------------------------
git_head=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git_dirty=$(git status --porcelain -- src bench-client Cargo.toml Cargo.lock 2>/dev/null | wc -l)
python3 scripts/bench/machine.py "$machine" "$dir/machine.json" \
    "command=$invocation" "mode=$mode" "git_head=$git_head" \
    "git_dirty_server_files=$git_dirty" "started_utc=$stamp" \
    "patterns=$patterns" "ios=$ios" "layouts=$layouts" "scenarios=$scenarios" \
    "shared_scenarios=$shared_scenarios" "rates=$rates" "shared_rates=$shared_rates" "tls_rate=$tls_rate" \
    "deflate_rates=$deflate_rates" \
    "runs=$runs" "duration_s=$duration" "node=$node" "baselines=$baselines" \
    "split_server_cpus=$server_cpus" "split_loader_cpus=$loader_cpus" \
    "split_threads=$(threads_for split)" "shared_threads=$(threads_for shared)" "kernel_floor=$kernel_floor" \
    "storm_cap_pct=$storm_cap"
note "results in $dir (machine $machine, mode $mode)"

# ---- the capped-connect scenario's CPU cap (a cgroup) -------------------------------------------
# One cgroup for the whole run, wschat-bench-<this PID>, made once before the matrix and removed
# by the EXIT trap; each capped server is moved into it. cgroup v1 (the cpu controller's own
# hierarchy, cpu.cfs_period_us / cpu.cfs_quota_us) or v2 (cpu.max in a child of the root).
# WSCHAT_BENCH_CGROUP_ROOT (default /sys/fs/cgroup) is there to test the skip path on a
# directory that is no cgroup file system.
cgroup_root=${WSCHAT_BENCH_CGROUP_ROOT:-/sys/fs/cgroup}
cap_dir='' cap_version='' cap_why='' cap_period='' cap_quota=''

# cap_create: the cgroup with its quota. Returns 1 with the reason in cap_why (and nothing
# left behind) where there is no usable cgroup: not root, no cpu controller, read-only.
cap_create() {
    local parent dir
    # The kernel takes no quota under 1 ms: below 10 % of a CPU, a 100 ms period.
    cap_period=10000
    ((storm_cap < 10)) && cap_period=100000
    cap_quota=$((cap_period * storm_cap / 100))
    if [[ -f $cgroup_root/cgroup.controllers ]]; then
        cap_version=v2 parent=$cgroup_root
        grep -qw cpu "$parent/cgroup.controllers" || { cap_why="cgroup v2 without the cpu controller"; return 1; }
        # A child gets cpu.max only if its parent hands the controller down.
        if ! grep -qw cpu "$parent/cgroup.subtree_control"; then
            { echo +cpu >"$parent/cgroup.subtree_control"; } 2>/dev/null ||
                { cap_why="cannot enable the cpu controller in $parent/cgroup.subtree_control"; return 1; }
        fi
    elif [[ -f $cgroup_root/cpu/cpu.cfs_quota_us ]]; then
        cap_version=v1 parent=$cgroup_root/cpu
    else
        cap_why="no cgroup cpu controller under $cgroup_root (neither v2 cgroup.controllers nor v1 cpu/)"
        return 1
    fi
    dir=$parent/wschat-bench-$$
    mkdir "$dir" 2>/dev/null || { cap_why="cannot create $dir (not root? read-only?)"; return 1; }
    cap_dir=$dir
    if [[ $cap_version == v2 ]]; then
        { echo "$cap_quota $cap_period" >"$dir/cpu.max"; } 2>/dev/null
    else
        { echo "$cap_period" >"$dir/cpu.cfs_period_us" && echo "$cap_quota" >"$dir/cpu.cfs_quota_us"; } 2>/dev/null
    fi || { cap_why="cannot set the quota in $dir"; cap_remove; return 1; }
    note "capped-connect: server held to $storm_cap % of one CPU ($cap_quota µs per $cap_period µs) in $dir (cgroup $cap_version)"
}

# cap_add_server PID: moves the whole process (cgroup.procs takes every thread) into the
# cgroup, then checks each thread in /proc/PID/task against the cgroup's own list (v1 tasks,
# v2 cgroup.threads): a thread left outside would run uncapped.
cap_add_server() {
    local pid=$1 t listed
    { echo "$pid" >"$cap_dir/cgroup.procs"; } 2>/dev/null || { note "cannot move $pid into $cap_dir"; return 1; }
    listed=$(cat "$cap_dir/$([[ $cap_version == v2 ]] && echo cgroup.threads || echo tasks)" 2>/dev/null)
    for t in /proc/"$pid"/task/*; do
        grep -qx "${t##*/}" <<<"$listed" || { note "thread ${t##*/} of $pid is not in $cap_dir"; return 1; }
    done
}

# cap_stat: "periods throttled throttled_us" so far, from cpu.stat (v1 counts the time in ns).
cap_stat() {
    awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { n = $2 }
         $1 == "throttled_time" { t = $2 / 1000 } $1 == "throttled_usec" { t = $2 }
         END { printf "%d %d %.0f\n", p, n, t }' "$cap_dir/cpu.stat"
}

# cap_annotate JSON STAT0 STAT1: the quota and the throttling during the run, into the run's JSON.
cap_annotate() {
    python3 - "$@" "$storm_cap" "$cap_quota" "$cap_period" "$cap_version" <<'PY'
import json, sys
path, s0, s1, pct, quota, period, version = sys.argv[1:]
d0, d1 = [int(x) for x in s0.split()], [int(x) for x in s1.split()]
with open(path) as f:
    doc = json.load(f)
doc["cpu_cap"] = {"about": "scripts/bench.sh capped-connect: the server in a cgroup with this CPU quota; "
                           "throttling from its cpu.stat over the run",
                  "pct_of_one_cpu": int(pct), "quota_us": int(quota), "period_us": int(period),
                  "cgroup": version, "periods": d1[0] - d0[0], "throttled_periods": d1[1] - d0[1],
                  "throttled_ms": round((d1[2] - d0[2]) / 1000, 1)}
with open(path, "w") as f:
    json.dump(doc, f, indent=2)
PY
}

# cap_remove: the cgroup, once empty (a server just reaped may still be leaving it).
cap_remove() {
    [[ -n $cap_dir ]] || return 0
    local i
    for ((i = 0; i < 50; i++)); do
        rmdir "$cap_dir" 2>/dev/null && { cap_dir=; return 0; }
        sleep 0.1
    done
    note "could not remove $cap_dir (a process still in it?)"
    return 1
}

# ---- servers --------------------------------------------------------------------------------
server_pid=
server_addr=

# stop_server: SIGTERM, wait up to 10 s, then SIGKILL. Returns the server's exit status.
stop_server() {
    [[ -n $server_pid ]] || return 0
    local pid=$server_pid status=0 i
    server_pid=
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "server $pid did not stop within 10 s of SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}
trap 'stop_server || true; cap_remove || true' EXIT
trap 'exit 130' INT TERM

# start_server NAME LAYOUT IO WORK_US LOG [VARIANT]: starts wschat (or a baseline) on a free
# loopback port; VARIANT tls=on adds --tls-self-signed, deflate=on adds --deflate. Sets
# server_pid and server_addr. Returns 3 if the server refused to start (e.g. an io backend
# this binary does not have), 1 on other failures.
start_server() {
    local name=$1 layout=$2 io=$3 work=$4 log=$5 variant=${6:-} pin=() cmd i
    local threads
    threads=$(threads_for "$layout")
    [[ $layout == split ]] && pin=(taskset -c "$server_cpus")
    if [[ $name == node-ws ]]; then
        cmd=(node "$nodedir/server.js" --addr 127.0.0.1:0 --work-us "$work")
        [[ $variant == deflate=on ]] && cmd+=(--deflate)
    elif [[ $name == uws-js ]]; then
        cmd=(node "$uwsdir/server.js" --addr 127.0.0.1:0 --work-us "$work")
    elif [[ $name == fastwebsockets ]]; then
        cmd=("$fws" --addr 127.0.0.1:0 --work-us "$work" --runtime current-thread)
    elif [[ $name == fastwebsockets-mt ]]; then
        cmd=("$fws" --addr 127.0.0.1:0 --work-us "$work" --runtime multi-thread --threads "$threads")
    else
        cmd=("$wschat" --pattern "$name" --io "$io" --addr 127.0.0.1:0 --work-us "$work")
        case $name in
            acceptor-readers | multi-accept | reuseport) cmd+=(--threads "$threads") ;;
            work-queue) cmd+=(--workers "$threads") ;;
        esac
        [[ $variant == tls=on ]] && cmd+=(--tls-self-signed)
        [[ $variant == deflate=on ]] && cmd+=(--deflate)
    fi
    echo "# ${pin[*]} ${cmd[*]}" >"$log"
    "${pin[@]}" "${cmd[@]}" >>"$log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 100; i++)); do
        server_addr=$(sed -n 's/^\(wschat \)\{0,1\}listening on \([0-9.]*:[0-9]*\).*/\2/p' "$log" | head -1)
        [[ -n $server_addr ]] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            local status=0
            wait "$server_pid" || status=$?
            server_pid=
            ((status == 2)) && return 3   # usage error: e.g. --io not known to this binary
            return 1
        fi
        sleep 0.1
    done
    note "server did not print its listening line within 10 s (see $log)"
    stop_server || true
    return 1
}

# ---- other load on the machine ----------------------------------------------------------------
# On 2 cores, anything else running (a compile, a test suite) distorts a run. Before each run
# wait (at most $quiet_max s) until the machine is below 10 % busy; after it, record in the
# run's JSON ("host_noise") how much CPU processes other than server and loader used.
[[ -z $quiet_max ]] && { quiet_max=60; [[ $mode == smoke ]] && quiet_max=0; }
quiet_waited=0 quiet_busy=0

# ---- one run ------------------------------------------------------------------------------
# run_cell NAME IO LAYOUT SCENARIO RATE K [VARIANT]: one bench-client run against the running
# server. VARIANT (tls=off|on, deflate=off|on) becomes a label and a part of the file name.
run_cell() {
    local name=$1 io=$2 layout=$3 scenario=$4 rate=$5 k=$6 variant=${7:-}
    local tag=$name-$io-$layout-$scenario${rate:+-$rate}${variant:+-${variant/=/_}}-run$k
    local json=$dir/$tag.json log=$dir/logs/$tag
    local work=0 loader=() args=() limit status=0
    [[ $scenario == cpu ]] && work=50
    [[ $layout == split ]] && loader=(taskset -c "$loader_cpus")
    local threads=1 cpus=all
    case $name in
        acceptor-readers | multi-accept | reuseport | work-queue | fastwebsockets-mt)
            threads=$(threads_for "$layout") ;;
    esac
    [[ $layout == split ]] && cpus=$server_cpus
    local common=(--duration "${duration}s" --json "$json" -q --server-pid)
    local labels=(--label "pattern=$name" --label "io=$io" --label "layout=$layout"
        --label "scenario=$scenario" --label "rate=${rate:-na}" --label "run=$k"
        --label "threads=$threads" --label "work_us=$work" --label "machine=$machine"
        --label "server_cpus=$cpus" --label "loader_cpus=$([[ $layout == split ]] && echo "$loader_cpus" || echo all)")
    # tls-chat, tls-connect and deflate-chat are chat and connect, over wss:// when TLS is on,
    # and with compressible messages and the deflate offer for deflate-chat.
    local scheme=ws kind=${scenario#*-}
    [[ -n $variant ]] && labels+=(--label "$variant")
    [[ $variant == tls=on ]] && scheme=wss
    case $kind in
        chat) args=(chat --conns "$conns" --rooms "$rooms" --rate "$rate" --warmup "${warmup}s"
            --drain 3s --settle-timeout 20s "${smoke_extra[@]}") ;;
        cpu) args=(chat --conns "$conns" --rooms $((conns / 5)) --rate "$rate" --warmup "${warmup}s"
            --drain 3s --settle-timeout 20s "${smoke_extra[@]}") ;;
        saturate) args=(saturate --conns $((conns < 200 ? conns : 200)) --rooms 4 --window 8
            --warmup "${warmup}s" --drain 3s --settle-timeout 20s "${smoke_extra[@]}") ;;
        ping) args=(ping --url "$scheme://$server_addr/echo" --conns 10 --rate 1000 --warmup "${warmup}s"
            --drain 2s "${smoke_extra[@]}") ;;
        connect) args=(connect --url "$scheme://$server_addr/echo" --conns "$connect_conns"
            --concurrency 100 --source-ips 8 --timeout 10s --time-limit 60s)
            common=(--json "$json" -q --server-pid) ;;
    esac
    # --url goes first for chat-like runs (the server address is known only now).
    case $kind in chat | cpu | saturate) args=("${args[0]}" --url "$scheme://$server_addr" "${args[@]:1}") ;; esac
    [[ $variant == tls=on ]] && args+=(--insecure)   # the certificate was made at the server's start
    [[ $scenario == deflate-chat ]] && args+=(--payload 256 --fill text --deflate)
    limit=$(python3 -c "print(int(60 + 2 * $duration))")
    # `times` (a builtin: no fork, in this shell) gives the CPU of waited-for children, i.e.
    # the loader's; /proc/stat the whole machine's; /proc/PID/stat the server's.
    local b0 s0 b1 s1
    s0=$(python3 scripts/bench/noise.py proc "$server_pid")
    times >"$log.times0"
    b0=$(python3 scripts/bench/noise.py busy)
    local w0=$EPOCHREALTIME
    "${loader[@]}" timeout --kill-after=5 "$limit" "$bench" "${args[@]}" "${common[@]}" "$server_pid" \
        "${labels[@]}" >"$log.client" 2>&1 || status=$?
    local w1=$EPOCHREALTIME
    b1=$(python3 scripts/bench/noise.py busy)
    times >"$log.times1"
    s1=$(python3 scripts/bench/noise.py proc "$server_pid")
    if [[ -s $json ]]; then
        python3 scripts/bench/noise.py annotate "$json" "$b0" "$b1" "$w0" "$w1" "$s0" "$s1" \
            "$log.times0" "$log.times1" "$quiet_waited" "$quiet_busy" || true
    fi
    rm -f "$log.times0" "$log.times1"
    return "$status"
}

# cell NAME IO LAYOUT SCENARIO RATE [VARIANT]: --runs runs of one cell, back to back.
cell() {
    local name=$1 io=$2 layout=$3 scenario=$4 rate=$5 variant=${6:-} k status tag
    local work=0
    [[ $scenario == cpu ]] && work=50
    for ((k = 1; k <= runs; k++)); do
        tag=$name-$io-$layout-$scenario${rate:+-$rate}${variant:+-${variant/=/_}}-run$k
        quiet_waited=0 quiet_busy=-1
        if ((quiet_max > 0)); then
            read -r quiet_waited quiet_busy < <(python3 scripts/bench/noise.py wait-quiet "$quiet_max")
            ((quiet_busy >= 10)) && note "machine still ${quiet_busy}% busy after ${quiet_waited} s: running $tag anyway (see host_noise)"
        fi
        status=0
        start_server "$name" "$layout" "$io" "$work" "$dir/logs/$tag.server" "$variant" || status=$?
        if ((status == 3)); then
            return 3
        elif ((status != 0)); then
            note "FAILED $tag: the server did not start (see $dir/logs/$tag.server)"
            failures+=("$tag (server start)")
            continue
        fi
        local stat0=
        if [[ $scenario == capped-connect ]]; then
            if ! cap_add_server "$server_pid"; then
                note "FAILED $tag: the server is not all in $cap_dir (not run uncapped)"
                failures+=("$tag (cpu cap)")
                stop_server || true
                continue
            fi
            stat0=$(cap_stat)
        fi
        status=0
        run_cell "$name" "$io" "$layout" "$scenario" "$rate" "$k" "$variant" || status=$?
        if [[ -n $stat0 && -s $dir/$tag.json ]]; then
            cap_annotate "$dir/$tag.json" "$stat0" "$(cap_stat)" || note "$tag: cpu.stat not recorded"
        fi
        local stop=0
        stop_server || stop=$?
        if ((status != 0)); then
            note "FAILED $tag: bench-client exit $status (see $dir/logs/$tag.client)"
            failures+=("$tag (bench-client exit $status)")
        elif [[ ! -s $dir/$tag.json ]]; then
            note "FAILED $tag: no JSON written"
            failures+=("$tag (no JSON)")
        fi
        if ((stop != 0)); then
            note "FAILED $tag: the server exited $stop on SIGTERM"
            failures+=("$tag (server exit $stop)")
        fi
        printf '  [%4ds] %-60s %s\n' "$((SECONDS - started))" "$tag" \
            "$(python3 scripts/bench/summarize.py --one-line "$dir/$tag.json" 2>/dev/null || echo '-')" >&2
    done
}

# ---- syscalls per delivery (untimed) ---------------------------------------------------------
syscall_tool=none
if $syscalls; then
    if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_sendmsg true >/dev/null 2>&1; then
        syscall_tool=perf
    elif command -v strace >/dev/null; then
        syscall_tool=strace
    else
        note "SKIPPED syscall counts: neither a working perf nor strace (install: apt-get install linux-perf strace)"
    fi
fi
perf_events=raw_syscalls:sys_enter
for s in sendmsg sendto writev write read recvfrom readv epoll_wait epoll_pwait epoll_ctl accept4 futex io_uring_enter close; do
    perf_events+=,syscalls:sys_enter_$s
done

# syscall_run NAME IO: one chat run (1000 msg/s, split) with perf or strace attached to the server.
syscall_run() {
    local name=$1 io=$2 tag=$1-$2-split-syscalls status=0 tracer
    mkdir -p "$dir/syscalls"
    start_server "$name" split "$io" 0 "$dir/logs/$tag.server" || return $?
    local out=$dir/syscalls/$tag.$syscall_tool.txt
    if [[ $syscall_tool == perf ]]; then
        perf stat -x, -e "$perf_events" -p "$server_pid" -o "$out" >/dev/null 2>&1 &
    else
        strace -c -f -q -p "$server_pid" -o "$out" >/dev/null 2>&1 &
    fi
    tracer=$!
    sleep 0.5
    taskset -c "$loader_cpus" timeout --kill-after=5 90 "$bench" chat --url "ws://$server_addr" --conns "$conns" \
        --rooms "$rooms" --rate 1000 --warmup 1s --duration "${duration}s" --drain 3s -q \
        --json "$dir/syscalls/$tag.json" --server-pid "$server_pid" --label "pattern=$name" \
        --label "io=$io" --label layout=split --label scenario=syscalls --label rate=1000 \
        --label "machine=$machine" >"$dir/logs/$tag.client" 2>&1 || status=$?
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    stop_server || true
    if ((status != 0)); then
        failures+=("$tag (bench-client exit $status)")
    fi
    printf '  [%4ds] %-60s %s\n' "$((SECONDS - started))" "$tag" "($syscall_tool)" >&2
}

# ---- the matrix -------------------------------------------------------------------------------
# Where the cap cannot be made, capped-connect is a line in skipped.txt, not a failure.
if [[ " $scenarios " == *" capped-connect "* && " $layouts " == *" split "* ]] && ! cap_create; then
    note "SKIPPED capped-connect: $cap_why"
    echo "capped-connect skipped: $cap_why" >>"$dir/skipped.txt"
fi
servers=()
for io in $ios; do
    for p in $patterns; do servers+=("$p:$io"); done
done
$node && servers+=("node-ws:libuv")
for b in $baselines; do
    case $b in
        uws-js) servers+=("uws-js:uws") ;;
        fastwebsockets | fastwebsockets-mt) servers+=("$b:tokio") ;;
    esac
done

declare -A skipped_io=()
for entry in "${servers[@]}"; do
    name=${entry%%:*} io=${entry#*:}
    [[ -n ${skipped_io[$io]:-} ]] && continue
    for layout in $layouts; do
        list=$scenarios
        [[ $layout == shared ]] && list=$shared_scenarios
        for scenario in $list; do
            rlist=""
            case $scenario in
                chat) if [[ $layout == shared ]]; then rlist=$shared_rates; else rlist=$rates; fi ;;
                cpu) if [[ $mode == smoke ]]; then rlist=500; else rlist=4000; fi ;;
            esac
            status=0
            if [[ $scenario == tls ]]; then
                # No baseline has TLS; the same server and loader with and without it.
                is_baseline "$name" && continue
                for t in off on; do
                    cell "$name" "$io" "$layout" tls-chat "$tls_rate" "tls=$t" || status=$?
                    ((status == 3)) && break
                    cell "$name" "$io" "$layout" tls-connect "" "tls=$t" || status=$?
                    ((status == 3)) && break
                done
            elif [[ $scenario == capped-connect ]]; then
                # The connect storm again, the server capped (split only: the shared layout
                # has no loader core of its own to show the server's limit against).
                [[ $layout == split && -n $cap_dir ]] || continue
                cell "$name" "$io" "$layout" capped-connect "" "cpu_cap=$storm_cap" || status=$?
            elif [[ $scenario == deflate ]]; then
                # Of the baselines only node-ws has --deflate.
                is_baseline "$name" && [[ $name != node-ws ]] && continue
                # Off and on side by side at each rate (back to back, so that they compare).
                for rate in $deflate_rates; do
                    for t in off on; do
                        cell "$name" "$io" "$layout" deflate-chat "$rate" "deflate=$t" || status=$?
                        ((status == 3)) && break 2
                    done
                done
            elif [[ -z $rlist ]]; then
                cell "$name" "$io" "$layout" "$scenario" "" || status=$?
            else
                for rate in $rlist; do
                    cell "$name" "$io" "$layout" "$scenario" "$rate" || status=$?
                    ((status == 3)) && break
                done
            fi
            if ((status == 3)); then
                note "SKIPPED io=$io: the wschat binary rejects --io $io (see $dir/logs/*-$io-*.server)"
                skipped_io[$io]=1
                echo "io=$io skipped: the binary rejected --io $io" >>"$dir/skipped.txt"
                break 2
            fi
        done
    done
    [[ -n ${skipped_io[$io]:-} ]] && continue
    if [[ $syscall_tool != none ]]; then
        syscall_run "$name" "$io" || failures+=("$name-$io-syscalls (server start)")
    fi
done

# ---- the kernel floor (untimed by bench-client; its own probe) ----------------------------------
# On the split layout's CPUs: the first server CPU sends, the first loader CPU reads. A failure
# (no gcc, a CPU this process may not use) is a note, not a failure of the matrix.
if $kernel_floor; then
    read -r floor_sender _ <<<"$server_set"
    read -r floor_reader _ <<<"$loader_set"
    if ((quiet_max > 0)); then
        read -r quiet_waited quiet_busy < <(python3 scripts/bench/noise.py wait-quiet "$quiet_max")
        ((quiet_busy >= 10)) && note "machine still ${quiet_busy}% busy after ${quiet_waited} s: running the kernel floor anyway (see other_load_pct)"
    fi
    status=0
    timeout --kill-after=5 120 scripts/baselines/kernel-floor.sh --sender-cpu "$floor_sender" \
        --reader-cpu "$floor_reader" --out "$dir/kernel-floor.json" >"$dir/logs/kernel-floor" 2>&1 || status=$?
    if ((status == 0)) && [[ -s $dir/kernel-floor.json ]]; then
        printf '  [%4ds] %-60s %s\n' "$((SECONDS - started))" "kernel-floor (cpu$floor_sender -> cpu$floor_reader)" \
            "$(python3 scripts/bench/summarize.py --one-line "$dir/kernel-floor.json" 2>/dev/null || echo '-')" >&2
    else
        rm -f "$dir/kernel-floor.json"
        note "SKIPPED the kernel floor: scripts/baselines/kernel-floor.sh exit $status (see $dir/logs/kernel-floor)"
        echo "kernel floor not measured: scripts/baselines/kernel-floor.sh exit $status (logs/kernel-floor)" >>"$dir/skipped.txt"
    fi
fi

# ---- report -------------------------------------------------------------------------------
note "rendering the report"
((${#failures[@]})) && printf '%s\n' "${failures[@]}" >"$dir/failures.txt"
status=0
python3 scripts/bench/summarize.py --run-dir "$dir" --bench "$bench" || status=$?
((status == 0)) || failures+=("report for $dir (exit $status)")
status=0
python3 scripts/bench/summarize.py --readme "$out" || status=$?
((status == 0)) || failures+=("$out/README.md (exit $status)")

note "done in $((SECONDS - started)) s: $dir"
if ((${#failures[@]})); then
    note "failures (${#failures[@]}):"
    printf '  %s\n' "${failures[@]}" >&2
    printf '%s\n' "${failures[@]}" >"$dir/failures.txt"
    exit 1
fi
