// Drives the dashboard in Debian's headless chromium (playwright-core, no browser
// download) for tests/e2e/dashboard.rs, which sets the scene (jobs, a worker, a dead
// job, a running job) and asserts on what this prints: one JSON object of observations.
// It asserts nothing itself, so a failure names what the browser saw.
//
// Environment: MCPQ_NODE_MODULES (where scripts/test-deps installed playwright-core),
// MCPQ_URL, MCPQ_TOKEN, MCPQ_CHROMIUM, MCPQ_SHOTS (a directory for
// screenshots), MCPQ_DEAD (a dead job id; its tool succeeds once requeued),
// MCPQ_DEAD_KIND, MCPQ_RUNNING (a running job id), MCPQ_EVIL (a job whose data holds
// markup), MCPQ_BATCH (a batch that takes a few seconds), MCPQ_EMAIL (an email job whose
// subject is markup), and the overview should count 3 scheduled jobs.
import { createRequire } from "node:module";

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
// playwright-core lives in the deps cache, not beside this file.
const { chromium } = createRequire(env("MCPQ_NODE_MODULES") + "/")("playwright-core");
const url = env("MCPQ_URL");
const shots = env("MCPQ_SHOTS");
const out = { dialogs: [], console_errors: [], steps: [] };
const step = (name) => out.steps.push(name);

const browser = await chromium.launch({
  executablePath: env("MCPQ_CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  // Any script that runs from job data would show here.
  page.on("dialog", async (d) => {
    out.dialogs.push({ type: d.type(), message: d.message() });
    // Only the dashboard's own confirmations are accepted.
    if (d.type() === "confirm") await d.accept();
    else await d.dismiss();
  });
  page.on("console", (m) => {
    if (m.type() === "error") out.console_errors.push(m.text());
  });

  // Log in.
  await page.goto(url + "/");
  out.login_url = new URL(page.url()).pathname;
  await page.fill("#token", "wrong-token-wrong-token-wrong");
  await page.click("button[type=submit]");
  out.wrong_token_alert = (await page.textContent("[role=alert]")) || "";
  await page.fill("#token", env("MCPQ_TOKEN"));
  await page.click("button[type=submit]");
  await page.waitForURL(url + "/");
  step("logged in");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "mcpq_session");
  out.cookie = session ? { httpOnly: session.httpOnly, sameSite: session.sameSite } : null;

  // The batch: its bar reaches 100 % without a reload.
  await page.goto(`${url}/batches/${env("MCPQ_BATCH")}`);
  out.batch_percent_start = await page.$eval("#batch-progress", (b) => b.value);
  let batchNavigations = 0;
  const countBatch = () => batchNavigations++;
  page.on("framenavigated", countBatch);
  await page.waitForFunction(
    () => document.querySelector("#batch-progress").value >= 100,
    null,
    { timeout: 60000 },
  );
  page.off("framenavigated", countBatch);
  out.batch_percent_end = await page.$eval("#batch-progress", (b) => b.value);
  out.batch_reloads = batchNavigations;
  await page.screenshot({ path: `${shots}/dashboard-batch.png`, fullPage: true });
  await page.goto(`${url}/servers`);
  await page.screenshot({ path: `${shots}/dashboard-servers.png`, fullPage: true });
  await page.goto(`${url}/batches`);
  await page.screenshot({ path: `${shots}/dashboard-batches.png`, fullPage: true });
  // Schedules and rate limits: the configured schedule's next run, the limits' usage.
  await page.goto(`${url}/schedules`);
  out.schedule_rows = await page.locator("table.schedules tbody tr").count();
  out.limit_text = (await page.textContent("table.limits tbody")) || "";
  await page.screenshot({ path: `${shots}/dashboard-schedules.png`, fullPage: true });
  await page.goto(`${url}/`);
  step("batch");

  // The overview's counts, after its first live update.
  await page.waitForFunction(
    () => document.querySelector("[data-field=rate]").textContent !== "-",
    null,
    { timeout: 15000 },
  );
  out.scheduled = (await page.textContent("[data-field='stats.scheduled']")).trim();
  out.dead_count = (await page.textContent("[data-field='stats.dead']")).trim();
  out.workers_rows = await page.locator("#workers tr").count();
  // The queues table and the chart come from Redis (jobs have ended by now).
  await page.waitForFunction(
    () => (document.querySelector("#rate-chart polyline").getAttribute("points") || "").length > 0,
    null,
    { timeout: 15000 },
  );
  out.queue_names = await page.$$eval("#queues tr td:first-child a", (as) => as.map((a) => a.textContent));
  await page.screenshot({ path: `${shots}/dashboard-overview.png`, fullPage: true });
  step("overview");

  // The dead job: found by its kind, opened, requeued, succeeded without a reload.
  await page.click("nav >> text=Dead letters");
  await page.selectOption("select[name=kind]", env("MCPQ_DEAD_KIND"));
  await page.click("form.filters button");
  out.dead_listed = await page.locator(`a[href="/jobs/${env("MCPQ_DEAD")}"]`).count();
  await page.screenshot({ path: `${shots}/dashboard-dead.png`, fullPage: true });
  await page.click(`a[href="/jobs/${env("MCPQ_DEAD")}"]`);
  await page.waitForURL(`${url}/jobs/${env("MCPQ_DEAD")}`);
  out.dead_status_before = (await page.textContent("#job-status")).trim();
  await page.click("text=Requeue");
  await page.waitForURL(`${url}/jobs/${env("MCPQ_DEAD")}`);
  let navigations = 0;
  page.on("framenavigated", () => navigations++);
  await page.waitForFunction(
    () => document.querySelector("#job-status").textContent.trim() === "succeeded",
    null,
    { timeout: 30000 },
  );
  out.dead_status_after = (await page.textContent("#job-status")).trim();
  out.reloads_while_waiting = navigations;
  await page.screenshot({ path: `${shots}/dashboard-job.png`, fullPage: true });
  step("requeued");

  // The running job: cancelled from its page.
  await page.goto(`${url}/jobs/${env("MCPQ_RUNNING")}`);
  out.running_status_before = (await page.textContent("#job-status")).trim();
  await page.click("text=Cancel");
  await page.waitForFunction(
    () => document.querySelector("#job-status").textContent.trim() === "cancelled",
    null,
    { timeout: 30000 },
  );
  out.running_status_after = (await page.textContent("#job-status")).trim();
  step("cancelled");

  // Markup in job data is text.
  await page.goto(`${url}/jobs/${env("MCPQ_EVIL")}`);
  await page.waitForTimeout(500);
  out.evil_text_shown = (await page.textContent("pre.result")) || "";
  out.evil_script_elements = await page.locator("main script").count();
  out.evil_img_elements = await page.locator("main img").count();
  await page.goto(`${url}/jobs/${env("MCPQ_EMAIL")}`);
  await page.waitForTimeout(500);
  out.email_text_shown = (await page.textContent("pre.result")) || "";
  out.email_script_elements = await page.locator("main script").count();
  out.email_img_elements = await page.locator("main img").count();
  step("escaped");

  // A POST without the CSRF token, from the page itself (same origin, cookie sent).
  out.csrf_missing_status = await page.evaluate(async (id) => {
    const resp = await fetch(`/jobs/${id}/cancel`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "",
      credentials: "same-origin",
    });
    return resp.status;
  }, env("MCPQ_EVIL"));
  step("csrf");

  await page.goto(`${url}/jobs`);
  await page.screenshot({ path: `${shots}/dashboard-jobs.png`, fullPage: true });
  await context.close();
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
