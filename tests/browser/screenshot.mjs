// Writes docs/screenshot-chat.png (desktop, and -chat-dark.png) and docs/screenshot-phone.png: a chat in progress
// on a reuseport server with two loops, while a few extra sockets keep the stats moving.
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { startServer, launchBrowser, openUser, say, seen, sleep, repo } from "./harness.mjs";

const server = await startServer(["--pattern", "reuseport", "--threads", "2"]);
const browser = await launchBrowser();
try {
  const ann = await openUser(browser, server.base, "Ann", "dev");
  const bob = await openUser(browser, server.base, "Bob", "dev");
  const cy = await openUser(browser, server.base, "Cy", "dev");
  await openUser(browser, server.base, "Dee", "ops");
  await say(bob, "Morning! Did the reuseport run finish?");
  await seen(ann, "msg.them", "Morning");
  await say(ann, "Yes: 2 loops, about even. Numbers are in results/.");
  await say(cy, "/nick Cyrus");
  await seen(ann, "notice.nick", "Cy is now Cyrus");
  await say(cy, "Is acceptor-readers still lopsided with least-conns?");
  await seen(ann, "msg.them", "lopsided");
  await say(bob, "<b>not bold</b> — markup from the network stays text");
  await seen(ann, "msg.them", "not bold");
  await bob.evaluate(async () => {
    const ws = new WebSocket(`ws://${location.host}/chat/dev?name=sensor`);
    await new Promise((r) => (ws.onopen = r));
    ws.send(new Uint8Array(48));
    ws.close(1000);
  });
  await seen(ann, "msg.binary", "[binary, 48 bytes]");
  await say(ann, "/who");
  await seen(ann, "notice.who", "Members of dev");
  await say(ann, "Let me check the server panel.");
  // Some traffic, so the frames/s bars have something to show.
  for (let i = 0; i < 30; i++) { await say(bob, `tick ${i}`); }
  await ann.locator("#log li.msg.them", { hasText: "tick 29" }).waitFor();
  await ann.evaluate(() => [...document.querySelectorAll("#log li.msg.them")].filter((li) => /tick/.test(li.textContent)).forEach((li) => li.remove()));
  await sleep(1200);
  await say(bob, "Looks good to me.");
  await seen(ann, "msg.them", "Looks good");
  await sleep(1100);
  const docs = join(repo, "docs");
  mkdirSync(docs, { recursive: true });
  await ann.screenshot({ path: join(docs, "screenshot-chat.png") });
  await ann.emulateMedia({ colorScheme: "dark" });
  await ann.screenshot({ path: join(docs, "screenshot-chat-dark.png") });
  const phone = await openUser(browser, server.base, "Pat", "dev", { viewport: { width: 390, height: 844 } });
  await say(bob, "Hi Pat, welcome!");
  await seen(phone, "msg.them", "welcome");
  await say(phone, "Hello from a phone-width screen");
  await phone.screenshot({ path: join(docs, "screenshot-phone.png"), fullPage: true });
  console.log("wrote docs/screenshot-chat.png, -chat-dark.png and -phone.png");
} finally {
  await browser.close();
  await server.stop();
}
