// mcpq dashboard: live counts, the rate chart, a job's live status, confirmations.
// Everything from the server is written with textContent: never as HTML.
"use strict";

function field(data, path) {
  return path.split(".").reduce((v, k) => (v == null ? v : v[k]), data);
}

function age(ms) {
  if (ms == null) return "-";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
  return (ms / 3600000).toFixed(1) + " h";
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  return td;
}

function drawRate(line, history) {
  if (!line || !Array.isArray(history) || history.length < 2) return;
  // Per second in each 10 s slot; the newest slot is still filling: left out.
  const rates = history.slice(0, -1).map((s) => ((s.succeeded || 0) + (s.dead || 0)) / 10);
  const top = Math.max(1, ...rates);
  const step = 300 / Math.max(1, rates.length - 1);
  line.setAttribute("points", rates.map((r, i) => (i * step).toFixed(1) + "," + (58 - (r / top) * 56).toFixed(1)).join(" "));
}

function queueRows(body, queues) {
  body.replaceChildren();
  for (const q of queues) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/jobs?status=queued&queue=" + encodeURIComponent(q.name);
    a.textContent = q.name;
    name.append(a);
    if (q.paused) {
      const tag = document.createElement("span");
      tag.className = "status paused";
      tag.textContent = "paused";
      name.append(" ", tag);
    }
    const qd = q.queued || {};
    tr.append(name, cell(qd.high), cell(qd.normal), cell(qd.low), cell(age(q.oldest_ms)), cell(q.started_last_minute));
    body.append(tr);
  }
}

function liveOverview(section) {
  const url = section.dataset.live;
  const line = document.querySelector("#rate-chart polyline");
  async function tick() {
    let data;
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) return;
      data = await resp.json();
    } catch (e) {
      return;
    }
    if (data.rate == null) data.rate = "-";
    section.querySelectorAll("[data-field]").forEach((el) => {
      const v = field(data, el.dataset.field);
      el.textContent = el.dataset.format === "age" ? age(v) : v == null ? "0" : String(v);
    });
    drawRate(line, data.history);
    const queues = document.getElementById("queues");
    if (queues && Array.isArray(data.queues)) queueRows(queues, data.queues);
    const body = document.getElementById("workers");
    if (body && Array.isArray(data.workers)) {
      body.replaceChildren();
      if (data.workers.length === 0) {
        const tr = document.createElement("tr");
        const td = cell("No live worker.");
        td.colSpan = 6;
        tr.append(td);
        body.append(tr);
      }
      for (const w of data.workers) {
        const tr = document.createElement("tr");
        tr.append(cell(w.id), cell(w.host), cell(w.pid), cell(w.running + " / " + w.concurrency), cell(age(w.heartbeat_age_ms) + " ago"), cell(w.version));
        body.append(tr);
      }
    }
  }
  tick();
  setInterval(tick, 2000);
}

function liveStatus(el) {
  const url = el.dataset.liveStatus;
  async function tick() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) return;
      const data = await resp.json();
      if (data.status && data.status !== el.textContent) {
        el.textContent = data.status;
        el.className = "status " + data.status;
        el.dataset.changed = "1";
        const link = document.getElementById("job-changed");
        if (link) link.hidden = false;
      }
    } catch (e) {
      /* the next tick tries again */
    }
  }
  setInterval(tick, 1000);
}

function liveBatch(section) {
  const url = section.dataset.liveBatch;
  const bar = document.getElementById("batch-progress");
  async function tick() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) return;
      const data = await resp.json();
      if (bar && typeof data.percent === "number") bar.value = data.percent;
      section.querySelectorAll("[data-batch]").forEach((el) => {
        const v = data[el.dataset.batch];
        el.textContent = v == null ? "-" : String(v);
      });
    } catch (e) {
      /* the next tick tries again */
    }
  }
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const batch = document.querySelector("[data-live-batch]");
  if (batch) liveBatch(batch);
  const section = document.querySelector("[data-live]");
  if (section) liveOverview(section);
  const status = document.querySelector("[data-live-status]");
  if (status) liveStatus(status);
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});
