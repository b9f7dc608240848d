// The reference daemon, on its own: immediate pending answer, delayed callback in the exact
// shape the Worker expects, and the retry schedule when the callback receiver misbehaves.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startDaemon, parseDelayList } from "../daemon/daemon.mjs";

const DAEMON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "daemon", "daemon.mjs");

/** A callback receiver; `respond(n, body)` gives the status for the n-th hit (1-based). */
async function startReceiver(respond = () => 200, port = 0) {
    const calls = [];
    const server = http.createServer((req, res) => {
        let text = "";
        req.on("data", (c) => (text += c));
        req.on("end", () => {
            const body = JSON.parse(text);
            calls.push({ path: req.url, body, at: Date.now(), contentType: req.headers["content-type"] });
            const status = respond(calls.length, body);
            res.writeHead(status, { "content-type": "application/json" });
            res.end(JSON.stringify({ received: calls.length, ok: status < 300 }));
        });
    });
    await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        port: server.address().port,
        calls,
        close: () =>
            new Promise((resolve) => {
                server.close(() => resolve());
                server.closeAllConnections();
            }),
    };
}

async function postJson(url, body) {
    const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
}

async function waitFor(predicate, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error("timed out waiting for condition");
        await new Promise((r) => setTimeout(r, 10));
    }
}

function captureLog() {
    const events = [];
    return { events, log: (e) => events.push(e) };
}

test("rejects a task without callback_url with 400", async () => {
    const daemon = await startDaemon({ delayMs: 0, log: null });
    try {
        const r = await postJson(`${daemon.url}/task`, { x: 1 });
        assert.equal(r.status, 400);
        assert.deepEqual(r.body, { success: false, error: "callback_url missing" });
        assert.equal(daemon.stats().tasks_received, 0);
    } finally {
        await daemon.close();
    }
});

test("answers pending at once, then calls back with the result after the delay", async () => {
    const receiver = await startReceiver();
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 150, retryDelaysMs: [0], log });
    try {
        const started = Date.now();
        const input = { callback_url: `${receiver.url}/cb/run-1`, result: { answer: 42 }, note: "hi" };
        const r = await postJson(`${daemon.url}/any/path`, input);
        assert.equal(r.status, 200);
        assert.equal(r.body.success, true);
        assert.equal(r.body.pending, true);
        assert.match(r.body.task_id, /^task-[0-9a-f]+$/);
        assert.equal(receiver.calls.length, 0, "callback must not arrive before the delay");

        await waitFor(() => daemon.stats().tasks[0]?.delivered);
        const call = receiver.calls[0];
        assert.ok(call.at - started >= 140, `callback came after ${call.at - started} ms`);
        assert.equal(call.path, "/cb/run-1");
        assert.equal(call.contentType, "application/json");
        assert.deepEqual(Object.keys(call.body).sort(), ["data", "success", "task_id"]);
        assert.equal(call.body.task_id, r.body.task_id);
        assert.equal(call.body.success, true);
        const { finished_at, ...data } = call.body.data;
        assert.ok(!Number.isNaN(Date.parse(finished_at)));
        assert.deepEqual(data, {
            task_id: r.body.task_id,
            result: { answer: 42 },
            input: { result: { answer: 42 }, note: "hi" },
        });

        const stats = daemon.stats();
        assert.equal(stats.tasks_received, 1);
        assert.equal(stats.tasks[0].attempts, 1);
        assert.equal(stats.tasks[0].last_status, 200);
        assert.deepEqual(stats.tasks[0].response, { received: 1, ok: true });
        assert.deepEqual(
            events.map((e) => e.event),
            ["task_received", "callback_attempt", "callback_delivered"],
        );

        // The same stats over HTTP.
        const viaHttp = await (await fetch(`${daemon.url}/stats`)).json();
        assert.equal(viaHttp.tasks_received, 1);
        assert.equal(viaHttp.tasks[0].task_id, r.body.task_id);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("reports failure with fail_message or a default, and delay_ms overrides the default delay", async () => {
    const receiver = await startReceiver();
    const daemon = await startDaemon({ delayMs: 60_000, log: null });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/a`, fail: true, fail_message: "disk full", delay_ms: 0 });
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/b`, fail: true, delay_ms: 20 });
        await waitFor(() => receiver.calls.length === 2, 3000);
        const byPath = Object.fromEntries(receiver.calls.map((c) => [c.path, c.body]));
        assert.deepEqual(Object.keys(byPath["/a"]).sort(), ["error", "success", "task_id"]);
        assert.equal(byPath["/a"].success, false);
        assert.equal(byPath["/a"].error, "disk full");
        assert.equal(byPath["/b"].success, false);
        assert.equal(typeof byPath["/b"].error, "string");
        assert.ok(byPath["/b"].error.length > 0);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("retries non-2xx answers on the configured schedule until delivered", async () => {
    const receiver = await startReceiver((n) => (n <= 2 ? 503 : 200));
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [0, 100, 200], log });
    try {
        const r = await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 3000);
        assert.equal(receiver.calls.length, 3);
        // Attempt 2 follows at once, attempt 3 after ~100 ms.
        const gap = receiver.calls[2].at - receiver.calls[1].at;
        assert.ok(gap >= 90, `third attempt came ${gap} ms after the second`);
        // Every attempt carries the identical payload.
        assert.deepEqual(receiver.calls[0].body, receiver.calls[2].body);

        const attempts = events.filter((e) => e.event === "callback_attempt");
        assert.deepEqual(attempts.map((e) => [e.attempt, e.status]), [[1, 503], [2, 503], [3, 200]]);
        assert.ok(attempts.every((e) => e.task_id === r.body.task_id && typeof e.at === "string"));
        assert.equal(events.at(-1).event, "callback_delivered");
        const task = daemon.stats().tasks[0];
        assert.equal(task.attempts, 3);
        assert.deepEqual(task.response, { received: 3, ok: true });
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("survives the receiver being down at first (connection refused), delivers once it is up", async () => {
    // Reserve a port, then free it so the first attempts are refused.
    const probe = await startReceiver();
    const port = probe.port;
    await probe.close();

    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [0, 50, 400], log });
    let receiver;
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `http://127.0.0.1:${port}/cb`, result: "late" });
        await waitFor(() => events.filter((e) => e.event === "callback_attempt").length >= 2, 2000);
        receiver = await startReceiver(() => 200, port);
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 3000);

        const attempts = events.filter((e) => e.event === "callback_attempt");
        assert.ok(attempts.length >= 3);
        assert.ok(attempts[0].error, "first attempt should fail with a network error");
        assert.equal(attempts.at(-1).status, 200);
        assert.equal(receiver.calls.length, 1);
        assert.equal(receiver.calls[0].body.data.result, "late");
    } finally {
        await daemon.close();
        await receiver?.close();
    }
});

test("gives up after the last retry and says so", async () => {
    const receiver = await startReceiver(() => 500);
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [0, 20], log });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => events.some((e) => e.event === "callback_gave_up"), 3000);
        assert.equal(receiver.calls.length, 3);
        const task = daemon.stats().tasks[0];
        assert.equal(task.delivered, false);
        assert.equal(task.attempts, 3);
        assert.equal(task.last_status, 500);
        assert.equal(task.response, null);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("parseDelayList reads the CLI/env form", () => {
    assert.deepEqual(parseDelayList("0,1000,5000,30000"), [0, 1000, 5000, 30000]);
    assert.deepEqual(parseDelayList(""), []);
    assert.throws(() => parseDelayList("1,-2"));
});

test("CLI prints the URL it listens on and serves tasks", async () => {
    const receiver = await startReceiver();
    const child = spawn(process.execPath, [DAEMON_PATH, "--port", "0", "--delay-ms", "0", "--retry-delays-ms", "0"], {
        stdio: ["ignore", "pipe", "pipe"],
    });
    try {
        let buffered = "";
        const lines = [];
        child.stdout.setEncoding("utf8");
        child.stdout.on("data", (chunk) => {
            buffered += chunk;
            let i;
            while ((i = buffered.indexOf("\n")) >= 0) {
                lines.push(JSON.parse(buffered.slice(0, i)));
                buffered = buffered.slice(i + 1);
            }
        });
        await waitFor(() => lines.some((l) => l.event === "listening"), 5000);
        const { url } = lines.find((l) => l.event === "listening");
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);

        const r = await postJson(`${url}/job`, { callback_url: `${receiver.url}/cb` });
        assert.equal(r.body.pending, true);
        await waitFor(() => lines.some((l) => l.event === "callback_delivered"), 3000);
        assert.equal(receiver.calls.length, 1);
    } finally {
        child.kill("SIGTERM");
        await once(child, "exit");
        await receiver.close();
    }
});
