// The shipped defaults and the documented limits, end to end: the built Worker in workerd
// (Miniflare), over real HTTP, with loopback components.
//
// Each test starts a Worker with the configuration it is about (README "Configuration",
// SECURITY.md "Limits") and checks the promise exactly: the status, the error code and message,
// what reached the components and how often.

import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, startComponent, pendingComponent, postCallback, freePort, assertMatchesOpenApi, waitUntil, TEST_API_KEY } from "./harness.mjs";
import { sleep } from "./harness.mjs";
import { runView, kvCaughtUp, assertCallbackAnswer } from "./settle.mjs";

const MAX_BODY = 1 << 20; // MAX_BODY_BYTES default
const AUTH = { authorization: `Bearer ${TEST_API_KEY}` };

/** `levels` nested arrays: `[[...[]...]]`. */
const deepArrays = (levels) => "[".repeat(levels) + "]".repeat(levels);
/** The same as a JS value. */
function deepArrayValue(levels) {
    let v = [];
    for (let i = 1; i < levels; i++) v = [v];
    return v;
}

/** How deeply a JSON text nests (objects and arrays), counted outside strings. */
function nestingOf(text) {
    let depth = 0;
    let max = 0;
    let inString = false;
    for (let i = 0; i < text.length; i++) {
        const ch = text[i];
        if (inString) {
            if (ch === "\\") i++;
            else if (ch === '"') inString = false;
        } else if (ch === '"') inString = true;
        else if (ch === "[" || ch === "{") max = Math.max(max, ++depth);
        else if (ch === "]" || ch === "}") depth--;
    }
    return max;
}

/** An /execute body whose whole nesting is exactly `total` levels: the depth sits in `context.deep`. */
function bodyNested(graph, total) {
    // The body object is level 1, `context` level 2, the outermost array of `deep` level 3.
    const text = `{"graph": ${JSON.stringify(graph)}, "context": {"deep": ${deepArrays(total - 2)}}}`;
    assert.equal(nestingOf(text), total);
    return text;
}

/**
 * One request on a fresh TCP connection: status, headers and the exact bytes after the header
 * block, so "no body" can be told from "empty body". workerd keeps the connection open a while
 * after answering, so the answer is taken as complete at its Content-Length (or final chunk) —
 * or, for `HEAD`, once the headers are in and `graceMs` have passed with no byte more.
 */
function rawExchange(port, lines, opts = {}) {
    return rawExchangeUnchecked(port, lines, opts).then((r) => {
        checkRawAnswer(port, lines[0], r, opts.head ? "" : bodyOf(r));
        return r;
    });
}

/**
 * Answers read off a raw socket skip the harness's fetch wrapper: those the Worker gave (they
 * carry its cost header) are checked against the OpenAPI document here.
 */
function checkRawAnswer(port, requestLine, r, text) {
    if (!r.headers.has("x-arcrun-kv-ops")) return;
    const m = /^([A-Z]+) (\/\S*) HTTP\/1\.[01]$/.exec(requestLine);
    if (m) assertMatchesOpenApi(m[1], `http://127.0.0.1:${port}${m[2]}`, r.status, r.headers, text);
}

function rawExchangeUnchecked(port, lines, { body = "", head = false, graceMs = 500, timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1");
        let buf = Buffer.alloc(0);
        let settled = false;
        let grace;
        const done = (err) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            clearTimeout(grace);
            socket.destroy();
            if (err) return reject(err);
            const end = buf.indexOf("\r\n\r\n");
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.toString("latin1"));
            if (end < 0 || !m) return reject(new Error(`no HTTP response: ${JSON.stringify(buf.toString("latin1").slice(0, 300))}`));
            resolve({ status: Number(m[1]), headers: headersOf(buf, end), rest: buf.subarray(end + 4) });
        };
        const timer = setTimeout(() => done(new Error(`no complete answer within ${timeoutMs} ms: ${JSON.stringify(buf.toString("latin1").slice(0, 300))}`)), timeoutMs);
        socket.on("data", (c) => {
            buf = Buffer.concat([buf, c]);
            const end = buf.indexOf("\r\n\r\n");
            if (end < 0) return;
            if (head) {
                clearTimeout(grace);
                grace = setTimeout(() => done(), graceMs);
                return;
            }
            const headers = headersOf(buf, end);
            const rest = buf.subarray(end + 4);
            if (headers.has("content-length") ? rest.length >= Number(headers.get("content-length")) : rest.includes("\r\n0\r\n\r\n") || rest.subarray(0, 5).toString() === "0\r\n\r\n") done();
        });
        socket.on("error", (e) => done(e));
        socket.on("close", () => done());
        socket.write(Buffer.concat([Buffer.from([...lines, "Connection: close", "", ""].join("\r\n"), "latin1"), Buffer.from(body)]));
    });
}

function headersOf(buf, end) {
    const headers = new Map();
    for (const line of buf.subarray(0, end).toString("latin1").split("\r\n").slice(1)) {
        const i = line.indexOf(":");
        headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    return headers;
}

/** A JSON body from `rest` (Content-Length or chunked framing). */
function bodyOf(r) {
    if (/chunked/i.test(r.headers.get("transfer-encoding") ?? "")) {
        const parts = [];
        let off = 0;
        for (let guard = 0; guard < 10_000; guard++) {
            const nl = r.rest.indexOf("\r\n", off);
            const size = parseInt(r.rest.subarray(off, nl).toString("latin1"), 16);
            if (!size) break;
            parts.push(r.rest.subarray(nl + 2, nl + 2 + size));
            off = nl + 2 + size + 2;
        }
        return JSON.parse(Buffer.concat(parts).toString("utf8"));
    }
    return JSON.parse(r.rest.toString("utf8"));
}

const chain = (...steps) => ({
    nodes: steps.map(([id, type, componentId, data]) => ({ id, type, ...(componentId ? { componentId } : {}), ...(data ? { data } : {}) })),
    edges: steps.slice(1).map(([id], i) => ({ from: steps[i][0], to: id, type: "PIPE" })),
});

// ---------------------------------------------------------------------------------------
// PUBLIC_BASE_URL and COMPONENTS

test('PUBLIC_BASE_URL = "" (shipped): callback_url starts with the origin the trigger arrived at, kept with the run', { timeout: 60_000 }, async () => {
    const comp = await pendingComponent();
    const w = await startWorker({ bindings: { PUBLIC_BASE_URL: "" } });
    try {
        const graph = chain(["in", "Input"], ["s1", "Component", `${comp.url}/s1`], ["s2", "Component", `${comp.url}/s2`], ["out", "Output"]);
        // Triggered through a host name the Worker was never told about.
        const host = `arcrun-origin.test:${w.port}`;
        const payload = JSON.stringify({ graph, context: { x: 1 } });
        const trigger = await rawPost(w.port, host, "/execute", payload);
        assert.equal(trigger.status, 200, JSON.stringify(trigger.body));
        assert.equal(trigger.body.status, "paused");
        const s1 = comp.on("/s1");
        assert.equal(s1.length, 1);
        assert.ok(s1[0].callbackUrl.startsWith(`http://${host}/callbacks/${trigger.body.run_id}/`), s1[0].callbackUrl);

        // Resumed through another origin: the next wait's URL still has the trigger's origin.
        const cb = new URL(s1[0].callbackUrl);
        const resumed = await postCallback(`${w.url}${cb.pathname}${cb.search}`, s1[0].taskId, { success: true, data: { one: 1 } });
        assert.equal(resumed.status, 200, resumed.text);
        assert.equal(resumed.body.status, "paused");
        const s2 = comp.on("/s2");
        assert.equal(s2.length, 1);
        assert.ok(s2[0].callbackUrl.startsWith(`http://${host}/callbacks/${trigger.body.run_id}/`), s2[0].callbackUrl);

        // And a trigger through 127.0.0.1 gets 127.0.0.1.
        const direct = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(direct.body.status, "paused");
        assert.ok(comp.on("/s1")[1].callbackUrl.startsWith(`${w.url}/callbacks/${direct.body.run_id}/`), comp.on("/s1")[1].callbackUrl);
        const done = await postCallback(comp.on("/s1")[1].callbackUrl, comp.on("/s1")[1].taskId);
        assert.equal(done.body.status, "paused");
    } finally {
        await w.stop();
        await comp.close();
    }
});

/** POSTs JSON over a raw connection with the given Host header; `{status, headers, body}`. */
async function rawPost(port, host, p, payload) {
    const r = await rawExchange(port, [
        `POST ${p} HTTP/1.1`,
        `Host: ${host}`,
        `Authorization: Bearer ${TEST_API_KEY}`,
        "Content-Type: application/json",
        `Content-Length: ${Buffer.byteLength(payload)}`,
    ], { body: payload });
    return { status: r.status, headers: r.headers, body: bodyOf(r) };
}

test("a component named through COMPONENTS is called at its URL; an unknown name is a 400", { timeout: 60_000 }, async () => {
    const comp = await startComponent((body, req) => ({ path: new URL(req.url, "http://c").pathname, got: body.topic }));
    const w = await startWorker({
        bindings: { COMPONENTS: JSON.stringify({ summarize: `${comp.url}/named/summarize`, translate: `${comp.url}/named/translate` }) },
    });
    try {
        const graph = chain(["in", "Input"], ["s", "Component", "summarize", { topic: "{{topic}}" }], ["out", "Output", null, { path: "{{s.path}}", got: "{{s.got}}" }]);
        const r = await w.fetchJson("/execute", { body: { graph, context: { topic: "engines" } } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "completed", r.text);
        assert.deepEqual({ path: r.body.data.path, got: r.body.data.got }, { path: "/named/summarize", got: "engines" });
        assert.equal(comp.hits("/named/summarize"), 1);
        assert.equal(comp.hits(), 1, "nothing else was called");
        const [req] = comp.requests();
        assert.equal(req.method, "POST");
        assert.equal(req.body.topic, "engines");
        assert.ok(req.body.callback_url.startsWith(`${w.url}/callbacks/${r.body.run_id}/`), req.body.callback_url);

        const unknown = await w.fetchJson("/execute", { body: { graph: chain(["in", "Input"], ["s", "Component", "summarise"]) } });
        assert.equal(unknown.status, 400);
        assert.equal(unknown.body.error.code, "invalid_graph");
        assert.match(JSON.stringify(unknown.body.error.problems), /unknown component 'summarise'/);
        assert.equal(comp.hits(), 1);
    } finally {
        await w.stop();
        await comp.close();
    }
});

test("COMPONENTS is read when a run starts: a later change neither breaks nor redirects it", { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-defaults-"));
    const port = await freePort();
    const slow = await pendingComponent();
    const after = await startComponent(() => ({ from: "original" }));
    const moved = await startComponent(() => ({ from: "moved" }));
    let w = await startWorker({ port, persistDir: dir, bindings: { COMPONENTS: JSON.stringify({ slow: `${slow.url}/slow`, after: `${after.url}/after` }) } });
    try {
        const graph = chain(["slow", "Component", "slow"], ["after", "Component", "after"], ["out", "Output", null, { from: "{{after.from}}" }]);
        const t = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        await kvCaughtUp(w, t.body.run_id); // stored as it started, before the restart
        await w.stop();
        // "slow" is gone from the directory and "after" points elsewhere now.
        w = await startWorker({ port, persistDir: dir, bindings: { COMPONENTS: JSON.stringify({ after: `${moved.url}/after` }) } });
        const [call] = slow.calls;
        const r = await postCallback(call.callbackUrl, call.taskId, { success: true });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "completed", r.text);
        assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id, task_id: call.taskId });
        assert.equal((await runView(w, t.body.run_id)).data.from, "original");
        assert.equal(after.hits("/after"), 1);
        assert.equal(moved.hits(), 0, "the run was not redirected");
    } finally {
        await w.stop();
        await slow.close();
        await after.close();
        await moved.close();
        await rm(dir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// HEAD

test("HEAD /health and HEAD /runs/{id} answer with GET's status and no body", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        const run = await w.fetchJson("/execute", { body: { graph: chain(["in", "Input"], ["out", "Output"]) } });
        assert.equal(run.body.status, "completed");
        const cases = [
            ["/health", true, 200],
            [`/runs/${run.body.run_id}`, true, 200],
            [`/runs/${"0".repeat(32)}`, true, 404],
            [`/runs/${run.body.run_id}`, false, 401],
        ];
        for (const [p, withKey, status] of cases) {
            const head = [`Host: 127.0.0.1:${w.port}`, ...(withKey ? [`Authorization: Bearer ${TEST_API_KEY}`] : [])];
            const get = await rawExchange(w.port, [`GET ${p} HTTP/1.1`, ...head]);
            assert.equal(get.status, status, `GET ${p}`);
            assert.ok(get.rest.length > 0, `GET ${p} has a body`);
            const body = bodyOf(get);
            assert.equal(body.success, status === 200, `GET ${p}: ${JSON.stringify(body)}`);
            if (p === "/health") assert.equal(body.ok, true, `GET /health: ${JSON.stringify(body)}`);
            const r = await rawExchange(w.port, [`HEAD ${p} HTTP/1.1`, ...head], { head: true });
            assert.equal(r.status, status, `HEAD ${p}`);
            assert.equal(r.rest.length, 0, `HEAD ${p} answered ${r.rest.length} body bytes: ${JSON.stringify(r.rest.toString("utf8").slice(0, 200))}`);
        }
    } finally {
        await w.stop();
    }
});

// ---------------------------------------------------------------------------------------
// Graph size and JSON nesting

test("MAX_EDGES: one edge over the limit is 400 invalid_graph naming it; at the limit the graph runs", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { MAX_EDGES: "3" } });
    try {
        const ids = ["a", "b", "c", "d", "e"];
        const over = chain(...ids.map((id) => [id, "Component", "comp_passthrough"]));
        assert.equal(over.edges.length, 4);
        const r = await w.fetchJson("/execute", { body: { graph: over } });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.error.code, "invalid_graph");
        assert.deepEqual(r.body.error.problems, [{ at: "graph.edges", message: "has 4 edges; the limit is 3" }]);
        assert.equal(r.body.error.message, "the graph has 1 problem(s): graph.edges: has 4 edges; the limit is 3");
        const at = chain(...ids.slice(0, 4).map((id) => [id, "Component", "comp_passthrough"]));
        assert.equal(at.edges.length, 3);
        const ok = await w.fetchJson("/execute", { body: { graph: at } });
        assert.equal(ok.status, 200, ok.text);
        assert.equal(ok.body.status, "completed");
    } finally {
        await w.stop();
    }
});

const ECHO_GRAPH = chain(["in", "Input"], ["p", "Component", "comp_passthrough"], ["out", "Output"]);

test("JSON nesting: a body nested exactly 100 levels (the documented limit) is accepted and runs", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        const at = await w.fetchJson("/execute", { body: bodyNested(ECHO_GRAPH, 100) });
        assert.equal(at.status, 200, `100 levels (SECURITY.md: the limit is 100): ${at.status} ${at.text.slice(0, 300)}`);
        assert.equal(at.body.status, "completed", at.text.slice(0, 300));
        assert.deepEqual(at.body.data.deep, deepArrayValue(98));
    } finally {
        await w.stop();
    }
});

test("JSON nesting: a body nested 101 levels (one over) and one past the reader's own limit are 400 invalid_json", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        const over = await w.fetchJson("/execute", { body: bodyNested(ECHO_GRAPH, 101) });
        assert.equal(over.status, 400, over.text.slice(0, 300));
        assert.equal(over.body.error.code, "invalid_json");
        assert.equal(over.body.error.message, "the body nests JSON more than 100 levels deep");
        const far = await w.fetchJson("/execute", { body: bodyNested(ECHO_GRAPH, 129) });
        assert.equal(far.status, 400, far.text.slice(0, 300));
        assert.equal(far.body.error.code, "invalid_json");
        assert.match(far.body.error.message, /^the body is not valid JSON: recursion limit exceeded/);
    } finally {
        await w.stop();
    }
});

test("JSON nesting: every depth the route accepts is run to completion, never a 5xx", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        for (const total of [64, 90, 99, 100]) {
            const r = await w.fetchJson("/execute", { body: bodyNested(ECHO_GRAPH, total) });
            assert.equal(r.status, 200, `${total} levels: ${r.status} ${r.text.slice(0, 300)}`);
            assert.equal(r.body.status, "completed", `${total} levels: ${r.text.slice(0, 300)}`);
            assert.deepEqual(r.body.data.deep, deepArrayValue(total - 2), `${total} levels round-trip`);
        }
    } finally {
        await w.stop();
    }
});

test("JSON nesting: a paused run whose context the route accepted resumes and reads after its gate is evicted (from KV)", { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-defaults-"));
    const port = await freePort();
    const comp = await pendingComponent();
    let w = await startWorker({ port, persistDir: dir });
    try {
        const graph = chain(["in", "Input"], ["slow", "Component", `${comp.url}/slow`], ["out", "Output"]);
        // 90 levels, and 100: the deepest body the route takes (a stored run nests it about ten
        // levels deeper, still within what the reader parses back).
        const runs = [];
        for (const total of [90, 100]) {
            const t = await w.fetchJson("/execute", { body: bodyNested(graph, total) });
            assert.equal(t.status, 200, `${total} levels: ${t.text.slice(0, 300)}`);
            assert.equal(t.body.status, "paused", `${total} levels: ${t.text.slice(0, 300)}`);
            const call = comp.calls.at(-1);
            assert.deepEqual(call.body.deep, deepArrayValue(total - 2), "the component got the context");
            runs.push({ total, runId: t.body.run_id, call });
        }
        // A restart: the gates hold nothing in memory and must read each run back from KV.
        await w.stop();
        w = await startWorker({ port, persistDir: dir });
        const outcomes = [];
        for (const { total, runId, call } of runs) {
            const read = await w.fetchJson(`/runs/${runId}`);
            const r = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { ok: 1 } });
            const after = r.status === 200 ? await w.fetchJson(`/runs/${runId}`) : null;
            outcomes.push({ total, runId, taskId: call.taskId, read: `${read.status} ${read.body?.status ?? read.text.slice(0, 200)}`, callback: `${r.status} ${r.body?.status ?? ""} ${r.status === 200 ? "" : r.text.slice(0, 200)}`.trim(), answer: r.body, data: after?.body?.data });
        }
        const summary = () => JSON.stringify(outcomes.map(({ data, answer, ...x }) => x));
        for (const o of outcomes) {
            assert.equal(o.read, "200 paused", `${o.total} levels, GET /runs/{id} after the restart: ${summary()}`);
            assert.equal(o.callback, "200 completed", `${o.total} levels, callback after the restart: ${summary()}`);
            assertCallbackAnswer(o.answer, { status: "completed", run_id: o.runId, task_id: o.taskId });
            assert.deepEqual(o.data.deep, deepArrayValue(o.total - 2));
        }
    } finally {
        await w.stop();
        await comp.close();
        await rm(dir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// Run and record limits (SECURITY.md "Limits")

const RECORD_LIMIT = 20_000;

/** Where a run's record is kept in KV: `runs/{owner tag}/{id}` for listed ids, `run:{id}` for 32-hex ones. */
const recordKey = (id) => {
    const m = /^([0-9a-f]{16})-[0-9a-f]{11}-[0-9a-f]+$/.exec(id);
    return m ? `runs/${m[1]}/${id}` : `run:${id}`;
};

/** The stored record of a run, as KV holds it (waited for: the alarm writes it after the answer). */
async function storedRecord(w, runId) {
    const kv = await w.mf.getKVNamespace("RUNS");
    return waitUntil(`the record of ${runId} in KV`, () => kv.get(recordKey(runId), "text"), { timeoutMs: 5000, everyMs: 20 });
}

/** The date variables every run's context starts with (README "Graphs"). */
const DATE_VARS = ["_today", "_yesterday", "_now", "_now_unix", "_now_unix_s", "_year", "_month", "_day", "_hour", "_minute", "_second", "_iso_week"];
/** The date variables of a context (or an Output that echoes one), as an object of their own. */
function dateVarsOf(ctx) {
    for (const k of DATE_VARS) assert.ok(k in ctx, `${k} in ${Object.keys(ctx)}`);
    return Object.fromEntries(DATE_VARS.map((k) => [k, ctx[k]]));
}

test("a component answer past MAX_RUN_RECORD_BYTES fails its node, saying so, and the run stays retryable", { timeout: 60_000 }, async () => {
    const big = await startComponent(() => ({ blob: "b".repeat(30_000) }));
    const small = await startComponent(() => ({ blob: "s".repeat(5_000) }));
    const w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) } });
    try {
        const graphOf = (url) => chain(["in", "Input"], ["big", "Component", url], ["out", "Output"]);
        const r = await w.fetchJson("/execute", { body: { graph: graphOf(big.url) } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "failed", r.text.slice(0, 300));
        assert.equal(r.body.success, false);
        assert.equal(r.body.error.code, "node_failed");
        assert.equal(r.body.error.node_id, "big");
        assert.match(r.body.error.message, new RegExp(`^the result of node 'big' \\(the component's answer\\) is \\d+ bytes of JSON: with the \\d+ bytes the run holds already it would pass ${RECORD_LIMIT}, the most one run may hold and store$`), r.body.error.message);
        assert.equal(big.hits(), 1);
        assert.ok(!r.body.trace.some((e) => e.node_id === "out"), "nothing ran after the failure");
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        assert.equal(read.body.status, "failed");
        assert.deepEqual(read.body.error, r.body.error);
        const stored = await storedRecord(w, r.body.run_id);
        assert.ok(stored.length <= RECORD_LIMIT, `stored record is ${stored.length} bytes`);
        // Not a dead end: a retry calls the component again (here it answers as large again).
        const again = await w.fetchJson(`/runs/${r.body.run_id}/retry`, { method: "POST" });
        assert.equal(again.status, 200, again.text.slice(0, 300));
        assert.equal(again.body.status, "failed");
        assert.equal(big.hits(), 2);

        // The same graph with an answer that fits completes.
        const ok = await w.fetchJson("/execute", { body: { graph: graphOf(small.url) } });
        assert.equal(ok.body.status, "completed", ok.text.slice(0, 300));
        assert.equal(ok.body.data.blob.length, 5_000);
    } finally {
        await w.stop();
        await big.close();
        await small.close();
    }
});

test("run_too_large: outputs held across many nodes past MAX_RUN_RECORD_BYTES fail the run with that code, and its trace is kept", { timeout: 60_000 }, async () => {
    // SECURITY.md (Limits): node outputs a run holds count against the record limit; small ones
    // adding up past it fail the run with run_too_large. 100 comp_passthrough nodes in a chain each
    // add 300 bytes of their own (the pad again, under a key of their own) to what they pass on:
    // ~31 KB held, past 20 KB about node 64. (What each repeats of its context is shared, not
    // counted again: the run's own test of that is tests/shared.rs and the bench's (r).)
    const w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) } });
    try {
        const graph = chain(["in", "Input"], ...Array.from({ length: 100 }, (_, i) => [`p${i}`, "Component", "comp_passthrough"]));
        for (const node of graph.nodes.slice(1)) node.data = { [`own_${node.id}`]: "{{pad}}" };
        const r = await w.fetchJson("/execute", { body: { graph, context: { pad: "x".repeat(300) } } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "failed", r.text.slice(0, 300));
        assert.deepEqual(r.body.error, {
            code: "run_too_large",
            message: `the run's node outputs grew past ${RECORD_LIMIT} bytes, the most one run may hold and store`,
        }, r.text.slice(0, 600));
        assert.ok(r.body.trace.length > 0, `the trace is kept: ${JSON.stringify(r.body.trace_truncated)}`);
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        assert.deepEqual(read.body.error, r.body.error);
        const stored = await storedRecord(w, r.body.run_id);
        assert.ok(stored.length <= RECORD_LIMIT, `stored record is ${stored.length} bytes`);
    } finally {
        await w.stop();
    }
});

test("FOREACH item inputs (items × context) past the run limit fail the node before any item is built", { timeout: 60_000 }, async () => {
    const comp = await startComponent((b) => ({ seen: b.item }));
    const w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) } });
    try {
        const graph = {
            nodes: [{ id: "list", type: "Input" }, { id: "each", type: "Component", componentId: `${comp.url}/each` }],
            edges: [{ from: "list", to: "each", type: "FOREACH" }],
        };
        const pad = "p".repeat(5_000);
        const items = Array.from({ length: 10 }, (_, i) => i);
        const r = await w.fetchJson("/execute", { body: { graph, context: { pad, items } } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "failed", r.text.slice(0, 300));
        assert.equal(r.body.error.code, "node_failed");
        assert.equal(r.body.error.node_id, "each");
        const m = /^FOREACH over 10 items would build about (\d+) bytes of item inputs \(each carries the context\), over the run limit of 20000 bytes$/.exec(r.body.error.message);
        assert.ok(m, r.body.error.message);
        assert.equal(comp.hits(), 0, "no item was called");

        // Routed by ON_FAIL like any node failure.
        const routed = {
            nodes: [...graph.nodes, { id: "why", type: "Output", data: { why: "{{each.error}}" } }],
            edges: [...graph.edges, { from: "each", to: "why", type: "ON_FAIL" }],
        };
        const rr = await w.fetchJson("/execute", { body: { graph: routed, context: { pad, items } } });
        assert.equal(rr.body.status, "completed", rr.text.slice(0, 300));
        assert.equal(rr.body.data.why, r.body.error.message);
        assert.equal(comp.hits(), 0);
        // Each item's input carries the context less the iterated array: the pad and the run's
        // date variables (which the Output echoes).
        const contextBytes = JSON.stringify({ pad, ...dateVarsOf(rr.body.data) }).length;
        assert.ok(Number(m[1]) >= 10 * (contextBytes - 50) && Number(m[1]) < 10 * (contextBytes + 200), `about ${m[1]} bytes for 10 contexts of ${contextBytes} bytes`);

        // Three items of the same context fit (3 × 5.3 KB < 20 KB): each is called once.
        const fits = await w.fetchJson("/execute", { body: { graph, context: { pad, items: [0, 1, 2] } } });
        assert.equal(fits.body.status, "completed", fits.text.slice(0, 300));
        assert.deepEqual(fits.body.data.results.map((x) => x.seen), [0, 1, 2]);
        assert.equal(comp.hits("/each"), 3);
    } finally {
        await w.stop();
        await comp.close();
    }
});

test("calls issued at once are batched by input size: 30 calls with 400 KB inputs all happen, once each", { timeout: 90_000 }, async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const comp = await startComponent(async (b, req) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await sleep(150);
        inFlight--;
        return { n: new URL(req.url, "http://c").pathname.slice(1), padBytes: b.pad.length };
    });
    const w = await startWorker();
    try {
        const N = 30;
        const PAD = 400_000;
        const nodes = [{ id: "in", type: "Input" }];
        const edges = [];
        for (let i = 0; i < N; i++) {
            nodes.push({ id: `c${i}`, type: "Component", componentId: `${comp.url}/c${i}` });
            edges.push({ from: "in", to: `c${i}`, type: "PIPE" });
        }
        const r = await w.fetchJson("/execute", { body: { graph: { nodes, edges }, context: { pad: "c".repeat(PAD) } } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "completed", r.text.slice(0, 300));
        for (let i = 0; i < N; i++) {
            assert.equal(comp.hits(`/c${i}`), 1, `c${i} called once`);
            assert.deepEqual(r.body.data[`c${i}`], { n: `c${i}`, padBytes: PAD });
        }
        assert.equal(comp.hits(), N);
        // At most 8 MiB of inputs are issued at once: never all 30 (12 MB) together.
        const bound = Math.ceil((8 << 20) / PAD);
        assert.ok(maxInFlight <= bound, `${maxInFlight} calls were in flight at once; 8 MiB of 400 KB inputs is at most ${bound}`);
        assert.equal(r.body.trace.filter((e) => e.status === "succeeded").length, N + 1);
    } finally {
        await w.stop();
        await comp.close();
    }
});

test("a record past MAX_RUN_RECORD_BYTES drops its oldest trace entries first, with trace_truncated shown", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) } });
    try {
        // 70 in-process items, each counted by comp_counter ({"count": 1}), under a node whose id
        // is 200 characters: a trace of 72 entries (~20 KB, each naming the node), a small graph
        // and a ~1 KB result. Every item's input carries the run's date variables (~235 bytes),
        // so 70 items (~16.5 KB of inputs) and the outputs the run holds fit the limit; the
        // record does not.
        const each = "e".repeat(200);
        const graph = {
            nodes: [{ id: "list", type: "Input" }, { id: each, type: "Component", componentId: "comp_counter" }],
            edges: [{ from: "list", to: each, type: "FOREACH" }],
        };
        const N = 70;
        const items = Array.from({ length: N }, (_, i) => i);
        const r = await w.fetchJson("/execute", { body: { graph, context: { items } } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "completed", r.text.slice(0, 300));
        assert.equal(r.body.data.count, N);
        assert.deepEqual(r.body.data.results, items.map(() => ({ count: 1 })));
        const { dropped_entries: dropped } = r.body.trace_truncated;
        assert.ok(Number.isInteger(dropped) && dropped > 0, JSON.stringify(r.body.trace_truncated));
        assert.equal(r.body.trace.length + dropped, N + 2, `list, ${N} items, the node`);
        // The newest are kept: the last items in order, then the node itself.
        const tail = r.body.trace;
        assert.deepEqual(tail.at(-1).node_id, each);
        assert.equal(tail.at(-1).item, undefined);
        assert.deepEqual(tail.slice(0, -1).map((e) => e.item), items.slice(N - (tail.length - 1)));
        await kvCaughtUp(w, r.body.run_id);
        const stored = await storedRecord(w, r.body.run_id);
        assert.ok(stored.length <= RECORD_LIMIT, `stored record is ${stored.length} bytes`);
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        assert.deepEqual(read.body.trace_truncated, { dropped_entries: dropped });
        assert.deepEqual(read.body.trace, r.body.trace);
    } finally {
        await w.stop();
    }
});

test("record_too_large: a record that stays too large with no trace left fails the run with that code", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) } });
    try {
        // The graph itself (stored with the run) is larger than the limit; outputs are tiny.
        const graph = { ...chain(["p", "Component", "comp_passthrough"]), name: "n".repeat(30_000) };
        const r = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.status, "failed", r.text.slice(0, 300));
        assert.equal(r.body.error.code, "record_too_large");
        assert.match(r.body.error.message, /^the run's state grew to \d+ bytes, over the 20000-byte limit for a stored run$/);
        assert.deepEqual(r.body.trace, [], "the trace was dropped first");
        assert.deepEqual(r.body.trace_truncated, { dropped_entries: 1 });
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        assert.equal(read.status, 200);
        assert.equal(read.body.status, "failed");
        assert.deepEqual(read.body.error, r.body.error);
    } finally {
        await w.stop();
    }
});

// ---------------------------------------------------------------------------------------
// Refused bodies: drained before the answer, or answered unread

/**
 * A request body that trickles: `head`, then `pieces` pieces of `pieceBytes` spaces, one every
 * `everyMs`, then `tail`. `progress.sent` counts pieces handed over, `progress.doneAt` is when the
 * last byte was.
 */
function trickle({ head, tail, pieces, pieceBytes, everyMs }) {
    const enc = new TextEncoder();
    const piece = new Uint8Array(pieceBytes).fill(0x20);
    const progress = { sent: 0, doneAt: null };
    let step = 0;
    const stream = new ReadableStream({
        async pull(controller) {
            if (step === 0) {
                controller.enqueue(enc.encode(head));
            } else if (step <= pieces) {
                await sleep(everyMs);
                controller.enqueue(piece);
                progress.sent++;
            } else {
                controller.enqueue(enc.encode(tail));
                progress.doneAt = Date.now();
                controller.close();
            }
            step++;
        },
    });
    return { stream, progress };
}

test("an over-limit body still being uploaded gets its 413 as JSON (fetch, streamed body)", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        // 1.5 MiB in 64 KiB pieces, one every 15 ms: the limit passes mid-upload.
        const { stream, progress } = trickle({ head: '{"graph": {"nodes": []}, "pad": "', tail: '"}', pieces: 24, pieceBytes: 64 * 1024, everyMs: 15 });
        const res = await fetch(`${w.url}/execute`, {
            method: "POST",
            headers: { ...AUTH, "content-type": "application/json" },
            body: stream,
            duplex: "half",
        });
        assert.equal(res.status, 413);
        assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
        assert.deepEqual(await res.json(), {
            success: false,
            error: { code: "payload_too_large", message: `the request body exceeds ${MAX_BODY} bytes` },
        });
        assert.ok(progress.sent > 16, `the limit (16 pieces) was passed while uploading (${progress.sent} pieces sent)`);
        assert.equal((await w.kvSnapshot()).size, 0);
    } finally {
        await w.stop();
    }
});

/**
 * Uploads `pieces` × `pieceBytes` over a raw connection, one piece every `everyMs`, and notes when
 * the answer arrives relative to the upload. Stops uploading once answered.
 */
function slowUpload(port, options) {
    return slowUploadUnchecked(port, options).then((r) => {
        checkRawAnswer(port, `POST ${options.pathname} HTTP/1.1`, r, r.text);
        return r;
    });
}

function slowUploadUnchecked(port, { pathname, headers, pieces, pieceBytes, everyMs, declared }) {
    return new Promise((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1");
        const startedAt = Date.now();
        let buf = Buffer.alloc(0);
        let sent = 0;
        let answeredAt = null;
        let sentWhenAnswered = null;
        let settled = false;
        const total = pieces * pieceBytes;
        const head = [`POST ${pathname} HTTP/1.1`, `Host: 127.0.0.1:${port}`, "Connection: close", "Content-Type: application/json",
            ...headers, declared ? `Content-Length: ${total}` : "Transfer-Encoding: chunked", "", ""].join("\r\n");
        const frame = (b) => (declared ? b : Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from("\r\n")]));
        const piece = frame(Buffer.alloc(pieceBytes, 0x20));
        const timer = setTimeout(() => finish(new Error(`no answer within 30 s (${sent} pieces sent)`)), 30_000);
        const finish = (err) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            socket.destroy();
            if (err) return reject(err);
            const end = buf.indexOf("\r\n\r\n");
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.toString("latin1"));
            if (end < 0 || !m) return reject(new Error(`no HTTP response: ${JSON.stringify(buf.toString("latin1").slice(0, 200))}`));
            const hdrs = new Map();
            for (const line of buf.subarray(0, end).toString("latin1").split("\r\n").slice(1)) {
                const i = line.indexOf(":");
                hdrs.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
            }
            const length = Number(hdrs.get("content-length"));
            const text = buf.subarray(end + 4, end + 4 + length).toString("utf8");
            resolve({ status: Number(m[1]), headers: hdrs, text, answeredMs: answeredAt - startedAt, sentWhenAnswered, pieces });
        };
        const complete = () => {
            const end = buf.indexOf("\r\n\r\n");
            if (end < 0) return false;
            const cl = /\r\ncontent-length:\s*(\d+)/i.exec(buf.subarray(0, end).toString("latin1"));
            return cl && buf.length >= end + 4 + Number(cl[1]);
        };
        socket.on("data", (c) => {
            if (answeredAt === null) {
                answeredAt = Date.now();
                sentWhenAnswered = sent;
            }
            buf = Buffer.concat([buf, c]);
            if (complete()) finish();
        });
        socket.on("close", () => (buf.length ? finish() : finish(new Error(`closed without an answer after ${sent} pieces`))));
        socket.on("error", () => {}); // writes after the answer may fail; the answer is what counts
        socket.on("connect", async () => {
            socket.write(head);
            for (let i = 0; i < pieces && answeredAt === null && !socket.destroyed; i++) {
                await sleep(everyMs);
                if (answeredAt !== null || socket.destroyed) break;
                socket.write(piece);
                sent++;
            }
            if (answeredAt === null && !socket.destroyed && !declared) socket.write("0\r\n\r\n");
        });
    });
}

for (const declared of [false, true]) {
    test(`a 4 MB body without an API key is answered 401 while it is still uploading (${declared ? "Content-Length" : "chunked"})`, { timeout: 60_000 }, async () => {
        const w = await startWorker();
        try {
            // 4,000,000 bytes in 64 pieces of 62,500, one every 100 ms: 6.4 s to upload in full.
            const r = await slowUpload(w.port, { pathname: "/execute", headers: [], pieces: 64, pieceBytes: 62_500, everyMs: 100, declared });
            assert.equal(r.status, 401, r.text);
            assert.deepEqual(JSON.parse(r.text), {
                success: false,
                error: { code: "unauthorized", message: "an API key is required: send `Authorization: Bearer <key>` or `X-Arcrun-API-Key: <key>`" },
            });
            assert.ok(r.sentWhenAnswered < r.pieces, `answered after ${r.sentWhenAnswered} of ${r.pieces} pieces: the whole body was read first`);
            // A refused body is drained for at most 2 s before the answer (SECURITY.md).
            assert.ok(r.answeredMs < 3_500, `answered after ${r.answeredMs} ms`);
            assert.equal((await w.kvSnapshot()).size, 0);
        } finally {
            await w.stop();
        }
    });
}

test("a body declared larger than 4 MiB without an API key is answered 401 at once, unread", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        // 5,000,000 bytes declared; one 62,500-byte piece every 100 ms (8 s in full).
        const r = await slowUpload(w.port, { pathname: "/execute", headers: [], pieces: 80, pieceBytes: 62_500, everyMs: 100, declared: true });
        assert.equal(r.status, 401, r.text);
        assert.equal(JSON.parse(r.text).error.code, "unauthorized");
        assert.ok(r.answeredMs < 1_500, `answered after ${r.answeredMs} ms (${r.sentWhenAnswered} pieces)`);
    } finally {
        await w.stop();
    }
});
