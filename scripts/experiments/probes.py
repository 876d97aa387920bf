#!/usr/bin/env python3
"""Small clients of scripts/experiments/ that bench-client does not provide (stdlib only).
Each prints one JSON document on stdout. Every loop is bounded in count and time.

    probes.py hang PORT N WAIT_S SERVER_PID
        open N TCP connections at once and send nothing; after WAIT_S seconds count how many
        connect() calls succeeded, how many the server accepted (its socket fds) and how many
        sit in the accept queue (ss Recv-Q): the rest completed the handshake on the client
        side only (their final ACK was dropped on a full accept queue). Then send one byte on
        each and count again after WAIT_S.
    probes.py paced PORT N GAP_MS
        connect, close, sleep GAP_MS; N times (reaches a pool of idle threads)
    probes.py nagle-chat PORT N GAP_MIN_MS GAP_MAX_MS
        a sender and a passive receiver in one room: N small messages GAP apart (uniform);
        latency of each at the receiver
    probes.py nagle-ping PORT N MODE          MODE: one | two | two-gap
        echo round trips on /echo; `two` sends each request as two frames in two writes
        (write-write-read), `two-gap` waits 300 µs between the writes, `one` one frame
    probes.py spread PORT_BASE M N
        M SO_REUSEPORT listeners on one port in this process; N connections; per-listener counts
    probes.py hold PORT N SECONDS
        open N connections (sending nothing) and hold them; when a line arrives on stdin (the
        caller closed a listener) or SECONDS pass, count each connection's fate: reset / alive
"""
import base64
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time


def ws_connect(port, path, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during handshake")
        buf += chunk
    if b" 101 " not in buf.split(b"\r\n", 1)[0]:
        raise RuntimeError(buf[:80])
    rest = buf.split(b"\r\n\r\n", 1)[1]
    return s, rest


def frame(payload, opcode=1, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Reader:
    def __init__(self, sock, rest=b""):
        self.s, self.buf = sock, rest

    def message(self, deadline):
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) < 4:
                        n = None
                    else:
                        n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                elif n == 127:
                    if len(self.buf) < 10:
                        n = None
                    else:
                        n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
                if n is not None and len(self.buf) >= off + n:
                    op, payload = self.buf[0] & 0x0F, self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    return op, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk


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


def stalls(lat_ms):
    s = sorted(lat_ms)
    q = lambda p: round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else None
    return {"count": len(s), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": round(max(s), 3) if s else None,
            "stalls_over_30ms": sum(1 for x in s if x > 30), "over_5ms": sum(1 for x in s if x > 5)}


def nagle_chat(port, n, gmin, gmax):
    room = f"/chat/nagle{random.randrange(1 << 30)}"
    recv, rest = ws_connect(port, room + "?name=rx")
    send, srest = ws_connect(port, room + "?name=tx")
    r = Reader(recv, rest)
    r.message(time.monotonic() + 2)  # "tx just connected"
    lat, lost = [], 0
    rng = random.Random(7)
    for i in range(n):
        t = time.monotonic()
        send.sendall(frame(f"{i} {t:.9f}".encode()))
        m = r.message(time.monotonic() + 1)
        if m is None:
            lost += 1
            continue
        lat.append((time.monotonic() - t) * 1000)
        # the gap is measured from the send, so that the sender's next write comes GAP after
        # its previous one whatever the latency was
        time.sleep(max(0.0, rng.uniform(gmin, gmax) / 1000 - (time.monotonic() - t)))
    send.close()
    recv.close()
    return dict(stalls(lat), lost=lost, gap_ms=[gmin, gmax])


def nagle_ping(port, n, mode):
    s, rest = ws_connect(port, "/echo")
    r = Reader(s, rest)
    lat = []
    lost = 0
    for i in range(n):
        a, b = frame(b"req-%d-a" % i), frame(b"req-%d-b" % i)
        t = time.monotonic()
        if mode == "one":
            s.sendall(frame(b"req-%d" % i))
            want = 1
        else:
            s.sendall(a)
            if mode == "two-gap":
                end = time.monotonic() + 0.0003
                while time.monotonic() < end:
                    pass
            s.sendall(b)
            want = 2
        got = 0
        while got < want:
            if r.message(time.monotonic() + 1) is None:
                lost += 1
                break
            got += 1
        lat.append((time.monotonic() - t) * 1000)
        time.sleep(0.002)
    s.close()
    return dict(stalls(lat), lost=lost, mode=mode)


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
    elif cmd == "nagle-chat":
        out = nagle_chat(int(a[1]), int(a[2]), float(a[3]), float(a[4]))
    elif cmd == "nagle-ping":
        out = nagle_ping(int(a[1]), int(a[2]), a[3])
    elif cmd == "spread":
        out = spread(int(a[1]), int(a[2]), int(a[3]))
    elif cmd == "hold":
        out = hold(int(a[1]), int(a[2]), float(a[3]))
    else:
        sys.exit(f"probes.py: unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
