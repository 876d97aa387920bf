#!/bin/bash
# usage: ab.sh BIN label
bin=$1; label=$2
log=$(mktemp)
taskset -c 0 $bin --addr 127.0.0.1:0 > $log 2>&1 &
pid=$!
for i in $(seq 50); do grep -q "listening on" $log && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' $log | head -1)
taskset -c 1 target/release/bench-client chat --url ws://$addr --conns 1000 --rooms 20 --rate 1000 --warmup 1s --duration 4s --drain 3s --server-pid $pid --json /tmp/ab-$label.json -q > /dev/null 2>&1
kill -TERM $pid; wait $pid 2>/dev/null
python3 -c "
import json; d=json.load(open('/tmp/ab-$label.json'))
p=d['histograms']['latency_us']['percentiles']; print('$label', p, 'cpu/del', d['server'].get('cpu_us_per_delivery'), 'correct', d['correct'])
" 2>&1 | head -3
