#!/usr/bin/env python3
"""The server's RSS when one member of a big room sends a burst of 1-byte messages in one
write. Every message is queued, by reference, on every member's outbox (16 bytes a receiver
a message) before the loop flushes; the loop's fan-out budget (src/shard/mod.rs,
FANOUT_PER_ITERATION) bounds how many it queues before a flush. Results:
results/hostile/fanout/.

    scripts/hostile/fanout-probe.py PORT SERVER_PID MEMBERS KIB

Loopback only; bounded: MEMBERS connections and one write of KIB KiB, then 3 s of sampling.
"""
import socket
import sys
import time

port, pid, members, kib = (int(a) for a in sys.argv[1:5])


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def member(name):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        f"GET /chat/big?name={name} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return s


socks = [member(f"m{i}") for i in range(members)]
time.sleep(2)
before = rss_mib()
one = bytes([0x81, 0x81, 0, 0, 0, 0]) + b"x"  # a masked 1-byte text frame
socks[0].sendall(one * (kib * 1024 // len(one)))
peak = before
for _ in range(60):
    time.sleep(0.05)
    peak = max(peak, rss_mib())
print(f"{members} members, {kib} KiB of 1-byte messages in one write: RSS {before} -> peak {peak} MiB")
