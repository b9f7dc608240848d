// Many runs and many items, end to end in workerd: `GET /runs` (paging, filtering, per-key
// isolation, its KV cost), `Idempotency-Key` on triggers (20 at once start one run), FOREACH
// `max_concurrency` and failure tolerance, `POST /runs/{id}/retry` (only what failed runs again,
// with fresh wait ids), and stored workflows (`/workflows/{name}`: put, get, list, delete,
// execute; a run keeps the graph it started with).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

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
import { runView, kvCaughtUp, listedRuns, assertCallbackAnswer, assertCallbackAccepted } from "./settle.mjs";


/** Never starts a run nor stores a workflow: it must see none of the others' things. */
const OTHER_KEY = "other-key";
/** Used only by the listing test, so that its listing holds exactly the runs it started. */
const LIST_KEY = "list-key";
/** A second key for idempotency: the same Idempotency-Key under it is a different request. */
const IDEM_KEY_B = "idem-key-b";

let worker;
let echo; // answers its input back (minus the callback URL), counts hits per path
let pend; // answers pending; a test calls back
let judge; // FOREACH item component: fails the items marked `fail`

before(async () => {
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body ?? {};
        return { ...rest, echoed: true };
    });
    pend = await pendingComponent();
    judge = await startComponent((body) => {
        const item = body?.item ?? {};
        if (item.fail) return { success: false, error: `boom ${body.index}` };
        return { v: item.i, index: body.index };
    });
    worker = await startWorker({
        bindings: {
            API_KEY_HASHES: [TEST_API_KEY_HASH, sha256hex(OTHER_KEY), sha256hex(LIST_KEY), sha256hex(IDEM_KEY_B)].join(","),
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
        await judge?.close();
    }
}, { timeout: 120_000 });

/** `node[item]:status` of each trace entry. */
/** The named keys of `obj` (an Output node's data also carries its input, so tests look at what they set). */
const pick = (obj, keys) => Object.fromEntries(keys.map((k) => [k, obj?.[k]]));

const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);

/** `{runId, waitId, token}` of a callback URL the Worker handed out. */
function parseCallbackUrl(callbackUrl) {
    const u = new URL(callbackUrl);
    const [, kind, runId, waitId] = u.pathname.split("/");
    assert.equal(kind, "callbacks", callbackUrl);
    return { runId, waitId, token: u.searchParams.get("token") };
}

/** Every run a key sees, following next_cursor; also checks each page's KV cost. */
async function listAll(query, apiKey, { limit = 1000 } = {}) {
    await listedRuns(worker, { apiKey }); // the runs just answered reach KV first
    const runs = [];
    const pages = [];
    let cursor;
    for (let i = 0; i < 100; i++) {
        const qs = new URLSearchParams({ ...query, limit: String(limit) });
        if (cursor) qs.set("cursor", cursor);
        const r = await worker.fetchJson(`/runs?${qs}`, { apiKey });
        assert.equal(r.status, 200, `GET /runs?${qs}: ${r.text}`);
        assert.equal(r.body.success, true, r.text);
        assert.ok(Array.isArray(r.body.runs), r.text);
        const ops = kvOps(r);
        assert.equal(ops.reads, 0, `listing reads no records: ${r.headers.get("x-arcrun-kv-ops")}`);
        assert.equal(ops.writes, 0, `listing writes nothing: ${r.headers.get("x-arcrun-kv-ops")}`);
        assert.ok(ops.lists >= 1, `listing costs a list operation: ${r.headers.get("x-arcrun-kv-ops")}`);
        assert.ok(r.body.runs.length <= limit, `page of ${r.body.runs.length} runs with limit=${limit}`);
        pages.push(r.body.runs);
        runs.push(...r.body.runs);
        cursor = r.body.next_cursor;
        if (cursor === undefined) return { runs, pages };
        assert.equal(typeof cursor, "string", r.text);
    }
    throw new Error("next_cursor never went away");
}

// ---------------------------------------------------------------------------------------
// GET /runs

test("GET /runs pages newest first across cursors, filters by status, shows open waits, and only to its key", { timeout: 60_000 }, async () => {
    const exec = async (graph, label) => {
        const r = await worker.fetchJson("/execute", { body: { graph, context: { label } }, apiKey: LIST_KEY });
        assert.equal(r.status, 200, `${label}: ${r.text}`);
        return r.body;
    };
    const quick = (label) => ({ nodes: [{ id: "c", type: "Component", componentId: `${echo.url}/list-${label}` }], edges: [] });
    const slow = (label) => ({ nodes: [{ id: "in", type: "Input" }, { id: "s", type: "Component", componentId: `${pend.url}/list-${label}` }], edges: [{ from: "in", to: "s", type: "PIPE" }] });
    const twoWaits = (label) => ({
        nodes: [
            { id: "in", type: "Input" },
            { id: "a", type: "Component", componentId: `${pend.url}/list-${label}-a` },
            { id: "b", type: "Component", componentId: `${pend.url}/list-${label}-b` },
        ],
        edges: [{ from: "in", to: "a", type: "PIPE" }, { from: "in", to: "b", type: "PIPE" }],
    });
    const failing = await startComponent(() => ({ success: false, error: "nope" }));
    try {
        // Oldest first: c1, p1, c2, f1, c3, p2 (two waits), c4.
        const created = [];
        const add = async (name, graph, expect) => {
            const body = await exec(graph, name);
            assert.equal(body.status, expect, `${name}: ${JSON.stringify(body)}`);
            created.push({ name, run_id: body.run_id, status: expect });
            await sleep(5); // distinct start times
        };
        await add("c1", quick("c1"), "completed");
        await add("p1", slow("p1"), "paused");
        await add("c2", quick("c2"), "completed");
        await add("f1", { nodes: [{ id: "f", type: "Component", componentId: failing.url }], edges: [] }, "failed");
        await add("c3", quick("c3"), "completed");
        await add("p2", twoWaits("p2"), "paused");
        await add("c4", quick("c4"), "completed");
        const byId = new Map(created.map((c) => [c.run_id, c]));
        const newestFirst = created.slice().reverse();
        const names = (runs) => runs.map((r) => byId.get(r.run_id)?.name ?? `foreign:${r.run_id}`);

        // Unfiltered, three at a time: 3 + 3 + 1, the last page without next_cursor.
        const all = await listAll({}, LIST_KEY, { limit: 3 });
        assert.deepEqual(all.pages.map((p) => p.length), [3, 3, 1]);
        assert.deepEqual(names(all.runs), newestFirst.map((c) => c.name), "every run once, newest first");
        for (let i = 1; i < all.runs.length; i++) {
            assert.ok(all.runs[i - 1].created_at >= all.runs[i].created_at, `created_at descends: ${JSON.stringify(all.runs)}`);
        }
        for (const run of all.runs) {
            const c = byId.get(run.run_id);
            assert.deepEqual(Object.keys(run).sort(), ["created_at", "open_waits", "run_id", "status", "updated_at", "workflow"], JSON.stringify(run));
            assert.equal(run.status, c.status, c.name);
            assert.equal(run.workflow, null, `${c.name} was started from /execute`);
            assert.equal(run.open_waits, { p1: 1, p2: 2 }[c.name] ?? 0, `${c.name} open_waits`);
            assert.ok(Number.isInteger(run.created_at) && run.updated_at >= run.created_at, JSON.stringify(run));
            // The listing agrees with the run's own record.
            const detail = await worker.fetchJson(`/runs/${run.run_id}`, { apiKey: LIST_KEY });
            assert.equal(detail.body.status, run.status);
            assert.equal(detail.body.created_at, run.created_at);
            assert.equal(detail.body.updated_at, run.updated_at);
            assert.equal(detail.body.waits.length, run.open_waits);
        }

        // One page holding everything has no next_cursor; so has limit=7 exactly.
        for (const limit of [1000, 7]) {
            const r = await worker.fetchJson(`/runs?limit=${limit}`, { apiKey: LIST_KEY });
            assert.deepEqual(names(r.body.runs), newestFirst.map((c) => c.name), `limit=${limit}`);
            assert.equal("next_cursor" in r.body, false, `limit=${limit}: ${r.text}`);
        }
        // The default limit (50) covers these seven.
        const dflt = await worker.fetchJson("/runs", { apiKey: LIST_KEY });
        assert.equal(dflt.body.runs.length, 7);
        assert.equal("next_cursor" in dflt.body, false);

        // Filters, paged too.
        const expectFiltered = async (status, want, limit) => {
            const got = await listAll({ status }, LIST_KEY, { limit });
            assert.deepEqual(names(got.runs), want, `status=${status} limit=${limit}`);
            return got;
        };
        const paused = await expectFiltered("paused", ["p2", "p1"], 50);
        assert.deepEqual(paused.runs.map((r) => r.open_waits), [2, 1]);
        const pf = await expectFiltered("paused,failed", ["p2", "f1", "p1"], 2);
        assert.deepEqual(pf.pages.map((p) => p.length), [2, 1]);
        await expectFiltered("failed,paused", ["p2", "f1", "p1"], 50);
        await expectFiltered("failed", ["f1"], 50);
        const completed = await expectFiltered("completed", ["c4", "c3", "c2", "c1"], 2);
        assert.deepEqual(completed.pages.map((p) => p.length), [2, 2], "the second page ends the listing without a cursor");
        await expectFiltered("running", [], 50);
        await expectFiltered("cancelled", [], 50);
        await expectFiltered("running,paused,completed,failed,cancelled", newestFirst.map((c) => c.name), 4);

        // The API key may come in X-Arcrun-API-Key too.
        const viaHeader = await worker.fetchJson("/runs?status=failed", { apiKey: null, headers: { "x-arcrun-api-key": LIST_KEY } });
        assert.equal(viaHeader.status, 200, viaHeader.text);
        assert.deepEqual(names(viaHeader.body.runs), ["f1"]);
        const noKey = await worker.fetchJson("/runs", { apiKey: null });
        assert.equal(noKey.status, 401, noKey.text);

        // Bad queries: 400 with a JSON error.
        const forged = Buffer.from(JSON.stringify({ c: "x", o: 99999 })).toString("base64url");
        for (const qs of ["status=sleeping", "status=paused,bogus", "limit=0", "limit=1001", "limit=x", "limit=2.5", "limit=-1", "cursor=!!!", `cursor=${forged}`]) {
            const r = await worker.fetchJson(`/runs?${qs}`, { apiKey: LIST_KEY });
            assert.equal(r.status, 400, `${qs}: ${r.status} ${r.text}`);
            assert.equal(r.body.success, false, qs);
            assert.equal(typeof r.body.error?.code, "string", `${qs}: ${r.text}`);
            assert.equal(typeof r.body.error?.message, "string", `${qs}: ${r.text}`);
        }
        // A limit of 1000 is allowed.
        assert.equal((await worker.fetchJson("/runs?limit=1000", { apiKey: LIST_KEY })).status, 200);

        // Another key sees none of them.
        const others = await worker.fetchJson("/runs?limit=1000", { apiKey: OTHER_KEY });
        assert.equal(others.status, 200, others.text);
        assert.deepEqual(others.body.runs, []);
        assert.equal("next_cursor" in others.body, false);
        const othersPaused = await worker.fetchJson("/runs?status=paused", { apiKey: OTHER_KEY });
        assert.deepEqual(othersPaused.body.runs, []);
        // Nor can it read one, nor resume a cursor of ours into our runs.
        for (const c of created) {
            const r = await worker.fetchJson(`/runs/${c.run_id}`, { apiKey: OTHER_KEY });
            assert.equal(r.status, 404, `${c.name}: ${r.text}`);
        }
        const firstPage = await worker.fetchJson("/runs?limit=3", { apiKey: LIST_KEY });
        const stolen = await worker.fetchJson(`/runs?limit=3&cursor=${encodeURIComponent(firstPage.body.next_cursor)}`, { apiKey: OTHER_KEY });
        assert.ok(stolen.status === 400 || (stolen.status === 200 && stolen.body.runs.length === 0), `another key with our cursor: ${stolen.text}`);
        // The main test key sees none of the list key's runs either.
        const main = await worker.fetchJson("/runs?limit=1000");
        assert.equal(main.body.runs.filter((r) => byId.has(r.run_id)).length, 0);

        // A change of state shows in the listing: p1 resumes and completes.
        const p1 = created.find((c) => c.name === "p1");
        const call = pend.on("/list-p1")[0];
        const done = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: 1 } });
        assert.equal(done.body.status, "completed", done.text);
        assertCallbackAnswer(done.body, { status: "completed", run_id: p1.run_id, task_id: call.taskId });
        // The listing is read from KV, which the run's record reaches within about a second.
        await kvCaughtUp(worker, p1.run_id, { apiKey: LIST_KEY });
        const after = await listAll({}, LIST_KEY, { limit: 3 });
        const p1Entry = after.runs.find((r) => r.run_id === p1.run_id);
        const p1Before = all.runs.find((r) => r.run_id === p1.run_id);
        assert.equal(p1Entry.status, "completed");
        assert.equal(p1Entry.open_waits, 0);
        assert.equal(p1Entry.created_at, p1Before.created_at);
        assert.ok(p1Entry.updated_at > p1Before.updated_at, `updated_at moved on: ${p1Before.updated_at} → ${p1Entry.updated_at}`);
        assert.deepEqual(names(after.runs), newestFirst.map((c) => c.name), "resuming does not reorder");
        await expectFiltered("paused", ["p2"], 50);
        await expectFiltered("completed", ["c4", "c3", "c2", "p1", "c1"], 50);

        // A cancelled run shows as cancelled, with no open waits, newest first.
        await add("x1", slow("x1"), "paused");
        const x1 = created.find((c) => c.name === "x1");
        byId.set(x1.run_id, x1);
        const cancel = await worker.fetchJson(`/runs/${x1.run_id}/cancel`, { method: "POST", apiKey: LIST_KEY });
        assert.equal(cancel.status, 200, cancel.text);
        await kvCaughtUp(worker, x1.run_id, { apiKey: LIST_KEY });
        const cancelled = await expectFiltered("cancelled", ["x1"], 50);
        assert.equal(cancelled.runs[0].open_waits, 0);
        await expectFiltered("paused,cancelled", ["x1", "p2"], 1);
        const everything = await listAll({}, LIST_KEY, { limit: 3 });
        assert.deepEqual(names(everything.runs), ["x1", ...newestFirst.map((c) => c.name)]);
    } finally {
        await failing.close();
    }
});

// ---------------------------------------------------------------------------------------
// Idempotency-Key

test("20 concurrent triggers with one Idempotency-Key start exactly one run; another body is 422; another API key starts its own", { timeout: 60_000 }, async () => {
    const slow = await startComponent(async (body) => {
        await sleep(300);
        return { got: body.n, echoed: true };
    });
    try {
        const graph = { nodes: [{ id: "in", type: "Input" }, { id: "c", type: "Component", componentId: `${slow.url}/idem` }], edges: [{ from: "in", to: "c", type: "PIPE" }] };
        const body = { graph, context: { n: 1 } };
        const key = `idem-${Date.now()}`;
        const beforeList = (await listedRuns(worker)).body.runs;

        const answers = await Promise.all(
            Array.from({ length: 20 }, () => worker.fetchJson("/execute", { body, headers: { "Idempotency-Key": key } })),
        );
        for (const a of answers) assert.equal(a.status, 200, a.text);
        const ids = new Set(answers.map((a) => a.body.run_id));
        assert.equal(ids.size, 1, `one run for all 20: ${[...ids].join(", ")}`);
        const [runId] = ids;
        assert.equal(slow.hits("/idem"), 1, "the component was called once");
        const replays = answers.filter((a) => a.headers.get("idempotent-replayed") === "true");
        assert.equal(replays.length, 19, "all but the request that started the run are replays");
        const original = answers.find((a) => a.headers.get("idempotent-replayed") !== "true");
        assert.equal(original.body.status, "completed", original.text);
        assert.deepEqual(original.body.data, { got: 1, echoed: true });
        for (const r of replays) {
            assert.ok(["running", "completed"].includes(r.body.status), r.text);
            assert.equal(r.body.run_id, runId);
        }

        // The listing shows one new run.
        const afterList = (await listedRuns(worker)).body.runs;
        const fresh = afterList.filter((r) => !beforeList.some((b) => b.run_id === r.run_id));
        assert.deepEqual(fresh.map((r) => r.run_id), [runId]);
        assert.equal(afterList[0].run_id, runId, "newest first");

        // A later repeat answers the run's current view.
        const again = await worker.fetchJson("/execute", { body, headers: { "Idempotency-Key": key } });
        assert.equal(again.status, 200, again.text);
        assert.equal(again.headers.get("idempotent-replayed"), "true");
        assert.equal(again.body.run_id, runId);
        assert.equal(again.body.status, "completed");
        assert.deepEqual(again.body.data, { got: 1, echoed: true });
        assert.equal(slow.hits("/idem"), 1);

        // The same key with a different body is refused.
        const other = await worker.fetchJson("/execute", { body: { graph, context: { n: 2 } }, headers: { "Idempotency-Key": key } });
        assert.equal(other.status, 422, other.text);
        assert.equal(other.body.success, false);
        assert.equal(other.body.error.code, "idempotency_key_reused");
        assert.equal(other.headers.get("idempotent-replayed"), null);
        assert.equal(slow.hits("/idem"), 1);
        assert.equal((await listedRuns(worker)).body.runs.length, afterList.length, "the 422 started nothing");

        // The same key and body under another API key is that key's own first request.
        const b = await worker.fetchJson("/execute", { body, apiKey: IDEM_KEY_B, headers: { "Idempotency-Key": key } });
        assert.equal(b.status, 200, b.text);
        assert.notEqual(b.body.run_id, runId);
        assert.equal(b.headers.get("idempotent-replayed"), null);
        assert.equal(b.body.status, "completed");
        assert.equal(slow.hits("/idem"), 2);
        const bList = (await listedRuns(worker, { query: "", apiKey: IDEM_KEY_B })).body.runs;
        assert.deepEqual(bList.map((r) => r.run_id), [b.body.run_id]);
        const bAgain = await worker.fetchJson("/execute", { body, apiKey: IDEM_KEY_B, headers: { "Idempotency-Key": key } });
        assert.equal(bAgain.body.run_id, b.body.run_id);
        assert.equal(bAgain.headers.get("idempotent-replayed"), "true");

        // Without the header, or with another key, the same body starts new runs.
        const plain = await worker.fetchJson("/execute", { body });
        const fresh2 = await worker.fetchJson("/execute", { body, headers: { "Idempotency-Key": `${key}-2` } });
        assert.equal(new Set([runId, plain.body.run_id, fresh2.body.run_id]).size, 3);
        assert.equal(slow.hits("/idem"), 4);
    } finally {
        await slow.close();
    }
});

// ---------------------------------------------------------------------------------------
// FOREACH max_concurrency

test("max_concurrency 3 over 20 pending items: never more than 3 in flight, each called once, completes 20/0", { timeout: 60_000 }, async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const calls = [];
    const callbackAnswers = [];
    let n = 0;
    const comp = await startComponent((body) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const taskId = `mc-${body.index}-${++n}`;
        calls.push({ index: body.index, item: body.item, taskId, inFlightAtCall: inFlight });
        // Call back a little later (after this pending answer), concurrently with other items.
        setTimeout(() => {
            inFlight--; // the item is done as far as the component is concerned once it calls back
            callbackAnswers.push(
                postCallback(body.callback_url, taskId, { success: true, data: { i: body.item.i, index: body.index } }),
            );
        }, 40 + Math.floor(Math.random() * 120));
        return { pending: true, task_id: taskId };
    });
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "each", type: "Component", componentId: `${comp.url}/mc` },
                { id: "out", type: "Output", data: { results: "{{each.results}}", count: "{{each.count}}", failed: "{{each.failed}}" } },
            ],
            edges: [
                { from: "in", to: "each", type: "FOREACH", items: "list", max_concurrency: 3 },
                { from: "each", to: "out", type: "PIPE" },
            ],
        };
        const list = Array.from({ length: 20 }, (_, i) => ({ i: i * 10 }));
        const t = await worker.fetchJson("/execute", { body: { graph, context: { list } } });
        assert.equal(t.status, 200, t.text);
        assert.ok(["paused", "running", "completed"].includes(t.body.status), t.text);
        if (t.body.status === "paused") assert.ok(t.body.waits.length <= 3, `waits at trigger: ${t.body.waits.length}`);
        // While it runs, the run never shows more than three open waits.
        const done = await waitUntil("the run to complete", async () => {
            const r = await worker.fetchJson(`/runs/${t.body.run_id}`);
            assert.ok(r.body.waits.length <= 3, `${r.body.waits.length} open waits`);
            return r.body.status === "completed" || r.body.status === "failed" ? r : null;
        }, { timeoutMs: 45_000, everyMs: 100 });
        assert.equal(done.body.status, "completed", done.text);
        assert.ok(maxInFlight <= 3, `at most 3 items in flight, saw ${maxInFlight}`);
        assert.equal(maxInFlight, 3, "the three slots were used");
        assert.deepEqual(calls.map((c) => c.index).sort((a, b) => a - b), list.map((_, i) => i), "each item called exactly once");
        for (const c of calls) assert.deepEqual(c.item, list[c.index]);
        assert.equal(done.body.data.count, 20);
        assert.equal(done.body.data.failed, 0);
        assert.equal(done.body.data.results.length, 20);
        done.body.data.results.forEach((r, i) => assert.deepEqual(r.data, { i: i * 10, index: i }, `results[${i}]: ${JSON.stringify(r)}`));
        const answered = await Promise.all(callbackAnswers);
        // Callbacks that raced a segment of the run are kept and applied when it ends: each gets
        // its real answer, or (past 3 s on a slow machine) 202 accepted — never turned away.
        const accepted = answered.filter((a) => a.status === 202);
        for (const a of accepted) assertCallbackAccepted(a.body, { run_id: t.body.run_id });
        for (const a of answered.filter((x) => x.status !== 202)) {
            assert.equal(a.status, 200, a.text);
            assert.equal(a.body.noop, undefined, `no callback was turned away: ${a.text}`);
            assertCallbackAnswer(a.body, { run_id: t.body.run_id });
        }
        const completing = answered.filter((a) => a.body.status === "completed").length;
        // The last callback completed the run (unless the one that did was answered 202).
        if (accepted.length === 0) assert.equal(completing, 1, "the last callback completed the run");
        else assert.ok(completing <= 1, `${completing} answers say completed`);
    } finally {
        await comp.close();
    }
});

test("max_concurrency bounds items that answer at once too (2 concurrent requests at most)", { timeout: 60_000 }, async () => {
    let open = 0;
    let maxOpen = 0;
    const comp = await startComponent(async (body) => {
        open++;
        maxOpen = Math.max(maxOpen, open);
        await sleep(80);
        open--;
        return { i: body.index };
    });
    try {
        const graph = {
            nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${comp.url}/sync` }],
            edges: [{ from: "in", to: "each", type: "FOREACH", items: "list", max_concurrency: 2 }],
        };
        const r = await worker.fetchJson("/execute", { body: { graph, context: { list: Array.from({ length: 10 }, (_, i) => i) } } });
        assert.equal(r.status, 200, r.text);
        const done = r.body.status === "completed" ? r : await waitForStatus(worker, r.body.run_id, ["completed", "failed"], 30_000);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(comp.hits("/sync"), 10);
        assert.ok(maxOpen <= 2, `at most 2 requests at once, saw ${maxOpen}`);
        assert.equal(done.body.data.count, 10);
        assert.deepEqual(done.body.data.results.map((x) => x.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    } finally {
        await comp.close();
    }
});

// ---------------------------------------------------------------------------------------
// FOREACH failure tolerance

let tolCase = 0;
/** Runs `in -FOREACH(list, extra)-> each (judge) -PIPE-> out`, `each -ON_SUCCESS-> after`, over `count` items of which `failing` fail. */
async function runTolerance(extra, count, failing) {
    const label = `tol${++tolCase}`;
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${judge.url}/${label}` },
            { id: "after", type: "Component", componentId: `${echo.url}/${label}-after` },
            { id: "out", type: "Output", data: { results: "{{each.results}}", count: "{{each.count}}", failed: "{{each.failed}}" } },
        ],
        edges: [
            { from: "in", to: "each", type: "FOREACH", items: "list", ...extra },
            { from: "each", to: "out", type: "PIPE" },
            { from: "each", to: "after", type: "ON_SUCCESS" },
        ],
    };
    const list = Array.from({ length: count }, (_, i) => ({ i, fail: failing.includes(i) }));
    const r = await worker.fetchJson("/execute", { body: { graph, context: { list } } });
    assert.equal(r.status, 200, r.text);
    const what = `${JSON.stringify(extra)} with ${failing.length}/${count} failing`;
    assert.ok(["completed", "failed"].includes(r.body.status), `${what}: ${r.text}`);
    assert.equal(judge.hits(`/${label}`), count, `${what}: every item is called, failed or not`);
    return { r, label, what, list };
}

async function expectTolerated(extra, count, failing) {
    const { r, label, what } = await runTolerance(extra, count, failing);
    assert.equal(r.body.status, "completed", `${what} is tolerated: ${r.text}`);
    assert.equal(r.body.data.count, count, what);
    assert.equal(r.body.data.failed, failing.length, what);
    assert.equal(r.body.data.results.length, count, what);
    r.body.data.results.forEach((res, i) => {
        if (failing.includes(i)) {
            assert.equal(res.success, false, `${what}: results[${i}] ${JSON.stringify(res)}`);
            assert.equal(res.error, `boom ${i}`, `${what}: the failed item's error is in its slot: ${JSON.stringify(res)}`);
        } else {
            assert.equal(res.v, i, `${what}: results[${i}] ${JSON.stringify(res)}`);
            assert.equal(res.index, i);
        }
    });
    assert.equal(echo.hits(`/${label}-after`), 1, `${what}: ON_SUCCESS ran`);
}

async function expectFailed(extra, count, failing) {
    const { r, label, what } = await runTolerance(extra, count, failing);
    assert.equal(r.body.status, "failed", `${what} is not tolerated: ${r.text}`);
    assert.equal(r.body.success, false);
    assert.equal(r.body.error.node_id, "each", r.text);
    assert.equal(r.body.error.code, "node_failed", r.text);
    assert.match(r.body.error.message, new RegExp(`\\b${failing.length}\\b.*\\b${count}\\b`), `${what}: the error counts the failed items: ${r.text}`);
    assert.equal(echo.hits(`/${label}-after`), 0, `${what}: ON_SUCCESS did not run`);
    const items = r.body.trace.filter((e) => e.node_id === "each" && Number.isInteger(e.item));
    assert.equal(items.filter((e) => e.status === "failed").length, failing.length, `${what}: ${JSON.stringify(r.body.trace)}`);
    assert.equal(items.filter((e) => e.status === "succeeded").length, count - failing.length);
    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    assert.equal(read.body.status, "failed");
    assert.deepEqual(read.body.error, r.body.error);
}

test("FOREACH by default: no failed item completes; any failed item fails the node once all items are in", { timeout: 60_000 }, async () => {
    await expectTolerated({}, 6, []);
    await expectFailed({}, 6, [0]);
    await expectFailed({}, 6, [5]);
    await expectFailed({}, 6, [0, 1, 2, 3, 4, 5]);
});

test("tolerated_failures: below and at the limit succeed with errors in their slots, above it fails", { timeout: 60_000 }, async () => {
    await expectTolerated({ tolerated_failures: 2 }, 10, []);
    await expectTolerated({ tolerated_failures: 2 }, 10, [4]);
    await expectTolerated({ tolerated_failures: 2 }, 10, [3, 7]);
    await expectFailed({ tolerated_failures: 2 }, 10, [1, 3, 7]);
    await expectTolerated({ tolerated_failures: 0 }, 4, []);
    await expectFailed({ tolerated_failures: 0 }, 4, [2]);
    await expectTolerated({ tolerated_failures: 5 }, 5, [0, 1, 2, 3, 4]);
});

test("tolerated_failure_percent: below and at the limit succeed, above it fails", { timeout: 60_000 }, async () => {
    await expectTolerated({ tolerated_failure_percent: 20 }, 10, [9]);
    await expectTolerated({ tolerated_failure_percent: 20 }, 10, [0, 9]);
    await expectFailed({ tolerated_failure_percent: 20 }, 10, [0, 5, 9]);
    await expectTolerated({ tolerated_failure_percent: 25 }, 4, [1]);
    await expectFailed({ tolerated_failure_percent: 25 }, 4, [1, 2]);
    await expectTolerated({ tolerated_failure_percent: 12.5 }, 8, [3]);
    await expectFailed({ tolerated_failure_percent: 12.4 }, 8, [3]);
    await expectFailed({ tolerated_failure_percent: 0 }, 3, [0]);
    await expectTolerated({ tolerated_failure_percent: 100 }, 3, [0, 1, 2]);
});

test("tolerance with max_concurrency and pending items: failed callbacks count, and the node still waits for every item", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${pend.url}/tolp` },
            { id: "out", type: "Output", data: { count: "{{each.count}}", failed: "{{each.failed}}", results: "{{each.results}}" } },
        ],
        edges: [
            { from: "in", to: "each", type: "FOREACH", items: "list", max_concurrency: 2, tolerated_failures: 1 },
            { from: "each", to: "out", type: "PIPE" },
        ],
    };
    const t = await worker.fetchJson("/execute", { body: { graph, context: { list: ["a", "b", "c", "d"] } } });
    assert.equal(t.body.status, "paused", t.text);
    assert.equal(t.body.waits.length, 2);
    assert.equal(pend.on("/tolp").length, 2);
    const answer = async (index, extra) => {
        const call = await waitUntil(`item ${index} to be called`, () => pend.on("/tolp").find((c) => c.body.index === index && c.answered));
        return postCallback(call.callbackUrl, call.taskId, extra);
    };
    // Item 0 fails: within tolerance, the run goes on and starts item 2.
    let r = await answer(0, { success: false, error: "first failure" });
    assert.equal(r.body.status, "paused", r.text);
    assert.equal(pend.on("/tolp").length, 3);
    r = await answer(1, { success: true, data: { ok: 1 } });
    assert.equal(r.body.status, "paused", r.text);
    assert.equal(pend.on("/tolp").length, 4);
    r = await answer(2, { success: true, data: { ok: 2 } });
    assert.equal(r.body.status, "paused", r.text);
    r = await answer(3, { success: true, data: { ok: 3 } });
    assert.equal(r.body.status, "completed", r.text);
    assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id });
    const { data } = await runView(worker, t.body.run_id);
    assert.equal(data.count, 4);
    assert.equal(data.failed, 1);
    assert.equal(data.results[0].success, false);
    assert.equal(data.results[0].error, "first failure", JSON.stringify(data.results[0]));
    assert.deepEqual(data.results.slice(1).map((x) => x.data.ok), [1, 2, 3]);
});

test("max_concurrency / tolerance fields are validated: 0, 101, wrong types and non-FOREACH edges are 400 invalid_graph", { timeout: 60_000 }, async () => {
    const graphWith = (edge) => ({
        nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${echo.url}/invalid` }],
        edges: [{ from: "in", to: "each", type: "FOREACH", items: "list", ...edge }],
    });
    const cases = [
        [{ max_concurrency: 0 }, "max_concurrency"],
        [{ max_concurrency: -2 }, "max_concurrency"],
        [{ max_concurrency: 1.5 }, "max_concurrency"],
        [{ max_concurrency: "3" }, "max_concurrency"],
        [{ tolerated_failure_percent: 101 }, "tolerated_failure_percent"],
        [{ tolerated_failure_percent: -1 }, "tolerated_failure_percent"],
        [{ tolerated_failure_percent: "10" }, "tolerated_failure_percent"],
        [{ tolerated_failures: -1 }, "tolerated_failures"],
        [{ type: "PIPE", max_concurrency: 2 }, "max_concurrency"],
        [{ type: "PIPE", tolerated_failures: 1 }, "tolerated_failures"],
        [{ type: "ON_SUCCESS", tolerated_failure_percent: 10 }, "tolerated_failure_percent"],
    ];
    const before = (await listedRuns(worker)).body.runs.length;
    for (const [edge, field] of cases) {
        const r = await worker.fetchJson("/execute", { body: { graph: graphWith(edge), context: { list: [1] } } });
        assert.equal(r.status, 400, `${JSON.stringify(edge)}: ${r.text}`);
        assert.equal(r.body.error.code, "invalid_graph", r.text);
        assert.ok(
            r.body.error.problems.some((p) => p.at === `edges[0].${field}`),
            `${JSON.stringify(edge)}: a problem at edges[0].${field}: ${JSON.stringify(r.body.error.problems)}`,
        );
    }
    // The limits themselves are fine.
    for (const edge of [{ max_concurrency: 1 }, { tolerated_failure_percent: 100 }, { tolerated_failure_percent: 0 }, { tolerated_failures: 0 }]) {
        const r = await worker.fetchJson("/execute", { body: { graph: graphWith(edge), context: { list: [1] } } });
        assert.equal(r.status, 200, `${JSON.stringify(edge)}: ${r.text}`);
        assert.equal(r.body.status, "completed", r.text);
    }
    assert.equal(echo.hits("/invalid"), 4, "only the valid graphs called the component");
    assert.equal((await listedRuns(worker)).body.runs.length, before + 4, "rejected graphs started no run");
});

// ---------------------------------------------------------------------------------------
// Retry

test("retry of a failed node runs only it again (attempt 1), keeps the completed upstream output; 409 once completed, 404 for another key", { timeout: 60_000 }, async () => {
    let flakyCalls = 0;
    const flaky = await startComponent((body) => {
        flakyCalls++;
        if (flakyCalls === 1) return { success: false, error: "transient trouble" };
        return { fixed: true, saw: body.up_said };
    });
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "up", type: "Component", componentId: `${echo.url}/retry-up` },
                { id: "flaky", type: "Component", componentId: `${flaky.url}/flaky`, data: { up_said: "{{up.topic}}" } },
                { id: "out", type: "Output", data: { up: "{{up.topic}}", fixed: "{{flaky.fixed}}", saw: "{{flaky.saw}}" } },
            ],
            edges: [
                { from: "in", to: "up", type: "PIPE" },
                { from: "up", to: "flaky", type: "PIPE" },
                { from: "flaky", to: "out", type: "PIPE" },
            ],
        };
        const t = await worker.fetchJson("/execute", { body: { graph, context: { topic: "cats" } } });
        assert.equal(t.body.status, "failed", t.text);
        assert.equal(t.body.error.node_id, "flaky");
        const runId = t.body.run_id;
        assert.equal(echo.hits("/retry-up"), 1);
        assert.equal(flaky.hits("/flaky"), 1);

        // Only the owner may retry.
        const foreign = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST", apiKey: OTHER_KEY });
        assert.equal(foreign.status, 404, foreign.text);
        assert.equal(flaky.hits("/flaky"), 1);
        assert.equal((await worker.fetchJson(`/runs/${runId}`)).body.status, "failed", "another key's retry changed nothing");
        const unknown = await worker.fetchJson(`/runs/${runId.slice(0, -4)}beef/retry`, { method: "POST" });
        assert.equal(unknown.status, 404, unknown.text);

        const r = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.run_id, runId);
        const done = r.body.status === "completed" ? r : await waitForStatus(worker, runId, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.deepEqual(pick(done.body.data, ["up", "fixed", "saw"]), { up: "cats", fixed: true, saw: "cats" });
        assert.equal(echo.hits("/retry-up"), 1, "the upstream component was called exactly once overall");
        assert.equal(flaky.hits("/flaky"), 2);
        // The failed node got the same input the second time.
        const [first, second] = flaky.requests().map((q) => {
            const { callback_url, ...rest } = q.body;
            return rest;
        });
        assert.deepEqual(second, first);

        const read = await worker.fetchJson(`/runs/${runId}`);
        assert.equal(read.body.status, "completed");
        assert.deepEqual(read.body.data, done.body.data);
        const trace = read.body.trace;
        assert.deepEqual(statuses(trace), ["in:succeeded", "up:succeeded", "flaky:failed", "flaky:succeeded", "out:succeeded"], JSON.stringify(trace));
        assert.deepEqual(trace.map((e) => e.attempt ?? 0), [0, 0, 0, 1, 1], "entries of the new attempt carry attempt 1");
        assert.equal(trace[2].error, "transient trouble");

        // A completed run is not retryable.
        const again = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
        assert.equal(again.status, 409, again.text);
        assert.equal(again.body.success, false);
        assert.equal(again.body.error.code, "not_retryable");
        assert.equal(flaky.hits("/flaky"), 2);
        assert.equal((await worker.fetchJson(`/runs/${runId}`)).body.trace.length, 5, "the refused retry changed nothing");
    } finally {
        await flaky.close();
    }
});

test("retry of a failed pending node issues a fresh wait; the old callback URL is a noop", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "up", type: "Component", componentId: `${echo.url}/rp-up` },
            { id: "slow", type: "Component", componentId: `${pend.url}/rp` },
            { id: "out", type: "Output", data: { v: "{{slow.data.v}}" } },
        ],
        edges: [{ from: "up", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
    };
    const t = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(t.body.status, "paused", t.text);
    const runId = t.body.run_id;
    // A paused run is not retryable.
    const early = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
    assert.equal(early.status, 409, early.text);
    assert.equal(early.body.error.code, "not_retryable");

    const [firstCall] = pend.on("/rp");
    const failed = await postCallback(firstCall.callbackUrl, firstCall.taskId, { success: false, error: "daemon gave up" });
    assert.equal(failed.body.status, "failed", failed.text);
    assertCallbackAnswer(failed.body, { status: "failed", run_id: runId, task_id: firstCall.taskId });
    assert.equal(failed.body.failed_node, "slow");
    assert.equal(failed.body.error.node_id, "slow");

    const r = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "paused", r.text);
    assert.equal(pend.on("/rp").length, 2, "the failed node was called again");
    const secondCall = pend.on("/rp")[1];
    const oldUrl = parseCallbackUrl(firstCall.callbackUrl);
    const newUrl = parseCallbackUrl(secondCall.callbackUrl);
    assert.equal(newUrl.runId, runId);
    assert.notEqual(newUrl.waitId, oldUrl.waitId, "a fresh wait id");
    const paused = await worker.fetchJson(`/runs/${runId}`);
    assert.deepEqual(paused.body.waits.map((w) => w.wait_id), [newUrl.waitId]);

    // The old URL, even naming the new task, cannot resume the new attempt.
    for (const taskId of [firstCall.taskId, secondCall.taskId]) {
        const stale = await postCallback(firstCall.callbackUrl, taskId, { success: true, data: { v: "stale" } });
        assert.equal(stale.status, 200, stale.text);
        assert.equal(stale.body.noop, true, `stale callback is a noop: ${stale.text}`);
    }
    const still = await worker.fetchJson(`/runs/${runId}`);
    assert.equal(still.body.status, "paused");
    assert.deepEqual(still.body.waits.map((w) => w.wait_id), [newUrl.waitId]);

    // The second attempt fails too; a second retry is attempt 2, with yet another wait.
    const failedAgain = await postCallback(secondCall.callbackUrl, secondCall.taskId, { success: false, error: "still down" });
    assert.equal(failedAgain.body.status, "failed", failedAgain.text);
    const r2 = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.body.status, "paused", r2.text);
    assert.equal(pend.on("/rp").length, 3);
    const thirdCall = pend.on("/rp")[2];
    const thirdUrl = parseCallbackUrl(thirdCall.callbackUrl);
    assert.equal(new Set([oldUrl.waitId, newUrl.waitId, thirdUrl.waitId]).size, 3, "every attempt has its own wait id");
    for (const call of [firstCall, secondCall]) {
        const stale = await postCallback(call.callbackUrl, thirdCall.taskId, { success: true, data: { v: "stale" } });
        assert.equal(stale.body.noop, true, `an earlier attempt's URL is a noop: ${stale.text}`);
    }

    const answer = await postCallback(thirdCall.callbackUrl, thirdCall.taskId, { success: true, data: { v: "fresh" } });
    assert.equal(answer.body.status, "completed", answer.text);
    assertCallbackAnswer(answer.body, { status: "completed", run_id: runId, task_id: thirdCall.taskId });
    const done = await runView(worker, runId);
    assert.equal(done.data.v, "fresh");
    assert.equal(echo.hits("/rp-up"), 1);
    const entries = done.trace.filter((e) => e.node_id === "slow");
    assert.deepEqual(
        entries.map((e) => [e.status, e.attempt ?? 0]),
        [["paused", 0], ["failed", 0], ["paused", 1], ["failed", 1], ["paused", 2], ["succeeded", 2]],
        JSON.stringify(done.trace),
    );
});

test("retry of failed FOREACH items calls only those items again, with fresh waits; completed items are kept", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${pend.url}/ri` },
            { id: "out", type: "Output", data: { results: "{{each.results}}", count: "{{each.count}}", failed: "{{each.failed}}" } },
        ],
        edges: [
            { from: "in", to: "each", type: "FOREACH", items: "list", iterator: "thing" },
            { from: "each", to: "out", type: "PIPE" },
        ],
    };
    const list = ["a", "b", "c", "d", "e", "f"];
    const t = await worker.fetchJson("/execute", { body: { graph, context: { list } } });
    assert.equal(t.body.status, "paused", t.text);
    const runId = t.body.run_id;
    const firstRound = pend.on("/ri");
    assert.equal(firstRound.length, 6);
    assert.deepEqual(firstRound.map((c) => c.body.thing).sort(), list);
    const byIndex = (calls) => new Map(calls.map((c) => [c.body.index, c]));
    const round1 = byIndex(firstRound);
    const bad = [1, 4];
    let last;
    for (let i = 0; i < 6; i++) {
        const c = round1.get(i);
        last = await postCallback(c.callbackUrl, c.taskId, bad.includes(i) ? { success: false, error: `bad ${i}` } : { success: true, data: { got: c.body.thing } });
        assert.equal(last.status, 200, last.text);
    }
    assert.equal(last.body.status, "failed", last.text);
    assert.equal(last.body.error.node_id, "each");
    assertCallbackAnswer(last.body, { status: "failed", run_id: runId, task_id: round1.get(5).taskId });
    assert.equal(last.body.failed_node, "each");

    const r = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "paused", r.text);
    const secondRound = pend.on("/ri").slice(6);
    assert.deepEqual(secondRound.map((c) => c.body.index).sort(), bad, "only the failed items are called again");
    for (const c of secondRound) assert.equal(c.body.thing, list[c.body.index], "with their own values");
    const round2 = byIndex(secondRound);
    const detail = await worker.fetchJson(`/runs/${runId}`);
    assert.equal(detail.body.status, "paused");
    assert.deepEqual(detail.body.waits.map((w) => w.item).sort(), bad);
    for (const i of bad) {
        assert.notEqual(parseCallbackUrl(round2.get(i).callbackUrl).waitId, parseCallbackUrl(round1.get(i).callbackUrl).waitId, `item ${i} has a fresh wait id`);
    }

    // Stale callbacks (the first attempt's URLs) are noops and change nothing.
    for (const i of [...bad, 0]) {
        const c = round1.get(i);
        const stale = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { got: "stale" } });
        assert.equal(stale.status, 200, stale.text);
        assert.equal(stale.body.noop, true, `item ${i}'s old URL: ${stale.text}`);
    }
    const unchanged = await worker.fetchJson(`/runs/${runId}`);
    assert.equal(unchanged.body.status, "paused");
    assert.deepEqual(unchanged.body.waits.map((w) => w.wait_id).sort(), detail.body.waits.map((w) => w.wait_id).sort());

    for (const i of bad) {
        const c = round2.get(i);
        last = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { got: `${c.body.thing}!` } });
        assert.equal(last.status, 200, last.text);
    }
    assert.equal(last.body.status, "completed", last.text);
    assertCallbackAnswer(last.body, { status: "completed", run_id: runId, task_id: round2.get(bad.at(-1)).taskId });
    const finished = await runView(worker, runId);
    assert.equal(finished.data.count, 6);
    assert.equal(finished.data.failed, 0);
    assert.deepEqual(finished.data.results.map((x) => x.data.got), ["a", "b!", "c", "d", "e!", "f"]);
    assert.equal(pend.on("/ri").length, 8, "completed items were not called again");

    const trace = finished.trace;
    const retried = trace.filter((e) => (e.attempt ?? 0) === 1);
    assert.ok(retried.length > 0, JSON.stringify(trace));
    for (const e of retried) {
        assert.ok(e.node_id !== "each" || !Number.isInteger(e.item) || bad.includes(e.item), `only the retried items appear in attempt 1: ${JSON.stringify(e)}`);
    }
    assert.deepEqual(
        retried.filter((e) => e.node_id === "each" && Number.isInteger(e.item) && e.status === "succeeded").map((e) => e.item).sort(),
        bad,
    );
    assert.ok(trace.some((e) => e.node_id === "out" && e.status === "succeeded" && e.attempt === 1), JSON.stringify(trace));
    assert.equal(trace.filter((e) => e.node_id === "each" && e.status === "failed" && !e.attempt).length >= 2, true);

    const again = await worker.fetchJson(`/runs/${runId}/retry`, { method: "POST" });
    assert.equal(again.status, 409, again.text);
    assert.equal(again.body.error.code, "not_retryable");
});

test("retry of failed FOREACH items keeps to max_concurrency across pauses", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${pend.url}/rmc` }],
        edges: [{ from: "in", to: "each", type: "FOREACH", items: "list", max_concurrency: 2 }],
    };
    const t = await worker.fetchJson("/execute", { body: { graph, context: { list: [0, 1, 2, 3, 4] } } });
    assert.equal(t.body.status, "paused", t.text);
    const calls = () => pend.on("/rmc");
    assert.equal(calls().length, 2);
    const bad = new Set([0, 2, 3]);
    let last;
    for (let i = 0; i < calls().length; i++) {
        const c = calls()[i];
        last = await postCallback(c.callbackUrl, c.taskId, bad.has(c.body.index) ? { success: false, error: `no ${c.body.index}` } : { success: true, data: { i: c.body.index } });
        assert.ok(calls().length <= i + 3, `at most 2 open after ${i + 1} callbacks: ${calls().length} calls`);
    }
    assert.equal(calls().length, 5);
    assert.equal(last.body.status, "failed", last.text);

    const r = await worker.fetchJson(`/runs/${t.body.run_id}/retry`, { method: "POST" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "paused", r.text);
    // The first two of the three failed items (by index) start; their calls go out together, so
    // they may reach the component in either order.
    assert.deepEqual(calls().slice(5).map((c) => c.body.index).sort(), [0, 2], "two of the three failed items start, in order");
    assert.deepEqual(r.body.waits.map((w) => w.item).sort(), [0, 2]);
    const c0 = calls().slice(5).find((c) => c.body.index === 0);
    last = await postCallback(c0.callbackUrl, c0.taskId, { success: true, data: { i: 0 } });
    assert.equal(last.body.status, "paused", last.text);
    assert.deepEqual(calls().slice(5).map((c) => c.body.index).sort(), [0, 2, 3], "the third starts when one finishes");
    assert.equal(calls()[7].body.index, 3, "the third failed item is the one started last");
    for (const c of calls().slice(5).filter((c) => c !== c0)) {
        last = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { i: c.body.index } });
    }
    assert.equal(last.body.status, "completed", last.text);
    assertCallbackAnswer(last.body, { status: "completed", run_id: t.body.run_id });
    assert.equal(calls().length, 8, "items 1 and 4 were not called again");
    const finished = await runView(worker, t.body.run_id);
    assert.deepEqual(finished.data.results.map((x) => x.data.i), [0, 1, 2, 3, 4]);
    assert.equal(finished.data.failed, 0);
});

test("retry of failed synchronous FOREACH items, with an upstream node that must not run again", { timeout: 60_000 }, async () => {
    const seen = new Map(); // index → calls
    let round = 1;
    const items = await startComponent((body) => {
        seen.set(body.index, (seen.get(body.index) ?? 0) + 1);
        if (round === 1 && body.item % 3 === 0) return { success: false, error: `item ${body.index} failed` };
        return { double: body.item * 2 };
    });
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "src", type: "Component", componentId: `${echo.url}/rs-src` },
                { id: "each", type: "Component", componentId: `${items.url}/rs` },
                { id: "out", type: "Output", data: { results: "{{each.results}}", failed: "{{each.failed}}" } },
            ],
            edges: [
                { from: "in", to: "src", type: "PIPE" },
                { from: "src", to: "each", type: "FOREACH", items: "nums", max_concurrency: 2 },
                { from: "each", to: "out", type: "PIPE" },
            ],
        };
        const nums = [1, 3, 4, 6, 7, 9, 10];
        const t = await worker.fetchJson("/execute", { body: { graph, context: { nums } } });
        assert.equal(t.body.status, "failed", t.text);
        assert.equal(echo.hits("/rs-src"), 1);
        assert.equal(items.hits("/rs"), 7);
        round = 2;
        const r = await worker.fetchJson(`/runs/${t.body.run_id}/retry`, { method: "POST" });
        assert.equal(r.status, 200, r.text);
        const done = r.body.status === "completed" ? r : await waitForStatus(worker, t.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.deepEqual(done.body.data.results.map((x) => x.double), nums.map((n) => n * 2));
        assert.equal(done.body.data.failed, 0);
        assert.equal(echo.hits("/rs-src"), 1, "the FOREACH source was not run again");
        const failedIdx = nums.map((n, i) => (n % 3 === 0 ? i : -1)).filter((i) => i >= 0);
        for (let i = 0; i < nums.length; i++) {
            assert.equal(seen.get(i), failedIdx.includes(i) ? 2 : 1, `item ${i} calls`);
        }
    } finally {
        await items.close();
    }
});

// ---------------------------------------------------------------------------------------
// Stored workflows

test("stored workflows: put (bare or {graph}), get, list, execute, replace while a run is paused, delete; names checked; other keys see none", { timeout: 60_000 }, async () => {
    const v1 = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "slow", type: "Component", componentId: `${pend.url}/wf-v1` },
            { id: "out", type: "Output", data: { version: "v1", who: "{{who}}", v: "{{slow.data.v}}" } },
        ],
        edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
    };
    const v2 = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "fast", type: "Component", componentId: `${echo.url}/wf-v2` },
            { id: "out", type: "Output", data: { version: "v2", who: "{{fast.who}}" } },
        ],
        edges: [{ from: "in", to: "fast", type: "PIPE" }, { from: "fast", to: "out", type: "PIPE" }],
    };

    // Put, bare graph.
    const put = await worker.fetchJson("/workflows/greet", { method: "PUT", body: v1 });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.success, true);
    assert.equal(put.body.workflow.name, "greet");
    assert.equal(put.body.workflow.nodes, 3);
    assert.ok(Number.isInteger(put.body.workflow.updated_at), put.text);
    // Put, wrapped in {graph}.
    const put2 = await worker.fetchJson("/workflows/quick.v2_x-y", { method: "PUT", body: { graph: v2 } });
    assert.equal(put2.status, 200, put2.text);
    assert.equal(put2.body.workflow.name, "quick.v2_x-y");
    assert.equal(put2.body.workflow.nodes, 3);

    const got = await worker.fetchJson("/workflows/greet");
    assert.equal(got.status, 200, got.text);
    assert.equal(got.body.success, true);
    assert.equal(got.body.workflow.name, "greet");
    assert.deepEqual(got.body.workflow.graph, v1);
    assert.equal(got.body.workflow.updated_at, put.body.workflow.updated_at);
    const got2 = await worker.fetchJson("/workflows/quick.v2_x-y");
    assert.deepEqual(got2.body.workflow.graph, v2, "a {graph} body stores the graph itself");

    const listed = await worker.fetchJson("/workflows");
    assert.equal(listed.status, 200, listed.text);
    assert.equal(listed.body.success, true);
    const sortByName = (ws) => ws.slice().sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(sortByName(listed.body.workflows).map((w) => [w.name, w.nodes, w.updated_at]), [
        ["greet", 3, put.body.workflow.updated_at],
        ["quick.v2_x-y", 3, put2.body.workflow.updated_at],
    ]);

    // An invalid graph is refused with its problems, and nothing is stored.
    const invalid = await worker.fetchJson("/workflows/broken", {
        method: "PUT",
        body: { nodes: [{ id: "a", type: "Component" }], edges: [{ from: "a", to: "ghost", type: "PIPE" }] },
    });
    assert.equal(invalid.status, 400, invalid.text);
    assert.equal(invalid.body.error.code, "invalid_graph");
    assert.ok(Array.isArray(invalid.body.error.problems) && invalid.body.error.problems.length >= 2, invalid.text);
    assert.equal((await worker.fetchJson("/workflows/broken")).status, 404);
    // Replacing a good one with an invalid graph keeps the good one.
    const badReplace = await worker.fetchJson("/workflows/greet", { method: "PUT", body: { graph: { nodes: [], edges: [{ from: "x", to: "y" }] } } });
    assert.equal(badReplace.status, 400, badReplace.text);
    assert.equal(badReplace.body.error.code, "invalid_graph");
    assert.deepEqual((await worker.fetchJson("/workflows/greet")).body.workflow.graph, v1);

    // Names.
    const longOk = "n".repeat(100);
    const okLong = await worker.fetchJson(`/workflows/${longOk}`, { method: "PUT", body: v2 });
    assert.equal(okLong.status, 200, `100 characters are allowed: ${okLong.text}`);
    assert.equal((await worker.fetchJson(`/workflows/${longOk}`, { method: "DELETE" })).status, 200);
    for (const name of ["has%20space", "n".repeat(101), "sl%2Fash", "caf%C3%A9", "semi%3Bcolon"]) {
        for (const [method, p, body] of [["PUT", `/workflows/${name}`, v2], ["GET", `/workflows/${name}`], ["POST", `/workflows/${name}/execute`, {}], ["DELETE", `/workflows/${name}`]]) {
            const r = await worker.fetchJson(p, { method, body });
            assert.equal(r.status, 400, `${method} ${p}: ${r.status} ${r.text}`);
            assert.equal(r.body.success, false);
        }
    }
    assert.deepEqual(sortByName((await worker.fetchJson("/workflows")).body.workflows).map((w) => w.name), ["greet", "quick.v2_x-y"]);

    // Execute v1: it pauses; the listing names the workflow.
    const run1 = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "ada" } } });
    assert.equal(run1.status, 200, run1.text);
    assert.equal(run1.body.status, "paused", run1.text);
    const runId = run1.body.run_id;
    const slowCall = pend.on("/wf-v1")[0];
    assert.equal(slowCall.body.who, "ada", "the context reaches the component");
    const inList = (await listedRuns(worker, { query: "status=paused&limit=1000" })).body.runs.find((r) => r.run_id === runId);
    assert.deepEqual(
        { workflow: inList?.workflow, status: inList?.status, open_waits: inList?.open_waits },
        { workflow: "greet", status: "paused", open_waits: 1 },
    );

    // A graph in the body is refused; an unknown workflow is 404.
    const withGraph = await worker.fetchJson("/workflows/greet/execute", { body: { graph: v2, context: {} } });
    assert.equal(withGraph.status, 400, withGraph.text);
    assert.equal(withGraph.body.success, false);
    const unknown = await worker.fetchJson("/workflows/nope/execute", { body: { context: {} } });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(pend.on("/wf-v1").length, 1, "neither started anything");

    // Replace greet with v2 while run1 is paused: run1 keeps v1.
    const replaced = await worker.fetchJson("/workflows/greet", { method: "PUT", body: v2 });
    assert.equal(replaced.status, 200, replaced.text);
    assert.ok(replaced.body.workflow.updated_at >= put.body.workflow.updated_at);
    assert.deepEqual((await worker.fetchJson("/workflows/greet")).body.workflow.graph, v2);
    const resumed = await postCallback(slowCall.callbackUrl, slowCall.taskId, { success: true, data: { v: 42 } });
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.body.status, "completed", resumed.text);
    assertCallbackAnswer(resumed.body, { status: "completed", run_id: runId, task_id: slowCall.taskId });
    assert.deepEqual(pick((await runView(worker, runId)).data, ["version", "who", "v"]), { version: "v1", who: "ada", v: 42 }, "the paused run followed the graph it started with");
    assert.equal(echo.hits("/wf-v2"), 0, "the new graph's component was not called by the old run");

    // A new run follows the new graph.
    const run2 = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "bob" } } });
    assert.equal(run2.body.status, "completed", run2.text);
    assert.deepEqual(pick(run2.body.data, ["version", "who", "v"]), { version: "v2", who: "bob", v: undefined });
    assert.equal(echo.hits("/wf-v2"), 1);

    // Idempotency-Key on stored workflow execution.
    const idemKey = `wf-${Date.now()}`;
    const i1 = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "cy" } }, headers: { "Idempotency-Key": idemKey } });
    const i2 = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "cy" } }, headers: { "Idempotency-Key": idemKey } });
    assert.equal(i1.status, 200, i1.text);
    assert.equal(i2.status, 200, i2.text);
    assert.equal(i2.body.run_id, i1.body.run_id);
    assert.equal(i2.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(pick(i2.body.data, ["version", "who"]), { version: "v2", who: "cy" });
    const i3 = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "dee" } }, headers: { "Idempotency-Key": idemKey } });
    assert.equal(i3.status, 422, i3.text);
    assert.equal(i3.body.error.code, "idempotency_key_reused");
    assert.equal(echo.hits("/wf-v2"), 2);

    // final_callback_url is honoured for a stored workflow's run.
    const hooks = [];
    const receiver = await startComponent((body) => {
        hooks.push(body);
        return { ok: true };
    });
    try {
        const hooked = await worker.fetchJson("/workflows/greet/execute", { body: { context: { who: "eve" }, final_callback_url: `${receiver.url}/hook` } });
        assert.equal(hooked.status, 200, hooked.text);
        assert.equal(hooked.body.status, "completed", hooked.text);
        await waitUntil("the final callback", () => hooks.length >= 1, { timeoutMs: 15_000 });
        assert.equal(hooks[0].run_id, hooked.body.run_id);
        assert.equal(hooks[0].status, "completed");
        assert.equal(hooks[0].data?.version, "v2");
    } finally {
        await receiver.close();
    }

    // Another key sees none of them.
    const hitsBefore = echo.hits("/wf-v2");
    for (const [method, p, body] of [
        ["GET", "/workflows/greet"],
        ["GET", "/workflows/quick.v2_x-y"],
        ["DELETE", "/workflows/greet"],
        ["POST", "/workflows/greet/execute", { context: {} }],
    ]) {
        const r = await worker.fetchJson(p, { method, body, apiKey: OTHER_KEY });
        assert.equal(r.status, 404, `${OTHER_KEY}: ${method} ${p}: ${r.text}`);
    }
    const othersList = await worker.fetchJson("/workflows", { apiKey: OTHER_KEY });
    assert.equal(othersList.status, 200, othersList.text);
    assert.deepEqual(othersList.body.workflows, []);
    assert.equal(echo.hits("/wf-v2"), hitsBefore, "another key's execute ran nothing");
    assert.equal((await worker.fetchJson(`/runs/${runId}`, { apiKey: OTHER_KEY })).status, 404);

    // Delete.
    const del = await worker.fetchJson("/workflows/greet", { method: "DELETE" });
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.success, true);
    const gone = await worker.fetchJson("/workflows/greet");
    assert.equal(gone.status, 404, gone.text);
    assert.equal(gone.body.success, false);
    assert.equal((await worker.fetchJson("/workflows/greet", { method: "DELETE" })).status, 404);
    assert.equal((await worker.fetchJson("/workflows/greet/execute", { body: { context: {} } })).status, 404);
    assert.deepEqual((await worker.fetchJson("/workflows")).body.workflows.map((w) => w.name), ["quick.v2_x-y"]);
    // Runs started from it are still there.
    const kept = await worker.fetchJson(`/runs/${runId}`);
    assert.equal(kept.status, 200);
    assert.deepEqual(pick(kept.body.data, ["version", "who", "v"]), { version: "v1", who: "ada", v: 42 });
    const listing = (await listedRuns(worker)).body.runs;
    assert.equal(listing.find((r) => r.run_id === runId)?.workflow, "greet");
    assert.equal(listing.find((r) => r.run_id === run2.body.run_id)?.workflow, "greet");

    assert.equal((await worker.fetchJson("/workflows/quick.v2_x-y", { method: "DELETE" })).status, 200);
    assert.deepEqual((await worker.fetchJson("/workflows")).body.workflows, []);
});
