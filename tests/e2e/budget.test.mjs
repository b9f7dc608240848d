// The budget of child runs, end to end in workerd: a sub-workflow that fans out into itself — a
// FOREACH of 4 children at every level, which unbounded would make 4 + 16 + … + 4^8 runs — is
// stopped by its root's budget (MAX_CHILD_RUNS) at any depth, with a bounded number of KV writes;
// and children start no faster than MAX_CHILD_RUNS_PER_SECOND.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startWorker, waitForStatus } from "./harness.mjs";
import { sleep } from "./harness.mjs";
import { listedRuns } from "./settle.mjs";

let worker;

before(async () => {
    worker = await startWorker({ bindings: { MAX_CHILD_RUNS: "20", MAX_CHILD_RUNS_PER_SECOND: "1000" } });
});

after(async () => {
    await worker?.stop();
});

async function putWorkflow(w, name, graph) {
    const r = await w.fetchJson(`/workflows/${name}`, { method: "PUT", body: graph });
    assert.equal(r.status, 200, `PUT /workflows/${name}: ${r.text}`);
}

/** A workflow that runs `workflow://{name}` once per item of a list of `fan`. */
const fanGraph = (name, fan) => ({
    nodes: [
        { id: "in", type: "Input" },
        { id: "gen", type: "Component", componentId: "comp_passthrough", data: { items: Array.from({ length: fan }, (_, i) => i) } },
        { id: "each", type: "Component", componentId: `workflow://${name}` },
        { id: "out", type: "Output" },
    ],
    edges: [
        { from: "in", to: "gen", type: "PIPE" },
        { from: "gen", to: "each", type: "FOREACH", items: "gen.items" },
        { from: "each", to: "out", type: "PIPE" },
    ],
});

/** Every run of the test key, read until none is running or paused. */
async function settledRuns(w, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const listed = await listedRuns(w);
        const runs = [];
        for (const r of listed.body.runs) runs.push((await w.fetchJson(`/runs/${r.run_id}`)).body);
        if (runs.every((r) => !["running", "paused"].includes(r.status)) || Date.now() > deadline) return runs;
        await sleep(500);
    }
}

test("a sub-workflow that fans out into itself is stopped by its root's budget, at any depth", { timeout: 120_000 }, async () => {
    await putWorkflow(worker, "fan", fanGraph("fan", 4));
    const writesBefore = worker.kvWrites();
    const r = await worker.fetchJson("/workflows/fan/execute", { body: { context: {} } });
    assert.ok([200, 202].includes(r.status), r.text);
    const root = await waitForStatus(worker, r.body.run_id, ["failed", "completed"], 60_000);
    assert.equal(root.body.status, "failed", root.text);

    const runs = await settledRuns(worker);
    // The root and at most its 20 children: not thousands.
    assert.ok(runs.length <= 21, `runs made: ${runs.length}`);
    assert.ok(runs.every((x) => ["failed", "completed"].includes(x.status)), JSON.stringify(runs.map((x) => x.status)));
    // More than the root's own 4 children: theirs drew on the same budget.
    assert.ok(runs.length > 5, `children of children started too: ${runs.length}`);
    // Somewhere in the tree, a node failed naming the budget.
    const refused = runs.filter((x) => JSON.stringify(x).includes("budget of child runs is spent"));
    assert.ok(refused.length > 0, "a node says the budget was spent");
    assert.match(JSON.stringify(refused[0]), /MAX_CHILD_RUNS/);
    // A bounded cost: a few writes per run made, whatever the graph would have made.
    const writes = worker.kvWrites() - writesBefore;
    assert.ok(writes <= runs.length * 6, `KV writes: ${writes} for ${runs.length} runs`);
    console.log(`# fan-out of 4 per level: ${runs.length} runs, ${writes} KV writes, stopped by MAX_CHILD_RUNS=20`);
});

test("children start no faster than MAX_CHILD_RUNS_PER_SECOND", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { MAX_CHILD_RUNS_PER_SECOND: "4" } });
    try {
        await putWorkflow(w, "leaf", { nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data: { ok: true } }], edges: [{ from: "in", to: "out", type: "PIPE" }] });
        await putWorkflow(w, "ten", fanGraph("leaf", 10));
        const r = await w.fetchJson("/workflows/ten/execute", { body: { context: {} } });
        const root = r.body.status === "completed" ? r : await waitForStatus(w, r.body.run_id, ["completed", "failed"], 30_000);
        assert.equal(root.body.status, "completed", root.text);
        const children = (await settledRuns(w)).filter((x) => x.workflow === "leaf");
        assert.equal(children.length, 10);
        const starts = children.map((x) => x.created_at).sort((a, b) => a - b);
        // 4 in the first second, 4 in the next, 2 in the third.
        assert.ok(starts[9] - starts[0] >= 1900, `10 children started within ${starts[9] - starts[0]} ms`);
        assert.ok(starts[4] - starts[0] >= 900, `5 children started within ${starts[4] - starts[0]} ms`);
    } finally {
        await w.stop();
    }
});
