// Bounds on what callers, components and daemons send, end to end in workerd: redirects are not
// followed (component calls, polls' targets alike, final callbacks), and a heartbeat's progress
// is bounded.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import { startWorker, startComponent, pendingComponent, postHeartbeat, waitForStatus } from "./harness.mjs";
import { sleep } from "./harness.mjs";

let worker;
let target;

before(async () => {
    worker = await startWorker();
    // Where every redirect points: if anything arrives here, a redirect was followed.
    target = await startComponent(() => ({ followed: true }));
});

after(async () => {
    await worker?.stop();
    await target?.close();
});

const single = (componentId, extra = {}) => ({ nodes: [{ id: "c", type: "Component", componentId, ...extra }], edges: [] });

test("a component that answers a redirect fails its node, and the redirect is not followed", { timeout: 60_000 }, async () => {
    for (const status of [301, 302, 307, 308]) {
        const redirecting = await startComponent(() => ({ status, body: "", headers: { location: `${target.url}/elsewhere` } }));
        try {
            const r = await worker.fetchJson("/execute", { body: { graph: single(redirecting.url) } });
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.status, "failed", r.text);
            assert.equal(r.body.error.code, "node_failed");
            assert.match(r.body.error.message, new RegExp(`redirect \\(HTTP ${status} to ${target.url}/elsewhere\\); redirects are not followed`), r.body.error.message);
            assert.equal(redirecting.hits(), 1);
        } finally {
            await redirecting.close();
        }
    }
    assert.equal(target.hits(), 0, "no redirect was followed");
});

test("a final callback answered with a redirect is a failed attempt, retried, never followed", { timeout: 60_000 }, async () => {
    const seen = [];
    const receiver = http.createServer((req, res) => {
        seen.push(Date.now());
        req.resume();
        res.writeHead(307, { location: `${target.url}/hook` });
        res.end();
    });
    await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    try {
        const url = `http://127.0.0.1:${receiver.address().port}/hook`;
        const quick = { nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data: { n: 1 } }], edges: [{ from: "in", to: "out", type: "PIPE" }] };
        const r = await worker.fetchJson("/execute", { body: { graph: quick, final_callback_url: url } });
        assert.equal(r.body.status, "completed", r.text);
        // The first attempt at once, the second about a second later: both answered 307.
        const deadline = Date.now() + 15_000;
        let run;
        while (Date.now() < deadline) {
            run = await worker.fetchJson(`/runs/${r.body.run_id}`);
            if ((run.body.deliveries ?? []).length >= 2) break;
            await sleep(200);
        }
        assert.deepEqual(run.body.deliveries.slice(0, 2).map((a) => a.status), [307, 307], JSON.stringify(run.body.deliveries));
        assert.equal(run.body.final_callback.state, "retrying");
        assert.ok(seen.length >= 2);
        assert.equal(target.hits(), 0, "the redirect's target was never sent the event");
    } finally {
        await new Promise((resolve) => receiver.close(resolve));
    }
});

test("a status URL that answers a redirect is not followed: each poll counts as unusable", { timeout: 60_000 }, async () => {
    const redirecting = await startComponent(() => ({ status: 302, body: "", headers: { location: `${target.url}/status` } }));
    try {
        const graph = { nodes: [{ id: "job", type: "Component", componentId: "poll_task", data: { url: `${redirecting.url}/status`, interval_seconds: 1 } }], edges: [] };
        const r = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "paused", r.text);
        const done = await waitForStatus(worker, r.body.run_id, ["completed", "failed"], 20_000);
        assert.equal(done.body.status, "failed", done.text);
        assert.equal(done.body.error.node_id, "job");
        assert.equal(redirecting.hits(), 3, "three polls, each answered 302");
        assert.equal(target.hits(), 0, "no poll followed the redirect");
    } finally {
        await redirecting.close();
    }
});

test("a heartbeat's progress is bounded: a larger one is refused with 400 and changes nothing", { timeout: 60_000 }, async () => {
    const pending = await pendingComponent();
    try {
        const r = await worker.fetchJson("/execute", { body: { graph: single(pending.url, { wait_timeout_seconds: 60 }) } });
        assert.equal(r.body.status, "paused", r.text);
        const call = pending.calls[0];
        const ok = await postHeartbeat(call.callbackUrl, { progress: { pct: 10, note: "x".repeat(3000) } });
        assert.equal(ok.status, 200, ok.text);
        const expiresAt = ok.body.expires_at;
        for (let i = 0; i < 3; i++) {
            const big = await postHeartbeat(call.callbackUrl, { progress: { blob: "x".repeat(900_000) }, extend_seconds: 3600 });
            assert.equal(big.status, 400, big.text.slice(0, 300));
            assert.equal(big.body.error.code, "invalid_request");
            assert.match(big.body.error.message, /progress is \d+ bytes of JSON; a heartbeat may report at most 4096/);
        }
        const run = await worker.fetchJson(`/runs/${r.body.run_id}`);
        assert.equal(run.body.status, "paused");
        assert.equal(run.body.waits[0].progress.pct, 10, "the progress kept is the last accepted");
        assert.equal(run.body.waits[0].expires_at, expiresAt, "the deadline did not move");
    } finally {
        await pending.close();
    }
});
