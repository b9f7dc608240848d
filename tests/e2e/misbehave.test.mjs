// Components that misbehave cannot hurt the engine (issue 13), end to end: the built Worker in
// workerd (Miniflare), over real HTTP, with loopback components that count what reaches them.
//
// - calls in flight per segment are bounded (MAX_CALLS_AT_ONCE = 6; a FOREACH edge's
//   `max_concurrency` below that);
// - a component's body is read under the call's timeout (COMPONENT_TIMEOUT_SECONDS), and a
//   sibling wait's callback is not held up behind the slow call;
// - a pending answer's task_id is bounded (MAX_TASK_ID_BYTES = 1024) and a longer one is stored
//   nowhere;
// - a template bomb through callback data (item inputs that would multiply memory) is refused
//   cleanly and the module stays up;
// - GET /runs/{id} of a run that failed for its size answers quickly;
// - a component that awaits its own callback before it answers pending does not deadlock;
// - the bare legacy route (ALLOW_BARE_RESUME) with long and shared task ids.
//
// Every test asserts what happened: statuses, the run as GET /runs/{id} shows it, error codes,
// and what the loopback servers saw.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import {
    startWorker,
    startComponent,
    pendingComponent,
    postCallback,
    waitUntil,
    waitForStatus,
    sleep,
    sha256hex,
    uncheckedFetch,
    assertMatchesOpenApi,
    TEST_API_KEY,
    TEST_API_KEY_HASH,
} from "./harness.mjs";

/** src/core/run/schedule.rs */
const MAX_CALLS_AT_ONCE = 6;
/** src/core/protocol.rs */
const MAX_TASK_ID_BYTES = 1024;
/** src/core/run/mod.rs, Settings::default() (MAX_TEMPLATE_BYTES) */
const MAX_TEMPLATE_BYTES = 1 << 20;

/** `node[item]:status` of each trace entry. */
const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);

/**
 * Stops the Worker after a test. stop() throws when the Worker wrote a KV key faster than once
 * a second; when the test itself already failed, that is added to its error instead of hiding it.
 */
async function stopWorker(w, failure) {
    try {
        await w.stop();
    } catch (err) {
        if (!failure) throw err;
        failure.message += `\n    (and when the Worker was stopped: ${err.message})`;
    }
}

/** A plain POST of JSON (no harness helper), with its timing: `{status, body, text, ms}`. */
async function postJson(url, payload) {
    const started = Date.now();
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
    const text = await res.text();
    let body = null;
    try {
        body = text === "" ? null : JSON.parse(text);
    } catch {
        body = text;
    }
    return { status: res.status, body, text, ms: Date.now() - started };
}

/** A callback's answer is the applied one (200, resumed) or, while a segment runs, 202 accepted. */
function assertCallbackTaken(r, what) {
    assert.ok(r.status === 200 || r.status === 202, `${what}: ${r.status} ${r.text}`);
    if (r.status === 200) assert.equal(r.body.resumed, true, `${what}: ${r.text}`);
    else assert.equal(r.body.accepted, true, `${what}: ${r.text}`);
}

/**
 * A loopback HTTP server that counts requests open at once, from the moment a request arrives
 * until its answer is sent: `handler(json, req)` answers a plain object (200 JSON) after
 * `delayMs`.
 */
async function countingServer({ delayMs = 0, handler = (b) => ({ v: b?.item, index: b?.index }) } = {}) {
    const stats = { open: 0, max: 0, total: 0, bytes: 0, maxOpenBytes: 0, openBytes: 0, bodies: [] };
    const server = http.createServer((req, res) => {
        stats.open++;
        stats.total++;
        stats.max = Math.max(stats.max, stats.open);
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", async () => {
            const buf = Buffer.concat(chunks);
            stats.bytes += buf.length;
            stats.openBytes += buf.length;
            stats.maxOpenBytes = Math.max(stats.maxOpenBytes, stats.openBytes);
            let body = null;
            try {
                body = JSON.parse(buf.toString("utf8"));
            } catch {
                body = null;
            }
            if (delayMs) await sleep(delayMs);
            let out;
            try {
                out = await handler(body, req, buf.length);
            } catch (err) {
                out = { success: false, error: String(err?.message ?? err) };
            }
            stats.open--;
            stats.openBytes -= buf.length;
            const payload = JSON.stringify(out);
            res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
            res.end(payload);
        });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        stats,
        close: () =>
            new Promise((resolve) => {
                server.close(() => resolve());
                server.closeAllConnections();
            }),
    };
}

// ---------------------------------------------------------------------------------------
// 1. Calls in flight per segment are bounded.

test("FOREACH over 200 items: never more than MAX_CALLS_AT_ONCE (6) calls open at the component; max_concurrency 2 never more than 2", { timeout: 120_000 }, async () => {
    const comp = await countingServer({ delayMs: 50 });
    const w = await startWorker();
    let failure;
    try {
        const N = 200;
        const items = Array.from({ length: N }, (_, i) => i);
        const graphOf = (edgeExtra) => ({
            nodes: [{ id: "list", type: "Input" }, { id: "each", type: "Component", componentId: `${comp.url}/each` }],
            edges: [{ from: "list", to: "each", type: "FOREACH", ...edgeExtra }],
        });

        for (const [label, extra, bound] of [
            ["no max_concurrency", {}, MAX_CALLS_AT_ONCE],
            ["max_concurrency 2", { max_concurrency: 2 }, 2],
        ]) {
            comp.stats.max = 0;
            comp.stats.total = 0;
            const started = Date.now();
            const t = await w.fetchJson("/execute", { body: { graph: graphOf(extra), context: { items } } });
            // 200 calls need more than one invocation (MAX_SUBREQUESTS_PER_INVOCATION = 45): 202 running.
            assert.ok(t.status === 200 || t.status === 202, `${label}: ${t.status} ${t.text.slice(0, 300)}`);
            const done = await waitForStatus(w, t.body.run_id, ["completed", "failed"], 90_000);
            const elapsed = Date.now() - started;
            assert.equal(done.body.status, "completed", `${label}: ${done.text.slice(0, 500)}`);
            assert.equal(done.body.data.count, N, label);
            assert.equal(done.body.data.failed, 0, label);
            assert.equal(done.body.data.results.length, N, label);
            assert.deepEqual(done.body.data.results.map((r) => r.v), items, `${label}: every item's result, in order`);
            assert.equal(comp.stats.total, N, `${label}: each item called once`);
            console.log(`[misbehave] ${label}: ${N} items, at most ${comp.stats.max} open at once, ${elapsed} ms`);
            assert.ok(comp.stats.max <= bound, `${label}: ${comp.stats.max} requests were open at once; the bound is ${bound}`);
            assert.ok(comp.stats.max >= Math.min(bound, 2), `${label}: calls do go out concurrently (max ${comp.stats.max})`);
        }
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await comp.close();
        await stopWorker(w, failure);
    }
});

// ---------------------------------------------------------------------------------------
// 2. A component's body is read under the call's timeout.

test("a component that trickles its body 1 byte/s for 30 s fails at COMPONENT_TIMEOUT_SECONDS (2 s); a sibling wait's callback is not held up", { timeout: 90_000 }, async () => {
    const trickle = { started: 0, closedAt: 0, bytesSent: 0, timers: new Set() };
    const slow = http.createServer((req, res) => {
        req.resume();
        req.on("end", () => {
            trickle.started = Date.now();
            res.writeHead(200, { "content-type": "application/json" });
            res.write('{"slow":"');
            trickle.bytesSent = 9;
            let n = 0;
            const timer = setInterval(() => {
                if (++n >= 30) {
                    clearInterval(timer);
                    trickle.timers.delete(timer);
                    res.end('"}');
                    return;
                }
                res.write("x");
                trickle.bytesSent++;
            }, 1000);
            trickle.timers.add(timer);
            res.on("close", () => {
                clearInterval(timer);
                trickle.timers.delete(timer);
                if (!trickle.closedAt) trickle.closedAt = Date.now();
            });
        });
    });
    await new Promise((resolve) => slow.listen(0, "127.0.0.1", resolve));
    const slowUrl = `http://127.0.0.1:${slow.address().port}`;

    // The sibling: answers pending at once and calls back 300 ms later, while the trigger's
    // segment is still reading the trickle.
    const sibling = { reply: null, sentAt: 0 };
    const pend = await startComponent((body) => {
        const taskId = "sibling-task";
        setTimeout(() => {
            sibling.sentAt = Date.now();
            sibling.reply = postJson(body.callback_url, { task_id: taskId, success: true, data: { from: "sibling" } });
            sibling.reply.catch(() => {});
        }, 300);
        return { pending: true, task_id: taskId };
    });
    const w = await startWorker({ bindings: { COMPONENT_TIMEOUT_SECONDS: "2" } });
    let failure;
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "slow", type: "Component", componentId: `${slowUrl}/trickle` },
                { id: "caught", type: "Output", data: { why: "{{slow.error}}" } },
                { id: "pend", type: "Component", componentId: `${pend.url}/pend` },
                { id: "after", type: "Output", data: { got: "{{pend.data.from}}" } },
            ],
            edges: [
                { from: "in", to: "slow", type: "PIPE" },
                { from: "slow", to: "caught", type: "ON_FAIL" },
                { from: "in", to: "pend", type: "PIPE" },
                { from: "pend", to: "after", type: "ON_SUCCESS" },
            ],
        };
        const started = Date.now();
        const t = await w.fetchJson("/execute", { body: { graph } });
        const triggerMs = Date.now() - started;
        console.log(`[misbehave] trickle: trigger answered in ${triggerMs} ms (${t.status} ${t.body?.status}); trickle closed after ${trickle.closedAt ? trickle.closedAt - trickle.started : "never"} ms, ${trickle.bytesSent} bytes sent`);
        assert.equal(t.status, 200, t.text.slice(0, 400));
        assert.ok(["paused", "completed"].includes(t.body.status), t.text.slice(0, 400));
        assert.ok(triggerMs >= 1_900, `the call was given its 2 s (${triggerMs} ms)`);
        assert.ok(triggerMs < 10_000, `the trickling body did not hold the segment for long: ${triggerMs} ms (it trickles for 30 s)`);

        // The sibling's callback was answered promptly: applied when the segment ended, or 202.
        assert.ok(sibling.reply, "the sibling sent its callback");
        assert.ok(sibling.sentAt < started + triggerMs - 500, "the sibling called back while the trigger's segment was still reading the trickle");
        const reply = await sibling.reply;
        console.log(`[misbehave] trickle: sibling callback answered ${reply.status} in ${reply.ms} ms: ${reply.text}`);
        assertCallbackTaken(reply, "sibling callback");
        assert.ok(reply.ms < 3_500, `the sibling callback was answered in ${reply.ms} ms`);

        const done = await waitForStatus(w, t.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text.slice(0, 600));
        assert.equal(done.body.data.caught.why, "timed out after 2000 ms", done.text.slice(0, 600));
        assert.equal(done.body.data.after.got, "sibling", done.text.slice(0, 600));
        const slowEntry = done.body.trace.find((e) => e.node_id === "slow");
        assert.equal(slowEntry.status, "failed", JSON.stringify(slowEntry));
        assert.equal(slowEntry.error, "timed out after 2000 ms");
        assert.ok(slowEntry.duration_ms >= 1_900 && slowEntry.duration_ms < 10_000, `slow failed after ${slowEntry.duration_ms} ms`);
        assert.deepEqual(statuses(done.body.trace).sort(), ["after:succeeded", "caught:succeeded", "in:succeeded", "pend:paused", "pend:succeeded", "slow:failed"].sort());

        // The engine let go of the trickling connection rather than reading it to its end.
        await waitUntil("the trickling connection to be closed", () => trickle.closedAt > 0, { timeoutMs: 10_000 });
        assert.ok(trickle.closedAt - trickle.started < 10_000, `closed after ${trickle.closedAt - trickle.started} ms`);
        assert.ok(trickle.bytesSent < 20, `${trickle.bytesSent} bytes of the 30-second body were sent`);
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        for (const timer of trickle.timers) clearInterval(timer);
        await pend.close();
        await new Promise((resolve) => {
            slow.close(() => resolve());
            slow.closeAllConnections();
        });
        await stopWorker(w, failure);
    }
});

// ---------------------------------------------------------------------------------------
// 3. A pending answer's task_id is bounded.

test("a pending task_id over 1 KB fails the node with a clear error and is stored nowhere; one of exactly 1024 bytes pauses and resumes", { timeout: 60_000 }, async () => {
    const HUGE = "Z".repeat(5_000);
    const EXACT = `exact-${"K".repeat(MAX_TASK_ID_BYTES - 6)}`;
    assert.equal(Buffer.byteLength(EXACT), MAX_TASK_ID_BYTES);
    const comp = await startComponent((body, req) => {
        const p = new URL(req.url, "http://c").pathname;
        return { pending: true, task_id: p === "/huge" ? HUGE : EXACT };
    });
    // The bare route on: the task index would be one more place to store the id.
    const w = await startWorker({ bindings: { ALLOW_BARE_RESUME: "true" } });
    let failure;
    try {
        const graphOf = (p) => ({
            nodes: [
                { id: "in", type: "Input" },
                { id: "daemon", type: "Component", componentId: `${comp.url}${p}` },
                { id: "out", type: "Output", data: { got: "{{daemon.data.v}}" } },
            ],
            edges: [
                { from: "in", to: "daemon", type: "PIPE" },
                { from: "daemon", to: "out", type: "ON_SUCCESS" },
            ],
        });
        const expected = {
            code: "node_failed",
            message: `component answered pending with a ${HUGE.length}-byte task_id; the limit is ${MAX_TASK_ID_BYTES} bytes`,
            node_id: "daemon",
        };
        const t = await w.fetchJson("/execute", { body: { graph: graphOf("/huge") } });
        assert.equal(t.status, 200, t.text.slice(0, 300));
        assert.equal(t.body.status, "failed", t.text.slice(0, 300));
        assert.equal(t.body.success, false);
        assert.deepEqual(t.body.error, expected);
        assert.ok(!t.text.includes(HUGE.slice(0, MAX_TASK_ID_BYTES + 1)), "the trigger's answer does not carry the id");
        const runId = t.body.run_id;

        const read = await w.fetchJson(`/runs/${runId}`);
        assert.equal(read.body.status, "failed", read.text.slice(0, 300));
        assert.deepEqual(read.body.error, expected);
        assert.deepEqual(read.body.waits, [], "no wait was opened");
        const entry = read.body.trace.find((e) => e.node_id === "daemon");
        assert.equal(entry.status, "failed");
        assert.equal(entry.error, expected.message);
        assert.ok(!read.text.includes(HUGE.slice(0, MAX_TASK_ID_BYTES + 1)), "GET /runs/{id} does not carry the id");

        // KV: the run's record is there (failed), and nothing holds the id.
        const snapshot = await waitUntil("the failed run's record in KV", async () => {
            const snap = await w.kvSnapshot();
            const key = [...snap.keys()].find((k) => k.endsWith(`/${runId}`));
            return key && /failed/.test(snap.get(key)) ? snap : null;
        }, { timeoutMs: 5_000 });
        for (const [key, value] of snapshot) {
            assert.ok(!key.includes("ZZZZ"), `KV key ${key.slice(0, 80)}…`);
            assert.ok(!String(value).includes(HUGE.slice(0, MAX_TASK_ID_BYTES + 1)), `KV value of ${key} holds the ${HUGE.length}-byte id`);
        }
        assert.ok(![...snapshot.keys()].some((k) => k.startsWith("task:")), "no task index entry in KV (the index is a claim object per id)");

        // Exactly 1024 bytes: the run pauses on it and its callback resumes it.
        const ok = await w.fetchJson("/execute", { body: { graph: graphOf("/exact") } });
        assert.equal(ok.status, 200, ok.text.slice(0, 300));
        assert.equal(ok.body.status, "paused", ok.text.slice(0, 300));
        assert.equal(ok.body.task_id, EXACT);
        const okRead = await w.fetchJson(`/runs/${ok.body.run_id}`);
        assert.deepEqual(okRead.body.waits.map((x) => x.task_id), [EXACT]);
        const call = comp.requests().find((q) => q.path === "/exact");
        const resumed = await postCallback(call.body.callback_url, EXACT, { success: true, data: { v: "exact-ok" } });
        assert.equal(resumed.status, 200, resumed.text.slice(0, 300));
        assert.equal(resumed.body.resumed, true, resumed.text.slice(0, 300));
        assert.equal(resumed.body.status, "completed", resumed.text.slice(0, 300));
        const okDone = await waitForStatus(w, ok.body.run_id, ["completed", "failed"]);
        assert.equal(okDone.body.status, "completed");
        assert.equal(okDone.body.data.got, "exact-ok");
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await comp.close();
        await stopWorker(w, failure);
    }
});

// ---------------------------------------------------------------------------------------
// 4. A template bomb through callback data.

/**
 * Starts a run whose FOREACH `a` over N items pauses on every item, then calls each item back
 * with `blobBytes` of data: `a.results` then holds N × blobBytes. `b` is the downstream FOREACH
 * target over a's results, with `bData` as its data. Returns the run id and every status the
 * Worker answered along the way.
 */
async function bombRun(w, { n, blobBytes, bUrl, bData, answers }) {
    const pend = await pendingComponent();
    try {
        const graph = {
            nodes: [
                { id: "list", type: "Input" },
                { id: "a", type: "Component", componentId: `${pend.url}/a` },
                { id: "b", type: "Component", componentId: `${bUrl}/b`, data: bData },
            ],
            edges: [
                { from: "list", to: "a", type: "FOREACH" },
                { from: "a", to: "b", type: "FOREACH" },
            ],
        };
        const t = await w.fetchJson("/execute", { body: { graph, context: { items: Array.from({ length: n }, (_, i) => i) } } });
        answers.push(t.status);
        assert.equal(t.status, 200, t.text.slice(0, 300));
        assert.equal(t.body.status, "paused", t.text.slice(0, 300));
        await waitUntil(`${n} pending calls`, () => pend.on("/a").length === n && pend.calls.every((c) => c.answered));
        const blob = "b".repeat(blobBytes);
        // Called back 8 at a time, each item with its own ~blobBytes.
        const calls = pend.on("/a").slice();
        const replies = [];
        while (calls.length) {
            const batch = calls.splice(0, 8);
            replies.push(...(await Promise.all(batch.map((c) => postCallback(c.callbackUrl, c.taskId, { success: true, data: { i: c.body.index, blob } })))));
        }
        for (const r of replies) {
            answers.push(r.status);
            assert.ok(r.status === 200 || r.status === 202, `callback: ${r.status} ${r.text.slice(0, 300)}`);
        }
        return t.body.run_id;
    } finally {
        await pend.close();
    }
}

test("template bomb: 40 items × 256 KB of callback data, each downstream item templating all of it (~400 MB if built), is refused by MAX_TEMPLATE_BYTES; the Worker stays up", { timeout: 120_000 }, async () => {
    // Scaled down from the report (3,000 items × 1 MB → 3 GB): 40 × 256 KB = 10 MB in a.results,
    // each of b's 40 items templating the whole of it (10 MB each, 400 MB in all).
    const N = 40;
    const BLOB = 256 * 1024;
    const b = await countingServer({ handler: (body, req, bytes) => ({ bytes }) });
    const echo = await startComponent((body) => ({ echoed: body?.x }));
    const w = await startWorker();
    const answers = [];
    let failure;
    try {
        const runId = await bombRun(w, { n: N, blobBytes: BLOB, bUrl: b.url, bData: { all: "{{a.results}}" }, answers });
        const done = await waitForStatus(w, runId, ["completed", "failed"], 60_000);
        answers.push(done.status);
        assert.equal(done.body.status, "failed", done.text.slice(0, 600));
        assert.deepEqual(done.body.error, { code: "node_failed", message: `${N} of ${N} items failed`, node_id: "b" }, done.text.slice(0, 600));
        const bItems = done.body.trace.filter((e) => e.node_id === "b" && Number.isInteger(e.item));
        assert.equal(bItems.length, N, statuses(done.body.trace).join(" "));
        for (const e of bItems) {
            assert.equal(e.status, "failed");
            assert.equal(e.error, `templates expanded to more than ${MAX_TEMPLATE_BYTES} bytes (MAX_TEMPLATE_BYTES)`);
        }
        assert.equal(b.stats.total, 0, "no item of b was built and sent");
        assert.ok(done.text.length < 4 << 20, `GET /runs/{id} is ${done.text.length} bytes`);

        await assertStillServing(w, echo, answers);
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await b.close();
        await echo.close();
        await stopWorker(w, failure);
    }
});

/**
 * After a bomb: the Worker still answers and runs new work (through `echo`), and no answer it
 * gave (`answers`, statuses gathered by the test) was a 5xx.
 */
async function assertStillServing(w, echo, answers) {
    const health = await w.fetchJson("/health");
    answers.push(health.status);
    assert.equal(health.status, 200);
    assert.equal(health.body.ok, true);
    const fresh = await w.fetchJson("/execute", { body: { graph: { nodes: [{ id: "c", type: "Component", componentId: echo.url }], edges: [] }, context: { x: "fresh" } } });
    answers.push(fresh.status);
    assert.equal(fresh.status, 200, fresh.text);
    assert.equal(fresh.body.status, "completed", fresh.text);
    assert.equal(fresh.body.data.echoed, "fresh");
    assert.deepEqual(answers.filter((s) => s >= 500), [], `no 5xx: ${answers.join(",")}`);
}

test("template bomb within the template budget: 40 items each templating ~768 KB of callback data are built a few at a time and the run stops at run_too_large", { timeout: 120_000 }, async () => {
    // Each of b's items renders three of a's results (768 KB, under MAX_TEMPLATE_BYTES) and its
    // own item (256 KB): ~1 MB per input, 40 MB if every input were built at once. The component
    // echoes its input back, so the outputs grow past MAX_RUN_RECORD_BYTES (24 MiB default).
    const N = 40;
    const BLOB = 256 * 1024;
    const b = await countingServer({ handler: (body) => body });
    const echo = await startComponent((body) => ({ echoed: body?.x }));
    const w = await startWorker();
    const answers = [];
    let failure;
    try {
        const runId = await bombRun(w, {
            n: N,
            blobBytes: BLOB,
            bUrl: b.url,
            bData: { first: "{{a.results.0}}", second: "{{a.results.1}}", third: "{{a.results.2}}" },
            answers,
        });
        const done = await waitForStatus(w, runId, ["completed", "failed"], 60_000);
        answers.push(done.status);
        console.log(`[misbehave] bomb within budget: b saw ${b.stats.total} calls, at most ${b.stats.max} (${b.stats.maxOpenBytes} bytes) open at once; run ${done.body.status} ${JSON.stringify(done.body.error)}`);
        assert.equal(done.body.status, "failed", done.text.slice(0, 600));
        assert.equal(done.body.error.code, "run_too_large", done.text.slice(0, 600));
        assert.match(done.body.error.message, /^the run's node outputs grew past \d+ bytes, the most one run may hold and store$/);
        assert.ok(b.stats.max <= MAX_CALLS_AT_ONCE, `${b.stats.max} of b's calls were open at once`);
        assert.ok(b.stats.maxOpenBytes <= (8 << 20) + (2 << 20), `${b.stats.maxOpenBytes} bytes of inputs were open at once`);
        assert.ok(b.stats.total < N, `the run stopped before all of b's ${N} items (${b.stats.total} called)`);
        assert.ok(done.text.length < 4 << 20, `GET /runs/{id} is ${done.text.length} bytes`);

        await assertStillServing(w, echo, answers);
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await b.close();
        await echo.close();
        await stopWorker(w, failure);
    }
});

// ---------------------------------------------------------------------------------------
// 5. Reading a run that failed for its size is quick.

test("GET /runs/{id} of a run that failed for its size answers within 1 s, every time: warm, and cold after a restart", { timeout: 90_000 }, async () => {
    const RECORD_LIMIT = 20_000;
    const bindings = { MAX_RUN_RECORD_BYTES: String(RECORD_LIMIT) };
    const big = await startComponent(() => ({ blob: "b".repeat(30_000) }));
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-misbehave-large-"));
    let w = await startWorker({ bindings, persistDir: dir });
    let failure;
    /** Times `count` reads of each run: every one answers 200, failed for its size. */
    const timeReads = async (runs, count, phase) => {
        for (const [label, runId] of runs) {
            const times = [];
            for (let i = 0; i < count; i++) {
                const started = performance.now();
                const r = await w.fetchJson(`/runs/${runId}`);
                times.push(Math.round(performance.now() - started));
                assert.equal(r.status, 200, r.text.slice(0, 300));
                assert.equal(r.body.status, "failed", r.text.slice(0, 300));
                assert.match(r.body.error.message, /the most one run may hold/);
                // Some reads right after the run, some after its record's write has surely happened.
                if (i === 3) await sleep(1_100);
            }
            console.log(`[misbehave] failed for its size (${label}), ${phase}: GET /runs/{id} took ${times.join(", ")} ms`);
            for (const ms of times) assert.ok(ms < 1_000, `${label}, ${phase}: a read took ${ms} ms (${times.join(", ")})`);
        }
    };
    try {
        const chain = (...steps) => ({
            nodes: steps.map(([id, type, componentId]) => ({ id, type, ...(componentId ? { componentId } : {}) })),
            edges: steps.slice(1).map(([id], i) => ({ from: steps[i][0], to: id, type: "PIPE" })),
        });
        const cases = [
            ["one answer past the limit", chain(["in", "Input"], ["big", "Component", big.url], ["out", "Output"])],
            ["outputs held across 100 nodes", chain(["in", "Input"], ...Array.from({ length: 100 }, (_, i) => [`p${i}`, "Component", "comp_passthrough"]))],
        ];
        // Each pass-through adds the pad again under a key of its own: 100 of them pass the limit.
        for (const node of cases[1][1].nodes.slice(1)) node.data = { [`own_${node.id}`]: "{{pad}}" };
        const runs = [];
        const context = { pad: "p".repeat(400) };
        for (const [label, graph] of cases) {
            const t = await w.fetchJson("/execute", { body: { graph, context } });
            assert.equal(t.status, 200, t.text.slice(0, 300));
            assert.equal(t.body.status, "failed", t.text.slice(0, 300));
            // One answer past the limit fails its node; many small ones, the run.
            assert.equal(t.body.error.code, label.startsWith("one") ? "node_failed" : "run_too_large", t.text.slice(0, 300));
            assert.match(t.body.error.message, /the most one run may hold/, t.text.slice(0, 300));
            runs.push([label, t.body.run_id]);
        }
        await timeReads(runs, 8, "warm");

        // Cold: a new runtime with the same state, its gates empty, the records read from KV.
        await waitUntil("both records in KV", async () => {
            const snap = await w.kvSnapshot();
            return runs.every(([, id]) => [...snap.keys()].some((k) => k.endsWith(`/${id}`)));
        }, { timeoutMs: 5_000 });
        await w.stop();
        w = await startWorker({ bindings, persistDir: dir });
        await timeReads(runs, 5, "cold, after a restart");
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await big.close();
        await stopWorker(w, failure);
        await rm(dir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// 6. A component that awaits its own callback before it answers pending.

test("a component that awaits its own callback's answer before answering pending: no deadlock, the run completes with the callback's data", { timeout: 60_000 }, async () => {
    const seen = [];
    const selfish = await startComponent(async (body, req) => {
        const wait = new URL(req.url, "http://c").pathname === "/await";
        const taskId = `self-${seen.length}`;
        const entry = { taskId, wait, reply: null, answeredAt: 0, sentAt: Date.now() };
        seen.push(entry);
        entry.reply = postJson(body.callback_url, { task_id: taskId, success: true, data: { answer: 42, how: wait ? "awaited" : "fired" } });
        entry.reply.catch(() => {});
        if (wait) {
            // Await the callback's answer — with a guard, so a deadlock shows as a failed
            // assertion rather than a hung test.
            await Promise.race([entry.reply, sleep(20_000)]);
        }
        entry.answeredAt = Date.now();
        return { pending: true, task_id: taskId };
    });
    const w = await startWorker();
    let failure;
    try {
        for (const p of ["/await", "/fire"]) {
            const graph = {
                nodes: [
                    { id: "in", type: "Input" },
                    { id: "selfish", type: "Component", componentId: `${selfish.url}${p}` },
                    { id: "out", type: "Output", data: { answer: "{{selfish.data.answer}}", how: "{{selfish.data.how}}" } },
                ],
                edges: [
                    { from: "in", to: "selfish", type: "PIPE" },
                    { from: "selfish", to: "out", type: "ON_SUCCESS" },
                ],
            };
            const started = Date.now();
            const t = await w.fetchJson("/execute", { body: { graph } });
            const triggerMs = Date.now() - started;
            const entry = seen.at(-1);
            assert.equal(t.status, 200, `${p}: ${t.text.slice(0, 300)}`);
            assert.ok(["paused", "completed"].includes(t.body.status), `${p}: ${t.text.slice(0, 300)}`);
            const reply = await Promise.race([entry.reply, sleep(20_000).then(() => ({ status: 0, text: "no answer in 20 s", ms: 20_000 }))]);
            console.log(`[misbehave] self-callback ${p}: callback answered ${reply.status} in ${reply.ms} ms (${reply.text}); trigger ${triggerMs} ms, ${t.body.status}`);
            assertCallbackTaken(reply, `${p} callback`);
            assert.ok(reply.ms < 4_000, `${p}: the callback was answered in ${reply.ms} ms`);
            assert.equal(reply.body.run_id, t.body.run_id);
            if (entry.wait) assert.ok(entry.answeredAt - entry.sentAt < 4_500, `${p}: the component answered pending ${entry.answeredAt - entry.sentAt} ms after calling back`);
            assert.ok(triggerMs < 8_000, `${p}: the trigger answered in ${triggerMs} ms`);

            const done = await waitForStatus(w, t.body.run_id, ["completed", "failed"]);
            assert.equal(done.body.status, "completed", `${p}: ${done.text.slice(0, 500)}`);
            assert.equal(done.body.data.answer, 42);
            assert.equal(done.body.data.how, entry.wait ? "awaited" : "fired");
            assert.deepEqual(done.body.waits, []);
            assert.equal(selfish.hits(p), 1, `${p}: the component was called once (no retry needed)`);
        }
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await selfish.close();
        await stopWorker(w, failure);
    }
});

// ---------------------------------------------------------------------------------------
// 7. The bare legacy route: long and shared task ids.

const KEY_B = "misbehave-key-b";

/** Answers of the bare route, per Worker, checked against public/openapi.json by checkBareAnswers. */
const bareAnswers = new WeakMap();

/**
 * POSTs a bare callback to /workflows/resume around the harness's OpenAPI check, so that a test
 * asserts the engine's behaviour in full first; checkBareAnswers(w) checks the answers against
 * the document at the end of the test.
 */
async function bareResume(w, payload) {
    const res = await uncheckedFetch(`${w.url}/workflows/resume`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(payload),
    });
    const text = await res.text();
    const r = { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : null };
    if (!bareAnswers.has(w)) bareAnswers.set(w, []);
    bareAnswers.get(w).push(r);
    return r;
}

/** Every bare answer the Worker gave in this test, as public/openapi.json documents the route. */
function checkBareAnswers(w) {
    for (const r of bareAnswers.get(w) ?? []) assertMatchesOpenApi("POST", `${w.url}/workflows/resume`, r.status, r.headers, r.text);
}

async function bareWorker() {
    return startWorker({ bindings: { ALLOW_BARE_RESUME: "true", API_KEY_HASHES: [TEST_API_KEY_HASH, sha256hex(KEY_B)].join(",") } });
}

/** A component that answers pending with the task id `taskOf(path, body)` picks. */
async function fixedTaskComponent(taskOf) {
    return startComponent((body, req) => ({ pending: true, task_id: taskOf(new URL(req.url, "http://c").pathname, body) }));
}

const bareGraph = (url) => ({
    nodes: [
        { id: "in", type: "Input" },
        { id: "daemon", type: "Component", componentId: url },
        { id: "out", type: "Output", data: { got: "{{daemon.data.v}}" } },
    ],
    edges: [
        { from: "in", to: "daemon", type: "PIPE" },
        { from: "daemon", to: "out", type: "ON_SUCCESS" },
    ],
});

test("bare route: a 508-byte task_id pauses (200) and a bare callback with it resumes the run", { timeout: 60_000 }, async () => {
    const TASK = `long-${"L".repeat(503)}`;
    assert.equal(Buffer.byteLength(TASK), 508);
    const comp = await fixedTaskComponent(() => TASK);
    const w = await bareWorker();
    let failure;
    try {
        const t = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/long`) } });
        assert.equal(t.status, 200, t.text.slice(0, 300));
        assert.equal(t.body.status, "paused", t.text.slice(0, 300));
        assert.equal(t.body.task_id, TASK);
        const r = await bareResume(w, { task_id: TASK, success: true, data: { v: "bare-long" } });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(r.body.resumed, true, r.text);
        assert.equal(r.body.run_id, t.body.run_id);
        assert.equal(r.body.status, "completed", r.text);
        const done = await waitForStatus(w, t.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed");
        assert.equal(done.body.data.got, "bare-long");
        checkBareAnswers(w);
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await comp.close();
        await stopWorker(w, failure);
    }
});

// The task index holds one entry per task id (a claim object per id, so two runs given the same
// id at the same moment are told apart atomically). Each case runs back to back (as a daemon
// handing out one id twice would) and with the second run started 1.1 s after the first (the
// first run's record in KV is then current too).
for (const [label, gapMs] of [["back to back", 0], ["the second run 1.1 s later", 1_100]]) {
    test(`bare route (${label}): a task_id shared by open waits of two runs (two API keys) is refused 409 task_id_shared; each run still resumes by its signed URL`, { timeout: 60_000 }, async () => {
        const SHARED = "shared-task-id";
        const comp = await fixedTaskComponent(() => SHARED);
        const w = await bareWorker();
        let failure;
        try {
            const one = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/one`) } });
            assert.equal(one.status, 200, one.text.slice(0, 300));
            assert.equal(one.body.status, "paused", one.text.slice(0, 300));
            if (gapMs) await sleep(gapMs);
            const two = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/two`) }, apiKey: KEY_B });
            assert.equal(two.status, 200, `the second run's trigger: ${two.text.slice(0, 400)}`);
            assert.equal(two.body.status, "paused", two.text.slice(0, 300));
            assert.equal(one.body.task_id, SHARED);
            assert.equal(two.body.task_id, SHARED);

            const r = await bareResume(w, { task_id: SHARED, success: true, data: { v: "bare" } });
            assert.equal(r.status, 409, r.text);
            assert.equal(r.body.success, false);
            assert.equal(r.body.error.code, "task_id_shared", r.text);

            // Neither run was resumed.
            const readOne = await w.fetchJson(`/runs/${one.body.run_id}`);
            const readTwo = await w.fetchJson(`/runs/${two.body.run_id}`, { apiKey: KEY_B });
            assert.equal(readOne.body.status, "paused", readOne.text.slice(0, 300));
            assert.equal(readTwo.body.status, "paused", readTwo.text.slice(0, 300));
            assert.deepEqual(readOne.body.waits.map((x) => x.task_id), [SHARED]);
            assert.deepEqual(readTwo.body.waits.map((x) => x.task_id), [SHARED]);

            // Each through its own signed callback_url.
            for (const [p, run, apiKey, v] of [["/one", one, TEST_API_KEY, "one"], ["/two", two, KEY_B, "two"]]) {
                const call = comp.requests().find((q) => q.path === p);
                const cb = await postCallback(call.body.callback_url, SHARED, { success: true, data: { v } });
                assert.equal(cb.status, 200, cb.text);
                assert.equal(cb.body.resumed, true, cb.text);
                assert.equal(cb.body.run_id, run.body.run_id);
                const done = await waitForStatus({ fetchJson: (u, o) => w.fetchJson(u, { ...o, apiKey }) }, run.body.run_id, ["completed", "failed"]);
                assert.equal(done.body.status, "completed");
                assert.equal(done.body.data.got, v);
            }
            checkBareAnswers(w);
        } catch (err) {
            failure = err;
            throw err;
        } finally {
            await comp.close();
            await stopWorker(w, failure);
        }
    });

    test(`bare route (${label}): a task_id reused after the first run's wait closed goes to the second run`, { timeout: 60_000 }, async () => {
        const REUSED = "reused-task-id";
        const comp = await fixedTaskComponent(() => REUSED);
        const w = await bareWorker();
        let failure;
        try {
            const one = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/one`) } });
            assert.equal(one.body.status, "paused", one.text.slice(0, 300));
            const first = await bareResume(w, { task_id: REUSED, success: true, data: { v: "first" } });
            assert.equal(first.status, 200, first.text);
            assert.equal(first.body.run_id, one.body.run_id);
            assert.equal(first.body.status, "completed", first.text);
            const readOne = await w.fetchJson(`/runs/${one.body.run_id}`);
            assert.equal(readOne.body.status, "completed");
            if (gapMs) await sleep(gapMs);

            const two = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/two`) }, apiKey: KEY_B });
            assert.equal(two.status, 200, `the second run's trigger: ${two.text.slice(0, 400)}`);
            assert.equal(two.body.status, "paused", two.text.slice(0, 300));
            const second = await bareResume(w, { task_id: REUSED, success: true, data: { v: "second" } });
            assert.equal(second.status, 200, second.text);
            assert.equal(second.body.resumed, true, second.text);
            assert.equal(second.body.run_id, two.body.run_id, second.text);
            assert.equal(second.body.status, "completed", second.text);
            const doneTwo = await w.fetchJson(`/runs/${two.body.run_id}`, { apiKey: KEY_B });
            assert.equal(doneTwo.body.status, "completed");
            assert.equal(doneTwo.body.data.got, "second");
            const doneOne = await w.fetchJson(`/runs/${one.body.run_id}`);
            assert.equal(doneOne.body.data.got, "first", "the first run kept its own result");
            checkBareAnswers(w);
        } catch (err) {
            failure = err;
            throw err;
        } finally {
            await comp.close();
            await stopWorker(w, failure);
        }
    });
}

test("bare route: a task_id reused right after the first run's wait closed goes to the second run, though that run's KV write is still paced", { timeout: 60_000 }, async () => {
    // The first run has two waits: `v` (resumed by its signed URL) and `u` (the reused id,
    // resumed by the bare route right after). The second resume changes the run within a second
    // of the first, so its KV write waits for the pace (one a second); GET /runs/{id} already
    // shows the run completed. The second run, started then with the task id `u`, must still
    // be the one a bare callback for `u` resumes: no other open wait holds it.
    const comp = await fixedTaskComponent((p) => (p.endsWith("/v") ? "task-v" : "task-u"));
    const w = await bareWorker();
    let failure;
    try {
        const one = await w.fetchJson("/execute", {
            body: {
                graph: {
                    nodes: [
                        { id: "in", type: "Input" },
                        { id: "u", type: "Component", componentId: `${comp.url}/one/u` },
                        { id: "v", type: "Component", componentId: `${comp.url}/one/v` },
                    ],
                    edges: [{ from: "in", to: "u", type: "PIPE" }, { from: "in", to: "v", type: "PIPE" }],
                },
            },
        });
        assert.equal(one.body.status, "paused", one.text.slice(0, 300));
        // A second after the trigger's write, so the callback below is written at once.
        await sleep(1_200);
        const v = comp.requests().find((q) => q.path === "/one/v");
        const rv = await postCallback(v.body.callback_url, "task-v", { success: true });
        assert.equal(rv.status, 200, rv.text);
        assert.equal(rv.body.status, "paused", rv.text);
        const ru = await bareResume(w, { task_id: "task-u", success: true, data: { v: "first" } });
        assert.equal(ru.status, 200, ru.text);
        assert.equal(ru.body.run_id, one.body.run_id);
        assert.equal(ru.body.status, "completed", ru.text);
        const readOne = await w.fetchJson(`/runs/${one.body.run_id}`);
        assert.equal(readOne.body.status, "completed");
        assert.deepEqual(readOne.body.waits, [], "no wait of the first run is open");

        const two = await w.fetchJson("/execute", { body: { graph: bareGraph(`${comp.url}/two/u`) }, apiKey: KEY_B });
        assert.equal(two.status, 200, two.text.slice(0, 300));
        assert.equal(two.body.status, "paused", two.text.slice(0, 300));
        assert.equal(two.body.task_id, "task-u");
        const second = await bareResume(w, { task_id: "task-u", success: true, data: { v: "second" } });
        assert.equal(second.status, 200, `the bare callback for the second run: ${second.text}`);
        assert.equal(second.body.resumed, true, second.text);
        assert.equal(second.body.run_id, two.body.run_id, second.text);
        const doneTwo = await w.fetchJson(`/runs/${two.body.run_id}`, { apiKey: KEY_B });
        assert.equal(doneTwo.body.status, "completed");
        assert.equal(doneTwo.body.data.got, "second");
        checkBareAnswers(w);
    } catch (err) {
        failure = err;
        throw err;
    } finally {
        await comp.close();
        await stopWorker(w, failure);
    }
});
