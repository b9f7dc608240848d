// Checks the e2e harness itself against a tiny inline Worker (no wasm build needed): that
// workerd starts with the pinned Miniflare, that a Worker can call a loopback component,
// that KV is visible to the test, that persisted state survives a restart, and that the KV
// write limiter every e2e test runs behind refuses what Cloudflare would — also across a
// restart of workerd, a SIGKILL included.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { existsSync } from "node:fs";
import { startWorker, startComponent, freePort, sleep, REPO_ROOT, KV_WRITE_INTERVAL_MS } from "./harness.mjs";

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
    if (url.pathname === "/kv") {
      const { key, value } = await req.json();
      try {
        if (req.method === "DELETE") await env.RUNS.delete(key);
        else await env.RUNS.put(key, JSON.stringify(value));
      } catch (err) {
        // What KV's limit looks like to the Worker: the call fails.
        return Response.json({ refused: String(err?.message ?? err) }, { status: 429 });
      }
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

// ---------------------------------------------------------------------------------------
// The KV write limiter: positive controls. Every other e2e test passes only if the limiter
// refused nothing, which proves nothing unless it is seen to refuse. These go through the
// wrapper as startWorker installs it inside workerd (the inline Worker's env.RUNS is it).

const putKv = (w, key, method = "PUT") => w.fetchJson("/kv", { method, body: { key, value: { at: Date.now() } } });

test("the KV limiter refuses a second write to a key within a second, records it, and stop() fails on it", async () => {
    const w = await startWorker(inline);
    let stopped = false;
    try {
        const first = await putKv(w, "runs/x/1");
        assert.equal(first.status, 204, first.text);
        // Another key is its own: no refusal.
        assert.equal((await putKv(w, "runs/x/2")).status, 204);
        const second = await putKv(w, "runs/x/1");
        assert.equal(second.status, 429, second.text);
        assert.match(second.body.refused, /429 Too Many Requests.*runs\/x\/1/);
        // A delete is a write too.
        const del = await putKv(w, "runs/x/2", "DELETE");
        assert.equal(del.status, 429, del.text);

        const violations = await w.kvWriteViolations();
        assert.deepEqual(violations.map((v) => v.key), ["runs/x/1", "runs/x/2"]);
        for (const v of violations) assert.ok(v.gap_ms >= 0 && v.gap_ms < KV_WRITE_INTERVAL_MS, JSON.stringify(v));
        assert.equal((await w.kvSnapshot()).has("runs/x/2"), true, "the refused delete did not land");

        // Once the second has passed, the key takes a write again.
        await sleep(KV_WRITE_INTERVAL_MS + 50);
        assert.equal((await putKv(w, "runs/x/1")).status, 204);
        assert.equal((await w.kvWriteViolations()).length, 2);

        stopped = true;
        await assert.rejects(w.stop(), /faster than once a second \(2 refused\).*runs\/x\/1/);
    } finally {
        if (!stopped) await w.stop().catch(() => {});
    }
});

test("the KV limiter remembers last writes across a restart of workerd on the same persistDir, SIGKILL included", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "e2e-harness-limit-"));
    // Restarting takes longer than a second on a busy machine: a wider window makes "within
    // it" certain, the limiter's logic being the same whatever its width.
    const windowMs = 15_000;
    const limited = { persistDir: dir, kvWriteLimit: { windowMs }, ...inline };
    try {
        const port = await freePort();
        const first = await startWorker({ port, ...limited });
        assert.equal((await putKv(first, "runs/r/1")).status, 204);
        await first.kill(); // SIGKILL to workerd: nothing inside it survives
        await assert.rejects(putKv(first, "runs/r/1"), "the first workerd is gone");

        const second = await startWorker({ port, ...limited });
        let stopped = false;
        try {
            const again = await putKv(second, "runs/r/1");
            assert.equal(again.status, 429, `written again after the restart: ${again.text}`);
            assert.equal((await putKv(second, "runs/r/2")).status, 204, "a key not written before is free");
            const [v, ...more] = await second.kvWriteViolations();
            assert.deepEqual(more, []);
            assert.equal(v.key, "runs/r/1");
            assert.ok(v.gap_ms > 0 && v.gap_ms < windowMs, JSON.stringify(v));
            stopped = true;
            await assert.rejects(second.stop(), /faster than once a second \(1 refused\)/);
        } finally {
            if (!stopped) await second.stop().catch(() => {});
        }

        // Each state has its own memory: a Worker on another (in-memory) state writes the key at once.
        const other = await startWorker({ kvWriteLimit: { windowMs }, ...inline });
        try {
            assert.equal((await putKv(other, "runs/r/1")).status, 204);
        } finally {
            await other.stop();
        }
    } finally {
        await rm(dir, { recursive: true, force: true });
    }
});

const BUILT = existsSync(path.join(REPO_ROOT, "build", "index.js"));

test("the built Worker writes through the limiter: a stored workflow put twice in a second is refused once, then retried", { skip: !BUILT && "no build/index.js (npm run build)" }, async () => {
    const w = await startWorker();
    try {
        const graph = { nodes: [{ id: "in", type: "Input" }], edges: [] };
        assert.equal((await w.fetchJson("/workflows/twice", { method: "PUT", body: graph })).status, 200);
        const t0 = Date.now();
        const again = await w.fetchJson("/workflows/twice", { method: "PUT", body: graph });
        assert.equal(again.status, 200, again.text);
        // README: refused by KV, and tried once more a second later.
        assert.ok(Date.now() - t0 >= 900, `answered after ${Date.now() - t0} ms`);
        const violations = await w.kvWriteViolations();
        assert.equal(violations.length, 1, JSON.stringify(violations));
        assert.match(violations[0].key, /^workflows\/[0-9a-f]+\/twice$/);
    } finally {
        await w.stop(); // a stored workflow's pace is its caller's: not a failure of the Worker
    }
});
