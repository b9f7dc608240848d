// Who may trigger, read and resume runs; secret rotation; redaction; configurable limits —
// end to end in workerd.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startWorker, startComponent, freePort, TEST_API_KEY_HASH } from "./harness.mjs";
import { sha256hex as sha256 } from "./harness.mjs";
import { assertCallbackAnswer } from "./settle.mjs";

/** Where a run's record is kept in KV: `runs/{owner tag}/{id}` for listed ids, `run:{id}` for 32-hex ones. */
const recordKey = (id) => {
    const m = /^([0-9a-f]{16})-[0-9a-f]{11}-[0-9a-f]+$/.exec(id);
    return m ? `runs/${m[1]}/${id}` : `run:${id}`;
};

/** A component that answers pending and remembers the callback URL it was given. */
async function pendingComponent(taskId) {
    const seen = [];
    const c = await startComponent((body) => {
        seen.push(body);
        return { pending: true, task_id: taskId };
    });
    return { ...c, seen, callbackUrl: () => seen.at(-1).callback_url };
}

const graphOf = (componentId, data = {}) => ({
    nodes: [
        { id: "work", type: "Component", componentId, data },
        { id: "out", type: "Output" },
    ],
    edges: [{ from: "work", to: "out", type: "PIPE" }],
});

test("a run belongs to the key that started it; other keys see 404", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { API_KEY_HASHES: `${TEST_API_KEY_HASH},${sha256("key-b")}` } });
    try {
        const r = await w.fetchJson("/execute", { body: { graph: graphOf("comp_passthrough") } });
        assert.equal(r.status, 200);
        const id = r.body.run_id;
        assert.equal((await w.fetchJson(`/runs/${id}`)).status, 200);
        const other = await w.fetchJson(`/runs/${id}`, { apiKey: "key-b" });
        assert.equal(other.status, 404);
        assert.equal(other.body.error.code, "not_found");
        // The header existing clients send works as well as Bearer.
        const viaHeader = await w.fetchJson(`/runs/${id}`, { apiKey: null, headers: { "X-Arcrun-API-Key": "test-key" } });
        assert.equal(viaHeader.status, 200);
        for (const apiKey of [null, "wrong-key"]) {
            const denied = await w.fetchJson(`/runs/${id}`, { apiKey });
            assert.equal(denied.status, 401);
            assert.equal(denied.body.error.code, "unauthorized");
        }
        // The stored owner is a hash, never the key itself — in the record or in its KV key
        // (`runs/{first 16 hex digits of the key's hash}/{run_id}`).
        const snapshot = await w.kvSnapshot();
        assert.deepEqual([...snapshot.keys()], [`runs/${TEST_API_KEY_HASH.slice(0, 16)}/${id}`]);
        const stored = [...snapshot.keys(), ...snapshot.values()].join("");
        assert.ok(!stored.includes("test-key"));
    } finally {
        await w.stop();
    }
});

test("with no API keys configured the deployment fails closed and says how to fix it", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { API_KEY_HASHES: "" } });
    try {
        const r = await w.fetchJson("/execute", { body: { graph: graphOf("comp_passthrough") } });
        assert.equal(r.status, 503);
        assert.equal(r.body.error.code, "misconfigured");
        assert.equal(
            r.body.error.message,
            "no API keys are configured, so runs cannot be triggered or read: set the API_KEY_HASHES secret to the SHA-256 hex of " +
                "each key (`npm run hash-key -- <key>`, then `wrangler secret put API_KEY_HASHES`)",
        );
        assert.equal((await w.fetchJson(`/runs/${"a".repeat(32)}`)).status, 503);
        assert.equal((await w.kvSnapshot()).size, 0);
    } finally {
        await w.stop();
    }
});

test("the bare /workflows/resume route is refused unless explicitly enabled", { timeout: 60_000 }, async () => {
    const w = await startWorker();
    try {
        const r = await w.fetchJson("/workflows/resume", { body: { task_id: "t", success: true } });
        assert.equal(r.status, 401);
        assert.equal(r.body.error.code, "unauthorized");
        assert.equal(
            r.body.error.message,
            "callbacks must use the signed callback_url they were given; the bare /workflows/resume route is disabled (ALLOW_BARE_RESUME)",
        );
    } finally {
        await w.stop();
    }
});

test("rotating CALLBACK_SECRET keeps paused runs resumable through CALLBACK_SECRET_PREVIOUS", { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "arcrun-rotate-"));
    const port = await freePort();
    const comp = await pendingComponent("rotate-task");
    let w = await startWorker({ port, persistDir: dir, bindings: { CALLBACK_SECRET: "old-secret" } });
    try {
        const t = (await w.fetchJson("/execute", { body: { graph: graphOf(comp.url) } })).body;
        assert.equal(t.status, "paused");
        const cb = comp.callbackUrl();
        await w.stop();
        const body = JSON.stringify({ task_id: "rotate-task", success: true, data: { ok: 1 } });

        // Rotated without keeping the old secret: the outstanding URL no longer verifies.
        w = await startWorker({ port, persistDir: dir, bindings: { CALLBACK_SECRET: "new-secret" } });
        let r = await fetch(cb, { method: "POST", body });
        assert.equal(r.status, 401);
        assert.equal((await r.json()).error.code, "unauthorized");
        await w.stop();

        w = await startWorker({
            port,
            persistDir: dir,
            bindings: { CALLBACK_SECRET: "new-secret", CALLBACK_SECRET_PREVIOUS: "old-secret" },
        });
        r = await fetch(cb, { method: "POST", body });
        assert.equal(r.status, 200);
        assertCallbackAnswer(await r.json(), { status: "completed", run_id: t.run_id, task_id: "rotate-task" });
    } finally {
        await w.stop();
        await comp.close();
        await rm(dir, { recursive: true, force: true });
    }
});

test("credentials are redacted in responses but reach components intact", { timeout: 60_000 }, async () => {
    const comp = await startComponent((body) => ({ ok: true, echo_token: body.access_token }));
    const w = await startWorker({ bindings: { REDACT_FIELDS: "ssn" } });
    try {
        const context = { api_key: "sk-live-123", nested: { password: "hunter2" }, ssn: "078-05-1120", max_tokens: 50 };
        const graph = graphOf(comp.url, { access_token: "tok-456" });
        const r = await w.fetchJson("/execute", { body: { graph, context } });
        assert.equal(r.body.status, "completed");
        const sent = comp.requests()[0].body;
        assert.equal(sent.api_key, "sk-live-123");
        assert.equal(sent.nested.password, "hunter2");
        assert.equal(sent.access_token, "tok-456");
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        for (const shown of [r.text, read.text]) {
            for (const secret of ["sk-live-123", "hunter2", "078-05-1120", "tok-456", "?token="]) {
                assert.ok(!shown.includes(secret), `${secret} leaked`);
            }
        }
        assert.equal(r.body.data.api_key, "[redacted]");
        assert.equal(r.body.data.max_tokens, 50, "look-alike fields are kept");
        assert.equal(r.body.data.ok, true);
    } finally {
        await w.stop();
        await comp.close();
    }
});

test("limits are configurable and each gives a clear error", { timeout: 60_000 }, async () => {
    const w = await startWorker({
        bindings: { MAX_BODY_BYTES: "4000", MAX_NODES: "3", MAX_EDGES: "2", MAX_FOREACH_ITEMS: "5", MAX_TEMPLATE_BYTES: "100" },
    });
    try {
        let r = await w.fetchJson("/execute", { body: { graph: graphOf("comp_passthrough"), context: { pad: "x".repeat(5000) } } });
        assert.equal(r.status, 413);
        assert.deepEqual(r.body, { success: false, error: { code: "payload_too_large", message: "the request body exceeds 4000 bytes" } });

        const many = { nodes: ["a", "b", "c", "d"].map((id) => ({ id, type: "Input" })), edges: [] };
        r = await w.fetchJson("/execute", { body: { graph: many } });
        assert.equal(r.status, 400);
        assert.equal(r.body.error.code, "invalid_graph");
        assert.deepEqual(r.body.error.problems, [{ at: "graph.nodes", message: "has 4 nodes; the limit is 3" }]);

        const edges = { nodes: [{ id: "a", type: "Input" }, { id: "b", type: "Output" }], edges: [1, 2, 3].map(() => ({ from: "a", to: "b", type: "PIPE" })) };
        r = await w.fetchJson("/execute", { body: { graph: edges } });
        assert.equal(r.status, 400);
        assert.equal(r.body.error.code, "invalid_graph");
        assert.deepEqual(r.body.error.problems, [{ at: "graph.edges", message: "has 3 edges; the limit is 2" }]);

        const foreach = {
            nodes: [{ id: "list", type: "Input" }, { id: "each", type: "Component", componentId: "comp_passthrough" }],
            edges: [{ from: "list", to: "each", type: "FOREACH" }],
        };
        r = await w.fetchJson("/execute", { body: { graph: foreach, context: { items: [1, 2, 3, 4, 5, 6] } } });
        assert.equal(r.body.status, "failed");
        assert.deepEqual(r.body.error, { code: "node_failed", message: "FOREACH over 6 items exceeds the limit of 5", node_id: "each" });
        r = await w.fetchJson("/execute", { body: { graph: foreach, context: { items: [1, 2, 3, 4, 5] } } });
        assert.equal(r.body.status, "completed", "exactly at the limit");
        assert.equal(r.body.data.count, 5);

        const explode = graphOf("comp_passthrough", { boom: "{{s}}{{s}}{{s}}{{s}}" });
        r = await w.fetchJson("/execute", { body: { graph: explode, context: { s: "y".repeat(40) } } });
        assert.equal(r.body.status, "failed");
        assert.deepEqual(r.body.error, { code: "node_failed", message: "templates expanded to more than 100 bytes (MAX_TEMPLATE_BYTES)", node_id: "work" });
    } finally {
        await w.stop();
    }
});

test("a run record over MAX_RUN_RECORD_BYTES keeps its newest trace, with a visible marker", { timeout: 60_000 }, async () => {
    // comp_counter answers {"count": n}: the outputs a run holds stay small, so the record's size
    // is in its graph and trace. (A comp_passthrough chain would hold 60 copies of the context,
    // date variables included: more than the finished record, which releases them.)
    const nodes = [{ id: "in", type: "Input" }];
    const edges = [];
    for (let i = 0; i < 60; i++) {
        nodes.push({ id: `n${i}`, type: "Component", componentId: "comp_counter" });
        edges.push({ from: i === 0 ? "in" : `n${i - 1}`, to: `n${i}`, type: "PIPE" });
    }
    const graph = { nodes, edges };
    let w = await startWorker();
    let size;
    try {
        const r = await w.fetchJson("/execute", { body: { graph } });
        size = (await w.kvSnapshot()).get(recordKey(r.body.run_id)).length;
        assert.equal(r.body.trace.length, 61);
        assert.deepEqual(r.body.data, { count: 60 });
    } finally {
        await w.stop();
    }
    w = await startWorker({ bindings: { MAX_RUN_RECORD_BYTES: String(size - 1500) } });
    try {
        const r = await w.fetchJson("/execute", { body: { graph } });
        assert.equal(r.body.status, "completed");
        const dropped = r.body.trace_truncated.dropped_entries;
        assert.ok(Number.isInteger(dropped) && dropped > 0 && dropped < 61, JSON.stringify(r.body.trace_truncated));
        // Exactly the oldest are dropped: what is kept is the newest, in order.
        const ids = nodes.map((n) => n.id);
        assert.deepEqual(r.body.trace.map((e) => e.node_id), ids.slice(dropped), "the newest entries are kept");
        const read = await w.fetchJson(`/runs/${r.body.run_id}`);
        assert.deepEqual(read.body.trace_truncated, { dropped_entries: dropped });
        assert.deepEqual(read.body.trace, r.body.trace);
        const stored = (await w.kvSnapshot()).get(recordKey(r.body.run_id));
        assert.ok(stored.length <= size - 1500, `stored ${stored.length} bytes, limit ${size - 1500}`);
    } finally {
        await w.stop();
    }
});
