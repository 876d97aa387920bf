#!/bin/bash
# variants.sh OUT RATE RUNS V1 V2 ...: alternated runs of /tmp/v-<V>, 10 s each, pooled at the end
out=$1 rate=$2 runs=$3; shift 3
mkdir -p $out
for i in $(seq $runs); do
  for v in "$@"; do
    python3 /work/main/scripts/bench/noise.py wait-quiet 60 > /dev/null
    log=$(mktemp)
    taskset -c 0 /tmp/v-$v --addr 127.0.0.1:0 >$log 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" $log && break; sleep 0.05; done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' $log | head -1)
    taskset -c 1 /work/main/target/release/bench-client chat --url ws://$addr --conns 1000 --rooms 20 --rate $rate --duration 10s --json $out/$v-$i.json > $out/$v-$i.txt 2>&1
    kill $pid; wait $pid 2>/dev/null
  done
done
for v in "$@"; do
  /work/main/target/release/bench-client merge -o $out/pooled-$v.json --hgrm $out/pooled-$v.hgrm $out/$v-*.json > /dev/null 2>&1
  python3 - $out $v <<'PY'
import json,sys
out,v=sys.argv[1:]
runs=[]
import glob
for f in sorted(glob.glob(f"{out}/{v}-*.json")):
    j=json.load(open(f)); runs.append((j['histograms']['latency_us']['percentiles']['p99'], j.get('server',{}).get('cpu_us_per_delivery',0)))
p=json.load(open(f"{out}/pooled-{v}.json"))['histograms']['latency_us']['percentiles']
print(v, "pooled p50/p90/p99/p99.9:", p['p50'],p['p90'],p['p99'],p['p99_9'], "runs p99:", sorted(r[0] for r in runs), "cpu:", sorted(round(r[1],2) for r in runs))
PY
done
