"""The chat scenario with the Python `websockets` library (asyncio client), an independent
client: it offers permessage-deflate by default, so it also checks that the server declines it.

    python client.py scenario ws://127.0.0.1:PORT     # prints PASS/FAIL per check
    python client.py shutdown ws://127.0.0.1:PORT     # prints READY, then the 1001 check

Exit status 1 if any check failed.
"""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

failures = 0


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL {name}: {detail}", flush=True)


async def recv(ws, timeout=5.0):
    return await asyncio.wait_for(ws.recv(), timeout)


async def expect(name, ws, want):
    try:
        got = await recv(ws)
    except Exception as e:  # noqa: BLE001 - a check reports whatever went wrong
        check(name, False, f"nothing received ({type(e).__name__})")
        return None
    check(name, got == want, f"got {got!r:.120}, want {want!r:.120}")
    return got


async def closed_with(ws, timeout=5.0):
    """Waits for the server's close; returns the code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        return None
    rcvd = ws.protocol.close_rcvd
    return rcvd.code if rcvd else None


async def scenario(base):
    room = "interop-py"
    a = await connect(f"{base}/chat/{room}?name=Ann", max_size=None)
    headers = a.response.headers
    offered = a.request.headers.get("Sec-WebSocket-Extensions", "")
    check("client offered permessage-deflate", "permessage-deflate" in offered, repr(offered))
    check("101 without Sec-WebSocket-Extensions (deflate offered, declined)",
          "Sec-WebSocket-Extensions" not in headers, str(headers.get("Sec-WebSocket-Extensions")))
    check("client runs uncompressed (no extension negotiated)", not a.protocol.extensions,
          repr(a.protocol.extensions))
    check("101 names the serving thread (X-Wschat-Thread)",
          headers.get("X-Wschat-Thread", "").isdigit(), repr(headers.get("X-Wschat-Thread")))

    b = await connect(f"{base}/chat/{room}?name=Bob", max_size=None)
    await expect("join notice", a, "Bob just connected")

    await b.send("hello from Bob")
    await expect("broadcast B -> A", a, "Bob says: hello from Bob")
    await a.send("héllo ✓ 🚀")
    await expect("broadcast A -> B (UTF-8)", b, "Ann says: héllo ✓ 🚀")

    big = "x" * 60000
    await a.send(big)
    await expect("60 kB text message", b, "Ann says: " + big)

    payload = bytes(range(256)) * 4
    await a.send(payload)
    await expect("binary forwarded verbatim", b, payload)

    await b.send("/nick Bea")
    await expect("/nick notice", a, "Bob is now Bea")
    await a.send("/who")
    await expect("/who reply", a, f"Members of {room}: Ann, Bea")
    await a.send("/nick  spaced ")
    got = await recv(a)
    check("/nick with a bad name gets an error reply", got.startswith("error: /nick"), repr(got))
    await a.send("/frobnicate")
    got = await recv(a)
    check("unknown command gets an error reply", got.startswith("error: unknown command /frobnicate"), repr(got))

    pong = await a.ping(b"py")
    try:
        await asyncio.wait_for(pong, 5)
        check("ping answered by pong", True)
    except Exception as e:  # noqa: BLE001
        check("ping answered by pong", False, type(e).__name__)

    async with connect(f"{base}/echo") as e:
        await e.send("echo me")
        await expect("/echo text", e, "echo me")
        await e.send(b"\x00\xff")
        await expect("/echo binary", e, b"\x00\xff")

    await b.close(1000, "bye")
    check("close 1000 answered with 1000", b.protocol.close_rcvd is not None
          and b.protocol.close_rcvd.code == 1000, repr(b.protocol.close_rcvd))
    await expect("leave notice", a, "Bea disconnected")

    c = await connect(f"{base}/chat/{room}?name=Cy")
    await expect("join notice (Cy)", a, "Cy just connected")
    await c.send(b"\xc3\x28 invalid", text=True)
    code = await closed_with(c)
    check("invalid UTF-8 text -> close 1007", code == 1007, repr(code))
    await expect("leave notice after 1007", a, "Cy disconnected")

    d = await connect(f"{base}/chat/{room}?name=Dee", max_size=None)
    await recv(a)  # Dee just connected
    await d.send("y" * 70000)
    code = await closed_with(d)
    check("message over --max-message -> close 1009", code == 1009, repr(code))
    await a.close()


async def shutdown(base):
    ws = await connect(f"{base}/chat/interop-shutdown?name=Stay")
    print("READY", flush=True)
    code = await closed_with(ws, timeout=30)
    check("server shutdown -> close 1001", code == 1001, repr(code))


if __name__ == "__main__":
    mode, base = sys.argv[1], sys.argv[2]
    try:
        asyncio.run(scenario(base) if mode == "scenario" else shutdown(base))
    except Exception as e:  # noqa: BLE001 - an exception is one more failed check
        check("scenario ran to the end", False, f"{type(e).__name__}: {e}")
    sys.exit(1 if failures else 0)
