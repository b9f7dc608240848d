// Template references that name nothing, end to end in workerd: left as written with a
// warning on the node's trace entry (GET /runs/{id}), or — with the graph's
// `strict_templates` — a failure of the node and the run that names them.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startWorker, startComponent, pendingComponent, postCallback, waitForStatus } from "./harness.mjs";

let worker;
let echo;

before(async () => {
    worker = await startWorker();
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body;
        return rest;
    });
}, { timeout: 120_000 });

after(async () => {
    try {
        await worker?.stop();
    } finally {
        await echo?.close();
    }
}, { timeout: 60_000 });

/** An Input, a component call and an Output, with a reference in each of the last two that names nothing. */
function graph(extra = {}) {
    return {
        ...extra,
        nodes: [
            { id: "i", type: "Input", data: { seed: "{{topic}}" } },
            { id: "c", type: "Component", componentId: `${echo.url}/llm`, data: { prompt: "about {{i.seed}} and {{i.nope.deep}}" } },
            { id: "out", type: "Output", data: { answer: "{{c.prompt}}", gone: "{{missing}}" } },
        ],
        edges: [
            { from: "i", to: "c", type: "PIPE" },
            { from: "c", to: "out", type: "PIPE" },
        ],
    };
}

const entry = (trace, id) => trace.find((e) => e.node_id === id);

test("an unresolved reference stays as written, and the node's trace entry warns of it", { timeout: 60_000 }, async () => {
    const hitsBefore = echo.hits("/llm");
    const r = await worker.fetchJson("/execute", { body: { graph: graph(), context: { topic: "owls" } } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "completed", r.text);
    // The output is what it was before warnings existed.
    assert.equal(r.body.data.answer, "about owls and {{i.nope.deep}}");
    assert.equal(r.body.data.gone, "{{missing}}");
    assert.equal(echo.hits("/llm"), hitsBefore + 1);

    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    assert.equal(read.status, 200, read.text);
    const { trace } = read.body;
    assert.equal(entry(trace, "i").warnings, undefined, "no warning where everything resolved");
    assert.deepEqual(entry(trace, "c").warnings, ["unresolved template reference {{i.nope.deep}} at data.prompt"]);
    assert.deepEqual(entry(trace, "out").warnings, ["unresolved template reference {{missing}} at data.gone"]);
});

test("strict_templates fails the node and the run, naming the reference, before anything is sent", { timeout: 60_000 }, async () => {
    const hitsBefore = echo.hits("/llm");
    const r = await worker.fetchJson("/execute", { body: { graph: graph({ strict_templates: true }), context: { topic: "owls" } } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "failed", r.text);
    const message = "unresolved template reference {{i.nope.deep}} at data.prompt (the graph has strict_templates)";
    assert.deepEqual(r.body.error, { code: "node_failed", message, node_id: "c" });
    assert.equal(echo.hits("/llm"), hitsBefore, "the call was never made");

    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    assert.equal(read.body.status, "failed");
    assert.deepEqual(read.body.error, r.body.error);
    assert.deepEqual(
        read.body.trace.map((e) => [e.node_id, e.status, e.error, e.error_code]),
        [
            ["i", "succeeded", undefined, undefined],
            ["c", "failed", message, "unresolved_template"],
        ],
    );
});

test("strict_templates that is not a boolean is refused with the graph's other problems", { timeout: 60_000 }, async () => {
    const r = await worker.fetchJson("/execute", { body: { graph: graph({ strict_templates: "yes" }) } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.code, "invalid_graph");
    assert.deepEqual(r.body.error.problems, [
        { at: "graph.strict_templates", message: "must be true or false (true: a template reference that names nothing fails its node)" },
    ]);
});

test("a stored workflow keeps strict_templates, and its runs are strict", { timeout: 60_000 }, async () => {
    const put = await worker.fetchJson("/workflows/strict-one", { method: "PUT", body: graph({ strict_templates: true }) });
    assert.equal(put.status, 200, put.text);
    const got = await worker.fetchJson("/workflows/strict-one");
    assert.equal(got.body.workflow.graph.strict_templates, true);
    const r = await worker.fetchJson("/workflows/strict-one/execute", { body: { context: { topic: "owls" } } });
    assert.equal(r.body.status, "failed", r.text);
    assert.equal(r.body.error.node_id, "c");
    assert.match(r.body.error.message, /\{\{i\.nope\.deep\}\} at data\.prompt/);
});

test("a paused call's warning is on its paused entry, and stays there once it resumes", { timeout: 60_000 }, async () => {
    const pending = await pendingComponent();
    try {
        const g = {
            nodes: [
                { id: "job", type: "Component", componentId: `${pending.url}/job`, data: { p: "{{who.name}}" } },
                { id: "out", type: "Output" },
            ],
            edges: [{ from: "job", to: "out", type: "PIPE" }],
        };
        const r = await worker.fetchJson("/execute", { body: { graph: g } });
        assert.equal(r.body.status, "paused", r.text);
        const [call] = pending.calls;
        assert.equal(call.body.p, "{{who.name}}");
        const cb = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { done: 1 } });
        assert.equal(cb.status, 200, cb.text);
        const done = await waitForStatus(worker, r.body.run_id, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        const warned = done.body.trace.filter((e) => e.warnings);
        assert.deepEqual(
            warned.map((e) => [e.node_id, e.status, e.warnings]),
            [["job", "paused", ["unresolved template reference {{who.name}} at data.p"]]],
        );
    } finally {
        await pending.close();
    }
});
