// The broker console in a real browser: headless Debian chromium driven by
// playwright-core, against a real `labrelay up` (started by tests/system/console.rs,
// which also owns the SMTP server behind the email-service).
//
// Environment: CONSOLE_URL (http://broker), LAB_URL (lab-report-service),
// API_KEY, CHROMIUM (executable), SCREENSHOT (optional: where to save a PNG
// of the console with failures, a journey and a dead letter on it).
//
// Talking to the Rust side: a line `ASK smtp <accept|451|550>` on stdout asks
// it to switch the SMTP server's answers; it replies `ok` on stdin.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";

const { CONSOLE_URL, LAB_URL, API_KEY, SCREENSHOT } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const EMAIL = '[data-subscription$="/email-service-sub"]';
const SMS = '[data-subscription$="/sms-service-sub"]';
const DEAD_LETTER_WAIT = 90_000;

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(...words) {
  console.log(`ASK ${words.join(" ")}`);
  const { value } = await replies.next();
  assert.equal(value, "ok", `the test harness answered ${value} to ${words.join(" ")}`);
}

function step(what) {
  console.log(`STEP ${what}`);
}

async function postReport(id) {
  const response = await fetch(LAB_URL, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({
      id,
      clinic: { name: "Pet Theory Downtown", phone: "+15551230000" },
      pet: { name: "Max", species: "dog" },
      owner: { name: "Alex Kim", email: "alex@example.com", phone: "+15551234567" },
      tests: [{ name: "ALT", value: 42, unit: "U/L", range: "10-100", flag: "normal" }],
      issuedAt: "2026-11-24T10:00:00Z",
    }),
  });
  assert.equal(response.status, 204, `posting report ${id}: ${await response.text()}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") pageErrors.push(message.text());
  });

  step("load the console");
  await page.goto(`${CONSOLE_URL}/console`);
  await page.waitForSelector(`#subscriptions tr${EMAIL}[data-kind="push"]`);
  await page.waitForSelector(`#subscriptions tr${SMS}[data-kind="push"]`);
  await page.waitForSelector("#live.on");

  step("post a report; it appears and both deliveries turn green");
  await postReport("E2E-1");
  const row = '#recent tr[data-report="E2E-1"]';
  await page.waitForSelector(row);
  await page.waitForSelector(`${row} .channel${EMAIL}[data-state="delivered"]`);
  await page.waitForSelector(`${row} .channel${SMS}[data-state="delivered"]`);
  const green = await page.$eval(`${row} .channel${EMAIL}`, (el) => getComputedStyle(el).backgroundColor);
  assert.equal(green, "rgb(218, 251, 225)", "a delivered channel is shown green");
  assert.equal(page.url(), `${CONSOLE_URL}/console`, "no reload, no navigation");
  await page.waitForFunction(
    (sel) => Number(document.querySelector(`#subscriptions tr${sel} td.ok`)?.textContent) >= 1,
    EMAIL,
  );
  await page.waitForSelector(`#subscriptions tr${EMAIL} td.chart rect.bar-ok`);

  step("search the report: its journey per channel");
  await page.fill("#report", "E2E-1");
  await page.click('#search button[type="submit"]');
  await page.waitForURL(`${CONSOLE_URL}/console?report=E2E-1`);
  await page.waitForSelector(`#journey .channel-journey${EMAIL}[data-state="delivered"] li[data-kind="push"][data-status="204"]`);
  await page.waitForSelector(`#journey .channel-journey${SMS}[data-state="delivered"]`);
  const journeyText = await page.textContent("#journey");
  assert.match(journeyText, /reportId/);
  assert.doesNotMatch(journeyText, /alex@example\.com|\+15551234567|Alex Kim/, "no personal data on the console");

  step("break the email channel: failures and backlog show, SMS still goes out");
  await ask("smtp", "451");
  await postReport("E2E-2");
  const row2 = '#recent tr[data-report="E2E-2"]';
  await page.waitForSelector(`${row2} .channel${SMS}[data-state="delivered"]`);
  await page.waitForSelector(`${row2} .channel${EMAIL}[data-state="retrying"]`);
  await page.waitForFunction(
    (sel) => Number(document.querySelector(`#subscriptions tr${sel} td.failed`)?.textContent) >= 1,
    EMAIL,
  );
  await page.waitForSelector(`#subscriptions tr${EMAIL} td.backlog.nonzero`);
  await page.waitForSelector(`#subscriptions tr${EMAIL} td.chart rect.bar-failed`);
  const lastError = await page.textContent(`#subscriptions tr${EMAIL} td.last-error`);
  assert.match(lastError, /HTTP 503/, `the last push error is shown: ${lastError}`);

  step("the server refuses the email for good: parked on its next attempt");
  await ask("smtp", "550");
  const parked = '#dead-letters tr:has(a[data-report-link="E2E-2"])';
  await page.waitForSelector(parked, { timeout: DEAD_LETTER_WAIT });
  await page.waitForSelector(`${row2} .channel${EMAIL}[data-state="dead-lettered"]`);
  assert.match(await page.textContent(parked), /push failed: HTTP 422 \(email-service: refused\)/);

  step("deep link: /console?report=E2E-2");
  await page.goto(`${CONSOLE_URL}/console?report=E2E-2`);
  await page.waitForSelector(`#journey .channel-journey${EMAIL}[data-state="dead-lettered"]`);
  const attempts = await page.$$(`#journey .channel-journey${EMAIL} li[data-kind="push"]`);
  assert.ok(attempts.length >= 2, `a failed attempt, then the one that parked it: ${attempts.length}`);
  await page.waitForSelector(`#journey .channel-journey${SMS}[data-state="delivered"]`);
  await page.waitForSelector('#journey .channel-journey[data-state="parked"]');
  await page.waitForSelector("#live.on");
  if (SCREENSHOT) {
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`SCREENSHOT ${SCREENSHOT}`);
  }

  step("repair the channel and replay the dead letter from the console");
  await ask("smtp", "accept");
  await page.click(`${parked} button.replay`);
  await page.waitForFunction(() => /^Replayed 1/.test(document.querySelector("#replay-status").textContent));
  await page.waitForSelector('#journey .channel-journey[data-state="replayed"]');
  // The replayed copy is a new message of the same report: email delivered now.
  await page.waitForFunction((sel) => {
    const messages = [...document.querySelectorAll("#journey .message")];
    return messages.length >= 3 && messages.some((m) => m.querySelector(`.channel-journey${sel}[data-state="delivered"]`));
  }, EMAIL, { timeout: 30_000 });
  await page.waitForSelector(`#dead-letters .dl-sub .count`);
  await page.waitForFunction(() => !document.querySelector('#dead-letters a[data-report-link="E2E-2"]'));
  await page.waitForSelector(`#subscriptions tr${EMAIL} td.backlog:not(.nonzero)`);

  assert.deepEqual(pageErrors, [], "no script errors on the page");
  step("done");
} catch (error) {
  failed = true;
  console.error(error);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
