#!/usr/bin/env node
// Baseline for scripts/bench.sh: the course's Node `ws` chat server, speaking wschat's chat
// protocol (see the top-level README), single-threaded on libuv.
//
//   node server.js [--addr 127.0.0.1:8080] [--work-us N] [--deflate]   (port 0 picks a free port)
//
// --deflate: permessage-deflate on the same terms wschat --deflate agrees to (no context
// takeover either way, messages under 64 bytes sent plain, zlib level 6). `ws` compresses
// each send on its own, i.e. once per receiver, on libuv's zlib thread pool.
//
// Prints "listening on HOST:PORT" once bound. SIGTERM/SIGINT: close 1001 to every client, exit 0.
//
// - upgrade on / or /chat joins room "lobby"; on /chat/<room> joins <room> ([A-Za-z0-9_.-]{1,64},
//   else 400); on /echo echoes every message with its opcode; anything else 404.
// - ?name=<name> (1..32 of letters, digits, space, _ . -, no leading/trailing space, else 400);
//   default "User <client port>".
// - joining: the others get "<name> just connected"; leaving: "<name> disconnected";
//   text m: the others get "<name> says: <m>"; binary: forwarded verbatim to the others.
//   (/nick and /who are not needed by the benchmark and are not implemented.)
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

let addr = '127.0.0.1:8080';
let workUs = 0; // --work-us N: N µs of busy CPU per chat message, like wschat's --work-us
let deflate = false;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--addr' && i + 1 < args.length) addr = args[++i];
  else if (args[i].startsWith('--addr=')) addr = args[i].slice(7);
  else if (args[i] === '--work-us' && i + 1 < args.length) workUs = Number(args[++i]);
  else if (args[i] === '--deflate') deflate = true;
  else {
    console.error(`usage: node server.js [--addr HOST:PORT] [--work-us N] [--deflate]\nunknown argument: ${args[i]}`);
    process.exit(2);
  }
}
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_RE = /^[A-Za-z0-9 _.-]{1,32}$/;
const rooms = new Map(); // room name -> Set of sockets

const server = http.createServer((req, res) => {
  res.writeHead(req.method === 'GET' ? 404 : 405, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
});
// perMessageDeflate off unless --deflate, as wschat (whose terms --deflate copies).
const perMessageDeflate = deflate && {
  threshold: 64,
  serverNoContextTakeover: true,
  clientNoContextTakeover: true,
};
const wss = new WebSocketServer({ noServer: true, perMessageDeflate, maxPayload: 1 << 20 });

function reject(socket, status, reason) {
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(reason) + 1}\r\nConnection: close\r\n\r\n${reason}\n`);
}

function work() {
  if (workUs <= 0) return;
  const until = process.hrtime.bigint() + BigInt(Math.round(workUs * 1000));
  while (process.hrtime.bigint() < until) { /* synthetic CPU cost, as wschat --work-us */ }
}

function broadcast(room, from, data, isBinary) {
  for (const peer of room) {
    if (peer !== from && peer.readyState === WebSocket.OPEN) peer.send(data, { binary: isBinary });
  }
}

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  let room = null;
  if (url.pathname === '/echo') room = null;
  else if (url.pathname === '/' || url.pathname === '/chat') room = 'lobby';
  else if (url.pathname.startsWith('/chat/')) {
    room = url.pathname.slice(6);
    if (!ROOM_RE.test(room)) return reject(socket, 400, 'bad room name');
  } else return reject(socket, 404, 'not found');
  let name = url.searchParams.get('name');
  if (name === null) name = `User ${socket.remotePort}`;
  else if (!NAME_RE.test(name) || name.startsWith(' ') || name.endsWith(' ')) {
    return reject(socket, 400, 'bad name');
  }
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (room === null) {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    let members = rooms.get(room);
    if (!members) rooms.set(room, (members = new Set()));
    broadcast(members, ws, `${name} just connected`, false);
    members.add(ws);
    ws.on('message', (data, isBinary) => {
      work();
      if (isBinary) broadcast(members, ws, data, true);
      else broadcast(members, ws, `${name} says: ${data.toString()}`, false);
    });
    ws.on('close', () => {
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
      broadcast(members, ws, `${name} disconnected`, false);
    });
    ws.on('error', () => {});
  });
});

function stop() {
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(port, host, () => {
  const a = server.address();
  console.log(`listening on ${a.address}:${a.port}`);
});
