// Time and budget in the run's Durable Object, end to end in workerd: wait deadlines fired by
// the object's alarm, cancel, continuation past the per-invocation subrequest budget,
// callbacks and reads racing continuation segments, a deadline surviving a restart, the KV
// cost of each segment, and three fixed defects (oversized component answers, malformed IF
// conditions, a trigger context with its own `results` under FOREACH).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, startComponent, freePort, pendingComponent, postCallback, TEST_API_KEY_HASH } from "./harness.mjs";
import { waitUntil as until, waitForStatus, kvOps, ALARM_SLACK_MS, storedStatus } from "./harness.mjs";
import { sleep, sha256hex as sha256 } from "./harness.mjs";
import { runView, kvCaughtUp, assertCallbackAnswer, assertCallbackAccepted, assertExpired } from "./settle.mjs";

const OTHER_KEY = "key-b";

/** Where a run's record is kept in KV: `runs/{owner tag}/{id}` for listed ids, `run:{id}` for 32-hex ones. */
const recordKey = (id) => {
    const m = /^([0-9a-f]{16})-[0-9a-f]{11}-[0-9a-f]+$/.exec(id);
    return m ? `runs/${m[1]}/${id}` : `run:${id}`;
};
/** A run id of the listed form for the key whose SHA-256 hex is `keyHash`. */
const runIdOf = (keyHash) => new RegExp(`^${keyHash.slice(0, 16)}-[0-9a-f]{11}-[0-9a-f]{32}$`);

/** The stored record of a run, parsed (`null` while KV has none). */
async function storedRecord(w, runId) {
    const text = await (await w.mf.getKVNamespace("RUNS")).get(recordKey(runId), "text");
    return text === null ? null : JSON.parse(text);
}

/** The stored record of a run, parsed; it must be there. */
async function storedRun(w, runId) {
    const record = await storedRecord(w, runId);
    assert.ok(record, `${recordKey(runId)} is in KV`);
    return record;
}

/**
 * Waits, reading KV directly (no request reaches the Worker, so only the alarm can act), until
 * the stored run's state is one of `states` (a run is answered before its record reaches KV).
 */
const waitForStored = (w, runId, states, timeoutMs = ALARM_SLACK_MS) =>
    until(
        `stored run ${runId} to be ${states}`,
        async () => {
            const record = await storedRecord(w, runId);
            return record !== null && states.includes(storedStatus(record));
        },
        { timeoutMs },
    );

/** POSTs a callback for a call remembered by pendingComponent, as its daemon would. */
const callBack = (call, extra) => postCallback(call.callbackUrl, call.taskId, extra);

const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);

let worker; // two API keys, small component answers
let budget; // MAX_SUBREQUESTS_PER_INVOCATION = 5
let pend;
let echo;

before(async () => {
    pend = await pendingComponent();
    // Echoes what it was given (minus the callback URL) and counts hits per path.
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body ?? {};
        return { ...rest, echoed: true };
    });
    worker = await startWorker({
        bindings: { API_KEY_HASHES: [TEST_API_KEY_HASH, sha256(OTHER_KEY)].join(","), MAX_COMPONENT_RESPONSE_BYTES: "1000" },
    });
    budget = await startWorker({ bindings: { MAX_SUBREQUESTS_PER_INVOCATION: "5" } });
});

after(async () => {
    // Everything closes even when stopping a Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        try {
            await budget?.stop();
        } finally {
            await pend?.close();
            await echo?.close();
        }
    }
});

// ---------------------------------------------------------------------------------------
// Wait deadlines

test("wait_timeout_seconds must be an integer ≥ 1, else 400 invalid_graph naming the field", async () => {
    const before = await worker.kvSnapshot();
    for (const bad of [0, -3, 2.5, "5", true]) {
        const graph = {
            nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${pend.url}/v`, wait_timeout_seconds: bad }],
            edges: [{ from: "in", to: "slow", type: "PIPE" }],
        };
        const r = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${r.text}`);
        assert.equal(r.body.error.code, "invalid_graph");
        assert.ok(r.body.error.problems.some((p) => p.at === "nodes[1].wait_timeout_seconds"), r.text);
    }
    assert.equal(pend.on("/v").length, 0, "a rejected graph calls nothing");
    assert.deepEqual(await worker.kvSnapshot(), before, "a rejected graph stores nothing");
});

test("an expired deadline with no ON_FAIL fails the run with wait_timeout; a late callback is an expired noop", async () => {
    const graph = {
        nodes: [
            { id: "slow", type: "Component", componentId: `${pend.url}/d1`, wait_timeout_seconds: 1 },
            { id: "after", type: "Component", componentId: `${echo.url}/d1-after` },
        ],
        edges: [{ from: "slow", to: "after", type: "ON_SUCCESS" }],
    };
    const t = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(t.body.status, "paused", t.text);
    // Nothing but the alarm can move the run on: no request arrives until it has failed.
    await waitForStored(worker, t.body.run_id, ["failed", "completed"]);
    const failed = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(failed.body.status, "failed", failed.text);
    assert.equal(failed.body.error.code, "wait_timeout");
    assert.equal(failed.body.error.node_id, "slow");
    assert.ok(statuses(failed.body.trace).includes("slow:failed"), failed.text);
    assert.deepEqual(failed.body.waits, []);
    assert.equal(storedStatus(await storedRun(worker, t.body.run_id)), "failed");
    assert.equal(echo.hits("/d1-after"), 0, "ON_SUCCESS did not run");

    const before = await worker.kvSnapshot();
    const late = await callBack(pend.on("/d1")[0], { success: true, data: { late: true } });
    assert.equal(late.status, 200);
    assertExpired(late.body);
    assert.deepEqual(await worker.kvSnapshot(), before, "a late callback changes nothing");
    assert.equal(echo.hits("/d1-after"), 0);
});

test("a deadline takes ON_FAIL while another branch still waits; the late callback is a noop", async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "a", type: "Component", componentId: `${pend.url}/d2a`, wait_timeout_seconds: 1 },
            { id: "b", type: "Component", componentId: `${pend.url}/d2b` },
            { id: "fallback", type: "Component", componentId: `${echo.url}/d2-fallback`, data: { why: "{{a.error.code}}" } },
            { id: "never", type: "Component", componentId: `${echo.url}/d2-never` },
            { id: "out", type: "Output", data: { why: "{{fallback.why}}", b: "{{b.data.v}}" } },
        ],
        edges: [
            { from: "in", to: "a", type: "PIPE" },
            { from: "in", to: "b", type: "PIPE" },
            { from: "a", to: "fallback", type: "ON_FAIL" },
            { from: "a", to: "never", type: "ON_SUCCESS" },
            { from: "fallback", to: "out", type: "PIPE" },
            { from: "b", to: "out", type: "PIPE" },
        ],
    };
    const t = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(t.body.status, "paused", t.text);
    assert.equal(t.body.waits.length, 2);

    await until("the deadline to run the fallback", () => echo.hits("/d2-fallback") > 0, { timeoutMs: ALARM_SLACK_MS });
    assert.equal(echo.requests().find((r) => r.path === "/d2-fallback").body.why, "wait_timeout");
    const mid = await until("the run to record the timeout", async () => {
        const r = await worker.fetchJson(`/runs/${t.body.run_id}`);
        return r.body.waits?.length === 1 ? r : null;
    });
    assert.equal(mid.body.status, "paused", "still waiting for b");
    assert.equal(mid.body.waits[0].node_id, "b");
    assert.ok(statuses(mid.body.trace).includes("a:failed"), mid.text);

    await kvCaughtUp(worker, t.body.run_id);
    const before = await worker.kvSnapshot();
    const late = await callBack(pend.on("/d2a")[0]);
    assertExpired(late.body);
    assert.deepEqual(await worker.kvSnapshot(), before);

    const done = await callBack(pend.on("/d2b")[0], { success: true, data: { v: 7 } });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.resumed, true);
    assert.equal(done.body.status, "completed", done.text);
    assertCallbackAnswer(done.body, { status: "completed", run_id: t.body.run_id, task_id: pend.on("/d2b")[0].taskId });
    const output = (await runView(worker, t.body.run_id)).data;
    assert.equal(output.why, "wait_timeout");
    assert.equal(output.b, 7);
    assert.equal(echo.hits("/d2-fallback"), 1);
    assert.equal(echo.hits("/d2-never"), 0);
});

test("a callback before the deadline wins and the later alarm changes nothing", async () => {
    const graph = {
        nodes: [
            { id: "slow", type: "Component", componentId: `${pend.url}/d3`, wait_timeout_seconds: 2 },
            { id: "fallback", type: "Component", componentId: `${echo.url}/d3-fallback` },
            { id: "out", type: "Output", data: { v: "{{slow.data.v}}" } },
        ],
        edges: [
            { from: "slow", to: "fallback", type: "ON_FAIL" },
            { from: "slow", to: "out", type: "ON_SUCCESS" },
        ],
    };
    const t = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(t.body.status, "paused", t.text);
    const r = await callBack(pend.on("/d3")[0], { success: true, data: { v: 1 } });
    assert.equal(r.body.status, "completed", r.text);
    assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id, task_id: pend.on("/d3")[0].taskId });
    // The completed record reaches KV within about a second; from then on nothing changes it.
    await kvCaughtUp(worker, t.body.run_id);
    const before = await worker.kvSnapshot();
    await sleep(3500); // past the deadline: a stale alarm, if any, must leave the run alone
    assert.equal(echo.hits("/d3-fallback"), 0);
    const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(read.body.status, "completed");
    assert.equal(read.body.data.v, 1);
    assert.deepEqual(await worker.kvSnapshot(), before);
});

/** in -FOREACH(list)-> each (pending, with a deadline) [-ON_FAIL-> out] */
function foreachDeadline(p, { onFail }) {
    return {
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${pend.url}${p}`, wait_timeout_seconds: 3 },
            { id: "out", type: "Output", data: { results: "{{each.results}}", failed: "{{each.failed}}" } },
        ],
        edges: [
            { from: "in", to: "each", type: "FOREACH", items: "list" },
            ...(onFail ? [{ from: "each", to: "out", type: "ON_FAIL" }] : []),
        ],
    };
}

test("FOREACH deadlines apply per item: answered items succeed, the rest time out, ON_FAIL fires", async () => {
    const t = await worker.fetchJson("/execute", { body: { graph: foreachDeadline("/d4", { onFail: true }), context: { list: ["a", "b", "c"] } } });
    assert.equal(t.body.status, "paused", t.text);
    const calls = pend.on("/d4");
    assert.equal(calls.length, 3);
    const byIndex = (i) => calls.find((c) => c.body.index === i);
    for (const i of [0, 2]) {
        const r = await callBack(byIndex(i), { success: true, data: { v: i } });
        assert.equal(r.body.resumed, true, r.text);
        assert.equal(r.body.status, "paused", "item 1 still waits");
    }
    await waitForStored(worker, t.body.run_id, ["completed", "failed"], 3000 + ALARM_SLACK_MS);
    const done = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(done.body.status, "completed", done.text);
    const { results, failed } = done.body.data;
    assert.equal(results.length, 3);
    assert.equal(results[0].data.v, 0);
    assert.equal(results[2].data.v, 2);
    assert.equal(results[1].error.code, "wait_timeout", JSON.stringify(results[1]));
    assert.equal(failed, 1);
    assert.ok(statuses(done.body.trace).includes("each[1]:failed"), done.text);
    const late = await callBack(byIndex(1));
    assertExpired(late.body);
});

test("a timed-out FOREACH item with no ON_FAIL fails the run", async () => {
    const t = await worker.fetchJson("/execute", { body: { graph: foreachDeadline("/d5", { onFail: false }), context: { list: [1, 2] } } });
    assert.equal(t.body.status, "paused", t.text);
    const r = await callBack(pend.on("/d5").find((c) => c.body.index === 0), { success: true, data: { v: 0 } });
    assert.equal(r.body.resumed, true, r.text);
    await waitForStored(worker, t.body.run_id, ["completed", "failed"], 3000 + ALARM_SLACK_MS);
    const done = await worker.fetchJson(`/runs/${t.body.run_id}`);
    assert.equal(done.body.status, "failed", done.text);
    assert.equal(done.body.error.node_id, "each");
    assert.equal(storedStatus(await storedRun(worker, t.body.run_id)), "failed");
});

// ---------------------------------------------------------------------------------------
// Cancel

const pausingGraph = (p, extra = {}) => ({
    nodes: [
        { id: "slow", type: "Component", componentId: `${pend.url}${p}`, ...extra },
        { id: "fallback", type: "Component", componentId: `${echo.url}${p}-fallback` },
        { id: "after", type: "Component", componentId: `${echo.url}${p}-after` },
    ],
    edges: [
        { from: "slow", to: "fallback", type: "ON_FAIL" },
        { from: "slow", to: "after", type: "ON_SUCCESS" },
    ],
});

test("cancel: only the owner may, then the run is cancelled and its callbacks are noops", async () => {
    const t = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/c1") } });
    assert.equal(t.body.status, "paused", t.text);
    const id = t.body.run_id;
    const cancelPath = `/runs/${id}/cancel`;
    await kvCaughtUp(worker, id);
    const before = await worker.kvSnapshot();

    const other = await worker.fetchJson(cancelPath, { method: "POST", apiKey: OTHER_KEY });
    assert.equal(other.status, 404, other.text);
    assert.equal(other.body.error.code, "not_found");
    const anonymous = await worker.fetchJson(cancelPath, { method: "POST", apiKey: null });
    assert.equal(anonymous.status, 401);
    const get = await worker.fetchJson(cancelPath);
    assert.equal(get.status, 405);
    assert.deepEqual(await worker.kvSnapshot(), before, "refused cancels change nothing");
    assert.equal((await worker.fetchJson(`/runs/${id}`)).body.status, "paused");

    const c = await worker.fetchJson(cancelPath, { method: "POST" });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.body.status, "cancelled");
    assert.equal(c.body.run_id, id);
    assert.deepEqual(c.body.waits, []);
    const read = await worker.fetchJson(`/runs/${id}`);
    assert.equal(read.body.status, "cancelled");
    await kvCaughtUp(worker, id);
    assert.equal(storedStatus(await storedRun(worker, id)), "cancelled");

    const cb = await callBack(pend.on("/c1")[0], { success: true, data: {} });
    assert.equal(cb.status, 200);
    assert.equal(cb.body.noop, true, cb.text);
    assert.equal(cb.body.reason, "run_finished");
    assert.deepEqual(cb.body, { success: false, noop: true, reason: "run_finished", status: "cancelled", run_id: id, task_id: pend.on("/c1")[0].taskId });
    assert.equal(echo.hits("/c1-after") + echo.hits("/c1-fallback"), 0, "nothing ran after the cancel");

    const again = await worker.fetchJson(cancelPath, { method: "POST" });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, "run_finished");
    assert.equal(again.body.error.status, "cancelled");
});

test("cancelling a completed or failed run is 409 run_finished with its status", async () => {
    const ok = await worker.fetchJson("/execute", {
        body: { graph: { nodes: [{ id: "p", type: "Component", componentId: "comp_passthrough" }], edges: [] } },
    });
    assert.equal(ok.body.status, "completed");
    const failing = await startComponent(() => ({ status: 500, body: { nope: true } }));
    try {
        const bad = await worker.fetchJson("/execute", {
            body: { graph: { nodes: [{ id: "c", type: "Component", componentId: failing.url }], edges: [] } },
        });
        assert.equal(bad.body.status, "failed");
        for (const [id, status] of [[ok.body.run_id, "completed"], [bad.body.run_id, "failed"]]) {
            const before = await worker.kvSnapshot();
            const r = await worker.fetchJson(`/runs/${id}/cancel`, { method: "POST" });
            assert.equal(r.status, 409, r.text);
            assert.equal(r.body.error.code, "run_finished");
            assert.equal(r.body.error.status, status);
            assert.deepEqual(await worker.kvSnapshot(), before);
        }
    } finally {
        await failing.close();
    }
});

test("cancelling a run clears its deadline: the alarm later runs nothing", async () => {
    const t = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/c2", { wait_timeout_seconds: 1 }) } });
    assert.equal(t.body.status, "paused", t.text);
    const c = await worker.fetchJson(`/runs/${t.body.run_id}/cancel`, { method: "POST" });
    assert.equal(c.body.status, "cancelled", c.text);
    await kvCaughtUp(worker, t.body.run_id);
    const before = await worker.kvSnapshot();
    await sleep(3500); // past the deadline
    assert.equal(echo.hits("/c2-fallback"), 0, "the deadline's ON_FAIL did not run");
    assert.equal((await worker.fetchJson(`/runs/${t.body.run_id}`)).body.status, "cancelled");
    assert.deepEqual(await worker.kvSnapshot(), before);
});

// ---------------------------------------------------------------------------------------
// KV cost per segment

test("each segment costs at most one KV write and no list: pause, resume, cancel, deadline", async () => {
    // A request is answered once its change is kept in the gate's storage; the alarm it sets
    // writes the record, at once when the run was not written within the second: one write.
    const writes = worker.kvWrites();
    const t = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/k1", { wait_timeout_seconds: 60 }) } });
    assert.equal(t.body.status, "paused", t.text);
    assert.deepEqual([kvOps(t).writes, kvOps(t).lists], [0, 0], `trigger: ${t.headers.get("x-arcrun-kv-ops")}`);
    assert.match(t.headers.get("x-arcrun-do-ops") ?? "", /writes=[1-9]/, "the trigger is kept in the gate's storage");
    await kvCaughtUp(worker, t.body.run_id);
    assert.equal(worker.kvWrites() - writes, 1, "the trigger's segment: one write");
    await sleep(1100);
    const r = await callBack(pend.on("/k1")[0], { success: true, data: {} });
    assert.equal(r.body.status, "completed", r.text);
    assert.deepEqual([kvOps(r).writes, kvOps(r).lists], [0, 0], `callback: ${r.headers.get("x-arcrun-kv-ops")}`);
    await kvCaughtUp(worker, t.body.run_id);
    assert.equal(storedStatus(await storedRun(worker, t.body.run_id)), "completed", "written by the alarm the callback set");
    assert.equal(worker.kvWrites() - writes, 2, "the callback's segment: one write");

    // Within a second of the last write: the record is written when the second has passed,
    // once for both segments.
    const before = worker.kvWrites();
    const tq = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/k1q", { wait_timeout_seconds: 60 }) } });
    assert.equal(tq.body.status, "paused", tq.text);
    const rq = await callBack(pend.on("/k1q")[0], { success: true, data: {} });
    assert.equal(rq.body.status, "completed", rq.text);
    assert.deepEqual([kvOps(rq).writes, kvOps(rq).lists], [0, 0], `quick callback: ${rq.headers.get("x-arcrun-kv-ops")}`);
    assert.match(rq.headers.get("x-arcrun-do-ops") ?? "", /writes=[1-9]/, "the change is kept in the gate's storage");
    await kvCaughtUp(worker, tq.body.run_id);
    assert.equal(storedStatus(await storedRun(worker, tq.body.run_id)), "completed");
    assert.ok(worker.kvWrites() - before <= 2, `two segments, at most two writes: ${worker.kvWrites() - before}`);

    const t2 = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/k2") } });
    await sleep(1100);
    const c = await worker.fetchJson(`/runs/${t2.body.run_id}/cancel`, { method: "POST" });
    assert.equal(c.status, 200, c.text);
    assert.deepEqual([kvOps(c).writes, kvOps(c).lists], [0, 0], `cancel: ${c.headers.get("x-arcrun-kv-ops")}`);
    await kvCaughtUp(worker, t2.body.run_id);

    // The alarm's own header cannot be read; its one write must hold the outcome.
    const t3 = await worker.fetchJson("/execute", { body: { graph: pausingGraph("/k3", { wait_timeout_seconds: 1 }) } });
    await waitForStored(worker, t3.body.run_id, ["completed"]);
    assert.equal(echo.hits("/k3-fallback"), 1);
});

// ---------------------------------------------------------------------------------------
// Continuation past the subrequest budget (MAX_SUBREQUESTS_PER_INVOCATION = 5)

/** in -FOREACH(list)-> each (componentId) -> out, reporting each's results and count. */
const foreachGraph = (componentId) => ({
    nodes: [
        { id: "in", type: "Input" },
        { id: "each", type: "Component", componentId },
        { id: "out", type: "Output", data: { results: "{{each.results}}", count: "{{each.count}}" } },
    ],
    edges: [
        { from: "in", to: "each", type: "FOREACH", items: "list" },
        { from: "each", to: "out", type: "PIPE" },
    ],
});

/** Checks the per-request headers: distinct idempotency keys, at most 5 calls per segment. */
function checkSegments(requests, expectCalls, minSegments) {
    assert.equal(requests.length, expectCalls);
    const keys = requests.map((r) => r.headers["idempotency-key"]);
    assert.ok(keys.every((k) => typeof k === "string" && k.length > 0), "every call has an idempotency-key");
    assert.equal(new Set(keys).size, expectCalls, "idempotency keys are distinct");
    const segs = requests.map((r) => Number(r.headers["x-arcrun-segment"]));
    assert.ok(segs.every((s) => Number.isInteger(s) && s >= 1), `x-arcrun-segment on every call: ${segs}`);
    assert.equal(segs[0], 1, "the trigger is segment 1");
    const groups = new Map();
    for (const s of segs) groups.set(s, (groups.get(s) ?? 0) + 1);
    for (const [s, n] of groups) assert.ok(n <= 5, `segment ${s} made ${n} calls`);
    assert.ok(groups.size >= minSegments, `only ${groups.size} segments: ${segs}`);
    return segs;
}

test("a chain of 12 components continues across segments, each called once, ≤5 per invocation", async () => {
    const comp = await startComponent(async (body) => {
        await sleep(150); // slow enough that the run is still going when first read
        return { count: (body.count ?? 0) + 1 };
    });
    try {
        const nodes = [{ id: "in", type: "Input" }];
        const edges = [];
        for (let i = 1; i <= 12; i++) {
            nodes.push({ id: `c${i}`, type: "Component", componentId: `${comp.url}/c${i}` });
            edges.push({ from: i === 1 ? "in" : `c${i - 1}`, to: `c${i}`, type: "PIPE" });
        }
        nodes.push({ id: "out", type: "Output", data: { count: "{{count}}", last: "{{c12.count}}" } });
        edges.push({ from: "c12", to: "out", type: "PIPE" });
        const t = await budget.fetchJson("/execute", { body: { graph: { nodes, edges }, context: { count: 0 } } });
        assert.equal(t.status, 202, t.text);
        assert.equal(t.body.status, "running");
        assert.match(t.body.run_id, runIdOf(TEST_API_KEY_HASH));
        assert.ok(kvOps(t).writes <= 1 && kvOps(t).lists === 0, t.headers.get("x-arcrun-kv-ops"));
        const first = await budget.fetchJson(`/runs/${t.body.run_id}`);
        assert.equal(first.status, 200);
        assert.equal(first.body.status, "running");

        const done = await waitForStatus(budget, t.body.run_id, ["completed", "failed"], 30000);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.count, 12);
        assert.equal(done.body.data.last, 12);
        for (let i = 1; i <= 12; i++) assert.equal(comp.hits(`/c${i}`), 1, `c${i} called once`);
        const reqs = comp.requests();
        // The context flowed across segment boundaries: call i saw the count of call i-1.
        assert.deepEqual(reqs.map((r) => r.body.count), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        const segs = checkSegments(reqs, 12, 3);
        assert.deepEqual(segs, [...segs].sort((a, b) => a - b), "segments only move forward along a chain");
        const distinct = [...new Set(segs)];
        assert.deepEqual(distinct, distinct.map((_, i) => i + 1), "one more per invocation");
        // KV has the completed run within about a second of its last write.
        await waitForStored(budget, t.body.run_id, ["completed"]);
    } finally {
        await comp.close();
    }
});

test("a FOREACH over 30 items continues across segments, every item exactly once, in order", async () => {
    const comp = await startComponent((body) => ({ doubled: body.item * 2 }));
    try {
        const graph = foreachGraph(`${comp.url}/item`);
        const list = Array.from({ length: 30 }, (_, i) => i + 100);
        const t = await budget.fetchJson("/execute", { body: { graph, context: { list } } });
        assert.equal(t.status, 202, t.text);
        assert.equal(t.body.status, "running");
        const done = await waitForStatus(budget, t.body.run_id, ["completed", "failed"], 30000);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.count, 30);
        assert.deepEqual(done.body.data.results.map((r) => r.doubled), list.map((x) => x * 2));
        const reqs = comp.requests();
        assert.deepEqual(reqs.map((r) => r.body.index).sort((a, b) => a - b), list.map((_, i) => i), "each item once");
        checkSegments(reqs, 30, 6);
        // KV has the completed run within about a second of its last write.
        await waitForStored(budget, t.body.run_id, ["completed"]);
    } finally {
        await comp.close();
    }
});

test("a run within the budget completes in the trigger's answer", async () => {
    const comp = await startComponent((body) => ({ seen: (body.seen ?? 0) + 1 }));
    try {
        const nodes = [1, 2, 3].map((i) => ({ id: `c${i}`, type: "Component", componentId: `${comp.url}/c${i}` }));
        const edges = [{ from: "c1", to: "c2", type: "PIPE" }, { from: "c2", to: "c3", type: "PIPE" }];
        const r = await budget.fetchJson("/execute", { body: { graph: { nodes, edges } } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "completed");
        assert.equal(r.body.data.seen, 3);
        assert.deepEqual(comp.requests().map((x) => x.headers["x-arcrun-segment"]), ["1", "1", "1"]);
    } finally {
        await comp.close();
    }
});

test("callbacks and reads racing continuation segments: each wait resumes exactly once, reads never 5xx", async () => {
    const slow = await pendingComponent({ delayMs: 150 });
    try {
        const graph = foreachGraph(`${slow.url}/race`);
        const t = await budget.fetchJson("/execute", { body: { graph, context: { list: [0, 1, 2, 3, 4, 5, 6, 7] } } });
        assert.ok([200, 202].includes(t.status), t.text);
        const id = t.body.run_id;

        // Read continuously while segments and callbacks run.
        const reads = [];
        let reading = true;
        const reader = (async () => {
            while (reading) {
                const r = await budget.fetchJson(`/runs/${id}`);
                reads.push(`${r.status}:${r.body?.status}`);
                await sleep(30);
            }
        })();

        // Fire as soon as all 8 items were called, while the last segment may still be running.
        await until("all 8 items to be called", () => slow.calls.length >= 8, { timeoutMs: 20000, everyMs: 10 });
        const inFlight = slow.calls.filter((c) => !c.answered).length;
        assert.ok(inFlight > 0, "the callbacks race a segment that is still calling components");
        const answers = await Promise.all(
            slow.calls.flatMap((c) => [0, 1].map(() => callBack(c, { success: true, data: { v: c.body.index } }).then((r) => ({ c, r })))),
        );
        // A callback that raced a segment is kept and applied when it ends: its sender gets the
        // real answer, or — past 3 s on a slow machine — 202 accepted.
        for (const { c, r } of answers) {
            assert.ok(r.status === 200 || r.status === 202, `${c.taskId}: ${r.status} ${r.text}`);
            if (r.status === 202) assertCallbackAccepted(r.body, { run_id: id, task_id: c.taskId }, c.taskId);
            else if (r.body.resumed) assertCallbackAnswer(r.body, { run_id: id, task_id: c.taskId }, c.taskId);
        }
        for (const c of slow.calls) {
            const mine = answers.filter((a) => a.c === c).map((a) => a.r.body);
            const resumed = mine.filter((b) => b.resumed === true).length;
            const accepted = mine.filter((b) => b.accepted === true).length;
            const repeats = mine.filter((b) => b.noop === true && b.reason === "already_resumed").length;
            assert.equal(resumed + accepted + repeats, 2, `${c.taskId}: ${JSON.stringify(mine)}`);
            if (accepted === 0) {
                assert.equal(resumed, 1, `${c.taskId}: ${JSON.stringify(mine)}`);
                assert.equal(repeats, 1, JSON.stringify(mine));
            } else {
                assert.ok(resumed <= 1 && repeats <= 1, `${c.taskId}: ${JSON.stringify(mine)}`);
            }
        }

        const done = await waitForStatus(budget, id, ["completed", "failed"], 20000);
        reading = false;
        await reader;
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.count, 8);
        assert.deepEqual(done.body.data.results.map((r) => r.data.v), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert.equal(slow.calls.length, 8, "each item called once");
        checkSegments(slow.requests(), 8, 2);
        const resumedEntries = done.body.trace.filter((e) => e.node_id === "each" && Number.isInteger(e.item) && e.status === "succeeded");
        assert.deepEqual(resumedEntries.map((e) => e.item).sort(), [0, 1, 2, 3, 4, 5, 6, 7], "each item finished once");
        assert.ok(reads.length > 0);
        const bad = reads.filter((s) => !/^200:(running|paused|completed)$/.test(s));
        assert.deepEqual(bad, [], `reads during the run: ${reads.join(", ")}`);
    } finally {
        await slow.close();
    }
});

// ---------------------------------------------------------------------------------------
// Restart

test("a deadline still fires after the Worker restarts with the same state", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-timers-"));
    const port = await freePort();
    const fallback = await startComponent((body) => ({ saw: body.why }));
    let w = await startWorker({ port, persistDir: dir });
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: `${pend.url}/r1`, wait_timeout_seconds: 3 },
                { id: "fallback", type: "Component", componentId: `${fallback.url}/fallback`, data: { why: "{{slow.error.code}}" } },
                { id: "out", type: "Output", data: { saw: "{{fallback.saw}}" } },
            ],
            edges: [
                { from: "slow", to: "fallback", type: "ON_FAIL" },
                { from: "fallback", to: "out", type: "PIPE" },
            ],
        };
        const t = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const t0 = Date.now();
        await w.stop();
        console.log(`[restart] worker stopped ${Date.now() - t0} ms after the pause answer`);
        assert.equal(fallback.hits(), 0, "the deadline must not have fired before the restart");
        w = await startWorker({ port, persistDir: dir });

        // No request reaches the Worker from here until the run is seen completed in KV: a
        // read or a callback would re-arm a lost alarm (a cold gate does), and so hide its loss.
        await waitForStored(w, t.body.run_id, ["completed", "failed"], 3000 + ALARM_SLACK_MS);
        console.log(`[restart] the deadline fired with no request, ${Date.now() - t0} ms after the pause answer`);
        assert.equal(fallback.hits(), 1, "ON_FAIL ran once, by the alarm");
        const stored = await storedRun(w, t.body.run_id);
        assert.equal(storedStatus(stored), "completed", JSON.stringify(stored.status));

        const done = await waitForStatus(w, t.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.saw, "wait_timeout");
        assert.equal(fallback.hits(), 1);
        assert.ok(statuses(done.body.trace).includes("slow:failed"), done.text);
    } finally {
        await w.stop();
        await fallback.close();
        await rm(dir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// Fixed defects

test("a component answer over MAX_COMPONENT_RESPONSE_BYTES fails the node, naming the limit", async () => {
    // "/never" answers a fixed small body: an echo would send back the run's context, date
    // variables included, and so depend on more than the answer under test.
    const comp = await startComponent((body, req) => (req.url === "/big" ? { pad: "x".repeat(5000) } : req.url === "/never" ? { ok: true } : { pad: "y".repeat(800) }));
    try {
        const graph = (p) => ({
            nodes: [
                { id: "big", type: "Component", componentId: `${comp.url}${p}` },
                { id: "never", type: "Component", componentId: `${comp.url}/never` },
                { id: "why", type: "Output", data: { why: "{{big.error}}" } },
            ],
            edges: [
                { from: "big", to: "why", type: "ON_FAIL" },
                { from: "big", to: "never", type: "ON_SUCCESS" },
            ],
        });
        const r = await worker.fetchJson("/execute", { body: { graph: graph("/big") } });
        assert.equal(r.body.status, "completed", r.text);
        assert.match(JSON.stringify(r.body.data.why), /1000/);
        assert.equal(comp.hits("/never"), 0);

        const unrouted = await worker.fetchJson("/execute", {
            body: { graph: { nodes: [{ id: "big", type: "Component", componentId: `${comp.url}/big` }], edges: [] } },
        });
        assert.equal(unrouted.body.status, "failed", unrouted.text);
        assert.equal(unrouted.body.error.node_id, "big");
        assert.match(unrouted.body.error.message, /1000/);

        // Just under the limit is fine.
        const small = await worker.fetchJson("/execute", { body: { graph: graph("/small") } });
        assert.equal(small.body.status, "completed", small.text);
        assert.equal(comp.hits("/never"), 1);
    } finally {
        await comp.close();
    }
});

test("a malformed IF condition is 400 invalid_graph at the edge's condition", async () => {
    const graph = (condition) => ({
        nodes: [{ id: "in", type: "Input" }, { id: "a", type: "Component", componentId: "comp_passthrough" }, { id: "b", type: "Output" }],
        edges: [
            { from: "in", to: "a", type: "PIPE" },
            { from: "a", to: "b", type: "IF", condition },
        ],
    });
    const before = await worker.kvSnapshot();
    for (const condition of ["score >", "=== 3"]) {
        const r = await worker.fetchJson("/execute", { body: { graph: graph(condition), context: { score: 9 } } });
        assert.equal(r.status, 400, `${condition}: ${r.text}`);
        assert.equal(r.body.error.code, "invalid_graph");
        assert.ok(r.body.error.problems.some((p) => p.at === "edges[1].condition"), r.text);
    }
    assert.deepEqual(await worker.kvSnapshot(), before);
    const ok = await worker.fetchJson("/execute", { body: { graph: graph("score > 5"), context: { score: 9 } } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.status, "completed");
    assert.equal(ok.body.data.score, 9);
});

test("FOREACH items keep a trigger context's own `results` key", async () => {
    const graph = foreachGraph(`${echo.url}/own-results`);
    const r = await worker.fetchJson("/execute", { body: { graph, context: { results: "mine", list: [1, 2] } } });
    assert.equal(r.body.status, "completed", r.text);
    assert.equal(r.body.data.count, 2);
    const seen = echo.requests().filter((x) => x.path === "/own-results");
    assert.equal(seen.length, 2);
    for (const s of seen) assert.equal(s.body.results, "mine", JSON.stringify(s.body));
    assert.deepEqual(seen.map((s) => s.body.item).sort(), [1, 2]);
});
