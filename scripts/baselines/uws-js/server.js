#!/usr/bin/env node
// Baseline for scripts/bench.sh: uWebSockets.js (the native uWS addon shipped in the npm
// package @trufflesuite/uws-js-unofficial) speaking wschat's chat protocol as node-ws does,
// single-threaded on uWS's own epoll loop (uSockets) inside Node.
//
//   node server.js [--addr 127.0.0.1:8080] [--work-us N]      (port 0 picks a free port)
//
// The package's entry point (src/uws.js) silently falls back to a pure-JS emulation on top
// of `ws` when the addon does not load; a baseline that is secretly `ws` would be worse than
// none, so this file loads binaries/uws_<platform>_<arch>_<ABI>.node itself, prints which
// one it loaded, and exits 1 if it cannot.
//
// Prints "listening on HOST:PORT" once bound. SIGTERM/SIGINT: close 1001 to every client, exit 0.
//
// - upgrade on / or /chat joins room "lobby"; on /chat/<room> joins <room> ([A-Za-z0-9_.-]{1,64},
//   else 400); on /echo echoes every message with its opcode; anything else 404.
// - ?name=<name> (1..32 of letters, digits, space, _ . -, no leading/trailing space, else 400);
//   default "User <n>", n counting connections (uWS does not expose the client's port).
// - joining: the others get "<name> just connected"; leaving: "<name> disconnected";
//   text m: the others get "<name> says: <m>"; binary: forwarded verbatim to the others.
//   (/nick and /who are not implemented, as in node-ws.)
// Rooms are uWS topics: each member subscribes to its room, and a message is published with
// ws.publish, which reaches every subscriber but the publishing socket. uWS builds the frame
// once per publish and queues it to the subscribers, writing each socket's queue once per
// loop iteration. See README.md for what differs from wschat and node-ws.
'use strict';

const fs = require('fs');
const path = require('path');

const PKG = '@trufflesuite/uws-js-unofficial';

function loadNative() {
  let dir;
  try {
    dir = path.dirname(require.resolve(`${PKG}/package.json`));
  } catch (e) {
    fatal(`${PKG} is not installed (run npm ci in ${__dirname}): ${e.message}`);
  }
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  const file = path.join(dir, 'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  if (!fs.existsSync(file)) {
    const have = fs.readdirSync(path.join(dir, 'binaries')).join(', ');
    fatal(`no native uWS addon for this Node (${process.version}, ABI ${process.versions.modules}, ` +
      `${process.platform}-${process.arch}): ${file} does not exist; the package ships: ${have}`);
  }
  let uws;
  try {
    uws = require(file);
  } catch (e) {
    fatal(`loading ${file} failed: ${e.message}`);
  }
  if (typeof uws.App !== 'function' || typeof uws.us_socket_local_port !== 'function') {
    fatal(`${file} loaded but does not look like uWebSockets.js (no App / us_socket_local_port)`);
  }
  console.error(`uws-js baseline: native addon ${file} (${PKG} ${version}, node ${process.version})`);
  return uws;
}

function fatal(msg) {
  console.error(`uws-js baseline: FATAL: ${msg}`);
  process.exit(1);
}

let addr = '127.0.0.1:8080';
let workUs = 0; // --work-us N: N µs of busy CPU per chat message, like wschat's --work-us
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--addr' && i + 1 < args.length) addr = args[++i];
  else if (args[i].startsWith('--addr=')) addr = args[i].slice(7);
  else if (args[i] === '--work-us' && i + 1 < args.length) workUs = Number(args[++i]);
  else {
    console.error(`usage: node server.js [--addr HOST:PORT] [--work-us N]\nunknown argument: ${args[i]}`);
    process.exit(2);
  }
}
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));

const uWS = loadNative();

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_RE = /^[A-Za-z0-9 _.-]{1,32}$/;
const sockets = new Set(); // every open WebSocket, for the close 1001 at shutdown
let connected = 0;

function work() {
  if (workUs <= 0) return;
  const until = process.hrtime.bigint() + BigInt(Math.round(workUs * 1000));
  while (process.hrtime.bigint() < until) { /* synthetic CPU cost, as wschat --work-us */ }
}

function reject(res, status, reason) {
  res.writeStatus(status).writeHeader('Content-Type', 'text/plain').end(`${reason}\n`);
}

const app = uWS.App();

app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20, // as node-ws's maxPayload
  // A receiver may have 4 MiB unsent (wschat's --max-outbound default); beyond that uWS
  // closes it instead of skipping the messages it cannot take (its default is to skip).
  maxBackpressure: 4 << 20,
  closeOnBackpressureLimit: true,
  idleTimeout: 0, // node-ws has none either; bench-client runs are bounded by themselves
  sendPingsAutomatically: false,

  upgrade: (res, req, context) => {
    // Everything from req must be read before returning (uWS reuses it).
    const url = req.getUrl();
    const query = req.getQuery() || '';
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    let room = null;
    if (url === '/echo') room = null;
    else if (url === '/' || url === '/chat') room = 'lobby';
    else if (url.startsWith('/chat/')) {
      room = url.slice(6);
      if (!ROOM_RE.test(room)) return reject(res, '400 Bad Request', 'bad room name');
    } else return reject(res, '404 Not Found', 'not found');
    // The same decoding as node-ws (WHATWG URLSearchParams: %XX and + as space).
    let name = new URLSearchParams(query).get('name');
    connected += 1;
    if (name === null) name = `User ${connected}`;
    else if (!NAME_RE.test(name) || name.startsWith(' ') || name.endsWith(' ')) {
      return reject(res, '400 Bad Request', 'bad name');
    }
    res.upgrade({ room, name }, key, protocol, extensions, context);
  },

  open: (ws) => {
    sockets.add(ws);
    const { room, name } = ws.getUserData();
    if (room === null) return;
    // A socket publishes only to topics it is subscribed to; ws.publish skips the sender.
    ws.subscribe(room);
    ws.publish(room, `${name} just connected`, false);
  },

  message: (ws, message, isBinary) => {
    const { room, name } = ws.getUserData();
    if (room === null) {
      ws.send(message, isBinary);
      return;
    }
    work();
    if (isBinary) ws.publish(room, message, true);
    // uWS has validated the UTF-8 of a text message; the ArrayBuffer is only valid until we return.
    else ws.publish(room, `${name} says: ${Buffer.from(message).toString('utf8')}`, false);
  },

  close: (ws) => {
    sockets.delete(ws);
    const { room, name } = ws.getUserData();
    // The socket may no longer be used here; uWS unsubscribes it as the handler returns,
    // before the publish is delivered, so app.publish does not reach it.
    if (room !== null) app.publish(room, `${name} disconnected`, false);
  },
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').writeHeader('Content-Type', 'text/plain').end('not found\n');
});

let listenSocket = null;
function stop() {
  for (const ws of [...sockets]) ws.end(1001, 'server shutting down');
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  listenSocket = null;
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

app.listen(host, port, (token) => {
  if (!token) fatal(`cannot listen on ${addr}`);
  listenSocket = token;
  console.log(`listening on ${host}:${uWS.us_socket_local_port(token)}`);
});
