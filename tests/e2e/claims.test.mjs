// Claims, end to end in workerd: what an `Idempotency-Key` or a sub-workflow call claims, and
// what becomes of a claim whose run was never stored.
// - A caller cannot choose a sub-workflow call's child by sending the call's internal claim name
//   (as it once was, `subflow:{run}.{wait}`, or anything like it) as its own Idempotency-Key.
// - The Worker killed while a trigger's first segment waits on a component: the same request
//   with the same key after the restart gets a real run (not 404), and one run in all — also
//   when several such requests arrive at once.
// - The Worker killed while a sub-workflow's child is in its first segment: the parent's
//   callback sent again after the restart starts that child again and the parent completes.
// Killing is stopping workerd with the request in flight; its state is persisted in a
// directory of the test's own, and the Worker comes back on the same port with it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, startComponent, pendingComponent, postCallback, freePort, waitUntil, waitForStatus, TEST_API_KEY_HASH } from "./harness.mjs";
import { listedRuns } from "./settle.mjs";

/** A component whose calls hang while it is `holding` (as a slow one would), then answer `answer`. */
async function slowComponent(answer) {
    let holding = true;
    const held = [];
    const c = await startComponent(async () => {
        if (holding) await new Promise((resolve) => held.push(resolve));
        return answer;
    });
    return {
        ...c,
        /** From now on, calls answer at once; the held ones are let go (their caller is gone). */
        letGo() {
            holding = false;
            for (const resolve of held.splice(0)) resolve();
        },
        async close() {
            this.letGo();
            await c.close();
        },
    };
}

/** A Worker whose state survives a restart: `kill()` stops it with whatever is in flight, `restart()` brings it back. */
async function restartableWorker() {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-claims-"));
    const port = await freePort();
    const handle = { worker: await startWorker({ port, persistDir: dir }) };
    handle.kill = () => handle.worker.stop();
    handle.restart = async () => {
        handle.worker = await startWorker({ port, persistDir: dir });
    };
    handle.close = async () => {
        try {
            await handle.worker.stop();
        } finally {
            await rm(dir, { recursive: true, force: true });
        }
    };
    return handle;
}

/** Starts `request()` and kills the Worker once `component` has been called `calls` times, leaving that call hanging. */
async function killDuring(w, component, calls, request) {
    const inFlight = request().then(
        (r) => assert.fail(`the request was answered before the Worker was killed: ${r.status} ${r.text}`),
        () => "killed",
    );
    await waitUntil(`call ${calls} to the component`, () => component.hits() >= calls);
    await w.kill();
    assert.equal(await inFlight, "killed");
}

const statuses = (trace) => trace.map((e) => `${e.node_id}:${e.status}`);

test("a caller's Idempotency-Key cannot name a sub-workflow call's child: the parent gets its real child's output", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    const pend = await pendingComponent();
    try {
        const put = await w.fetchJson("/workflows/real-child", {
            method: "PUT",
            body: { nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data: { made: "by the real child" } }], edges: [{ from: "in", to: "out", type: "PIPE" }] },
        });
        assert.equal(put.status, 200, put.text);
        // The parent pauses before its sub-workflow node, so the call's key is known in advance.
        const parent = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "wait", type: "Component", componentId: `${pend.url}/wait` },
                { id: "call", type: "Component", componentId: "workflow://real-child" },
                { id: "out", type: "Output", data: { made: "{{call.made}}", child: "{{call.subflow_run_id}}" } },
            ],
            edges: [{ from: "in", to: "wait", type: "PIPE" }, { from: "wait", to: "call", type: "PIPE" }, { from: "call", to: "out", type: "PIPE" }],
        };
        const t = await w.fetchJson("/execute", { body: { graph: parent } });
        assert.equal(t.body.status, "paused", t.text);
        const run = t.body.run_id;
        // The call's idempotency key is `{run}.{wait id}`; the sub-workflow node is node 2.
        const callKey = `${run}.n2`;
        const owner = TEST_API_KEY_HASH;
        const impostor = { nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data: { made: "by the caller" } }], edges: [{ from: "in", to: "out", type: "PIPE" }] };
        const planted = [];
        for (const key of [`subflow:${callKey}`, callKey, `subflow/${owner}/${callKey}`, `/subflow/${owner}/${callKey}`, `../subflow/${owner}/${callKey}`]) {
            const r = await w.fetchJson("/execute", { body: { graph: impostor }, headers: { "Idempotency-Key": key } });
            assert.equal(r.status, 200, `${key}: ${r.text}`);
            assert.equal(r.body.status, "completed", r.text);
            assert.equal(r.headers.get("idempotent-replayed"), null, `${key} names no claim of the caller's`);
            planted.push(r.body.run_id);
        }

        const [call] = pend.on("/wait");
        const cb = await postCallback(call.callbackUrl, call.taskId, { success: true, data: {} });
        assert.equal(cb.status, 200, cb.text);
        const done = await waitForStatus(w, run, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.made, "by the real child", done.text);
        const child = done.body.data.child;
        assert.ok(!planted.includes(child), `the child ${child} is not a run the caller started`);
        const childView = await w.fetchJson(`/runs/${child}`);
        assert.equal(childView.status, 200, childView.text);
        assert.equal(childView.body.workflow, "real-child");
        assert.equal(childView.body.data.made, "by the real child");
    } finally {
        await w.stop();
        await pend.close();
    }
});

test("a trigger killed in its first segment: the same key after the restart gets a real run, and one run in all", { timeout: 60_000 }, async () => {
    const h = await restartableWorker();
    const slow = await slowComponent({ answer: 42 });
    try {
        const graph = {
            nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${slow.url}/slow` }, { id: "out", type: "Output", data: { answer: "{{slow.answer}}" } }],
            edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
        };
        const send = () => h.worker.fetchJson("/execute", { body: { graph }, headers: { "Idempotency-Key": "killed-once" } });
        await killDuring(h, slow, 1, send);
        slow.letGo();
        await h.restart();

        const again = await send();
        assert.equal(again.status, 200, again.text);
        assert.equal(again.body.status, "completed", again.text);
        assert.equal(again.body.data.answer, 42);
        const runId = again.body.run_id;
        assert.equal(slow.hits(), 2, "the component was called again, once");

        const replay = await send();
        assert.equal(replay.status, 200, replay.text);
        assert.equal(replay.headers.get("idempotent-replayed"), "true");
        assert.equal(replay.body.run_id, runId);
        assert.equal(replay.body.status, "completed");
        assert.equal(slow.hits(), 2);

        const listed = await listedRuns(h.worker, { query: "" });
        assert.deepEqual(listed.body.runs.map((r) => r.run_id), [runId], listed.text);
        assert.deepEqual(statuses((await h.worker.fetchJson(`/runs/${runId}`)).body.trace), ["in:succeeded", "slow:succeeded", "out:succeeded"]);
    } finally {
        await h.close();
        await slow.close();
    }
});

test("after a trigger was killed in its first segment, concurrent requests with its key start exactly one run", { timeout: 60_000 }, async () => {
    const h = await restartableWorker();
    const slow = await slowComponent({ answer: "once" });
    try {
        const graph = {
            nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${slow.url}/slow` }, { id: "out", type: "Output", data: { answer: "{{slow.answer}}" } }],
            edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
        };
        const send = () => h.worker.fetchJson("/execute", { body: { graph, context: { n: 1 } }, headers: { "Idempotency-Key": "killed-then-raced" } });
        await killDuring(h, slow, 1, send);
        slow.letGo();
        await h.restart();

        const answers = await Promise.all(Array.from({ length: 8 }, send));
        for (const a of answers) assert.equal(a.status, 200, a.text);
        const ids = new Set(answers.map((a) => a.body.run_id));
        assert.equal(ids.size, 1, `one run for all: ${[...ids].join(", ")}`);
        const [runId] = ids;
        const starters = answers.filter((a) => a.headers.get("idempotent-replayed") !== "true");
        assert.equal(starters.length, 1, "one request started it again; the others are replays");
        assert.equal(starters[0].body.status, "completed", starters[0].text);
        for (const a of answers) assert.ok(["running", "completed"].includes(a.body.status), a.text);
        assert.equal(slow.hits(), 2, "the component was called once after the restart");

        const done = await waitForStatus(h.worker, runId, ["completed"]);
        assert.equal(done.body.data.answer, "once");
        const listed = await listedRuns(h.worker, { query: "" });
        assert.deepEqual(listed.body.runs.map((r) => r.run_id), [runId], listed.text);
    } finally {
        await h.close();
        await slow.close();
    }
});

test("a parent whose child was killed in its first segment completes when its callback is sent again", { timeout: 60_000 }, async () => {
    const h = await restartableWorker();
    const slow = await slowComponent({ from: "child" });
    const pend = await pendingComponent();
    try {
        const put = await h.worker.fetchJson("/workflows/slow-child", {
            method: "PUT",
            body: {
                nodes: [{ id: "in", type: "Input" }, { id: "slow", type: "Component", componentId: `${slow.url}/slow` }, { id: "out", type: "Output", data: { made: "{{slow.from}}" } }],
                edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "PIPE" }],
            },
        });
        assert.equal(put.status, 200, put.text);
        const parent = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "wait", type: "Component", componentId: `${pend.url}/wait` },
                { id: "call", type: "Component", componentId: "workflow://slow-child" },
                { id: "out", type: "Output", data: { made: "{{call.made}}", child: "{{call.subflow_run_id}}" } },
            ],
            edges: [{ from: "in", to: "wait", type: "PIPE" }, { from: "wait", to: "call", type: "PIPE" }, { from: "call", to: "out", type: "PIPE" }],
        };
        const t = await h.worker.fetchJson("/execute", { body: { graph: parent } });
        assert.equal(t.body.status, "paused", t.text);
        const [call] = pend.on("/wait");
        const callback = () => postCallback(call.callbackUrl, call.taskId, { success: true, data: {} });

        // The callback resumes the parent, which starts the child, whose component hangs.
        await killDuring(h, slow, 1, callback);
        slow.letGo();
        await h.restart();

        // The daemon sends its callback again.
        const cb = await callback();
        assert.equal(cb.status, 200, cb.text);
        assert.equal(cb.body.status, "completed", cb.text);
        const done = await waitForStatus(h.worker, t.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.made, "child");
        assert.deepEqual(statuses(done.body.trace), ["in:succeeded", "wait:paused", "wait:succeeded", "call:succeeded", "out:succeeded"]);
        assert.equal(slow.hits(), 2, "the child's component was called again, once");

        const child = await h.worker.fetchJson(`/runs/${done.body.data.child}`);
        assert.equal(child.status, 200, child.text);
        assert.equal(child.body.status, "completed");
        assert.equal(child.body.workflow, "slow-child");
        const listed = await listedRuns(h.worker, { query: "" });
        assert.deepEqual(listed.body.runs.map((r) => r.run_id).sort(), [t.body.run_id, done.body.data.child].sort(), "the parent and one child");
    } finally {
        await h.close();
        await slow.close();
        await pend.close();
    }
});
