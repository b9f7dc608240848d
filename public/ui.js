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
/** A list's timestamp: month, day and time (UTC); the full time on hover. */
const stamp = (ms) => ms == null ? "—" : el("time", { datetime: new Date(ms).toISOString(), title: iso(ms), text: iso(ms).slice(5, 19) });
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

/** Calls an API path with the stored key (GET unless `method`); resolves to {body, text, status}, or throws with the API's own error. */
async function api(path, method = "GET") {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw Object.assign(new Error("Enter an API key first."), { status: 0, final: true });
  let res;
  try {
    res = await fetch(path, { method, headers: { authorization: `Bearer ${key}` }, cache: "no-store" });
  } catch (e) {
    throw Object.assign(new Error(`Could not reach the API: ${e.message}`), { status: 0 });
  }
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  // An error is a non-2xx answer; `success: false` on a 2xx is a run that failed, not a refusal.
  if (res.ok && body) return { body, text, status: res.status };
  const err = body && typeof body.error === "object" ? body.error : null;
  const msg = err ? `${res.status} ${err.code}: ${err.message}` : `${res.status} ${res.statusText} ${text.slice(0, 200)}`;
  throw Object.assign(new Error(`The API refused: ${msg}`), { status: res.status, body, final: [401, 403, 404].includes(res.status) });
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
  clearTimeout(listTimer); $("runs-waits").textContent = "";
  showKeyState();
});

// --- the list of runs ----------------------------------------------------------------
const LIST_EVERY_MS = 5000;
let listCursor = null, listGen = 0, listPages = 0, listTimer = null;
const checkedStatuses = () => [...document.querySelectorAll("#status-filter input:checked")].map((i) => i.value);
async function loadRuns(append) {
  const gen = append ? listGen : ++listGen;
  const qs = new URLSearchParams({ limit: "50" });
  const statuses = checkedStatuses();
  if (statuses.length) qs.set("status", statuses.join(","));
  const workflow = $("workflow-filter").value.trim();
  if (workflow) qs.set("workflow", workflow);
  if (append && listCursor) qs.set("cursor", listCursor);
  let body;
  try { ({ body } = await api(`/runs?${qs}`)); } catch (e) { if (gen === listGen) showError(e.message); return; }
  if (gen !== listGen) return;
  clearError();
  const tbody = $("runs-body"), rows = document.createDocumentFragment();
  if (!append) tbody.textContent = "";
  for (const r of body.runs) {
    rows.append(el("tr", { "data-testid": "run-row", "data-run-id": r.run_id },
      el("td", { class: "id" }, el("a", { href: `#run/${encodeURIComponent(r.run_id)}`, class: "mono", text: r.run_id }),
        r.workflow ? el("div", { class: "wf", "data-testid": "run-row-workflow", text: r.workflow }) : null),
      el("td", { "data-testid": "run-row-status" }, r.status ? badge(r.status) : "?"),
      el("td", { class: "at" }, stamp(r.created_at), el("div", { class: "muted" }, stamp(r.updated_at))),
      el("td", { class: "num", "data-testid": "run-row-waits", "data-waits": String(r.open_waits ?? 0), text: r.open_waits ? String(r.open_waits) : "" })));
  }
  tbody.append(rows);
  listCursor = body.next_cursor ?? null;
  listPages = append ? listPages + 1 : 1;
  $("runs-more").hidden = !listCursor;
  $("runs-empty").hidden = tbody.rows.length > 0;
  // The total over the runs listed; with more to page through it is a lower bound.
  let waits = 0;
  for (const td of tbody.querySelectorAll("[data-testid=run-row-waits]")) waits += Number(td.dataset.waits);
  $("runs-waits").textContent = `${waits}${listCursor ? "+" : ""} open wait${waits === 1 ? "" : "s"} in the ${tbody.rows.length} run${tbody.rows.length === 1 ? "" : "s"} listed`;
  $("runs-waits").dataset.total = String(waits);
  const names = new Set([...$("workflow-names").options].map((o) => o.value));
  for (const r of body.runs) if (r.workflow && !names.has(r.workflow)) { names.add(r.workflow); $("workflow-names").append(el("option", { value: r.workflow })); }
  scheduleList();
}
/** Refreshes the first page by itself while the box is ticked and no further page was loaded (which a refresh would drop). */
function scheduleList() {
  clearTimeout(listTimer);
  if ($("runs-auto").checked && listPages <= 1 && sessionStorage.getItem(KEY)) {
    listTimer = setTimeout(() => (document.hidden ? scheduleList() : loadRuns(false)), LIST_EVERY_MS);
  }
}
$("status-filter").addEventListener("change", () => loadRuns(false));
$("workflow-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadRuns(false); });
$("runs-auto").addEventListener("change", scheduleList);
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
  if (shownRun !== id) { selectedNode = null; $("action-result").hidden = true; }
  shownRun = id;
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

let lastRun = null, timelineFrame = 0;
/** Timelines up to this many entries are built with the rest of the run; longer ones just after. */
const TIMELINE_AT_ONCE = 400;
function renderRun(run) {
  const t0 = performance.now();
  lastRun = run;
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

  renderActions(run);
  renderGraph(run);
  // A long timeline (a FOREACH's thousand items) costs the browser a few hundred ms to lay out:
  // it is built once the picture above it has been painted, so that shows first.
  cancelAnimationFrame(timelineFrame);
  if ((run.trace || []).length > TIMELINE_AT_ONCE) {
    timelineFrame = requestAnimationFrame(() => setTimeout(() => { if (lastRun === run) renderTimeline(run); }));
  } else renderTimeline(run);
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
  performance.mark("arcrun:timeline-rendered");
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

// --- actions on the run -----------------------------------------------------------------
const ACTIONS = {
  retry: { label: "Retry", ask: "Retry this failed run? Only what failed runs again." },
  cancel: { label: "Cancel", ask: "Cancel this run? Its open waits close and nothing more is called." },
  redeliver: { label: "Redeliver", ask: "Send the final callback again (a new round of attempts)?" },
};
function renderActions(run) {
  const open = run.status === "running" || run.status === "paused";
  $("act-retry").disabled = run.status !== "failed";
  $("act-cancel").disabled = !open;
  $("act-redeliver").disabled = open || !run.final_callback;
}
for (const btn of document.querySelectorAll("#run-actions button")) {
  btn.addEventListener("click", () => runAction(btn.dataset.action));
}
async function runAction(action) {
  const id = shownRun, a = ACTIONS[action];
  if (!id || !window.confirm(`${a.ask}\n\nRun ${id}`)) return;
  const box = $("action-result");
  box.hidden = false;
  box.dataset.action = action;
  box.dataset.state = "sending";
  box.replaceChildren(el("strong", { text: `${a.label}: sending…` }));
  let status, body, text;
  try {
    ({ status, body, text } = await api(`/runs/${encodeURIComponent(id)}/${action}`, "POST"));
  } catch (e) {
    status = e.status; body = e.body; text = e.body ? JSON.stringify(e.body) : e.message;
  }
  if (shownRun !== id) return;
  const ok = status >= 200 && status < 300;
  box.dataset.state = ok ? "ok" : "refused";
  box.dataset.status = String(status ?? 0);
  const summary = ok
    ? `${a.label}: ${status}${body?.status ? ` — the run is ${body.status}` : ""}`
    : `${a.label} refused: ${status || "no answer"}${body?.error?.code ? ` ${body.error.code}: ${body.error.message}` : ""}`;
  box.replaceChildren(el("strong", { "data-testid": "action-summary", text: summary }),
    el("pre", { "data-testid": "action-body", text: body ? JSON.stringify(body, null, 2) : text }));
  openRun(id); // read it again now, and go on refreshing if it is open again
}

// --- the graph as a picture ---------------------------------------------------------------
const SVGNS = "http://www.w3.org/2000/svg";
const NODE_W = 196, NODE_H = 86;
/** Below this scale labels get too small to read: a wider graph scrolls at full size instead. */
const MIN_FIT_SCALE = 0.8;
const LONGEST_PATH_FROM = 100;
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs || {}) if (attrs[k] != null) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
  for (const kid of kids) if (kid) e.append(kid);
  return e;
}
/** At most n characters, the middle elided (ids and URLs differ at both ends). */
function cut(s, n) {
  s = String(s ?? "");
  if (s.length <= n) return s;
  const head = Math.ceil((n - 1) * 0.6);
  return `${s.slice(0, head)}…${s.slice(s.length - (n - 1 - head))}`;
}
function edgeLabel(e) {
  let t = e.type;
  if (e.type === "ON_BRANCH" && e.branch != null) t += ` = ${e.branch}`;
  if (e.type === "FOREACH" && e.max_concurrency) t += ` ≤${e.max_concurrency}`;
  return t;
}
const STRUCTURAL = new Set(["CONTAINS", "HAS_STYLE", "HAS_BEHAVIOR", "IS_A", "CONTINUE"]);
let shownRun = null, selectedNode = null, graphView = null;

/** Lays the graph out (dagre, left to right) and draws it; only when the graph changed. */
function buildGraph(graph, key) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  // Network simplex places ranks best; past LONGEST_PATH_FROM nodes the cheaper longest-path
  // ranking keeps a big graph's layout well within the page's time budget.
  const ranker = graph.nodes.length > LONGEST_PATH_FROM ? "longest-path" : "network-simplex";
  g.setGraph({ rankdir: "LR", nodesep: 22, ranksep: 64, edgesep: 10, marginx: 12, marginy: 12, ranker });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  graph.edges.forEach((e, i) => {
    if (!g.hasNode(e.from) || !g.hasNode(e.to)) return;
    const label = edgeLabel(e);
    g.setEdge(e.from, e.to, { label, width: label.length * 6.6 + 10, height: 16, labelpos: "c" }, String(i));
  });
  dagre.layout(g);
  const { width, height } = g.graph();
  const root = svg("svg", { width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, role: "group", "aria-label": `Workflow graph: ${graph.nodes.length} nodes, ${graph.edges.length} edges`, "data-testid": "graph-svg" });
  root.append(svg("defs", null, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  const edges = svg("g", { class: "edges" }), labels = svg("g", { class: "edge-labels" }), nodes = svg("g", { class: "nodes" });
  for (const ref of g.edges()) {
    const e = g.edge(ref), src = graph.edges[Number(ref.name)];
    const d = e.points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    edges.append(svg("path", { d, class: `edge e-${src.type}${STRUCTURAL.has(src.type) ? " structural" : ""}`, "marker-end": "url(#arrow)" }));
    if (e.x != null) {
      labels.append(svg("g", { class: "edge-label", "data-testid": "edge-label", "data-from": src.from, "data-to": src.to, "data-type": src.type, transform: `translate(${e.x.toFixed(1)},${e.y.toFixed(1)})` },
        svg("rect", { x: -e.width / 2, y: -8, width: e.width, height: 16, rx: 3 }),
        svg("text", { "text-anchor": "middle", y: 4, text: e.label }),
        src.condition ? svg("title", { text: `${src.type}: ${src.condition}` }) : null));
    }
  }
  const byId = new Map();
  for (const n of graph.nodes) {
    const p = g.node(n.id);
    const x = p.x - NODE_W / 2, y = p.y - NODE_H / 2;
    const title = svg("title");
    const kind = svg("text", { x: 10, y: 31, class: "n-kind" });
    const line = svg("text", { x: 10, y: 47, class: "n-status", "data-testid": "node-status-line" });
    const due = svg("text", { x: 10, y: 61, class: "n-extra", "data-testid": "node-deadline" });
    const extra = svg("text", { x: 10, y: 75, class: "n-extra", "data-testid": "node-extra" });
    const bar = svg("g", { class: "n-bar" });
    const marker = svg("g", { class: "paused-marker", "data-testid": "paused-marker", transform: `translate(${NODE_W - 14},14)` },
      svg("circle", { r: 10 }), svg("rect", { x: -4.5, y: -5, width: 3, height: 10 }), svg("rect", { x: 1.5, y: -5, width: 3, height: 10 }));
    const box = svg("g", { class: "node", tabindex: "0", role: "button", "data-testid": "graph-node", "data-node": n.id, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` },
      title, svg("rect", { class: "n-box", width: NODE_W, height: NODE_H, rx: 6 }),
      svg("text", { x: 10, y: 16, class: "n-id", text: cut(n.label || n.id, 24) }), kind, line, due, extra, bar, marker);
    box.addEventListener("click", () => selectNode(n.id));
    box.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); selectNode(n.id); } });
    nodes.append(box);
    byId.set(n.id, { box, title, kind, line, due, extra, bar, node: n, x, y });
  }
  root.append(edges, labels, nodes);
  return { key, svg: root, byId, width, height, fresh: true };
}

function renderGraph(run) {
  const box = $("graph");
  if (!run.graph?.nodes) { graphView = null; box.replaceChildren(el("p", { class: "muted", text: "The run's graph is not shown yet." })); return; }
  if (typeof dagre === "undefined") { box.replaceChildren(el("p", { class: "alert", text: "The layout library (/vendor/dagre.min.js) did not load; run scripts/build.sh." })); return; }
  const key = JSON.stringify(run.graph);
  if (!graphView || graphView.key !== key) {
    const t0 = performance.now();
    graphView = buildGraph(run.graph, key);
    box.dataset.layoutMs = (performance.now() - t0).toFixed(1);
    box.replaceChildren(graphView.svg);
  }
  fitGraph();
  const progress = new Map((run.nodes || []).map((p) => [p.id, p]));
  const deadlines = new Map();
  for (const w of run.waits || []) {
    const d = deadlines.get(w.node_id);
    deadlines.set(w.node_id, { at: Math.min(d?.at ?? Infinity, w.expires_at), n: (d?.n ?? 0) + 1 });
  }
  for (const [id, v] of graphView.byId) {
    const p = progress.get(id) || { status: "waiting" };
    const status = p.status;
    v.box.setAttribute("class", `node s-${status}${id === selectedNode ? " selected" : ""}`);
    v.box.dataset.status = status;
    v.kind.textContent = cut(p.component ? p.component.replace(/^https?:\/\//, "") : v.node.type, 28);
    let line = status === "waiting" ? "not reached" : status;
    const it = p.items;
    v.bar.replaceChildren();
    if (it) {
      const done = it.succeeded + it.failed;
      v.box.dataset.itemsDone = String(done);
      v.box.dataset.itemsTotal = String(it.total);
      line = it.total ? `${done} of ${it.total} done` : `${line} · each item`;
      if (it.total) {
        const w = NODE_W - 2, ok = (w * it.succeeded) / it.total, bad = (w * it.failed) / it.total;
        v.bar.append(svg("rect", { class: "bar-bg", x: 1, y: NODE_H - 6, width: w, height: 5 }),
          svg("rect", { class: "bar-ok", x: 1, y: NODE_H - 6, width: ok.toFixed(1), height: 5 }),
          svg("rect", { class: "bar-bad", x: (1 + ok).toFixed(1), y: NODE_H - 6, width: bad.toFixed(1), height: 5 }));
      }
    }
    v.line.textContent = line;
    const extras = [];
    if (it && it.total) {
      if (it.failed) extras.push(`${it.failed} failed`);
      if (it.paused) extras.push(`${it.paused} paused`);
      if (it.running) extras.push(`${it.running} running`);
      if (it.queued) extras.push(`${it.queued} queued`);
    }
    const due = deadlines.get(id);
    v.box.dataset.deadline = due ? String(due.at) : "";
    v.due.textContent = status === "paused" && due ? `until ${shortTime(due.at)} · ${roughlyIn(due.at)}` : "";
    v.extra.textContent = cut(extras.join(" · "), 34);
    v.title.textContent = [`${id} — ${status}`, p.component, it && `items: ${JSON.stringify(it)}`, due && `deadline ${iso(due.at)}${due.n > 1 ? ` (earliest of ${due.n} waits)` : ""}`].filter(Boolean).join("\n");
    v.box.setAttribute("aria-label", `${id}: ${line}${due ? `, waiting until ${iso(due.at)}` : ""}`);
  }
  if (graphView.fresh) { graphView.fresh = false; showWhereItStands(); }
  renderNodeDetails(run);
}

/** How far off a time is, in its largest unit: short enough for a node's line. */
function roughlyIn(ms) {
  const s = Math.round((ms - Date.now()) / 1000), a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 172800 ? `${Math.floor(a / 3600)} h` : `${Math.floor(a / 86400)} d`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

/** A deadline as a node shows it: the time, and the date when it is not today's (UTC). */
function shortTime(ms) {
  const t = iso(ms), today = iso(Date.now()).slice(0, 10);
  return t.slice(0, 10) === today ? t.slice(11, 16) : t.slice(5, 16);
}

/** Fitted to the box's width when ticked, or when that keeps labels readable; else full size, scrolling. */
function fitGraph() {
  const v = graphView, box = $("graph");
  if (!v) return;
  const scale = box.clientWidth / v.width;
  v.svg.classList.toggle("fit", $("graph-fit").checked || (scale < 1 && scale >= MIN_FIT_SCALE));
}

/**
 * A freshly drawn graph too big for its box scrolls, along each axis where it must, to centre
 * the first node that failed, is paused or is running (else the first node).
 */
function showWhereItStands() {
  const box = $("graph"), v = graphView;
  if (v.svg.classList.contains("fit")) return;
  const order = ["failed", "paused", "running"];
  let best = null;
  for (const n of v.byId.values()) {
    const rank = order.indexOf(n.box.dataset.status);
    if (rank >= 0 && (!best || rank < best.rank)) best = { n, rank };
  }
  const target = best?.n ?? v.byId.values().next().value;
  if (!target) return;
  if (target.x + NODE_W > box.clientWidth) box.scrollLeft = Math.max(0, target.x + NODE_W / 2 - box.clientWidth / 2);
  if (target.y + NODE_H > box.clientHeight) box.scrollTop = Math.max(0, target.y + NODE_H / 2 - box.clientHeight / 2);
}
window.addEventListener("resize", fitGraph);
$("graph-fit").addEventListener("change", fitGraph);

function selectNode(id) {
  selectedNode = selectedNode === id ? null : id;
  for (const [nid, v] of graphView?.byId || []) v.box.classList.toggle("selected", nid === selectedNode);
  if (lastRun) renderNodeDetails(lastRun);
  if (selectedNode) $("node-details").scrollIntoView({ block: "nearest" });
}

/** What the run shows of the selected node: trace entries, waits, what goes in, output and error. */
function renderNodeDetails(run) {
  const box = $("node-details");
  const node = selectedNode && run.graph?.nodes.find((n) => n.id === selectedNode);
  if (!node) { box.hidden = true; box.textContent = ""; return; }
  const p = (run.nodes || []).find((x) => x.id === node.id) || { status: "waiting" };
  const entries = (run.trace || []).filter((e) => e.node_id === node.id);
  const incoming = run.graph.edges.filter((e) => e.to === node.id);
  const errors = entries.filter((e) => e.error).map((e) => `${nodeName(e)}: ${e.error}`);
  if (run.failed_node === node.id && run.error) errors.push(`the run failed here: ${run.error.code}: ${run.error.message}`);
  const waits = (run.waits || []).filter((w) => w.node_id === node.id);
  const isOutput = node.type === "Output" && "data" in run;
  const rows = el("tbody");
  for (const e of entries.slice(-200)) {
    rows.append(el("tr", { "data-testid": "node-trace-row", "data-status": e.status },
      el("td", { class: "mono", text: nodeName(e) }), el("td", null, badge(e.status)), el("td", null, time(e.at, true)),
      el("td", { class: "num", text: dur(e.duration_ms) }), el("td", { class: "mono", text: e.task_id ?? "" }), el("td", { class: "mono", text: e.error ?? "" })));
  }
  const input = {
    from: incoming.map((e) => `${e.from} (${edgeLabel(e)}${e.condition ? `: ${e.condition}` : ""})`),
    ...(Object.keys(node.data || {}).length ? { data: node.data } : {}),
    ...(incoming.find((e) => e.type === "FOREACH") ? { foreach: (({ items, iterator, max_concurrency, tolerated_failures, tolerated_failure_percent }) => ({ items, iterator, max_concurrency, tolerated_failures, tolerated_failure_percent }))(incoming.find((e) => e.type === "FOREACH")) } : {}),
    ...(node.join ? { join: node.join } : {}),
    ...(node.wait_timeout_seconds ? { wait_timeout_seconds: node.wait_timeout_seconds } : {}),
  };
  box.hidden = false;
  box.dataset.node = node.id;
  box.replaceChildren(
    el("h4", null, "Node ", el("code", { text: node.id }), " ", badge(p.status === "waiting" ? "waiting" : p.status)),
    dl([
      ["Type", node.type],
      ["Component", p.component && el("code", { text: p.component }), "node-component"],
      ["Items", p.items && `${p.items.succeeded + p.items.failed} of ${p.items.total} done — ${p.items.succeeded} succeeded, ${p.items.failed} failed, ${p.items.paused} paused, ${p.items.running} running, ${p.items.queued} queued`, "node-items"],
      ["Open waits", waits.length && `${waits.length}; earliest deadline ${iso(Math.min(...waits.map((w) => w.expires_at)))}`, "node-waits"],
    ]),
    el("h5", { text: "Input (as the graph gives it; templates unrendered)" }),
    el("pre", { "data-testid": "node-input", text: JSON.stringify(input, null, 2) }),
    el("h5", { text: "Context that reached it" }),
    el("pre", { "data-testid": "node-context", text: "…" }),
    el("h5", { text: "Output" }),
    el("pre", { "data-testid": "node-output", text: isOutput ? JSON.stringify(run.data, null, 2) : "…" }),
    el("h5", { text: "Error" }),
    el("pre", { "data-testid": "node-error", text: errors.length ? errors.join("\n") : "(none)" }),
    el("h5", { text: `Trace entries (${entries.length}${entries.length > 200 ? ", the last 200 shown" : ""})` }),
    entries.length ? el("div", { class: "scroll short" }, el("table", { "aria-label": `Trace entries of ${node.id}` }, el("thead", null, el("tr", null,
      ...["Node", "Status", "At", "Took", "Task", "Error"].map((h) => el("th", { scope: "col", text: h })))), rows)) : el("p", { class: "muted", text: "None yet." }));
  fillNodeData(run, node.id, isOutput);
}

/** The node's own input and output, from GET /runs/{id}/nodes/{node}: read again only when the run changed. */
let nodeData = { key: null, answer: null };
async function fillNodeData(run, nodeId, isOutput) {
  const key = `${run.run_id}\n${nodeId}\n${run.updated_at}\n${run.status}`;
  if (nodeData.key !== key) {
    nodeData = { key, answer: null };
    try {
      const { body } = await api(`/runs/${encodeURIComponent(run.run_id)}/nodes/${encodeURIComponent(nodeId)}`);
      if (nodeData.key === key) nodeData.answer = body;
    } catch (e) {
      if (nodeData.key === key) nodeData.answer = { failed: e.message };
    }
  }
  const box = $("node-details");
  if (nodeData.key !== key || box.dataset.node !== nodeId) return;
  const a = nodeData.answer || {};
  const released = a.kept === false ? "(a finished run keeps only its result, under the Output node)" : null;
  const show = (v, none) => (a.failed ? `(could not be read: ${a.failed})` : v !== undefined ? JSON.stringify(v, null, 2) : released ?? none);
  box.querySelector('[data-testid="node-context"]').textContent = show(a.input, "(none now: it is kept only while the node is called, paused or failed)");
  if (!isOutput) box.querySelector('[data-testid="node-output"]').textContent = show(a.output, "(none yet)");
}

// --- start ---------------------------------------------------------------------------
showKeyState();
if (sessionStorage.getItem(KEY)) { loadRuns(false); route(); } else { $("api-key").focus(); }
