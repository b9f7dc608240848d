// A crash with work in flight, end to end: workerd SIGKILLed while every run's resumed segment
// waits on a slow component and a second callback per run has been answered `202 accepted`,
// then started again on the same state. After the restart the test sends nothing — only the
// daemons' own retries reach the Worker, as the reference daemon (daemon/daemon.mjs) makes
// them — and reads KV directly (not GET /runs, whose cold read re-arms a gate) until every run
// has settled. An accepted callback is one its daemon will never send again: ARCHITECTURE.md
// ("Writes at most once a second") promises it is applied all the same.
//
// Half the runs' first callback is still in flight at the kill (its daemon retries after the
// restart, which by itself wakes the gate); the other half's daemon gave up on the first
// attempt after its callback timeout and had the retry accepted too, so for those nothing at
// all arrives after the restart and only the gate's alarm can apply what it kept.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { DEFAULT_CALLBACK_TIMEOUT_MS, DEFAULT_RETRY_DELAYS_MS } from "../../daemon/daemon.mjs";
import { startWorker, startComponent, pendingComponent, freePort, waitUntil, sleep, storedStatus } from "./harness.mjs";
import { recordKey, assertCallbackAccepted } from "./settle.mjs";

const RUNS = 20;
/** Runs whose first daemon gives up on its in-flight first attempt (the rest keep waiting). */
const IMPATIENT = new Set([...Array(RUNS).keys()].filter((i) => i % 2 === 1));
/**
 * The impatient daemons' callback timeout: the resumed segment outlasts it, and a kept
 * callback's `202 accepted` (after 3 s) comes well within it.
 */
const SHORT_CALLBACK_TIMEOUT_MS = 5000;
/** From the restart, by when every run must have settled (generous: a busy 2-core machine). */
const SETTLE_WITHIN_MS = 25_000;

/**
 * Delivers a callback as the reference daemon does: an attempt at once, then after each of its
 * retry delays, until one is answered 2xx; an attempt unanswered within `timeoutMs`, answered
 * otherwise, or failing to connect is retried. Resolves to the attempts made.
 */
async function deliver(url, payload, { timeoutMs = DEFAULT_CALLBACK_TIMEOUT_MS } = {}) {
    const attempts = [];
    for (const wait of [0, ...DEFAULT_RETRY_DELAYS_MS]) {
        if (wait > 0) await sleep(wait);
        const attempt = { at: Date.now() };
        attempts.push(attempt);
        try {
            const res = await fetch(url, {
                method: "POST",
                headers: { "content-type": "application/json" },
                body: JSON.stringify(payload),
                signal: AbortSignal.timeout(timeoutMs),
            });
            attempt.status = res.status;
            const text = await res.text();
            try {
                attempt.body = JSON.parse(text);
            } catch {
                attempt.body = text;
            }
            if (res.status >= 200 && res.status < 300) return attempts;
        } catch (err) {
            // An answer the OpenAPI check refused is the test's failure, not the network's.
            if (err?.code === "ERR_OPENAPI_MISMATCH") throw err;
            attempt.error = String(err?.cause?.code ?? err?.name ?? err);
        }
    }
    return attempts;
}

/** The run a component call belongs to: its Idempotency-Key starts with the run id. */
const runOfCall = (req) => String(req.headers["idempotency-key"] ?? "").split(".")[0];

test("SIGKILL with segments waiting on a slow component and callbacks accepted: after the restart, with no request but the daemons' retries, every accepted callback is applied once", { timeout: 120_000 }, async () => {
    const persistDir = await mkdtemp(path.join(os.tmpdir(), "arcrun-crash-"));
    const port = await freePort();
    const bindings = { COMPONENT_TIMEOUT_SECONDS: "60" };
    const pend = await pendingComponent();

    // Holds every call until the kill; after it, answers slowly but surely.
    let phase = "before the kill";
    const held = new Set();
    const slowCalls = new Map(); // run id → [{phase, key, segment}]
    const slow = await startComponent(async (body, req) => {
        const run = runOfCall(req);
        const mine = slowCalls.get(run) ?? [];
        mine.push({ phase, key: req.headers["idempotency-key"], segment: req.headers["x-arcrun-segment"] });
        slowCalls.set(run, mine);
        if (phase === "before the kill") await new Promise((resolve) => held.add(resolve));
        else await sleep(200);
        return { slow: true };
    });

    let w = await startWorker({ port, persistDir, bindings });
    let killedAt;
    let restartedAt;
    try {
        // in → a (pending) → slow → out, and in → b (pending) → out: a paused run with two waits.
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "a", type: "Component", componentId: `${pend.url}/a` },
                { id: "b", type: "Component", componentId: `${pend.url}/b` },
                { id: "slow", type: "Component", componentId: `${slow.url}/slow` },
                { id: "out", type: "Output", data: { a: "{{a.data.v}}", b: "{{b.data.v}}", slow: "{{slow.slow}}" } },
            ],
            edges: [
                { from: "in", to: "a", type: "PIPE" },
                { from: "in", to: "b", type: "PIPE" },
                { from: "a", to: "slow", type: "ON_SUCCESS" },
                { from: "slow", to: "out", type: "PIPE" },
                { from: "b", to: "out", type: "PIPE" },
            ],
        };
        const runs = [];
        for (let seq = 0; seq < RUNS; seq++) {
            const t = await w.fetchJson("/execute", { body: { graph, context: { seq } } });
            assert.equal(t.body?.status, "paused", t.text);
            assert.equal(t.body.waits.length, 2, t.text);
            runs.push({ seq, id: t.body.run_id });
        }
        const callOf = (run, p) => {
            const found = pend.on(p).filter((c) => c.callbackUrl.includes(`/callbacks/${run.id}/`));
            assert.equal(found.length, 1, `${run.id}: one call to ${p}`);
            return found[0];
        };
        for (const run of runs) {
            run.a = callOf(run, "/a");
            run.b = callOf(run, "/b");
        }

        // Each run's first callback resumes it into the segment that waits on `slow`.
        for (const run of runs) {
            const timeoutMs = IMPATIENT.has(run.seq) ? SHORT_CALLBACK_TIMEOUT_MS : DEFAULT_CALLBACK_TIMEOUT_MS;
            run.deliveredA = deliver(run.a.callbackUrl, { task_id: run.a.taskId, success: true, data: { v: `a${run.seq}` } }, { timeoutMs });
        }
        await waitUntil("every run's segment to call the slow component", () => slowCalls.size === RUNS, { timeoutMs: 30_000, everyMs: 20 });
        // While those segments run, each run's second callback is kept and accepted.
        const answersB = await Promise.all(
            runs.map((run) => deliver(run.b.callbackUrl, { task_id: run.b.taskId, success: true, data: { v: `b${run.seq}` } })),
        );
        answersB.forEach((attempts, i) => {
            assert.equal(attempts.length, 1, `${runs[i].id}: the second callback needed ${JSON.stringify(attempts)}`);
            assert.equal(attempts[0].status, 202, `${runs[i].id}: ${JSON.stringify(attempts[0])}`);
            assertCallbackAccepted(attempts[0].body, { run_id: runs[i].id, task_id: runs[i].b.taskId });
        });
        // The impatient daemons gave up on their first attempt, and their retry was accepted.
        const impatient = runs.filter((r) => IMPATIENT.has(r.seq));
        const answersA = await Promise.all(impatient.map((r) => r.deliveredA));
        answersA.forEach((attempts, i) => {
            const last = attempts.at(-1);
            assert.equal(last.status, 202, `${impatient[i].id}: ${JSON.stringify(attempts)}`);
            assertCallbackAccepted(last.body, { run_id: impatient[i].id, task_id: impatient[i].a.taskId });
        });
        assert.equal(held.size, RUNS, "every run's slow call is still in flight at the kill");
        assert.equal(slow.hits(), RUNS, "each run's segment called the slow component once");

        killedAt = Date.now();
        await w.kill();
        phase = "after the restart";
        for (const release of held) release();
        held.clear();

        w = await startWorker({ port, persistDir, bindings });
        restartedAt = Date.now();

        // From here the test sends nothing: only the patient daemons' retries reach the Worker.
        const kv = await w.mf.getKVNamespace("RUNS");
        const stored = new Map();
        await waitUntil(
            "every run to be completed in KV",
            async () => {
                for (const run of runs) {
                    if (storedStatus(stored.get(run.id)) === "completed") continue;
                    const text = await kv.get(recordKey(run.id), "text");
                    if (text) stored.set(run.id, JSON.parse(text));
                }
                return runs.every((run) => storedStatus(stored.get(run.id)) === "completed");
            },
            { timeoutMs: SETTLE_WITHIN_MS, everyMs: 250 },
        ).catch((err) => {
            const states = runs.map((r) => `${r.seq}${IMPATIENT.has(r.seq) ? "*" : ""}:${storedStatus(stored.get(r.id))}/${Object.keys(stored.get(r.id)?.waits ?? {}).length}`);
            err.message += ` (seq:state/open waits, * = no request after the restart: ${states.join(" ")})`;
            throw err;
        });
        const settledMs = Date.now() - restartedAt;
        console.log(`[crash] restart took ${restartedAt - killedAt} ms; every run completed in KV ${settledMs} ms after it`);

        // The patient daemons' retries were answered (their first attempt died with workerd).
        const patient = runs.filter((r) => !IMPATIENT.has(r.seq));
        for (const run of patient) {
            const attempts = await run.deliveredA;
            assert.ok(attempts[0].error, `${run.id}: the first attempt was cut by the kill: ${JSON.stringify(attempts[0])}`);
            const last = attempts.at(-1);
            assert.ok(last.status >= 200 && last.status < 300, `${run.id}: ${JSON.stringify(attempts)}`);
        }

        // The end check, now that nothing is left to wake: each run as its gate shows it.
        for (const run of runs) {
            const view = await w.fetchJson(`/runs/${run.id}`);
            assert.equal(view.status, 200, view.text);
            assert.equal(view.body.status, "completed", view.text);
            const { a, b, slow: slowOut } = view.body.data;
            assert.deepEqual({ a, b, slow: slowOut }, { a: `a${run.seq}`, b: `b${run.seq}`, slow: true }, view.text);
            const done = view.body.trace.filter((e) => e.status === "succeeded").map((e) => e.node_id).sort();
            assert.deepEqual(done, ["a", "b", "in", "out", "slow"], `${run.id}: each node finished once: ${JSON.stringify(view.body.trace)}`);
            assert.deepEqual(view.body.waits, []);
            const closed = view.body.closed_waits;
            assert.equal(closed.length, 2, JSON.stringify(closed));
            for (const wait of closed) {
                assert.equal(wait.how, "resumed", JSON.stringify(wait));
                // Every callback that reached the wait is recorded; one was applied, any other
                // turned away (a daemon's retry of an attempt whose answer it lost).
                const outcomes = (wait.events ?? []).map((e) => e.outcome);
                assert.equal(outcomes.filter((o) => o === "accepted").length, 1, `${run.id}: ${JSON.stringify(wait)}`);
                assert.ok(outcomes.every((o) => o === "accepted" || o === "duplicate"), `${run.id}: ${JSON.stringify(wait)}`);
            }
            // The slow call in flight at the kill was made again, under the same key only.
            const calls = slowCalls.get(run.id);
            assert.equal(calls.filter((c) => c.phase === "before the kill").length, 1, JSON.stringify(calls));
            assert.ok(calls.some((c) => c.phase === "after the restart"), `${run.id}: the slow call was not made again: ${JSON.stringify(calls)}`);
            assert.deepEqual([...new Set(calls.map((c) => c.key))], [calls[0].key], `${run.id}: ${JSON.stringify(calls)}`);
        }
        // The pending components' calls were saved with the pause: none was made again.
        assert.equal(pend.on("/a").length, RUNS);
        assert.equal(pend.on("/b").length, RUNS);
    } finally {
        for (const release of held) release();
        // Throws if any run's record was written twice within a second, across the restart too.
        await w.stop();
        await slow.close();
        await pend.close();
        await rm(persistDir, { recursive: true, force: true });
    }
});
