// The run viewer (public/ui.html): loaded from this origin only, as its
// Content-Security-Policy allows no other script (public/_headers).
"use strict";
const KEY = "arcrun.apiKey";          // sessionStorage: this tab only, never the URL
const LIVE_EVERY_MS = 2000;
const $ = (id) => document.getElementById(id);

/** An element; attrs with null/false are left out, `text` sets textContent; children may be strings. */
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) {
    const v = attrs[k];
    if (v == null || v === false) continue;
    if (k === "text") e.textContent = v; else if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null && kid !== false) e.append(kid);
  return e;
}
const badge = (s) => el("span", { class: `st st-${s}`, text: String(s).replace("_", " ") });
const iso = (ms) => new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
const time = (ms, short) => ms == null ? "—" : el("time", { datetime: new Date(ms).toISOString(), title: iso(ms), text: short ? iso(ms).slice(0, 19) : iso(ms) });
function dur(ms) {
  if (ms == null) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}
const rel = (ms) => (ms >= Date.now() ? `in ${dur(ms - Date.now())}` : `${dur(Date.now() - ms)} ago`);
const nodeName = (o) => (Number.isInteger(o.item) ? `${o.node_id}[${o.item}]` : o.node_id);
function dl(pairs, attrs) {
  const d = el("dl", attrs);
  for (const [k, v, testid] of pairs) if (v != null && v !== "" && v !== false) d.append(el("dt", { text: k }), el("dd", { "data-testid": testid }, v));
  return d;
}

// --- API ------------------------------------------------------------------------------
function showError(msg) { const e = $("api-error"); e.textContent = msg; e.hidden = false; }
function clearError() { $("api-error").hidden = true; $("api-error").textContent = ""; }

/** GET an API path with the stored key; resolves to {body, text}, or throws with the API's own error. */
async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw Object.assign(new Error("Enter an API key first."), { status: 0, final: true });
  let res;
  try {
    res = await fetch(path, { headers: { authorization: `Bearer ${key}` }, cache: "no-store" });
  } catch (e) {
    throw Object.assign(new Error(`Could not reach the API: ${e.message}`), { status: 0 });
  }
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  if (res.ok && body && body.success !== false) return { body, text };
  const err = body && typeof body.error === "object" ? body.error : null;
  const msg = err ? `${res.status} ${err.code}: ${err.message}` : `${res.status} ${res.statusText} ${text.slice(0, 200)}`;
  throw Object.assign(new Error(`The API refused: ${msg}`), { status: res.status, final: [401, 403, 404].includes(res.status) });
}

// --- the key -------------------------------------------------------------------------
function showKeyState() {
  $("key-state").textContent = sessionStorage.getItem(KEY) ? "Key set for this tab." : "No key set.";
}
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) { showError("Enter an API key."); return; }
  sessionStorage.setItem(KEY, key);
  $("api-key").value = "";
  showKeyState(); clearError(); loadRuns(false); route();
});
$("key-forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  stopRun(); $("run").hidden = true; $("runs-body").textContent = ""; $("runs-more").hidden = true;
  showKeyState();
});

// --- the list of runs ----------------------------------------------------------------
let listCursor = null, listGen = 0;
async function loadRuns(append) {
  const gen = append ? listGen : ++listGen;
  const qs = new URLSearchParams({ limit: "50" });
  if ($("status-filter").value) qs.set("status", $("status-filter").value);
  if (append && listCursor) qs.set("cursor", listCursor);
  let body;
  try { ({ body } = await api(`/runs?${qs}`)); } catch (e) { if (gen === listGen) showError(e.message); return; }
  if (gen !== listGen) return;
  clearError();
  const tbody = $("runs-body"), rows = document.createDocumentFragment();
  if (!append) tbody.textContent = "";
  for (const r of body.runs) {
    rows.append(el("tr", { "data-testid": "run-row", "data-run-id": r.run_id },
      el("td", { class: "id" }, el("a", { href: `#run/${encodeURIComponent(r.run_id)}`, class: "mono", text: r.run_id })),
      el("td", { text: r.workflow ?? "" }),
      el("td", { "data-testid": "run-row-status" }, r.status ? badge(r.status) : "?"),
      el("td", { class: "nowrap" }, time(r.created_at, true), el("div", { class: "muted" }, time(r.updated_at, true))),
      el("td", { class: "num", text: r.open_waits ? String(r.open_waits) : "" })));
  }
  tbody.append(rows);
  listCursor = body.next_cursor ?? null;
  $("runs-more").hidden = !listCursor;
  $("runs-empty").hidden = tbody.rows.length > 0;
}
$("status-filter").addEventListener("change", () => loadRuns(false));
$("runs-refresh").addEventListener("click", () => loadRuns(false));
$("runs-more").addEventListener("click", () => loadRuns(true));
$("open-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("open-id").value.trim();
  if (!id) return;
  const hash = `#run/${encodeURIComponent(id)}`;
  if (location.hash === hash) route(); else location.hash = hash;
});

// --- one run -------------------------------------------------------------------------
let runGen = 0, runTimer = null, lastText = null;
function stopRun() { runGen++; clearTimeout(runTimer); runTimer = null; }
function route() {
  const m = /^#run\/([^/]+)$/.exec(location.hash);
  if (!m) { stopRun(); $("run").hidden = true; return; }
  openRun(decodeURIComponent(m[1]));
}
window.addEventListener("hashchange", route);

function openRun(id) {
  stopRun();
  const gen = runGen;
  lastText = null;
  $("run-id").textContent = id;
  $("run-live").textContent = "Loading…";
  $("run").hidden = false;
  refreshRun(id, gen);
}

async function refreshRun(id, gen) {
  if (document.hidden && lastText) { runTimer = setTimeout(() => refreshRun(id, gen), LIVE_EVERY_MS); return; }
  let result;
  try { result = await api(`/runs/${encodeURIComponent(id)}`); } catch (e) {
    if (gen !== runGen) return;
    showError(e.message);
    $("run-live").textContent = e.final ? "Not refreshing." : "Retrying…";
    if (!e.final) runTimer = setTimeout(() => refreshRun(id, gen), LIVE_EVERY_MS);
    return;
  }
  if (gen !== runGen) return;
  clearError();
  const run = result.body;
  if (result.text !== lastText) { lastText = result.text; renderRun(run); }
  const delivering = ["waiting", "retrying"].includes(run.final_callback?.state);
  const live = run.status === "running" || run.status === "paused" || delivering;
  $("run-live").textContent = live
    ? `Live: refreshing every ${LIVE_EVERY_MS / 1000} s (last at ${iso(Date.now())}).`
    : `Finished; not refreshing (read at ${iso(Date.now())}).`;
  $("run").dataset.live = String(live);
  const row = document.querySelector(`tr[data-run-id="${CSS.escape(id)}"] [data-testid=run-row-status]`);
  if (row && row.textContent !== run.status) row.replaceChildren(badge(run.status));
  if (live) runTimer = setTimeout(() => refreshRun(id, gen), LIVE_EVERY_MS);
}

function renderRun(run) {
  const t0 = performance.now();
  $("run").dataset.status = run.status;
  $("run-summary").replaceWith(dl([
    ["Status", badge(run.status), "run-status"],
    ["Workflow", run.workflow, "run-workflow"],
    ["Attempt", run.attempt, "run-attempt"],
    ["Created", time(run.created_at)],
    ["Updated", time(run.updated_at)],
    ["Paused since", run.paused_since && time(run.paused_since)],
    ["Finished", run.finished_at && time(run.finished_at), "run-finished"],
    ["Duration", dur(run.duration_ms), "run-duration"],
  ], { id: "run-summary", "data-testid": "run-summary" }));

  const failure = $("run-failure");
  failure.textContent = "";
  if (run.error) {
    failure.append(el("div", { class: "failure", role: "note", "data-testid": "run-failure" },
      el("strong", { text: "Failed" }), run.failed_node ? " at node " : "",
      run.failed_node ? el("code", { "data-testid": "failed-node", text: run.failed_node }) : "",
      ": ", el("code", { "data-testid": "error-code", text: run.error.code }), " — ",
      el("span", { "data-testid": "error-message", text: run.error.message })));
  }

  renderTimeline(run);
  renderWaits($("open-waits"), run.waits || [], true);
  renderWaits($("closed-waits"), run.closed_waits || [], false);
  renderFinalCallback(run);
  $("run-output").textContent = "data" in run ? JSON.stringify(run.data, null, 2) : "(no output)";
  performance.mark("arcrun:run-rendered");
  $("run").dataset.renderMs = (performance.now() - t0).toFixed(1);
}

function renderTimeline(run) {
  const trace = run.trace || [];
  // A paused entry and the next entry of the same node, item and attempt: that wait's length.
  const key = (e) => `${e.attempt || 0}\u0000${e.node_id}\u0000${e.item ?? ""}`;
  const pausedAt = new Map(), waited = new Map(), endedBy = new Map();
  trace.forEach((e, i) => {
    const k = key(e);
    if (e.status === "paused") pausedAt.set(k, i);
    else if (pausedAt.has(k)) { const p = pausedAt.get(k); waited.set(i, e.at - trace[p].at); endedBy.set(p, i); pausedAt.delete(k); }
  });
  const rows = document.createDocumentFragment();
  trace.forEach((e, i) => {
    const notes = el("td");
    if (waited.has(i)) {
      notes.append(el("span", { "data-testid": "trace-wait", text: `${e.resumed ? "resumed" : "ended"} after waiting ${dur(waited.get(i))}` }));
    } else if (e.resumed) notes.append("resumed by callback");
    if (e.status === "paused") notes.append(endedBy.has(i) ? `waited until #${endedBy.get(i) + 1}` : "still waiting");
    if (e.attempt) notes.append(el("div", { text: `attempt ${e.attempt}` }));
    if (e.error) notes.append(el("div", { class: "mono", text: e.error }));
    rows.append(el("tr", { "data-testid": "trace-row", "data-status": e.status, "data-node": e.node_id, "data-resumed": e.resumed ? "true" : null, class: e.status },
      el("td", { class: "num", text: String(i + 1) }),
      el("td", { class: "num", title: iso(e.at), text: `+${dur(Math.max(0, e.at - run.created_at)) || "0 ms"}` }),
      el("td", { class: "mono", text: nodeName(e) }),
      el("td", null, badge(e.status)),
      el("td", { class: "num", text: dur(e.duration_ms) }),
      el("td", { class: "mono", text: e.task_id ?? "" }),
      notes));
  });
  $("timeline-body").replaceChildren(rows);
  const note = $("trace-note");
  const dropped = run.trace_truncated?.dropped_entries;
  note.hidden = !dropped && trace.length > 0;
  note.textContent = dropped ? `${dropped} earlier entries were dropped (trace_truncated); ${trace.length} are shown.` : "No trace entries yet.";
}

function eventsTable(events) {
  if (!events?.length) return el("p", { class: "muted", text: "No callbacks, heartbeats or polls received." });
  const body = el("tbody");
  for (const ev of events) {
    body.append(el("tr", { "data-testid": "wait-event", "data-kind": ev.kind, "data-outcome": ev.outcome },
      el("td", null, time(ev.at)), el("td", { text: ev.kind }), el("td", null, badge(ev.outcome))));
  }
  return el("table", { "aria-label": "Received" },
    el("thead", null, el("tr", null, el("th", { scope: "col", text: "Received" }), el("th", { scope: "col", text: "Kind" }), el("th", { scope: "col", text: "Outcome" }))), body);
}

function renderWaits(box, waits, open) {
  box.textContent = "";
  if (!waits.length) { box.append(el("p", { class: "muted", text: open ? "None open." : "None." })); return; }
  for (const w of waits) {
    const p = w.poll;
    const fields = open ? [
      ["Task", el("code", { text: w.task_id }), "wait-task"],
      ["Node", el("code", { text: nodeName(w) })],
      ["Waiting since", el("span", null, time(w.since), ` (${dur(Date.now() - w.since)})`)],
      ["Deadline", el("span", null, time(w.expires_at), ` (${rel(w.expires_at)})`), "wait-deadline"],
      ["Heartbeat", w.heartbeat_at && el("span", null, time(w.heartbeat_at), ` (${rel(w.heartbeat_at)})`), "wait-heartbeat"],
      ["Progress", w.progress !== undefined && el("pre", { text: JSON.stringify(w.progress, null, 2) }), "wait-progress"],
      ["Poll", p && `${p.kind === "task" ? "poll_task" : "status URL"} ${p.method} ${p.url} every ${dur(p.interval_ms)}; next ${iso(p.next_at)}; ${p.attempts} answered${p.errors ? `, ${p.errors} failed in a row` : ""}${p.last_status ? `; last HTTP ${p.last_status}` : ""}`, "wait-poll"],
    ] : [
      ["Task", el("code", { text: w.task_id }), "wait-task"],
      ["Node", el("code", { text: nodeName(w) })],
      ["Closed", el("span", null, badge(w.how), " ", time(w.at)), "wait-how"],
    ];
    box.append(el("div", { class: "card", "data-testid": open ? "open-wait" : "closed-wait", "data-task-id": w.task_id },
      dl(fields), eventsTable(w.events)));
  }
}

function renderFinalCallback(run) {
  const box = $("final-callback"), fc = run.final_callback;
  box.textContent = "";
  if (!fc) { box.append(el("p", { class: "muted", text: "None requested." })); return; }
  box.append(dl([
    ["URL", el("code", { text: fc.url })],
    ["State", badge(fc.state), "final-callback-state"],
    ["Next attempt", fc.next_attempt_at && time(fc.next_attempt_at)],
    ["At", fc.at && time(fc.at)],
  ]));
  const deliveries = run.deliveries || [];
  if (!deliveries.length) { box.append(el("p", { class: "muted", text: "No delivery attempts yet." })); return; }
  const body = el("tbody");
  for (const d of deliveries) {
    body.append(el("tr", { "data-testid": "delivery" }, el("td", null, time(d.at)),
      el("td", { text: d.status != null ? String(d.status) : "" }), el("td", { text: d.error ?? "" }), el("td", { class: "num", text: dur(d.duration_ms) })));
  }
  box.append(el("table", { "aria-label": "Delivery attempts" }, el("thead", null, el("tr", null,
    ...["Attempted", "HTTP status", "Error", "Took"].map((h) => el("th", { scope: "col", text: h })))), body));
}

// --- start ---------------------------------------------------------------------------
showKeyState();
if (sessionStorage.getItem(KEY)) { loadRuns(false); route(); } else { $("api-key").focus(); }
