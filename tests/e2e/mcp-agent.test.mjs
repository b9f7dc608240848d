// An agent that has never read the README, driving arcrun through the official MCP SDK client
// alone: it learns the graph format from the tools' input schemas, stores a workflow, runs it
// by name, sees it pause on a component, lets the component's daemon call back, reads the run
// completed, lists runs in several statuses, retries a failure, has a final callback sent again,
// cancels an open run and deletes the workflow. Every structured result is checked against its
// tool's outputSchema with ajv (JSON Schema 2020-12), beside the SDK's own check, and every
// tool's answer against what its HTTP route answers.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { startWorker, startComponent, pendingComponent, postCallback, waitUntil, TEST_API_KEY } from "./harness.mjs";

const TOOLS = {
    // name: [readOnlyHint, destructiveHint, idempotentHint (undefined: not claimed), openWorldHint]
    execute_workflow: [false, false, false, true],
    get_run: [true, false, undefined, false],
    list_runs: [true, false, undefined, false],
    cancel_run: [false, true, true, true],
    retry_run: [false, false, false, true],
    redeliver_final_callback: [false, false, false, true],
    list_workflows: [true, false, undefined, false],
    get_workflow: [true, false, undefined, false],
    save_workflow: [false, true, true, false],
    delete_workflow: [false, true, true, false],
};

let worker;
let client;
let tools; // by name, as tools/list answered them
let pending; // a component that answers pending; the test calls back as its daemon would
let flaky; // a component that fails its first call and succeeds after
let receiver; // the final callback's receiver
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const outputValidators = new Map();
const checked = new Set(); // tools whose structured answer was checked against their outputSchema

/** Calls a tool; a success's structuredContent must validate against the tool's outputSchema. */
async function call(name, args = {}) {
    const result = await client.callTool({ name, arguments: args });
    assert.equal(result.content.length, 1);
    if (result.isError) {
        assert.equal(result.structuredContent, undefined, "an error is told once, as text");
        result.answer = JSON.parse(result.content[0].text);
        return result;
    }
    const validate = outputValidators.get(name);
    assert.ok(validate(result.structuredContent), `${name}: ${ajv.errorsText(validate.errors)}; ${JSON.stringify(result.structuredContent).slice(0, 800)}`);
    checked.add(name);
    result.answer = result.structuredContent;
    return result;
}

/** Calls a tool that must refuse its arguments (JSON-RPC invalid params); returns the message. */
async function refused(name, args) {
    let message;
    await assert.rejects(client.callTool({ name, arguments: args }), (err) => {
        assert.ok(err instanceof McpError, String(err));
        assert.equal(err.code, ErrorCode.InvalidParams, String(err));
        message = err.message;
        return true;
    });
    return message;
}

async function pollRun(runId, states) {
    let last;
    return waitUntil(`run ${runId} to be one of ${states}`, async () => {
        last = await call("get_run", { run_id: runId });
        return !last.isError && states.includes(last.answer.status) ? last.answer : null;
    }, { timeoutMs: 15_000, everyMs: 150 }).catch((err) => {
        err.message += `; last: ${JSON.stringify(last?.answer)?.slice(0, 600)}`;
        throw err;
    });
}

before(async () => {
    worker = await startWorker();
    pending = await pendingComponent();
    let flakyCalls = 0;
    flaky = await startComponent(() => (++flakyCalls === 1 ? { success: false, error: "the first try fails" } : { checked: true }));
    receiver = await startComponent(() => ({ ok: true }));
    const transport = new StreamableHTTPClientTransport(new URL(`${worker.url}/mcp`), {
        requestInit: { headers: { Authorization: `Bearer ${TEST_API_KEY}` } },
    });
    client = new Client({ name: "cold-agent", version: "0.0.0" });
    await client.connect(transport);
}, { timeout: 120_000 });

after(async () => {
    await client?.close().catch(() => {});
    try {
        await worker?.stop();
    } finally {
        await pending?.close();
        await flaky?.close();
        await receiver?.close();
    }
}, { timeout: 120_000 });

test("tools/list: every tool has annotations, a self-contained outputSchema and input schema, and the graph format is in the input schema", { timeout: 60_000 }, async () => {
    // The server's instructions say where to learn the graph format.
    assert.match(client.getInstructions() ?? "", /execute_workflow's input schema/);
    const listed = (await client.listTools()).tools;
    assert.deepEqual(listed.map((t) => t.name).sort(), Object.keys(TOOLS).sort());
    tools = Object.fromEntries(listed.map((t) => [t.name, t]));
    for (const tool of listed) {
        const [readOnly, destructive, idempotent, openWorld] = TOOLS[tool.name];
        const a = tool.annotations;
        assert.equal(typeof tool.title, "string", tool.name);
        assert.equal(a?.readOnlyHint, readOnly, `${tool.name} readOnlyHint`);
        assert.equal(a.destructiveHint, destructive, `${tool.name} destructiveHint`);
        assert.equal(a.idempotentHint, idempotent, `${tool.name} idempotentHint`);
        assert.equal(a.openWorldHint, openWorld, `${tool.name} openWorldHint`);
        assert.equal(tool.inputSchema.type, "object", tool.name);
        assert.equal(tool.outputSchema?.type, "object", `${tool.name} has an outputSchema`);
        // Both compile on their own (every $ref resolves inside the schema) as 2020-12 schemas.
        for (const schema of [tool.inputSchema, tool.outputSchema]) {
            assert.ok(ajv.validateSchema(schema), `${tool.name}: ${ajv.errorsText(ajv.errors)}`);
            for (const ref of JSON.stringify(schema).matchAll(/"\$ref":"([^"]*)"/g)) {
                assert.match(ref[1], /^#\/\$defs\//, `${tool.name}: ${ref[1]} points inside the schema`);
            }
        }
        ajv.compile(tool.inputSchema);
        outputValidators.set(tool.name, ajv.compile(tool.outputSchema));
    }
    // The outputs are the API's own answers.
    assert.ok(tools.get_run.outputSchema.properties.closed_waits, "get_run answers RunDetails");
    assert.ok(JSON.stringify(tools.execute_workflow.outputSchema).includes('"paused_node_id"'), "execute_workflow answers RunOutcome");
    assert.ok(tools.list_runs.outputSchema.properties.next_cursor, "list_runs answers RunList");
    assert.ok(JSON.stringify(tools.get_workflow.outputSchema).includes('"graph"'), "get_workflow answers the stored graph");

    // The graph format, inside the input schema of the tools that take a graph.
    for (const name of ["execute_workflow", "save_workflow"]) {
        const input = tools[name].inputSchema;
        const graph = input.properties.graph;
        assert.deepEqual(graph.required, ["nodes"], name);
        const defs = input.$defs;
        const nodeProps = Object.keys(defs.Node.properties);
        for (const p of ["id", "type", "componentId", "data", "join", "wait_timeout_seconds"]) assert.ok(nodeProps.includes(p), `${name}: Node.${p}`);
        const edgeProps = Object.keys(defs.Edge.properties);
        for (const p of ["from", "to", "type", "condition", "branch", "items", "iterator", "max_concurrency"]) assert.ok(edgeProps.includes(p), `${name}: Edge.${p}`);
        const edgeTypes = defs.EdgeType.anyOf.find((s) => s.enum).enum;
        for (const t of ["PIPE", "ON_SUCCESS", "ON_FAIL", "IF", "ON_TRUE", "ON_FALSE", "ON_BRANCH", "FOREACH"]) assert.ok(edgeTypes.includes(t), `${name}: edge type ${t}`);
        const text = JSON.stringify(input);
        for (const word of ["Input", "Output", "{{node_id.field}}", "comp_passthrough", "if_control", "switch", "poll_task", "workflow://", "FOREACH", "join", "any", "wait_timeout_seconds", "callback_url", "pending"]) {
            assert.ok(text.includes(word), `${name}'s input schema speaks of ${word}`);
        }
        assert.ok(ajv.validate(input, { name: "n", graph: { nodes: [{ id: "a", type: "Input" }] } }), `${name}: ${ajv.errorsText(ajv.errors)}`);
        assert.ok(!ajv.validate(input, { name: "n", graph: { nodes: [{ id: "a", type: "Component" }] } }), `${name}: a Component needs a componentId`);
    }
    assert.deepEqual(tools.save_workflow.inputSchema.required, ["name", "graph"]);
    assert.ok(tools.list_runs.inputSchema.properties.status.anyOf.some((s) => s.type === "array"), "list_runs takes several statuses");
});

test("the example in execute_workflow's description runs as it says", { timeout: 60_000 }, async () => {
    const description = tools.execute_workflow.description;
    const example = JSON.parse(description.slice(description.indexOf("{\"nodes\"")));
    assert.ok(ajv.validate(tools.execute_workflow.inputSchema, { graph: example, context: { topic: "hello" } }), ajv.errorsText(ajv.errors));
    const run = await call("execute_workflow", { graph: example, context: { topic: "hello" } });
    assert.equal(run.isError, false, JSON.stringify(run.answer));
    assert.equal(run.answer.status, "completed");
    assert.equal(run.answer.data.loud, "HELLO");
    assert.match(description, /"HELLO"/);
});

test("an agent session: store, run by name, pause, callback, read, list by statuses, retry, redeliver, cancel, delete", { timeout: 120_000 }, async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "review", type: "Component", componentId: `${pending.url}/review`, data: { doc: "{{doc}}" }, wait_timeout_seconds: 600 },
            { id: "out", type: "Output", data: { verdict: "{{review.data.verdict}}", doc: "{{doc}}" } },
        ],
        edges: [
            { from: "in", to: "review", type: "PIPE" },
            { from: "review", to: "out", type: "ON_SUCCESS" },
        ],
    };
    const saved = await call("save_workflow", { name: "agent-review", graph });
    assert.equal(saved.isError, false, JSON.stringify(saved.answer));
    assert.equal(saved.answer.workflow.name, "agent-review");
    assert.equal(saved.answer.workflow.nodes, 3);
    assert.match(saved.content[0].text, /agent-review/);

    const listedWorkflows = await waitUntil("list_workflows to show it", async () => {
        const l = await call("list_workflows", {});
        return l.answer.workflows.find((w) => w.name === "agent-review");
    });
    assert.equal(listedWorkflows.nodes, 3);
    const read = await call("get_workflow", { name: "agent-review" });
    assert.deepEqual(read.answer.workflow.graph, graph);
    const http = await worker.fetchJson("/workflows/agent-review");
    assert.deepEqual(read.answer, http.body, "get_workflow answers what GET /workflows/{name} does");

    // Run it by name, asking to be told when it ends: it pauses on the component.
    const started = await call("execute_workflow", { workflow: "agent-review", context: { doc: "spec.md" }, final_callback_url: `${receiver.url}/done` });
    assert.equal(started.isError, false, JSON.stringify(started.answer));
    const { run_id: runId, task_id: taskId } = started.answer;
    assert.equal(started.answer.status, "paused");
    assert.equal(started.answer.paused_node_id, "review");
    assert.match(started.content[0].text, new RegExp(`paused, waiting on task ${taskId}`));

    // The component's daemon calls back on the callback_url it was given.
    const task = pending.on("/review").find((c) => c.taskId === taskId);
    assert.equal(task.body.doc, "spec.md");
    const cb = await postCallback(task.callbackUrl, taskId, { success: true, data: { verdict: "approved" } });
    assert.equal(cb.status, 200, cb.text);

    const done = await pollRun(runId, ["completed", "failed", "cancelled"]);
    assert.equal(done.status, "completed", JSON.stringify(done).slice(0, 600));
    assert.equal(done.workflow, "agent-review");
    assert.equal(done.data.verdict, "approved");
    assert.equal(done.data.doc, "spec.md");

    // Its final callback is delivered; redelivery sends it again.
    await waitUntil("the final callback", async () => receiver.hits("/done") >= 1, { timeoutMs: 15_000 });
    const delivered = await waitUntil("delivery to be recorded", async () => {
        const r = await call("get_run", { run_id: runId });
        return r.answer.final_callback?.state === "delivered" ? r.answer : null;
    }, { timeoutMs: 15_000, everyMs: 200 });
    const runHttp = await worker.fetchJson(`/runs/${runId}`);
    assert.deepEqual(delivered, runHttp.body, "get_run answers what GET /runs/{id} does");
    const again = await call("redeliver_final_callback", { run_id: runId });
    assert.equal(again.isError, false, JSON.stringify(again.answer));
    assert.equal(again.answer.final_callback.state, "retrying");
    await waitUntil("the redelivered final callback", async () => receiver.hits("/done") >= 2, { timeoutMs: 15_000 });

    // A run that fails: the component's first try fails.
    const failing = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "check", type: "Component", componentId: `${flaky.url}/check` },
            { id: "out", type: "Output", data: { checked: "{{check.checked}}" } },
        ],
        edges: [{ from: "in", to: "check" }, { from: "check", to: "out" }],
    };
    const failed = await call("execute_workflow", { graph: failing });
    assert.equal(failed.isError, false, "a failed run is the tool's answer, not a tool error");
    assert.equal(failed.answer.status, "failed");
    assert.equal(failed.answer.failed_node, "check");

    // Another run by name stays open, for the listing and the cancel.
    const open = await call("execute_workflow", { workflow: "agent-review", context: { doc: "other.md" } });
    assert.equal(open.answer.status, "paused");

    // Several statuses at once, as GET /runs?status=failed,paused takes them. The listing is
    // KV's, which the gate writes at most once a second: the completed run may be listed as
    // paused for a moment.
    for (const status of [["failed", "paused"], "failed,paused"]) {
        const listed = await waitUntil("list_runs to show the failed and the paused run, not the completed one", async () => {
            const l = await call("list_runs", { status, limit: 100 });
            assert.equal(l.isError, false, JSON.stringify(l.answer));
            const ids = l.answer.runs.map((r) => r.run_id);
            const shown = ids.includes(failed.answer.run_id) && ids.includes(open.answer.run_id);
            return shown && !ids.includes(runId) ? l : null;
        }, { timeoutMs: 10_000, everyMs: 200 });
        for (const r of listed.answer.runs) assert.ok(["failed", "paused"].includes(r.status), r.status);
        const httpList = await worker.fetchJson("/runs?status=failed,paused&limit=100");
        assert.deepEqual(listed.answer.runs.map((r) => r.run_id), httpList.body.runs.map((r) => r.run_id));
    }

    const retried = await call("retry_run", { run_id: failed.answer.run_id });
    assert.equal(retried.isError, false, JSON.stringify(retried.answer));
    assert.equal(retried.answer.status, "completed", JSON.stringify(retried.answer).slice(0, 600));
    assert.equal(retried.answer.attempt, 1);
    assert.equal(retried.answer.data.checked, true);

    const cancelled = await call("cancel_run", { run_id: open.answer.run_id });
    assert.equal(cancelled.isError, false, JSON.stringify(cancelled.answer));
    assert.equal(cancelled.answer.status, "cancelled");

    const deleted = await call("delete_workflow", { name: "agent-review" });
    assert.equal(deleted.isError, false, JSON.stringify(deleted.answer));
    assert.equal(deleted.answer.deleted, "agent-review");
    const gone = await call("get_workflow", { name: "agent-review" });
    assert.equal(gone.isError, true);
    assert.equal(gone.answer.error.code, "not_found");
    // The runs it started keep their own copy.
    assert.equal((await call("get_run", { run_id: runId })).answer.status, "completed");

    assert.deepEqual([...checked].sort(), Object.keys(TOOLS).sort(), "every tool's structured answer was checked");
});

test("missing or wrong arguments are refused naming what the tool needs, and its alternatives", { timeout: 60_000 }, async () => {
    const none = await refused("execute_workflow", {});
    assert.match(none, /"graph"/);
    assert.match(none, /"workflow"/);
    assert.match(none, /stored workflow/);
    assert.match(await refused("execute_workflow", { context: { a: 1 } }), /it was given "context"/);
    assert.match(await refused("execute_workflow", { graph: { nodes: [] }, workflow: "x" }), /not both/);
    assert.match(await refused("execute_workflow", { workflow: 42 }), /"workflow" must be a string/);
    for (const tool of ["get_run", "cancel_run", "retry_run", "redeliver_final_callback"]) {
        assert.match(await refused(tool, {}), /needs "run_id"/, tool);
        assert.match(await refused(tool, { id: "x" }), /it was given "id"/, tool);
    }
    for (const tool of ["get_workflow", "delete_workflow", "save_workflow"]) {
        assert.match(await refused(tool, {}), /needs "name"/, tool);
    }
    assert.match(await refused("save_workflow", { name: "x" }), /needs "graph"/);
    assert.match(await refused("list_runs", { status: { paused: true } }), /"status" must be/);
});

test("the routes' own validation and errors, unchanged", { timeout: 60_000 }, async () => {
    // Each tool error is, word for word, what the route answers to the same request.
    const same = async (toolResult, method, path, body) => {
        assert.equal(toolResult.isError, true, JSON.stringify(toolResult.answer));
        const r = await worker.fetchJson(path, { method, ...(body === undefined ? {} : { body }) });
        assert.ok(r.status >= 400, r.text);
        assert.deepEqual(toolResult.answer, r.body, `${method} ${path}`);
    };
    await same(await call("list_runs", { status: ["paused", "asleep"] }), "GET", "/runs?status=paused,asleep");
    await same(await call("list_runs", { limit: 0 }), "GET", "/runs?limit=0");
    await same(await call("list_workflows", { limit: 5000 }), "GET", "/workflows?limit=5000");
    await same(await call("get_workflow", { name: "no-such-flow" }), "GET", "/workflows/no-such-flow");
    await same(await call("delete_workflow", { name: "no-such-flow" }), "DELETE", "/workflows/no-such-flow");
    await same(await call("save_workflow", { name: "bad name!", graph: { nodes: [{ id: "a", type: "Input" }] } }), "PUT", "/workflows/bad%20name!", { nodes: [{ id: "a", type: "Input" }] });
    const badGraph = { nodes: [{ id: "a", type: "Component" }], edges: [{ from: "a", to: "ghost" }] };
    const invalid = await call("save_workflow", { name: "broken", graph: badGraph });
    await same(invalid, "PUT", "/workflows/broken", badGraph);
    assert.equal(invalid.answer.error.code, "invalid_graph");
    assert.ok(invalid.answer.error.problems.length >= 2, JSON.stringify(invalid.answer));

    // A run that is not failed cannot be retried; one without a final_callback_url has nothing to redeliver.
    const quick = await call("execute_workflow", { graph: { nodes: [{ id: "only", type: "Input" }] } });
    assert.equal(quick.answer.status, "completed");
    const retry = await call("retry_run", { run_id: quick.answer.run_id });
    await same(retry, "POST", `/runs/${quick.answer.run_id}/retry`);
    assert.equal(retry.answer.error.code, "not_retryable");
    const redeliver = await call("redeliver_final_callback", { run_id: quick.answer.run_id });
    await same(redeliver, "POST", `/runs/${quick.answer.run_id}/redeliver`);
    assert.equal(redeliver.answer.error.code, "invalid_request");
    assert.equal((await call("retry_run", { run_id: "no-such-run-0123456789" })).answer.error.code, "not_found");
});

test("output schemas are offered only to clients that are sent structured content", { timeout: 60_000 }, async () => {
    const list = async (headers) => {
        const res = await fetch(`${worker.url}/mcp`, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json, text/event-stream", authorization: `Bearer ${TEST_API_KEY}`, ...headers },
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
        });
        assert.equal(res.status, 200);
        return (await res.json()).result.tools;
    };
    const modern = await list({ "mcp-protocol-version": "2025-06-18" });
    assert.ok(modern.every((t) => t.outputSchema?.type === "object"), "2025-06-18: every tool has its outputSchema");
    assert.deepEqual(modern.map((t) => t.name).sort(), Object.keys(TOOLS).sort());
    for (const headers of [{ "mcp-protocol-version": "2025-03-26" }, {}]) {
        const older = await list(headers);
        assert.equal(older.length, modern.length);
        for (const tool of older) {
            // Told of an outputSchema, a client would expect structured content, which an older
            // revision is not sent; everything else is the same.
            assert.equal(tool.outputSchema, undefined, `${tool.name}: no outputSchema for ${JSON.stringify(headers)}`);
            const { outputSchema, ...rest } = modern.find((m) => m.name === tool.name);
            assert.deepEqual(tool, rest);
        }
    }
});
