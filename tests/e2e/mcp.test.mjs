// End-to-end tests of the MCP endpoint (`POST /mcp`, Streamable HTTP with JSON answers, no
// sessions) in workerd, driven by the official TypeScript SDK client: an agent starts a
// workflow, gets `paused` with its run_id and task_id, and reads the finished run later.
// Protocol-level edge cases (unknown method, malformed JSON, notifications, GET) are sent with
// plain fetch, as the SDK would never send them.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, ErrorCode, LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js";
import { startWorker, pendingComponent, waitUntil, TEST_API_KEY } from "./harness.mjs";
import { startDaemon } from "../../daemon/daemon.mjs";

const TOOL_NAMES = [
    "cancel_run", "delete_workflow", "execute_workflow", "get_run", "get_workflow", "list_runs",
    "list_workflows", "redeliver_final_callback", "retry_run", "save_workflow",
];
const SERVER_VERSIONS = ["2025-06-18", "2025-03-26", "2024-11-05"];

let worker;
let daemon;
let stuck; // a component that answers pending and never calls back
let client;

/** A connected SDK client with `headers` on every request (the API key by default). */
async function connect(headers = { Authorization: `Bearer ${TEST_API_KEY}` }) {
    const transport = new StreamableHTTPClientTransport(new URL(`${worker.url}/mcp`), { requestInit: { headers } });
    const c = new Client({ name: "arcrun-e2e", version: "0.0.0" });
    await c.connect(transport);
    return c;
}

/** Calls a tool and checks that the answer comes once: as structuredContent (which the SDK
 * checks against the tool's outputSchema) beside a one-line summary, or, for an error, as the
 * text alone. `answer` is the route's answer either way. */
async function call(name, args = {}) {
    const result = await client.callTool({ name, arguments: args });
    assert.equal(typeof result.isError, "boolean", `isError of ${name}: ${JSON.stringify(result)}`);
    assert.equal(result.content.length, 1);
    assert.equal(result.content[0].type, "text");
    const text = result.content[0].text;
    if (result.isError) {
        assert.equal(result.structuredContent, undefined, "an error is told once, as text");
        result.answer = JSON.parse(text);
    } else {
        assert.ok(result.structuredContent, `${name} answers structured content`);
        assert.ok(text.length < 300 && !text.startsWith("{"), `a summary, not a second copy: ${text}`);
        result.answer = result.structuredContent;
    }
    return result;
}

/** A raw JSON-RPC POST to /mcp: `{status, headers, text, body}` (body null when empty). */
async function rawPost(body, { headers = {}, apiKey = TEST_API_KEY } = {}) {
    const res = await fetch(`${worker.url}/mcp`, {
        method: "POST",
        headers: {
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
            ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed = null;
    if (text !== "") {
        try {
            parsed = JSON.parse(text);
        } catch {
            parsed = text;
        }
    }
    return { status: res.status, headers: res.headers, text, body: parsed };
}

/** get_run until the run's status is one of `states` (≤ timeoutMs); returns that tool result. */
async function pollRun(runId, states, timeoutMs = 10_000) {
    let last;
    try {
        return await waitUntil(`run ${runId} to be ${states}`, async () => {
            last = await call("get_run", { run_id: runId });
            return !last.isError && states.includes(last.answer.status) ? last : null;
        }, { timeoutMs, everyMs: 150 });
    } catch (err) {
        err.message += `; last get_run: ${JSON.stringify(last?.answer)?.slice(0, 600)}`;
        throw err;
    }
}

/** A graph whose one component is the reference daemon, so a run pauses and then completes. */
function daemonGraph(result) {
    return {
        nodes: [
            { id: "in", type: "Input" },
            { id: "slow", type: "Component", componentId: daemon.url, data: { result } },
            { id: "out", type: "Output", data: { got: "{{slow.data.result}}", topic: "{{topic}}" } },
        ],
        edges: [
            { from: "in", to: "slow", type: "PIPE" },
            { from: "slow", to: "out", type: "PIPE" },
        ],
    };
}

before(async () => {
    worker = await startWorker();
    daemon = await startDaemon({ delayMs: 300, retryDelaysMs: [0, 200, 500, 1000], log: () => {} });
    stuck = await pendingComponent();
    client = await connect();
}, { timeout: 120_000 });

after(async () => {
    await client?.close().catch(() => {});
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await daemon?.close();
        await stuck?.close();
    }
}, { timeout: 120_000 });

test("initialize negotiates a protocol version and names the server; ping answers", { timeout: 60_000 }, async () => {
    const info = client.getServerVersion();
    assert.equal(info.name, "arcrun");
    assert.equal(typeof info.version, "string");
    assert.ok(client.getServerCapabilities()?.tools, "the tools capability is offered");
    assert.match(client.getInstructions() ?? "", /get_run/);
    // The SDK asks for its newest revision; the server echoes it when it speaks it, else offers
    // its own newest (2025-06-18), which the SDK accepts.
    const expected = SERVER_VERSIONS.includes(LATEST_PROTOCOL_VERSION) ? LATEST_PROTOCOL_VERSION : SERVER_VERSIONS[0];
    assert.equal(client.transport.protocolVersion, expected, `SDK asked ${LATEST_PROTOCOL_VERSION}`);
    assert.deepEqual(await client.ping(), {});

    // Each known revision is echoed back; an unknown one gets the newest the server speaks.
    for (const [asked, expected] of [
        ["2024-11-05", "2024-11-05"],
        ["2025-03-26", "2025-03-26"],
        ["2025-06-18", "2025-06-18"],
        ["1999-01-01", "2025-06-18"],
    ]) {
        const r = await rawPost({
            jsonrpc: "2.0",
            id: `init-${asked}`,
            method: "initialize",
            params: { protocolVersion: asked, capabilities: {}, clientInfo: { name: "raw", version: "0" } },
        });
        assert.equal(r.status, 200, r.text);
        assert.match(r.headers.get("content-type") ?? "", /application\/json/);
        assert.equal(r.body.jsonrpc, "2.0");
        assert.equal(r.body.id, `init-${asked}`);
        assert.equal(r.body.result.protocolVersion, expected, `asked ${asked}: ${r.text}`);
        assert.equal(r.headers.get("mcp-session-id"), null, "no sessions");
    }
});

test("tools/list names the tools, each with an object inputSchema", { timeout: 60_000 }, async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), TOOL_NAMES);
    for (const tool of tools) {
        assert.equal(tool.inputSchema?.type, "object", `${tool.name}'s inputSchema`);
        assert.equal(typeof tool.description, "string");
    }
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    assert.deepEqual(byName.get_run.inputSchema.required, ["run_id"]);
    assert.deepEqual(byName.cancel_run.inputSchema.required, ["run_id"]);
    assert.deepEqual(
        Object.keys(byName.execute_workflow.inputSchema.properties).sort(),
        ["context", "final_callback_url", "graph", "workflow"],
    );
    assert.deepEqual(Object.keys(byName.list_runs.inputSchema.properties).sort(), ["cursor", "limit", "status"]);
});

test("execute_workflow pauses on the daemon; the daemon calls back; get_run reads it completed; list_runs shows it", { timeout: 60_000 }, async () => {
    const started = await call("execute_workflow", { graph: daemonGraph("late"), context: { topic: "mcp" } });
    assert.equal(started.isError, false, JSON.stringify(started.answer));
    const t = started.answer;
    assert.equal(t.success, true);
    assert.equal(t.status, "paused");
    assert.equal(t.paused, true);
    assert.equal(t.paused_node_id, "slow");
    assert.equal(typeof t.run_id, "string");
    assert.ok(t.run_id.length > 0);
    assert.equal(typeof t.task_id, "string");
    assert.ok(t.task_id.startsWith("task-"), t.task_id);
    assert.deepEqual(t.trace.map((e) => `${e.node_id}:${e.status}`), ["in:succeeded", "slow:paused"]);

    // Read back over MCP while (most likely) still paused: it is this run.
    const early = await call("get_run", { run_id: t.run_id });
    assert.equal(early.isError, false);
    assert.equal(early.answer.run_id, t.run_id);
    assert.ok(["paused", "running", "completed"].includes(early.answer.status), early.answer.status);

    // The daemon answers after 300 ms and POSTs its callback; the run then completes.
    const done = await pollRun(t.run_id, ["completed", "failed", "cancelled"]);
    const run = done.answer;
    assert.equal(run.status, "completed", JSON.stringify(run).slice(0, 600));
    assert.equal(run.run_id, t.run_id);
    assert.equal(run.data.got, "late");
    assert.equal(run.data.topic, "mcp");
    assert.deepEqual(run.waits, []);
    assert.deepEqual(
        run.trace.map((e) => `${e.node_id}:${e.status}`),
        ["in:succeeded", "slow:paused", "slow:succeeded", "out:succeeded"],
    );
    const task = daemon.stats().tasks.find((x) => x.task_id === t.task_id);
    assert.ok(task?.delivered, "the daemon delivered its callback");

    // Same answer as the HTTP API's GET /runs/{id}.
    const http = await worker.fetchJson(`/runs/${t.run_id}`);
    assert.equal(http.status, 200);
    assert.deepEqual(http.body, run);

    // list_runs shows it (KV listings are eventually consistent: allow a moment).
    let listed;
    const entry = await waitUntil("list_runs to show the completed run", async () => {
        listed = await call("list_runs", { status: "completed", limit: 100 });
        assert.equal(listed.isError, false, JSON.stringify(listed.answer));
        return listed.answer.runs.find((r) => r.run_id === t.run_id);
    }, { timeoutMs: 10_000, everyMs: 200 });
    assert.equal(entry.status, "completed");
    assert.equal(entry.open_waits, 0);
    for (const r of listed.answer.runs) assert.equal(r.status, "completed", "filtered by status");
    const all = await call("list_runs", {});
    assert.ok(all.answer.runs.some((r) => r.run_id === t.run_id), "listed without a filter too");
    const one = await call("list_runs", { limit: 1 });
    assert.equal(one.isError, false);
    assert.equal(one.answer.runs.length, 1, "limit is honoured");
});

test("cancel_run cancels another paused run", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "wait", type: "Component", componentId: `${stuck.url}/never` },
            { id: "out", type: "Output", data: { never: true } },
        ],
        edges: [{ from: "wait", to: "out", type: "PIPE" }],
    };
    const started = await call("execute_workflow", { graph });
    assert.equal(started.isError, false, JSON.stringify(started.answer));
    const { run_id: runId, task_id: taskId, status } = started.answer;
    assert.equal(status, "paused");
    assert.equal(typeof taskId, "string");

    const pausedList = await waitUntil("list_runs to show the paused run", async () => {
        const l = await call("list_runs", { status: "paused" });
        return l.answer.runs.find((r) => r.run_id === runId);
    }, { timeoutMs: 10_000, everyMs: 200 });
    assert.equal(pausedList.open_waits, 1);

    const cancelled = await call("cancel_run", { run_id: runId });
    assert.equal(cancelled.isError, false, JSON.stringify(cancelled.answer));
    assert.equal(cancelled.answer.status, "cancelled");
    assert.equal(cancelled.answer.run_id, runId);
    assert.deepEqual(cancelled.answer.waits, []);

    const read = await call("get_run", { run_id: runId });
    assert.equal(read.answer.status, "cancelled");

    // A finished run cannot be cancelled again: a tool error with the API's 409 answer.
    const again = await call("cancel_run", { run_id: runId });
    assert.equal(again.isError, true);
    assert.equal(again.answer.success, false);
    assert.equal(again.answer.error.code, "run_finished");
});

test("execute_workflow runs a stored workflow by name", { timeout: 60_000 }, async () => {
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "out", type: "Output", data: { who: "{{name}}", stored: true } },
        ],
        edges: [{ from: "in", to: "out", type: "PIPE" }],
    };
    const put = await worker.fetchJson("/workflows/mcp-greeting", { method: "PUT", body: graph });
    assert.equal(put.status, 200, put.text);

    const r = await call("execute_workflow", { workflow: "mcp-greeting", context: { name: "agent" } });
    assert.equal(r.isError, false, JSON.stringify(r.answer));
    assert.equal(r.answer.status, "completed", JSON.stringify(r.answer));
    assert.equal(r.answer.success, true);
    assert.equal(r.answer.data.who, "agent");
    assert.equal(r.answer.data.stored, true);

    const read = await call("get_run", { run_id: r.answer.run_id });
    assert.equal(read.answer.status, "completed");
    assert.equal(read.answer.workflow, "mcp-greeting", "the run names its stored workflow");

    // An unknown stored workflow is a tool error, not a protocol error.
    const missing = await call("execute_workflow", { workflow: "no-such-workflow" });
    assert.equal(missing.isError, true);
    assert.equal(missing.answer.error.code, "not_found");
});

test("tool errors: an unknown run, an invalid graph, a missing run_id", { timeout: 60_000 }, async () => {
    const unknown = await call("get_run", { run_id: "no-such-run-0123456789" });
    assert.equal(unknown.isError, true);
    assert.equal(unknown.answer.success, false);
    assert.equal(unknown.answer.error.code, "not_found");

    const cancelUnknown = await call("cancel_run", { run_id: "no-such-run-0123456789" });
    assert.equal(cancelUnknown.isError, true);
    assert.equal(cancelUnknown.answer.error.code, "not_found");

    const invalid = await call("execute_workflow", { graph: { nodes: [], edges: [{ from: "a", to: "b", type: "PIPE" }] } });
    assert.equal(invalid.isError, true);
    assert.equal(invalid.answer.error.code, "invalid_graph");
    assert.ok(Array.isArray(invalid.answer.error.problems));

    // A missing run_id is invalid params (a JSON-RPC error).
    await assert.rejects(client.callTool({ name: "get_run", arguments: {} }), (err) => {
        assert.ok(err instanceof McpError, String(err));
        assert.equal(err.code, ErrorCode.InvalidParams);
        return true;
    });
});

test("without a key (or with a wrong one) the SDK transport fails with 401", { timeout: 60_000 }, async () => {
    for (const headers of [{}, { Authorization: "Bearer not-the-key" }]) {
        await assert.rejects(connect(headers), (err) => {
            assert.ok(err instanceof StreamableHTTPError, `${err?.constructor?.name}: ${err}`);
            assert.equal(err.code, 401, String(err));
            return true;
        });
    }
    const raw = await rawPost({ jsonrpc: "2.0", id: 1, method: "ping" }, { apiKey: null });
    assert.equal(raw.status, 401, raw.text);
});

test("an unknown tool and an unknown method are JSON-RPC errors, not 5xx", { timeout: 60_000 }, async () => {
    await assert.rejects(client.callTool({ name: "drop_database", arguments: {} }), (err) => {
        assert.ok(err instanceof McpError, String(err));
        assert.equal(err.code, ErrorCode.InvalidParams);
        assert.match(err.message, /drop_database/);
        return true;
    });

    const tool = await rawPost({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "drop_database", arguments: {} } });
    assert.equal(tool.status, 200, tool.text);
    assert.equal(tool.body.id, 7);
    assert.equal(tool.body.error.code, -32602);
    assert.equal(tool.body.result, undefined);

    const method = await rawPost({ jsonrpc: "2.0", id: "m1", method: "resources/list" });
    assert.equal(method.status, 200, method.text);
    assert.equal(method.body.jsonrpc, "2.0");
    assert.equal(method.body.id, "m1");
    assert.equal(method.body.error.code, -32601);
    assert.equal(typeof method.body.error.message, "string");
});

test("malformed JSON is 400 -32700; a non-object body is 400 -32600; a notification is 202 with no body", { timeout: 60_000 }, async () => {
    const bad = await rawPost('{"jsonrpc": "2.0", "id": 1, "method": ');
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.jsonrpc, "2.0");
    assert.equal(bad.body.id, null);
    assert.equal(bad.body.error.code, -32700);

    for (const body of ["[]", JSON.stringify([{ jsonrpc: "2.0", id: 1, method: "ping" }]), "42", '"ping"', "null"]) {
        const r = await rawPost(body);
        assert.equal(r.status, 400, `${body}: ${r.text}`);
        assert.equal(r.body.id, null, body);
        assert.equal(r.body.error.code, -32600, `${body}: ${r.text}`);
    }

    const note = await rawPost({ jsonrpc: "2.0", method: "notifications/initialized" });
    assert.equal(note.status, 202, note.text);
    assert.equal(note.text, "");
});

test("GET /mcp is 405", { timeout: 60_000 }, async () => {
    for (const headers of [{ authorization: `Bearer ${TEST_API_KEY}`, accept: "text/event-stream" }, {}]) {
        const res = await fetch(`${worker.url}/mcp`, { headers });
        const text = await res.text();
        assert.equal(res.status, 405, text);
        assert.equal(JSON.parse(text).error.code, "method_not_allowed");
    }
});

test("JSON-RPC 2.0 exactly: the version named, ids a string or an integer; a body too large is 413", { timeout: 60_000 }, async () => {
    for (const message of [
        { id: 1, method: "ping" },
        { jsonrpc: "1.0", id: 1, method: "ping" },
        { jsonrpc: 2, id: 1, method: "ping" },
        { jsonrpc: "2.0", id: { sneaky: true }, method: "ping" },
        { jsonrpc: "2.0", id: [1], method: "ping" },
        { jsonrpc: "2.0", id: true, method: "ping" },
        { jsonrpc: "2.0", id: 1.5, method: "ping" },
        { jsonrpc: "2.0", id: null, method: "ping" },
    ]) {
        const r = await rawPost(message);
        const label = JSON.stringify(message);
        assert.equal(r.status, 400, `${label}: ${r.text}`);
        assert.equal(r.body.jsonrpc, "2.0", label);
        assert.equal(r.body.id, null, `${label}: an id that is not one is not echoed`);
        assert.equal(r.body.error.code, -32600, `${label}: ${r.text}`);
    }
    for (const id of ["a-string", 0, 42, -7]) {
        const r = await rawPost({ jsonrpc: "2.0", id, method: "ping" });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.id, id);
        assert.deepEqual(r.body.result, {});
    }
    const huge = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "execute_workflow", arguments: { context: { blob: "x".repeat(1_100_000) } } } });
    const big = await rawPost(huge);
    assert.equal(big.status, 413, big.text.slice(0, 300));
    assert.equal(big.body.error.code, -32600, big.text.slice(0, 300));
});

test("a run_id that cannot be one is refused before any gate is asked", { timeout: 60_000 }, async () => {
    for (const runId of ["../runs", "a b", "<script>", "x".repeat(65), "run/1", ""]) {
        const r = await rawPost({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "get_run", arguments: { run_id: runId } } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.error?.code, -32602, `${JSON.stringify(runId)}: ${r.text}`);
        assert.match(r.body.error.message, /run_id/);
        assert.equal(r.headers.get("x-arcrun-kv-ops"), "reads=0;writes=0;lists=0", "no KV read");
        assert.equal(r.headers.get("x-arcrun-do-ops"), null, "no gate reached");
    }
});

test("each result is sent once: structured (with a summary) to a 2025-06-18 client, as text to an older one", { timeout: 60_000 }, async () => {
    const started = await call("execute_workflow", { graph: { nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data: { big: "{{blob}}" } }], edges: [{ from: "in", to: "out", type: "PIPE" }] }, context: { blob: "y".repeat(200_000) } });
    assert.equal(started.answer.status, "completed");
    const runId = started.answer.run_id;
    // What the route answers (its context and its output each hold the blob): the tool's
    // answer is that, once, and a few hundred bytes of envelope.
    const route = await worker.fetchJson(`/runs/${runId}`);
    const once = route.text.length + 1000;
    const args = { jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "get_run", arguments: { run_id: runId } } };

    const modern = await rawPost(args, { headers: { "mcp-protocol-version": "2025-06-18" } });
    assert.equal(modern.status, 200, modern.text.slice(0, 300));
    const m = modern.body.result;
    assert.equal(m.structuredContent.run_id, runId);
    assert.equal(m.structuredContent.data.big.length, 200_000);
    assert.equal(m.content.length, 1);
    assert.match(m.content[0].text, new RegExp(`run ${runId} is completed`));
    assert.ok(modern.text.length < once, `one copy: ${modern.text.length} bytes, the route ${route.text.length}`);

    for (const headers of [{ "mcp-protocol-version": "2025-03-26" }, {}]) {
        const older = await rawPost(args, { headers });
        assert.equal(older.status, 200, older.text.slice(0, 300));
        const o = older.body.result;
        assert.equal(o.structuredContent, undefined, "no structured content for a revision without it");
        assert.equal(JSON.parse(o.content[0].text).data.big.length, 200_000);
        // As text, the JSON is escaped once more: still one copy.
        assert.ok(older.text.length < once * 1.1, `one copy: ${older.text.length} bytes, the route ${route.text.length}`);
    }
});
