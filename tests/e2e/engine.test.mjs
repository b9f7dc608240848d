// The product end to end: the built wasm in workerd (Miniflare) with its local KV and the
// per-run Durable Object, real loopback components, and the reference daemon calling back.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, startComponent, freePort, TEST_API_KEY_HASH, storedStatus } from "./harness.mjs";
import { startDaemon } from "../../daemon/daemon.mjs";
import { sleep } from "./harness.mjs";
import { recordKey, runView, kvCaughtUp, assertCallbackAnswer, CALLBACK_ANSWER_KEYS } from "./settle.mjs";

/** `node:status` of each trace entry. */
const statuses = (trace) => trace.map((e) => `${e.node_id}:${e.status}`);

let worker;
let daemon;
let echo;

before(async () => {
    worker = await startWorker({ bindings: { ALLOW_BARE_RESUME: "true", COMPONENT_TIMEOUT_SECONDS: "2" } });
    daemon = await startDaemon({ delayMs: 200, retryDelaysMs: [0, 200, 500], log: process.env.DAEMON_LOG ? (e) => console.log("DAEMON", JSON.stringify(e).slice(0, 400)) : () => {} });
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body;
        return { ...rest, echoed: true };
    });
}, { timeout: 120_000 });

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await daemon?.close();
        await echo?.close();
    }
}, { timeout: 120_000 });

/** Waits until the daemon has delivered the callback for `taskId`; returns its record. */
async function delivered(d, taskId, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        const task = d.stats().tasks.find((t) => t.task_id === taskId);
        if (task?.delivered) return task;
        await sleep(50);
    }
    throw new Error(`callback for ${taskId} was not delivered in ${timeoutMs} ms`);
}

function asyncChain(n, extraNodes = [], extraEdges = []) {
    const nodes = [{ id: "in", type: "Input" }];
    const edges = [];
    let prev = "in";
    for (let i = 1; i <= n; i++) {
        nodes.push({ id: `slow${i}`, type: "Component", componentId: daemon.url, data: { result: i * 10 } });
        edges.push({ from: prev, to: `slow${i}`, type: "PIPE" });
        prev = `slow${i}`;
    }
    nodes.push({ id: "after", type: "Component", componentId: `${echo.url}/after` });
    nodes.push({ id: "out", type: "Output", data: { last: `{{slow${n}.data.result}}` } });
    edges.push({ from: prev, to: "after", type: "ON_SUCCESS" });
    edges.push({ from: "after", to: "out", type: "PIPE" });
    return { id: "chain", name: "async chain", nodes: [...nodes, ...extraNodes], edges: [...edges, ...extraEdges] };
}

test("trigger → paused → daemon callback → completed, readable in each state", { timeout: 60_000 }, async () => {
    // The daemon holds this task for 1.5 s, so the paused record is still the one in KV when the
    // test reads it, however slow the machine (at 200 ms a loaded CI machine saw the completed one).
    const graph = asyncChain(1);
    graph.nodes.find((n) => n.id === "slow1").data.delay_ms = 1500;
    const trigger = await worker.fetchJson("/execute", { body: { graph, context: { topic: "x" } } });
    assert.equal(trigger.status, 200);
    const t = trigger.body;
    assert.equal(t.success, true);
    assert.equal(t.paused, true);
    assert.equal(t.status, "paused");
    assert.equal(t.paused_node_id, "slow1");
    // `{owner tag}-{inverted start time}-{random}`: the tag is the first 16 hex digits of the key's hash.
    assert.match(t.run_id, new RegExp(`^${TEST_API_KEY_HASH.slice(0, 16)}-[0-9a-f]{11}-[0-9a-f]{32}$`));
    assert.equal(recordKey(t.run_id), `runs/${TEST_API_KEY_HASH.slice(0, 16)}/${t.run_id}`);
    assert.ok(t.task_id.startsWith("task-"));
    assert.deepEqual(t.trace.map((e) => `${e.node_id}:${e.status}`), ["in:succeeded", "slow1:paused"]);

    const paused = await worker.fetchJson(`/runs/${t.run_id}`);
    assert.equal(paused.status, 200);
    assert.equal(paused.body.status, "paused");
    assert.equal(paused.body.waits.length, 1);
    const wait = paused.body.waits[0];
    assert.equal(wait.task_id, t.task_id);
    assert.equal(wait.node_id, "slow1");
    // The deadline is PAUSED_RUN_TTL_SECONDS (24 h by default) from when the call was issued,
    // which the paused trace entry gives: its time less its duration.
    const pausedEntry = t.trace.find((e) => e.node_id === "slow1" && e.status === "paused");
    assert.equal(wait.since, pausedEntry.at);
    assert.equal(wait.expires_at, pausedEntry.at - pausedEntry.duration_ms + 86_400_000, "default PAUSED_RUN_TTL_SECONDS is 24 h");

    // The paused record is in KV, once, with an expiry.
    const kv = await worker.mf.getKVNamespace("RUNS");
    const listed = await kv.list({ prefix: recordKey(t.run_id) });
    assert.equal(listed.keys.length, 1);
    // A paused run is kept until its last deadline plus one hour (ARCHITECTURE.md).
    const pausedUntil = (wait.expires_at + 3_600_000) / 1000;
    assert.ok(Math.abs(listed.keys[0].expiration - pausedUntil) <= 2, `paused run expires at ${listed.keys[0].expiration}, its deadline + 1 h is ${pausedUntil}`);

    const task = await delivered(daemon, t.task_id);
    assert.equal(task.last_status, 200);
    // The daemon is told, in a few fields, what its callback did: the run and the task it ended.
    const resumed = task.response;
    assert.equal(resumed.success, true);
    assertCallbackAnswer(resumed, { status: "completed", run_id: t.run_id, task_id: t.task_id });

    // The run itself, its output and its whole trace, is read from GET /runs/{id}.
    const done = await worker.fetchJson(`/runs/${t.run_id}`);
    assert.equal(done.body.status, "completed");
    assert.equal(done.body.data.last, 10);
    assert.deepEqual(statuses(done.body.trace), ["in:succeeded", "slow1:paused", "slow1:succeeded", "after:succeeded", "out:succeeded"]);
    assert.deepEqual(done.body.waits, []);
    // The completed record reaches KV (within a second of the previous write), still once.
    await kvCaughtUp(worker, t.run_id);
    const finishedList = (await kv.list({ prefix: recordKey(t.run_id) })).keys;
    assert.equal(finishedList.length, 1);
    assert.equal(finishedList[0].metadata.status, "completed");
    // Kept FINISHED_RUN_RETENTION_SECONDS (7 days by default) from when it finished.
    const keptUntil = done.body.finished_at / 1000 + 7 * 86400;
    assert.ok(Math.abs(finishedList[0].expiration - keptUntil) <= 5, `finished run expires at ${finishedList[0].expiration}, finished_at + 7 days is ${keptUntil}`);
});

test("callback with success:false takes the ON_FAIL path, not ON_SUCCESS", { timeout: 60_000 }, async () => {
    const graph = asyncChain(
        1,
        [{ id: "recover", type: "Component", componentId: `${echo.url}/recover`, data: { why: "{{slow1.error}}" } }],
        [{ from: "slow1", to: "recover", type: "ON_FAIL" }],
    );
    graph.nodes[1].data = { fail: true, fail_message: "model overloaded" };
    const hitsAfter = echo.hits("/after");
    const t = (await worker.fetchJson("/execute", { body: { graph } })).body;
    assert.equal(t.status, "paused");
    const task = await delivered(daemon, t.task_id);
    assertCallbackAnswer(task.response, { status: "completed", run_id: t.run_id, task_id: t.task_id });
    const run = await runView(worker, t.run_id);
    assert.equal(run.status, "completed");
    assert.equal(run.data.why, "model overloaded", "the completed sink is the result when the Output was skipped");
    assert.equal(echo.hits("/after"), hitsAfter, "ON_SUCCESS branch did not run");
    const order = statuses(run.trace);
    assert.deepEqual(order.slice(0, 3), ["in:succeeded", "slow1:paused", "slow1:failed"]);
    assert.deepEqual(order.slice(3).sort(), ["after:skipped", "out:skipped", "recover:succeeded"]);
    assert.equal(echo.hits("/recover"), 1, "the ON_FAIL branch ran once");
});

test("three async nodes in a chain: pause, resume, pause again, … complete", { timeout: 60_000 }, async () => {
    const t = (await worker.fetchJson("/execute", { body: { graph: asyncChain(3) } })).body;
    assert.equal(t.paused_node_id, "slow1");
    const first = await delivered(daemon, t.task_id);
    // Paused again: the answer names the NEW task (the one the daemon was just handed).
    assertCallbackAnswer(first.response, { status: "paused", run_id: t.run_id, paused_again: true, paused_node_id: "slow2" });
    assert.notEqual(first.response.task_id, t.task_id);
    const second = await delivered(daemon, first.response.task_id);
    assertCallbackAnswer(second.response, { status: "paused", run_id: t.run_id, paused_again: true, paused_node_id: "slow3" });
    assert.notEqual(second.response.task_id, first.response.task_id);
    const third = await delivered(daemon, second.response.task_id);
    assertCallbackAnswer(third.response, { status: "completed", run_id: t.run_id, task_id: second.response.task_id });
    const run = await runView(worker, t.run_id);
    assert.equal(run.status, "completed");
    assert.equal(run.data.last, 30);
    assert.deepEqual(run.waits, []);
    assert.deepEqual(run.closed_waits.map((w) => [w.node_id, w.task_id]), [["slow1", t.task_id], ["slow2", first.response.task_id], ["slow3", second.response.task_id]]);
    const order = statuses(run.trace);
    assert.deepEqual(order, [
        "in:succeeded",
        "slow1:paused",
        "slow1:succeeded",
        "slow2:paused",
        "slow2:succeeded",
        "slow3:paused",
        "slow3:succeeded",
        "after:succeeded",
        "out:succeeded",
    ]);
});

test("a duplicate callback is a noop and nothing runs twice", { timeout: 60_000 }, async () => {
    // A manual daemon: answer pending, keep the callback URL, call back twice.
    let callbackUrl;
    const manual = await startComponent((body) => {
        callbackUrl = body.callback_url;
        return { pending: true, task_id: "dup-task" };
    });
    const counter = await startComponent(() => ({ counted: true }));
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: manual.url },
                { id: "count", type: "Component", componentId: counter.url },
            ],
            edges: [{ from: "slow", to: "count", type: "PIPE" }],
        };
        const t = (await worker.fetchJson("/execute", { body: { graph } })).body;
        assert.equal(t.task_id, "dup-task");
        const body = { task_id: "dup-task", success: true, data: { v: 1 } };
        // Fire two at once: the run's Durable Object serialises them.
        const [a, b] = await Promise.all([
            fetch(callbackUrl, { method: "POST", body: JSON.stringify(body) }).then((r) => r.json()),
            fetch(callbackUrl, { method: "POST", body: JSON.stringify(body) }).then((r) => r.json()),
        ]);
        const [done, dup] = a.noop ? [b, a] : [a, b];
        assertCallbackAnswer(done, { status: "completed", run_id: t.run_id, task_id: "dup-task" });
        const repeat = { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.run_id, task_id: "dup-task" };
        assert.deepEqual(dup, repeat);
        const third = await fetch(callbackUrl, { method: "POST", body: JSON.stringify(body) }).then((r) => r.json());
        assert.deepEqual(third, repeat);
        assert.equal(counter.hits(), 1, "the downstream component ran exactly once");
        const run = await runView(worker, t.run_id);
        assert.equal(run.status, "completed");
        assert.deepEqual(statuses(run.trace), ["slow:paused", "slow:succeeded", "count:succeeded"], "each node recorded once");
    } finally {
        await manual.close();
        await counter.close();
    }
});

test("bare /workflows/resume resumes by task_id; unknown task is a noop", { timeout: 60_000 }, async () => {
    const manual = await startComponent(() => ({ pending: true, task_id: "bare-task-1" }));
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: manual.url }, { id: "out", type: "Output" }], edges: [{ from: "slow", to: "out" }] };
        const t = (await worker.fetchJson("/execute", { body: { graph } })).body;
        assert.equal(t.status, "paused");
        const r = await worker.fetchJson("/workflows/resume", { body: { task_id: "bare-task-1", success: true, data: { ok: 1 } } });
        assert.equal(r.status, 200);
        assertCallbackAnswer(r.body, { status: "completed", run_id: t.run_id, task_id: "bare-task-1" });
        const run = await runView(worker, t.run_id);
        assert.equal(run.status, "completed");
        assert.deepEqual(run.data.data, { ok: 1 }, "the callback's data reached the Output");
        const again = await worker.fetchJson("/workflows/resume", { body: { task_id: "bare-task-1", success: true } });
        assert.equal(again.status, 200);
        assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.run_id, task_id: "bare-task-1" });
        const unknown = await worker.fetchJson("/workflows/resume", { body: { task_id: "never-issued" } });
        assert.deepEqual(unknown.body, { success: true, noop: true, reason: "unknown_task" });
    } finally {
        await manual.close();
    }
});

test("bare /workflows/resume: a task id up to 1 KB is indexed (under a hash of it, outside KV), and found", { timeout: 60_000 }, async () => {
    // 1,000 bytes: past KV's 512-byte keys, within the 1 KB a pending answer may carry.
    const longTask = `long-${"x".repeat(995)}`;
    const manual = await startComponent(() => ({ pending: true, task_id: longTask }));
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: manual.url }, { id: "out", type: "Output" }], edges: [{ from: "slow", to: "out" }] };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.status, 200, t.text);
        assert.equal(t.body.status, "paused");
        assert.equal(t.body.task_id, longTask);
        // The index is a claim object per task id, named by its SHA-256 (ARCHITECTURE.md,
        // "Persistence"), not a KV key: KV holds no task entry, and every key fits its 512 bytes.
        const keys = [...(await worker.kvSnapshot()).keys()];
        assert.ok(keys.every((k) => k.length < 512), "every KV key fits KV");
        assert.deepEqual(keys.filter((k) => k.startsWith("task:")), [], "no task index in KV");
        assert.ok(!keys.some((k) => k.includes(longTask)), "the task id is not a key");
        const r = await worker.fetchJson("/workflows/resume", { body: { task_id: longTask, success: true, data: { ok: 1 } } });
        assert.equal(r.status, 200, r.text);
        assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id, task_id: longTask });
        const again = await worker.fetchJson("/workflows/resume", { body: { task_id: longTask, success: true } });
        assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.body.run_id, task_id: longTask }, "found again by its id");
        // Written to KV within a second of the trigger's write (so the next test starts from a quiet KV).
        const { record } = await kvCaughtUp(worker, t.body.run_id);
        assert.equal(record.version, 4);
        assert.equal(storedStatus(record), "completed");
        assert.ok(Number.isInteger(record.status.completed.finished_at), JSON.stringify(record.status));
        assert.ok(Number.isInteger(record.revision), "the record counts its writes");
    } finally {
        await manual.close();
    }
});

test("a callback's answer is small: its exact fields when completed and when paused again, under 1 KB with a 200 KB output", { timeout: 60_000 }, async () => {
    // in → big (answers 200 KB at once) → first (pending) → second (pending) → out
    const blob = "b".repeat(200_000);
    const big = await startComponent(() => ({ blob }));
    const manual = await startComponent((body) => ({ pending: true, task_id: `small-${body.step}` }));
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "big", type: "Component", componentId: big.url },
                { id: "first", type: "Component", componentId: `${manual.url}/first`, data: { step: "first" } },
                { id: "second", type: "Component", componentId: `${manual.url}/second`, data: { step: "second" } },
                { id: "out", type: "Output", data: { size: "{{big.blob}}" } },
            ],
            edges: [
                { from: "in", to: "big", type: "PIPE" },
                { from: "big", to: "first", type: "PIPE" },
                { from: "first", to: "second", type: "PIPE" },
                { from: "second", to: "out", type: "PIPE" },
            ],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.status, 200, t.text.slice(0, 500));
        assert.equal(t.body.status, "paused");
        assert.equal(t.body.task_id, "small-first");
        const waitOf = async (node) => (await runView(worker, t.body.run_id)).waits.find((w) => w.node_id === node);
        assert.ok(await waitOf("first"));
        const callbackUrl = (node) => manual.requests().find((q) => q.body?.step === node)?.body.callback_url;

        // Resumed and paused again: on the NEW wait, with a large callback body of its own.
        const firstUrl = callbackUrl("first");
        assert.ok(firstUrl);
        const r1 = await fetch(firstUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ task_id: "small-first", success: true, data: { echo: "e".repeat(200_000) } }) });
        const text1 = await r1.text();
        assert.equal(r1.status, 200, text1.slice(0, 500));
        const a1 = JSON.parse(text1);
        assert.deepEqual(Object.keys(a1).sort(), ["duration_ms", "paused_again", "paused_node_id", "resumed", "run_id", "status", "success", "task_id"], text1);
        assert.deepEqual({ ...a1, duration_ms: 0 }, { success: true, resumed: true, status: "paused", run_id: t.body.run_id, task_id: "small-second", duration_ms: 0, paused_again: true, paused_node_id: "second" });
        assert.ok(Buffer.byteLength(text1) < 1024, `paused-again answer is ${Buffer.byteLength(text1)} bytes: ${text1}`);

        // Resumed and completed: the output holds 200 KB (twice, with the flowing context), the answer does not.
        const secondUrl = callbackUrl("second");
        assert.ok(secondUrl, "the second component was called");
        const r2 = await fetch(secondUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ task_id: "small-second", success: true, data: { done: true } }) });
        const text2 = await r2.text();
        assert.equal(r2.status, 200, text2.slice(0, 500));
        const a2 = JSON.parse(text2);
        assert.deepEqual(Object.keys(a2).sort(), ["duration_ms", "resumed", "run_id", "status", "success", "task_id"], text2);
        assert.deepEqual({ ...a2, duration_ms: 0 }, { success: true, resumed: true, status: "completed", run_id: t.body.run_id, task_id: "small-second", duration_ms: 0 });
        assert.ok(Buffer.byteLength(text2) < 1024, `completed answer is ${Buffer.byteLength(text2)} bytes: ${text2}`);

        // The run's output is all there, at GET /runs/{id}.
        const run = await runView(worker, t.body.run_id);
        assert.equal(run.status, "completed");
        assert.equal(run.data.size, blob);
        assert.equal(run.data.blob, blob);
        assert.deepEqual(run.data.data, { done: true });
        assert.equal(run.duration_ms, a2.duration_ms, "the answer's duration is the run's");
        assert.deepEqual(statuses(run.trace), ["in:succeeded", "big:succeeded", "first:paused", "first:succeeded", "second:paused", "second:succeeded", "out:succeeded"]);
        assert.ok(JSON.stringify(run).length > 400_000, "the run itself is large");
        await kvCaughtUp(worker, t.body.run_id);
    } finally {
        await big.close();
        await manual.close();
    }
});

test("an invalid graph is a 400 listing every problem, and stores nothing", { timeout: 60_000 }, async () => {
    const before = await worker.kvSnapshot();
    const r = await worker.fetchJson("/execute", {
        body: {
            graph: {
                nodes: [
                    { id: "a", type: "Component", componentId: "comp_passthrough" },
                    { id: "a", type: "Component", componentId: "comp_passthrough" },
                    { id: "b", type: "Component" },
                ],
                edges: [{ from: "a", to: "ghost", type: "PIPE" }],
            },
        },
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.success, false);
    assert.equal(r.body.error.code, "invalid_graph");
    assert.deepEqual(r.body.error.problems, [
        { at: "nodes[id=a]", message: "duplicate node id (used 2 times)" },
        { at: "nodes[2]", message: "Component node 'b' has no componentId" },
        { at: "edges[0].to", message: "unknown node 'ghost'" },
    ]);
    const cyc = await worker.fetchJson("/execute", {
        body: { graph: { nodes: [{ id: "x", type: "Input" }], edges: [{ from: "x", to: "x", type: "PIPE" }] } },
    });
    assert.equal(cyc.status, 400);
    assert.equal(cyc.body.error.code, "invalid_graph");
    assert.deepEqual(cyc.body.error.problems, [{ at: "graph.edges", message: "the graph has a cycle through these nodes: x" }]);
    assert.deepEqual(await worker.kvSnapshot(), before);
});

test("component failures (non-2xx, non-JSON, refused, timeout) become ON_FAIL routes", { timeout: 60_000 }, async () => {
    const bad = await startComponent(async (body, req) => {
        if (req.url === "/500") return { status: 500, body: { oops: true } };
        if (req.url === "/text") return "not json at all";
        if (req.url === "/slow") {
            await sleep(4000);
            return { late: true };
        }
        return {};
    });
    const refused = `http://127.0.0.1:${await freePort()}/`;
    try {
        for (const [target, why] of [
            [`${bad.url}/500`, 'component answered HTTP 500: {"oops":true}'],
            [`${bad.url}/text`, "component answered with something other than JSON: not json at all"],
            // workerd's own words for a refused connection, explained (tests/e2e/outbound.test.mjs).
            [refused, `connection to ${new URL(refused).host} failed before an answer: refused, reset or closed early (the runtime reports these alike: Network connection lost.)`],
            [`${bad.url}/slow`, "timed out after 2000 ms"],
        ]) {
            const graph = {
                nodes: [
                    { id: "c", type: "Component", componentId: target },
                    { id: "fallback", type: "Output", data: { why: "{{c.error}}" } },
                ],
                edges: [{ from: "c", to: "fallback", type: "ON_FAIL" }],
            };
            const r = await worker.fetchJson("/execute", { body: { graph } });
            assert.equal(r.status, 200, target);
            assert.equal(r.body.status, "completed", `${target}: ${JSON.stringify(r.body)}`);
            assert.equal(r.body.data.why, why, target);
        }
        // Unrouted, the failure fails the run and is recorded with its trace.
        const r = await worker.fetchJson("/execute", {
            body: { graph: { nodes: [{ id: "c", type: "Component", componentId: `${bad.url}/500` }], edges: [] } },
        });
        assert.equal(r.body.status, "failed");
        assert.equal(r.body.success, false);
        assert.deepEqual(r.body.error, { code: "node_failed", message: 'component answered HTTP 500: {"oops":true}', node_id: "c" });
        const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
        assert.equal(read.body.status, "failed");
        assert.deepEqual(read.body.error, r.body.error);
        assert.deepEqual(read.body.trace.map((e) => [e.node_id, e.status, e.error]), [["c", "failed", 'component answered HTTP 500: {"oops":true}']]);
    } finally {
        await bad.close();
    }
});

test("GET /runs/{id} while running, and 404 for a run that does not exist", { timeout: 60_000 }, async () => {
    let seenRunId;
    let release;
    const gate = new Promise((r) => (release = r));
    const slow = await startComponent(async (body) => {
        seenRunId = new URL(body.callback_url).pathname.split("/")[2];
        await gate;
        return { fine: true };
    });
    try {
        const graph = { nodes: [{ id: "hold", type: "Component", componentId: slow.url }], edges: [] };
        const pending = worker.fetchJson("/execute", { body: { graph } });
        for (let waited = 0; !seenRunId; waited += 20) {
            if (waited > 15000) throw new Error("the component was never called");
            await sleep(20);
        }
        const during = await worker.fetchJson(`/runs/${seenRunId}`);
        assert.equal(during.status, 200);
        assert.equal(during.body.status, "running");
        release();
        const r = await pending;
        assert.equal(r.body.status, "completed");
        assert.equal(r.body.run_id, seenRunId);
        const missing = await worker.fetchJson(`/runs/${"0".repeat(32)}`);
        assert.equal(missing.status, 404);
        assert.equal(missing.body.success, false);
        assert.equal(missing.body.error.code, "not_found");
    } finally {
        await slow.close();
    }
});

test("a daemon that numbers its tasks: a numeric task_id pauses, and its callback (by URL or bare route) resumes", { timeout: 60_000 }, async () => {
    const urls = [];
    const numbered = await startComponent((body) => {
        urls.push(body.callback_url);
        return { pending: true, task_id: 40_000 + urls.length };
    });
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: numbered.url }, { id: "out", type: "Output" }], edges: [{ from: "slow", to: "out", type: "PIPE" }] };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        assert.equal(t.body.task_id, "40001", "the number, as its decimal text");
        const r = await fetch(urls[0], { method: "POST", body: JSON.stringify({ task_id: 40001, success: true, data: { n: 1 } }) });
        const answer = await r.json();
        assert.equal(r.status, 200, JSON.stringify(answer));
        assert.equal(answer.resumed, true, JSON.stringify(answer));
        assert.equal(answer.status, "completed", JSON.stringify(answer));

        // The bare route (on in this Worker) takes the number too.
        const t2 = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t2.body.task_id, "40002", t2.text);
        const bare = await worker.fetchJson("/workflows/resume", { body: { task_id: 40002, success: true, data: { n: 2 } } });
        assert.equal(bare.status, 200, bare.text);
        assert.equal(bare.body.resumed, true, bare.text);
    } finally {
        await numbered.close();
    }
});

test("a tampered callback token is refused and changes nothing", { timeout: 60_000 }, async () => {
    let callbackUrl;
    const manual = await startComponent((body) => {
        callbackUrl = body.callback_url;
        return { pending: true, task_id: "tamper-task" };
    });
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: manual.url }], edges: [] };
        const t = (await worker.fetchJson("/execute", { body: { graph } })).body;
        const before = await worker.kvSnapshot();
        const url = new URL(callbackUrl);
        const token = url.searchParams.get("token");
        const forged = token.slice(0, -2) + (token.endsWith("AA") ? "BB" : "AA");
        for (const variant of [`${url.origin}${url.pathname}`, `${url.origin}${url.pathname}?token=${forged}`]) {
            const r = await fetch(variant, { method: "POST", body: JSON.stringify({ task_id: "tamper-task", success: true }) });
            assert.equal(r.status, 401, variant);
            assert.equal((await r.json()).error.code, "unauthorized");
        }
        assert.deepEqual(await worker.kvSnapshot(), before);
        assert.equal((await worker.fetchJson(`/runs/${t.run_id}`)).body.status, "paused");
    } finally {
        await manual.close();
    }
});

test("the daemon's retries recover from a Worker that was not listening at first", { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-e2e-"));
    const port = await freePort();
    const slowDaemon = await startDaemon({ delayMs: 300, retryDelaysMs: [0, 1000, 3000, 10000], log: () => {} });
    let w = await startWorker({ port, persistDir: dir });
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: slowDaemon.url, data: { result: "late" } },
                { id: "out", type: "Output", data: { got: "{{slow.data.result}}" } },
            ],
            edges: [{ from: "slow", to: "out", type: "PIPE" }],
        };
        const t = (await w.fetchJson("/execute", { body: { graph } })).body;
        assert.equal(t.status, "paused");
        await w.stop();
        // The first attempts hit a closed port; bring the Worker back with the same state.
        await sleep(800);
        const early = slowDaemon.stats().tasks.find((x) => x.task_id === t.task_id);
        assert.ok(early.attempts >= 1 && !early.delivered, "first attempt failed while the Worker was down");
        w = await startWorker({ port, persistDir: dir });
        const task = await delivered(slowDaemon, t.task_id, 20000);
        assert.ok(task.attempts >= 2);
        assertCallbackAnswer(task.response, { status: "completed", run_id: t.run_id, task_id: t.task_id });
        const read = await w.fetchJson(`/runs/${t.run_id}`);
        assert.equal(read.body.status, "completed");
        assert.equal(read.body.data.got, "late");
    } finally {
        await w.stop();
        await slowDaemon.close();
        await rm(dir, { recursive: true, force: true });
    }
});
