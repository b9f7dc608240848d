// The reference daemon, on its own: immediate pending answer, delayed callback in the exact
// shape the Worker expects, the retry schedule when the callback receiver misbehaves, the
// callback timeout, and heartbeats while a task runs.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
    startDaemon,
    parseDelayList,
    heartbeatUrl,
    buildHeartbeatPayload,
    DEFAULT_CALLBACK_TIMEOUT_MS,
} from "../daemon/daemon.mjs";

const DAEMON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "daemon", "daemon.mjs");

/**
 * A callback receiver; `respond(n, body, path)` gives (or resolves to) the status for the n-th
 * hit (1-based). `path` includes the query string.
 */
async function startReceiver(respond = () => 200, port = 0) {
    const calls = [];
    const server = http.createServer((req, res) => {
        let text = "";
        req.on("data", (c) => (text += c));
        req.on("end", async () => {
            const body = JSON.parse(text);
            calls.push({ path: req.url, body, at: Date.now(), contentType: req.headers["content-type"] });
            const status = await respond(calls.length, body, req.url);
            if (res.destroyed) return; // the caller gave up waiting
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

// ---------------------------------------------------------------------------------------
// Callback timeout

test("a callback held past callbackTimeoutMs is logged as timed out and retried", async () => {
    // The first attempt is held for 1.5 s; the daemon gives up on it after 200 ms.
    const receiver = await startReceiver(async (n) => {
        if (n === 1) await new Promise((r) => setTimeout(r, 1500));
        return 200;
    });
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [50], callbackTimeoutMs: 200, log });
    try {
        const started = Date.now();
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 3000);
        const took = Date.now() - started;
        assert.ok(took < 1400, `delivered after ${took} ms: the held attempt was not waited out`);

        const attempts = events.filter((e) => e.event === "callback_attempt");
        assert.equal(attempts.length, 2, JSON.stringify(attempts));
        assert.equal(attempts[0].attempt, 1);
        assert.equal(attempts[0].timed_out, true);
        assert.equal(attempts[0].error, "timed out after 200 ms");
        assert.equal(attempts[0].status, undefined);
        assert.deepEqual([attempts[1].attempt, attempts[1].status, attempts[1].timed_out], [2, 200, undefined]);
        assert.equal(receiver.calls.length, 2, "the held attempt reached the receiver, then the retry");
        assert.deepEqual(receiver.calls[0].body, receiver.calls[1].body);
        assert.ok(!events.some((e) => e.event === "callback_gave_up"));
        const task = daemon.stats().tasks[0];
        assert.equal(task.attempts, 2);
        assert.equal(task.delivered, true);
        assert.equal(task.last_error, null);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("a callback slower than the old 10 s limit but within callbackTimeoutMs is one attempt", async () => {
    // Scaled down: 600 ms of holding against a 2000 ms timeout is delivered on the first try.
    const receiver = await startReceiver(async () => {
        await new Promise((r) => setTimeout(r, 600));
        return 200;
    });
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [0], callbackTimeoutMs: 2000, log });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 4000);
        assert.equal(receiver.calls.length, 1);
        assert.deepEqual(
            events.map((e) => e.event),
            ["task_received", "callback_attempt", "callback_delivered"],
        );
        assert.equal(daemon.stats().tasks[0].attempts, 1);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("a timed-out last attempt ends in callback_gave_up naming the timeout", async () => {
    const receiver = await startReceiver(async () => {
        await new Promise((r) => setTimeout(r, 800));
        return 200;
    });
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 0, retryDelaysMs: [], callbackTimeoutMs: 100, log });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => events.some((e) => e.event === "callback_gave_up"), 3000);
        const gaveUp = events.find((e) => e.event === "callback_gave_up");
        assert.equal(gaveUp.attempts, 1);
        assert.equal(gaveUp.last_error, "timed out after 100 ms");
        assert.equal(daemon.stats().tasks[0].gave_up, true);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("the default callback timeout is 30 s", () => {
    assert.equal(DEFAULT_CALLBACK_TIMEOUT_MS, 30000);
});

// ---------------------------------------------------------------------------------------
// Heartbeats

test("heartbeatUrl puts /heartbeat before the query string", () => {
    assert.equal(
        heartbeatUrl("https://host/callbacks/run1/n2?token=123.abc"),
        "https://host/callbacks/run1/n2/heartbeat?token=123.abc",
    );
    assert.equal(heartbeatUrl("http://127.0.0.1:8787/callbacks/r/w"), "http://127.0.0.1:8787/callbacks/r/w/heartbeat");
    assert.equal(heartbeatUrl("http://h/cb/r/w/?token=t&x=1"), "http://h/cb/r/w/heartbeat?token=t&x=1");
    assert.equal(heartbeatUrl("http://h/cb/r/w#frag"), "http://h/cb/r/w/heartbeat#frag");
    // A token holding what looks like a path is left alone.
    assert.equal(heartbeatUrl("http://h/cb/r/w?token=a/b?c"), "http://h/cb/r/w/heartbeat?token=a/b?c");
});

test("buildHeartbeatPayload extends by three periods, rounded up to whole seconds", () => {
    assert.deepEqual(buildHeartbeatPayload(1200, 5000, 500), {
        progress: { elapsed_ms: 1200, delay_ms: 5000 },
        extend_seconds: 2,
    });
    assert.equal(buildHeartbeatPayload(0, 1, 1000).extend_seconds, 3);
    assert.equal(buildHeartbeatPayload(0, 1, 100).extend_seconds, 1);
    assert.equal(buildHeartbeatPayload(0, 1, 1001).extend_seconds, 4);
});

test("heartbeats go to the callback URL's /heartbeat while the task runs, then the callback", async () => {
    const receiver = await startReceiver();
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 650, heartbeatMs: 150, retryDelaysMs: [0], log });
    try {
        const r = await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/callbacks/run1/n1?token=99.mac`, result: 1 });
        const taskId = r.body.task_id;
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 4000);

        const beats = receiver.calls.filter((c) => c.path === "/callbacks/run1/n1/heartbeat?token=99.mac");
        const callbacks = receiver.calls.filter((c) => c.path === "/callbacks/run1/n1?token=99.mac");
        assert.equal(beats.length + callbacks.length, receiver.calls.length, receiver.calls.map((c) => c.path).join(", "));
        assert.equal(callbacks.length, 1);
        // 650 ms at one every 150 ms: four (fewer on a slow machine, never more than four).
        assert.ok(beats.length >= 2 && beats.length <= 4, `${beats.length} heartbeats`);
        assert.ok(beats.every((b) => b.at <= callbacks[0].at), "every heartbeat precedes the callback");
        assert.equal(beats[0].contentType, "application/json");
        for (const [i, b] of beats.entries()) {
            assert.deepEqual(Object.keys(b.body).sort(), ["extend_seconds", "progress"]);
            assert.equal(b.body.extend_seconds, 1); // ceil(3 * 150 / 1000)
            assert.equal(b.body.progress.delay_ms, 650);
            assert.ok(Number.isInteger(b.body.progress.elapsed_ms));
            assert.ok(b.body.progress.elapsed_ms >= 140 * (i + 1) && b.body.progress.elapsed_ms <= 650, JSON.stringify(b.body));
            if (i > 0) assert.ok(b.body.progress.elapsed_ms > beats[i - 1].body.progress.elapsed_ms);
        }
        assert.equal(callbacks[0].body.task_id, taskId);

        const task = daemon.stats().tasks[0];
        assert.equal(task.heartbeat_ms, 150);
        assert.equal(task.heartbeat_url, `${receiver.url}/callbacks/run1/n1/heartbeat?token=99.mac`);
        assert.equal(task.heartbeats, beats.length);
        assert.equal(task.heartbeats_ok, beats.length);
        assert.equal(task.heartbeats_failed, 0);
        assert.equal(task.last_heartbeat_status, 200);
        assert.equal(task.attempts, 1, "heartbeats are not callback attempts");
        const beatEvents = events.filter((e) => e.event === "heartbeat");
        assert.equal(beatEvents.length, beats.length);
        assert.deepEqual(beatEvents.map((e) => e.heartbeat), beats.map((_, i) => i + 1));
        assert.ok(beatEvents.every((e) => e.task_id === taskId && e.status === 200));

        // Nothing more once the task is done.
        const n = receiver.calls.length;
        await new Promise((r) => setTimeout(r, 400));
        assert.equal(receiver.calls.length, n);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("a task's heartbeat_ms overrides the daemon's (0 turns them off)", async () => {
    const receiver = await startReceiver();
    const daemon = await startDaemon({ delayMs: 400, heartbeatMs: 0, retryDelaysMs: [0], log: null });
    const daemonOn = await startDaemon({ delayMs: 400, heartbeatMs: 100, retryDelaysMs: [0], log: null });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/a`, heartbeat_ms: 120 });
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/b` });
        await postJson(`${daemonOn.url}/t`, { callback_url: `${receiver.url}/c`, heartbeat_ms: 0 });
        await waitFor(
            () => [...daemon.stats().tasks, ...daemonOn.stats().tasks].every((t) => t.delivered) && receiver.calls.length >= 4,
            4000,
        );
        const paths = receiver.calls.map((c) => c.path);
        const count = (p) => paths.filter((x) => x === p).length;
        assert.ok(count("/a/heartbeat") >= 2 && count("/a/heartbeat") <= 3, paths.join(", "));
        assert.equal(count("/b/heartbeat"), 0);
        assert.equal(count("/c/heartbeat"), 0);
        assert.deepEqual([count("/a"), count("/b"), count("/c")], [1, 1, 1]);
        const [a, b] = daemon.stats().tasks;
        assert.equal(a.heartbeat_ms, 120);
        assert.equal(a.heartbeats, count("/a/heartbeat"));
        assert.equal(b.heartbeats, 0);
        assert.equal(b.heartbeat_url, null);
        assert.equal(daemonOn.stats().tasks[0].heartbeats, 0);
    } finally {
        await daemon.close();
        await daemonOn.close();
        await receiver.close();
    }
});

test("failed heartbeats are logged and counted, never fatal: the callback still goes out", async () => {
    // Heartbeats answer 503; the heartbeat receiver for the second task is not even listening.
    const receiver = await startReceiver((n, body, p) => (p.includes("/heartbeat") ? 503 : 200));
    const probe = await startReceiver();
    const deadPort = probe.port;
    await probe.close();
    const { events, log } = captureLog();
    const daemon = await startDaemon({ delayMs: 450, heartbeatMs: 100, retryDelaysMs: [0, 50, 50], log });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb?token=x` });
        await postJson(`${daemon.url}/t`, { callback_url: `http://127.0.0.1:${deadPort}/cb?token=y` });
        await waitFor(() => daemon.stats().tasks[0]?.delivered && daemon.stats().tasks[1]?.gave_up, 4000);
        const [served, dead] = daemon.stats().tasks;

        assert.ok(served.heartbeats >= 3, `${served.heartbeats} heartbeats`);
        assert.equal(served.heartbeats_failed, served.heartbeats);
        assert.equal(served.heartbeats_ok, 0);
        assert.equal(served.last_heartbeat_status, 503);
        assert.equal(served.last_heartbeat_error, "HTTP 503");
        assert.equal(served.delivered, true);
        assert.equal(receiver.calls.filter((c) => c.path === "/cb/heartbeat?token=x").length, served.heartbeats);

        assert.ok(dead.heartbeats >= 3);
        assert.equal(dead.heartbeats_failed, dead.heartbeats);
        assert.equal(dead.last_heartbeat_status, null);
        assert.equal(typeof dead.last_heartbeat_error, "string");
        assert.equal(dead.attempts, 4, "the callback was still tried on its schedule");

        const failed = events.filter((e) => e.event === "heartbeat_failed");
        assert.equal(failed.length, served.heartbeats + dead.heartbeats);
        assert.ok(failed.some((e) => e.status === 503));
        assert.ok(failed.some((e) => typeof e.error === "string" && e.status === undefined));
        assert.ok(!events.some((e) => e.event === "task_error"));
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("a heartbeat under way is answered before the callback is sent", async () => {
    // Each heartbeat is held 250 ms; the task ends while one is in flight.
    const receiver = await startReceiver(async (n, body, p) => {
        if (p.includes("/heartbeat")) await new Promise((r) => setTimeout(r, 250));
        return 200;
    });
    const daemon = await startDaemon({ delayMs: 300, heartbeatMs: 100, retryDelaysMs: [0], log: null });
    try {
        await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
        await waitFor(() => daemon.stats().tasks[0]?.delivered, 4000);
        const task = daemon.stats().tasks[0];
        // One heartbeat at a time: at 100 ms one goes out and holds until ~350 ms.
        assert.equal(task.heartbeats, 1, "a slow receiver is not piled on");
        assert.equal(task.heartbeats_ok, 1);
        assert.deepEqual(receiver.calls.map((c) => c.path), ["/cb/heartbeat", "/cb"]);
    } finally {
        await daemon.close();
        await receiver.close();
    }
});

test("close() stops heartbeats of running tasks", async () => {
    const receiver = await startReceiver();
    const daemon = await startDaemon({ delayMs: 60_000, heartbeatMs: 50, log: null });
    await postJson(`${daemon.url}/t`, { callback_url: `${receiver.url}/cb` });
    await waitFor(() => receiver.calls.length >= 2, 2000);
    await daemon.close();
    const n = receiver.calls.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(receiver.calls.length, n);
    assert.ok(receiver.calls.every((c) => c.path === "/cb/heartbeat"));
    await receiver.close();
});

test("CLI takes --callback-timeout-ms and --heartbeat-ms, and refuses bad values", async () => {
    const run = (args) => {
        const child = spawn(process.execPath, [DAEMON_PATH, "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.setEncoding("utf8").on("data", (c) => (out += c));
        child.stderr.setEncoding("utf8").on("data", (c) => (err += c));
        return { child, out: () => out, err: () => err };
    };
    const listening = (text) =>
        text
            .split("\n")
            .filter((l) => l.startsWith("{"))
            .map((l) => JSON.parse(l))
            .find((l) => l.event === "listening");

    const defaults = run(["--quiet"]);
    const custom = run(["--callback-timeout-ms", "1500", "--heartbeat-ms=250", "--quiet"]);
    try {
        await waitFor(() => listening(defaults.out()) && listening(custom.out()), 5000);
        assert.equal(listening(defaults.out()).callback_timeout_ms, 30000);
        assert.equal(listening(defaults.out()).heartbeat_ms, 0);
        assert.equal(listening(custom.out()).callback_timeout_ms, 1500);
        assert.equal(listening(custom.out()).heartbeat_ms, 250);
    } finally {
        for (const p of [defaults, custom]) {
            p.child.kill("SIGTERM");
            await once(p.child, "exit");
        }
    }

    for (const args of [["--callback-timeout-ms", "0"], ["--callback-timeout-ms", "abc"], ["--heartbeat-ms", "-5"], ["--heartbeat-ms", "1.5"]]) {
        const bad = run(args);
        const [code] = await once(bad.child, "exit");
        assert.equal(code, 2, `${args.join(" ")}: ${bad.err()}`);
        assert.match(bad.err(), /--(callback-timeout|heartbeat)-ms/);
    }

    const help = run(["--help"]);
    await once(help.child, "exit");
    assert.match(help.out(), /--callback-timeout-ms/);
    assert.match(help.out(), /--heartbeat-ms/);
});
