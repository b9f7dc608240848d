// Polling, heartbeats and wait events, end to end in workerd: the `poll_task` built-in (a poll
// at once, then one per interval from the run's alarm; done, failed, error streaks, timeout),
// a pending answer's `status_url` racing its callback, heartbeats that report progress and
// push a deadline later (by hand and from the reference daemon), and the events every wait
// keeps of what reached it — turned-away ones at no KV write.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
    startWorker,
    startComponent,
    pendingComponent,
    postCallback,
    postHeartbeat,
    heartbeatUrlOf,
} from "./harness.mjs";
import { waitUntil as until, waitForStatus, kvOps, ALARM_SLACK_MS } from "./harness.mjs";
import { startDaemon } from "../../daemon/daemon.mjs";
import { sleep } from "./harness.mjs";
import { runView, kvCaughtUp, assertCallbackAnswer, assertExpired } from "./settle.mjs";

/** MAX_WAIT_SECONDS when unset: how far heartbeats may push a deadline from its wait's start. */
const DEFAULT_MAX_WAIT_MS = 7 * 24 * 3600 * 1000;

const statuses = (trace) => trace.map((e) => `${e.node_id}${Number.isInteger(e.item) ? `[${e.item}]` : ""}:${e.status}`);
/** A wait's events as `kind:outcome`, checking each has a time and they are in time order. */
function eventsOf(wait) {
    const events = wait?.events ?? [];
    for (const e of events) assert.ok(Number.isInteger(e.at), JSON.stringify(e));
    for (let i = 1; i < events.length; i++) assert.ok(events[i].at >= events[i - 1].at, JSON.stringify(events));
    return events.map((e) => `${e.kind}:${e.outcome}`);
}
const closedWait = (details, waitId) => (details.body.closed_waits ?? []).find((c) => c.wait_id === waitId);

/**
 * A status URL: `answer(n, req)` gives the n-th poll's answer (1-based; a plain object is 200
 * JSON, `{status, body}` anything else). Every poll is kept in `polls` with its time.
 */
async function statusServer(answer) {
    const polls = [];
    const c = await startComponent((body, req) => {
        const n = polls.push({ at: Date.now(), method: req.method, path: new URL(req.url, "http://s").pathname, headers: req.headers, body });
        return answer(n, req);
    });
    return { ...c, polls };
}

/**
 * A daemon-like component: answers pending with `task_id` and, when given, a `status_url` and
 * `poll_interval_seconds`; keeps each call's callback URL. It never calls back by itself.
 */
async function pendingWithStatus({ taskId, statusUrl, intervalSeconds }) {
    const calls = [];
    const c = await startComponent((body) => {
        calls.push({ body, callbackUrl: body?.callback_url, at: Date.now() });
        return {
            pending: true,
            task_id: taskId,
            ...(statusUrl ? { status_url: statusUrl } : {}),
            ...(intervalSeconds ? { poll_interval_seconds: intervalSeconds } : {}),
        };
    });
    return { ...c, calls };
}

let worker;
let echo;

before(async () => {
    worker = await startWorker();
    // Echoes what it was given (minus the callback URL) and counts hits per path.
    echo = await startComponent((body) => {
        const { callback_url, ...rest } = body ?? {};
        return { ...rest, echoed: true };
    });
});

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await echo?.close();
    }
});

// ---------------------------------------------------------------------------------------
// poll_task

test("poll_task polls at once, then once per interval; done hands the status body downstream", async () => {
    const status = await statusServer((n) =>
        n < 3 ? { status: "running", progress: n * 40 } : { status: "Done", data: { answer: 42 }, progress: 100 },
    );
    try {
        const graph = {
            id: "poll1",
            name: "poll a job",
            nodes: [
                { id: "in", type: "Input" },
                {
                    id: "job",
                    type: "Component",
                    componentId: "poll_task",
                    data: {
                        url: `${status.url}/jobs/{{job_id}}`,
                        interval_seconds: 1,
                        timeout_seconds: 60,
                        headers: { Authorization: "Bearer sekrit-{{job_id}}", "x-job": "{{job_id}}" },
                    },
                },
                { id: "after", type: "Component", componentId: `${echo.url}/p1-after`, data: { answer: "{{job.data.answer}}", state: "{{job.status}}" } },
                { id: "out", type: "Output", data: { answer: "{{after.answer}}", state: "{{after.state}}" } },
            ],
            edges: [
                { from: "in", to: "job", type: "PIPE" },
                { from: "job", to: "after", type: "ON_SUCCESS" },
                { from: "after", to: "out", type: "PIPE" },
            ],
        };
        const t = await worker.fetchJson("/execute", { body: { graph, context: { job_id: "J7" } } });
        assert.equal(t.status, 200, t.text);
        assert.equal(t.body.status, "paused", t.text);
        assert.equal(t.body.paused_node_id, "job");
        assert.equal(status.polls.length, 1, "the first poll is made by the triggering invocation");
        const id = t.body.run_id;

        // While polling: paused, and the wait shows its poll (the credential masked).
        const mid = await worker.fetchJson(`/runs/${id}`);
        assert.equal(mid.status, 200, mid.text);
        assert.equal(mid.body.status, "paused", mid.text);
        assert.equal(mid.body.waits.length, 1, mid.text);
        const wait = mid.body.waits[0];
        assert.equal(wait.node_id, "job");
        const poll = wait.poll;
        assert.ok(poll, `the wait shows its poll: ${mid.text}`);
        assert.equal(poll.url, `${status.url}/jobs/J7`);
        assert.equal(poll.method, "GET");
        assert.equal(poll.interval_ms, 1000);
        assert.ok(Number.isInteger(poll.next_at) && poll.next_at > wait.since, mid.text);
        assert.ok(poll.attempts >= 1 && poll.attempts <= status.polls.length, `attempts ${poll.attempts}, polls ${status.polls.length}`);
        assert.equal(poll.headers?.["x-job"], "J7", mid.text);
        assert.equal(poll.headers?.Authorization, "[redacted]", mid.text);
        assert.ok(!mid.text.includes("sekrit"), "the header's secret is not shown");
        assert.ok(eventsOf(wait).length >= 1 && eventsOf(wait).every((e) => e === "poll:accepted"), mid.text);

        const done = await waitForStatus(worker, id, ["completed", "failed"], 2000 + ALARM_SLACK_MS);
        assert.equal(done.body.status, "completed", done.text);
        // An Output node's output is its context with its data on top.
        assert.equal(done.body.data.answer, 42, done.text);
        assert.equal(done.body.data.state, "Done");
        assert.equal(status.polls.length, 3, "running, running, done: three polls");
        for (let i = 1; i < status.polls.length; i++) {
            const gap = status.polls[i].at - status.polls[i - 1].at;
            assert.ok(gap >= 900 && gap <= 1000 + ALARM_SLACK_MS, `poll ${i + 1} came ${gap} ms after poll ${i}`);
        }
        for (const p of status.polls) {
            assert.equal(p.method, "GET");
            assert.equal(p.path, "/jobs/J7");
            assert.equal(p.headers.authorization, "Bearer sekrit-J7", "the component gets the real header");
            assert.equal(p.headers["x-job"], "J7");
            assert.equal(p.body, null, "a GET poll has no body");
        }
        const keys = status.polls.map((p) => p.headers["idempotency-key"]);
        assert.equal(new Set(keys).size, 3, `each poll has its own idempotency key: ${keys}`);

        assert.equal(echo.hits("/p1-after"), 1, "downstream ran once");
        const downstream = echo.requests().find((r) => r.path === "/p1-after").body;
        assert.equal(downstream.answer, 42);
        assert.deepEqual(downstream.data, { answer: 42 }, "the done body flowed on in the context");
        assert.ok(statuses(done.body.trace).includes("job:succeeded"), done.text);
        assert.deepEqual(done.body.waits, []);
        const closed = closedWait(done, wait.wait_id);
        assert.ok(closed, done.text);
        assert.equal(closed.how, "polled");
        assert.equal(closed.node_id, "job");
        assert.deepEqual(eventsOf(closed), ["poll:accepted", "poll:accepted", "poll:accepted"]);

        await sleep(1500);
        assert.equal(status.polls.length, 3, "no poll after the wait closed");
    } finally {
        await status.close();
    }
});

test("poll_task: a status that says failed takes ON_FAIL (default reading, at the first poll)", async () => {
    const status = await statusServer(() => ({ status: "FAILED", reason: "disk full" }));
    try {
        const graph = {
            nodes: [
                { id: "job", type: "Component", componentId: "poll_task", data: { url: `${status.url}/f1` } },
                { id: "fallback", type: "Component", componentId: `${echo.url}/p2-fallback`, data: { why: "{{job.error}}", reason: "{{job.reason}}" } },
                { id: "never", type: "Component", componentId: `${echo.url}/p2-never` },
                { id: "out", type: "Output", data: { why: "{{fallback.why}}", reason: "{{fallback.reason}}" } },
            ],
            edges: [
                { from: "job", to: "fallback", type: "ON_FAIL" },
                { from: "job", to: "never", type: "ON_SUCCESS" },
                { from: "fallback", to: "out", type: "PIPE" },
            ],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.status, 200, t.text);
        // The first poll is in the triggering invocation, and so is everything after it.
        assert.equal(t.body.status, "completed", t.text);
        assert.equal(t.body.data.reason, "disk full");
        assert.equal(typeof t.body.data.why, "string", t.text);
        assert.match(t.body.data.why, /fail/i);
        assert.equal(status.polls.length, 1);
        assert.equal(echo.hits("/p2-fallback"), 1);
        assert.equal(echo.hits("/p2-never"), 0);
        assert.ok(statuses(t.body.trace).includes("job:failed"), t.text);
    } finally {
        await status.close();
    }
});

test("poll_task: done_when / failed_when override the default reading; failure on a later poll takes ON_FAIL", async () => {
    // Poll 1 says status "failed" (which the default would read as failure) but state "working";
    // poll 2 says ready — and code 503, which failed_when reads as failure, and failure wins.
    const status = await statusServer((n) => (n === 1 ? { state: "working", status: "failed" } : { state: "ready", code: 503 }));
    try {
        const graph = {
            nodes: [
                {
                    id: "job",
                    type: "Component",
                    componentId: "poll_task",
                    data: { url: `${status.url}/f2`, interval_seconds: 1, done_when: "state === 'ready'", failed_when: "code >= 500" },
                },
                { id: "fallback", type: "Component", componentId: `${echo.url}/p2b-fallback`, data: { code: "{{job.code}}" } },
                { id: "never", type: "Component", componentId: `${echo.url}/p2b-never` },
            ],
            edges: [
                { from: "job", to: "fallback", type: "ON_FAIL" },
                { from: "job", to: "never", type: "ON_SUCCESS" },
            ],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", `custom conditions: "failed" status alone is still running: ${t.text}`);
        assert.equal(status.polls.length, 1);
        const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 1000 + ALARM_SLACK_MS);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(status.polls.length, 2);
        assert.equal(echo.hits("/p2b-fallback"), 1);
        assert.equal(echo.requests().find((r) => r.path === "/p2b-fallback").body.code, 503);
        assert.equal(echo.hits("/p2b-never"), 0);
    } finally {
        await status.close();
    }
});

test("poll_task: three unusable answers in a row fail the node", async () => {
    // HTTP 500, then not JSON, then HTTP 502.
    const status = await statusServer((n) =>
        n === 1 ? { status: 500, body: { oops: true } } : n === 2 ? { status: 200, body: "<html>not json</html>" } : { status: 502, body: { gateway: "down" } },
    );
    try {
        const graph = {
            nodes: [
                { id: "job", type: "Component", componentId: "poll_task", data: { url: `${status.url}/e3`, interval_seconds: 1 } },
                { id: "never", type: "Component", componentId: `${echo.url}/p2c-never` },
            ],
            edges: [{ from: "job", to: "never", type: "ON_SUCCESS" }],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const mid = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.deepEqual(eventsOf(mid.body.waits[0]), ["poll:failed"], mid.text);
        const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 2000 + ALARM_SLACK_MS);
        assert.equal(done.body.status, "failed", done.text);
        assert.equal(done.body.error.node_id, "job");
        assert.match(done.body.error.message, /3 times/, done.text);
        assert.equal(status.polls.length, 3);
        assert.equal(echo.hits("/p2c-never"), 0);
        const closed = done.body.closed_waits?.[0];
        assert.deepEqual(eventsOf(closed), ["poll:failed", "poll:failed", "poll:failed"], done.text);
    } finally {
        await status.close();
    }
});

test("poll_task that never finishes fails with wait_timeout after timeout_seconds", async () => {
    const status = await statusServer(() => ({ status: "running" }));
    try {
        const graph = {
            nodes: [
                { id: "job", type: "Component", componentId: "poll_task", data: { url: `${status.url}/t3`, interval_seconds: 1, timeout_seconds: 3 } },
                { id: "never", type: "Component", componentId: `${echo.url}/p3-never` },
            ],
            edges: [{ from: "job", to: "never", type: "ON_SUCCESS" }],
        };
        const started = Date.now();
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const mid = await worker.fetchJson(`/runs/${t.body.run_id}`);
        const w = mid.body.waits[0];
        assert.ok(w.expires_at - w.since >= 2900 && w.expires_at - w.since <= 3100, `deadline ${w.expires_at - w.since} ms after the start`);

        const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 3000 + ALARM_SLACK_MS);
        const took = Date.now() - started;
        assert.equal(done.body.status, "failed", done.text);
        assert.equal(done.body.error.code, "wait_timeout", done.text);
        assert.equal(done.body.error.node_id, "job");
        assert.ok(took >= 2900, `failed ${took} ms after the trigger`);
        assert.ok(status.polls.length >= 2 && status.polls.length <= 4, `${status.polls.length} polls in 3 s at 1 s`);
        assert.equal(closedWait(done, w.wait_id)?.how, "timed_out", done.text);
        assert.equal(echo.hits("/p3-never"), 0);
        const n = status.polls.length;
        await sleep(1500);
        assert.equal(status.polls.length, n, "no poll after the deadline");
    } finally {
        await status.close();
    }
});

// ---------------------------------------------------------------------------------------
// status_url: callback or poll, whichever reports first

/** slow (pending, with a status URL) -ON_SUCCESS-> after -> out */
const statusUrlGraph = (componentUrl, p) => ({
    nodes: [
        { id: "slow", type: "Component", componentId: componentUrl },
        { id: "after", type: "Component", componentId: `${echo.url}${p}-after`, data: { v: "{{slow.data.v}}" } },
        { id: "out", type: "Output", data: { v: "{{after.v}}" } },
    ],
    edges: [
        { from: "slow", to: "after", type: "ON_SUCCESS" },
        { from: "after", to: "out", type: "PIPE" },
    ],
});

test("status_url: the poll reports first and resumes the wait; the late callback is an already_resumed noop", async () => {
    const status = await statusServer(() => ({ status: "succeeded", data: { v: "from-poll" } }));
    const comp = await pendingWithStatus({ taskId: "job-4a", statusUrl: `${status.url}/s4a`, intervalSeconds: 1 });
    try {
        const sentAt = Date.now();
        const t = await worker.fetchJson("/execute", { body: { graph: statusUrlGraph(comp.url, "/p4a") } });
        assert.equal(t.body.status, "paused", t.text);
        assert.equal(t.body.task_id, "job-4a");
        assert.equal(status.polls.length, 0, "a status URL is first polled one interval after the pause");
        const mid = await worker.fetchJson(`/runs/${t.body.run_id}`);
        const w = mid.body.waits[0];
        assert.equal(w.task_id, "job-4a");
        assert.equal(w.poll?.url, `${status.url}/s4a`, mid.text);
        assert.equal(w.poll.interval_ms, 1000);
        assert.equal(w.poll.attempts, 0);

        const done = await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 1000 + ALARM_SLACK_MS);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.v, "from-poll");
        assert.equal(status.polls.length, 1);
        // Due one interval after the pause, which came after the trigger was sent.
        assert.ok(status.polls[0].at - sentAt >= 950, `first poll ${status.polls[0].at - sentAt} ms after the trigger`);
        assert.equal(echo.hits("/p4a-after"), 1);

        await kvCaughtUp(worker, t.body.run_id);
        const before = await worker.kvSnapshot();
        const late = await postCallback(comp.calls[0].callbackUrl, "job-4a", { success: true, data: { v: "from-callback" } });
        assert.equal(late.status, 200, late.text);
        assert.deepEqual(late.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.body.run_id, task_id: "job-4a" });
        assert.equal(kvOps(late).writes, 0, late.headers.get("x-arcrun-kv-ops"));
        assert.deepEqual(await worker.kvSnapshot(), before, "the late callback changed nothing");
        assert.equal(echo.hits("/p4a-after"), 1, "downstream ran once");

        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.equal(read.body.data.v, "from-poll");
        const closed = closedWait(read, w.wait_id);
        assert.equal(closed?.how, "polled", read.text);
        assert.equal(closed.task_id, "job-4a");
        assert.deepEqual(eventsOf(closed), ["poll:accepted", "callback:duplicate"]);
    } finally {
        await comp.close();
        await status.close();
    }
});

test("status_url: a callback before the first poll wins and the status URL is never polled", async () => {
    const status = await statusServer(() => ({ status: "succeeded", data: { v: "from-poll" } }));
    const comp = await pendingWithStatus({ taskId: "job-4b", statusUrl: `${status.url}/s4b`, intervalSeconds: 2 });
    try {
        const t = await worker.fetchJson("/execute", { body: { graph: statusUrlGraph(comp.url, "/p4b") } });
        assert.equal(t.body.status, "paused", t.text);
        const r = await postCallback(comp.calls[0].callbackUrl, "job-4b", { success: true, data: { v: "from-callback" } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.resumed, true, r.text);
        assert.equal(r.body.status, "completed", r.text);
        assertCallbackAnswer(r.body, { status: "completed", run_id: t.body.run_id, task_id: "job-4b" });
        assert.equal((await runView(worker, t.body.run_id)).data.v, "from-callback");

        await sleep(3500); // past when the first poll would have been made
        assert.equal(status.polls.length, 0, "the status URL was never polled");
        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.equal(read.body.status, "completed");
        assert.equal(read.body.data.v, "from-callback");
        assert.equal(echo.hits("/p4b-after"), 1);
        const closed = read.body.closed_waits?.[0];
        assert.equal(closed?.how, "resumed", read.text);
        assert.deepEqual(eventsOf(closed), ["callback:accepted"]);
    } finally {
        await comp.close();
        await status.close();
    }
});

// ---------------------------------------------------------------------------------------
// Heartbeats

test("heartbeats: bad token 401, bad body 400, bad extend_seconds 400 invalid_request", async () => {
    const pend = await pendingComponent();
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: `${pend.url}/hv`, wait_timeout_seconds: 60 }], edges: [] };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const cb = pend.on("/hv")[0].callbackUrl;
        const before = await worker.kvSnapshot();

        const forged = cb.replace(/token=(\d+)\.[^&]+/, `token=$1.${"A".repeat(43)}`);
        assert.notEqual(forged, cb);
        const badToken = await postHeartbeat(forged, { progress: 1 });
        assert.equal(badToken.status, 401, badToken.text);
        const noToken = await postHeartbeat(cb.replace(/\?.*$/, ""), { progress: 1 });
        assert.equal(noToken.status, 401, noToken.text);

        for (const body of ["[1, 2]", '"text"', "3", "null"]) {
            const r = await postHeartbeat(cb, body);
            assert.equal(r.status, 400, `${body}: ${r.text}`);
            assert.equal(r.body.success, false);
        }
        for (const extend of [0, -5, 1.5, "10", true, []]) {
            const r = await postHeartbeat(cb, { extend_seconds: extend });
            assert.equal(r.status, 400, `${JSON.stringify(extend)}: ${r.text}`);
            assert.equal(r.body.error.code, "invalid_request", r.text);
        }
        assert.deepEqual(await worker.kvSnapshot(), before, "refused heartbeats change nothing");
        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.equal(read.body.waits[0].heartbeat_at, undefined, read.text);

        // Heartbeats may not push a deadline past MAX_WAIT_SECONDS (7 days) from the wait's start.
        const far = await postHeartbeat(cb, { extend_seconds: 1e9 });
        assert.equal(far.status, 200, far.text);
        assert.equal(far.body.expires_at, read.body.waits[0].since + DEFAULT_MAX_WAIT_MS, far.text);
        await worker.fetchJson(`/runs/${t.body.run_id}/cancel`, { method: "POST" });
    } finally {
        await pend.close();
    }
});

test("heartbeats report progress and push the deadline later; the URLs first handed out stay good", async () => {
    const pend = await pendingComponent();
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: `${pend.url}/h1`, wait_timeout_seconds: 3 },
                { id: "fallback", type: "Component", componentId: `${echo.url}/h1-fallback` },
                { id: "out", type: "Output", data: { v: "{{slow.data.v}}" } },
            ],
            edges: [
                { from: "slow", to: "fallback", type: "ON_FAIL" },
                { from: "slow", to: "out", type: "ON_SUCCESS" },
            ],
        };
        const t0 = Date.now();
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const id = t.body.run_id;
        const call = pend.on("/h1")[0];
        const first = (await worker.fetchJson(`/runs/${id}`)).body.waits[0];
        assert.ok(first.expires_at - first.since <= 3100, JSON.stringify(first));

        await sleep(Math.max(0, t0 + 1000 - Date.now()));
        const sentAt = Date.now();
        const hb = await postHeartbeat(call.callbackUrl, { progress: { pct: 30, note: "a third" }, extend_seconds: 10 });
        assert.equal(hb.status, 200, hb.text);
        assert.equal(hb.body.success, true, hb.text);
        assert.ok(hb.body.expires_at >= sentAt + 9000 && hb.body.expires_at <= Date.now() + 10000, `${hb.text} (sent at ${sentAt})`);
        assert.ok(hb.body.expires_at > first.expires_at);

        const shown = await worker.fetchJson(`/runs/${id}`);
        const w = shown.body.waits[0];
        assert.deepEqual(w.progress, { pct: 30, note: "a third" }, shown.text);
        assert.ok(Number.isInteger(w.heartbeat_at) && w.heartbeat_at >= w.since, shown.text);
        assert.equal(w.expires_at, hb.body.expires_at);
        assert.deepEqual(eventsOf(w), ["heartbeat:accepted"]);

        // Progress alone keeps the deadline; a shorter extension never brings it earlier.
        const progressOnly = await postHeartbeat(call.callbackUrl, { progress: { pct: 60 } });
        assert.equal(progressOnly.status, 200, progressOnly.text);
        assert.equal(progressOnly.body.expires_at, hb.body.expires_at);
        const shorter = await postHeartbeat(call.callbackUrl, { extend_seconds: 1 });
        assert.equal(shorter.body.expires_at, hb.body.expires_at, shorter.text);
        const again = await worker.fetchJson(`/runs/${id}`);
        assert.deepEqual(again.body.waits[0].progress, { pct: 60 }, again.text);

        // Past the original deadline (3 s), the run still waits.
        await sleep(Math.max(0, t0 + 5000 - Date.now()));
        const still = await worker.fetchJson(`/runs/${id}`);
        assert.equal(still.body.status, "paused", still.text);
        assert.equal(echo.hits("/h1-fallback"), 0, "the original deadline did not fire");

        // The URLs the component was given stay good while the wait is open, however often
        // heartbeats move its deadline (a daemon keeps them): the heartbeat answered the same
        // ones, and the result posted to the first, past its first deadline, resumes the run.
        assert.equal(hb.body.callback_url, call.callbackUrl, hb.text);
        assert.equal(hb.body.heartbeat_url, heartbeatUrlOf(call.callbackUrl));
        const r = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: "kept" } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.resumed, true, r.text);
        assert.equal(r.body.status, "completed", r.text);
        assertCallbackAnswer(r.body, { status: "completed", run_id: id, task_id: call.taskId });
        assert.equal((await runView(worker, id)).data.v, "kept");
        assert.equal(echo.hits("/h1-fallback"), 0);
        const closed = closedWait(await worker.fetchJson(`/runs/${id}`), first.wait_id);
        assert.deepEqual(eventsOf(closed), ["heartbeat:accepted", "heartbeat:accepted", "heartbeat:accepted", "callback:accepted"]);
    } finally {
        await pend.close();
    }
});

test("a result past the wait's deadline is expired, though its URL is good while the wait may last", async () => {
    const pend = await pendingComponent();
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: `${pend.url}/late`, wait_timeout_seconds: 2 },
                { id: "fallback", type: "Component", componentId: `${echo.url}/late-fallback` },
            ],
            edges: [{ from: "slow", to: "fallback", type: "ON_FAIL" }],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const call = pend.on("/late")[0];
        await waitForStatus(worker, t.body.run_id, ["completed", "failed"], 2000 + ALARM_SLACK_MS);
        assert.equal(echo.hits("/late-fallback"), 1, "the deadline fired");
        const late = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: "late" } });
        assert.equal(late.status, 200, late.text);
        assert.equal(late.body.noop, true, late.text);
        assert.equal(late.body.reason, "expired", late.text);
        assert.equal(echo.hits("/late-fallback"), 1, "nothing ran again");
    } finally {
        await pend.close();
    }
});

test("the reference daemon's heartbeats keep a 2 s wait open through a 5 s task; without them it times out", async () => {
    const daemon = await startDaemon({ delayMs: 5000, heartbeatMs: 700, retryDelaysMs: [0, 500, 1000], log: () => {} });
    try {
        const graph = (p, extra = {}) => ({
            nodes: [
                { id: "slow", type: "Component", componentId: `${daemon.url}${p}`, wait_timeout_seconds: 2, data: { result: "{{topic}}", ...extra } },
                { id: "fallback", type: "Component", componentId: `${echo.url}${p}-fallback`, data: { why: "{{slow.error.code}}" } },
                { id: "out", type: "Output", data: { result: "{{slow.data.result}}" } },
            ],
            edges: [
                { from: "slow", to: "out", type: "ON_SUCCESS" },
                { from: "slow", to: "fallback", type: "ON_FAIL" },
            ],
        });
        const [beating, silent] = await Promise.all([
            worker.fetchJson("/execute", { body: { graph: graph("/hb"), context: { topic: "kept alive" } } }),
            // The same task with its heartbeats turned off: the control.
            worker.fetchJson("/execute", { body: { graph: graph("/quiet", { heartbeat_ms: 0 }), context: { topic: "silent" } } }),
        ]);
        assert.equal(beating.body.status, "paused", beating.text);
        assert.equal(silent.body.status, "paused", silent.text);

        const timedOut = await waitForStatus(worker, silent.body.run_id, ["completed", "failed"], 2000 + ALARM_SLACK_MS);
        assert.equal(timedOut.body.status, "completed", timedOut.text);
        assert.equal(echo.hits("/quiet-fallback"), 1, "without heartbeats the deadline fired");
        assert.equal(echo.requests().find((r) => r.path === "/quiet-fallback").body.why, "wait_timeout");

        // Past its first deadline, the heartbeat run is still paused and shows the daemon's progress.
        const mid = await worker.fetchJson(`/runs/${beating.body.run_id}`);
        assert.equal(mid.body.status, "paused", mid.text);
        const w = mid.body.waits[0];
        assert.equal(w.progress?.delay_ms, 5000, mid.text);
        assert.ok(Number.isInteger(w.progress.elapsed_ms) && w.progress.elapsed_ms > 0 && w.progress.elapsed_ms <= 5000, mid.text);
        assert.ok(w.expires_at - w.since > 2000, `the deadline moved: ${w.expires_at - w.since} ms after the start`);
        assert.ok(eventsOf(w).every((e) => e === "heartbeat:accepted") && eventsOf(w).length >= 2, mid.text);

        const done = await waitForStatus(worker, beating.body.run_id, ["completed", "failed"], 5000 + ALARM_SLACK_MS);
        assert.equal(done.body.status, "completed", done.text);
        assert.equal(done.body.data.result, "kept alive");
        assert.equal(echo.hits("/hb-fallback"), 0, "the deadline never fired");

        const task = (id) => daemon.stats().tasks.find((x) => x.task_id === id);
        await until("the daemon to record both callbacks", () => task(beating.body.task_id)?.delivered && task(silent.body.task_id)?.delivered, { timeoutMs: 5000 });
        const hbTask = task(beating.body.task_id);
        assert.ok(hbTask.heartbeats >= 4, `${hbTask.heartbeats} heartbeats in 5 s at 700 ms`);
        assert.equal(hbTask.heartbeats_failed, 0, hbTask.last_heartbeat_error);
        assert.equal(hbTask.heartbeats_ok, hbTask.heartbeats);
        assert.equal(hbTask.last_heartbeat_response?.success, true);
        assert.equal(hbTask.attempts, 1);
        assert.equal(hbTask.response?.status, "completed", JSON.stringify(hbTask.response));
        assertCallbackAnswer(hbTask.response, { status: "completed", run_id: beating.body.run_id, task_id: beating.body.task_id });
        assert.equal(hbTask.heartbeat_url, heartbeatUrlOf(hbTask.callback_url));

        const quietTask = task(silent.body.task_id);
        assert.equal(quietTask.heartbeats, 0);
        assertExpired(quietTask.response);

        const closed = closedWait(done, w.wait_id);
        const events = eventsOf(closed);
        assert.equal(events.at(-1), "callback:accepted", done.text);
        assert.equal(events.filter((e) => e === "heartbeat:accepted").length, Math.min(hbTask.heartbeats, 19));
    } finally {
        await daemon.close();
    }
});

// ---------------------------------------------------------------------------------------
// Events on waits

test("events: a duplicate callback and heartbeat show on the closed wait and cost no KV write", async () => {
    const pend = await pendingComponent();
    try {
        const graph = {
            nodes: [
                { id: "slow", type: "Component", componentId: `${pend.url}/e1` },
                { id: "after", type: "Component", componentId: `${echo.url}/e1-after` },
            ],
            edges: [{ from: "slow", to: "after", type: "ON_SUCCESS" }],
        };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const waitId = t.body.waits[0].wait_id;
        const call = pend.on("/e1")[0];
        const ok = await postCallback(call.callbackUrl, call.taskId, { success: true, data: {} });
        assert.equal(ok.body.status, "completed", ok.text);
        assertCallbackAnswer(ok.body, { status: "completed", run_id: t.body.run_id, task_id: call.taskId });
        // One KV write: in the request, or (within a second of the trigger's) once the second has passed.
        assert.ok(kvOps(ok).writes <= 1, ok.headers.get("x-arcrun-kv-ops"));
        await kvCaughtUp(worker, t.body.run_id);

        const before = await worker.kvSnapshot();
        const dup = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { again: true } });
        assert.equal(dup.status, 200);
        assert.deepEqual(dup.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.body.run_id, task_id: call.taskId });
        assert.equal(kvOps(dup).writes, 0, dup.headers.get("x-arcrun-kv-ops"));
        const lateBeat = await postHeartbeat(call.callbackUrl, { progress: 99 });
        assert.equal(lateBeat.status, 200, lateBeat.text);
        assert.deepEqual(lateBeat.body, { success: true, noop: true, reason: "already_resumed", status: "completed", run_id: t.body.run_id });
        assert.equal(kvOps(lateBeat).writes, 0, lateBeat.headers.get("x-arcrun-kv-ops"));
        assert.deepEqual(await worker.kvSnapshot(), before, "turned-away requests change nothing in KV");
        assert.equal(echo.hits("/e1-after"), 1);

        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        const closed = closedWait(read, waitId);
        assert.ok(closed, read.text);
        assert.equal(closed.how, "resumed");
        assert.equal(closed.task_id, call.taskId);
        assert.equal(closed.node_id, "slow");
        assert.ok(Number.isInteger(closed.at));
        assert.deepEqual(eventsOf(closed), ["callback:accepted", "callback:duplicate", "heartbeat:duplicate"]);
    } finally {
        await pend.close();
    }
});

test("events: a task mismatch shows on the open wait at no KV write; later events join it in order", async () => {
    const pend = await pendingComponent();
    try {
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: `${pend.url}/e2` }], edges: [] };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const call = pend.on("/e2")[0];

        const before = await worker.kvSnapshot();
        const wrong = await postCallback(call.callbackUrl, "somebody-else", { success: true, data: {} });
        assert.equal(wrong.status, 409, wrong.text);
        assert.equal(wrong.body.error.code, "task_mismatch");
        assert.equal(kvOps(wrong).writes, 0, wrong.headers.get("x-arcrun-kv-ops"));
        const wrongBeat = await postHeartbeat(call.callbackUrl, { task_id: "somebody-else", extend_seconds: 5 });
        assert.equal(wrongBeat.status, 409, wrongBeat.text);
        assert.equal(kvOps(wrongBeat).writes, 0);
        assert.deepEqual(await worker.kvSnapshot(), before);

        const open = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.equal(open.body.status, "paused");
        assert.deepEqual(eventsOf(open.body.waits[0]), ["callback:task_mismatch", "heartbeat:task_mismatch"], open.text);

        const beat = await postHeartbeat(call.callbackUrl, { progress: "half" });
        assert.equal(beat.status, 200, beat.text);
        const ok = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { v: 1 } });
        assert.equal(ok.body.status, "completed", ok.text);
        assertCallbackAnswer(ok.body, { status: "completed", run_id: t.body.run_id, task_id: call.taskId });

        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        assert.deepEqual(read.body.waits, []);
        const closed = closedWait(read, open.body.waits[0].wait_id);
        assert.equal(closed?.how, "resumed", read.text);
        assert.deepEqual(eventsOf(closed), ["callback:task_mismatch", "heartbeat:task_mismatch", "heartbeat:accepted", "callback:accepted"]);
    } finally {
        await pend.close();
    }
});

test("events: a callback after its deadline, or after a cancel, is recorded late, at no KV write", async () => {
    const pend = await pendingComponent();
    try {
        // Past the wait's deadline (its URL still good: it is for as long as the wait may last),
        // a callback is answered expired by the run's gate, and recorded late on the wait.
        const graph = { nodes: [{ id: "slow", type: "Component", componentId: `${pend.url}/e3`, wait_timeout_seconds: 1 }], edges: [] };
        const t = await worker.fetchJson("/execute", { body: { graph } });
        assert.equal(t.body.status, "paused", t.text);
        const failed = await waitForStatus(worker, t.body.run_id, ["failed", "completed"], 1000 + ALARM_SLACK_MS);
        assert.equal(failed.body.status, "failed", failed.text);
        const call = pend.on("/e3")[0];
        const expired = await postCallback(call.callbackUrl, call.taskId, { success: true });
        assertExpired(expired.body);
        assert.match(expired.headers.get("x-arcrun-kv-ops") ?? "", /writes=0;lists=0$/);
        const read = await worker.fetchJson(`/runs/${t.body.run_id}`);
        const closed = read.body.closed_waits?.[0];
        assert.equal(closed?.how, "timed_out", read.text);
        assert.deepEqual(eventsOf(closed), ["callback:late"]);

        // With a URL still good, a callback after the run was cancelled reaches the wait and is
        // recorded as late, without a KV write.
        const c = await worker.fetchJson("/execute", { body: { graph: { nodes: [{ id: "slow", type: "Component", componentId: `${pend.url}/e4` }], edges: [] } } });
        assert.equal(c.body.status, "paused", c.text);
        const cancelled = await worker.fetchJson(`/runs/${c.body.run_id}/cancel`, { method: "POST" });
        assert.equal(cancelled.status, 200, cancelled.text);
        const call2 = pend.on("/e4")[0];
        const late = await postCallback(call2.callbackUrl, call2.taskId, { success: true });
        assert.deepEqual(late.body, { success: false, noop: true, reason: "run_finished", status: "cancelled", run_id: c.body.run_id, task_id: call2.taskId });
        assert.equal(kvOps(late).writes, 0, late.headers.get("x-arcrun-kv-ops"));
        const after = await worker.fetchJson(`/runs/${c.body.run_id}`);
        const closed2 = after.body.closed_waits?.[0];
        assert.equal(closed2?.how, "cancelled", after.text);
        assert.deepEqual(eventsOf(closed2), ["callback:late"]);
    } finally {
        await pend.close();
    }
});
