#!/usr/bin/env python3
"""Nagle's algorithm, measured per round trip (stdlib only). Each subcommand prints one JSON
document on stdout holding every round trip's latency (ms) and its summary. Every loop is
bounded in count and time (each read waits at most 1 s; a run gives up after DEADLINE_S).

    nagle-probe.py raw N [WRITER_CPU PEER_CPU]
        A minimal writer against a minimal peer, both plain TCP sockets on 127.0.0.1. The
        writer does write(a), write(b), read(reply); the peer reads until it has both a and b
        and only then writes the reply, so it has nothing to piggyback an ACK on and delays
        it. Two writer connections, one without TCP_NODELAY (Nagle on) and one with it,
        take turns round trip by round trip (off, on, off, on, ...) in one run. The peer
        always has TCP_NODELAY on: only the writer's Nagle is under test. The peer runs as a
        child process (`peer`); with WRITER_CPU PEER_CPU each is pinned to that CPU.
    nagle-probe.py peer
        the peer of `raw` (internal): prints its port, serves until stdin closes
    nagle-probe.py chat PORT N MODE        MODE: split | joined
        wschat as the writer. Two members of one room, S and R, clients with TCP_NODELAY on
        (so only the server's Nagle is under test). Each round trip: S sends m1, then m2
        (`split`: 300 µs later, so that the server reads them in two loop iterations and
        writes to R twice; `joined`: both frames in one write, one iteration, one writev);
        R reads both and only then answers; the round trip ends when S has R's answer.
        Between the server's two writes to R, R sends nothing: server-side write-write-read.
    nagle-probe.py echo PORT N MODE        MODE: two | two-gap
        /echo, the client sends two frames in two writes (`two-gap`: 300 µs apart) and
        reads both echoes (the old experiment's case, kept for comparison).
    nagle-probe.py writes STRACE_FILE TEST     TEST: chat | echo
        reads `strace -f -e trace=recvfrom,sendmsg,... -s 64` output of the server taken
        during one `chat` or `echo` run and counts, per round trip, how the two frames for
        one client (R, or the echo client) left: in one sendmsg, or in two, and then whether
        the server read from that client between the two (the client's data carries an ACK)
"""
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time

DEADLINE_S = 120
GAP_S = 0.002  # between round trips: well under the RTO, so no idle restart of the ACK state


def summary(lat):
    s = sorted(lat)
    if not s:
        return {"count": 0}
    q = lambda p: round(s[min(len(s) - 1, int(p * len(s)))], 3)
    edges = [0.1, 0.5, 1, 5, 30, 45, 60, 200]
    hist, lo = {}, 0
    for e in edges:
        hist[f"{lo}-{e}"] = sum(1 for x in s if lo <= x < e)
        lo = e
    hist[f">={lo}"] = sum(1 for x in s if x >= lo)
    return {"count": len(s), "min_ms": round(s[0], 3), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99),
            "max_ms": round(s[-1], 3), "over_30ms": sum(1 for x in s if x > 30), "hist_ms": hist}


def recv_exact(s, n, deadline):
    buf = b""
    while len(buf) < n:
        s.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("peer closed")
        buf += chunk
    return buf


PART = 40  # bytes per write: far below the MSS, so Nagle applies to each


def peer():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    print(ls.getsockname()[1], flush=True)
    import threading

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < DEADLINE_S:
                # both parts first, then the reply: nothing goes back after `a` alone
                recv_exact(c, 2 * PART, time.monotonic() + 5)
                c.sendall(b"r" * PART)
        except (OSError, RuntimeError):
            pass
        c.close()

    ls.settimeout(10)
    for _ in range(2):
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    sys.stdin.read()  # the writer closes our stdin when it is done


def raw(n, cpus=None):
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "peer"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    if cpus:
        os.sched_setaffinity(0, {cpus[0]})
        os.sched_setaffinity(p.pid, {cpus[1]})
    try:
        port = int(p.stdout.readline())
        conns = {}
        for nd in ("nodelay_off", "nodelay_on"):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if nd == "nodelay_on" else 0)
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == (nd == "nodelay_on")
            conns[nd] = s
        lat = {k: [] for k in conns}
        lost = {k: 0 for k in conns}
        t_end = time.monotonic() + DEADLINE_S
        for i in range(n):
            if time.monotonic() > t_end:
                break
            for nd, s in conns.items():
                t = time.monotonic()
                s.sendall(b"a" * PART)
                s.sendall(b"b" * PART)
                try:
                    recv_exact(s, PART, time.monotonic() + 1)
                except (OSError, RuntimeError):
                    lost[nd] += 1
                    continue
                lat[nd].append((time.monotonic() - t) * 1000)
                time.sleep(GAP_S)
        for s in conns.values():
            s.close()
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    return {"test": "raw", "part_bytes": PART, "gap_ms": GAP_S * 1000, "cpus_writer_peer": cpus,
            "variants": {k: dict(summary(v), lost=lost[k], latency_ms=[round(x, 4) for x in v]) for k, v in lat.items()}}


def ws_connect(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the client is not under test
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    t0 = time.monotonic()
    while b"\r\n\r\n" not in buf and time.monotonic() - t0 < 10:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during handshake")
        buf += chunk
    if b" 101 " not in buf.split(b"\r\n", 1)[0]:
        raise RuntimeError(buf[:80])
    return Reader(s, buf.split(b"\r\n\r\n", 1)[1])


def frame(payload):
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Reader:
    def __init__(self, sock, rest=b""):
        self.s, self.buf = sock, rest

    def message(self, deadline):
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126 and len(self.buf) >= 4:
                    n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                if n < 126 or off == 4:
                    if len(self.buf) >= off + n:
                        payload = self.buf[off:off + n]
                        self.buf = self.buf[off + n:]
                        return payload
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


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def chat(port, n, mode):
    room = f"/chat/nagle{os.getpid()}"
    r = ws_connect(port, room + "?name=rx")
    s = ws_connect(port, room + "?name=tx")
    r.message(time.monotonic() + 2)  # "tx just connected"
    lat, lost = [], 0
    t_end = time.monotonic() + DEADLINE_S
    for i in range(n):
        if time.monotonic() > t_end:
            break
        m1, m2 = frame(b"%d-m1" % i), frame(b"%d-m2" % i)
        t = time.monotonic()
        if mode == "joined":
            s.s.sendall(m1 + m2)
        else:
            s.s.sendall(m1)
            spin(0.0003)
            s.s.sendall(m2)
        ok = r.message(time.monotonic() + 1) is not None and r.message(time.monotonic() + 1) is not None
        if ok:
            r.s.sendall(frame(b"%d-ok" % i))
            ok = s.message(time.monotonic() + 1) is not None
        if not ok:
            lost += 1
            continue
        lat.append((time.monotonic() - t) * 1000)
        time.sleep(GAP_S)
    s.s.close()
    r.s.close()
    return {"test": "chat", "mode": mode, **summary(lat), "lost": lost, "latency_ms": [round(x, 4) for x in lat]}


def echo(port, n, mode):
    c = ws_connect(port, "/echo")
    lat, lost = [], 0
    t_end = time.monotonic() + DEADLINE_S
    for i in range(n):
        if time.monotonic() > t_end:
            break
        t = time.monotonic()
        c.s.sendall(frame(b"%d-a" % i))
        if mode == "two-gap":
            spin(0.0003)
        c.s.sendall(frame(b"%d-b" % i))
        if c.message(time.monotonic() + 1) is None or c.message(time.monotonic() + 1) is None:
            lost += 1
            continue
        lat.append((time.monotonic() - t) * 1000)
        time.sleep(GAP_S)
    c.s.close()
    return {"test": "echo", "mode": mode, **summary(lat), "lost": lost, "latency_ms": [round(x, 4) for x in lat]}


def writes(path, test):
    import gzip
    import re
    ev = []  # (kind, fd, text)
    pat = re.compile(r'^(?:\[pid\s+)?\d*\]?\s*(sendmsg|writev|write|recvfrom|read|readv|recvmsg)\((\d+), (.*) = (-?\d+)')
    for line in (gzip.open if path.endswith(".gz") else open)(path, "rt", errors="replace"):
        m = pat.match(line.strip())
        if m and int(m.group(4)) > 0:
            ev.append(("w" if m.group(1) in ("sendmsg", "writev", "write") else "r", int(m.group(2)), m.group(3)))
    first, second = (b"m1", b"m2") if test == "chat" else (b"a", b"b")
    # the frame's payload follows its length byte, which strace prints as an octal escape
    # (three digits before a digit 0-7, fewer before 8, 9)
    tag = "tx says: " if test == "chat" else r"\\[0-7]{1,3}"
    target = next((fd for k, fd, t in ev if k == "w" and re.search(tag + r"\d+-" + first.decode(), t)), None)
    rounds = {}
    for i, (k, fd, t) in enumerate(ev):
        if fd != target:
            continue
        if k == "w":
            for m in re.finditer(tag + r"(\d+)-(" + first.decode() + "|" + second.decode() + ")", t):
                rounds.setdefault(int(m.group(1)), {})[m.group(2)] = i
    one = two_no_read = two_read_between = 0
    split = []
    for n, r in sorted(rounds.items()):
        a, b = r.get(first.decode()), r.get(second.decode())
        if a is None or b is None:
            continue
        if a == b:
            one += 1
            continue
        split.append(n)
        if any(k == "r" and fd == target for k, fd, _ in ev[a + 1:b]):
            two_read_between += 1
        else:
            two_no_read += 1
    return {"test": test, "fd": target, "round_trips": one + two_no_read + two_read_between,
            "one_sendmsg": one, "two_sendmsg_no_read_between": two_no_read,
            "two_sendmsg_read_between": two_read_between, "two_sendmsg_round_trips": split}


def main():
    a = sys.argv[1:]
    if not a or a[0] in ("-h", "--help"):
        print(__doc__)
        return
    if a[0] == "peer":
        peer()
        return
    if a[0] == "raw":
        out = raw(int(a[1]), [int(a[2]), int(a[3])] if len(a) >= 4 else None)
    elif a[0] == "chat":
        out = chat(int(a[1]), int(a[2]), a[3])
    elif a[0] == "writes":
        out = writes(a[1], a[2])
    elif a[0] == "echo":
        out = echo(int(a[1]), int(a[2]), a[3])
    else:
        sys.exit(f"nagle-probe.py: unknown command {a[0]}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
