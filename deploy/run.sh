#!/usr/bin/env bash
# deploy/run.sh: a wschat cluster on this one machine, in network namespaces: N wschat nodes
# sharing rooms through Redis, with HAProxy (TCP, L4) and nginx (HTTP, L7) in front.
#
#   sudo deploy/run.sh                      # 3 nodes; prints the URLs; Ctrl-C tears it down
#   sudo deploy/run.sh --nodes 2 -- CMD...  # runs CMD on the host side, then tears down
#
# Options:
#   --nodes N          wschat nodes (default 3)
#   --subnet A.B.C     the /24 the script creates (default 10.200.9); aborts if it is in use
#   --pattern P        each node's --pattern (default single-thread); --threads N likewise
#   --node-cpus LIST   taskset for the nodes (e.g. 0 or 0,1); default: unpinned
#   --binary PATH      the wschat binary (default: $CARGO_TARGET_DIR or target/release/wschat,
#                      built with cargo unless --no-build)
#   --no-cluster       nodes without --cluster and no Redis (the baseline; only with 1 node)
#   --idle-timeout D   each node's --idle-timeout (default 75s); proxy timeouts are set to
#                      this plus 15 s, so that the server, not the proxy, ends quiet sessions
#
# Layout (a bridge on the host side; one namespace per process, each with its own address):
#
#   host (root namespace): A.B.C.1 on bridge wsc<pid>br   <- browser, bench-client
#     ├── veth ── netns <tag>-proxy  A.B.C.2   haproxy :8000 (L4)   nginx :8001 (L7)
#     ├── veth ── netns <tag>-redis  A.B.C.3   redis-server :6379
#     └── veth ── netns <tag>-n<i>   A.B.C.(10+i)  wschat :8080 --cluster redis://A.B.C.3:6379
#
# Safety: everything stays on this machine. The namespaces, veths and bridge exist only during
# the run and are removed at its end (also on error or Ctrl-C). Before anything is sent, every
# target address is checked with `ip route get` to go through the script's own bridge (from the
# host) or veth (from the proxy's namespace); the script aborts otherwise. New namespaces
# start with default sysctls: somaxconn, the SYN backlog, the port range and TIME_WAIT reuse
# are set inside each one.
#
# With `-- CMD`, CMD sees: WSCHAT_HAPROXY_URL, WSCHAT_NGINX_URL (ws://...), WSCHAT_NODE_URLS,
# WSCHAT_NODE_PIDS, WSCHAT_REDIS_PID, WSCHAT_HAPROXY_PID, WSCHAT_NGINX_PID (space-separated),
# WSCHAT_REDIS_NS, WSCHAT_REDIS_ADDR.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }
die() { echo "deploy/run.sh: $*" >&2; exit 2; }
note() { printf 'deploy/run.sh: %s\n' "$*" >&2; }

nodes=3 subnet=10.200.9 pattern=single-thread threads= node_cpus= binary= build=true
cluster=true idle_timeout=75
cmd=()
while (($#)); do
    case $1 in
        --nodes) nodes=${2:?}; shift ;;
        --subnet) subnet=${2:?}; shift ;;
        --pattern) pattern=${2:?}; shift ;;
        --threads) threads=${2:?}; shift ;;
        --node-cpus) node_cpus=${2:?}; shift ;;
        --binary) binary=${2:?}; shift ;;
        --no-build) build=false ;;
        --no-cluster) cluster=false ;;
        --idle-timeout) idle_timeout=${2%s}; shift ;;
        --) shift; cmd=("$@"); break ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
[[ $nodes =~ ^[1-9][0-9]?$ ]] && ((nodes <= 50)) || die "--nodes must be 1..50"
[[ $subnet =~ ^10\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "--subnet must be a private 10.x.y prefix"
[[ $idle_timeout =~ ^[0-9]+$ ]] || die "--idle-timeout takes whole seconds (e.g. 75s)"
$cluster || ((nodes == 1)) || die "--no-cluster needs --nodes 1"
((EUID == 0)) || die "must run as root (network namespaces)"
for tool in ip haproxy nginx redis-server; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install iproute2 haproxy nginx redis-server)"
done

if [[ -z $binary ]]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    if $build; then
        (cd "$root" && cargo build --release -q -p wschat) || die "cargo build failed"
    fi
    binary=$target/release/wschat
fi
[[ -x $binary ]] || die "no wschat binary at $binary"

# ---- names and addresses ------------------------------------------------------------------
tag=wsc$(($$ % 100000))
bridge=${tag}br
host_ip=$subnet.1 proxy_ip=$subnet.2 redis_ip=$subnet.3
ns_proxy=$tag-proxy ns_redis=$tag-redis
node_ns=() node_ip=()
for ((i = 1; i <= nodes; i++)); do
    node_ns+=("$tag-n$i")
    node_ip+=("$subnet.$((10 + i))")
done
proxy_timeout=$((idle_timeout + 15))s
tmp=$(mktemp -d /tmp/wschat-deploy.XXXXXX)
created_ns=() pids=() bridge_made=false

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for ns in "${created_ns[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    $bridge_made && ip link del "$bridge" 2>/dev/null || true
    # Keep the last run's logs (and generated configs) for a look afterwards.
    rm -rf /tmp/wschat-deploy-last
    cp -r "$tmp" /tmp/wschat-deploy-last 2>/dev/null || true
    rm -rf "$tmp"
    note "torn down (namespaces, veths and bridge $bridge removed; logs in /tmp/wschat-deploy-last)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the network --------------------------------------------------------------------------
# The subnet must be unused here: no address in it on any interface, no route to it but the
# default.
if ip -o -4 addr show | grep -q " $subnet\."; then
    die "$subnet.0/24 is already assigned on this machine; pick another --subnet"
fi
if ip -4 route show | grep -q "^$subnet\."; then
    die "$subnet.0/24 is already routed on this machine; pick another --subnet"
fi
ip link add "$bridge" type bridge
bridge_made=true
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up

# Joins namespace $1 to the bridge with address $2 and sets its sysctls.
add_ns() {
    local ns=$1 addr=$2 k=${#created_ns[@]}
    ip netns add "$ns"
    created_ns+=("$ns")
    ip link add "${tag}v$k" type veth peer name eth0 netns "$ns"
    ip link set "${tag}v$k" master "$bridge" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # A new namespace has the defaults (somaxconn 4096 on recent kernels, 128 before 5.4;
    # SYN backlog by memory; ports 32768-60999): set them for thousands of connections.
    ip netns exec "$ns" sysctl -qw net.core.somaxconn=4096 \
        net.ipv4.tcp_max_syn_backlog=8192 \
        net.ipv4.ip_local_port_range="10000 65000" \
        net.ipv4.tcp_tw_reuse=1
}
add_ns "$ns_proxy" "$proxy_ip"
$cluster && add_ns "$ns_redis" "$redis_ip"
for ((i = 0; i < nodes; i++)); do add_ns "${node_ns[i]}" "${node_ip[i]}"; done

# Every target must be reached through our bridge (host) or our veth (proxy namespace).
check_route() {
    local where=$1 dev=$2 addr=$3 route
    if [[ $where == host ]]; then route=$(ip route get "$addr"); else route=$(ip -n "$where" route get "$addr"); fi
    [[ $route == *" dev $dev "* ]] || die "route check failed: from $where, $addr goes '$route', not through $dev; aborting"
}
targets=("$proxy_ip" "${node_ip[@]}")
$cluster && targets+=("$redis_ip")
for addr in "${targets[@]}"; do check_route host "$bridge" "$addr"; done
for addr in "${node_ip[@]}"; do check_route "$ns_proxy" eth0 "$addr"; done
if $cluster; then
    for ((i = 0; i < nodes; i++)); do check_route "${node_ns[i]}" eth0 "$redis_ip"; done
fi
if [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0) == 1 ]]; then
    note "warning: bridged traffic goes through iptables (br_netfilter); a FORWARD DROP policy would block it"
fi
note "network up: bridge $bridge $host_ip/24; routes checked"

# ---- processes ----------------------------------------------------------------------------
# Waits (bounded) until $1:$2 accepts a TCP connection from the host.
wait_port() {
    for _ in $(seq 100); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on $1:$2 after 10 s (logs in /tmp/wschat-deploy-last)"
}

if $cluster; then
    ip netns exec "$ns_redis" redis-server "$root/deploy/redis.conf" --bind "$redis_ip" \
        --port 6379 --dir "$tmp" >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    wait_port "$redis_ip" 6379
fi

node_pids=() node_urls=()
for ((i = 0; i < nodes; i++)); do
    args=(--addr "${node_ip[i]}:8080" --pattern "$pattern" --idle-timeout "${idle_timeout}s")
    [[ -n $threads ]] && args+=(--threads "$threads")
    $cluster && args+=(--cluster "redis://$redis_ip:6379" --node-id "$((i + 1))")
    pin=()
    [[ -n $node_cpus ]] && pin=(taskset -c "$node_cpus")
    ip netns exec "${node_ns[i]}" "${pin[@]}" "$binary" "${args[@]}" >"$tmp/node$((i + 1)).log" 2>&1 &
    node_pids+=($!)
    pids+=($!)
    node_urls+=("ws://${node_ip[i]}:8080")
done
for ((i = 0; i < nodes; i++)); do wait_port "${node_ip[i]}" 8080; done

servers_haproxy= servers_nginx=
for ((i = 0; i < nodes; i++)); do
    servers_haproxy+="    server n$((i + 1)) ${node_ip[i]}:8080"$'\n'
    servers_nginx+="        server ${node_ip[i]}:8080;"$'\n'
done
fill() { # template, output, then KEY=VALUE pairs
    local text
    text=$(<"$1")
    local out=$2
    shift 2
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    printf '%s\n' "$text" >"$out"
}
# The proxies' own connection limit: each proxied WebSocket holds two descriptors (client and
# server side), so a process with a hard limit of F descriptors relays about (F - reserve) / 2.
fd_hard=$(ulimit -Hn)
[[ $fd_hard == unlimited ]] && fd_hard=1048576
proxy_conns=$(((fd_hard - 100) / 2))
fill "$root/deploy/haproxy.cfg.in" "$tmp/haproxy.cfg" "LISTEN=$proxy_ip:8000" "MAXCONN=$proxy_conns" \
    "TIMEOUT=$proxy_timeout" "SERVERS=$servers_haproxy"
mkdir -p "$tmp/nginx"
fill "$root/deploy/nginx.conf.in" "$tmp/nginx.conf" "PREFIX=$tmp/nginx" "LISTEN=$proxy_ip:8001" \
    "WORKER_CONNECTIONS=$((proxy_conns * 2))" "RLIMIT=$fd_hard" "TIMEOUT=$proxy_timeout" "SERVERS=$servers_nginx"
ip netns exec "$ns_proxy" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
ip netns exec "$ns_proxy" bash -c 'ulimit -n "$0"; exec "$@"' "$fd_hard" \
    nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" >"$tmp/nginx.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
wait_port "$proxy_ip" 8000
wait_port "$proxy_ip" 8001

export WSCHAT_HAPROXY_URL="ws://$proxy_ip:8000" WSCHAT_NGINX_URL="ws://$proxy_ip:8001"
export WSCHAT_NODE_URLS="${node_urls[*]}" WSCHAT_NODE_PIDS="${node_pids[*]}"
export WSCHAT_REDIS_PID="${redis_pid:-}" WSCHAT_HAPROXY_PID="$haproxy_pid" WSCHAT_NGINX_PID="$nginx_pid"
export WSCHAT_REDIS_NS="$ns_redis" WSCHAT_REDIS_ADDR="$redis_ip:6379" WSCHAT_DEPLOY_LOGS="$tmp"

if ((${#cmd[@]})); then
    status=0
    "${cmd[@]}" || status=$?
    exit "$status"
fi

cat <<EOF
wschat cluster up: $nodes node(s) $( $cluster && echo "sharing rooms through redis://$redis_ip:6379" || echo "(no cluster)")
  HAProxy (L4, TCP, leastconn): http://$proxy_ip:8000/
  nginx   (L7, HTTP upgrade):   http://$proxy_ip:8001/
  nodes:  ${node_urls[*]}   (/stats on each: http://<node>:8080/stats)
  logs:   $tmp
Open the page through either proxy in two tabs (least-connections puts them on different
nodes) and chat. Ctrl-C tears everything down.
EOF
while :; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "process $pid ended; logs in $tmp: $(tail -n 3 "$tmp"/*.log 2>/dev/null | tr '\n' ' ')"
    done
    sleep 1
done
