#!/usr/bin/env bash
# The cluster benchmark (scripts/bench.sh --cluster runs this): 1 node without Redis vs 1, 2
# and 3 nodes sharing rooms through Redis, behind HAProxy (L4) and nginx (L7), all on this
# machine via deploy/run.sh. Per run: deliveries/s, latency percentiles, delivery accounting,
# and the CPU of every process (each node, each node's broker thread, redis-server, the proxy).
#
#   sudo deploy/bench-cluster.sh [--out DIR] [--runs N] [--duration SECS] [--rate R]
#                                [--quick] [--node-cpus LIST] [--no-build]
#
# Workloads (bench-client, in the host namespace):
#   chat      --conns 600 --rooms 12 (rooms of 50: each message reaches 49) --rate R (1000)
#   saturate  --conns 200 --rooms 4 --window 8 (closed loop: the maximum deliveries/s)
# Every room has members on every node (least connections spreads each room's members), so
# every message crosses the broker: the worst case for scale-out, and the one that shows its
# cost.
#
# All processes share this machine's CPUs (nproc, 2 on the reference machine): nodes, Redis,
# proxy and loader compete, so adding nodes here adds no CPU. What the numbers show is the
# cost per delivery of each hop; results/cluster/README.md projects the multi-machine case
# from them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }
die() { echo "bench-cluster.sh: $*" >&2; exit 2; }

out=results/cluster runs=1 duration=8 rate=1000 build=true node_cpus= quick=false
while (($#)); do
    case $1 in
        --out) out=${2:?}; shift ;;
        --runs) runs=${2:?}; shift ;;
        --duration) duration=${2:?}; shift ;;
        --rate) rate=${2:?}; shift ;;
        --node-cpus) node_cpus=${2:?}; shift ;;
        --no-build) build=false ;;
        --quick) quick=true ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
((EUID == 0)) || die "must run as root (deploy/run.sh creates network namespaces)"
target=${CARGO_TARGET_DIR:-$root/target}
if $build; then
    cargo build --release -q -p wschat -p bench-client || die "cargo build failed"
fi
bc=$target/release/bench-client
[[ -x $bc ]] || die "no bench-client at $bc"

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
machine=$(echo "${cpu:-unknown}" | tr 'A-Z' 'a-z' | sed 's/(r)//g;s/(tm)//g;s/ cpu.*//;s/[^a-z0-9]\+/-/g;s/^-//;s/-$//' | cut -d- -f1-3)-$(nproc)cpu
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dir=$out/$machine/$stamp
mkdir -p "$dir"
echo "scripts/bench.sh --cluster ${*}" >"$dir/command.txt"
cat >"$dir/machine.txt" <<EOF
cpu: ${cpu:-unknown}; cpus: $(nproc); kernel: $(uname -r)
redis: $(redis-server --version | head -1)
haproxy: $(haproxy -v | head -1)
nginx: $(nginx -v 2>&1)
All nodes, Redis, the proxy and bench-client share these $(nproc) CPUs.
load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine competes too)
EOF

chat=(--conns 600 --rooms 12 --rate "$rate")
sat=(--conns 200 --rooms 4 --window 8)
warm=2

# measure NAME KIND URL-VARIABLE -- BENCH ARGS: one run per --runs, inside a deploy.
measure_script=$dir/.measure.sh
cat >"$measure_script" <<EOF
#!/usr/bin/env bash
# Runs inside deploy/run.sh: \$1 = config label, then "target kind" pairs.
set -u
config=\$1; shift
status=0
while ((\$#)); do
    target=\$1 kind=\$2; shift 2
    case \$target in
        direct) url=\${WSCHAT_NODE_URLS%% *} ;;
        haproxy) url=\$WSCHAT_HAPROXY_URL ;;
        nginx) url=\$WSCHAT_NGINX_URL ;;
    esac
    for run in \$(seq $runs); do
        if [[ \$kind == chat ]]; then args=(${chat[*]}); else args=(${sat[*]}); fi
        python3 "$root/deploy/measure.py" --bench-client "$bc" --url "\$url" --kind "\$kind" \\
            --duration "$duration" --warmup "$warm" --out "$dir/\$config-\$target-\$kind-\$run.json" \\
            --label config=\$config --label target=\$target --label kind=\$kind \\
            -- "\${args[@]}" || status=1
        echo "bench-cluster: \$config \$target \$kind run \$run done" >&2
    done
done
exit \$status
EOF
chmod +x "$measure_script"

deploy() { # config-label, run.sh flags..., --, target kind pairs
    local label=$1; shift
    local flags=()
    while [[ $1 != -- ]]; do flags+=("$1"); shift; done
    shift
    [[ -n $node_cpus ]] && flags+=(--node-cpus "$node_cpus")
    deploy/run.sh --no-build "${flags[@]}" -- "$measure_script" "$label" "$@"
}

status=0
if $quick; then
    deploy 1-node-no-redis --nodes 1 --no-cluster -- direct chat || status=1
    deploy 3-nodes --nodes 3 -- haproxy chat nginx chat || status=1
else
    deploy 1-node-no-redis --nodes 1 --no-cluster -- direct chat direct saturate haproxy chat \
        haproxy saturate nginx chat nginx saturate || status=1
    deploy 1-node --nodes 1 -- direct chat direct saturate || status=1
    deploy 2-nodes --nodes 2 -- haproxy chat haproxy saturate nginx chat nginx saturate || status=1
    deploy 3-nodes --nodes 3 -- haproxy chat haproxy saturate nginx chat nginx saturate || status=1
fi
rm -f "$measure_script"
python3 deploy/summarize.py "$dir" >"$dir/README.md"
python3 deploy/summarize.py --index "$out" >"$out/RUNS.md"
cat "$dir/README.md"
exit "$status"
