#!/usr/bin/env python3
"""Small clients of scripts/experiments/ that bench-client does not provide (stdlib only).
The Nagle probes live in nagle-probe.py.
Each prints one JSON document on stdout. Every loop is bounded in count and time.

    probes.py hang PORT N WAIT_S SERVER_PID
        open N TCP connections at once and send nothing; after WAIT_S seconds count how many
        connect() calls succeeded, how many the server accepted (its socket fds) and how many
        sit in the accept queue (ss Recv-Q): the rest completed the handshake on the client
        side only (their final ACK was dropped on a full accept queue). Then send one byte on
        each and count again after WAIT_S.
    probes.py paced PORT N GAP_MS
        connect, close, sleep GAP_MS; N times (reaches a pool of idle threads)
    probes.py spread PORT_BASE M N
        M SO_REUSEPORT listeners on one port in this process; N connections; per-listener counts
    probes.py hold PORT N SECONDS
        open N connections (sending nothing) and hold them; when a line arrives on stdin (the
        caller closed a listener) or SECONDS pass, count each connection's fate: reset / alive
"""
import json
import os
import select
import socket
import subprocess
import sys
import time


def server_sockets(pid):
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def recv_q(port):
    out = subprocess.run(["ss", "-Hlnt", f"sport = :{port}"], capture_output=True, text=True).stdout
    return sum(int(l.split()[1]) for l in out.splitlines() if l.split())


def is_connected(s):
    try:
        s.getpeername()
        return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    except OSError:
        return False


def hang(port, n, wait_s, pid):
    base = server_sockets(pid)
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    t0 = time.monotonic()
    connected = set()
    while time.monotonic() - t0 < wait_s:
        _, w, _ = select.select([], [s for i, s in enumerate(socks) if i not in connected], [], 0.05)
        for s in w:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.add(socks.index(s))
    def look():
        # counted together, at one instant: client sockets that are connected, server
        # descriptors accepted, and the accept queue
        conn = sum(1 for s in socks if is_connected(s))
        accepted, queued = server_sockets(pid) - base, recv_q(port)
        return {"connected": conn, "accepted": accepted, "in_accept_queue": queued,
                "connected_not_in_server": conn - accepted - queued}
    before = look()
    for s in socks:
        if is_connected(s):
            try:
                s.send(b"G")
            except OSError:
                pass
    time.sleep(wait_s)
    after = look()
    for s in socks:
        s.close()
    return {"n": n, "wait_s": wait_s, "before_data": before, "after_one_byte": after}


def paced(port, n, gap_ms):
    fails = 0
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.close()
        except OSError:
            fails += 1
        time.sleep(gap_ms / 1000)
    return {"n": n, "gap_ms": gap_ms, "failed": fails, "wall_s": round(time.monotonic() - t0, 2)}


def spread(port, m, n):
    ls = []
    for _ in range(m):
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        l.bind(("127.0.0.1", port))
        l.listen(4096)
        l.setblocking(False)
        ls.append(l)
    counts = [0] * m
    done = 0
    while done < n:
        batch = min(500, n - done)
        cs = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(batch)]
        for i, l in enumerate(ls):
            while True:
                try:
                    c, _ = l.accept()
                except BlockingIOError:
                    break
                counts[i] += 1
                c.close()
        for c in cs:
            c.close()
        done += batch
    for l in ls:
        l.close()
    return {"m": m, "n": n, "counts": counts}


def hold(port, n, seconds):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    print(json.dumps({"opened": len(socks)}), flush=True)
    # wait for the signal (a line on stdin) that the listener was closed, bounded by SECONDS
    r, _, _ = select.select([sys.stdin], [], [], seconds)
    if r:
        sys.stdin.readline()
    time.sleep(0.5)
    fates = {"reset": 0, "closed": 0, "alive": 0}
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(1, socket.MSG_PEEK)
            fates["closed" if d == b"" else "alive"] += 1
        except BlockingIOError:
            fates["alive"] += 1
        except ConnectionResetError:
            fates["reset"] += 1
        except OSError:
            fates["reset"] += 1
    for s in socks:
        s.close()
    return fates


def main():
    a = sys.argv[1:]
    if not a or a[0] in ("-h", "--help"):
        print(__doc__)
        return
    cmd = a[0]
    if cmd == "hang":
        out = hang(int(a[1]), int(a[2]), float(a[3]), int(a[4]))
    elif cmd == "paced":
        out = paced(int(a[1]), int(a[2]), float(a[3]))
    elif cmd == "spread":
        out = spread(int(a[1]), int(a[2]), int(a[3]))
    elif cmd == "hold":
        out = hold(int(a[1]), int(a[2]), float(a[3]))
    else:
        sys.exit(f"probes.py: unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
