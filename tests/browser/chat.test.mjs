// The chat page in a real browser (Debian's Chromium via playwright-core) against the real
// server, once per pattern in $WSCHAT_BROWSER_PATTERNS (";"-separated server argument lists).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, openUser, waitOpen, say, seen, sleep } from "./harness.mjs";

const patterns = (process.env.WSCHAT_BROWSER_PATTERNS ||
  "--pattern single-thread;--pattern reuseport --threads 2;--pattern acceptor-readers --threads 2")
  .split(";").map((s) => s.trim().split(/\s+/)).filter((a) => a.length && a[0]);

for (const args of patterns) {
  describe(`chat page, ${args.join(" ")}`, () => {
    let server, browser;
    const errors = [];
    const pages = [];
    const user = async (name, room, opts = {}) => {
      const page = await openUser(browser, server.base, name, room, { errors, ...opts });
      pages.push(page);
      return page;
    };

    before(async () => {
      server = await startServer(args);
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
      assert.deepEqual(errors, [], "no script errors in any page");
    });

    it("two pages in one room talk both ways; a page in another room hears nothing", async () => {
      const ann = await user("ann", "r1");
      const cy = await user("cy", "r2");
      const bob = await user("bob", "r1");
      await seen(ann, "notice.join", "bob just connected");
      await ann.locator("#members li", { hasText: "bob" }).waitFor();
      assert.deepEqual(await bob.locator("#members li").allTextContents(), ["ann", "bob (you)"]);

      await say(ann, "hello bob");
      const got = await seen(bob, "msg.them", "hello bob");
      assert.equal(await got.locator(".from").textContent(), "ann");
      assert.match(await got.locator("time").textContent(), /\d\d:\d\d/);
      await seen(ann, "msg.me", "hello bob"); // own message shown locally
      await say(bob, "hi ann, line 2");
      await seen(ann, "msg.them", "hi ann, line 2");
      assert.equal(await ann.locator("#log li.msg.them").count(), 1, "no echo of ann's own message");

      await sleep(300);
      assert.equal(await cy.locator("#log li.msg").count(), 0, "another room hears nothing");
      assert.equal(await cy.locator("#log li.notice", { hasText: "connected" }).count(), 0);

      await bob.getByRole("button", { name: "Leave" }).click();
      await seen(ann, "notice.leave", "bob disconnected");
      await ann.locator("#members li", { hasText: "bob" }).waitFor({ state: "detached" });
      for (const p of [ann, bob, cy]) await p.context().close();
    });

    it("/nick and /who work from the input; errors are shown", async () => {
      const ann = await user("ann", "r3");
      const bob = await user("bob", "r3");
      await say(ann, "/nick anna");
      await seen(bob, "notice.nick", "ann is now anna");
      await seen(ann, "notice.nick", "You are now anna");
      await bob.locator("#members li", { hasText: "anna" }).waitFor();
      assert.equal(await ann.locator("#where").textContent(), "#r3 as anna");
      await say(bob, "/who");
      const who = await seen(bob, "notice.who", "Members of r3:");
      assert.equal(await who.textContent(), "Members of r3: anna, bob");
      await say(ann, "/dance");
      await seen(ann, "notice.error", "error: unknown command /dance");
      await say(ann, "/nick !!!");
      await seen(ann, "notice.error", "error: /nick");
      assert.equal(await ann.locator("#where").textContent(), "#r3 as anna", "refused rename is taken back");
      // A message after the rename carries the new name.
      await say(ann, "renamed");
      const m = await seen(bob, "msg.them", "renamed");
      assert.equal(await m.locator(".from").textContent(), "anna");
      for (const p of [ann, bob]) await p.context().close();
    });

    it("binary messages and injected markup are shown as text", async () => {
      const ann = await user("ann", "r4");
      const bob = await user("bob", "r4");
      const evil = `<img src=x onerror="window.__pwned=1"><b>bold</b>`;
      await say(bob, evil);
      const m = await seen(ann, "msg.them", "<img src=x");
      assert.equal(await m.locator(".body").textContent(), evil);
      assert.equal(await ann.locator("#log img, #log b").count(), 0, "no element made from network text");
      assert.equal(await ann.evaluate(() => window.__pwned), undefined);
      // A raw socket from bob's page sends a binary message into the room.
      await bob.evaluate(async () => {
        const ws = new WebSocket(`ws://${location.host}/chat/r4?name=raw`);
        ws.binaryType = "arraybuffer";
        await new Promise((resolve) => (ws.onopen = resolve));
        ws.send(new Uint8Array([0, 1, 2, 255, 60]));
        ws.close(1000);
      });
      await seen(ann, "msg.binary", "[binary, 5 bytes]");
      for (const p of [ann, bob]) await p.context().close();
    });

    it("the server panel shows the pattern, io and every thread", async () => {
      const ann = await user("ann", "r5");
      const stats = await (await fetch(`${server.base}/stats`)).json();
      await ann.locator("#srv-pattern", { hasText: stats.pattern }).waitFor();
      assert.equal(stats.pattern, args[args.indexOf("--pattern") + 1]);
      assert.equal(await ann.locator("#srv-io").textContent(), stats.io);
      await ann.waitForFunction((n) => document.querySelectorAll("#threads tbody tr").length === n, stats.threads.length);
      const roles = await ann.locator("#threads tbody th").allTextContents();
      assert.deepEqual(roles, stats.threads.map((t) => `${t.id} ${t.role}`));
      // The page's own socket is one of the open connections, and a bar shows it.
      await ann.waitForFunction(() => /^[1-9]\d* open/.test(document.querySelector("#srv-active").textContent));
      const widths = await ann.locator("#threads tbody td:nth-child(2) .bar span").evaluateAll((s) => s.map((e) => parseFloat(e.style.width)));
      assert.ok(widths.some((w) => w === 100), `a full bar for the busiest thread: ${widths}`);
      await ann.context().close();
    });

    it("the page survives a server restart on the same port; offline messages are queued", async () => {
      const ann = await user("ann", "r6");
      const bob = await user("bob", "r6");
      const addr = server.addr;
      let t = Date.now();
      assert.equal(await server.stop(), 0);
      console.log(`# server stopped in ${Date.now() - t} ms`);
      const restart = (async () => { await sleep(700); server = await startServer(args, addr); })();
      await ann.locator('#status[data-state="closed"]').waitFor();
      await seen(ann, "notice.leave", "Connection closed 1001");
      await say(ann, "sent while offline");
      const pending = await seen(ann, "msg.me.pending", "sent while offline");
      assert.match(await pending.textContent(), /queued/);
      await ann.locator("#queue-note", { hasText: "1 message(s) queued" }).waitFor();
      await restart;
      t = Date.now();
      await waitOpen(ann);
      await waitOpen(bob);
      console.log(`# both pages open again ${Date.now() - t} ms after the restart`);
      await ann.locator("#log li.msg.me.pending").waitFor({ state: "detached", timeout: 20000 });
      // The queued message went out on reconnecting; bob sees it only if he was back first
      // (the server keeps no history), so what is checked is that both directions work again.
      await say(bob, "after restart");
      await seen(ann, "msg.them", "after restart");
      for (const p of [ann, bob]) await p.context().close();
    });

    it("URL and storage defaults, known rooms, switching rooms", async () => {
      const zed = await user("zed", "zr", { join: false });
      assert.equal(await zed.getByLabel("Name", { exact: true }).inputValue(), "zed");
      assert.equal(await zed.getByLabel("Room", { exact: true }).inputValue(), "zr");
      await zed.getByRole("button", { name: "Join" }).click();
      await waitOpen(zed);
      await zed.goto(server.base + "/");
      assert.equal(await zed.getByLabel("Name", { exact: true }).inputValue(), "zed", "name remembered");
      assert.equal(await zed.getByLabel("Room", { exact: true }).inputValue(), "zr", "room remembered");
      assert.deepEqual(await zed.locator("#rooms button").allTextContents(), ["# lobby", "# zr"]);
      await zed.getByRole("button", { name: "Join" }).click();
      await waitOpen(zed);
      const amy = await user("amy", "lobby");
      await zed.getByRole("button", { name: "# lobby" }).click();
      await seen(amy, "notice.join", "zed just connected");
      await zed.locator('#rooms button[aria-current="true"]', { hasText: "lobby" }).waitFor();
      await say(amy, "welcome to the lobby");
      await seen(zed, "msg.them", "welcome to the lobby");
      for (const p of [zed, amy]) await p.context().close();
    });

    it("keyboard only, and a phone-width screen without horizontal scrolling", async () => {
      const phone = await user("pat", "r7", { join: false, viewport: { width: 375, height: 740 } });
      const friend = await user("fay", "r7");
      await phone.getByLabel("Name", { exact: true }).focus();
      await phone.keyboard.press("Tab");
      assert.equal(await phone.evaluate(() => document.activeElement.id), "room");
      await phone.keyboard.press("Enter"); // submits the join form
      await waitOpen(phone);
      assert.equal(await phone.evaluate(() => document.activeElement.id), "msg", "focus moves to the message box");
      await phone.keyboard.type("from my phone");
      await phone.keyboard.press("Enter");
      await seen(friend, "msg.them", "from my phone");
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal overflow (${overflow}px)`);
      for (const p of [phone, friend]) await p.context().close();
    });
  });
}

// The page over https:// from a server with a certificate made at start (--tls-self-signed):
// Chromium is told to accept it, as a user clicking through the warning would. The page must
// then open its WebSocket with wss:// (it derives the scheme from location.protocol), and
// two pages chat through TLS on both sides.
describe("chat page over https:// and wss:// (--tls-self-signed)", () => {
  let server, browser;
  const errors = [];
  before(async () => {
    server = await startServer(["--tls-self-signed"]);
    server.base = `https://${server.addr}`;
    browser = await launchBrowser(["--ignore-certificate-errors"]);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    assert.deepEqual(errors, [], "no script errors in any page");
  });

  it("the page loads over https, connects with wss, and two pages talk", async () => {
    const sockets = [];
    const join = async (name) => {
      const page = await openUser(browser, server.base, name, "tls", { errors, join: false });
      page.on("websocket", (ws) => sockets.push(ws.url()));
      assert.equal(await page.evaluate(() => location.protocol), "https:");
      await page.getByRole("button", { name: "Join" }).click();
      await waitOpen(page);
      await page.locator("#members li.me").waitFor();
      return page;
    };
    const ann = await join("ann");
    const bob = await join("bob");
    await seen(ann, "notice.join", "bob just connected");
    assert.equal(sockets.length, 2);
    for (const url of sockets) assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/chat\/tls\?name=/);

    await say(ann, "over tls");
    const got = await seen(bob, "msg.them", "over tls");
    assert.equal(await got.locator(".from").textContent(), "ann");
    await say(bob, "and back");
    await seen(ann, "msg.them", "and back");

    // The server's own view, fetched by the page over https: no TLS failures.
    const stats = await ann.evaluate(async () => (await fetch("/stats", { cache: "no-store" })).json());
    assert.equal(stats.totals.tls_errors, 0);
    for (const p of [ann, bob]) await p.context().close();
  });
});
