#!/usr/bin/env python3
"""Connection churn for scripts/soak.sh: N short-lived clients, each doing a WebSocket
handshake on /echo, a few messages whose echoes it checks, and a clean close; spread over
several source addresses (127.0.0.1..k) so the 28k ephemeral ports of one pair never run out.
Bounded by --conns and --time-limit. Prints one JSON line with exact accounting.
Every 10th client joins a chat room instead (join, one line, leave) to churn the chat paths.
"""
import argparse, json, os, socket, struct, sys, time

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

def frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("eof")
        buf += chunk
    return buf

def read_frame(s):
    b0, b1 = read_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", read_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", read_exact(s, 8))[0]
    return b0 & 0x0F, read_exact(s, n)

def handshake(s, path):
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("eof in handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--conns", type=int, default=100000)
    ap.add_argument("--messages", type=int, default=3)
    ap.add_argument("--source-ips", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=600)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    counts = dict(opened=0, failed=0, sent=0, echoed=0, mismatched=0, chat_joins=0, close_codes={})
    errors = {}
    start = time.monotonic()
    for i in range(a.conns):
        if time.monotonic() - start > a.time_limit:
            break
        src = f"127.0.0.{1 + i % a.source_ips}"
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.bind((src, 0))
            s.connect((host, port))
            chat = i % 10 == 9
            handshake(s, f"/chat/churn-{i % 7}?name=c{i}" if chat else "/echo")
            counts["opened"] += 1
            if chat:
                counts["chat_joins"] += 1
                s.sendall(frame(0x1, b"passing through"))
                counts["sent"] += 1
            else:
                for m in range(a.messages):
                    payload = f"{i}:{m}".encode()
                    s.sendall(frame(0x1, payload))
                    counts["sent"] += 1
                    while True:
                        op, data = read_frame(s)
                        if op == 0x1:
                            break
                    if data == payload:
                        counts["echoed"] += 1
                    else:
                        counts["mismatched"] += 1
            s.sendall(frame(0x8, struct.pack(">H", 1000)))
            while True:  # until the server's Close (chat notices may come first)
                op, data = read_frame(s)
                if op == 0x8:
                    code = str(struct.unpack(">H", data[:2])[0]) if len(data) >= 2 else "none"
                    counts["close_codes"][code] = counts["close_codes"].get(code, 0) + 1
                    break
            s.close()
        except (OSError, ConnectionError) as e:
            counts["failed"] += 1
            key = type(e).__name__ + ": " + str(e)[:60]
            errors[key] = errors.get(key, 0) + 1
            try:
                s.close()
            except OSError:
                pass
    counts["seconds"] = round(time.monotonic() - start, 1)
    counts["errors"] = errors
    print(json.dumps(counts))

if __name__ == "__main__":
    main()
