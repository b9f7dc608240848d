// Documented guarantees, each turned into an end-to-end test that fails when the guarantee
// breaks: the built wasm in workerd (Miniflare) with local KV and Durable Objects, real
// loopback components, and — where a cost is claimed — the Worker's bindings counted at the
// binding by tests/e2e/probe.mjs, independently of the Worker's own x-arcrun-kv-ops header.
//
// Sources of each guarantee: README.md (HTTP API, Graphs), ARCHITECTURE.md ("Why a Durable
// Object per run", "Persistence", "Time", "Callback URLs"), SECURITY.md.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Log, LogLevel } from "miniflare";

import {
    REPO_ROOT,
    TEST_API_KEY,
    TEST_API_KEY_HASH,
    startWorker,
    startComponent,
    pendingComponent,
    postCallback,
    postHeartbeat,
    heartbeatUrlOf,
    freePort,
    waitUntil,
    readUntilSteady,
    waitForStatus,
    mintToken,
} from "./harness.mjs";
import { sleep, sha256hex as sha256, storedStatus } from "./harness.mjs";
import { runView, kvCaughtUp, assertCallbackAnswer, assertCallbackAccepted } from "./settle.mjs";


const KV_HEADER = "x-arcrun-kv-ops";
const DO_HEADER = "x-arcrun-do-ops";
const KV_HEADER_FORMAT = /^reads=(\d+);writes=(\d+);lists=(\d+)$/;
const ZERO_KV = "reads=0;writes=0;lists=0";
/** Time given to anything a request might still do after its answer, before counting. */
const SETTLE_MS = 150;

// ---------------------------------------------------------------------------------------
// Helpers


/** `{origin, runId, waitId, token, exp}` of a callback_url the Worker handed out. */
function parseCallbackUrl(callbackUrl) {
    const u = new URL(callbackUrl);
    const [, callbacks, runId, waitId, ...rest] = u.pathname.split("/");
    assert.equal(callbacks, "callbacks", `not a callback URL: ${callbackUrl}`);
    assert.deepEqual(rest, [], `not a callback URL: ${callbackUrl}`);
    const token = u.searchParams.get("token");
    assert.match(token, /^\d+\.[A-Za-z0-9_-]+$/, `token of ${callbackUrl}`);
    return { origin: u.origin, runId, waitId, token, exp: Number(token.split(".")[0]) };
}

/** A callback (or, with heartbeat, heartbeat) URL for a run and wait with the given raw token. */
function callbackUrl(origin, runId, waitId, token, { heartbeat = false } = {}) {
    const p = `${origin}/callbacks/${runId}/${waitId}${heartbeat ? "/heartbeat" : ""}`;
    return token === undefined ? p : `${p}?token=${encodeURIComponent(token)}`;
}

async function postJson(url, body) {
    const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        // not JSON
    }
    return { status: res.status, headers: res.headers, body: json, text };
}

/** The x-arcrun-kv-ops header of a response, checked for form: `{reads, writes, lists}`. */
function kvHeader(res, what) {
    const raw = res.headers.get(KV_HEADER);
    assert.notEqual(raw, null, `${what}: no ${KV_HEADER} header`);
    const m = KV_HEADER_FORMAT.exec(raw);
    assert.ok(m, `${what}: ${KV_HEADER} is not reads=N;writes=N;lists=N: ${JSON.stringify(raw)}`);
    return { reads: Number(m[1]), writes: Number(m[2]), lists: Number(m[3]) };
}

/** Starts the Worker wrapped by tests/e2e/probe.mjs (modules resolved from the repository root). */
function startProbedWorker({ port, persistDir, bindings = {}, miniflare = {} } = {}) {
    return startWorker({
        scriptPath: "tests/e2e/probe.mjs",
        port,
        persistDir,
        bindings,
        miniflare: {
            modulesRoot: REPO_ROOT,
            modulesRules: [
                { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
                { type: "CompiledWasm", include: ["**/*.wasm"] },
            ],
            ...miniflare,
        },
    });
}

async function probeTotals(worker) {
    const r = await worker.fetchJson("/__probe", { apiKey: null });
    assert.equal(r.status, 200, `probe: ${r.text}`);
    return r.body;
}

function minus(after, before) {
    const out = {};
    for (const k of new Set([...Object.keys(after), ...Object.keys(before)])) out[k] = (after[k] ?? 0) - (before[k] ?? 0);
    return out;
}

/**
 * Performs `send()` against a probed Worker and returns its response with what it cost at the
 * bindings: `kv` {get, getWithMetadata, put, list, delete}, `do` {idFromName, …, get, fetch},
 * `storage` (RunGate storage calls by method) and `storageCalls` (their sum).
 */
async function measured(worker, send) {
    // What earlier requests left to their gates' alarms (the record's write follows the answer)
    // is done before this one is counted.
    const before = await readUntilSteady(() => probeTotals(worker), { everyMs: SETTLE_MS, timeoutMs: 20 * SETTLE_MS });
    const res = await send();
    await sleep(SETTLE_MS);
    const after = await probeTotals(worker);
    const storage = minus(after.storage, before.storage);
    return {
        res,
        kv: minus(after.kv, before.kv),
        do: minus(after.do, before.do),
        storage,
        storageCalls: Object.values(storage).reduce((a, b) => a + b, 0),
        before,
    };
}

/**
 * A measured request that changed a run costs the run one KV write (README: a run's record is
 * written at most once a second): either in the request itself (its header says writes=1), or —
 * when it came less than a second after the run's previous write — none in the request (the
 * header says writes=0, and x-arcrun-do-ops shows the change kept in the gate's storage) and
 * exactly one when the second has passed, by the gate's alarm, with no read or list. Waits for
 * that write, so the next measured request starts from a quiet binding. Returns "now" or "later".
 */
async function assertOneWrite(worker, m, what) {
    const header = kvHeader(m.res, what);
    assert.ok(header.writes === 0 || header.writes === 1, `${what}: ${KV_HEADER} writes=${header.writes}`);
    assert.equal(header.reads, m.kv.get + m.kv.getWithMetadata, `${what}: the header's reads are the binding's`);
    assert.equal(header.lists, 0, `${what}: lists`);
    assert.equal(m.kv.list, 0, `${what}: lists at the binding`);
    assert.equal(m.kv.delete, 0, `${what}: deletes`);
    if (header.writes === 1) {
        assert.equal(m.kv.put, 1, `${what}: the write the header counts is the binding's`);
        return "now";
    }
    const doOps = /writes=(\d+)/.exec(m.res.headers.get(DO_HEADER) ?? "");
    assert.ok(doOps && Number(doOps[1]) >= 1, `${what}: a change not yet in KV is kept in the gate's storage (${DO_HEADER}: ${m.res.headers.get(DO_HEADER)})`);
    // The write the request did not make comes when the second has passed (it may already have).
    await waitUntil(`${what}: the paced KV write`, async () => (await probeTotals(worker)).kv.put > m.before.kv.put, { timeoutMs: 10_000, everyMs: 50 });
    await sleep(SETTLE_MS);
    const since = minus((await probeTotals(worker)).kv, m.before.kv);
    assert.deepEqual(since, { get: header.reads, getWithMetadata: 0, put: 1, list: 0, delete: 0 }, `${what}: from the request on, exactly one write and no other KV operation`);
    return "later";
}

/**
 * The header of `m.res` equals the count at the binding (reads, writes, lists), and no delete —
 * but for the record's write of a request that changed a run: it is answered once the change is
 * kept in its gate's storage (its x-arcrun-do-ops counts the write), and the alarm it set writes
 * the record just after, counted at the binding and not in the request's header.
 */
function assertHeaderAgrees(m, what) {
    const header = kvHeader(m.res, what);
    const binding = { reads: m.kv.get + m.kv.getWithMetadata, writes: m.kv.put + m.kv.delete, lists: m.kv.list };
    const byAlarm = binding.writes - header.writes;
    assert.ok(byAlarm === 0 || byAlarm === 1, `${what}: ${KV_HEADER} says ${JSON.stringify(header)}, the binding counted ${JSON.stringify(m.kv)}`);
    if (byAlarm === 1) {
        assert.equal(header.writes, 0, `${what}: a request writes its record itself or leaves it to its alarm, not both`);
        assert.match(m.res.headers.get(DO_HEADER) ?? "", /writes=[1-9]/, `${what}: the change is kept in the gate's storage before the answer`);
    }
    assert.deepEqual({ ...header, writes: header.writes + byAlarm }, binding, `${what}: ${KV_HEADER} says ${JSON.stringify(header)}, the binding counted ${JSON.stringify(m.kv)}`);
    return header;
}

/** A measured request touched nothing at all: no KV, no Durable Object, no gate storage. */
function assertNoWork(m, what) {
    assert.deepEqual(
        m.kv,
        { get: 0, getWithMetadata: 0, put: 0, list: 0, delete: 0 },
        `${what}: KV operations at the binding`,
    );
    assert.deepEqual(m.do, { idFromName: 0, idFromString: 0, newUniqueId: 0, get: 0, fetch: 0 }, `${what}: Durable Object namespace use`);
    assert.equal(m.storageCalls, 0, `${what}: Durable Object storage calls ${JSON.stringify(m.storage)}`);
    assert.equal(m.res.headers.get(KV_HEADER), ZERO_KV, `${what}: ${KV_HEADER}`);
    assert.equal(m.res.headers.get(DO_HEADER), null, `${what}: a request that never reached a gate has no ${DO_HEADER}`);
}

/** The listed fields of an object (a run's `data` is the Output node's whole input). */
function pick(obj, keys) {
    return Object.fromEntries(keys.map((k) => [k, obj?.[k]]));
}

/** The one call a pending component received for `runId`. */
function callOf(component, nodePath, runId) {
    const calls = component.on(nodePath).filter((c) => c.callbackUrl && parseCallbackUrl(c.callbackUrl).runId === runId);
    assert.equal(calls.length, 1, `calls to ${nodePath} for run ${runId}`);
    return calls[0];
}

// ---------------------------------------------------------------------------------------
// 1. Two waits of one run resumed at the same instant (ARCHITECTURE.md, "Why a Durable Object
//    per run": "two parallel waits of one run resuming at once could overwrite each other's
//    record" — closed by the gate; README: a join fires once).

test("two parallel waits resumed at the same instant: both applied, the join fires once, the run completes", async () => {
    const worker = await startWorker();
    const pc = await pendingComponent();
    const joined = await startComponent((body) => ({ joined: true, round: body.round }));
    const ROUNDS = 5;
    try {
        const graph = {
            id: "fan-in",
            name: "two waits, one join",
            nodes: [
                { id: "in", type: "Input" },
                { id: "a", type: "Component", componentId: `${pc.url}/a` },
                { id: "b", type: "Component", componentId: `${pc.url}/b` },
                { id: "join", type: "Component", componentId: `${joined.url}/join` },
                { id: "out", type: "Output", data: { from_a: "{{a.data.v}}", from_b: "{{b.data.v}}", joined: "{{join.joined}}" } },
            ],
            edges: [
                { from: "in", to: "a", type: "PIPE" },
                { from: "in", to: "b", type: "PIPE" },
                { from: "a", to: "join", type: "ON_SUCCESS" },
                { from: "b", to: "join", type: "ON_SUCCESS" },
                { from: "join", to: "out", type: "PIPE" },
            ],
        };
        for (let round = 0; round < ROUNDS; round++) {
            const t = await worker.fetchJson("/execute", { body: { graph, context: { round } } });
            assert.equal(t.status, 200, t.text);
            assert.equal(t.body.status, "paused", t.text);
            assert.deepEqual(t.body.waits.map((w) => w.node_id).sort(), ["a", "b"], "two open waits");
            const runId = t.body.run_id;
            const a = callOf(pc, "/a", runId);
            const b = callOf(pc, "/b", runId);

            const [ra, rb] = await Promise.all([
                postCallback(a.callbackUrl, a.taskId, { success: true, data: { v: `A${round}` } }),
                postCallback(b.callbackUrl, b.taskId, { success: true, data: { v: `B${round}` } }),
            ]);
            for (const [name, r] of [["a", ra], ["b", rb]]) {
                assert.equal(r.status, 200, `round ${round}, callback ${name}: ${r.text}`);
                assert.equal(r.body.resumed, true, `round ${round}, callback ${name} applied: ${r.text}`);
                assert.equal(r.body.run_id, runId);
                // Each names the task it ended; the first applied leaves the run waiting on the
                // other wait (paused, but not paused again: no new wait was opened).
                assertCallbackAnswer(r.body, { run_id: runId, task_id: (name === "a" ? a : b).taskId, paused_again: undefined }, `round ${round}, callback ${name}`);
            }
            // One was applied first (the other wait still open), the other finished the run.
            assert.deepEqual([ra.body.status, rb.body.status].sort(), ["completed", "paused"], `round ${round}`);

            const joinCalls = joined.requests().filter((q) => q.path === "/join" && q.body?.round === round);
            assert.equal(joinCalls.length, 1, `round ${round}: the join fired exactly once`);

            const read = await worker.fetchJson(`/runs/${runId}`);
            assert.equal(read.status, 200);
            assert.equal(read.body.status, "completed", read.text);
            assert.deepEqual(pick(read.body.data, ["from_a", "from_b", "joined"]), { from_a: `A${round}`, from_b: `B${round}`, joined: true }, `round ${round}: both results reached the end`);
            assert.deepEqual(read.body.waits, [], "no wait left open");
            const nodeStatuses = read.body.trace.map((e) => `${e.node_id}:${e.status}`);
            for (const entry of ["a:succeeded", "b:succeeded", "join:succeeded", "out:succeeded"]) {
                assert.equal(nodeStatuses.filter((s) => s === entry).length, 1, `round ${round}: ${entry} once in ${nodeStatuses}`);
            }

            // And a repeat of either is a noop that runs nothing again.
            const again = await postCallback(a.callbackUrl, a.taskId, { success: true, data: { v: "late" } });
            assert.equal(again.status, 200);
            assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: runId, task_id: a.taskId }, again.text);
        }
        assert.equal(joined.hits("/join"), ROUNDS, `the join component was called once per run (${ROUNDS} runs)`);
    } finally {
        await worker.stop();
        await pc.close();
        await joined.close();
    }
});

// ---------------------------------------------------------------------------------------
// 2. A callback that arrives before the pause is stored (ARCHITECTURE.md: "a daemon that
//    calls back before the pause is stored would miss it" — closed by the gate's lock).

test("a callback sent before the component has even answered pending is applied once the pause is stored", async () => {
    const worker = await startWorker();
    // Fires its callback without awaiting it, waits `holdMs`, then answers pending: the callback
    // reaches the Worker while the trigger's segment is still waiting for this answer.
    const HOLDS_MS = [0, 0, 20, 100, 300];
    const early = [];
    const eager = await startComponent(async (body) => {
        const i = early.length;
        const taskId = `early-task-${i}`;
        const entry = { taskId, round: body.round, callbackUrl: body.callback_url, sentAt: 0, answeredAt: 0, reply: null };
        early.push(entry);
        entry.sentAt = Date.now();
        entry.reply = postJson(body.callback_url, { task_id: taskId, success: true, data: { v: `early-${body.round}` } });
        entry.reply.catch(() => {});
        await sleep(HOLDS_MS[body.round] ?? 0);
        entry.answeredAt = Date.now();
        return { pending: true, task_id: taskId };
    });
    const after = await startComponent((body) => ({ after: true, round: body.round }));
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "eager", type: "Component", componentId: `${eager.url}/eager` },
                { id: "after", type: "Component", componentId: `${after.url}/after` },
                { id: "out", type: "Output", data: { got: "{{eager.data.v}}", after: "{{after.after}}" } },
            ],
            edges: [
                { from: "in", to: "eager", type: "PIPE" },
                { from: "eager", to: "after", type: "ON_SUCCESS" },
                { from: "after", to: "out", type: "PIPE" },
            ],
        };
        for (let round = 0; round < HOLDS_MS.length; round++) {
            const t = await worker.fetchJson("/execute", { body: { graph, context: { round } } });
            assert.equal(t.status, 200, t.text);
            const entry = early.find((e) => e.round === round);
            assert.ok(entry, `round ${round}: the component was called`);
            assert.ok(entry.sentAt <= entry.answeredAt, "the callback was sent before the pending answer");
            // The trigger answers what its own segment saw: the pause (the early callback waits
            // for the run's lock, so it cannot have been applied inside the trigger's segment).
            assert.equal(t.body.status, "paused", `round ${round}: the trigger's segment ends paused: ${t.text}`);
            assert.equal(t.body.task_id, entry.taskId);

            const reply = await Promise.race([
                entry.reply,
                sleep(30_000).then(() => {
                    throw new Error(`round ${round}: the early callback got no answer in 30 s`);
                }),
            ]);
            // The early callback is kept by the gate and applied when the trigger's segment ends;
            // its sender waits for that (up to 3 s) and gets the real answer, or else a 202 saying
            // it was accepted (a very slow machine): either way the run completes with it.
            if (reply.status === 202) {
                assertCallbackAccepted(reply.body, { run_id: t.body.run_id, task_id: entry.taskId }, `round ${round}: early callback`);
            } else {
                assert.equal(reply.status, 200, `round ${round}: early callback answer: ${reply.text}`);
                assert.equal(reply.body.resumed, true, `round ${round}: the early callback was applied: ${reply.text}`);
                assert.equal(reply.body.status, "completed", `round ${round}: ${reply.text}`);
                assertCallbackAnswer(reply.body, { status: "completed", run_id: t.body.run_id, task_id: entry.taskId }, `round ${round}: early callback`);
            }

            const read = reply.status === 202 ? await waitForStatus(worker, t.body.run_id, ["completed", "failed"]) : await worker.fetchJson(`/runs/${t.body.run_id}`);
            assert.equal(read.body.status, "completed", `round ${round}: ${read.text}`);
            assert.deepEqual(pick(read.body.data, ["got", "after"]), { got: `early-${round}`, after: true });
            assert.equal(after.requests().filter((q) => q.body?.round === round).length, 1, `round ${round}: downstream ran once`);
        }
        assert.equal(after.hits("/after"), HOLDS_MS.length);
    } finally {
        await worker.stop();
        await eager.close();
        await after.close();
    }
});

// ---------------------------------------------------------------------------------------
// 3. KV operations counted at the binding (ARCHITECTURE.md, "Persistence": pausing costs one
//    KV write; resuming one write plus one read when the gate no longer holds the run; a
//    duplicate costs no KV write; nothing lists KV keys. README: the header is "the KV
//    operations that request cost").

test("KV operations at the binding: pause 1 put, resume 1 put (≤1 get), duplicate 0 put, reads 0 put, never a list; the header agrees", async () => {
    const persistDir = await mkdtemp(path.join(os.tmpdir(), "arcrun-guarantee-kv-"));
    const port = await freePort();
    const parked = [];
    const parker = await startComponent((body) => {
        const task_id = `kv-task-${parked.length}`;
        parked.push({ task_id, callbackUrl: body.callback_url });
        return { pending: true, task_id };
    });
    const counter = await startComponent(() => ({ counted: true }));
    const graphPause = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "park", type: "Component", componentId: `${parker.url}/park` },
            { id: "count", type: "Component", componentId: `${counter.url}/count` },
            { id: "out", type: "Output", data: { answer: "{{park.data.answer}}" } },
        ],
        edges: [
            { from: "in", to: "park", type: "PIPE" },
            { from: "park", to: "count", type: "ON_SUCCESS" },
            { from: "count", to: "out", type: "PIPE" },
        ],
    };
    const graphInProcess = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "p", type: "Component", componentId: "comp_passthrough" },
            { id: "out", type: "Output" },
        ],
        edges: [
            { from: "in", to: "p", type: "PIPE" },
            { from: "p", to: "out", type: "PIPE" },
        ],
    };
    const trigger = (graph, context) => () => worker.fetchJson("/execute", { body: { graph, context } });
    const callback = (i, extra = {}) => () => postJson(parked[i].callbackUrl, { task_id: parked[i].task_id, success: true, data: { answer: i }, ...extra });
    const OK = { idFromName: 1, idFromString: 0, newUniqueId: 0, get: 1, fetch: 1 };
    let worker = await startProbedWorker({ port, persistDir });
    try {
        // A run that never pauses: one write.
        let m = await measured(worker, trigger(graphInProcess, { x: 1 }));
        assert.equal(m.res.body.status, "completed", m.res.text);
        assert.deepEqual(m.kv, { get: 0, getWithMetadata: 0, put: 1, list: 0, delete: 0 }, "run that never pauses");
        assert.deepEqual(m.do, OK, "run that never pauses: one Durable Object request");
        assertHeaderAgrees(m, "run that never pauses");

        // A trigger that pauses: one write, nothing read, nothing listed.
        m = await measured(worker, trigger(graphPause, { seq: 0 }));
        assert.equal(m.res.body.status, "paused", m.res.text);
        const run0 = m.res.body.run_id;
        assert.deepEqual(m.kv, { get: 0, getWithMetadata: 0, put: 1, list: 0, delete: 0 }, "trigger that pauses");
        assert.deepEqual(m.do, OK, "trigger that pauses: one Durable Object request");
        assertHeaderAgrees(m, "trigger that pauses");

        // Reading it: no write, no list.
        m = await measured(worker, () => worker.fetchJson(`/runs/${run0}`));
        assert.equal(m.res.status, 200);
        assert.equal(m.res.body.status, "paused");
        assert.equal(m.kv.put, 0, "GET /runs/{id}: puts");
        assert.equal(m.kv.list, 0, "GET /runs/{id}: lists");
        assert.equal(m.kv.delete, 0, "GET /runs/{id}: deletes");
        assert.deepEqual(m.do, OK, "GET /runs/{id}: one Durable Object request");
        assertHeaderAgrees(m, "GET /runs/{id}");

        // The callback that resumes it (gate warm), well within a second of the trigger's write:
        // one write, at most one read, no list — the write made when the second has passed.
        m = await measured(worker, callback(0));
        assert.equal(m.res.status, 200, m.res.text);
        assert.equal(m.res.body.status, "completed", m.res.text);
        assertCallbackAnswer(m.res.body, { status: "completed", run_id: run0, task_id: parked[0].task_id });
        assert.ok(m.kv.get <= 1, `callback resume: at most one get, counted ${m.kv.get}`);
        assert.equal(m.kv.getWithMetadata, 0);
        assert.deepEqual(m.do, OK, "callback resume: one Durable Object request");
        await assertOneWrite(worker, m, "callback resume (warm)");
        assert.equal(storedStatus((await kvCaughtUp(worker, run0)).record), "completed", "the completed run is in KV");

        // A duplicate: noop, no write, no list.
        m = await measured(worker, callback(0));
        assert.deepEqual(m.res.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: run0, task_id: parked[0].task_id }, m.res.text);
        assert.equal(m.kv.put, 0, "duplicate callback: puts");
        assert.equal(m.kv.list, 0, "duplicate callback: lists");
        assert.equal(m.kv.delete, 0, "duplicate callback: deletes");
        assert.deepEqual(m.do, OK, "duplicate callback: one Durable Object request");
        assertHeaderAgrees(m, "duplicate callback (run finished)");

        // Two more paused runs, for the cold steps.
        m = await measured(worker, trigger(graphPause, { seq: 1 }));
        const run1 = m.res.body.run_id;
        assert.equal(m.kv.put, 1);
        assertHeaderAgrees(m, "second trigger that pauses");
        m = await measured(worker, trigger(graphPause, { seq: 2 }));
        const run2 = m.res.body.run_id;
        assert.equal(m.kv.put, 1);
        assertHeaderAgrees(m, "third trigger that pauses");

        // Restart on the same state: every gate is cold and must read the record from KV.
        await worker.stop();
        worker = await startProbedWorker({ port, persistDir });
        // A restarted gate knows when its record was last written (its own storage says) and
        // waits out KV's limit from then, with a margin for a write under way at the crash: past
        // that, a cold resume writes at once, in its own request.
        await sleep(2200);

        m = await measured(worker, callback(1));
        assert.equal(m.res.body.status, "completed", m.res.text);
        assert.equal(m.res.body.run_id, run1);
        assertCallbackAnswer(m.res.body, { status: "completed", run_id: run1, task_id: parked[1].task_id });
        assert.deepEqual(m.kv, { get: 1, getWithMetadata: 0, put: 1, list: 0, delete: 0 }, "callback resume, gate cold: one read, one write");
        assert.deepEqual(m.do, OK, "callback resume (cold): one Durable Object request");
        assertHeaderAgrees(m, "callback resume (cold)");

        m = await measured(worker, callback(1));
        assert.equal(m.res.body.noop, true, m.res.text);
        assert.equal(m.kv.put, 0, "duplicate after a cold resume: puts");
        assert.equal(m.kv.list, 0);
        assertHeaderAgrees(m, "duplicate callback after a cold resume");

        m = await measured(worker, () => worker.fetchJson(`/runs/${run2}`));
        assert.equal(m.res.body.status, "paused", m.res.text);
        assert.deepEqual(m.kv, { get: 1, getWithMetadata: 0, put: 0, list: 0, delete: 0 }, "GET /runs/{id}, gate cold: one read");
        assert.deepEqual(m.do, OK);
        assertHeaderAgrees(m, "GET /runs/{id} (cold)");

        m = await measured(worker, callback(2));
        assert.equal(m.res.body.status, "completed", m.res.text);
        assert.equal(m.kv.put, 1, "callback after a cold read: puts");
        assert.ok(m.kv.get <= 1, `callback after a cold read: at most one get, counted ${m.kv.get}`);
        assert.equal(m.kv.list, 0);
        assertHeaderAgrees(m, "callback after a cold read");

        // A warm gate whose last write is more than a second old writes at once: one put in the
        // callback's own request.
        m = await measured(worker, trigger(graphPause, { seq: 3 }));
        const run3 = m.res.body.run_id;
        assert.equal(m.res.body.status, "paused", m.res.text);
        assert.equal(m.kv.put, 1);
        await sleep(1200);
        m = await measured(worker, callback(3));
        assertCallbackAnswer(m.res.body, { status: "completed", run_id: run3, task_id: parked[3].task_id });
        assert.equal(m.kv.put, 1, "callback more than a second after the last write: puts");
        assert.ok(m.kv.get <= 1);
        assertHeaderAgrees(m, "callback more than a second after the last write");

        // Nothing happened at the bindings outside the measured requests.
        const idle = await measured(worker, () => sleep(500).then(() => worker.fetchJson("/health", { apiKey: null })));
        assertNoWork(idle, "idle half-second and /health");
        assert.equal(counter.hits("/count"), 4, "each resumed run went on downstream once");
    } finally {
        await worker.stop();
        await parker.close();
        await counter.close();
        await rm(persistDir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// 4. Forged or expired callbacks cost no KV and no Durable Object work (ARCHITECTURE.md,
//    "Callback URLs" and "Time"; SECURITY.md: bad token → 401 "nothing read or changed",
//    expired → 200 noop expired).

test("forged and expired callback and heartbeat URLs cost no KV operation and no Durable Object request", async () => {
    const pc = await pendingComponent();
    const worker = await startProbedWorker();
    try {
        const fan = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "a", type: "Component", componentId: `${pc.url}/a` },
                { id: "b", type: "Component", componentId: `${pc.url}/b` },
                { id: "out", type: "Output", data: { a: "{{a.data.v}}", b: "{{b.data.v}}" } },
            ],
            edges: [
                { from: "in", to: "a", type: "PIPE" },
                { from: "in", to: "b", type: "PIPE" },
                { from: "a", to: "out", type: "PIPE" },
                { from: "b", to: "out", type: "PIPE" },
            ],
        };
        const x = await worker.fetchJson("/execute", { body: { graph: fan } });
        assert.equal(x.body.status, "paused", x.text);
        const y = await worker.fetchJson("/execute", { body: { graph: fan } });
        assert.equal(y.body.status, "paused", y.text);
        const xa = callOf(pc, "/a", x.body.run_id);
        const xb = callOf(pc, "/b", x.body.run_id);
        const ya = callOf(pc, "/a", y.body.run_id);
        const A = parseCallbackUrl(xa.callbackUrl);
        const B = parseCallbackUrl(xb.callbackUrl);
        const Y = parseCallbackUrl(ya.callbackUrl);
        // The test mints tokens as the Worker does, so a minted token below means something.
        assert.equal(mintToken("test-secret", A.runId, A.waitId, A.exp), A.token, "mintToken agrees with the Worker");
        assert.notEqual(A.waitId, B.waitId);

        const [mac] = A.token.split(".").slice(1);
        const flipped = A.token.slice(0, -1) + (A.token.endsWith("A") ? "B" : "A");
        const expiredAt = Date.now() - 60_000;
        const expired = mintToken("test-secret", A.runId, A.waitId, expiredAt);
        const forged = [
            ["no token", undefined],
            ["empty token", ""],
            ["garbage token", "garbage"],
            ["malformed token", "123.!!!"],
            ["the token of another wait of the run", B.token],
            ["the token of another run's wait", Y.token],
            ["a tampered mac", flipped],
            ["a later expiry with the original mac", `${A.exp + 86_400_000}.${mac}`],
            ["a token signed with another secret", mintToken("not-the-secret", A.runId, A.waitId, A.exp)],
            ["an expired token signed with another secret", mintToken("not-the-secret", A.runId, A.waitId, expiredAt)],
        ];
        const body = { task_id: xa.taskId, success: true, data: { v: "forged" } };
        for (const heartbeat of [false, true]) {
            const kind = heartbeat ? "heartbeat" : "callback";
            for (const [name, token] of forged) {
                const what = `${kind} with ${name}`;
                const m = await measured(worker, () =>
                    postJson(callbackUrl(A.origin, A.runId, A.waitId, token, { heartbeat }), heartbeat ? { progress: { pct: 99 } } : body),
                );
                assert.equal(m.res.status, 401, `${what}: ${m.res.text}`);
                assert.equal(m.res.body?.success, false, what);
                assert.equal(m.res.body?.error?.code, "unauthorized", `${what}: ${m.res.text}`);
                assertNoWork(m, what);
            }
            const what = `${kind} with a validly signed token past its expiry`;
            const m = await measured(worker, () =>
                postJson(callbackUrl(A.origin, A.runId, A.waitId, expired, { heartbeat }), heartbeat ? { progress: { pct: 99 } } : body),
            );
            assert.equal(m.res.status, 200, `${what}: ${m.res.text}`);
            assert.deepEqual(m.res.body, { success: true, noop: true, reason: "expired" }, what);
            assertNoWork(m, what);
        }

        // Controls: the same probe sees the work of real URLs, and the run was left as it was.
        let m = await measured(worker, () => postHeartbeat(xb.callbackUrl, { progress: { pct: 40 } }));
        assert.equal(m.res.status, 200, `real heartbeat: ${m.res.text}`);
        assert.equal(m.do.fetch, 1, "a real heartbeat is one Durable Object request");
        // One KV write (at once, or when a second has passed since the run's last one).
        await assertOneWrite(worker, m, "real heartbeat");

        m = await measured(worker, () => postCallback(xa.callbackUrl, xa.taskId, { success: true, data: { v: "real-a" } }));
        assert.equal(m.res.status, 200, m.res.text);
        assert.equal(m.res.body.status, "paused", "b is still open");
        // Still waiting on b: paused, not paused again (no new wait), naming the task it ended.
        assertCallbackAnswer(m.res.body, { status: "paused", run_id: x.body.run_id, task_id: xa.taskId, paused_again: undefined }, "real callback a");
        assert.equal(m.do.fetch, 1);
        await assertOneWrite(worker, m, "real callback a");
        const done = await postCallback(xb.callbackUrl, xb.taskId, { success: true, data: { v: "real-b" } });
        assert.equal(done.body.status, "completed", done.text);
        assertCallbackAnswer(done.body, { status: "completed", run_id: x.body.run_id, task_id: xb.taskId });
        const read = await runView(worker, x.body.run_id);
        assert.deepEqual(pick(read.data, ["a", "b"]), { a: "real-a", b: "real-b" }, "no forged request changed the run");
    } finally {
        await worker.stop();
        await pc.close();
    }
});

// ---------------------------------------------------------------------------------------
// 5. x-arcrun-kv-ops on every response (README: "Every response carries x-arcrun-kv-ops"),
//    zeros where nothing was touched, and the binding's count where something was.

test("every response carries a well-formed x-arcrun-kv-ops header that matches the binding", async () => {
    const pc = await pendingComponent();
    const worker = await startProbedWorker({ bindings: { MAX_BODY_BYTES: "4000" } });
    const base = worker.url;
    const raw = (p, init = {}) =>
        fetch(p.startsWith("http") ? p : base + p, init).then(async (res) => ({ status: res.status, headers: res.headers, text: await res.text() }));
    const graph = {
        nodes: [
            { id: "slow", type: "Component", componentId: `${pc.url}/slow` },
            { id: "out", type: "Output" },
        ],
        edges: [{ from: "slow", to: "out", type: "PIPE" }],
    };
    try {
        const paused = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(paused.body.status, "paused", paused.text);
        const call = callOf(pc, "/slow", paused.body.run_id);
        const W = parseCallbackUrl(call.callbackUrl);
        const toCancel = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(toCancel.body.status, "paused");

        const auth = { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" };
        const untouched = [
            ["GET /health", 200, () => raw("/health")],
            ["GET /", 200, () => raw("/")],
            // public/ is served ahead of the Worker; public/_headers gives its files the header.
            ["GET /openapi.json (a static file)", 200, () => raw("/openapi.json")],
            ["HEAD /health", 200, () => raw("/health", { method: "HEAD" })],
            ["GET /nowhere (404)", 404, () => raw("/nowhere")],
            ["GET /runs/{bad id} (404)", 404, () => raw("/runs/not.an.id", { headers: auth })],
            ["GET /execute (405)", 405, () => raw("/execute")],
            ["PUT /execute (405)", 405, () => raw("/execute", { method: "PUT", headers: auth, body: "{}" })],
            ["POST /health (405)", 405, () => raw("/health", { method: "POST", body: "{}" })],
            ["POST /execute without a key (401)", 401, () => raw("/execute", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ graph }) })],
            ["POST /execute with a wrong key (401)", 401, () => raw("/execute", { method: "POST", headers: { ...auth, authorization: "Bearer nope" }, body: JSON.stringify({ graph }) })],
            ["GET /runs/{id} without a key (401)", 401, () => raw(`/runs/${paused.body.run_id}`)],
            ["POST /execute with bad JSON (400)", 400, () => raw("/execute", { method: "POST", headers: auth, body: "{not json" })],
            ["POST /execute with an empty body (400)", 400, () => raw("/execute", { method: "POST", headers: auth, body: "" })],
            ["POST /execute with no graph (400)", 400, () => raw("/execute", { method: "POST", headers: auth, body: "{}" })],
            ["POST /execute over MAX_BODY_BYTES (413)", 413, () => raw("/execute", { method: "POST", headers: auth, body: JSON.stringify({ graph, context: { pad: "x".repeat(5000) } }) })],
            [
                "POST /execute over MAX_BODY_BYTES, streamed without a length (413)",
                413,
                () =>
                    raw("/execute", {
                        method: "POST",
                        headers: auth,
                        duplex: "half",
                        body: new ReadableStream({
                            start(c) {
                                for (let i = 0; i < 5; i++) c.enqueue(new TextEncoder().encode("x".repeat(1000)));
                                c.close();
                            },
                        }),
                    }),
            ],
            ["POST /workflows/resume, disabled (401)", 401, () => raw("/workflows/resume", { method: "POST", headers: auth, body: JSON.stringify({ task_id: call.taskId }) })],
            ["callback with a bad token (401)", 401, () => raw(callbackUrl(W.origin, W.runId, W.waitId, "garbage"), { method: "POST", body: JSON.stringify({ task_id: call.taskId }) })],
            ["callback with no token (401)", 401, () => raw(callbackUrl(W.origin, W.runId, W.waitId), { method: "POST", body: JSON.stringify({ task_id: call.taskId }) })],
            [
                "callback with an expired token (200 noop)",
                200,
                () => raw(callbackUrl(W.origin, W.runId, W.waitId, mintToken("test-secret", W.runId, W.waitId, Date.now() - 1000)), { method: "POST", body: JSON.stringify({ task_id: call.taskId }) }),
            ],
            [
                "heartbeat with an expired token (200 noop)",
                200,
                () => raw(callbackUrl(W.origin, W.runId, W.waitId, mintToken("test-secret", W.runId, W.waitId, Date.now() - 1000), { heartbeat: true }), { method: "POST", body: "{}" }),
            ],
            ["callback with a valid token and a non-object body (400)", 400, () => raw(call.callbackUrl, { method: "POST", body: "[1,2]" })],
            ["POST /execute with an invalid graph (400)", 400, () => raw("/execute", { method: "POST", headers: auth, body: JSON.stringify({ graph: { nodes: [{ id: "a", type: "Component" }], edges: [] } }) })],
        ];
        for (const [what, status, send] of untouched) {
            const m = await measured(worker, send);
            assert.equal(m.res.status, status, `${what}: ${m.res.text}`);
            assert.equal(m.res.headers.get(KV_HEADER), ZERO_KV, `${what}: ${KV_HEADER}`);
            assert.deepEqual(m.kv, { get: 0, getWithMetadata: 0, put: 0, list: 0, delete: 0 }, `${what}: KV at the binding`);
        }

        // Requests that reach storage: well-formed, and what the binding counted.
        const touched = [
            ["POST /execute (completed)", 200, () => raw("/execute", { method: "POST", headers: auth, body: JSON.stringify({ graph: { nodes: [{ id: "p", type: "Component", componentId: "comp_passthrough" }], edges: [] } }) }), { writes: 1, lists: 0 }],
            ["POST /execute (paused)", 200, () => raw("/execute", { method: "POST", headers: auth, body: JSON.stringify({ graph }) }), { writes: 1, lists: 0 }],
            ["GET /runs/{id}", 200, () => raw(`/runs/${paused.body.run_id}`, { headers: auth }), { writes: 0, lists: 0 }],
            ["GET /runs/{unknown id} (404)", 404, () => raw(`/runs/${"0".repeat(32)}`, { headers: auth }), { writes: 0, lists: 0 }],
            // The listing is one KV list per page (README "Many runs"): the only route that lists.
            ["GET /runs (the listing)", 200, () => raw("/runs", { headers: auth }), { writes: 0, lists: 1 }],
            ["heartbeat", 200, () => raw(heartbeatUrlOf(call.callbackUrl), { method: "POST", body: JSON.stringify({ progress: { pct: 1 } }) }), { writes: 1, lists: 0 }],
            ["callback with a wrong task_id (409)", 409, () => raw(call.callbackUrl, { method: "POST", body: JSON.stringify({ task_id: "someone-else", success: true }) }), { writes: 0, lists: 0 }],
            // Less than a second after the heartbeat's write: none in the request, one a moment later.
            ["callback (resumes)", 200, () => raw(call.callbackUrl, { method: "POST", body: JSON.stringify({ task_id: call.taskId, success: true }) }), { writes: "paced", lists: 0 }],
            ["callback again (noop)", 200, () => raw(call.callbackUrl, { method: "POST", body: JSON.stringify({ task_id: call.taskId, success: true }) }), { writes: 0, lists: 0 }],
            ["POST /runs/{id}/cancel", 200, () => raw(`/runs/${toCancel.body.run_id}/cancel`, { method: "POST", headers: auth }), { writes: 1, lists: 0 }],
            ["POST /runs/{id}/cancel again (409)", 409, () => raw(`/runs/${toCancel.body.run_id}/cancel`, { method: "POST", headers: auth }), { writes: 0, lists: 0 }],
        ];
        for (const [what, status, send, expected] of touched) {
            const m = await measured(worker, send);
            assert.equal(m.res.status, status, `${what}: ${m.res.text}`);
            if (expected.writes === "paced") {
                await assertOneWrite(worker, m, what);
                continue;
            }
            const header = assertHeaderAgrees(m, what);
            assert.equal(m.kv.put + m.kv.delete, expected.writes, `${what}: writes, the request's and its alarm's`);
            assert.equal(header.lists, expected.lists, `${what}: lists`);
        }
    } finally {
        await worker.stop();
        await pc.close();
    }
});

// ---------------------------------------------------------------------------------------
// 6. Secret rotation (SECURITY.md, "Rotating secrets").

test("CALLBACK_SECRET rotation: old URLs still resume through CALLBACK_SECRET_PREVIOUS, new URLs are signed with the new secret", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-guarantee-rotate-"));
    const port = await freePort();
    const pc = await pendingComponent();
    const graph = {
        nodes: [
            { id: "work", type: "Component", componentId: `${pc.url}/work` },
            { id: "out", type: "Output", data: { v: "{{work.data.v}}" } },
        ],
        edges: [{ from: "work", to: "out", type: "PIPE" }],
    };
    let w = await startWorker({ port, persistDir: dir, bindings: { CALLBACK_SECRET: "old" } });
    try {
        const a = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(a.body.status, "paused", a.text);
        const callA = callOf(pc, "/work", a.body.run_id);
        const A = parseCallbackUrl(callA.callbackUrl);
        assert.equal(A.token, mintToken("old", A.runId, A.waitId, A.exp), "before rotating, URLs are signed with the old secret");
        await w.stop();

        w = await startWorker({ port, persistDir: dir, bindings: { CALLBACK_SECRET: "new", CALLBACK_SECRET_PREVIOUS: "old" } });
        const b = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(b.body.status, "paused", b.text);
        const callB = callOf(pc, "/work", b.body.run_id);
        const B = parseCallbackUrl(callB.callbackUrl);
        assert.equal(B.token, mintToken("new", B.runId, B.waitId, B.exp), "after rotating, new URLs are signed with the new secret");
        assert.notEqual(B.token, mintToken("old", B.runId, B.waitId, B.exp), "and not with the old one");

        // A URL for B signed with the old secret verifies too while rotating (the previous secret
        // is accepted), but one signed with neither does not.
        const stranger = await postJson(callbackUrl(B.origin, B.runId, B.waitId, mintToken("other", B.runId, B.waitId, B.exp)), { task_id: callB.taskId, success: true });
        assert.equal(stranger.status, 401, stranger.text);

        const ra = await postCallback(callA.callbackUrl, callA.taskId, { success: true, data: { v: "A" } });
        assert.equal(ra.status, 200, `the URL handed out before rotating: ${ra.text}`);
        assert.equal(ra.body.resumed, true);
        assert.equal(ra.body.status, "completed");
        assertCallbackAnswer(ra.body, { status: "completed", run_id: a.body.run_id, task_id: callA.taskId });
        assert.equal((await runView(w, a.body.run_id)).data.v, "A");
        const rb = await postCallback(callB.callbackUrl, callB.taskId, { success: true, data: { v: "B" } });
        assert.equal(rb.status, 200, rb.text);
        assert.equal(rb.body.status, "completed");
        assertCallbackAnswer(rb.body, { status: "completed", run_id: b.body.run_id, task_id: callB.taskId });
        assert.equal((await runView(w, b.body.run_id)).data.v, "B");
        await w.stop();

        // With the previous secret retired, a URL signed with the old one no longer verifies.
        w = await startWorker({ port, persistDir: dir, bindings: { CALLBACK_SECRET: "new" } });
        const c = await w.fetchJson("/execute", { body: { graph } });
        const callC = callOf(pc, "/work", c.body.run_id);
        const C = parseCallbackUrl(callC.callbackUrl);
        const oldSigned = await postJson(callbackUrl(C.origin, C.runId, C.waitId, mintToken("old", C.runId, C.waitId, C.exp)), { task_id: callC.taskId, success: true });
        assert.equal(oldSigned.status, 401, oldSigned.text);
        assert.equal((await w.fetchJson(`/runs/${C.runId}`)).body.status, "paused", "the refused callback changed nothing");
    } finally {
        await w.stop();
        await pc.close();
        await rm(dir, { recursive: true, force: true });
    }
});

test("an API key removed from API_KEY_HASHES can no longer read its runs, which still complete through their callbacks", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-guarantee-keys-"));
    const port = await freePort();
    const pc = await pendingComponent();
    const graph = {
        nodes: [
            { id: "work", type: "Component", componentId: `${pc.url}/work` },
            { id: "out", type: "Output", data: { v: "{{work.data.v}}" } },
        ],
        edges: [{ from: "work", to: "out", type: "PIPE" }],
    };
    const both = `${TEST_API_KEY_HASH},${sha256("retired-key")}`;
    let w = await startWorker({ port, persistDir: dir, bindings: { API_KEY_HASHES: both } });
    try {
        const retired = await w.fetchJson("/execute", { body: { graph }, apiKey: "retired-key" });
        assert.equal(retired.body.status, "paused", retired.text);
        const kept = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(kept.body.status, "paused", kept.text);
        assert.equal((await w.fetchJson(`/runs/${retired.body.run_id}`, { apiKey: "retired-key" })).status, 200, "readable before the key is retired");
        await w.stop();

        w = await startWorker({ port, persistDir: dir, bindings: { API_KEY_HASHES: TEST_API_KEY_HASH } });
        const denied = await w.fetchJson(`/runs/${retired.body.run_id}`, { apiKey: "retired-key" });
        assert.equal(denied.status, 401, denied.text);
        assert.equal(denied.body.error.code, "unauthorized");
        const triggerDenied = await w.fetchJson("/execute", { body: { graph }, apiKey: "retired-key" });
        assert.equal(triggerDenied.status, 401, "the retired key cannot trigger either");
        const cancelDenied = await w.fetchJson(`/runs/${retired.body.run_id}/cancel`, { method: "POST", apiKey: "retired-key" });
        assert.equal(cancelDenied.status, 401, "nor cancel");
        // The remaining key does not inherit the run.
        assert.equal((await w.fetchJson(`/runs/${retired.body.run_id}`)).status, 404);

        const callR = callOf(pc, "/work", retired.body.run_id);
        const r = await postCallback(callR.callbackUrl, callR.taskId, { success: true, data: { v: "retired" } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.resumed, true);
        assert.equal(r.body.status, "completed", "the retired key's run still completes via its callback");
        assertCallbackAnswer(r.body, { status: "completed", run_id: retired.body.run_id, task_id: callR.taskId });
        // Kept under the retired key's own prefix: `runs/{owner tag}/{run_id}`. No key can read it
        // through the API any more, so it is read in KV (written within about a second).
        const retiredTag = sha256("retired-key").slice(0, 16);
        assert.ok(retired.body.run_id.startsWith(`${retiredTag}-`), retired.body.run_id);
        const stored = await waitUntil("the retired key's completed run in KV", async () => {
            const record = (await w.kvSnapshot({ json: true })).get(`runs/${retiredTag}/${retired.body.run_id}`);
            return storedStatus(record) === "completed" ? record : null;
        }, { timeoutMs: 8000, everyMs: 100 });
        assert.ok(stored, "the finished run is still stored (it expires normally)");
        assert.equal(stored.status.completed.output.v, "retired");

        const callK = callOf(pc, "/work", kept.body.run_id);
        const k = await postCallback(callK.callbackUrl, callK.taskId, { success: true, data: { v: "kept" } });
        assert.equal(k.body.status, "completed", k.text);
        assertCallbackAnswer(k.body, { status: "completed", run_id: kept.body.run_id, task_id: callK.taskId });
        const readKept = await w.fetchJson(`/runs/${kept.body.run_id}`);
        assert.equal(readKept.status, 200);
        assert.equal(readKept.body.status, "completed");
        assert.equal(readKept.body.data.v, "kept");
    } finally {
        await w.stop();
        await pc.close();
        await rm(dir, { recursive: true, force: true });
    }
});

// ---------------------------------------------------------------------------------------
// 7. Redaction in callback responses, and nothing of a request or a run in the Worker's logs
//    (SECURITY.md, "What is redacted": "The Worker logs no request or run data").

test("callback answers redact credentials, and the Worker's logs hold no request or run data", async () => {
    const lines = [];
    class CollectingLog extends Log {
        log(message) {
            lines.push(String(message));
        }
    }
    const collect = (stream) => {
        stream.setEncoding("utf8");
        stream.on("data", (chunk) => lines.push(chunk));
    };
    const SECRETS = {
        api_key: "sk-live-CTX-API-KEY-7f3a",
        password: "hunter2-CTX-PASSWORD-91b",
        authorization: "Bearer CTX-AUTH-HEADER-c0de",
        db_password: "OUT-DB-PASSWORD-5e5e",
        x_api_key: "OUT-X-API-KEY-a1a1",
        access_token: "CB-ACCESS-TOKEN-beef",
        client_secret: "CB-CLIENT-SECRET-f00d",
    };
    const pc = await pendingComponent();
    const after = await startComponent(() => ({ db_password: SECRETS.db_password, "X-API-Key": SECRETS.x_api_key, result: "after-ok" }));
    const worker = await startProbedWorker({
        miniflare: { log: new CollectingLog(LogLevel.VERBOSE), handleRuntimeStdio: (out, err) => (collect(out), collect(err)), logRequests: false },
    });
    try {
        const graph = {
            id: "redaction",
            name: "credentials everywhere",
            nodes: [
                { id: "in", type: "Input" },
                { id: "slow", type: "Component", componentId: `${pc.url}/slow` },
                { id: "after", type: "Component", componentId: `${after.url}/after` },
                {
                    id: "out",
                    type: "Output",
                    data: { api_key: "{{api_key}}", creds: { password: "{{after.db_password}}", client_secret: "{{slow.data.client_secret}}" }, summary: "{{slow.data.summary}}" },
                },
            ],
            edges: [
                { from: "in", to: "slow", type: "PIPE" },
                { from: "slow", to: "after", type: "ON_SUCCESS" },
                { from: "after", to: "out", type: "PIPE" },
            ],
        };
        const context = { api_key: SECRETS.api_key, nested: { password: SECRETS.password }, headers: { authorization: SECRETS.authorization }, max_tokens: 64 };
        const t = await worker.fetchJson("/execute", { body: { graph, context } });
        assert.equal(t.body.status, "paused", t.text);
        const call = callOf(pc, "/slow", t.body.run_id);
        // The component got the real values (so they did flow through the run).
        assert.equal(call.body.api_key, SECRETS.api_key);
        assert.equal(call.body.nested.password, SECRETS.password);
        assert.equal(call.body.headers.authorization, SECRETS.authorization);

        const r = await postCallback(call.callbackUrl, call.taskId, {
            success: true,
            data: { access_token: SECRETS.access_token, client_secret: SECRETS.client_secret, summary: "fine" },
        });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "completed", r.text);
        assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id, task_id: call.taskId });
        // Downstream got them intact too.
        const downstream = after.requests()[0].body;
        assert.equal(downstream.api_key, SECRETS.api_key);
        assert.equal(downstream.data.client_secret, SECRETS.client_secret);

        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        for (const [name, shown] of [
            ["trigger answer", t.text],
            ["callback answer", r.text],
            ["GET /runs/{id}", read.text],
        ]) {
            for (const [field, secret] of Object.entries(SECRETS)) {
                assert.ok(!shown.includes(secret), `${name} shows ${field}'s value ${secret}`);
            }
            assert.ok(!shown.includes("?token="), `${name} shows a callback token`);
        }
        // The run's output, read where the run is shown: redacted there.
        const data = read.body.data;
        assert.equal(data.api_key, "[redacted]");
        assert.equal(data.nested.password, "[redacted]");
        assert.equal(data.headers.authorization, "[redacted]");
        assert.equal(data.db_password, "[redacted]");
        assert.equal(data["X-API-Key"], "[redacted]");
        assert.equal(data.creds.password, "[redacted]");
        assert.equal(data.creds.client_secret, "[redacted]");
        assert.equal(data.data.access_token, "[redacted]");
        assert.equal(data.summary, "fine", "ordinary fields are kept");
        assert.equal(data.max_tokens, 64, "look-alike fields are kept");
        assert.equal(data.result, "after-ok");

        // The callback's change reaches KV within about a second (a write that logs a line).
        await kvCaughtUp(worker, t.body.run_id);
        // The logs: a marker written through the Worker's console must arrive (so the collector
        // works and everything logged before it has been read), and nothing of the run may.
        const marker = `probe-log-marker-${Date.now()}`;
        const logged = await worker.fetchJson(`/__probe/log?m=${marker}`, { method: "POST", apiKey: null, body: "{}" });
        assert.equal(logged.status, 200);
        await waitUntil("the marker in the Worker's logs", () => lines.join("").split(marker).length - 1 >= 2, { timeoutMs: 10_000, everyMs: 50 });
        const all = lines.join("\n");
        for (const [field, secret] of Object.entries(SECRETS)) {
            assert.ok(!all.includes(secret), `the logs hold ${field}'s value ${secret}`);
        }
        // The run id appears only in the segment lines an operator reads (README, "Logs"):
        // ids, kinds, statuses and counts, nothing else.
        // ids, kinds, statuses and counts, nothing else: a line per segment, and a line per
        // write of the run's record to KV (README, "Logs").
        const runLines = all
            .split("\n")
            .filter((l) => l.includes(t.body.run_id))
            .map((l) => JSON.parse(l.slice(l.indexOf("{"), l.lastIndexOf("}") + 1)));
        assert.deepEqual([...new Set(runLines.map((l) => l.event))].sort(), ["alarm", "segment", "write"], all);
        const segments = runLines.filter((l) => l.event === "segment");
        assert.deepEqual(segments.map((l) => l.kind), ["trigger", "callback"], all);
        for (const line of segments) {
            assert.deepEqual(Object.keys(line).sort(), ["calls", "do", "duration_ms", "event", "kind", "kv", "run_id", "status"]);
        }
        const writes = runLines.filter((l) => l.event === "write");
        // The trigger's write and the callback's — one, when the callback came before the alarm
        // that writes the trigger's change had run (that write then holds both).
        assert.ok(writes.length === 1 || writes.length === 2, `the trigger's write and the callback's: ${all}`);
        for (const line of writes) {
            assert.deepEqual(Object.keys(line).sort(), ["duration_ms", "event", "kept_requests", "kv_writes", "run_id"]);
        }
        for (const line of runLines.filter((l) => l.event === "alarm")) {
            assert.deepEqual(Object.keys(line).sort(), ["do", "duration_ms", "event", "kv", "run_id"]);
        }
        for (const [what, value] of [
            ["the task id", call.taskId],
            ["the callback token", parseCallbackUrl(call.callbackUrl).token],
            ["the API key", TEST_API_KEY],
            ["the workflow name", "credentials everywhere"],
            ["a context value", "after-ok"],
        ]) {
            assert.ok(!all.includes(value), `the logs hold ${what} (${value})`);
        }
    } finally {
        await worker.stop();
        await pc.close();
        await after.close();
    }
});

// ---------------------------------------------------------------------------------------
// 8. A failing component's error text is truncated (SECURITY.md: "truncated to 200 characters
//    for HTTP errors"; README: non-2xx is a failure with a "short error").

test("a component's HTTP error body is kept to at most 200 characters in the run's error", async () => {
    // 5,000 characters in which every 10-character block is distinct, so any excerpt is
    // recognisable: "000000000|000000001|…".
    const body5000 = Array.from({ length: 500 }, (_, i) => `${String(i).padStart(9, "0")}|`).join("");
    assert.equal(body5000.length, 5000);
    const euro5000 = "€".repeat(5000);
    const bad = await startComponent((_, req) => {
        if (req.url === "/ascii") return { status: 500, body: body5000, headers: { "content-type": "text/plain" } };
        if (req.url === "/multibyte") return { status: 502, body: euro5000, headers: { "content-type": "text/plain" } };
        if (req.url === "/not-json") return { status: 200, body: body5000, headers: { "content-type": "text/plain" } };
        return {};
    });
    const worker = await startWorker();
    /** How many leading characters of `source` appear in `text` (the longest such prefix). */
    const keptPrefix = (text, source) => {
        let n = 0;
        while (n < source.length && text.includes(source.slice(0, n + 1))) n++;
        return n;
    };
    try {
        for (const [p, source, status] of [
            ["/ascii", body5000, 500],
            ["/not-json", body5000, 200],
        ]) {
            const graph = { nodes: [{ id: "c", type: "Component", componentId: `${bad.url}${p}` }], edges: [] };
            const r = await worker.fetchJson("/execute", { body: { graph } });
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.status, "failed", r.text);
            assert.equal(r.body.error.node_id, "c");
            const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
            const traceErrors = read.body.trace.filter((e) => e.node_id === "c" && e.error).map((e) => e.error);
            assert.equal(traceErrors.length, 1, `${p}: the failed node's trace entry has its error`);
            for (const [where, message] of [
                ["trigger answer", r.body.error.message],
                ["GET /runs/{id}", read.body.error.message],
                ["trace", traceErrors[0]],
            ]) {
                assert.equal(typeof message, "string", `${p} ${where}`);
                assert.equal(keptPrefix(message, source), 200, `${p} ${where}: exactly the first 200 characters of the body are kept: ${message}`);
                assert.ok(!message.includes(source.slice(200, 210)), `${p} ${where}: nothing past the 200th character`);
                if (status === 500) assert.match(message, /HTTP 500/, `${p} ${where} names the status`);
            }
        }
        const graph = { nodes: [{ id: "c", type: "Component", componentId: `${bad.url}/multibyte` }], edges: [] };
        const r = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(r.body.status, "failed", r.text);
        const message = r.body.error.message;
        const kept = keptPrefix(message, euro5000);
        assert.ok(kept >= 1 && kept <= 200, `multibyte: between 1 and 200 characters of the body are kept, got ${kept}`);
        assert.ok(!message.includes("\uFFFD"), "multibyte: no character is cut in half");
        assert.match(message, /HTTP 502/);
    } finally {
        await worker.stop();
        await bad.close();
    }
});
