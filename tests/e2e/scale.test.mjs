// A run with many open waits, end to end in workerd under KV's limit of one write per second
// to a key (the harness enforces it, and `stop()` fails a test file whose Worker wrote faster):
// callbacks sent in bursts and twice each are applied exactly once with small answers; a
// callback within a second of the run's last write is kept in the gate and written with what
// follows; reads see it at once; a Worker that dies before that write loses nothing.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, pendingComponent, postCallback, waitUntil, waitForStatus, kvOpsOf, freePort, storedStatus } from "./harness.mjs";

const recordKey = (id) => `runs/${id.slice(0, 16)}/${id}`;

let pend;

before(async () => {
    pend = await pendingComponent();
}, { timeout: 60_000 });

after(async () => {
    await pend?.close();
});

/** A FOREACH over `count` items whose component answers pending for each. */
function foreachGraph(count) {
    return {
        graph: {
            nodes: [
                { id: "in", type: "Input" },
                { id: "each", type: "Component", componentId: `${pend.url}/items` },
                { id: "out", type: "Output" },
            ],
            edges: [
                { from: "in", to: "each", type: "FOREACH", items: "things" },
                { from: "each", to: "out", type: "PIPE" },
            ],
        },
        context: { things: Array.from({ length: count }, (_, i) => i) },
    };
}

/** Triggers the FOREACH and waits until every item is paused; returns the run id and each item's call. */
async function pausedForeach(worker, count) {
    const before = pend.calls.length;
    const t = await worker.fetchJson("/execute", { body: foreachGraph(count) });
    assert.ok([200, 202].includes(t.status), t.text);
    const runId = t.body.run_id;
    await waitUntil(`${count} items paused`, async () => {
        const r = await worker.fetchJson(`/runs/${runId}`);
        return r.body.status === "paused" && r.body.waits.length === count ? r : null;
    }, { timeoutMs: 60_000, everyMs: 200 });
    // By item: calls are made several at a time and arrive in any order.
    const calls = pend.calls
        .slice(before)
        .filter((c) => c.callbackUrl.includes(runId))
        .sort((a, b) => a.body.item - b.body.item);
    assert.equal(calls.length, count, `${pend.calls.length - before} calls since the trigger; e.g. ${pend.calls.at(-1)?.callbackUrl}`);
    return { runId, calls };
}

/** Runs `jobs` (async functions) with at most `limit` at once; returns their results in order. */
async function pool(jobs, limit) {
    const results = new Array(jobs.length);
    let next = 0;
    async function lane() {
        while (next < jobs.length) {
            const i = next++;
            results[i] = await jobs[i]();
        }
    }
    await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, lane));
    return results;
}

test("300 item callbacks, each sent twice, 50 at once: each applied exactly once, small answers, within KV's write limit", { timeout: 240_000 }, async () => {
    const worker = await startWorker({});
    try {
        const { runId, calls } = await pausedForeach(worker, 300);
        // Each item's callback twice, in a shuffled order, 50 in flight.
        const sends = calls.flatMap((c) => [c, c]).map((c) => () =>
            postCallback(c.callbackUrl, c.taskId, { success: true, data: { item: c.body.item, task: c.taskId } }),
        );
        for (let i = sends.length - 1; i > 0; i--) {
            const j = Math.floor(Math.random() * (i + 1));
            [sends[i], sends[j]] = [sends[j], sends[i]];
        }
        const answers = await pool(sends, 50);
        const statuses = new Map();
        for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        assert.deepEqual([...statuses.keys()].filter((s) => s !== 200 && s !== 202), [], `statuses: ${JSON.stringify([...statuses])}`);
        const resumed = answers.filter((a) => a.status === 200 && a.body.resumed === true);
        const accepted = answers.filter((a) => a.status === 202);
        const noops = answers.filter((a) => a.status === 200 && a.body.noop === true);
        assert.equal(resumed.length + accepted.length + noops.length, 600);
        // No task is answered `resumed` twice.
        assert.equal(new Set(resumed.map((a) => a.body.task_id)).size, resumed.length);
        assert.ok(resumed.length >= 300 - accepted.length, `${resumed.length} resumed, ${accepted.length} accepted`);
        for (const a of noops) assert.equal(a.body.reason, "already_resumed", a.text);
        // Small: no trace, waits or data, whatever the run holds.
        const largest = Math.max(...answers.map((a) => a.text.length));
        assert.ok(largest < 1024, `largest callback answer ${largest} bytes`);
        for (const a of resumed) assert.equal(a.body.trace, undefined);

        const done = await waitForStatus(worker, runId, ["completed"], 30_000);
        const results = done.body.data.results;
        assert.equal(results.length, 300);
        results.forEach((r, i) => assert.deepEqual(r.data, { item: i, task: calls[i].taskId }, `item ${i}: ${JSON.stringify(r)}`));
        assert.equal(done.body.closed_waits.length, 300);
        assert.ok(done.body.closed_waits.every((w) => w.how === "resumed"));
        // Each names its item, as its trace entries do.
        assert.deepEqual(done.body.closed_waits.map((w) => w.item).sort((a, b) => a - b), results.map((_, i) => i));
        // Each wait was resumed once and turned the other copy away as a duplicate.
        for (const w of done.body.closed_waits) {
            const outcomes = (w.events ?? []).map((e) => e.outcome).sort();
            assert.deepEqual(outcomes, ["accepted", "duplicate"], `${w.wait_id}: ${JSON.stringify(w.events)}`);
        }
        // KV caught up with the gate, and no write was refused (stop() checks that too).
        await waitUntil("KV holds the completed run", async () => {
            const kv = await worker.mf.getKVNamespace("RUNS");
            const text = await kv.get(recordKey(runId), "text");
            return text && storedStatus(JSON.parse(text)) === "completed";
        }, { timeoutMs: 5_000 });
        assert.deepEqual(await worker.kvWriteViolations(), []);
    } finally {
        await worker.stop();
    }
});

test("a callback within a second of the run's last write is kept in the gate: read at once, written to KV within about a second", { timeout: 60_000 }, async () => {
    const worker = await startWorker({});
    try {
        const { runId, calls } = await pausedForeach(worker, 3);
        const kv = await worker.mf.getKVNamespace("RUNS");
        const openInKv = async () => Object.keys(JSON.parse(await kv.get(recordKey(runId), "text")).waits ?? {}).length;
        // Callbacks until one lands within a second of a write (the first normally does).
        let kept = null;
        const sent = [];
        for (const c of calls.slice(0, 2)) {
            const r = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { n: 1 } });
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.resumed, true);
            sent.push(c);
            if (kvOpsOf(r).writes === 0) {
                kept = r;
                break;
            }
        }
        assert.ok(kept, "no callback came within a second of a write (machine too slow to tell)");
        assert.match(kept.headers.get("x-arcrun-do-ops"), /writes=[1-9]/, "kept in the gate's storage");
        // The gate serves the latest state at once.
        const read = await worker.fetchJson(`/runs/${runId}`);
        assert.equal(read.body.waits.length, 3 - sent.length);
        // KV follows within about a second.
        const t0 = Date.now();
        await waitUntil("KV to catch up", async () => (await openInKv()) === 3 - sent.length, { timeoutMs: 5_000, everyMs: 50 });
        const lag = Date.now() - t0;
        assert.ok(lag < 2_500, `KV caught up after ${lag} ms`);
    } finally {
        await worker.stop();
    }
});

test("a Worker that dies after accepting a callback and before writing it to KV loses nothing", { timeout: 120_000 }, async () => {
    const persistDir = await mkdtemp(path.join(os.tmpdir(), "arcrun-scale-"));
    const port = await freePort();
    let worker = await startWorker({ port, persistDir });
    try {
        const { runId, calls } = await pausedForeach(worker, 6);
        let kept = null;
        for (const c of calls) {
            const r = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { from: c.taskId } });
            assert.equal(r.status, 200, r.text);
            if (kvOpsOf(r).writes === 0) {
                kept = c;
                break;
            }
        }
        assert.ok(kept, "no callback came within a second of a write (machine too slow to tell)");
        // Dies at once: the alarm that writes it has not fired.
        await worker.stop();
        worker = await startWorker({ port, persistDir });
        const read = await worker.fetchJson(`/runs/${runId}`);
        assert.equal(read.status, 200, read.text);
        const closed = read.body.closed_waits.map((w) => w.task_id);
        assert.ok(closed.includes(kept.taskId), `the kept callback is applied: closed ${JSON.stringify(closed)}`);
        // Sent again (a daemon retrying), it is a duplicate, not a second resume.
        const again = await postCallback(kept.callbackUrl, kept.taskId, { success: true, data: { from: kept.taskId } });
        assert.equal(again.body.noop, true, again.text);
        assert.equal(again.body.reason, "already_resumed");
        // The rest complete the run with every item's own data.
        for (const c of calls.filter((c) => !closed.includes(c.taskId) && c !== kept)) {
            const r = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { from: c.taskId } });
            assert.ok([200, 202].includes(r.status), r.text);
        }
        const done = await waitForStatus(worker, runId, ["completed"], 15_000);
        assert.deepEqual(done.body.data.results.map((r) => r.data?.from), calls.map((c) => c.taskId));
    } finally {
        await worker.stop();
        await rm(persistDir, { recursive: true, force: true });
    }
});
