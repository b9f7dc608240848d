// `join: "any"` end to end in workerd: a node that fires on the first branch that delivers.
// Two pending components race — the reference daemon calls back first, the other's callback is
// answered `superseded` and `GET /runs/{id}` shows its wait closed so — and an immediate
// component beats a paused one within the trigger's own segment.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startWorker, startComponent, pendingComponent, postCallback, waitForStatus, sleep } from "./harness.mjs";
import { startDaemon } from "../../daemon/daemon.mjs";
import { assertCallbackAnswer } from "./settle.mjs";

const statuses = (trace) => trace.map((e) => `${e.node_id}:${e.status}`);
const closedWait = (view, nodeId) => (view.closed_waits ?? []).find((c) => c.node_id === nodeId);

let worker;
let echo;

before(async () => {
    worker = await startWorker();
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body ?? {};
        return { ...rest, echoed: true };
    });
}, { timeout: 120_000 });

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await echo?.close();
    }
}, { timeout: 120_000 });

/** `in` → `a`, `in` → `b`, both into `first` (join any) → `out`. */
function race(aUrl, bUrl) {
    return {
        name: "first of two",
        nodes: [
            { id: "in", type: "Input" },
            { id: "a", type: "Component", componentId: aUrl, data: { result: "from a", from: "a" } },
            { id: "b", type: "Component", componentId: bUrl, data: { result: "from b", from: "b" } },
            { id: "first", type: "Component", componentId: "comp_passthrough", join: "any" },
            { id: "out", type: "Output", data: { winner: "{{first.data.result}}", direct: "{{first.from}}" } },
        ],
        edges: [
            { from: "in", to: "a" },
            { from: "in", to: "b" },
            { from: "a", to: "first" },
            { from: "b", to: "first" },
            { from: "first", to: "out" },
        ],
    };
}

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

test("two pending branches race: the daemon's callback wins, the other's is answered superseded", { timeout: 60_000 }, async () => {
    const daemon = await startDaemon({ delayMs: 300, retryDelaysMs: [0, 200, 500], log: () => {} });
    const slow = await pendingComponent();
    try {
        const t = await worker.fetchJson("/execute", { body: { graph: race(`${daemon.url}/a`, `${slow.url}/b`), context: { topic: "x" } } });
        assert.equal(t.status, 200, t.text);
        assert.equal(t.body.status, "paused", t.text);
        assert.equal(t.body.waits.length, 2, t.text);
        const runId = t.body.run_id;
        const aTask = t.body.waits.find((w) => w.node_id === "a").task_id;
        const [bCall] = slow.on("/b");
        assert.ok(bCall?.callbackUrl, "b was called with its callback URL");

        // The daemon calls back first: the run completes with a's data.
        const task = await delivered(daemon, aTask);
        assertCallbackAnswer(task.response, { status: "completed", run_id: runId, task_id: aTask });
        const done = await waitForStatus(worker, runId, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.winner, "from a", done.text);
        assert.equal(done.body.data.topic, "x", "the trigger context flows through the winner");
        assert.deepEqual(closedWait(done.body, "a")?.how, "resumed", done.text);
        assert.deepEqual(closedWait(done.body, "b")?.how, "superseded", done.text);
        assert.equal(closedWait(done.body, "b").task_id, bCall.taskId);

        // b's daemon calls back later, and again: both told why nothing happens.
        const expected = { success: true, noop: true, reason: "superseded", status: "completed", run_id: runId, task_id: bCall.taskId };
        for (const attempt of ["late", "duplicate"]) {
            const late = await postCallback(bCall.callbackUrl, bCall.taskId, { success: true, data: { result: "from b" } });
            assert.equal(late.status, 200, `${attempt}: ${late.text}`);
            assert.deepEqual(late.body, expected, `${attempt}: ${late.text}`);
        }

        const read = await worker.fetchJson(`/runs/${runId}`);
        assert.equal(read.body.data.winner, "from a", "nothing ran again");
        const trace = statuses(read.body.trace);
        assert.equal(trace.filter((s) => s === "first:succeeded").length, 1, trace.join(" "));
        assert.ok(trace.includes("b:superseded"), trace.join(" "));
        assert.equal(closedWait(read.body, "b")?.how, "superseded", read.text);
    } finally {
        await daemon.close();
        await slow.close();
    }
});

test("an immediate branch beats a paused one within the trigger; the paused one's callback is superseded", { timeout: 60_000 }, async () => {
    const slow = await pendingComponent();
    try {
        // The paused branch is called first (graph order), so its wait is open when the
        // immediate answer arrives and is closed by it.
        const t = await worker.fetchJson("/execute", { body: { graph: race(`${slow.url}/a`, `${echo.url}/b`) } });
        assert.equal(t.status, 200, t.text);
        assert.equal(t.body.status, "completed", t.text);
        assert.equal(t.body.data.direct, "b", t.text);
        const runId = t.body.run_id;
        const [aCall] = slow.on("/a");
        assert.ok(aCall?.callbackUrl);

        const view = (await worker.fetchJson(`/runs/${runId}`)).body;
        assert.deepEqual(view.waits, [], JSON.stringify(view));
        assert.equal(closedWait(view, "a")?.how, "superseded", JSON.stringify(view));
        assert.equal(closedWait(view, "a").task_id, aCall.taskId);
        assert.ok(statuses(view.trace).includes("a:superseded"), JSON.stringify(view.trace));

        const late = await postCallback(aCall.callbackUrl, aCall.taskId, { success: true });
        assert.equal(late.status, 200, late.text);
        assert.deepEqual(late.body, { success: true, noop: true, reason: "superseded", status: "completed", run_id: runId, task_id: aCall.taskId });
        assert.equal(echo.hits("/b"), 1, "the winner ran once");
    } finally {
        await slow.close();
    }
});

test("a graph whose join is not all or any is refused naming join", async () => {
    const g = race(`${echo.url}/a`, `${echo.url}/b`);
    g.nodes[3].join = "first";
    const r = await worker.fetchJson("/execute", { body: { graph: g } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.code, "invalid_graph", r.text);
    assert.ok(r.body.error.problems.some((p) => p.at === "nodes[3].join"), r.text);
});
