#!/usr/bin/env python3
"""Memory per idle WebSocket connection: RSS growth of a wschat server holding N idle
/echo connections (loopback only; bounded by N and by a timeout per connection).

    scripts/idle-memory.py [--bin target/release/wschat] [--conns 10000] [--pattern P] [-- server args]

Prints one JSON object: RSS before and after, bytes per connection. The client side holds the
sockets in this process, so N must stay under its fd limit (raised to the hard limit here).
"""
import argparse, json, os, resource, socket, subprocess, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/wschat")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--pattern", default="single-thread")
    ap.add_argument("server_args", nargs="*")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.conns > hard - 100:
        sys.exit(f"--conns {a.conns} exceeds this process's fd limit ({hard}) minus a reserve")
    srv = subprocess.Popen([a.bin, "--addr", "127.0.0.1:0", "--pattern", a.pattern, *a.server_args],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = srv.stdout.readline()
        host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
        port = int(port)
        time.sleep(0.3)
        before = rss_kib(srv.pid)
        req = (f"GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        socks = []
        for i in range(a.conns):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"connection {i} closed during the handshake")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"connection {i}: {head[:40]!r}")
            socks.append(s)
        time.sleep(1.0)  # let the server finish its iteration
        after = rss_kib(srv.pid)
        result = {
            "pattern": a.pattern, "server_args": a.server_args, "conns": a.conns,
            "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_conn": round((after - before) * 1024 / a.conns, 1),
            "note": "RSS growth of the server process; includes kernel-independent user-space "
                    "memory only (socket buffers are kernel memory, not RSS)",
        }
        print(json.dumps(result))
        for s in socks:
            s.close()
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()

if __name__ == "__main__":
    main()
