// Outbound calls that get no answer, end to end in workerd against real loopback servers:
// the error a failed call records says what happened, with a stable `error_code` — as far as
// what workerd's fetch throws allows. Measured here, workerd throws:
//   - "Network connection lost." for a refused connection, a reset and an early close alike;
//   - "internal error; reference = …" for a host name that does not resolve and for a TLS
//     handshake that fails alike (the URL tells them apart: http has no handshake, an IP
//     address no lookup; an https URL to a host name is named as either);
//   - nothing of its own for our deadline: the engine's timer fired, so it timed out.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

import { startWorker, startComponent, freePort, waitForStatus, waitUntil } from "./harness.mjs";

const TIMEOUT_MS = 2000;
const LOST = "the runtime reports these alike: Network connection lost.";

let worker;
let plain; // a plain-HTTP server, reached with https for a failed handshake
let silent; // accepts connections and never answers
let slammer; // accepts connections and closes them at once
const sockets = new Set();

async function listen(server) {
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
    });
    server.on("connection", (s) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
    });
    return server.address().port;
}

before(async () => {
    worker = await startWorker({ bindings: { COMPONENT_TIMEOUT_SECONDS: String(TIMEOUT_MS / 1000) } });
    plain = await startComponent(() => ({ ok: true }));
    silent = net.createServer(() => {});
    slammer = net.createServer((s) => s.destroy());
    await listen(silent);
    await listen(slammer);
}, { timeout: 120_000 });

after(async () => {
    try {
        await worker?.stop();
    } finally {
        for (const s of sockets) s.destroy();
        await plain?.close();
        await new Promise((r) => silent.close(r));
        await new Promise((r) => slammer.close(r));
    }
}, { timeout: 60_000 });

/** Runs one component call routed ON_FAIL to an Output that shows the error and its code; returns the run and its failed entry. */
async function failedCall(target) {
    const graph = {
        nodes: [
            { id: "c", type: "Component", componentId: target },
            { id: "caught", type: "Output", data: { why: "{{c.error}}", code: "{{c.error_code}}" } },
        ],
        edges: [{ from: "c", to: "caught", type: "ON_FAIL" }],
    };
    const r = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "completed", `${target}: ${r.text}`);
    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    const entry = read.body.trace.find((e) => e.node_id === "c");
    assert.equal(entry.status, "failed", JSON.stringify(entry));
    // What a node downstream reads and what the trace shows are one error.
    assert.equal(entry.error, r.body.data.why);
    assert.equal(entry.error_code, r.body.data.code);
    return { why: r.body.data.why, code: r.body.data.code, entry };
}

test("a refused connection: connection_failed, named as refused or lost (workerd says the same of both)", { timeout: 60_000 }, async () => {
    const port = await freePort();
    const { why, code } = await failedCall(`http://127.0.0.1:${port}/run`);
    assert.equal(code, "connection_failed");
    assert.equal(why, `connection to 127.0.0.1:${port} failed before an answer: refused, reset or closed early (${LOST})`);
});

test("a connection closed before the answer reads the same as a refused one", { timeout: 60_000 }, async () => {
    const port = slammer.address().port;
    const { why, code } = await failedCall(`http://127.0.0.1:${port}/run`);
    assert.equal(code, "connection_failed");
    assert.equal(why, `connection to 127.0.0.1:${port} failed before an answer: refused, reset or closed early (${LOST})`);
});

test("a host name that does not resolve: dns_failure", { timeout: 60_000 }, async () => {
    const { why, code } = await failedCall("http://arcrun-test.invalid/run");
    assert.equal(code, "dns_failure");
    assert.match(why, /^the host name arcrun-test\.invalid did not resolve \(the runtime reported: internal error; reference = \w+\)$/);
});

test("https to a plain-HTTP server: tls_failure", { timeout: 60_000 }, async () => {
    const port = new URL(plain.url).port;
    const { why, code } = await failedCall(`https://127.0.0.1:${port}/run`);
    assert.equal(code, "tls_failure");
    assert.match(why, new RegExp(`^the TLS handshake with 127\\.0\\.0\\.1:${port} failed: is it serving https\\? \\(the runtime reported: internal error; reference = \\w+\\)$`));
    assert.equal(plain.hits(), 0, "no HTTP request reached it");
});

test("https to a host name that does not resolve: named as DNS or TLS, which workerd does not tell apart", { timeout: 60_000 }, async () => {
    const { why, code } = await failedCall("https://arcrun-test.invalid/run");
    assert.equal(code, "connection_failed");
    assert.match(why, /^the host name arcrun-test\.invalid did not resolve, or the TLS handshake with it failed \(the runtime reports both alike: internal error; reference = \w+\)$/);
});

test("a server that never answers: timeout, at the engine's own deadline", { timeout: 60_000 }, async () => {
    const port = silent.address().port;
    const started = Date.now();
    const { why, code, entry } = await failedCall(`http://127.0.0.1:${port}/run`);
    assert.equal(code, "timeout");
    assert.equal(why, `timed out after ${TIMEOUT_MS} ms`);
    assert.ok(entry.duration_ms >= TIMEOUT_MS - 100, `failed after ${entry.duration_ms} ms`);
    assert.ok(Date.now() - started < TIMEOUT_MS + 8000);
});

test("answers that are not usable carry their code too", { timeout: 60_000 }, async () => {
    const bad = await startComponent((body, req) => {
        if (req.url === "/500") return { status: 500, body: { oops: true } };
        if (req.url === "/302") return { status: 302, body: "", headers: { location: "https://elsewhere.test/" } };
        return "not json";
    });
    try {
        for (const [p, expected] of [["/500", "http_status"], ["/302", "redirect"], ["/text", "not_json"]]) {
            const { code } = await failedCall(`${bad.url}${p}`);
            assert.equal(code, expected, p);
        }
    } finally {
        await bad.close();
    }
});

test("an unrouted failure fails the run as node_failed; the trace entry holds the code", { timeout: 60_000 }, async () => {
    const port = await freePort();
    const r = await worker.fetchJson("/execute", {
        body: { graph: { nodes: [{ id: "c", type: "Component", componentId: `http://127.0.0.1:${port}/` }], edges: [] } },
    });
    assert.equal(r.body.status, "failed", r.text);
    assert.equal(r.body.error.code, "node_failed");
    assert.equal(r.body.error.node_id, "c");
    assert.match(r.body.error.message, /refused, reset or closed early/);
    const read = await worker.fetchJson(`/runs/${r.body.run_id}`);
    assert.deepEqual(read.body.trace.map((e) => [e.node_id, e.status, e.error_code]), [["c", "failed", "connection_failed"]]);
});

test("a status URL that keeps refusing fails its poll_task with the code", { timeout: 60_000 }, async () => {
    const port = await freePort();
    const graph = {
        nodes: [
            { id: "watch", type: "Component", componentId: "poll_task", data: { url: `http://127.0.0.1:${port}/status`, interval_seconds: 1 } },
            { id: "caught", type: "Output", data: { why: "{{watch.error}}", code: "{{watch.error_code}}" } },
        ],
        edges: [{ from: "watch", to: "caught", type: "ON_FAIL" }],
    };
    const r = await worker.fetchJson("/execute", { body: { graph } });
    assert.equal(r.body.status, "paused", r.text);
    const done = await waitForStatus(worker, r.body.run_id, ["completed", "failed"], 20_000);
    assert.equal(done.body.status, "completed", done.text);
    assert.equal(done.body.data.code, "connection_failed");
    assert.match(done.body.data.why, /^the status URL failed 3 times in a row: connection to 127\.0\.0\.1:\d+ failed before an answer/);
});

test("a final callback to a refused port: each delivery attempt records the code", { timeout: 60_000 }, async () => {
    const port = await freePort();
    const receiver = `http://127.0.0.1:${port}/hooks`;
    const graph = { nodes: [{ id: "o", type: "Output", data: { x: 1 } }], edges: [] };
    const r = await worker.fetchJson("/execute", { body: { graph, final_callback_url: receiver } });
    assert.equal(r.body.status, "completed", r.text);
    const read = await waitUntil("a failed delivery attempt", async () => {
        const got = await worker.fetchJson(`/runs/${r.body.run_id}`);
        return got.body.deliveries?.length ? got : null;
    }, { timeoutMs: 15_000 });
    const [attempt] = read.body.deliveries;
    assert.equal(attempt.error_code, "connection_failed", JSON.stringify(attempt));
    assert.equal(attempt.error, `connection to 127.0.0.1:${port} failed before an answer: refused, reset or closed early (${LOST})`);
    assert.equal(attempt.status, undefined);
});
