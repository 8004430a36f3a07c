// The dashboard end to end: headless Chromium (Debian's) driven by playwright-core against the
// real binary. Signs in, watches live numbers move, runs a compare, filters the request log,
// resolves an error and reads the breakers, saving a screenshot of each page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ADMIN_KEY, serve, start } from "../sdk/node/helpers.mjs";

const CHROMIUM = process.env.ATALAYA_CHROMIUM ?? "/usr/bin/chromium";
const available = existsSync(CHROMIUM);
if (!available) {
  if (process.env.ATALAYA_TEST_REQUIRE_SERVICES === "1") {
    throw new Error(`Chromium is required at ${CHROMIUM} (scripts/install-tools installs it)`);
  }
  console.log(`notice: no Chromium at ${CHROMIUM}; skipping the dashboard tests`);
}
const target = process.env.CARGO_TARGET_DIR ?? new URL("../../target", import.meta.url).pathname;
const SHOTS = process.env.ATALAYA_SCREENSHOTS ?? join(target, "ui-screenshots");

let upstream;
let server;
let appKey;
let browser;
let page;

async function chat(model, key = ADMIN_KEY) {
  const response = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Describe a watchtower." }] }),
  });
  await response.arrayBuffer();
  return response.status;
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

before(async () => {
  if (!available) return;
  mkdirSync(SHOTS, { recursive: true });
  upstream = await start(["mock-provider", "--listen", "127.0.0.1:0", "--api-key", "sk-upstream"]);
  server = await serve(
    `[sim]\nenabled = true\n\n[[providers]]\nname = "up"\ntype = "openai"\nbase_url = "${upstream.url}/v1"\napi_key = "sk-upstream"\nmodels = ["gpt-4o-mini"]\n\n` +
      `[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 2\nwindow = 2\nopen_ms = 60000\n`,
  );
  const created = await fetch(`${server.url}/api/v1/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "web-app", team: "blue" }),
  });
  appKey = (await created.json()).key;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (error) => console.error("page error:", error.message));
});

after(async () => {
  await browser?.close();
  for (const process of [server, upstream]) if (process) await process.stop();
});

test("sign in: a wrong key is refused, a good one opens the overview", { skip: !available }, async () => {
  await page.goto(`${server.url}/ui/`);
  await page.fill("#login-key", "sk-atl-not-a-key");
  await page.click("#login-form button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("refused"));
  await page.fill("#login-key", ADMIN_KEY);
  await page.click("#login-form button");
  await page.waitForSelector("#kpi-requests");
  await page.waitForSelector("#live-status.on");
  await page.waitForFunction(() => document.getElementById("health").textContent === "OPTIMAL 100");
  assert.equal(await page.textContent("#kpi-live"), "0");
});

test("live numbers move as requests arrive", { skip: !available }, async () => {
  for (let i = 0; i < 5; i++) assert.equal(await chat(i % 2 ? "sim-chat" : "gpt-4o-mini", i % 2 ? ADMIN_KEY : appKey), 200);
  await page.waitForFunction(() => document.getElementById("kpi-live").textContent === "5");
  await page.waitForFunction(() => document.querySelectorAll("#live-requests tr").length === 5);
  await page.waitForFunction(() => Number(document.getElementById("kpi-rps").textContent) > 0);
  const models = await page.$$eval("#live-requests tr td:nth-child(2)", (cells) => cells.map((c) => c.textContent));
  assert.deepEqual([...new Set(models)].sort(), ["gpt-4o-mini", "sim-chat"]);
  // After a refresh the hour's totals and the chart include them.
  await page.evaluate(() => window.dispatchEvent(new HashChangeEvent("hashchange")));
  await page.waitForFunction(() => Number(document.getElementById("kpi-requests").textContent) >= 5);
  assert.ok(await page.$("#chart-requests polyline[data-series=requests]"));
  assert.equal((await page.$$("#live-requests tr")).length, 5, "the live table survives a refresh");
  await shot("overview");
});

test("compare runs two models side by side", { skip: !available }, async () => {
  await page.goto(`${server.url}/ui/#/compare`);
  await page.waitForSelector("#compare-form input[value=sim-chat]");
  await page.check("#compare-form input[value=sim-chat]");
  await page.check("#compare-form input[value=gpt-4o-mini]");
  await page.fill("#compare-form textarea", "Name three lighthouses.");
  await page.click("#compare-run");
  await page.waitForFunction(() => document.querySelectorAll(".compare-result").length === 2);
  const cards = await page.$$eval(".compare-result", (cards) => cards.map((c) => c.textContent));
  assert.ok(cards.some((text) => text.startsWith("sim-chat 200")), cards.join("\n"));
  assert.ok(cards.some((text) => text.startsWith("gpt-4o-mini 200")), cards.join("\n"));
  assert.ok(cards.every((text) => text.includes("tokens")));
  await shot("compare");
});

test("the request log filters by status", { skip: !available }, async () => {
  assert.equal(await chat("no-such-model"), 404);
  await page.goto(`${server.url}/ui/#/logs`);
  await page.waitForSelector("#log-rows tr");
  await page.fill("#log-filters input[name=status]", "404");
  // Rows reach the log within a flush interval: filter until the 404 is there.
  let statuses = [];
  for (let i = 0; i < 50 && statuses.length === 0; i++) {
    const stamp = await page.getAttribute("#log-filters", "data-loaded");
    await page.click("#log-filters button");
    await page.waitForFunction((before) => document.getElementById("log-filters").dataset.loaded !== before, stamp);
    statuses = await page.$$eval("#log-rows tr td:nth-child(5)", (cells) => cells.map((c) => c.textContent));
  }
  assert.deepEqual(statuses, ["404"]);
  await page.fill("#log-filters input[name=status]", "");
  const stamp = await page.getAttribute("#log-filters", "data-loaded");
  await page.click("#log-filters button");
  await page.waitForFunction((before) => document.getElementById("log-filters").dataset.loaded !== before, stamp);
  const all = await page.$$eval("#log-rows tr td:nth-child(5)", (cells) => cells.map((c) => c.textContent));
  assert.ok(all.length >= 8 && all.includes("200") && all.includes("404"), all.join(","));
  await shot("logs");
});

test("errors are listed and resolved; breakers show their state", { skip: !available }, async () => {
  const profile = await fetch(`${upstream.url}/_mock/profile`, { method: "PUT", body: '{"name": "failing"}' });
  assert.equal(profile.status, 204);
  assert.equal(await chat("gpt-4o-mini"), 502);
  assert.equal(await chat("gpt-4o-mini"), 503, "the breaker opened");
  await page.goto(`${server.url}/ui/#/errors`);
  const row = async () => {
    for (let i = 0; i < 50; i++) {
      await page.evaluate(() => window.dispatchEvent(new HashChangeEvent("hashchange")));
      await page.waitForSelector("#view[data-view=errors]");
      if (await page.$("#errors button")) return;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error("no error group appeared");
  };
  await row();
  const component = await page.textContent("#errors tbody tr td:nth-child(2)");
  assert.match(component, /^gateway\./);
  await page.click("#errors button");
  await page.waitForFunction(() => document.querySelector("#errors button")?.textContent === "Reopen");
  await shot("errors");

  await page.goto(`${server.url}/ui/#/providers`);
  await page.waitForSelector("#deployments");
  const deployments = await page.$$eval("#deployments tbody tr", (rows) => rows.map((r) => r.textContent));
  assert.ok(deployments.some((text) => text.startsWith("up/gpt-4o-mini") && text.includes("open")), deployments.join("\n"));
  await shot("providers");
  await page.goto(`${server.url}/ui/#/keys`);
  await page.waitForSelector("#spend-bars");
  assert.match(await page.textContent("#spend-bars"), /web-app.*\$0\.0\d+/);
  const keys = await page.$$eval("#keys tbody tr", (rows) => rows.map((r) => r.textContent));
  assert.ok(keys.some((text) => text.startsWith("web-app") && text.includes("blue")), keys.join("\n"));
  await shot("keys");
});
