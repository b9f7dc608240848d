// Checks the e2e harness itself against a tiny inline Worker (no wasm build needed): that
// workerd starts with the pinned Miniflare, that a Worker can call a loopback component,
// that KV is visible to the test, and that persisted state survives a restart.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startWorker, startComponent, freePort } from "./harness.mjs";

const INLINE_WORKER = `
export class TriggerClaim {}
export class RunGate {
  constructor(state) { this.state = state; }
  async fetch() {
    const n = ((await this.state.storage.get("n")) ?? 0) + 1;
    await this.state.storage.put("n", n);
    return Response.json({ n });
  }
}
export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (url.pathname === "/env") {
      return Response.json({ base: env.PUBLIC_BASE_URL, secret: env.CALLBACK_SECRET, keys: env.API_KEYS });
    }
    if (url.pathname === "/call") {
      const { target, payload } = await req.json();
      const res = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
      return Response.json({ status: res.status, body: await res.json() });
    }
    if (url.pathname === "/kv" && req.method === "PUT") {
      const { key, value } = await req.json();
      await env.RUNS.put(key, JSON.stringify(value));
      return new Response(null, { status: 204 });
    }
    if (url.pathname === "/gate") {
      return env.RUN_GATE.get(env.RUN_GATE.idFromName("one")).fetch(req);
    }
    return new Response("not found", { status: 404 });
  },
};
`;

const inline = { miniflare: { script: INLINE_WORKER } };

test("freePort gives a bindable loopback port", async () => {
    const port = await freePort();
    assert.ok(Number.isInteger(port) && port > 0 && port < 65536);
});

test("Worker starts on the chosen port with default and overridden bindings", async () => {
    const port = await freePort();
    const w = await startWorker({ port, bindings: { API_KEYS: "k1,k2" }, ...inline });
    try {
        assert.equal(w.port, port);
        assert.equal(w.url, `http://127.0.0.1:${port}`);
        const r = await w.fetchJson("/env");
        assert.equal(r.status, 200);
        assert.deepEqual(r.body, { base: `http://127.0.0.1:${port}`, secret: "test-secret", keys: "k1,k2" });
        const missing = await w.fetchJson("/nope");
        assert.equal(missing.status, 404);
        assert.equal(missing.body, "not found");
    } finally {
        await w.stop();
    }
});

test("a Worker can call a component on 127.0.0.1, and the component counts hits", async () => {
    const component = await startComponent((body) => {
        if (body.fail) return { status: 502, body: { success: false, error: "nope" } };
        return { success: true, data: { doubled: body.n * 2 } };
    });
    const w = await startWorker(inline);
    try {
        const ok = await w.fetchJson("/call", { body: { target: `${component.url}/double`, payload: { n: 21 } } });
        assert.equal(ok.status, 200);
        assert.deepEqual(ok.body, { status: 200, body: { success: true, data: { doubled: 42 } } });

        const bad = await w.fetchJson("/call", { body: { target: `${component.url}/double`, payload: { fail: true } } });
        assert.deepEqual(bad.body, { status: 502, body: { success: false, error: "nope" } });

        assert.equal(component.hits("/double"), 2);
        assert.equal(component.hits("/other"), 0);
        assert.equal(component.hits(), 2);
        assert.deepEqual(
            component.requests().map((r) => r.body),
            [{ n: 21 }, { fail: true }],
        );
    } finally {
        await w.stop();
        await component.close();
    }
});

test("kvSnapshot lists every key; persistDir keeps KV and Durable Object state across restarts", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "e2e-harness-"));
    try {
        const first = await startWorker({ persistDir: dir, ...inline });
        try {
            for (let i = 0; i < 3; i++) {
                const r = await first.fetchJson("/kv", { method: "PUT", body: { key: `run:${i}`, value: { i } } });
                assert.equal(r.status, 204);
            }
            assert.deepEqual((await first.fetchJson("/gate")).body, { n: 1 });
            const snap = await first.kvSnapshot();
            assert.deepEqual([...snap.keys()].sort(), ["run:0", "run:1", "run:2"]);
            assert.equal(snap.get("run:1"), '{"i":1}');
        } finally {
            await first.stop();
        }

        const second = await startWorker({ persistDir: dir, ...inline });
        try {
            const snap = await second.kvSnapshot({ json: true });
            assert.equal(snap.size, 3);
            assert.deepEqual(snap.get("run:2"), { i: 2 });
            assert.deepEqual((await second.fetchJson("/gate")).body, { n: 2 });
        } finally {
            await second.stop();
        }

        const fresh = await startWorker(inline);
        try {
            assert.equal((await fresh.kvSnapshot()).size, 0);
        } finally {
            await fresh.stop();
        }
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
});
