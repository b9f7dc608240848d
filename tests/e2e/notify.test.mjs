// The final callback to the caller, end to end in workerd: every delivery is verified with the
// `standardwebhooks` package (an implementation nobody here wrote), for completed, failed,
// timed-out and cancelled runs, during a secret rotation, through retries, a receiver that
// answers 410, and a redelivery; bad receiver URLs are refused and change nothing.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Webhook } from "standardwebhooks";

import { startWorker, startComponent, TEST_WEBHOOK_SECRET } from "./harness.mjs";
import { sleep } from "./harness.mjs";


/** A receiver on loopback that keeps each delivery's raw body and headers. `answer(n)` gives
 * the status for the n-th delivery (from 0). */
async function startReceiver(answer = () => 200) {
    const deliveries = [];
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", () => {
            const status = answer(deliveries.length);
            deliveries.push({ at: Date.now(), headers: req.headers, raw: Buffer.concat(chunks).toString("utf8"), status });
            res.writeHead(status, { "content-type": "text/plain" });
            res.end("ok");
        });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}/hooks?token=receiver-secret`,
        deliveries,
        close: () => new Promise((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
        }),
    };
}

/** Waits until `receiver` has `n` deliveries. */
async function delivered(receiver, n, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (receiver.deliveries.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} deliveries, got ${receiver.deliveries.length}`);
        await sleep(50);
    }
    return receiver.deliveries;
}

/** Verifies a delivery with the standardwebhooks package and returns its parsed payload. */
function verified(delivery, secret = TEST_WEBHOOK_SECRET) {
    return new Webhook(secret).verify(delivery.raw, delivery.headers);
}

const quickGraph = (data = { n: 1 }) => ({
    name: "notify me",
    nodes: [{ id: "in", type: "Input" }, { id: "out", type: "Output", data }],
    edges: [{ from: "in", to: "out", type: "PIPE" }],
});

let worker;
let pending;
let failing;

before(async () => {
    worker = await startWorker();
    pending = await startComponent(() => ({ pending: true, task_id: `t-${Math.random()}` }));
    failing = await startComponent(() => ({ status: 500, body: { error: "boom" } }));
});

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await pending?.close();
        await failing?.close();
    }
});

test("a completed run tells its caller once, signed, after the trigger has answered", async () => {
    const receiver = await startReceiver();
    try {
        const r = await worker.fetchJson("/execute", {
            body: { graph: quickGraph({ n: 1, api_key: "sk-secret" }), final_callback_url: receiver.url },
        });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, "completed");
        const [d] = await delivered(receiver, 1);
        const event = verified(d);
        assert.equal(event.type, "run.completed");
        assert.equal(event.run_id, r.body.run_id);
        assert.equal(event.workflow, "notify me");
        assert.equal(event.status, "completed");
        assert.equal(event.data.n, 1);
        assert.notEqual(event.data.api_key, "sk-secret", "redacted like every other response");
        assert.equal(typeof event.finished_at, "number");
        assert.equal(d.headers["webhook-id"], `msg_${r.body.run_id}_completed`);
        assert.ok(Math.abs(Number(d.headers["webhook-timestamp"]) - Date.now() / 1000) < 30);

        // The attempt is on the run; the receiver's token is not shown.
        let run;
        for (let i = 0; i < 50; i++) {
            run = await worker.fetchJson(`/runs/${r.body.run_id}`);
            if (run.body.final_callback?.state === "delivered") break;
            await sleep(100);
        }
        assert.equal(run.body.final_callback.state, "delivered");
        assert.equal(run.body.final_callback.url, receiver.url.split("?")[0]);
        assert.equal(run.body.deliveries.length, 1);
        assert.equal(run.body.deliveries[0].status, 200);
        assert.ok(!run.text.includes("receiver-secret"));
        await sleep(1500);
        assert.equal(receiver.deliveries.length, 1, "delivered once");
    } finally {
        await receiver.close();
    }
});

test("failed, timed-out and cancelled runs are told too", async () => {
    const receiver = await startReceiver();
    try {
        const failed = await worker.fetchJson("/execute", {
            body: {
                graph: { nodes: [{ id: "f", type: "Component", componentId: failing.url }], edges: [] },
                final_callback_url: receiver.url,
            },
        });
        assert.equal(failed.body.status, "failed");
        const timedOut = await worker.fetchJson("/execute", {
            body: {
                graph: { nodes: [{ id: "w", type: "Component", componentId: pending.url, wait_timeout_seconds: 1 }], edges: [] },
                final_callback_url: receiver.url,
            },
        });
        assert.equal(timedOut.body.status, "paused");
        const toCancel = await worker.fetchJson("/execute", {
            body: { graph: { nodes: [{ id: "w", type: "Component", componentId: pending.url }], edges: [] }, final_callback_url: receiver.url },
        });
        const cancelled = await worker.fetchJson(`/runs/${toCancel.body.run_id}/cancel`, { method: "POST" });
        assert.equal(cancelled.status, 200, cancelled.text);

        const events = (await delivered(receiver, 3)).map((d) => verified(d));
        const byRun = Object.fromEntries(events.map((e) => [e.run_id, e]));
        assert.equal(byRun[failed.body.run_id].type, "run.failed");
        assert.equal(byRun[failed.body.run_id].error.code, "node_failed");
        assert.equal(byRun[timedOut.body.run_id].type, "run.failed");
        assert.equal(byRun[timedOut.body.run_id].error.code, "wait_timeout");
        assert.equal(byRun[toCancel.body.run_id].type, "run.cancelled");
        assert.equal(byRun[toCancel.body.run_id].status, "cancelled");
    } finally {
        await receiver.close();
    }
});

test("during a rotation every delivery verifies with the old secret and with the new one", async () => {
    const previous = TEST_WEBHOOK_SECRET;
    const current = "whsec_" + Buffer.from("the-new-webhook-key-for-rotation").toString("base64");
    const w = await startWorker({ bindings: { WEBHOOK_SECRET: current, WEBHOOK_SECRET_PREVIOUS: previous } });
    const receiver = await startReceiver();
    try {
        await w.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: receiver.url } });
        const [d] = await delivered(receiver, 1);
        assert.equal(verified(d, current).type, "run.completed");
        assert.equal(verified(d, previous).type, "run.completed");
        const stranger = "whsec_" + Buffer.from("a-key-nobody-configured-anywhere").toString("base64");
        assert.throws(() => verified(d, stranger));
    } finally {
        await receiver.close();
        await w.stop();
    }
});

test("a receiver that fails twice gets three attempts, and the run shows them", async () => {
    const receiver = await startReceiver((n) => (n < 2 ? 500 : 200));
    try {
        const r = await worker.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: receiver.url } });
        const ds = await delivered(receiver, 3, 20000);
        // At once, then about 1 s and 5 s apart (alarms may fire a little late).
        assert.ok(ds[1].at - ds[0].at >= 900, `second attempt ${ds[1].at - ds[0].at} ms after the first`);
        assert.ok(ds[2].at - ds[1].at >= 4500, `third attempt ${ds[2].at - ds[1].at} ms after the second`);
        const ids = new Set(ds.map((d) => d.headers["webhook-id"]));
        assert.equal(ids.size, 1, "the same webhook-id on every retry");
        ds.forEach((d) => verified(d));
        let run;
        for (let i = 0; i < 50; i++) {
            run = await worker.fetchJson(`/runs/${r.body.run_id}`);
            if (run.body.final_callback.state === "delivered") break;
            await sleep(100);
        }
        assert.deepEqual(run.body.deliveries.map((a) => a.status), [500, 500, 200]);
        assert.equal(run.body.final_callback.state, "delivered");
    } finally {
        await receiver.close();
    }
});

test("410 Gone stops delivery; redeliver sends it again", async () => {
    const receiver = await startReceiver((n) => (n === 0 ? 410 : 200));
    try {
        const r = await worker.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: receiver.url } });
        await delivered(receiver, 1);
        await sleep(2500);
        assert.equal(receiver.deliveries.length, 1, "no retry after 410");
        const shown = await worker.fetchJson(`/runs/${r.body.run_id}`);
        assert.equal(shown.body.final_callback.state, "refused");

        const other = await worker.fetchJson(`/runs/${r.body.run_id}/redeliver`, { method: "POST", apiKey: "not-a-key" });
        assert.equal(other.status, 401);
        const again = await worker.fetchJson(`/runs/${r.body.run_id}/redeliver`, { method: "POST" });
        assert.equal(again.status, 202, again.text);
        assert.equal(again.body.final_callback.state, "retrying");
        const ds = await delivered(receiver, 2);
        assert.equal(ds[1].headers["webhook-id"], ds[0].headers["webhook-id"]);
        assert.equal(verified(ds[1]).run_id, r.body.run_id);
    } finally {
        await receiver.close();
    }
});

test("redeliver needs a finished run that asked for a final callback", async () => {
    const plain = await worker.fetchJson("/execute", { body: { graph: quickGraph() } });
    const none = await worker.fetchJson(`/runs/${plain.body.run_id}/redeliver`, { method: "POST" });
    assert.equal(none.status, 400);
    assert.equal(none.body.error.code, "invalid_request");
    const paused = await worker.fetchJson("/execute", {
        body: { graph: { nodes: [{ id: "w", type: "Component", componentId: pending.url }], edges: [] }, final_callback_url: "https://receiver.invalid/h" },
    });
    const early = await worker.fetchJson(`/runs/${paused.body.run_id}/redeliver`, { method: "POST" });
    assert.equal(early.status, 409);
    assert.equal(early.body.error.code, "run_not_finished");
    assert.equal(early.body.error.status, "paused");
    const missing = await worker.fetchJson(`/runs/${"0".repeat(32)}/redeliver`, { method: "POST" });
    assert.equal(missing.status, 404);
});

test("bad final_callback_url values are refused with 400 and store nothing", async () => {
    const before = await worker.kvSnapshot();
    for (const url of [
        "http://example.com/hook",
        "https://user:pass@example.com/hook",
        "https://user@example.com/hook",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "/relative/hook",
        "not a url",
        "",
        42,
        { url: "https://x.test" },
    ]) {
        const r = await worker.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: url } });
        assert.equal(r.status, 400, `${JSON.stringify(url)}: ${r.text}`);
        assert.equal(r.body.error.code, "invalid_final_callback_url");
    }
    assert.deepEqual(await worker.kvSnapshot(), before);
});

test("plain http to any host only with ALLOW_HTTP_CALLBACKS; no WEBHOOK_SECRET is a 503", async () => {
    const open = await startWorker({ bindings: { ALLOW_HTTP_CALLBACKS: "true" } });
    const unsigned = await startWorker({ bindings: { WEBHOOK_SECRET: "" } });
    try {
        const ok = await open.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: "http://receiver.invalid/h" } });
        assert.equal(ok.status, 200, ok.text);
        const refused = await unsigned.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: "https://receiver.invalid/h" } });
        assert.equal(refused.status, 503);
        assert.equal(refused.body.error.code, "misconfigured");
        assert.match(refused.body.error.message, /WEBHOOK_SECRET/);
        assert.equal((await unsigned.kvSnapshot()).size, 0);
    } finally {
        await open.stop();
        await unsigned.stop();
    }
});

test("the reference receiver (daemon/receiver.mjs) verifies the Worker's deliveries", async () => {
    const { startReceiver: startReference } = await import("../../daemon/receiver.mjs");
    const lines = [];
    const receiver = await startReference({ secrets: [TEST_WEBHOOK_SECRET], log: (l) => lines.push(l) });
    try {
        const r = await worker.fetchJson("/execute", { body: { graph: quickGraph(), final_callback_url: receiver.url } });
        for (let i = 0; i < 100 && receiver.events().length === 0; i++) await sleep(100);
        assert.deepEqual(receiver.stats(), { verified: 1, refused: 0 });
        assert.equal(receiver.events()[0].run_id, r.body.run_id);
        assert.equal(lines[0].event, "delivery_verified");
    } finally {
        await receiver.close();
    }
});
