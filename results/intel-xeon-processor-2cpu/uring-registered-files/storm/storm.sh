#!/bin/bash
# storm.sh WRAPPER LABEL: one connect storm, server cpu0 loader cpu1; prints hs/s, server us/handshake, loader busy
w=$1 label=$2
python3 /work/main/scripts/bench/noise.py wait-quiet 30 > /dev/null
log=$(mktemp)
taskset -c 0 $w --addr 127.0.0.1:0 >$log 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" $log && break; sleep 0.05; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' $log | head -1)
taskset -c 1 /work/main/target/release/bench-client connect --url ws://$addr/echo --conns ${CONNS:-5000} --concurrency 100 --source-ips 8 --server-pid $pid --json /tmp/storm/$label.json > /tmp/storm/$label.txt 2>&1
kill $pid; wait $pid 2>/dev/null
python3 - /tmp/storm/$label.json $label <<'PY'
import json,sys
j=json.load(open(sys.argv[1]))
r=j.get('rates',{}); s=j.get('server',{}) or {}; l=j.get('loader',{}) or {}
t=sum(x['user_us']+x['sys_us'] for x in s['threads']); n=j['counters'].get('upgraded') or j['counters'].get('handshakes') or 0; print(sys.argv[2], round(r.get('handshakes_per_s',0)), 'server_cpu_s', t/1e6, 'loader_busy', round(l.get('busy_per_thread',0),3), {k:v for k,v in j['counters'].items() if v and 'connect' not in k})
PY
