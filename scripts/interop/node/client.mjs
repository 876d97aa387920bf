// The chat scenario with the Node `ws` library, an independent client. Its client offers
// permessage-deflate by default, so it also checks that the server declines it.
//
//   node client.mjs scenario ws://127.0.0.1:PORT    # prints PASS/FAIL per check
//   node client.mjs shutdown ws://127.0.0.1:PORT    # prints READY, then the 1001 check
//
// Exit status 1 if any check failed.
import WebSocket from "ws";

let failures = 0;
function check(name, ok, detail = "") {
  if (ok) console.log(`PASS ${name}`);
  else { failures++; console.log(`FAIL ${name}: ${detail}`); }
}

/** A client whose messages are queued so that a check can wait for the next one. */
function open(url) {
  return new Promise((resolve, reject) => {
    const c = { inbox: [], waiters: [], closed: null, response: null, offered: null };
    // finishRequest sees the request ws built (what it offers) before sending it.
    const ws = new WebSocket(url, {
      maxPayload: 0,
      finishRequest: (req) => { c.offered = String(req.getHeader("sec-websocket-extensions") ?? ""); req.end(); },
    });
    c.ws = ws;
    ws.on("upgrade", (res) => { c.response = res; });
    ws.on("message", (data, isBinary) => {
      const m = isBinary ? Buffer.from(data) : data.toString("utf8");
      const w = c.waiters.shift();
      if (w) w(m); else c.inbox.push(m);
    });
    c.closedPromise = new Promise((r) => ws.on("close", (code, reason) => { c.closed = { code, reason: reason.toString() }; r(c.closed); }));
    ws.on("open", () => resolve(c));
    ws.on("error", reject);
  });
}
function next(c, ms = 5000) {
  if (c.inbox.length) return Promise.resolve(c.inbox.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { c.waiters.splice(c.waiters.indexOf(done), 1); reject(new Error("timeout")); }, ms);
    const done = (m) => { clearTimeout(t); resolve(m); };
    c.waiters.push(done);
  });
}
async function expect(name, c, want) {
  let got;
  try { got = await next(c); } catch (e) { check(name, false, `nothing received (${e.message})`); return; }
  const same = Buffer.isBuffer(want) ? Buffer.isBuffer(got) && want.equals(got) : got === want;
  check(name, same, `got ${String(got).slice(0, 120)}, want ${String(want).slice(0, 120)}`);
}
async function closedWith(c, ms = 5000) {
  const t = new Promise((r) => setTimeout(() => r(null), ms));
  const closed = await Promise.race([c.closedPromise, t]);
  return closed && closed.code;
}

async function scenario(base) {
  const room = "interop-node";
  const a = await open(`${base}/chat/${room}?name=Ann`);
  check("client offered permessage-deflate", a.offered.includes("permessage-deflate"), a.offered);
  const ext = a.response.headers["sec-websocket-extensions"];
  check("101 without Sec-WebSocket-Extensions (deflate offered, declined)", ext === undefined, String(ext));
  check("client runs uncompressed (no extension negotiated)", a.ws.extensions === "", JSON.stringify(a.ws.extensions));
  const thread = a.response.headers["x-wschat-thread"];
  check("101 names the serving thread (X-Wschat-Thread)", /^\d+$/.test(thread ?? ""), String(thread));

  const b = await open(`${base}/chat/${room}?name=Bob`);
  await expect("join notice", a, "Bob just connected");
  b.ws.send("hello from Bob");
  await expect("broadcast B -> A", a, "Bob says: hello from Bob");
  a.ws.send("héllo ✓ 🚀");
  await expect("broadcast A -> B (UTF-8)", b, "Ann says: héllo ✓ 🚀");
  const big = "x".repeat(60000);
  a.ws.send(big);
  await expect("60 kB text message", b, "Ann says: " + big);
  const payload = Buffer.alloc(1024, 0).map((_, i) => i & 255);
  a.ws.send(payload);
  await expect("binary forwarded verbatim", b, payload);

  b.ws.send("/nick Bea");
  await expect("/nick notice", a, "Bob is now Bea");
  a.ws.send("/who");
  await expect("/who reply", a, `Members of ${room}: Ann, Bea`);
  a.ws.send("/nick  spaced ");
  let got = await next(a).catch(() => "");
  check("/nick with a bad name gets an error reply", got.startsWith("error: /nick"), got);
  a.ws.send("/frobnicate");
  got = await next(a).catch(() => "");
  check("unknown command gets an error reply", got.startsWith("error: unknown command /frobnicate"), got);

  const pong = new Promise((r) => { a.ws.once("pong", (data) => r(data.toString())); setTimeout(() => r(null), 5000); });
  a.ws.ping("node");
  check("ping answered by pong", (await pong) === "node", "no pong with the ping's payload");

  const e = await open(`${base}/echo`);
  e.ws.send("echo me");
  await expect("/echo text", e, "echo me");
  e.ws.send(Buffer.from([0, 255]));
  await expect("/echo binary", e, Buffer.from([0, 255]));
  e.ws.close(1000);

  b.ws.close(1000, "bye");
  const bClose = await closedWith(b);
  check("close 1000 answered with 1000", bClose === 1000, String(bClose));
  await expect("leave notice", a, "Bea disconnected");

  const c = await open(`${base}/chat/${room}?name=Cy`);
  await expect("join notice (Cy)", a, "Cy just connected");
  c.ws.send(Buffer.from([0xc3, 0x28, 0x20, 0x69]), { binary: false });
  const cClose = await closedWith(c);
  check("invalid UTF-8 text -> close 1007", cClose === 1007, String(cClose));
  await expect("leave notice after 1007", a, "Cy disconnected");

  const d = await open(`${base}/chat/${room}?name=Dee`);
  await next(a).catch(() => ""); // Dee just connected
  d.ws.send("y".repeat(70000));
  const dClose = await closedWith(d);
  check("message over --max-message -> close 1009", dClose === 1009, String(dClose));
  a.ws.close(1000);
  await closedWith(a);
}

async function shutdown(base) {
  const c = await open(`${base}/chat/interop-shutdown?name=Stay`);
  console.log("READY");
  const code = await closedWith(c, 30000);
  check("server shutdown -> close 1001", code === 1001, String(code));
}

const [mode, base] = process.argv.slice(2);
try {
  await (mode === "scenario" ? scenario(base) : shutdown(base));
} catch (e) {
  check("scenario ran to the end", false, e.message);
}
process.exit(failures ? 1 : 0);
