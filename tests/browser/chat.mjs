// Headless Chromium drives the chat demo page served by
// `wsloop serve --app chat`. Run by scripts/browser-test.sh, which starts
// the server and restarts it when asked (see RESTART below).
//
// Environment:
//   CHAT_URL    the page, http://127.0.0.1:PORT/
//   WORK_DIR    a scratch directory shared with the script: this test
//               creates WORK_DIR/restart-request; the script restarts the
//               server on the same port and creates WORK_DIR/restarted
//   SCREENSHOT  where to save a PNG of the page at the end
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const base = process.env.CHAT_URL;
const work = process.env.WORK_DIR;
const shot = process.env.SCREENSHOT;
if (!base || !work || !shot) {
  console.error("CHAT_URL, WORK_DIR and SCREENSHOT must be set");
  process.exit(2);
}
const WAIT = 15000;

function log(...a) {
  console.log(`[browser ${new Date().toISOString().slice(11, 23)}]`, ...a);
}

async function sleep(ms) {
  await new Promise((r) => setTimeout(r, ms));
}

async function waitFile(p, ms) {
  const end = Date.now() + ms;
  while (!fs.existsSync(p)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${p}`);
    await sleep(50);
  }
}

// A fresh profile every run.
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wsloop-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 960, height: 620 },
  timeout: 60000,
});
context.setDefaultTimeout(WAIT);

let failed = false;
try {
  log("chromium", context.browser()?.version() ?? "(persistent context)");
  const pages = [];
  for (const name of ["Alice", "Bob"]) {
    const page = pages.length === 0 ? (context.pages()[0] ?? (await context.newPage())) : await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") log(`${name} console error:`, m.text());
    });
    page.on("pageerror", (e) => log(`${name} page error:`, e.message));
    await page.goto(base);
    await page.fill("#name", name);
    await page.fill("#room", "lobby");
    await page.click("#join");
    await page.waitForSelector('#status[data-state="joined"]');
    log(`${name} joined:`, await page.textContent("#status"));
    pages.push(page);
  }
  const [alice, bob] = pages;

  async function say(page, text) {
    await page.fill("#text", text);
    await page.press("#text", "Enter");
  }
  async function sees(page, text) {
    await page
      .locator("#messages li.msg .text", { hasText: text })
      .first()
      .waitFor({ state: "visible" });
  }

  await say(alice, "Hi Bob, this is Alice");
  await sees(bob, "Hi Bob, this is Alice");
  await sees(alice, "Hi Bob, this is Alice");
  log("Bob sees Alice's message");
  await say(bob, "Hello Alice! Messages arrive live here.");
  await sees(alice, "Hello Alice! Messages arrive live here.");
  log("Alice sees Bob's reply");

  // Bob's connection drops (the page closes its socket as a network
  // failure would); Alice goes on talking. When Bob's page is back it
  // asks for what it missed ("since") and shows each message once.
  const connects = async (p) => p.getAttribute("#status", "data-connects");
  const bobBefore = await connects(bob);
  await bob.evaluate(() => window.wsloopChat.drop());
  await bob.waitForSelector('#status[data-state="reconnecting"]');
  const missed = ["While you were away (1)", "While you were away (2)", "While you were away (3)"];
  for (const t of missed) await say(alice, t);
  for (const t of missed) await sees(alice, t);
  const bobState = await bob.getAttribute("#status", "data-state");
  if (bobState === "joined") throw new Error("Bob's page was back before Alice spoke: nothing was missed");
  await bob.waitForFunction(
    (before) => {
      const s = document.getElementById("status");
      return s.dataset.state === "joined" && s.dataset.connects !== before;
    },
    bobBefore,
  );
  for (const t of missed) {
    await sees(bob, t);
    const n = await bob.locator("#messages li.msg .text", { hasText: t }).count();
    if (n !== 1) throw new Error(`Bob's page shows "${t}" ${n} times, want once`);
  }
  const order = await bob.locator("#messages li.msg .text").allTextContents();
  const idx = missed.map((t) => order.indexOf(t));
  if (!(idx[0] < idx[1] && idx[1] < idx[2])) throw new Error(`out of order: ${order.join(" | ")}`);
  log("Bob's page reconnected and caught up on", missed.length, "missed messages, once each, in order");

  // RESTART: ask the script to restart the server, on the same port.
  const before = [await connects(alice), await connects(bob)];
  fs.writeFileSync(path.join(work, "restart-request"), "");
  log("server restart requested");
  for (const p of pages) {
    await p.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT });
  }
  log("both pages noticed:", await bob.textContent("#status"));
  await waitFile(path.join(work, "restarted"), 30000);
  log("server restarted; waiting for the pages to reconnect");
  for (const [i, p] of pages.entries()) {
    await p.waitForFunction(
      (was) => {
        const s = document.getElementById("status");
        return s.dataset.state === "joined" && s.dataset.connects !== was;
      },
      before[i],
      { timeout: 30000 },
    );
  }
  log("both pages reconnected:", await bob.textContent("#status"));

  await say(alice, "Back after the server restart");
  await sees(bob, "Back after the server restart");
  await say(bob, "Got it, no reload needed.");
  await sees(alice, "Got it, no reload needed.");
  // Alice may see Bob's line before the server's echo reaches Bob's own page.
  await sees(bob, "Got it, no reload needed.");
  log("messages flow again after the reconnect");

  // Earlier lines are still on the page (no reload happened).
  const lines = await bob.locator("#messages li.msg").count();
  if (lines < 7) throw new Error(`Bob's page shows ${lines} messages, want at least 7`);

  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await bob.screenshot({ path: shot });
  log("screenshot saved to", shot);
} catch (e) {
  failed = true;
  console.error("BROWSER TEST FAILED:", e && e.stack ? e.stack : e);
  try {
    const p = context.pages()[context.pages().length - 1];
    if (p) {
      const f = path.join(work, "failure.png");
      await p.screenshot({ path: f });
      console.error("page at failure:", await p.textContent("body"));
    }
  } catch (_) {
    // best effort
  }
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
