#!/usr/bin/env python3
"""Memory per idle connection: RSS growth of a wschat server holding N idle WebSocket
connections, either plain /echo connections or chat members in rooms of a given size.
Loopback only; bounded by N, by a timeout per socket and by an overall deadline.

    scripts/idle-memory.py [--bin target/release/wschat] [--conns 10000] [--warmup 200]
                           [--path /echo | --path '/chat/{room}?name={name}' --room-size 50]
                           [--io epoll|uring] [--pattern P] [--threads N] [-- SERVER_ARGS...]

What it measures: the server process's resident set (VmRSS, and RssAnon beside it) once the
first --warmup connections are open and idle, and again once all --conns are, after a
--settle pause; bytes_per_conn = growth / (conns - warmup). Start-up allocations (thread
stacks, read buffers, the io_uring rings, the first slab and hash-map sizes) thus do not
count; what a connection costs at this N does, including the share of containers that grow
by doubling (a slab or a hash map sized for 16,384 when 10,000 are in use), as far as those
pages are touched.

What it does not measure: kernel memory. Socket structures, TCP receive and send buffers,
epoll items, io_uring's per-op state and the file table are kernel memory, not RSS (they
show in /proc/slabinfo and /proc/net/sockstat, for both ends at once). It does not tell heap
in use from heap the allocator keeps (RSS is pages touched; freed chunks stay resident), nor
the server's own data from its allocator's overhead: see results/memory/ for the breakdown.

Chat members (`--path` with `{room}` and `{name}`): member i joins room `r<i // room-size>`
under the name `m<i in base 36>` (short and distinct), in order, one handshake at a time.
Every join sends "<name> just connected" to the others in the room (up to room-size - 1
notices of ~20 bytes each, so about 1 KiB per member in a room of 50: far below
--max-outbound, and the server's outbox empties into the kernel whether or not we read).
We read them anyway, after each room fills and at the end, for two reasons: unread they
would sit in the kernel's receive queues (tens of MB of socket memory at 19,000 members,
on a machine others share), and counting them gives the run a correctness column
(notices received == expected). The RSS is taken only after every notice arrived, so no
member has anything queued in the server when it is measured.

Heartbeats: a run takes seconds, less than the default --ping-interval (30 s), so the main
reading is of connections never pinged. --hold S then keeps them S seconds more, answering
every ping with a pong, and reads the RSS again (held_bytes_per_conn): with a short
--ping-interval passed to the server, what an idle connection costs once heartbeats have
gone round (state kept after a ping/pong, heartbeat re-filing, handshake deadlines expired).

Prints one JSON object. The client holds every socket in this process, so --conns must
stay under its fd limit (raised to the hard limit here; the server raises its own).
"""
import argparse
import json
import os
import resource
import select
import shlex
import socket
import subprocess
import sys
import time

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16-byte nonce in base64 will do (RFC 6455 4.1)


def proc_status(pid):
    """VmRSS, RssAnon and RssFile of `pid`, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(rest.split()[0])
    return fields


def base36(n):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = digits[r] + s
        if n == 0:
            return s


class Reader:
    """Counts the server's frames on one socket (unmasked, RFC 6455 5.2), keeping a partial
    frame between reads. Text frames are join notices; pings are counted apart and answered
    with a pong (masked, as a client must), so that heartbeats do not close an idle member."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.texts = 0
        self.pings = 0
        self.others = 0
        self.closed = False

    def drain(self):
        """Reads what is there now, without waiting."""
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
        self._parse()

    def _parse(self):
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            opcode, len7 = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2 + (2 if len7 == 126 else 8 if len7 == 127 else 0)
            if len(buf) - pos < head:
                break
            length = (len7 if head == 2 else int.from_bytes(buf[pos + 2:pos + head], "big"))
            if len(buf) - pos < head + length:
                break
            if opcode == 0x1:
                self.texts += 1
            elif opcode == 0x9:
                self.pings += 1
                self._pong(bytes(buf[pos + head:pos + head + length]))
            else:
                self.others += 1
            pos += head + length
        del buf[:pos]

    def _pong(self, payload):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.send(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
        except (BlockingIOError, InterruptedError):
            pass  # a few bytes into an empty send buffer: does not happen; the next ping will do


def git_head():
    """The commit checked out here, with "+src-changes" if src/ or the manifests differ from
    it (the server binary is assumed to be built from this checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml",
                                  "Cargo.lock"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        return (head + ("+src-changes" if changed else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_start_line(srv, timeout):
    """The server's start-up line ("... listening on ..."), or the last line read if none
    came within `timeout` seconds. Lines before it are skipped: a --bin wrapper (heaptrack,
    valgrind) prints its own first."""
    deadline = time.monotonic() + timeout
    line = ""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([srv.stdout], [], [], left)
        if not ready:
            break
        line = srv.stdout.readline().strip()
        if "listening on " in line or not line:
            break
    return line


def handshake(host, port, target, timeout):
    """Opens a connection and upgrades it; returns the socket and any bytes after the 101."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall((f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"{target}: closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"{target}: {head[:60]!r}")
    s.setblocking(False)
    return s, head.split(b"\r\n\r\n", 1)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/wschat")
    ap.add_argument("--conns", type=int, default=10000, help="idle connections in all")
    ap.add_argument("--warmup", type=int, default=200,
                    help="connections opened before the baseline RSS is taken")
    ap.add_argument("--path", default="/echo",
                    help="request target; '{room}' and '{name}' make chat members")
    ap.add_argument("--room-size", type=int, default=50, help="members per room (chat)")
    ap.add_argument("--io", default="epoll", choices=["epoll", "uring"])
    ap.add_argument("--pattern", default="single-thread")
    ap.add_argument("--threads", type=int, help="passed as --threads (default: the server's)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to let the server finish its iteration before each reading")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="then keep the connections this many seconds, answering pings, and "
                         "measure again (with e.g. -- --ping-interval 2s: the steady state "
                         "after heartbeats)")
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    ap.add_argument("server_args", nargs="*", help="after --: more server arguments")
    a = ap.parse_args()

    chat = "{room}" in a.path or "{name}" in a.path
    if not 0 <= a.warmup < a.conns:
        sys.exit("need 0 <= --warmup < --conns")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.conns > hard - 100:
        sys.exit(f"--conns {a.conns} exceeds this process's fd limit ({hard}) minus a reserve")

    cmd = [a.bin, "--addr", "127.0.0.1:0", "--pattern", a.pattern, "--io", a.io]
    if a.threads is not None:
        cmd += ["--threads", str(a.threads)]
    cmd += a.server_args
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.monotonic()
    deadline = started + a.deadline
    readers = []
    try:
        start_line = read_start_line(srv, timeout=30)
        if "listening on " not in start_line:
            raise RuntimeError(f"server did not start: {start_line!r}")
        host, port = start_line.split("listening on ")[1].split()[0].rsplit(":", 1)
        port = int(port)
        time.sleep(a.settle)
        at_start = proc_status(srv.pid)

        def target(i):
            room, name = f"r{base36(i // a.room_size)}", f"m{base36(i)}"
            return a.path.format(room=room, name=name) if chat else a.path

        def drain(rs):
            for r in rs:
                r.drain()

        def drain_all_expected():
            """Reads until every member has its notices, or the deadline."""
            while time.monotonic() < deadline:
                drain(readers)
                if not chat or all(r.texts >= expected(i) for i, r in enumerate(readers)):
                    return
                time.sleep(0.05)

        def expected(i):
            """Join notices member i gets: one per later member of its room (so far)."""
            room_end = min((i // a.room_size + 1) * a.room_size, len(readers))
            return room_end - 1 - i

        at_warmup = None
        for i in range(a.conns):
            if time.monotonic() > deadline:
                raise RuntimeError(f"deadline passed after {i} connections")
            sock, leftover = handshake(host, port, target(i), timeout=10)
            readers.append(Reader(sock, leftover))
            if chat and (i + 1) % a.room_size == 0:
                drain(readers[i + 1 - a.room_size:])
            if i + 1 == a.warmup:
                drain_all_expected()
                time.sleep(a.settle)
                at_warmup = proc_status(srv.pid)
        if at_warmup is None:
            at_warmup = at_start
        drain_all_expected()
        time.sleep(a.settle)
        drain_all_expected()
        after = proc_status(srv.pid)
        held = None
        if a.hold > 0:
            hold_end = min(time.monotonic() + a.hold, deadline)
            while time.monotonic() < hold_end:
                drain(readers)
                time.sleep(0.05)
            held = proc_status(srv.pid)
        elapsed = time.monotonic() - started

        measured = a.conns - a.warmup
        notices = sum(r.texts for r in readers)
        notices_expected = sum(expected(i) for i in range(len(readers))) if chat else 0
        closed = sum(r.closed for r in readers)
        result = {
            "kind": "chat" if chat else "echo",
            "path": a.path,
            "room_size": a.room_size if chat else None,
            "io": a.io,
            "pattern": a.pattern,
            "threads": a.threads,
            "server_args": a.server_args,
            "command": shlex.join(["scripts/idle-memory.py", *sys.argv[1:]]),
            "server_start_line": start_line,
            "checkout": git_head(),
            "kernel": os.uname().release,
            "conns": a.conns,
            "warmup": a.warmup,
            "rss_start_kib": at_start["VmRSS"],
            "rss_warmup_kib": at_warmup["VmRSS"],
            "rss_after_kib": after["VmRSS"],
            "anon_warmup_kib": at_warmup["RssAnon"],
            "anon_after_kib": after["RssAnon"],
            "bytes_per_conn": round((after["VmRSS"] - at_warmup["VmRSS"]) * 1024 / measured, 1),
            "anon_bytes_per_conn":
                round((after["RssAnon"] - at_warmup["RssAnon"]) * 1024 / measured, 1),
            "hold_s": a.hold,
            "rss_held_kib": held and held["VmRSS"],
            "held_bytes_per_conn":
                held and round((held["VmRSS"] - at_warmup["VmRSS"]) * 1024 / measured, 1),
            "notices_received": notices,
            "notices_expected": notices_expected,
            "pings_received": sum(r.pings for r in readers),
            "other_frames_received": sum(r.others for r in readers),
            "closed_by_server": closed,
            "correct": notices == notices_expected and closed == 0,
            "elapsed_s": round(elapsed, 1),
            "note": "RSS growth of the server process from the warmup'th to the last idle "
                    "connection, per connection; user-space memory only (socket buffers and "
                    "other kernel state are not RSS)",
        }
        print(json.dumps(result))
    finally:
        for r in readers:
            r.sock.close()
        srv.terminate()
        try:
            srv.wait(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    main()
