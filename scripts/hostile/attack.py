#!/usr/bin/env python3
"""Hostile clients for scripts/hostile.sh (Python 3 stdlib only: raw sockets, our own
masking, zlib with wbits=-15 for permessage-deflate, ssl for the TLS attack).

    attack.py run ATTACK --addr HOST:PORT --pid PID --out FILE [--quick] [--tls]
    attack.py report DIR

`run` attacks one running server (scripts/hostile.sh starts a fresh one per attack),
samples its RSS from /proc/PID/status every 50 ms, reads GET /stats before and after, checks
that an ordinary client (on the attacker's loop where the server says which loop that is)
is still served, and writes one JSON file. `report` turns a directory of them into
README.md. Every loop is bounded by a count and a time; nothing leaves loopback.

The verdict ("held") is the hardened server's specification: the attacker closed with
1008 and counted (flood_closes, slow_consumer_kicks or message_timeouts), over-capacity
TLS clients refused before any handshake, a mass disconnect fully accounted for, the RSS
peak within 64 MiB of its level before the attack, and the ordinary client served.
"""
import argparse, datetime, json, os, platform, select, socket, ssl, struct, subprocess, sys
import threading, time, zlib

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSS_SLACK_KIB = 64 * 1024
# The attacks stop feeding a server whose RSS grew this much (the machine comes first).
RSS_SAFETY_KIB = 2 * 1024 * 1024
COUNTERS = ["flood_closes", "slow_consumer_kicks", "message_timeouts", "idle_closes",
            "rejected_over_capacity", "tls_errors", "members", "active"]


# --------------------------------------------------------------------------- wire

def mask(payload, key):
    """XOR with the 4-byte key, as one big integer (fast for megabytes)."""
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv1=False):
    """A client frame, masked with a fresh random key."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + mask(payload, key)


def close_code(payload):
    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


def deflate_bomb(size):
    """Raw deflate (wbits=-15) of `size` zero bytes, sync-flushed, its 00 00 ff ff removed
    (RFC 7692 7.2.1)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(b"\0" * size) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Reader:
    """Buffered reader of server frames on one socket."""

    def __init__(self, sock):
        self.sock, self.buf, self.bytes, self.frames = sock, bytearray(), 0, 0

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < at + n:
            return None
        f = (b[0] & 0x0F, bytes(b[at:at + n]))
        del b[:at + n]
        self.frames += 1
        return f

    def next(self, deadline):
        """The next frame, or raises TimeoutError / ConnectionError."""
        while True:
            f = self._parse()
            if f:
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(1 << 18)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError as e:
                raise ConnectionError(str(e)) from e
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk
            self.bytes += len(chunk)

    def until_close(self, timeout, on_frame=None):
        """Skips frames until a Close: {'close': code or None, 'ended': why or None}."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                op, payload = self.next(deadline)
                if op == OP_CLOSE:
                    return {"close": close_code(payload), "ended": None}
                if on_frame:
                    on_frame(op, payload)
        except TimeoutError:
            return {"close": None, "ended": f"no Close within {timeout:g} s"}
        except ConnectionError as e:
            return {"close": None, "ended": str(e)}


class Target:
    def __init__(self, addr, pid, tls):
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.pid, self.tls = host, int(port), pid, tls
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE  # --tls-self-signed

    def tcp(self, timeout=10):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def connect(self, timeout=10):
        s = self.tcp(timeout)
        return self.ctx.wrap_socket(s) if self.tls else s

    def stats(self):
        """/stats totals, or None (busy, over capacity, or gone)."""
        try:
            s = self.connect(5)
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            return json.loads(body)["totals"] if head.startswith(b"HTTP/1.1 200") else None
        except (OSError, ValueError):
            return None

    def ws(self, path, headers=b""):
        """A raw upgrade that must succeed: (socket, {lower-case header: value})."""
        s = self.connect()
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY +
                  b"\r\nSec-WebSocket-Version: 13\r\n" + headers + b"\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            c = s.recv(1)
            if not c:
                raise ConnectionError(f"EOF in the handshake of {path}: {head[:80]!r}")
            head += c
        lines = head.decode(errors="replace").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise ConnectionError(f"{path}: {lines[0]}")
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        return s, hdrs

    def ws_on_thread(self, path, thread, tries=64):
        """A client of `path` on server thread `thread` (None: anywhere)."""
        for _ in range(tries):
            s, h = self.ws(path)
            if thread is None or h.get("x-wschat-thread") == thread:
                return s, h
            s.close()
        raise RuntimeError(f"{tries} clients of {path}, none on thread {thread}")


def served(sock, reader, text=b"still served?", timeout=20):
    """The ordinary client's echo arrives within `timeout` (a liveness bound)."""
    try:
        sock.sendall(frame(OP_TEXT, text))
        deadline = time.monotonic() + timeout
        while True:
            op, payload = reader.next(deadline)
            if op == OP_TEXT:
                return payload == text
            if op == OP_CLOSE:
                return False
    except (OSError, TimeoutError, ConnectionError):
        return False


class Rss(threading.Thread):
    """Samples VmRSS every 50 ms: before (at start), peak, after (at stop)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.halt = pid, threading.Event()
        self.before = self.peak = self.read() or 0
        self.after = None
        self.samples = 0
        self.start()

    def read(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None

    def run(self):
        while True:
            kib = self.read()
            if kib is None:
                return
            self.peak = max(self.peak, kib)
            self.samples += 1
            if self.halt.wait(0.05):
                return

    def over(self, slack):
        return self.peak > self.before + slack

    def stop(self):
        self.halt.set()
        self.join()
        self.after = self.read() or 0
        self.peak = max(self.peak, self.after)
        return {"rss_before_kib": self.before, "rss_peak_kib": self.peak,
                "rss_after_kib": self.after, "rss_samples": self.samples}


def delta(before, after, name):
    if not before or not after or name not in after or name not in before:
        return None
    return after[name] - before[name]


def told(target, names):
    t = target.stats()
    return bool(t) and any(t.get(n, 0) >= 1 for n in names)


def long_name(prefix, i):
    return f"{prefix}{i:05d}".ljust(32, "x")


def crowd(target, room, n, name, threads=8):
    """`n` members of `room` that never read, joined by `threads` threads."""
    out, errors = [None] * n, []

    def work(w):
        for i in range(w, n, threads):
            try:
                out[i] = target.ws(f"/chat/{room}?name={name(i)}")[0]
            except (OSError, ConnectionError) as e:
                errors.append(str(e))

    ts = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} crowd members failed to join: {errors[0]}")
    return out


def wait_members(target, n, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        t = target.stats()
        last = t and t.get("members")
        if last == n:
            return last
        time.sleep(0.1)
    return last


# --------------------------------------------------------------------------- attacks

def flood(sock, chunk, budget, time_limit, rss, stop):
    """Writes `chunk` until the budget, the time limit, a stalled (2 s) or failed write,
    the RSS safety cap, or stop(); returns (bytes sent, why it stopped)."""
    sock.settimeout(2)
    sent, t0, last_poll = 0, time.monotonic(), 0.0
    while True:
        if sent >= budget:
            return sent, "budget"
        if time.monotonic() - t0 > time_limit:
            return sent, "time"
        if rss.over(RSS_SAFETY_KIB):
            return sent, "rss safety cap"
        if time.monotonic() - last_poll > 0.1:
            last_poll = time.monotonic()
            if stop():
                return sent, "server closed us"
        try:
            sock.sendall(chunk)
        except socket.timeout:
            return sent, "writes blocked"
        except OSError as e:
            return sent, f"write failed ({e.strerror or e})"
        sent += len(chunk)


def attack_pong_flood(t, quick):
    """A: pings whose pongs are never read: past both socket buffers into the outbox."""
    budget = (30 if quick else 300) << 20
    att, h = t.ws("/echo")
    ordinary, _ = t.ws_on_thread("/echo", h.get("x-wschat-thread"))
    chunk = frame(OP_PING, b"p" * 125) * 1024
    s0 = t.stats()
    rss = Rss(t.pid)
    sent, why = flood(att, chunk, budget, 60, rss,
                      lambda: told(t, ["flood_closes", "slow_consumer_kicks"]))
    end = Reader(att).until_close(15)
    ok = served(ordinary, Reader(ordinary))
    r = rss.stop()
    s1 = t.stats()
    kicked = (delta(s0, s1, "flood_closes") or 0) + (delta(s0, s1, "slow_consumer_kicks") or 0)
    did = (f"closed the non-reader with {end['close']} after {sent >> 20} MiB of pings"
           if end["close"] else
           f"took {sent >> 20} MiB of pings (stopped: {why}) and never sent a Close ({end['ended']})")
    return {"title": f"{budget >> 20} MiB of pings from a client that never reads its pongs",
            "params": {"ping_bytes": budget, "ping_payload": 125}, "sent_bytes": sent,
            "stopped_by": why, "close_code": end["close"], "served": ok, "did": did,
            "held_checks": {"close 1008": end["close"] == 1008,
                            "flood_closes or slow_consumer_kicks counted": kicked >= 1},
            **r}, s0, s1


def attack_ping_flood(t, quick):
    """B: writes of 1,000 pings each from a client that reads its pongs."""
    writes = 100 if quick else 2000
    att, h = t.ws("/echo")
    ordinary, _ = t.ws_on_thread("/echo", h.get("x-wschat-thread"))
    chunk = frame(OP_PING, b"p") * 1000
    seen = {"pongs": 0, "end": None}

    def read():
        seen["end"] = Reader(att).until_close(
            120, lambda op, _: seen.__setitem__("pongs", seen["pongs"] + (op == OP_PONG)))

    reader = threading.Thread(target=read, daemon=True)
    s0 = t.stats()
    rss = Rss(t.pid)
    reader.start()
    sent, why = flood(att, chunk, writes * len(chunk), 60, rss, lambda: seen["end"] is not None)
    reader.join(15)
    end = seen["end"] or {"close": None, "ended": "no Close within 15 s"}
    ok = served(ordinary, Reader(ordinary))
    r = rss.stop()
    s1 = t.stats()
    n = sent // len(chunk)
    did = (f"closed the pinger with {end['close']} after {n} writes of 1,000 pings "
           f"({seen['pongs']} pongs)" if end["close"] else
           f"answered {seen['pongs']} pongs to {n} writes of 1,000 pings (stopped: {why}), no Close")
    return {"title": f"{writes:,} writes of 1,000 pings each from a client that reads",
            "params": {"writes": writes, "pings_per_write": 1000}, "sent_bytes": sent,
            "stopped_by": why, "close_code": end["close"], "pongs": seen["pongs"],
            "served": ok, "did": did,
            "held_checks": {"close 1008": end["close"] == 1008,
                            "flood_closes counted": (delta(s0, s1, "flood_closes") or 0) >= 1},
            **r}, s0, s1


def attack_who_flood(t, quick):
    """C + H: one write of thousands of /who in a room of hundreds of 32-character names,
    then a chat line that must never reach the room."""
    members, whos = (200, 2000) if quick else (500, 6000)
    room = "whoroom"
    base = 0  # a fresh server
    silent = crowd(t, room, members, lambda i: long_name("c", i))
    att, h = t.ws(f"/chat/{room}?name=whoflood")
    thread = h.get("x-wschat-thread")
    witness, _ = t.ws_on_thread(f"/chat/{room}?name=witness", thread)
    ordinary, _ = t.ws_on_thread("/echo", thread)
    wait_members(t, base + members + 2, 30)
    s0 = t.stats()
    rss = Rss(t.pid)
    att.sendall(frame(OP_TEXT, b"/who") * whos + frame(OP_TEXT, b"after the flood"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not rss.over(RSS_SAFETY_KIB):
        if told(t, ["flood_closes", "slow_consumer_kicks"]):
            break
        time.sleep(0.1)
    replies = {"n": 0}
    end = Reader(att).until_close(
        30, lambda op, _: replies.__setitem__("n", replies["n"] + (op == OP_TEXT)))
    heard, wr = None, Reader(witness)
    wdeadline = time.monotonic() + 20
    try:
        while heard is None:
            op, payload = wr.next(wdeadline)
            text = payload.decode(errors="replace") if op == OP_TEXT else ""
            if text == "whoflood disconnected" or text.startswith("whoflood says:"):
                heard = text
    except (TimeoutError, ConnectionError) as e:
        heard = f"(nothing: {e})"
    ok = served(ordinary, Reader(ordinary))
    r = rss.stop()
    s1 = t.stats()
    for s in silent:
        s.close()
    did = (f"closed the flooder with {end['close']} after {replies['n']} replies; the room heard "
           f"{heard!r}" if end["close"] else
           f"sent {replies['n']} replies and no Close ({end['ended']}); the room heard {heard!r}")
    return {"title": f"one write of {whos:,} /who in a room of {members} 32-character names",
            "params": {"members": members, "name_len": 32, "who_frames": whos},
            "close_code": end["close"], "replies_read": replies["n"], "room_heard": heard,
            "served": ok, "did": did,
            "held_checks": {"close 1008": end["close"] == 1008,
                            "flood_closes counted": (delta(s0, s1, "flood_closes") or 0) >= 1,
                            "rest of the input dropped": heard == "whoflood disconnected"},
            **r}, s0, s1


def attack_deflate_bombs(t, quick):
    """D: compressed frames of 1 KB that each inflate to 1 MiB (--max-message)."""
    bombs = 256 if quick else 4096
    att, h = t.ws("/echo", b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    if "permessage-deflate" not in h.get("sec-websocket-extensions", ""):
        raise RuntimeError("the server did not agree to permessage-deflate (--deflate?)")
    ordinary, _ = t.ws_on_thread("/echo", h.get("x-wschat-thread"))
    bomb = frame(OP_BINARY, deflate_bomb(1 << 20), rsv1=True)
    chunk = bomb * 16
    seen = {"echoes": 0, "end": None}

    def read():
        seen["end"] = Reader(att).until_close(
            300, lambda op, _: seen.__setitem__("echoes", seen["echoes"] + 1))

    reader = threading.Thread(target=read, daemon=True)
    s0 = t.stats()
    rss = Rss(t.pid)
    reader.start()
    sent, why = flood(att, chunk, bombs * len(bomb), 60, rss, lambda: seen["end"] is not None)
    reader.join(15)
    end = seen["end"] or {"close": None, "ended": "no Close within 15 s"}
    ok = served(ordinary, Reader(ordinary))
    r = rss.stop()
    s1 = t.stats()
    n = sent // len(bomb)
    did = (f"closed the bomber with {end['close']} after {n} bombs sent "
           f"({seen['echoes']} echoes)" if end["close"] else
           f"inflated {seen['echoes']} of {n} bombs (1 MiB each), no Close (stopped: {why})")
    return {"title": f"{bombs:,} deflate frames of {len(bomb):,} bytes, each inflating to 1 MiB",
            "params": {"bombs": bombs, "bomb_wire_bytes": len(bomb), "inflates_to": 1 << 20},
            "sent_bytes": sent, "stopped_by": why, "close_code": end["close"],
            "echoes": seen["echoes"], "served": ok, "did": did,
            "held_checks": {"close 1008": end["close"] == 1008,
                            "flood_closes counted": (delta(s0, s1, "flood_closes") or 0) >= 1},
            **r}, s0, s1


def attack_endless_message(t, quick, idle):
    """E: many connections each start a message and trickle fragments, never the FIN."""
    conns = 10 if quick else 100
    atts = [t.ws("/echo")[0] for _ in range(conns)]
    ordinary, _ = t.ws_on_thread("/echo", None)
    oreader = Reader(ordinary)
    readers = [Reader(a) for a in atts]
    s0 = t.stats()
    rss = Rss(t.pid)
    t0 = time.monotonic()
    for a in atts:
        a.sendall(frame(OP_TEXT, b"begin", fin=False))
    closes, when, alive = {}, [], set(range(conns))
    # A ping with every fragment: complete frames are activity, so only the message's own
    # deadline (not the idle timeout's 1001) can end it.
    piece = frame(OP_PING, b"alive") + frame(OP_CONT, b"x" * 16, fin=False)
    all_served = True
    while alive and time.monotonic() - t0 < 10 * idle:
        for i in list(alive):
            try:
                atts[i].sendall(piece)
            except OSError:
                pass  # closed: what it read before says how
        readable, _, _ = select.select([atts[i] for i in alive], [], [], 0)
        for sock in readable:
            i = atts.index(sock)
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = None
            if not chunk:
                how = "EOF" if chunk == b"" else "reset"
                closes[how] = closes.get(how, 0) + 1
                alive.discard(i)
                continue
            readers[i].buf += chunk
            while (f := readers[i]._parse()) is not None:
                if f[0] == OP_CLOSE:
                    code = str(close_code(f[1]))
                    closes[code] = closes.get(code, 0) + 1
                    when.append(time.monotonic() - t0)
                    alive.discard(i)
                    break
        all_served &= served(ordinary, oreader)
        time.sleep(0.1)  # pacing of the trickle, not synchronization
    r = rss.stop()
    s1 = t.stats()
    when.sort()
    median = when[len(when) // 2] if when else None
    did = (f"closed {conns - len(alive)} of {conns} endless messages {closes}"
           + (f", median {median:.1f} s after they began" if median else "")
           + (f"; {len(alive)} still open after {10 * idle:.0f} s" if alive else ""))
    return {"title": f"{conns} messages whose fragments keep coming and FIN never does "
                     f"(--idle-timeout {idle:g}s)",
            "params": {"connections": conns, "idle_timeout_s": idle, "fragment_bytes": 16,
                       "fragment_every_s": 0.1},
            "closes": closes, "median_close_s": median, "still_open": len(alive),
            "close_code": 1008 if closes == {"1008": conns} else None,
            "served": all_served, "did": did,
            "held_checks": {"all closed 1008": closes == {"1008": conns},
                            "message_timeouts counted":
                                (delta(s0, s1, "message_timeouts") or 0) >= conns},
            **r}, s0, s1


def attack_tls_over_capacity(t, quick, holders):
    """F: TLS clients beyond --max-conns must not get a handshake."""
    n = 200 if quick else 2000
    held = [t.ws("/echo") for _ in range(holders)]
    s0 = None  # /stats would be over capacity now; counters are read after
    rss = Rss(t.pid)
    outcomes = {"handshaken": 0, "refused": 0, "silent": 0}
    kept = []
    for _ in range(n):
        try:
            raw = t.tcp(10)
        except OSError:
            outcomes["refused"] += 1
            continue
        s = t.ctx.wrap_socket(raw, do_handshake_on_connect=False)
        try:
            s.do_handshake()
            outcomes["handshaken"] += 1
        except socket.timeout:
            outcomes["silent"] += 1
        except (ssl.SSLError, OSError):
            outcomes["refused"] += 1
        kept.append(s)
    ok = all(served(s, Reader(s)) for s, _ in held)
    r = rss.stop()
    for s in kept:
        s.close()
    for s, _ in held:
        s.close()
    s1 = None
    for _ in range(50):
        s1 = t.stats()
        if s1:
            break
        time.sleep(0.1)
    did = (f"of {n} TLS clients over --max-conns {holders}: {outcomes['handshaken']} handshaken, "
           f"{outcomes['refused']} refused (EOF/reset), {outcomes['silent']} left without answer")
    return {"title": f"{n:,} TLS handshakes beyond --max-conns {holders}",
            "params": {"attackers": n, "max_conns": holders}, "outcomes": outcomes,
            "close_code": None, "served": ok, "did": did,
            "held_checks": {"no handshake over capacity": outcomes["handshaken"] == 0,
                            "every client refused": outcomes["refused"] == n},
            **r}, s0, s1


def attack_mass_disconnect(t, quick):
    """G: a big room whose members all close at once."""
    n = 300 if quick else 2000
    room = "exodus"
    witness, _ = t.ws(f"/chat/{room}?name=witness")
    wr = Reader(witness)
    # The witness; /stats may not count a join of a moment ago yet (each loop publishes its
    # counters at the end of an iteration), so the count is known, not read.
    base = 1
    silent = crowd(t, room, n, lambda i: f"g{i}")
    wait_members(t, base + n, 60)
    joins, deadline = 0, time.monotonic() + 60
    while joins < n:
        op, payload = wr.next(deadline)
        joins += op == OP_TEXT and payload.endswith(b" just connected")
    ordinary, _ = t.ws_on_thread("/echo", None)
    s0 = t.stats()
    rss = Rss(t.pid)
    t0 = time.monotonic()
    for s in silent:
        s.close()
    left, deadline = set(), time.monotonic() + 120
    try:
        while len(left) < n:
            op, payload = wr.next(deadline)
            if op == OP_TEXT and payload.endswith(b" disconnected"):
                left.add(payload)
    except (TimeoutError, ConnectionError):
        pass
    heard_s = time.monotonic() - t0
    members = wait_members(t, base, 120)
    ok = served(ordinary, Reader(ordinary))
    r = rss.stop()
    s1 = t.stats()
    did = (f"{len(left)} of {n} leave notices heard in {heard_s:.2f} s; members back to "
           f"{members} (was {base})")
    return {"title": f"{n:,} members of one room close at once",
            "params": {"members": n}, "leave_notices": len(left), "notices_s": heard_s,
            "members_after": members, "members_before": base, "close_code": None,
            "served": ok, "did": did,
            "held_checks": {"every leave heard": len(left) == n,
                            "members counter restored": members == base},
            **r}, s0, s1


# Each attack and the letter of the hardening spec it checks.
ATTACKS = {
    "pong-flood": "A", "ping-flood": "B", "who-flood": "C", "deflate-bombs": "D",
    "endless-message": "E", "tls-over-capacity": "F", "mass-disconnect": "G",
}


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run(a):
    t = Target(a.addr, a.pid, a.tls)
    t0 = time.monotonic()
    if a.attack == "pong-flood":
        res, s0, s1 = attack_pong_flood(t, a.quick)
    elif a.attack == "ping-flood":
        res, s0, s1 = attack_ping_flood(t, a.quick)
    elif a.attack == "who-flood":
        res, s0, s1 = attack_who_flood(t, a.quick)
    elif a.attack == "deflate-bombs":
        res, s0, s1 = attack_deflate_bombs(t, a.quick)
    elif a.attack == "endless-message":
        res, s0, s1 = attack_endless_message(t, a.quick, a.idle_timeout)
    elif a.attack == "tls-over-capacity":
        res, s0, s1 = attack_tls_over_capacity(t, a.quick, a.max_conns)
    elif a.attack == "mass-disconnect":
        res, s0, s1 = attack_mass_disconnect(t, a.quick)
    else:
        sys.exit(f"unknown attack {a.attack}")
    checks = dict(res.pop("held_checks"))
    checks["rss peak within 64 MiB"] = res["rss_peak_kib"] <= res["rss_before_kib"] + RSS_SLACK_KIB
    checks["ordinary client served"] = bool(res["served"])
    out = {
        "attack": a.attack, "spec": ATTACKS[a.attack], "quick": a.quick,
        "pattern": a.pattern, "io": a.io, "server_args": a.server_args.strip(),
        **res,
        "counters_before": {k: (s0 or {}).get(k) for k in COUNTERS} if s0 else None,
        "counters_after": {k: (s1 or {}).get(k) for k in COUNTERS} if s1 else None,
        "checks": checks, "held": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 2),
        "commit": a.commit or git("rev-parse", "--short", "HEAD"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    mib = lambda k: out[k] / 1024
    print(f"  {a.attack}: {out['did']}")
    print(f"  rss {mib('rss_before_kib'):.1f} / {mib('rss_peak_kib'):.1f} / "
          f"{mib('rss_after_kib'):.1f} MiB (before / peak / after); ordinary client "
          f"{'served' if out['served'] else 'NOT served'}; "
          f"{'held' if out['held'] else 'did not hold: ' + ', '.join(k for k, v in checks.items() if not v)}")


def report(a):
    runs = []
    for name in sorted(os.listdir(a.dir)):
        if name.endswith(".json"):
            with open(os.path.join(a.dir, name)) as f:
                runs.append(json.load(f))
    runs.sort(key=lambda r: (r["pattern"], r["io"], r["spec"]))
    if not runs:
        sys.exit(f"no results in {a.dir}")
    first = runs[0]
    lines = [
        "# Hostile clients",
        "",
        f"Date {first['date'][:10]} (UTC), commit `{first['commit']}`, kernel "
        f"{first['machine']['kernel']}, {first['machine']['cpus']} CPUs, release build, "
        f"loopback. {'Quick' if first['quick'] else 'Full'} run: "
        f"`scripts/hostile.sh{' --quick' if first['quick'] else ''}`.",
        "",
        "Each attack ran against a fresh server. RSS is VmRSS sampled every 50 ms from just "
        "before the attack to its end. *Held* means the hardened behaviour: the attacker cut "
        "with 1008 and counted (or refused before TLS, or every departure accounted for), RSS "
        "within 64 MiB of its level before the attack, and an ordinary client on the "
        "attacker's loop served. Raw data: the JSON files beside this one.",
        "",
        "| attack | pattern / io | what the server did | RSS before / peak / after (MiB) | "
        "ordinary client | held |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        m = lambda k: f"{r[k] / 1024:.1f}"
        failed = [k for k, v in r["checks"].items() if not v]
        lines.append(
            f"| {r['spec']}: {r['title']} | {r['pattern']} / {r['io']} | {r['did']} | "
            f"{m('rss_before_kib')} / {m('rss_peak_kib')} / {m('rss_after_kib')} | "
            f"{'served' if r['served'] else 'NOT served'} | "
            f"{'yes' if r['held'] else 'no: ' + '; '.join(failed)} |")
    lines.append("")
    with open(os.path.join(a.dir, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("attack", choices=sorted(ATTACKS))
    r.add_argument("--addr", required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--tls", action="store_true")
    r.add_argument("--pattern", default="single-thread")
    r.add_argument("--io", default="epoll")
    r.add_argument("--server-args", default="")
    r.add_argument("--commit")
    r.add_argument("--idle-timeout", type=float, default=2.0)
    r.add_argument("--max-conns", type=int, default=8)
    p = sub.add_parser("report")
    p.add_argument("dir")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    main()
