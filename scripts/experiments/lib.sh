# Shared by scripts/experiments/*.sh (sourced, not run).
#
# Every experiment runs in a network namespace of its own (wsx-<name>-<pid>, loopback up),
# so that the net.* sysctls it changes (somaxconn, tcp_abort_on_overflow, tcp_migrate_req,
# ...) are that namespace's copies: other users of the machine never see them, and deleting
# the namespace at exit puts everything back. If namespaces cannot be created, the experiment
# runs in the current namespace and restores every sysctl it changed (trap EXIT).
# Servers are started on 127.0.0.1:0 inside the namespace and always stopped at exit.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
WSCHAT=${WSCHAT:-$root/target/release/wschat}
BENCH=${BENCH:-$root/target/release/bench-client}
EXPY="python3 $root/scripts/experiments/exp.py"
NS= NSX=() SERVER_PID= PORT= SAVED_SYSCTLS=() SERVERS=()

note() { printf '%s: %s\n' "$EXP" "$*" >&2; }
die() { printf '%s: %s\n' "$EXP" "$*" >&2; exit 2; }

exp_usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; }

exp_cleanup() {
    local pid
    for pid in "${SERVERS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    local kv
    for kv in "${SAVED_SYSCTLS[@]}"; do
        sysctl -q -w "$kv" >/dev/null 2>&1 || echo "$EXP: could not restore $kv" >&2
    done
    if [[ -n $NS ]]; then ip netns del "$NS" 2>/dev/null || true; fi
}

# exp_init NAME: output folder, namespace, machine record, traps.
exp_init() {
    EXP=$1
    OUT=$root/results/experiments/$EXP
    # EXP_NO_BENCH=1: the experiment does not run bench-client (nagle.sh)
    [[ -x $WSCHAT && ( -n ${EXP_NO_BENCH:-} || -x $BENCH ) ]] || die "build first: cargo build --release --workspace"
    [[ $(id -u) == 0 ]] || note "not root: no namespace, no sysctl changes; parts that need them are skipped"
    mkdir -p "$OUT/raw"
    rm -f "$OUT"/raw/*
    trap exp_cleanup EXIT
    trap 'exit 130' INT TERM
    if [[ $(id -u) == 0 ]] && ip netns add "wsx-$EXP-$$" 2>/dev/null; then
        NS=wsx-$EXP-$$
        NSX=(ip netns exec "$NS")
        "${NSX[@]}" ip link set lo up
        "${NSX[@]}" ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
        note "running in network namespace $NS (its sysctls are its own; deleted at exit)"
    else
        note "no network namespace: running in the current one; changed sysctls are restored at exit"
    fi
    python3 "$root/scripts/bench/machine.py" "$(python3 "$root/scripts/experiments/exp.py" machine-name)" \
        "$OUT/machine.json" "command=$EXP_COMMAND" "commit=$(git rev-parse --short HEAD 2>/dev/null || echo ?)" \
        "netns=${NS:-none}"
    BUSY0=$(python3 "$root/scripts/bench/noise.py" busy) T0=$(date +%s.%N)
}

# Records the other load on the machine over the whole experiment into $OUT/noise.json.
exp_noise() {
    local b1 t1
    b1=$(python3 "$root/scripts/bench/noise.py" busy) t1=$(date +%s.%N)
    python3 - "$BUSY0" "$b1" "$T0" "$t1" >"$OUT/noise.json" <<'EOF'
import json, os, sys
b0, b1, t0, t1 = map(float, sys.argv[1:])
print(json.dumps({"wall_s": round(t1 - t0, 1), "machine_busy_pct": round((b1 - b0) / ((t1 - t0) * os.cpu_count()) * 100, 1),
                  "note": "all CPU use on the machine during the experiment, ours included"}))
EOF
}

# ns CMD...: run in the experiment's namespace.
ns() { "${NSX[@]}" "$@"; }

# set_sysctl KEY VALUE: in the namespace (or, without one, saved for restore at exit).
set_sysctl() {
    local key=$1 value=$2 old
    old=$(ns sysctl -n "$key" 2>/dev/null | tr -s '\t' ' ') || { note "no sysctl $key on this kernel"; return 1; }
    [[ -n $NS ]] || SAVED_SYSCTLS+=("$key=$old")
    ns sysctl -q -w "$key=$value" >/dev/null || { note "cannot set $key (read-only?)"; return 1; }
}
get_sysctl() { ns sysctl -n "$1" 2>/dev/null | tr -s '\t' ' ' || echo "n/a"; }

# start_server LOG ARGS...: wschat on 127.0.0.1:0 (or --addr in ARGS) in the namespace;
# sets SERVER_PID and PORT.
start_server() {
    local log=$1; shift
    local addr=127.0.0.1:0
    [[ " $* " == *" --addr "* ]] && addr=
    # not through the ns function: $! must be the server itself (ip netns exec execs it)
    "${NSX[@]}" "$WSCHAT" ${addr:+--addr $addr} --handshake-timeout 60s "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    SERVERS+=("$SERVER_PID")
    local i
    for i in $(seq 100); do
        PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [[ -n $PORT ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "server failed to start: $*"; }
        sleep 0.05
    done
    die "server did not print its address: $*"
}

stop_server() {
    local pid=${1:-$SERVER_PID}
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# stats FILE: GET /stats (over one connection of its own: the counters include it).
stats() { ns curl -s --max-time 5 "http://127.0.0.1:${2:-$PORT}/stats" >"$1"; }

# bench ARGS...: bench-client in the namespace, bounded by timeout.
bench() { ns timeout 300 "$BENCH" "$@"; }
