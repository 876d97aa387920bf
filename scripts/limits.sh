#!/usr/bin/env bash
# Watch the server at its limits, on loopback, in under a minute:
#  1. descriptors: the server runs under `ulimit -n 100` (so --max-conns is 36); idle clients take every descriptor;
#     accept fails with EMFILE, the server pauses accepting (counted as accept_pauses), keeps
#     serving the connections it has, and accepts again once the idle clients leave;
#  2. a slow reader: one chat member never reads while another sends 64 MiB; its unsent output
#     passes --max-outbound (1 MiB here) and it is closed with 1008 (slow_consumer_kicks),
#     while the sender goes on.
#
#   scripts/limits.sh [--pattern P] [-- SERVER_ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pattern=single-thread
server_args=()
while (($#)); do
    case $1 in
        --pattern) pattern=$2; shift 2 ;;
        --) shift; server_args=("$@"); break ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "limits.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
cargo build --release -q -p wschat
log=$(mktemp)
( ulimit -n 100 && exec target/release/wschat --addr 127.0.0.1:0 --pattern "$pattern" \
    --max-outbound 1MiB "${server_args[@]}" ) >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
[[ -n $addr ]] || { cat "$log"; exit 1; }
grep "listening on" "$log"

python3 - "$addr" <<'PY'
import json, os, socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1); port = int(port)
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

def stats():
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return json.loads(body)["totals"] if head.startswith(b"HTTP/1.1 200") else None

def ws(path):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s

def frame(opcode, payload):
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 127]) + struct.pack(">Q", n) if n > 65535 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

print("\n1. descriptors: the server has 100 descriptors; 150 idle clients connect and send nothing")
echo = ws("/echo")
idle = [socket.create_connection((host, port)) for _ in range(150)]
time.sleep(0.5)
echo.sendall(frame(1, b"still served?"))
reply = echo.recv(100)
print(f"   an existing connection still gets its echo: {reply[2:]!r}")
for s in idle:
    s.close()
for _ in range(100):
    t = stats()
    if t:
        break
    time.sleep(0.1)
print(f"   idle clients gone: accepting again; accept_pauses={t['accept_pauses']}, "
      f"rejected_over_capacity={t['rejected_over_capacity']}, active={t['active']}")

print("\n2. a slow reader: it never reads while another member sends 16 KiB messages")
slow = ws("/chat/limits?name=slow")
fast = ws("/chat/limits?name=fast")
fast.settimeout(0.5)
chunk = frame(2, os.urandom(16 * 1024))
sent = 0
for i in range(4096):
    fast.sendall(chunk)
    sent += 16
    if i % 64 == 63 and stats()["slow_consumer_kicks"] >= 1:
        break
t = stats()
print(f"   after {sent} KiB sent: slow_consumer_kicks={t['slow_consumer_kicks']} (the slow reader "
      f"was closed with 1008 once its unsent output passed --max-outbound); the sender is still connected")
PY
echo
echo "server log:"
sed 's/^/   /' "$log"
