#!/usr/bin/env node
// A small check that a chat server speaks wschat's protocol as far as the baselines share it
// (DESIGN.md "Chat protocol"): join and leave notices to the others only, "<name> says: <m>",
// binary verbatim, nothing back to the sender, rooms apart, /echo, 400/404, and (with
// --server-pid) close 1001 to every client when the server gets SIGTERM.
//
//   node scripts/baselines/check-protocol.js HOST:PORT [--server-pid PID]
//
// Uses the `ws` client installed for node-ws (cd scripts/baselines/node-ws && npm ci).
// Prints one ok/FAIL line per check; exits 1 if any failed. Bounded: 20 s at most.
'use strict';
const path = require('path');
const WebSocket = require(path.join(__dirname, 'node-ws', 'node_modules', 'ws'));
const http = require('http');
const addr = process.argv[2];
const serverPid = process.argv[3] === '--server-pid' ? Number(process.argv[4]) : null;
if (!addr) { console.error('usage: check-protocol.js HOST:PORT [--server-pid PID]'); process.exit(2); }
setTimeout(() => { console.log('FAIL timed out'); process.exit(1); }, 20000).unref();
const results = [];
function ok(name, cond, detail) { results.push(`${cond ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`); }
function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${addr}${path}`);
    ws.msgs = [];
    ws.on('message', (d, bin) => ws.msgs.push(bin ? ['bin', Buffer.from(d).toString('hex')] : ['text', d.toString()]));
    ws.on('open', () => resolve(ws));
    ws.on('unexpected-response', (req, res) => reject(new Error(`status ${res.statusCode}`)));
    ws.on('error', reject);
  });
}
function status(path, upgrade) {
  return new Promise((resolve) => {
    if (!upgrade) return http.get(`http://${addr}${path}`, (res) => { res.resume(); resolve(res.statusCode); });
    open(path).then((ws) => { ws.close(); resolve(101); }, (e) => resolve(Number(String(e.message).replace('status ', ''))));
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const a = await open('/chat/r1?name=Ann%20Lee');
  await sleep(100);
  const b = await open('/chat/r1?name=Bob');
  await sleep(100);
  const c = await open('/chat/r2?name=Cy');
  await sleep(100);
  ok('join notice to others', JSON.stringify(a.msgs) === JSON.stringify([['text', 'Bob just connected']]), JSON.stringify(a.msgs));
  ok('no join notice to self', b.msgs.length === 0, JSON.stringify(b.msgs));
  a.msgs.length = 0;
  a.send('hello');
  a.send(Buffer.from([0, 1, 2, 255]));
  await sleep(200);
  ok('text to others', JSON.stringify(b.msgs) === JSON.stringify([['text', 'Ann Lee says: hello'], ['bin', '000102ff']]), JSON.stringify(b.msgs));
  ok('nothing back to sender', a.msgs.length === 0, JSON.stringify(a.msgs));
  ok('other room untouched', c.msgs.length === 0, JSON.stringify(c.msgs));
  const e = await open('/echo');
  e.send('ping?'); e.send(Buffer.from([9, 8]));
  await sleep(100);
  ok('echo', JSON.stringify(e.msgs) === JSON.stringify([['text', 'ping?'], ['bin', '0908']]), JSON.stringify(e.msgs));
  b.close();
  await sleep(200);
  ok('disconnect notice', JSON.stringify(a.msgs) === JSON.stringify([['text', 'Bob disconnected']]), JSON.stringify(a.msgs));
  await open('/chat?name=Dee');
  ok('/chat upgrades', true);
  ok('bad room -> 400', (await status('/chat/bad!room', true)) === 400);
  ok('bad name -> 400', (await status('/chat/r1?name=%20x', true)) === 400);
  ok('other path upgrade -> 404', (await status('/nope', true)) === 404);
  ok('plain GET -> 404', (await status('/chat/r1', false)) === 404);
  const f = await open('/chat/r3?name=F');
  await sleep(100);
  await open('/chat/r3');
  await sleep(200);
  ok('default name "User <n>"', f.msgs.length === 1 && /^User \d+ just connected$/.test(f.msgs[0][1]), JSON.stringify(f.msgs));
  if (serverPid) {
    const closed = new Promise((r) => a.on('close', (code) => r(code)));
    process.kill(serverPid, 'SIGTERM');
    const code = await Promise.race([closed, sleep(3000).then(() => 'none within 3 s')]);
    ok('close code at SIGTERM', code === 1001, String(code));
  }
  console.log(results.join('\n'));
  process.exit(results.some((r) => r.startsWith('FAIL')) ? 1 : 0);
})().catch((e) => { console.log('FAIL exception', e.message); process.exit(1); });
