// Helpers for tests that read a run after a callback.
//
// A callback's answer is small (`{success, resumed, status, run_id, task_id, duration_ms,
// paused_again?, paused_node_id?, error?, failed_node?}`): the run's trace, waits and output are
// read from `GET /runs/{run_id}`. And a run's record is written to KV at most once a second: a
// callback that comes less than a second after the previous write is applied at once (and
// `GET /runs/{id}` shows it, served by the run's gate) but reaches KV when the second has passed,
// so a test that looks straight into KV waits for it with `kvCaughtUp`.

import assert from "node:assert/strict";

import { isDeepStrictEqual } from "node:util";

import { TEST_API_KEY, waitUntil, readUntilSteady, storedStatus } from "./harness.mjs";

/** Where a run's record is kept in KV: `runs/{owner tag}/{id}` for listed ids, `run:{id}` for 32-hex ones. */
export const recordKey = (id) => {
    const m = /^([0-9a-f]{16})-[0-9a-f]{11}-[0-9a-f]+$/.exec(id);
    return m ? `runs/${m[1]}/${id}` : `run:${id}`;
};

/** The run as `GET /runs/{id}` shows it (asserts a 200): the body. */
export async function runView(worker, runId, { apiKey = TEST_API_KEY } = {}) {
    const r = await worker.fetchJson(`/runs/${runId}`, { apiKey });
    assert.equal(r.status, 200, `GET /runs/${runId}: ${r.text}`);
    return r.body;
}

/**
 * Waits until the run's record in KV has caught up with what `GET /runs/{id}` shows (the same
 * status and `updated_at`): writes are paced to one a second per key, so the record can lag a
 * callback by about a second. Returns `{view, record, entry}`: the run's view, its parsed KV
 * record and its listing entry (`{name, expiration, metadata}`).
 */
export async function kvCaughtUp(worker, runId, { apiKey = TEST_API_KEY, timeoutMs = 8000 } = {}) {
    const view = await runView(worker, runId, { apiKey });
    const key = recordKey(runId);
    const kv = await worker.mf.getKVNamespace("RUNS");
    let last;
    try {
        return await waitUntil(
            `the KV record of ${runId} to reach ${view.status} (updated_at ${view.updated_at})`,
            async () => {
                const text = await kv.get(key, "text");
                if (text === null) return null;
                const record = JSON.parse(text);
                last = { status: storedStatus(record), updated_at: record.updated_at };
                if (record.updated_at !== view.updated_at || storedStatus(record) !== view.status) return null;
                const entry = (await kv.list({ prefix: key })).keys.find((k) => k.name === key);
                return entry ? { view, record, entry } : null;
            },
            { timeoutMs, everyMs: 50 },
        );
    } catch (err) {
        err.message += `; KV holds ${JSON.stringify(last)}`;
        throw err;
    }
}

/** Every field a callback's answer may carry (`CallbackAnswer` in public/openapi.json). */
export const CALLBACK_ANSWER_KEYS = ["success", "resumed", "status", "run_id", "task_id", "duration_ms", "paused_again", "paused_node_id", "error", "failed_node"];

/**
 * Checks a callback's small answer: `resumed: true`, the given `status`, `run_id` and
 * `task_id`, `success` false only for failed/cancelled runs, a `duration_ms`, and nothing else
 * (no trace, data or waits). `paused_again: true` comes with `status: "paused"` and a
 * `paused_node_id` (the run went on and paused on a new wait); a callback that leaves the run
 * waiting on its other waits is `paused` without it. Pass `paused_again: true` (or `undefined`)
 * and `paused_node_id` to require them.
 */
export function assertCallbackAnswer(body, expected = {}, what = "callback answer") {
    const { status, run_id, task_id, paused_node_id } = expected;
    const text = JSON.stringify(body);
    assert.ok(body && typeof body === "object", `${what}: ${text}`);
    const extra = Object.keys(body).filter((k) => !CALLBACK_ANSWER_KEYS.includes(k));
    assert.deepEqual(extra, [], `${what}: only the small answer's fields: ${text}`);
    assert.equal(body.resumed, true, `${what}: ${text}`);
    if (status !== undefined) assert.equal(body.status, status, `${what}: ${text}`);
    assert.equal(body.success, !["failed", "cancelled"].includes(body.status), `${what}: success: ${text}`);
    if (run_id !== undefined) assert.equal(body.run_id, run_id, `${what}: run_id: ${text}`);
    if (task_id !== undefined) assert.equal(body.task_id, task_id, `${what}: task_id: ${text}`);
    assert.equal(typeof body.task_id, "string", `${what}: ${text}`);
    assert.ok(Number.isInteger(body.duration_ms) && body.duration_ms >= 0, `${what}: duration_ms: ${text}`);
    if ("paused_again" in expected) assert.equal(body.paused_again, expected.paused_again, `${what}: paused_again: ${text}`);
    if (body.paused_again !== undefined) {
        assert.equal(body.paused_again, true, `${what}: ${text}`);
        assert.equal(body.status, "paused", `${what}: paused_again comes with status paused: ${text}`);
        assert.equal(typeof body.paused_node_id, "string", `${what}: paused_again comes with paused_node_id: ${text}`);
    } else {
        assert.equal(body.paused_node_id, undefined, `${what}: paused_node_id only when paused again: ${text}`);
    }
    if (paused_node_id !== undefined) assert.equal(body.paused_node_id, paused_node_id, `${what}: paused_node_id: ${text}`);
    if (body.status === "failed") assert.ok(body.error, `${what}: a failed run's error: ${text}`);
    else assert.equal(body.error, undefined, `${what}: error only when failed: ${text}`);
}

/**
 * Checks a callback's `202` answer: it arrived while a segment of its run was executing and was
 * kept by the run's gate, to be applied when that segment ends (`CallbackAccepted`).
 */
export function assertCallbackAccepted(body, { run_id, task_id } = {}, what = "accepted callback") {
    const text = JSON.stringify(body);
    const { task_id: given, ...rest } = body ?? {};
    assert.deepEqual(rest, { success: true, accepted: true, status: "running", run_id }, `${what}: ${text}`);
    if (given !== undefined && task_id !== undefined) assert.equal(given, task_id, `${what}: task_id: ${text}`);
}

/**
 * A callback or heartbeat told its wait's deadline has passed: a noop that changes nothing. Its URL
 * may still be good (it is for as long as the wait may last), so the run's gate may answer it, with
 * the run's `run_id`, `status` and `task_id` beside the reason.
 */
export function assertExpired(body, what = "") {
    // `success` follows the run the noop names: false when it failed or was cancelled.
    const runFailed = ["failed", "cancelled"].includes(body?.status);
    assert.equal(body?.success, !runFailed, `${what} ${JSON.stringify(body)}`);
    assert.equal(body?.noop, true, `${what} ${JSON.stringify(body)}`);
    assert.equal(body?.reason, "expired", `${what} ${JSON.stringify(body)}`);
}

/**
 * `GET /runs?{query}` once the listing holds still: a run is answered before the alarm it sets
 * writes its record to KV, where the listing reads, so the listing is read until two readings
 * 100 ms apart agree. Answers the response.
 */
export async function listedRuns(worker, { query = "limit=1000", apiKey = TEST_API_KEY, timeoutMs = 5000 } = {}) {
    const read = async () => {
        const r = await worker.fetchJson(`/runs?${query}`, { apiKey });
        assert.equal(r.status, 200, `GET /runs?${query}: ${r.text}`);
        return r;
    };
    const same = (a, b) => isDeepStrictEqual(a.body.runs, b.body.runs);
    return readUntilSteady(read, { timeoutMs, same });
}
