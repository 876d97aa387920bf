// The browser page chatting across nodes: run inside deploy/run.sh, e.g.
//   sudo deploy/run.sh --nodes 3 -- node deploy/browser-check.mjs
// (needs Debian's Chromium and tests/browser's npm ci). Two users open the page, one through
// HAProxy (L4) and one through nginx (L7); the script checks with each node's /stats that they
// landed on different nodes (else a third user joins through HAProxy, whose least-connections
// balancing then picks another node), and that messages, notices and the member list cross.
import assert from "node:assert/strict";
import { launchBrowser, openUser, say, seen } from "../tests/browser/harness.mjs";

const http = (ws) => ws.replace(/^ws:/, "http:");
const l4 = http(process.env.WSCHAT_HAPROXY_URL);
const l7 = http(process.env.WSCHAT_NGINX_URL);
const nodes = process.env.WSCHAT_NODE_URLS.split(" ").map(http);

async function membersByNode() {
  const out = [];
  for (const n of nodes) {
    const stats = await (await fetch(`${n}/stats`)).json();
    out.push(stats.totals.members);
  }
  return out;
}

const room = "across";
const browser = await launchBrowser();
try {
  const ann = await openUser(browser, l4, "ann", room);
  let before = await membersByNode();
  const annNode = before.findIndex((m) => m > 0);
  let bob = await openUser(browser, l7, "bob", room);
  let counts = await membersByNode();
  let bobNode = counts.findIndex((m, i) => m > before[i]);
  let via = "nginx";
  if (bobNode === annNode) {
    before = counts;
    bob = await openUser(browser, l4, "cy", room);
    counts = await membersByNode();
    bobNode = counts.findIndex((m, i) => m > before[i]);
    via = "HAProxy";
  }
  assert.notEqual(bobNode, annNode, `both users on node ${annNode + 1}`);
  const other = via === "nginx" ? "bob" : "cy";
  await ann.locator("#members li", { hasText: other }).waitFor();
  await say(ann, "hello from ann");
  await seen(bob, "msg", "hello from ann");
  await say(bob, `hi ann, ${other} here`);
  await seen(ann, "msg", `hi ann, ${other} here`);
  await say(bob, "/who");
  await bob.locator("#members li", { hasText: "ann" }).waitFor();
  console.log(`browser check: ann (HAProxy, node ${annNode + 1}) and ${other} (${via}, node ` +
    `${bobNode + 1}) chat across nodes; member lists and notices cross: OK`);
} finally {
  await browser.close();
}
