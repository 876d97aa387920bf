// Shared by the browser tests and the screenshot script: the real server on a loopback
// port, Debian's Chromium through playwright-core, and a few page helpers.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, "..", "..");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** The server binary: $WSCHAT_BIN, else the release build in $CARGO_TARGET_DIR or target/. */
export function serverBinary() {
  if (process.env.WSCHAT_BIN) return process.env.WSCHAT_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(repo, "target");
  const bin = join(target, "release", "wschat");
  if (!existsSync(bin)) throw new Error(`${bin} missing: run tests/browser/run.sh (it builds it)`);
  return bin;
}

/**
 * Starts wschat with `args` on `addr` (default 127.0.0.1:0) and resolves once it prints
 * "listening on ADDR". Returns { addr, base, proc, args, log(), stop() }.
 */
export function startServer(args = [], addr = "127.0.0.1:0") {
  const proc = spawn(serverBinary(), ["--addr", addr, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const server = {
    proc, args, log: () => output,
    /** SIGTERM, then wait for the exit; resolves with the exit code. */
    stop() {
      if (proc.exitCode !== null) return Promise.resolve(proc.exitCode);
      return new Promise((resolve) => { proc.once("exit", (code) => resolve(code)); proc.kill("SIGTERM"); });
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill("SIGKILL"); reject(new Error(`server did not start:\n${output}`)); }, 10000);
    const onData = (chunk) => {
      output += chunk;
      const m = /listening on (\S+)/.exec(output);
      if (m && !server.addr) {
        clearTimeout(timer);
        server.addr = m[1];
        server.base = `http://${m[1]}`;
        resolve(server);
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.once("exit", (code) => { clearTimeout(timer); if (!server.addr) reject(new Error(`server exited ${code}:\n${output}`)); });
  });
}

export const CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/**
 * Debian's Chromium, headless. playwright-core gives every launch a new empty profile
 * directory (its own --user-data-dir), and every browser.newContext() separate storage,
 * so each simulated user has its own localStorage. `extraArgs` are added to the flags
 * (e.g. --ignore-certificate-errors for a --tls-self-signed server).
 */
export async function launchBrowser(extraArgs = []) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing (apt-get install chromium)`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_FLAGS, ...extraArgs] });
}

/** Opens the page as a new user (own context), fills name and room, joins, waits for "open". */
export async function openUser(browser, base, name, room, { viewport, join = true, errors } = {}) {
  const context = await browser.newContext({ viewport: viewport ?? { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on("pageerror", (e) => (errors ?? []).push(`${name}: ${e.message}`));
  await page.goto(`${base}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(room)}`);
  if (join) {
    await page.getByRole("button", { name: "Join" }).click();
    await waitOpen(page);
    // The page sends /who on joining; its answer fills the member list with ourselves.
    await page.locator("#members li.me").waitFor();
  }
  return page;
}

export const waitOpen = (page) => page.locator('#status[data-state="open"]').waitFor();

/** Types into the message box and presses Enter, as a user would. */
export async function say(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

/** Waits for a log entry of class `cls` containing `text`; returns its locator. */
export async function seen(page, cls, text) {
  const item = page.locator(`#log li.${cls}`, { hasText: text }).last();
  await item.waitFor();
  return item;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
