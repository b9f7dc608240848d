// What workflows and clients of the engine we descend from rely on, end to end in workerd:
// date variables (set when a run starts, kept across a resume, overridden by the trigger),
// the built-ins comp_uppercase and comp_counter, edge aliases (Chinese words included) and
// structural edges, the old answer fields (duration_ms, failed_node, task_id / paused_again),
// a resumed task's id kept to its node, the deprecated /executions routes, /health, CORS for
// ALLOWED_ORIGINS, and sub-workflows (`workflow://{name}`) as child runs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startDaemon } from "../../daemon/daemon.mjs";
import {
    startWorker,
    startComponent,
    pendingComponent,
    postCallback,
    waitUntil,
    waitForStatus,
    kvOps,
    TEST_API_KEY_HASH,
} from "./harness.mjs";
import { sleep, sha256hex } from "./harness.mjs";
import { runView, kvCaughtUp, listedRuns, assertCallbackAnswer } from "./settle.mjs";


/** Never starts anything: must see none of the others' runs. */
const OTHER_KEY = "compat-other-key";
/** Only the /executions test: its paused listing holds exactly what it started. */
const EXEC_KEY = "compat-exec-key";
/** Only the sub-workflow (a) test: GET /runs lists exactly the parent and the child. */
const SUB_KEY = "compat-sub-key";
/** Only the self-calling workflow: GET /runs counts the runs it created. */
const LOOP_KEY = "compat-loop-key";

const ALLOWED = "https://app.example";
const EVIL = "https://evil.example";

let worker; // started with ALLOWED_ORIGINS = ALLOWED
let echo; // answers its input back (minus callback_url), keeps every request
let pend; // answers pending; the test calls back
let failing; // answers {success: false, error: "x"}

before(async () => {
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body ?? {};
        return { ...rest, echoed: true };
    });
    pend = await pendingComponent();
    failing = await startComponent(() => ({ success: false, error: "x" }));
    worker = await startWorker({
        bindings: {
            ALLOWED_ORIGINS: ALLOWED,
            API_KEY_HASHES: [TEST_API_KEY_HASH, ...[OTHER_KEY, EXEC_KEY, SUB_KEY, LOOP_KEY].map(sha256hex)].join(","),
        },
    });
}, { timeout: 120_000 });

after(async () => {
    // The components close even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await echo?.close();
        await pend?.close();
        await failing?.close();
    }
}, { timeout: 120_000 });

/** `node:status` of each trace entry. */
const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);

/** POST /execute; asserts a 200 and hands back the whole response. */
async function exec(graph, context = {}, { apiKey, headers } = {}) {
    const r = await worker.fetchJson("/execute", { body: { graph, context }, apiKey, headers });
    assert.equal(r.status, 200, `POST /execute: ${r.text}`);
    return r;
}

/** The one call `pend` received on `p` (waits a moment for it). */
async function callOn(p, n = 1) {
    return waitUntil(`call #${n} on ${p}`, () => pend.on(p)[n - 1], { timeoutMs: 10_000, everyMs: 20 });
}

/** The run id in a callback URL the Worker handed out. */
const runIdOfCallback = (url) => new URL(url).pathname.split("/")[2];

// ---------------------------------------------------------------------------------------
// Date variables

const DAY_MS = 86_400_000;
const pad = (n, w = 2) => String(n).padStart(w, "0");
const ymd = (ms) => new Date(ms).toISOString().slice(0, 10);

/** The date variables for an instant, computed here independently of the Worker. */
function expectedDateVars(ms) {
    const d = new Date(ms);
    const midnight = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
    const weekday = (d.getUTCDay() + 6) % 7; // 0 = Monday
    const thursday = new Date(midnight + (3 - weekday) * DAY_MS);
    const weekYear = thursday.getUTCFullYear();
    const week = Math.floor((thursday.getTime() - Date.UTC(weekYear, 0, 1)) / DAY_MS / 7) + 1;
    return {
        _today: ymd(ms),
        _yesterday: ymd(ms - DAY_MS),
        _now: d.toISOString(),
        _now_unix: ms,
        _now_unix_s: Math.floor(ms / 1000),
        _year: pad(d.getUTCFullYear(), 4),
        _month: pad(d.getUTCMonth() + 1),
        _day: pad(d.getUTCDate()),
        _hour: pad(d.getUTCHours()),
        _minute: pad(d.getUTCMinutes()),
        _second: pad(d.getUTCSeconds()),
        _iso_week: `${weekYear}-W${pad(week)}`,
    };
}
const DATE_KEYS = Object.keys(expectedDateVars(0));

/** Checks a set of date variables against the window [t0, t1] the request ran in. */
function assertDateVars(vars, t0, t1, what) {
    const unix = vars._now_unix;
    assert.equal(typeof unix, "number", `${what}: _now_unix is a number: ${JSON.stringify(vars)}`);
    // Same machine, same clock: the run started while the request was in flight.
    assert.ok(unix >= t0 - 20 && unix <= t1 + 20, `${what}: _now_unix ${unix} within the request [${t0}, ${t1}]`);
    // A request that straddles midnight may see either day, but one consistent instant.
    assert.ok([ymd(t0), ymd(t1)].includes(vars._today), `${what}: _today ${vars._today} is the request's day`);
    assert.deepEqual(pick(vars, DATE_KEYS), expectedDateVars(unix), `${what}: every variable agrees with _now_unix`);
    assert.match(vars._today, /^\d{4}-\d{2}-\d{2}$/);
    assert.match(vars._yesterday, /^\d{4}-\d{2}-\d{2}$/);
    assert.match(vars._now, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    assert.match(vars._iso_week, /^\d{4}-W\d{2}$/);
    for (const k of ["_month", "_day", "_hour", "_minute", "_second"]) assert.match(vars[k], /^\d{2}$/, k);
    assert.match(vars._year, /^\d{4}$/);
    assert.ok(Number.isInteger(vars._now_unix_s));
}

const pick = (obj, keys) => Object.fromEntries(keys.map((k) => [k, obj?.[k]]));

/** An Output node's data rendering every date variable as a whole value, plus a page name. */
const renderedDates = () => ({
    page: "report-{{_today}}",
    at: "{{_year}}/{{_month}}/{{_day}} {{_hour}}:{{_minute}}:{{_second}} ({{_iso_week}})",
    r: Object.fromEntries(DATE_KEYS.map((k) => [k, `{{${k}}}`])),
});

test("date variables: in every run's context and templates, overridden by the trigger, fixed across a resume", { timeout: 60_000 }, async () => {
    // At once: an Output node renders them.
    const quick = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "c", type: "Component", componentId: `${echo.url}/dates-quick` },
            { id: "out", type: "Output", data: renderedDates() },
        ],
        edges: [{ from: "in", to: "c", type: "PIPE" }, { from: "c", to: "out", type: "PIPE" }],
    };
    let t0 = Date.now();
    const r = await exec(quick, { topic: "x" });
    let t1 = Date.now();
    assert.equal(r.body.status, "completed", r.text);
    const d = r.body.data;
    assertDateVars(d.r, t0, t1, "rendered");
    assert.equal(typeof d.r._now_unix, "number", "a whole placeholder keeps the number");
    assert.equal(d.page, `report-${d.r._today}`);
    assert.equal(d.at, `${d.r._year}/${d.r._month}/${d.r._day} ${d.r._hour}:${d.r._minute}:${d.r._second} (${d.r._iso_week})`);
    // The component received them in its input, and they flowed on to the Output.
    const sent = echo.requests().filter((q) => q.path === "/dates-quick").at(-1).body;
    assert.deepEqual(pick(sent, DATE_KEYS), d.r, "the component's input holds the same values");
    assert.deepEqual(pick(d, DATE_KEYS), d.r);
    assert.equal(sent.topic, "x");

    // The trigger's context wins over a date variable; the others stay.
    t0 = Date.now();
    const o = await exec(quick, { _today: "1999-01-01", _iso_week: "mine" });
    t1 = Date.now();
    assert.equal(o.body.status, "completed", o.text);
    assert.equal(o.body.data.page, "report-1999-01-01");
    assert.equal(o.body.data.r._today, "1999-01-01");
    assert.equal(o.body.data.r._iso_week, "mine");
    const rest = { ...o.body.data.r, _today: undefined, _iso_week: undefined };
    const expectedRest = { ...expectedDateVars(o.body.data.r._now_unix), _today: undefined, _iso_week: undefined };
    assert.deepEqual(rest, expectedRest, "the variables the trigger did not set are the real ones");
    assert.ok(o.body.data.r._now_unix >= t0 - 20 && o.body.data.r._now_unix <= t1 + 20);

    // Across a resume: recorded at the first component, read again after more than a second.
    const slow = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "slow", type: "Component", componentId: `${pend.url}/dates-slow` },
            { id: "out", type: "Output", data: renderedDates() },
        ],
        edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
    };
    t0 = Date.now();
    const p = await exec(slow);
    t1 = Date.now();
    assert.equal(p.body.status, "paused", p.text);
    const call = await callOn("/dates-slow");
    const first = pick(call.body, DATE_KEYS);
    assertDateVars(first, t0, t1, "at the first component");
    await sleep(1100);
    const cbAt = Date.now();
    const answer = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: 1 } });
    assert.equal(answer.status, 200, answer.text);
    assertCallbackAnswer(answer.body, { status: "completed", run_id: p.body.run_id, task_id: call.taskId });
    assert.ok(cbAt - first._now_unix >= 1100, "the callback came more than a second later");
    const done = await runView(worker, p.body.run_id);
    assert.equal(done.status, "completed");
    assert.deepEqual(done.data.r, first, "the Output rendered the values the run started with");
    assert.equal(done.data.r._now_unix, first._now_unix);
    assert.equal(done.data.page, `report-${first._today}`);
    assert.deepEqual(pick(done.data, DATE_KEYS), first, "and the context still holds them");
    // And so does the record in KV, once written.
    const { record } = await kvCaughtUp(worker, p.body.run_id);
    assert.deepEqual(record.status.completed.output.r, first);
});

// ---------------------------------------------------------------------------------------
// Built-ins

test("built-ins comp_uppercase and comp_counter run in graphs", { timeout: 60_000 }, async () => {
    // The chain of compat.rs, with a real component in the middle.
    const chain = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "up", type: "Component", componentId: "comp_uppercase" },
            { id: "c1", type: "Component", componentId: "comp_counter" },
            { id: "mid", type: "Component", componentId: `${echo.url}/builtins` },
            { id: "c2", type: "Component", componentId: "comp_counter" },
            { id: "out", type: "Output", data: { up: "{{up}}", c1: "{{c1}}", c2: "{{c2}}" } },
        ],
        edges: [
            { from: "in", to: "up", type: "PIPE" },
            { from: "up", to: "c1", type: "PIPE" },
            { from: "c1", to: "mid", type: "PIPE" },
            { from: "mid", to: "c2", type: "PIPE" },
            { from: "c2", to: "out", type: "PIPE" },
        ],
    };
    const r = await exec(chain, { text: "hello" });
    assert.equal(r.body.status, "completed", r.text);
    assert.deepEqual(r.body.data.up, { text: "HELLO" }, "{text} → {text: upper-cased}, nothing else");
    assert.deepEqual(r.body.data.c1, { count: 1 }, "no count: starts at 1");
    assert.deepEqual(r.body.data.c2, { count: 2 });
    assert.equal(r.body.data.text, "HELLO");
    assert.equal(r.body.data.count, 2);
    const midSaw = echo.requests().filter((q) => q.path === "/builtins").at(-1).body;
    assert.equal(midSaw.text, "HELLO", "the upper-cased text flowed to the next component");
    assert.equal(midSaw.count, 1);
    assert.deepEqual(statuses(r.body.trace), ["in:succeeded", "up:succeeded", "c1:succeeded", "mid:succeeded", "c2:succeeded", "out:succeeded"]);

    const single = (componentId) => ({
        nodes: [
            { id: "in", type: "Input" },
            { id: "b", type: "Component", componentId },
            { id: "out", type: "Output", data: { b: "{{b}}" } },
        ],
        edges: [{ from: "in", to: "b", type: "PIPE" }, { from: "b", to: "out", type: "PIPE" }],
    });
    // A `text` object: its string fields upper-cased, the others as they are.
    const obj = await exec(single("comp_uppercase"), { text: { a: "x", b: 2, c: "ÿes" }, other: "stays" });
    assert.equal(obj.body.status, "completed", obj.text);
    assert.deepEqual(obj.body.data.b, { text: { a: "X", b: 2, c: "ŸES" } });
    assert.equal(obj.body.data.other, "stays", "with `text` present, other fields are not touched");
    // No `text`: every top-level string field of the input.
    const all = await exec(single("comp_uppercase"), { title: "t", name: "ada lovelace", n: 1, nested: { s: "x" }, list: ["y"] });
    assert.equal(all.body.status, "completed", all.text);
    const b = all.body.data.b;
    assert.equal(b.title, "T");
    assert.equal(b.name, "ADA LOVELACE");
    assert.equal(b.n, 1);
    assert.deepEqual(b.nested, { s: "x" }, "nested strings are not");
    assert.deepEqual(b.list, ["y"]);
    assert.equal(b.text, undefined);
    assert.equal(all.body.data.title, "T", "and the upper-cased fields flow on");
    // The counter from a given count, a numeric string, and something else.
    for (const [count, want] of [[41, 42], ["41", 42], [0, 1], ["x", 1]]) {
        const c = await exec(single("comp_counter"), { count });
        assert.equal(c.body.status, "completed", c.text);
        assert.deepEqual(c.body.data.b, { count: want }, `count ${JSON.stringify(count)}`);
    }
});

// ---------------------------------------------------------------------------------------
// Edge aliases and structural edges

test("edge aliases (SUCCESS, FAIL, CLICK, TRUE, FALSE, ELSE, BRANCH, SUBFLOW and the Chinese words) route like their edges", { timeout: 60_000 }, async () => {
    const twoWay = (componentId, okEdge, failEdge) => ({
        nodes: [
            { id: "c", type: "Component", componentId },
            { id: "good", type: "Output", data: { path: "good" } },
            { id: "bad", type: "Output", data: { path: "bad", why: "{{c.error}}" } },
        ],
        edges: [
            { from: "c", to: "good", type: okEdge },
            { from: "c", to: "bad", type: failEdge },
        ],
    });
    for (const [ok, fail] of [["SUCCESS", "FAIL"], ["完成後", "失敗時"], ["ON_CLICK", "ON_FAIL"], ["CLICK", "FAIL"], ["SUBFLOW", "失敗時"], ["success", "fail"]]) {
        const bad = await exec(twoWay(failing.url, ok, fail));
        assert.equal(bad.body.status, "completed", `${ok}/${fail}: ${bad.text}`);
        assert.equal(bad.body.data.path, "bad", `${ok}/${fail} on a failure`);
        assert.equal(bad.body.data.why, "x");
        assert.deepEqual(statuses(bad.body.trace).sort(), ["bad:succeeded", "c:failed", "good:skipped"], `${ok}/${fail}`);
        const good = await exec(twoWay(`${echo.url}/alias`, ok, fail));
        assert.equal(good.body.status, "completed", `${ok}/${fail}: ${good.text}`);
        assert.equal(good.body.data.path, "good", `${ok}/${fail} on a success`);
        assert.deepEqual(statuses(good.body.trace).sort(), ["bad:skipped", "c:succeeded", "good:succeeded"], `${ok}/${fail}`);
    }

    // IF (條件滿足時) into if_control, then TRUE/FALSE aliases out of it.
    const ifGraph = (yes, no) => ({
        nodes: [
            { id: "in", type: "Input" },
            { id: "check", type: "Component", componentId: "if_control", data: { condition: "n > 1" } },
            { id: "yes", type: "Output", data: { path: "yes" } },
            { id: "no", type: "Output", data: { path: "no" } },
        ],
        edges: [
            { from: "in", to: "check", type: "條件滿足時", condition: "n >= 0" },
            { from: "check", to: "yes", type: yes },
            { from: "check", to: "no", type: no },
        ],
    });
    for (const [yes, no] of [["TRUE", "ELSE"], ["TRUE", "FALSE"], ["成立時", "否則"], ["為真時", "為假時"], ["ON_TRUE", "不成立時"]]) {
        for (const [n, want] of [[5, "yes"], [0, "no"]]) {
            const r = await exec(ifGraph(yes, no), { n });
            assert.equal(r.body.status, "completed", `${yes}/${no} n=${n}: ${r.text}`);
            assert.equal(r.body.data.path, want, `${yes}/${no} n=${n}`);
            const other = want === "yes" ? "no" : "yes";
            assert.deepEqual(statuses(r.body.trace).sort(), ["check:succeeded", "in:succeeded", `${other}:skipped`, `${want}:succeeded`].sort(), `${yes}/${no} n=${n}`);
        }
    }
    // 條件滿足時 whose condition does not hold: its target is skipped.
    const gated = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "gate", type: "Component", componentId: `${echo.url}/gated` },
            { id: "other", type: "Output", data: { path: "other" } },
        ],
        edges: [
            { from: "in", to: "gate", type: "條件滿足時", condition: "n > 100" },
            { from: "in", to: "other", type: "完成後" },
        ],
    };
    const hitsGated = echo.hits("/gated");
    const g = await exec(gated, { n: 5 });
    assert.equal(g.body.status, "completed", g.text);
    assert.deepEqual(statuses(g.body.trace).sort(), ["gate:skipped", "in:succeeded", "other:succeeded"]);
    assert.equal(echo.hits("/gated"), hitsGated);
    const g2 = await exec(gated, { n: 500 });
    assert.deepEqual(statuses(g2.body.trace).sort(), ["gate:succeeded", "in:succeeded", "other:succeeded"]);
    assert.equal(echo.hits("/gated"), hitsGated + 1);

    // BRANCH out of switch.
    const sw = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "pick", type: "Component", componentId: "switch", data: { value: "{{color}}", cases: ["red", "blue"] } },
            { id: "red", type: "Output", data: { path: "red" } },
            { id: "blue", type: "Output", data: { path: "blue" } },
        ],
        edges: [
            { from: "in", to: "pick", type: "PIPE" },
            { from: "pick", to: "red", type: "BRANCH", branch: "red" },
            { from: "pick", to: "blue", type: "BRANCH", branch: "blue" },
        ],
    };
    for (const color of ["red", "blue"]) {
        const r = await exec(sw, { color });
        assert.equal(r.body.status, "completed", r.text);
        assert.equal(r.body.data.path, color);
        assert.deepEqual(statuses(r.body.trace).sort(), ["blue", "in", "pick", "red"].map((n) => `${n}:${n === color || n === "in" || n === "pick" ? "succeeded" : "skipped"}`).sort());
    }

    // 對每個 is FOREACH, over a real component.
    const each = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${echo.url}/each` },
            { id: "out", type: "Output", data: { count: "{{each.count}}", results: "{{each.results}}" } },
        ],
        edges: [{ from: "in", to: "each", type: "對每個", items: "xs" }, { from: "each", to: "out", type: "完成後" }],
    };
    const hitsEach = echo.hits("/each");
    const fe = await exec(each, { xs: [1, 2, 3] });
    assert.equal(fe.body.status, "completed", fe.text);
    assert.equal(fe.body.data.count, 3);
    assert.equal(echo.hits("/each"), hitsEach + 3, "one call per item");
    assert.deepEqual(fe.body.data.results.map((x) => x.data?.item ?? x.item), [1, 2, 3], JSON.stringify(fe.body.data.results));

    // An unknown type is still refused.
    const bad = await worker.fetchJson("/execute", {
        body: { graph: { nodes: [{ id: "a", type: "Input" }, { id: "b", type: "Output" }], edges: [{ from: "a", to: "b", type: "NEXT_STEP" }] } },
    });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.error.code, "invalid_graph");
    assert.deepEqual(bad.body.error.problems, [{ at: "edges[0].type", message: "unknown edge type 'NEXT_STEP'" }]);
});

test("structural edges (CONTAINS, HAS_STYLE, HAS_BEHAVIOR, IS_A, CONTINUE) are accepted and never executed", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "a", type: "Component", componentId: `${echo.url}/structural` },
            { id: "out", type: "Output", data: { got: "{{a.echoed}}" } },
        ],
        edges: [
            { from: "in", to: "a", type: "PIPE" },
            { from: "a", to: "out", type: "PIPE" },
            // A join would wait for these if they were executed; out → in would make a cycle;
            // some ends are not nodes at all.
            { from: "out", to: "in", type: "CONTAINS" },
            { from: "a", to: "style-1", type: "HAS_STYLE" },
            { from: "a", to: "out", type: "HAS_BEHAVIOR" },
            { from: "in", to: "out", type: "IS_A" },
            { from: "out", to: "a", type: "CONTINUE" },
            { from: "page-9", to: "behaviour-3", type: "HAS_BEHAVIOR" },
            { from: "out", to: "out", type: "contains" },
        ],
    };
    const hits = echo.hits("/structural");
    const r = await exec(graph, { v: 1 });
    assert.equal(r.body.status, "completed", r.text);
    assert.deepEqual(statuses(r.body.trace), ["in:succeeded", "a:succeeded", "out:succeeded"], "only the executed nodes");
    assert.equal(r.body.data.got, true);
    assert.equal(r.body.data.v, 1);
    assert.equal(echo.hits("/structural"), hits + 1, "a ran once");
    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    assert.deepEqual(statuses(read.body.trace), ["in:succeeded", "a:succeeded", "out:succeeded"]);
    // Stored as a workflow too, and run from there.
    const put = await worker.fetchJson("/workflows/structural", { method: "PUT", body: graph });
    assert.equal(put.status, 200, put.text);
    const got = await worker.fetchJson("/workflows/structural");
    assert.equal(got.body.workflow.graph.edges.length, 9, "kept with the graph");
    const run = await worker.fetchJson("/workflows/structural/execute", { body: { context: { v: 2 } } });
    assert.equal(run.body.status, "completed", run.text);
    assert.deepEqual(statuses(run.body.trace), ["in:succeeded", "a:succeeded", "out:succeeded"]);
    assert.equal((await worker.fetchJson("/workflows/structural", { method: "DELETE" })).status, 200);
});

// ---------------------------------------------------------------------------------------
// Old client fields; a resumed task's id kept to its node

test("duration_ms on every answer, failed_node on failures, task_id / paused_again on callback answers; a resumed task_id does not flow on", { timeout: 60_000 }, async () => {
    // Completed at once.
    const quick = await exec({ nodes: [{ id: "c", type: "Component", componentId: `${echo.url}/fields` }], edges: [] });
    assert.equal(quick.body.status, "completed");
    assert.equal(typeof quick.body.duration_ms, "number", quick.text);
    assert.ok(quick.body.duration_ms >= 0);
    assert.equal(quick.body.failed_node, undefined);
    const quickRead = await worker.fetchJson(`/runs/${quick.body.run_id}`);
    assert.equal(quickRead.body.duration_ms, quickRead.body.finished_at - quickRead.body.created_at);
    assert.equal(quickRead.body.duration_ms, quick.body.duration_ms, "the same run took the same time");

    // Failed at once.
    const f = await exec({ nodes: [{ id: "in", type: "Input" }, { id: "boom", type: "Component", componentId: failing.url }], edges: [{ from: "in", to: "boom" }] });
    assert.equal(f.body.status, "failed", f.text);
    assert.equal(f.body.success, false);
    assert.equal(f.body.failed_node, "boom");
    assert.equal(f.body.error.node_id, "boom");
    assert.equal(typeof f.body.duration_ms, "number");
    const fRead = await worker.fetchJson(`/runs/${f.body.run_id}`);
    assert.equal(fRead.body.status, "failed");
    assert.equal(fRead.body.failed_node, "boom");
    assert.equal(typeof fRead.body.duration_ms, "number");

    // Two pauses in a chain.
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "first", type: "Component", componentId: `${pend.url}/chain-1` },
            { id: "second", type: "Component", componentId: `${pend.url}/chain-2`, data: { previous: "{{first.task_id}}" } },
            { id: "out", type: "Output", data: { a: "{{first.data.a}}", b: "{{second.data.b}}", t1: "{{first.task_id}}", t2: "{{second.task_id}}" } },
        ],
        edges: [{ from: "in", to: "first", type: "PIPE" }, { from: "first", to: "second", type: "PIPE" }, { from: "second", to: "out", type: "PIPE" }],
    };
    const t = await exec(graph, { topic: "chain" });
    assert.equal(t.body.status, "paused", t.text);
    assert.equal(typeof t.body.duration_ms, "number", t.text);
    const c1 = await callOn("/chain-1");
    assert.equal(t.body.task_id, c1.taskId);
    assert.equal(c1.body.task_id, undefined, "the first component gets no task_id either");
    await sleep(300);
    const r1 = await postCallback(c1.callbackUrl, c1.taskId, { success: true, data: { a: 1 } });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.body.status, "paused", r1.text);
    assert.equal(r1.body.resumed, true);
    assert.equal(r1.body.paused_again, true, r1.text);
    const c2 = await callOn("/chain-2");
    assert.equal(r1.body.task_id, c2.taskId, "paused again: the NEW task");
    assert.equal(r1.body.paused_node_id, "second");
    assertCallbackAnswer(r1.body, { status: "paused", run_id: t.body.run_id, task_id: c2.taskId, paused_again: true, paused_node_id: "second" });
    assert.equal(typeof r1.body.duration_ms, "number");
    assert.ok(r1.body.duration_ms >= 300, `duration_ms ${r1.body.duration_ms} includes the wait`);
    // The second component's input: no task_id of the first, but readable by node id.
    assert.equal("task_id" in c2.body, false, `second input: ${JSON.stringify(c2.body)}`);
    assert.equal(c2.body.previous, c1.taskId, "{{first.task_id}} still reads the first task");
    assert.deepEqual(c2.body.data, { a: 1 }, "the callback's data flowed on");
    assert.equal(c2.body.topic, "chain");
    assert.equal("success" in c2.body, false);
    const mid = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(mid.body.status, "paused");
    assert.equal(typeof mid.body.duration_ms, "number");
    const r2 = await postCallback(c2.callbackUrl, c2.taskId, { success: true, data: { b: 2 } });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.body.status, "completed", r2.text);
    assert.equal(r2.body.resumed, true);
    assert.equal(r2.body.task_id, c2.taskId, "the task this callback ended");
    assert.equal(r2.body.paused_again, undefined);
    assert.equal(typeof r2.body.duration_ms, "number");
    assert.ok(r2.body.duration_ms >= 300);
    assertCallbackAnswer(r2.body, { status: "completed", run_id: t.body.run_id, task_id: c2.taskId });
    const done = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.deepEqual(pick(done.body.data, ["a", "b", "t1", "t2"]), { a: 1, b: 2, t1: c1.taskId, t2: c2.taskId });
    assert.equal(done.body.data.task_id, undefined, "no task_id in the flowing context");
    assert.equal(done.body.duration_ms, done.body.finished_at - done.body.created_at);
    assert.equal(done.body.duration_ms, r2.body.duration_ms);

    // A callback that fails the run: failed_node, and the task it ended.
    const t3 = await exec({
        nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${pend.url}/fail-late` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "slow" }, { from: "slow", to: "out" }],
    });
    const c3 = await callOn("/fail-late");
    const r3 = await postCallback(c3.callbackUrl, c3.taskId, { success: false, error: "late boom" });
    assert.equal(r3.body.status, "failed", r3.text);
    assert.equal(r3.body.success, false);
    assert.equal(r3.body.failed_node, "slow");
    assert.equal(r3.body.task_id, c3.taskId);
    assert.equal(r3.body.paused_again, undefined);
    assert.equal(typeof r3.body.duration_ms, "number");
    assertCallbackAnswer(r3.body, { status: "failed", run_id: t3.body.run_id, task_id: c3.taskId });
    assert.equal(r3.body.error.message, "late boom");
    const read3 = await worker.fetchJson(`/runs/${t3.body.run_id}`);
    assert.equal(read3.body.failed_node, "slow");
    assert.equal(read3.body.error.message, "late boom");
});

// ---------------------------------------------------------------------------------------
// /executions, /health

test("GET /executions/{task_id} and /executions/paused answer like /runs, marked deprecated", { timeout: 60_000 }, async () => {
    const graph = (p) => ({
        nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${pend.url}/${p}` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "slow" }, { from: "slow", to: "out" }],
    });
    const quick = await exec({ nodes: [{ id: "c", type: "Component", componentId: `${echo.url}/exec-quick` }], edges: [] }, {}, { apiKey: EXEC_KEY });
    assert.equal(quick.body.status, "completed");
    const p1 = await exec(graph("exec-1"), {}, { apiKey: EXEC_KEY });
    const p2 = await exec(graph("exec-2"), {}, { apiKey: EXEC_KEY });
    assert.equal(p1.body.status, "paused");
    const c1 = await callOn("/exec-1");
    const c2 = await callOn("/exec-2");

    // Found through the KV listing: once the run's record is written, just after its answer.
    const byTask = await waitUntil(
        "GET /executions/{task} to find the run",
        async () => {
            const r = await worker.fetchJson(`/executions/${encodeURIComponent(c1.taskId)}`, { apiKey: EXEC_KEY });
            return r.status === 404 ? null : r;
        },
        { timeoutMs: 5000, everyMs: 50 },
    );
    assert.equal(byTask.status, 200, byTask.text);
    assert.equal(byTask.headers.get("deprecation"), "true");
    assert.equal(byTask.headers.get("link"), `</runs/${p1.body.run_id}>; rel="successor-version"`);
    assert.ok(kvOps(byTask).lists >= 1, "found through the listing");
    const direct = await worker.fetchJson(`/runs/${p1.body.run_id}`, { apiKey: EXEC_KEY });
    assert.deepEqual(byTask.body, direct.body, "the GET /runs/{id} shape");
    assert.equal(byTask.body.run_id, p1.body.run_id);
    assert.equal(byTask.body.status, "paused");
    assert.equal(byTask.body.waits[0].task_id, c1.taskId);

    const list = await worker.fetchJson("/executions/paused", { apiKey: EXEC_KEY });
    assert.equal(list.status, 200, list.text);
    assert.equal(list.headers.get("deprecation"), "true");
    assert.equal(list.headers.get("link"), '</runs?status=paused>; rel="successor-version"');
    assert.deepEqual(list.body.runs.map((r) => r.run_id).sort(), [p1.body.run_id, p2.body.run_id].sort());
    assert.ok(list.body.runs.every((r) => r.status === "paused" && r.open_waits === 1), list.text);

    // After the run completed, the task still finds it.
    const done = await postCallback(c1.callbackUrl, c1.taskId, { success: true, data: { v: 1 } });
    assertCallbackAnswer(done.body, { status: "completed", run_id: p1.body.run_id, task_id: c1.taskId });
    const after = await worker.fetchJson(`/executions/${encodeURIComponent(c1.taskId)}`, { apiKey: EXEC_KEY });
    assert.equal(after.status, 200, after.text);
    assert.equal(after.headers.get("deprecation"), "true");
    assert.equal(after.body.status, "completed");
    assert.equal(after.body.run_id, p1.body.run_id);
    assert.deepEqual(after.body.closed_waits.map((w) => w.task_id), [c1.taskId]);
    assert.deepEqual(after.body, (await worker.fetchJson(`/runs/${p1.body.run_id}`, { apiKey: EXEC_KEY })).body);
    // The listing shows the run's new status once its record is written (within about a second).
    await kvCaughtUp(worker, p1.body.run_id, { apiKey: EXEC_KEY });
    const list2 = await worker.fetchJson("/executions/paused", { apiKey: EXEC_KEY });
    assert.deepEqual(list2.body.runs.map((r) => r.run_id), [p2.body.run_id]);

    // Unknown task, another key's task: 404.
    const unknown = await worker.fetchJson("/executions/no-such-task", { apiKey: EXEC_KEY });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.body.error.code, "not_found");
    for (const task of [c1.taskId, c2.taskId]) {
        const other = await worker.fetchJson(`/executions/${encodeURIComponent(task)}`, { apiKey: OTHER_KEY });
        assert.equal(other.status, 404, other.text);
        assert.equal(other.body.error.code, "not_found");
    }
    const otherList = await worker.fetchJson("/executions/paused", { apiKey: OTHER_KEY });
    assert.equal(otherList.status, 200);
    assert.deepEqual(otherList.body.runs, []);
    // An API key is required.
    assert.equal((await worker.fetchJson(`/executions/${encodeURIComponent(c2.taskId)}`, { apiKey: null })).status, 401);
    assert.equal((await worker.fetchJson("/executions/paused", { apiKey: null })).status, 401);
    await postCallback(c2.callbackUrl, c2.taskId, { success: true });
});

test("GET /health answers ok and success", { timeout: 60_000 }, async () => {
    const r = await worker.fetchJson("/health", { apiKey: null });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.ok, true);
    assert.equal(r.body.success, true);
    assert.match(r.headers.get("content-type") ?? "", /application\/json/);
});

// ---------------------------------------------------------------------------------------
// CORS

const listOf = (h) => (h ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);

async function preflight(w, origin, p = "/execute", method = "POST") {
    const res = await fetch(`${w.url}${p}`, {
        method: "OPTIONS",
        headers: {
            origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization, content-type",
        },
    });
    const text = await res.text();
    let body = null;
    try {
        body = text ? JSON.parse(text) : null;
    } catch {
        body = text;
    }
    return { status: res.status, headers: res.headers, body, text };
}

test("CORS: preflights and answers for ALLOWED_ORIGINS only; none without it", { timeout: 60_000 }, async () => {
    const ok = await preflight(worker, ALLOWED);
    assert.equal(ok.status, 204, ok.text);
    assert.equal(ok.headers.get("access-control-allow-origin"), ALLOWED);
    assert.ok(listOf(ok.headers.get("access-control-allow-methods")).includes("post"), ok.headers.get("access-control-allow-methods"));
    const allowHeaders = listOf(ok.headers.get("access-control-allow-headers"));
    for (const h of ["authorization", "content-type"]) assert.ok(allowHeaders.includes(h), `allow-headers ${allowHeaders}`);
    const okGet = await preflight(worker, ALLOWED, `/runs/${"a".repeat(32)}`, "GET");
    assert.equal(okGet.status, 204);
    assert.ok(listOf(okGet.headers.get("access-control-allow-methods")).includes("get"));

    const evil = await preflight(worker, EVIL);
    assert.equal(evil.status, 403, evil.text);
    assert.equal(evil.body.success, false);
    assert.equal(evil.body.error.code, "origin_not_allowed");
    assert.equal(evil.headers.get("access-control-allow-origin"), null);
    // An origin that only starts like the allowed one is another origin.
    const lookalike = await preflight(worker, `${ALLOWED}.evil.example`);
    assert.equal(lookalike.status, 403);
    assert.equal(lookalike.headers.get("access-control-allow-origin"), null);

    // Real requests from the allowed origin carry the CORS answer headers.
    const graph = { nodes: [{ id: "c", type: "Component", componentId: `${echo.url}/cors` }], edges: [] };
    const post = await worker.fetchJson("/execute", { body: { graph }, headers: { origin: ALLOWED } });
    assert.equal(post.status, 200, post.text);
    assert.equal(post.body.status, "completed");
    assert.equal(post.headers.get("access-control-allow-origin"), ALLOWED);
    const exposed = listOf(post.headers.get("access-control-expose-headers"));
    assert.ok(exposed.includes("x-arcrun-kv-ops"), `expose-headers: ${exposed}`);
    assert.ok(post.headers.get("x-arcrun-kv-ops"), "the exposed header is there");
    const get = await worker.fetchJson(`/runs/${post.body.run_id}`, { headers: { origin: ALLOWED } });
    assert.equal(get.status, 200, get.text);
    assert.equal(get.body.status, "completed");
    assert.equal(get.headers.get("access-control-allow-origin"), ALLOWED);
    assert.ok(listOf(get.headers.get("access-control-expose-headers")).includes("x-arcrun-kv-ops"));
    kvOps(get);
    // An error answer too (the browser may read why).
    const missing = await worker.fetchJson(`/runs/${"0".repeat(32)}`, { headers: { origin: ALLOWED } });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("access-control-allow-origin"), ALLOWED);

    // An error before any run is touched (no API key) is readable from the allowed origin too.
    const unauth = await worker.fetchJson("/execute", { body: { graph }, apiKey: null, headers: { origin: ALLOWED } });
    assert.equal(unauth.status, 401);
    assert.equal(unauth.headers.get("access-control-allow-origin"), ALLOWED);
    assert.equal(unauth.body.error.code, "unauthorized");

    // From a refused origin: no allow-origin header.
    const evilPost = await worker.fetchJson("/execute", { body: { graph }, headers: { origin: EVIL } });
    assert.equal(evilPost.headers.get("access-control-allow-origin"), null, evilPost.text);
    assert.equal(evilPost.headers.get("access-control-expose-headers"), null);
    const evilGet = await worker.fetchJson(`/runs/${post.body.run_id}`, { headers: { origin: EVIL } });
    assert.equal(evilGet.headers.get("access-control-allow-origin"), null);
    // Without an Origin (not a browser): no CORS headers at all.
    const plain = await worker.fetchJson(`/runs/${post.body.run_id}`);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("access-control-allow-origin"), null);

    // A Worker without ALLOWED_ORIGINS refuses every preflight.
    const bare = await startWorker();
    try {
        for (const origin of [ALLOWED, EVIL, "http://127.0.0.1"]) {
            const r = await preflight(bare, origin);
            assert.equal(r.status, 403, `${origin}: ${r.text}`);
            assert.equal(r.body.error.code, "origin_not_allowed");
            assert.equal(r.headers.get("access-control-allow-origin"), null);
        }
        const r = await bare.fetchJson("/execute", { body: { graph }, headers: { origin: ALLOWED } });
        assert.equal(r.headers.get("access-control-allow-origin"), null);
    } finally {
        await bare.stop();
    }
});

// ---------------------------------------------------------------------------------------
// Sub-workflows

async function putWorkflow(name, graph, apiKey) {
    const r = await worker.fetchJson(`/workflows/${name}`, { method: "PUT", body: graph, apiKey });
    assert.equal(r.status, 200, `PUT /workflows/${name}: ${r.text}`);
}

test("sub-workflow (a): a child that completes at once completes its parent in the same request", { timeout: 60_000 }, async () => {
    await putWorkflow("child-now", {
        nodes: [
            { id: "in", type: "Input" },
            { id: "c", type: "Component", componentId: `${echo.url}/child-now` },
            { id: "out", type: "Output", data: { made: "by child", got: "{{who}}" } },
        ],
        edges: [{ from: "in", to: "c", type: "PIPE" }, { from: "c", to: "out", type: "PIPE" }],
    }, SUB_KEY);
    const parent = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "call", type: "Component", componentId: "workflow://child-now" },
            { id: "out", type: "Output", data: { call: "{{call}}" } },
        ],
        edges: [{ from: "in", to: "call", type: "CALLS_SUBFLOW" }, { from: "call", to: "out", type: "PIPE" }],
    };
    const hits = echo.hits("/child-now");
    const r = await exec(parent, { who: "ada" }, { apiKey: SUB_KEY });
    assert.equal(r.body.status, "completed", r.text);
    assert.equal(echo.hits("/child-now"), hits + 1);
    const call = r.body.data.call;
    const childId = call.subflow_run_id;
    assert.equal(typeof childId, "string", JSON.stringify(call));
    assert.notEqual(childId, r.body.run_id);
    assert.equal(call.made, "by child", "the child's output fields merged in");
    assert.equal(call.got, "ada", "the child ran with the calling node's input");
    assert.equal(call.data.made, "by child");
    assert.equal(call.data.got, "ada");
    assert.deepEqual({ ...call.data }, Object.fromEntries(Object.entries(call).filter(([k]) => !["success", "data", "task_id", "subflow_run_id"].includes(k))), "data = the child's output");
    assert.equal(r.body.data.made, "by child", "and they flow on");
    assert.deepEqual(statuses(r.body.trace), ["in:succeeded", "call:succeeded", "out:succeeded"]);

    const child = await worker.fetchJson(`/runs/${childId}`, { apiKey: SUB_KEY });
    assert.equal(child.status, 200, child.text);
    assert.equal(child.body.status, "completed");
    assert.equal(child.body.workflow, "child-now");
    assert.deepEqual(child.body.data, call.data);
    const listed = await listedRuns(worker, { query: "", apiKey: SUB_KEY });
    assert.equal(listed.status, 200, listed.text);
    const byId = Object.fromEntries(listed.body.runs.map((x) => [x.run_id, x]));
    assert.deepEqual(Object.keys(byId).sort(), [r.body.run_id, childId].sort(), listed.text);
    assert.equal(byId[childId].workflow, "child-now");
    assert.equal(byId[childId].status, "completed");
    assert.equal(byId[r.body.run_id].workflow, null);
    assert.equal(byId[r.body.run_id].status, "completed");
    // Others cannot read the child.
    assert.equal((await worker.fetchJson(`/runs/${childId}`, { apiKey: OTHER_KEY })).status, 404);
});

test("sub-workflow (b): a child that pauses — the parent waits on the child's run and completes when the child does", { timeout: 60_000 }, async () => {
    await putWorkflow("child-wait", {
        nodes: [
            { id: "in", type: "Input" },
            { id: "slow", type: "Component", componentId: `${pend.url}/child-wait` },
            { id: "out", type: "Output", data: { made: "after wait", got: "{{slow.data.v}}" } },
        ],
        edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
    });
    const parent = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "call", type: "Component", componentId: "workflow://child-wait" },
            { id: "out", type: "Output", data: { result: "{{call.data}}", child: "{{call.subflow_run_id}}" } },
        ],
        edges: [{ from: "in", to: "call", type: "SUBFLOW" }, { from: "call", to: "out", type: "PIPE" }],
    };
    const t = await exec(parent, { who: "bob" });
    assert.equal(t.body.status, "paused", t.text);
    assert.equal(t.body.paused_node_id, "call");
    const call = await callOn("/child-wait");
    assert.equal(call.body.who, "bob", "the child got the calling node's input");
    const childId = runIdOfCallback(call.callbackUrl);
    assert.notEqual(childId, t.body.run_id, "the component calls back the CHILD run");
    assert.equal(t.body.task_id, childId, "the parent waits on the child's run id");
    assert.deepEqual(t.body.waits.map((w) => [w.node_id, w.task_id]), [["call", childId]]);
    const childPaused = await worker.fetchJson(`/runs/${childId}`);
    assert.equal(childPaused.body.status, "paused");
    assert.equal(childPaused.body.workflow, "child-wait");
    // The deprecated route finds the parent by the child's run id (its task), through the KV
    // listing: once the parent's record is written, just after its answer.
    const viaExec = await waitUntil(
        "the deprecated route to find the parent",
        async () => {
            const r = await worker.fetchJson(`/executions/${childId}`);
            return r.status === 404 ? null : r;
        },
        { timeoutMs: 5000, everyMs: 50 },
    );
    assert.equal(viaExec.status, 200, viaExec.text);
    assert.equal(viaExec.body.run_id, t.body.run_id);

    const cb = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: 7 } });
    assert.equal(cb.status, 200, cb.text);
    assert.equal(cb.body.run_id, childId);
    assert.equal(cb.body.status, "completed", cb.text);
    assertCallbackAnswer(cb.body, { status: "completed", run_id: childId, task_id: call.taskId });
    const childDone = await runView(worker, childId);
    assert.equal(childDone.status, "completed");
    const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 15_000);
    assert.equal(done.body.status, "completed", done.text);
    assert.equal(done.body.data.result.made, "after wait");
    assert.equal(done.body.data.result.got, 7);
    assert.deepEqual(done.body.data.result, childDone.data, "the child's data");
    assert.equal(done.body.data.child, childId);
    assert.equal(done.body.data.made, "after wait", "merged into the flowing context");
    assert.deepEqual(done.body.waits, []);
    const closed = done.body.closed_waits ?? [];
    assert.deepEqual(closed.map((w) => [w.node_id, w.task_id]), [["call", childId]], done.text);
    assert.deepEqual(statuses(done.body.trace), ["in:succeeded", "call:paused", "call:succeeded", "out:succeeded"]);
    const child = await worker.fetchJson(`/runs/${childId}`);
    assert.equal(child.status, 200);
    assert.equal(child.body.status, "completed");
    assert.equal(child.body.workflow, "child-wait");
    assert.equal(pend.on("/child-wait").length, 1, "the child's component was called once");

    // The same with the reference daemon calling the child back on its own.
    const daemon = await startDaemon({ delayMs: 200, retryDelaysMs: [0, 200, 500], log: () => {} });
    try {
        await putWorkflow("child-daemon", {
            nodes: [
                { id: "in", type: "Input" },
                { id: "slow", type: "Component", componentId: daemon.url, data: { result: "from daemon" } },
                { id: "out", type: "Output", data: { got: "{{slow.data.result}}" } },
            ],
            edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
        });
        parent.nodes[1].componentId = "workflow://child-daemon";
        const d = await exec(parent);
        assert.equal(d.body.status, "paused", d.text);
        const finished = await waitForStatus(worker, d.body.run_id, ["completed", "failed"], 15_000);
        assert.equal(finished.body.status, "completed", finished.text);
        assert.equal(finished.body.data.result.got, "from daemon");
        assert.equal(finished.body.data.child, d.body.task_id);
        const [task] = daemon.stats().tasks;
        assert.equal(runIdOfCallback(task.callback_url), d.body.task_id, "the daemon called back the child run");
        assert.equal(task.delivered, true, JSON.stringify(task));
        assert.equal(task.response?.status, "completed", JSON.stringify(task));
        assert.equal(task.response?.run_id, d.body.task_id);
        assertCallbackAnswer(task.response, { status: "completed", run_id: d.body.task_id, task_id: task.task_id });
    } finally {
        await daemon.close();
    }
});

test("sub-workflow (c): a failing child fails the calling node; ON_FAIL routes it", { timeout: 60_000 }, async () => {
    await putWorkflow("child-fail", {
        nodes: [
            { id: "in", type: "Input" },
            { id: "f", type: "Component", componentId: failing.url },
            { id: "out", type: "Output" },
        ],
        edges: [{ from: "in", to: "f", type: "PIPE" }, { from: "f", to: "out", type: "PIPE" }],
    });
    const routed = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "call", type: "Component", componentId: "workflow://child-fail" },
            { id: "ok", type: "Output", data: { path: "ok" } },
            { id: "recover", type: "Output", data: { path: "recover", why: "{{call.error}}", child: "{{call.subflow_run_id}}" } },
        ],
        edges: [
            { from: "in", to: "call", type: "CALLS_SUBFLOW" },
            { from: "call", to: "ok", type: "PIPE" },
            { from: "call", to: "recover", type: "ON_FAIL" },
        ],
    };
    const r = await exec(routed);
    assert.equal(r.body.status, "completed", r.text);
    assert.equal(r.body.data.path, "recover");
    const why = r.body.data.why;
    const whyText = typeof why === "string" ? why : why?.message;
    assert.equal(whyText, "x", `the child's error: ${JSON.stringify(why)}`);
    assert.deepEqual(statuses(r.body.trace).sort(), ["call:failed", "in:succeeded", "ok:skipped", "recover:succeeded"]);
    const child = await worker.fetchJson(`/runs/${r.body.data.child}`);
    assert.equal(child.body.status, "failed");
    assert.equal(child.body.failed_node, "f");
    assert.equal(child.body.workflow, "child-fail");

    // Unrouted: the parent fails at the calling node.
    const bare = await exec({
        nodes: [{ id: "in", type: "Input" }, { id: "call", type: "Component", componentId: "workflow://child-fail" }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "call" }, { from: "call", to: "out" }],
    });
    assert.equal(bare.body.status, "failed", bare.text);
    assert.equal(bare.body.failed_node, "call");
    assert.equal(bare.body.error.message, "x");

    // A child that pauses, then fails: the parent's node fails later, and ON_FAIL routes it.
    await putWorkflow("child-late-fail", {
        nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${pend.url}/child-late-fail` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "slow" }, { from: "slow", to: "out" }],
    });
    routed.nodes[1].componentId = "workflow://child-late-fail";
    const t = await exec(routed);
    assert.equal(t.body.status, "paused", t.text);
    const call = await callOn("/child-late-fail");
    const cb = await postCallback(call.callbackUrl, call.taskId, { success: false, error: "late boom" });
    assert.equal(cb.body.status, "failed", cb.text);
    const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 15_000);
    assert.equal(done.body.status, "completed", done.text);
    assert.equal(done.body.data.path, "recover");
    const lateWhy = done.body.data.why;
    assert.equal(typeof lateWhy === "string" ? lateWhy : lateWhy?.message, "late boom", JSON.stringify(lateWhy));
});

test("sub-workflow: cancelling a parent cancels the children it waits on, and theirs; a child's end then changes nothing", { timeout: 60_000 }, async () => {
    // A grandchild that waits on a daemon, under a child that waits on it, under a parent that
    // waits on two children at once.
    await putWorkflow("cascade-grandchild", {
        nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${pend.url}/cascade-deep` }],
        edges: [{ from: "in", to: "slow", type: "PIPE" }],
    });
    await putWorkflow("cascade-child", {
        nodes: [{ id: "in", type: "Input" }, { id: "deeper", type: "Component", componentId: "workflow://cascade-grandchild" }],
        edges: [{ from: "in", to: "deeper", type: "SUBFLOW" }],
    });
    const parent = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "a", type: "Component", componentId: "workflow://cascade-child" },
            { id: "b", type: "Component", componentId: "workflow://cascade-child" },
        ],
        edges: [{ from: "in", to: "a", type: "SUBFLOW" }, { from: "in", to: "b", type: "SUBFLOW" }],
    };
    const t = await exec(parent);
    assert.equal(t.body.status, "paused", t.text);
    const children = t.body.waits.map((w) => w.task_id);
    assert.equal(children.length, 2, t.text);
    const grandchildren = [];
    for (const child of children) {
        const c = await worker.fetchJson(`/runs/${child}`);
        assert.equal(c.body.status, "paused", c.text);
        grandchildren.push(c.body.waits[0].task_id);
    }
    // Both grandchildren called their daemon.
    await callOn("/cascade-deep", 2);

    const cancelled = await worker.fetchJson(`/runs/${t.body.run_id}/cancel`, { method: "POST" });
    assert.equal(cancelled.status, 200, cancelled.text);
    assert.equal(cancelled.body.status, "cancelled");
    for (const id of [...children, ...grandchildren]) {
        const r = await waitForStatus(worker, id, ["cancelled"], 10_000);
        assert.equal(r.body.status, "cancelled", `${id}: ${r.text}`);
    }
    // A daemon's late result for a grandchild changes nothing anywhere.
    for (const call of pend.on("/cascade-deep")) {
        const late = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { late: true } });
        assert.equal(late.status, 200, late.text);
        assert.equal(late.body.noop, true, late.text);
    }
    await sleep(1500);
    const after = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(after.body.status, "cancelled");
    assert.deepEqual(after.body.closed_waits.map((w) => w.how).sort(), ["cancelled", "cancelled"], after.text);
});

test("sub-workflow (d): a workflow that calls itself is stopped at the nesting depth", { timeout: 60_000 }, async () => {
    await putWorkflow("loop", {
        nodes: [
            { id: "in", type: "Input" },
            { id: "c", type: "Component", componentId: `${echo.url}/loop` },
            { id: "again", type: "Component", componentId: "workflow://loop" },
            { id: "out", type: "Output" },
        ],
        edges: [{ from: "in", to: "c", type: "PIPE" }, { from: "c", to: "again", type: "SUBFLOW" }, { from: "again", to: "out", type: "PIPE" }],
    }, LOOP_KEY);
    const hits = echo.hits("/loop");
    const started = Date.now();
    const r = await worker.fetchJson("/workflows/loop/execute", { body: { context: { n: 1 } }, apiKey: LOOP_KEY });
    const took = Date.now() - started;
    assert.equal(r.status, 200, r.text);
    // Unfinished runs would show here as running or paused; it must end now.
    const top = r.body.status === "failed" ? r : await waitForStatus(worker, r.body.run_id, ["failed", "completed"], 15_000);
    assert.equal(top.body.status, "failed", `top run: ${top.text}`);
    assert.equal(top.body.failed_node, "again");
    assert.match(top.body.error.message, /nest/i, top.body.error.message);
    assert.match(top.body.error.message, /deep|depth/i, top.body.error.message);
    await sleep(500);
    const listed = await listedRuns(worker, { apiKey: LOOP_KEY });
    assert.equal(listed.status, 200, listed.text);
    const runs = listed.body.runs;
    assert.ok(runs.length >= 2 && runs.length <= 10, `runs created: ${runs.length}`);
    assert.ok(runs.every((x) => x.status === "failed"), JSON.stringify(runs.map((x) => x.status)));
    assert.ok(runs.every((x) => x.workflow === "loop"));
    assert.equal(echo.hits("/loop") - hits, runs.length, "each run called its component once");
    // The deepest child failed on the depth, its parents on it in turn.
    for (const x of runs) {
        const d = await worker.fetchJson(`/runs/${x.run_id}`, { apiKey: LOOP_KEY });
        assert.equal(d.body.failed_node, "again");
        assert.match(d.body.error.message, /nest/i);
    }
    // And it stays that way: nothing keeps running.
    await sleep(1500);
    const again = await worker.fetchJson("/runs?limit=1000", { apiKey: LOOP_KEY });
    assert.equal(again.body.runs.length, runs.length);
    assert.equal(echo.hits("/loop") - hits, runs.length);
    console.log(`# self-calling workflow: ${runs.length} runs, answered in ${took} ms`);
});

test("sub-workflow (e, f): a missing stored workflow fails the node; an invalid name is refused at trigger", { timeout: 60_000 }, async () => {
    const graph = (componentId) => ({
        nodes: [
            { id: "in", type: "Input" },
            { id: "call", type: "Component", componentId },
            { id: "out", type: "Output" },
            { id: "recover", type: "Output", data: { why: "{{call.error}}" } },
        ],
        edges: [
            { from: "in", to: "call", type: "CALLS_SUBFLOW" },
            { from: "call", to: "out", type: "PIPE" },
            { from: "call", to: "recover", type: "ON_FAIL" },
        ],
    });
    const r = await exec(graph("workflow://missing"));
    assert.equal(r.body.status, "completed", r.text);
    assert.match(String(r.body.data.why), /no stored workflow 'missing'/, r.text);
    const bare = await exec({ nodes: [{ id: "call", type: "Component", componentId: "workflow://missing" }], edges: [] });
    assert.equal(bare.body.status, "failed", bare.text);
    assert.equal(bare.body.failed_node, "call");
    assert.match(bare.body.error.message, /missing/);
    // Another key's stored workflow is missing too.
    await putWorkflow("only-mine", { nodes: [{ id: "o", type: "Output", data: { mine: true } }], edges: [] }, SUB_KEY);
    const foreign = await exec({ nodes: [{ id: "call", type: "Component", componentId: "workflow://only-mine" }], edges: [] });
    assert.equal(foreign.body.status, "failed", foreign.text);
    assert.match(foreign.body.error.message, /no stored workflow 'only-mine'/);

    for (const name of ["bad name", "", "a/b", "x".repeat(101)]) {
        const before = (await listedRuns(worker)).body.runs.length;
        const bad = await worker.fetchJson("/execute", { body: { graph: graph(`workflow://${name}`) } });
        assert.equal(bad.status, 400, `workflow://${name}: ${bad.text}`);
        assert.equal(bad.body.error.code, "invalid_graph");
        assert.ok(bad.body.error.problems.some((p) => p.at === "nodes[1].componentId"), bad.text);
        assert.equal((await listedRuns(worker)).body.runs.length, before, "no run started");
    }
});
