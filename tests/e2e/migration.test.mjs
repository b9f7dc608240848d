// Upgrading with runs in flight: records stored by earlier releases (record version 1, commit
// 50fd88b; record version 2, commit 208d02a) are put into KV exactly as those releases wrote
// them, then read, resumed and written back as version 4 by this one. A record whose shape does
// not fit its graph is refused cleanly, not crashed on.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";

import { startWorker, startComponent, REPO_ROOT, mintToken, TEST_CALLBACK_SECRET, storedStatus } from "./harness.mjs";
import { runView, kvCaughtUp, assertCallbackAnswer } from "./settle.mjs";

const CALLBACK_SECRET = TEST_CALLBACK_SECRET;
const fixture = (name, version = "v1") => readFile(path.join(REPO_ROOT, "tests", "fixtures", version, name), "utf8");


let worker;
let daemonComp; // `daemon_task`: already called before the upgrade, must not be called again
let afterComp; // `after_component`: called after the resume

before(async () => {
    daemonComp = await startComponent(() => ({ pending: true, task_id: "should-not-happen" }));
    afterComp = await startComponent((body) => ({ echoed: body.side ? "side" : "after" }));
    worker = await startWorker({
        bindings: {
            COMPONENTS: JSON.stringify({ daemon_task: `${daemonComp.url}/daemon`, after_component: `${afterComp.url}/after` }),
        },
    });
});

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await daemonComp?.close();
        await afterComp?.close();
    }
});

/** Stores a record under `run:{run_id}` as earlier releases did for ids of this form. */
async function putRecord(text) {
    const runId = JSON.parse(text).run_id;
    await (await worker.mf.getKVNamespace("RUNS")).put(`run:${runId}`, text);
    return runId;
}

async function getRecord(runId) {
    return (await worker.mf.getKVNamespace("RUNS")).get(`run:${runId}`, "text");
}

/** POSTs a callback for wait `waitId` of a stored record, with a token computed here. */
async function callBack(record, waitId, body) {
    const wait = record.waits[waitId];
    const token = mintToken(CALLBACK_SECRET, record.run_id, waitId, wait.expires_at);
    return worker.fetchJson(`/callbacks/${record.run_id}/${waitId}?token=${encodeURIComponent(token)}`, { body, apiKey: null });
}

const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);

test("a paused v1 chain is readable, resumes once, and is stored as version 4", async () => {
    const text = await fixture("paused-chain.json");
    const record = JSON.parse(text);
    const id = await putRecord(text);
    assert.equal(id, "v1chainrun");

    const read = await worker.fetchJson(`/runs/${id}`);
    assert.equal(read.status, 200, read.text);
    assert.equal(read.body.status, "paused");
    assert.equal(read.body.waits.length, 1);
    const w1 = read.body.waits.find((w) => w.task_id === "task-slow");
    assert.ok(w1, read.text);
    assert.equal(w1.node_id, "slow");

    const daemonHits = daemonComp.hits();
    const afterHits = afterComp.hits("/after");
    const r = await callBack(record, "w1", { task_id: "task-slow", success: true, data: { answer: 42 } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.resumed, true);
    assert.equal(r.body.status, "completed", r.text);
    assertCallbackAnswer(r.body, { status: "completed", run_id: id, task_id: "task-slow" });
    const output = (await runView(worker, id)).data;
    assert.equal(output.answer, 42);
    assert.equal(output.prepared, "migrations", "context from before the upgrade carried over");
    assert.equal(output.after, "after");

    assert.equal(afterComp.hits("/after") - afterHits, 1, "after_component called exactly once");
    const sent = afterComp.requests().filter((x) => x.path === "/after").at(-1).body;
    assert.equal(sent.answer, 42);
    assert.equal(sent.topic, "migrations");
    assert.equal(daemonComp.hits() - daemonHits, 0, "the already-called daemon is not called again");

    await kvCaughtUp(worker, id);
    const stored = JSON.parse(await getRecord(id));
    assert.equal(stored.version, 4);
    assert.equal(storedStatus(stored), "completed");
    assert.equal(stored.status.completed.output.answer, 42, JSON.stringify(stored.status));
    assert.ok(Number.isInteger(stored.revision), "a version-3 record counts its writes");
    // A run of the old id form stays under `run:{id}` (runs of the listed form live under
    // `runs/{owner tag}/`) and is not listed.
    assert.deepEqual([...(await worker.kvSnapshot()).keys()].filter((k) => k.endsWith(id)), [`run:${id}`]);
    const listed = await worker.fetchJson("/runs");
    assert.equal(listed.status, 200, listed.text);
    assert.ok(!listed.body.runs.some((r) => r.run_id === id), listed.text);

    const done = await worker.fetchJson(`/runs/${id}`);
    assert.equal(done.body.status, "completed");
    assert.deepEqual(statuses(done.body.trace), [
        "in:succeeded",
        "prep:succeeded",
        "slow:paused",
        "slow:succeeded",
        "after:succeeded",
        "out:succeeded",
    ]);

    const again = await callBack(record, "w1", { task_id: "task-slow", success: true, data: { answer: 43 } });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: id, task_id: "task-slow" });
    assert.equal(afterComp.hits("/after") - afterHits, 1, "the repeat ran nothing");
});

test("a paused v1 FOREACH with a join resumes item by item and completes", async () => {
    const text = await fixture("paused-foreach-join.json");
    const record = JSON.parse(text);
    const id = await putRecord(text);
    assert.equal(id, "v1foreach_joinrun");

    const read = await worker.fetchJson(`/runs/${id}`);
    assert.equal(read.status, 200, read.text);
    assert.equal(read.body.status, "paused");
    assert.deepEqual(read.body.waits.map((w) => w.task_id).sort(), ["task-each-0", "task-each-1", "task-each-2"]);

    const daemonHits = daemonComp.hits();
    const afterHits = afterComp.hits();
    const answers = [];
    for (const [i, waitId] of ["w1", "w2", "w3"].entries()) {
        const r = await callBack(record, waitId, { task_id: `task-each-${i}`, success: true, data: { v: i } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.resumed, true, r.text);
        assertCallbackAnswer(r.body, { run_id: id, task_id: `task-each-${i}` }, `item ${i}`);
        answers.push(r.body);
    }
    assert.equal(answers[0].status, "paused");
    assert.equal(answers[1].status, "paused");
    const last = answers[2];
    assert.equal(last.status, "completed", JSON.stringify(last));
    assert.equal(daemonComp.hits() - daemonHits, 0);
    assert.equal(afterComp.hits() - afterHits, 0, "the side branch finished before the upgrade and is not re-run");

    const done = await worker.fetchJson(`/runs/${id}`);
    assert.equal(done.body.status, "completed");
    assert.equal(done.body.data.count, 3);
    assert.equal(done.body.data.side, "side", "the join kept the side branch delivered before the upgrade");
    // The record is rewritten as version 4, its last change within about a second.
    const { record: stored } = await kvCaughtUp(worker, id);
    assert.equal(stored.version, 4);
    assert.equal(JSON.parse(await getRecord(id)).version, 4);
    assert.equal(storedStatus(stored), "completed");

    const before = await worker.kvSnapshot();
    const again = await callBack(record, "w2", { task_id: "task-each-1", success: true, data: { v: 9 } });
    assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: id, task_id: "task-each-1" });
    assert.deepEqual(await worker.kvSnapshot(), before);
});

test("a paused v2 chain is readable, resumes once, and is stored as version 4", async () => {
    const text = await fixture("paused-chain.json", "v2");
    const record = JSON.parse(text);
    assert.equal(record.version, 2);
    assert.deepEqual(record.status, { state: "paused", since: 1790000000005 }, "version 2 tags the status inside");
    // Version 2 pins named components to the URLs they had when the run started; the fixture's
    // point at nothing, so they are pointed at this test's servers. The rest is as written.
    const pinned = { ...record, components: { daemon_task: `${daemonComp.url}/daemon`, after_component: `${afterComp.url}/after` } };
    const id = await putRecord(JSON.stringify(pinned));
    assert.equal(id, "v2chainrun");

    const read = await worker.fetchJson(`/runs/${id}`);
    assert.equal(read.status, 200, read.text);
    assert.equal(read.body.status, "paused");
    assert.deepEqual(read.body.waits.map((w) => [w.wait_id, w.task_id, w.node_id]), [["n2", "task-slow", "slow"]], read.text);
    assert.equal(JSON.parse(await getRecord(id)).version, 2, "a read writes nothing");

    const daemonHits = daemonComp.hits();
    const afterHits = afterComp.hits("/after");
    const r = await callBack(record, "n2", { task_id: "task-slow", success: true, data: { answer: 42 } });
    assert.equal(r.status, 200, r.text);
    assertCallbackAnswer(r.body, { status: "completed", run_id: id, task_id: "task-slow" });
    const output = (await runView(worker, id)).data;
    assert.equal(output.answer, 42);
    assert.equal(output.prepared, "migrations", "context from before the upgrade carried over");
    assert.equal(output.after, "after");
    assert.equal(afterComp.hits("/after") - afterHits, 1, "after_component called once, at its pinned URL");
    assert.equal(daemonComp.hits() - daemonHits, 0, "the already-called daemon is not called again");

    const { record: stored } = await kvCaughtUp(worker, id);
    assert.equal(stored.version, 4);
    assert.equal(storedStatus(stored), "completed");
    assert.deepEqual(stored.status.completed.output, output, "the status is tagged outside");
    assert.ok(Number.isInteger(stored.revision), JSON.stringify(stored.revision));
    assert.equal(stored.closed.n2.how, "resumed");

    const again = await callBack(record, "n2", { task_id: "task-slow", success: true, data: { answer: 43 } });
    assert.deepEqual(again.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: id, task_id: "task-slow" });
    assert.equal(afterComp.hits("/after") - afterHits, 1, "the repeat ran nothing");
});

test("a v1 record that does not fit its graph is refused with JSON errors and left as it was", async () => {
    const base = JSON.parse(await fixture("paused-chain.json"));
    const variants = {
        // One node state missing: states no longer line up with the graph's nodes.
        v1corrupt_short: (r) => r.nodes.splice(3, 1),
        // A FOREACH state with a number where its slots belong.
        v1corrupt_mapping: (r) => (r.nodes[3] = { mapping: 7 }),
    };
    for (const [runId, spoil] of Object.entries(variants)) {
        const record = structuredClone(base);
        record.run_id = runId;
        spoil(record);
        await putRecord(JSON.stringify(record));
        const before = await worker.kvSnapshot();

        const read = await worker.fetchJson(`/runs/${runId}`);
        assert.ok(read.status >= 400, `${runId} read: ${read.status} ${read.text}`);
        assert.equal(read.body?.success, false, read.text);
        assert.equal(read.body.error.code, "corrupt_record", read.text);

        const cb = await callBack(record, "w1", { task_id: "task-slow", success: true, data: { answer: 1 } });
        assert.ok(cb.status >= 400, `${runId} callback: ${cb.status} ${cb.text}`);
        assert.equal(cb.body?.success, false, cb.text);
        assert.equal(typeof cb.body.error?.code, "string", cb.text);

        const health = await worker.fetchJson("/health");
        assert.equal(health.status, 200, "the worker keeps answering");
        assert.deepEqual(await worker.kvSnapshot(), before, `${runId}: KV unchanged`);
    }
});
