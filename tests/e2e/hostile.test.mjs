// Hostile and malformed requests against the built Worker, over real HTTP.
//
// The corpus below is a data table: each case says what is sent (method, path, headers, a
// raw body or a body builder, or the complete raw HTTP request for what `fetch` will not
// send) and what must come back (status and error code). For every case the test checks:
//   - the status is the expected one, and never a 5xx;
//   - every 4xx is JSON `{"success": false, "error": {"code": <string>, "message": <string>}}`
//     with the expected code;
//   - KV holds exactly what it held before the request: every key's value and expiration
//     (snapshots before and after);
//   - what the gate serves for the runs in play (`GET /runs/{id}` of A, B and C) is byte for byte
//     what it was, except the `events` of a wait that a turned-away callback or heartbeat
//     reached: those must gain exactly the event the case names (`events`), and nothing else.
// A few cases expect a 200 "noop" (replayed and expired callbacks, tokens for waits or
// runs that do not exist); they are in the table because they, too, must change nothing.
//
// Requests that succeed on purpose (valid JSON sent as text/plain, template expansion that
// fails the run, the fail-closed 503 without API keys) change KV or are 5xx by design, so
// they are separate tests after the corpus.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { gzipSync } from "node:zlib";

import { startWorker, startComponent, mintToken, kvOps, assertMatchesOpenApi, TEST_API_KEY, TEST_API_KEY_HASH, TEST_CALLBACK_SECRET } from "./harness.mjs";
import { sha256hex } from "./harness.mjs";
import { kvCaughtUp, assertCallbackAnswer } from "./settle.mjs";

const OTHER_KEY = "other-key";
const OTHER_KEY_HASH = sha256hex(OTHER_KEY);
const CALLBACK_SECRET = TEST_CALLBACK_SECRET;
const MAX_BODY = 1 << 20; // MAX_BODY_BYTES default
const TEMPLATE_LIMIT = 64 * 1024; // MAX_TEMPLATE_BYTES for the main Worker
/** A 4xx answer larger than this is suspicious (problem lists must be capped). */
const SMALL_RESPONSE = 32 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers


/** `{url, runId, waitId, token, exp, path}` from a callback_url the Worker handed out. */
function parseCallbackUrl(callbackUrl, taskId) {
    const u = new URL(callbackUrl);
    const [, callbacks, runId, waitId] = u.pathname.split("/");
    assert.equal(callbacks, "callbacks", callbackUrl);
    const token = u.searchParams.get("token");
    return { url: callbackUrl, runId, waitId, token, exp: Number(token.split(".")[0]), taskId };
}

const cbPath = (runId, waitId, token) =>
    `/callbacks/${runId}/${waitId}` + (token === undefined ? "" : `?token=${encodeURIComponent(token)}`);

const json = (v) => JSON.stringify(v);
/** Where a run's record is kept in KV: `runs/{owner tag}/{id}` for listed ids, `run:{id}` for 32-hex ones. */
const recordKey = (id) => {
    const m = /^([0-9a-f]{16})-[0-9a-f]{11}-[0-9a-f]+$/.exec(id);
    return m ? `runs/${m[1]}/${id}` : `run:${id}`;
};
const body = (graph, extra = {}) => json({ graph, ...extra });
const passthrough = (id) => ({ id, type: "Component", componentId: "comp_passthrough" });
/** A graph that is valid and would run (used where something else must be rejected first). */
const VALID_GRAPH = {
    id: "ok",
    nodes: [{ id: "in", type: "Input" }, passthrough("p"), { id: "out", type: "Output" }],
    edges: [
        { from: "in", to: "p", type: "PIPE" },
        { from: "p", to: "out", type: "PIPE" },
    ],
};
/** A graph with one obvious problem: proves the body was parsed, and runs nothing. */
const INVALID_GRAPH = { nodes: [{ id: "a", type: "Banana" }], edges: [] };

const deepArrays = (n) => "[".repeat(n) + "]".repeat(n);
const deepObjects = (n) => '{"a":'.repeat(n) + "1" + "}".repeat(n);

/** A body of exactly `size` bytes: an invalid graph padded with spaces. */
function paddedBody(size) {
    const core = body(INVALID_GRAPH);
    assert.ok(core.length < size);
    return core + " ".repeat(size - core.length);
}

/** A chunked request body (a stream, so fetch sends no Content-Length). */
function chunkedStream(total, chunk = 64 * 1024) {
    const piece = new TextEncoder().encode(" ".repeat(chunk));
    const head = new TextEncoder().encode('{"graph": {"nodes": []}, "pad": "');
    let sent = 0;
    return new ReadableStream({
        pull(controller) {
            if (sent === 0) {
                controller.enqueue(head);
                sent += head.length;
            } else if (sent < total) {
                controller.enqueue(piece);
                sent += piece.length;
            } else {
                controller.enqueue(new TextEncoder().encode('"}'));
                controller.close();
            }
        },
    });
}

/**
 * Sends bytes on a fresh TCP connection and parses one HTTP/1.1 response (Content-Length
 * or chunked). `halfClose` ends the write side after sending, like a client that lied
 * about Content-Length and then stopped.
 */
function rawRequest(port, data, { halfClose = false, timeoutMs = 10000 } = {}) {
    return new Promise((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1");
        let buf = Buffer.alloc(0);
        let settled = false;
        const done = (err, value) => {
            if (settled) return;
            settled = true;
            socket.destroy();
            err ? reject(err) : resolve(value);
        };
        const tryParse = (eof) => {
            const end = buf.indexOf("\r\n\r\n");
            if (end < 0) return eof ? done(new Error(`no HTTP response: ${JSON.stringify(buf.toString("latin1"))}`)) : undefined;
            const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
            if (!m) return done(new Error(`bad status line: ${lines[0]}`));
            const headers = new Map();
            for (const line of lines.slice(1)) {
                const i = line.indexOf(":");
                headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
            }
            const rest = buf.subarray(end + 4);
            let bodyBuf;
            if (headers.has("content-length")) {
                const n = Number(headers.get("content-length"));
                if (rest.length < n) return eof ? done(new Error("truncated response")) : undefined;
                bodyBuf = rest.subarray(0, n);
            } else if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
                const parts = [];
                let off = 0;
                for (;;) {
                    const nl = rest.indexOf("\r\n", off);
                    if (nl < 0) return eof ? done(new Error("truncated chunked response")) : undefined;
                    const size = parseInt(rest.subarray(off, nl).toString("latin1"), 16);
                    if (size === 0) break;
                    if (rest.length < nl + 2 + size + 2) return eof ? done(new Error("truncated chunk")) : undefined;
                    parts.push(rest.subarray(nl + 2, nl + 2 + size));
                    off = nl + 2 + size + 2;
                }
                bodyBuf = Buffer.concat(parts);
            } else {
                if (!eof) return undefined; // body runs to the end of the connection
                bodyBuf = rest;
            }
            done(null, { status: Number(m[1]), headers, text: bodyBuf.toString("utf8") });
        };
        socket.on("data", (c) => {
            buf = Buffer.concat([buf, c]);
            tryParse(false);
        });
        socket.on("end", () => tryParse(true));
        socket.on("error", (e) => (buf.length ? tryParse(true) : done(e)));
        socket.setTimeout(timeoutMs, () => done(new Error(`raw request timed out after ${timeoutMs} ms`)));
        socket.write(data, () => {
            if (halfClose) socket.end();
        });
    });
}

/**
 * Uploads a chunked body over a raw socket, one piece at a time, and stops as soon as the
 * response arrives. Unlike fetch, a server that answers early and closes its side cannot make
 * this fail: the response is read whatever happens to the rest of the upload. Returns the
 * response and how many pieces were written before it came.
 */
function rawChunkedUpload(port, path, { prefix, pieceBytes, pieces, suffix = "", declared = false, auth = true }) {
    return new Promise((resolve, reject) => {
        const socket = net.connect(port, "127.0.0.1");
        // `declared`: an honest Content-Length and a plain body instead of chunked framing.
        const length = Buffer.byteLength(prefix ?? "") + pieceBytes * pieces + Buffer.byteLength(suffix);
        const head = [`POST ${path} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close", ...(auth ? [AUTH] : []),
            "Content-Type: application/json", declared ? `Content-Length: ${length}` : "Transfer-Encoding: chunked"].join("\r\n") + "\r\n\r\n";
        const chunk = (bytes) => declared ? bytes : Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from("\r\n")]);
        const piece = chunk(Buffer.alloc(pieceBytes, 0x20));
        let buf = Buffer.alloc(0);
        let sent = 0;
        let answered = false;
        const finish = () => {
            const end = buf.indexOf("\r\n\r\n");
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.toString("latin1"));
            if (end < 0 || !m) return reject(new Error(`no HTTP response after ${sent} pieces`));
            const headers = new Map();
            for (const line of buf.subarray(0, end).toString("latin1").split("\r\n").slice(1)) {
                const i = line.indexOf(":");
                headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
            }
            const rest = buf.subarray(end + 4);
            const length = headers.get("content-length");
            const text = (length ? rest.subarray(0, Number(length)) : rest).toString("utf8");
            socket.destroy();
            resolve({ status: Number(m[1]), text, headers, sent });
        };
        socket.on("data", (c) => {
            answered = true;
            buf = Buffer.concat([buf, c]);
        });
        socket.on("end", finish);
        socket.on("close", () => (buf.length ? finish() : reject(new Error(`closed without a response after ${sent} pieces`))));
        socket.on("error", () => {}); // writes after the server answered may fail; the answer is what counts
        socket.setTimeout(20000, () => socket.destroy());
        const pump = async () => {
            socket.write(head + (prefix ? chunk(Buffer.from(prefix)).toString("latin1") : ""), "latin1");
            while (!answered && sent < pieces && !socket.destroyed) {
                sent++;
                if (!socket.write(piece)) await new Promise((r) => socket.once("drain", r).once("close", r));
            }
            if (!answered && !socket.destroyed) socket.write(Buffer.concat([suffix ? chunk(Buffer.from(suffix)) : Buffer.alloc(0), Buffer.from(declared ? "" : "0\r\n\r\n")]));
        };
        socket.on("connect", () => pump().catch(() => {}));
    });
}

/** A complete HTTP/1.1 request as bytes; `head` lines go between the request line and the blank line. */
function rawHttp(method, path, head = [], payload = "") {
    const lines = [`${method} ${path} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close", ...head];
    return Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1"), Buffer.from(payload)]);
}
const AUTH = `Authorization: Bearer ${TEST_API_KEY}`;

/**
 * KV as it is: every key with its value, expiration and metadata. `list()` reports each key's
 * expiration, so a request that rewrote a record with the same text but a new TTL is caught.
 */
async function kvState() {
    const kv = await worker.mf.getKVNamespace("RUNS");
    const state = new Map();
    let cursor;
    for (let page = 0; page < 1000; page++) {
        const listed = await kv.list(cursor ? { cursor } : {});
        for (const { name, expiration, metadata } of listed.keys) {
            state.set(name, { value: await kv.get(name, "text"), expiration: expiration ?? null, metadata: metadata ?? null });
        }
        if (listed.list_complete) return state;
        cursor = listed.cursor;
    }
    throw new Error("KV listing did not end after 1000 pages");
}

/** What the gate serves for runs A, B and C: the text of `GET /runs/{id}`, read with the owner's key. */
async function servedViews() {
    const views = {};
    for (const [name, id, key] of [["A", ctx.A.id, TEST_API_KEY], ["B", ctx.B.id, OTHER_KEY], ["C", ctx.C.id, TEST_API_KEY]]) {
        const res = await fetch(`${worker.url}/runs/${id}`, { headers: { authorization: `Bearer ${key}` } });
        const text = await res.text();
        assert.equal(res.status, 200, `GET /runs/{${name}}: ${text.slice(0, 300)}`);
        views[name] = text;
    }
    return views;
}

/** A served view with `events` taken off every open and closed wait, and those events by wait id. */
function splitEvents(text) {
    const view = JSON.parse(text);
    const events = {};
    for (const list of ["waits", "closed_waits"]) {
        for (const w of view[list] ?? []) {
            events[w.wait_id] = w.events ?? [];
            delete w.events;
        }
    }
    return { view: JSON.stringify(view), events };
}

/** A turned-away request the gate must record on a wait: `{run: "A"|"B"|"C", waitId, kind, outcome}`. */
const ev = (run, waitId, kind, outcome) => ({ run, waitId, kind, outcome });
const MAX_WAIT_EVENTS = 20; // the last 20 per wait are kept

/**
 * Compares what the gate served before and after a request: byte-identical apart from
 * `events`, and the events exactly as before plus the `expected` ones (at most one per wait),
 * each stamped between `t0` and `t1`.
 */
function assertServedUnchanged(name, before, after, expected, t0, t1) {
    for (const run of ["A", "B", "C"]) {
        const mine = expected.filter((e) => e.run === run);
        if (mine.length === 0) {
            assert.equal(after[run], before[run], `what the gate serves for run ${run} changed — ${name}`);
            continue;
        }
        const b = splitEvents(before[run]);
        const a = splitEvents(after[run]);
        assert.equal(a.view, b.view, `what the gate serves for run ${run} changed (events aside) — ${name}`);
        assert.deepEqual(Object.keys(a.events).sort(), Object.keys(b.events).sort(), `${name}: the same waits`);
        for (const waitId of Object.keys(b.events)) {
            const e = mine.find((x) => x.waitId === waitId);
            const was = b.events[waitId];
            const now = a.events[waitId];
            if (!e) {
                assert.deepEqual(now, was, `${name}: no event recorded on ${run}/${waitId}`);
                continue;
            }
            assert.equal(now.length, Math.min(was.length + 1, MAX_WAIT_EVENTS), `${name}: one event added on ${run}/${waitId}`);
            assert.deepEqual(now.slice(0, -1), was.slice(was.length + 1 - now.length), `${name}: earlier events on ${run}/${waitId} kept`);
            const last = now.at(-1);
            assert.deepEqual(Object.keys(last).sort(), ["at", "kind", "outcome"], JSON.stringify(last));
            assert.equal(last.kind, e.kind, `${name}: ${JSON.stringify(last)}`);
            assert.equal(last.outcome, e.outcome, `${name}: ${JSON.stringify(last)}`);
            assert.ok(last.at >= t0 - 1000 && last.at <= t1 + 1000, `${name}: event stamped ${last.at}, request between ${t0} and ${t1}`);
        }
        for (const e of mine) assert.ok(e.waitId in b.events, `${name}: expected an event on ${run}/${e.waitId}, which is not a wait of it`);
    }
}

// ---------------------------------------------------------------------------------------
// The Worker, and the runs the token cases need

/** Everything cases may refer to; filled in by `before`. */
const ctx = {};
let worker;
let pending; // a component that answers {pending: true} and remembers its callback_url

before(async () => {
    worker = await startWorker({
        bindings: {
            API_KEY_HASHES: `${TEST_API_KEY_HASH},${OTHER_KEY_HASH}`,
            MAX_TEMPLATE_BYTES: String(TEMPLATE_LIMIT),
        },
    });
    ctx.port = worker.port;

    const callbacks = new Map(); // component path → callback_url
    pending = await startComponent((b, req) => {
        const p = new URL(req.url, "http://x").pathname;
        callbacks.set(p, b.callback_url);
        return { pending: true, task_id: `task${p.replaceAll("/", "-")}` };
    });
    const start = async (graph, apiKey) => {
        const r = await worker.fetchJson("/execute", { body: { graph }, apiKey });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.status, "paused", JSON.stringify(r.body));
        return r.body;
    };
    const waitOf = (p) => parseCallbackUrl(callbacks.get(p), `task${p.replaceAll("/", "-")}`);

    // Run A (test key): two parallel waits.
    const a = await start(
        {
            nodes: [
                { id: "in", type: "Input" },
                { id: "a1", type: "Component", componentId: `${pending.url}/a1` },
                { id: "a2", type: "Component", componentId: `${pending.url}/a2` },
            ],
            edges: [
                { from: "in", to: "a1", type: "PIPE" },
                { from: "in", to: "a2", type: "PIPE" },
            ],
        },
        TEST_API_KEY,
    );
    ctx.A = { id: a.run_id, w1: waitOf("/a1"), w2: waitOf("/a2") };
    assert.equal(a.waits.length, 2);
    assert.equal(ctx.A.w1.runId, ctx.A.id);
    assert.notEqual(ctx.A.w1.waitId, ctx.A.w2.waitId);

    // Run B (the other key): one wait, on the node at a1's position, so that
    // its wait id (derived from the node) is a1's.
    const b = await start(
        {
            nodes: [
                { id: "in", type: "Input" },
                { id: "b1", type: "Component", componentId: `${pending.url}/b1` },
            ],
            edges: [{ from: "in", to: "b1", type: "PIPE" }],
        },
        OTHER_KEY,
    );
    ctx.B = { id: b.run_id, w1: waitOf("/b1") };

    // Run C (test key): one wait, resumed once, so its callback URL is spent.
    const c = await start(
        {
            nodes: [
                { id: "c1", type: "Component", componentId: `${pending.url}/c1` },
                { id: "out", type: "Output" },
            ],
            edges: [{ from: "c1", to: "out", type: "PIPE" }],
        },
        TEST_API_KEY,
    );
    ctx.C = { id: c.run_id, w1: waitOf("/c1") };
    const done = await fetch(ctx.C.w1.url, { method: "POST", body: json({ task_id: ctx.C.w1.taskId, success: true, data: { v: 1 } }) });
    assert.equal(done.status, 200);
    assertCallbackAnswer(await done.json(), { status: "completed", run_id: ctx.C.id, task_id: ctx.C.w1.taskId });
    // C's completed record reaches KV within about a second of its trigger's write: KV is taken
    // as it stands once it has.
    await kvCaughtUp(worker, ctx.C.id);

    // The test's token minting agrees with the Worker's, so minted tokens below mean something.
    assert.equal(mintToken(CALLBACK_SECRET, ctx.A.id, ctx.A.w1.waitId, ctx.A.w1.exp), ctx.A.w1.token);
    assert.equal(mintToken(CALLBACK_SECRET, ctx.B.id, ctx.B.w1.waitId, ctx.B.w1.exp), ctx.B.w1.token);
    // Run A's and B's first waits share a wait id, so cross-run tokens differ only in the run.
    ctx.sameWaitId = ctx.A.w1.waitId === ctx.B.w1.waitId;

    ctx.kvAtStart = await kvState();
    // Run ids are `{owner tag}-{inverted start time}-{random}`; records live under the owner's prefix.
    for (const [id, keyHash] of [[ctx.A.id, TEST_API_KEY_HASH], [ctx.B.id, OTHER_KEY_HASH], [ctx.C.id, TEST_API_KEY_HASH]]) {
        assert.match(id, new RegExp(`^${keyHash.slice(0, 16)}-[0-9a-f]{11}-[0-9a-f]{32}$`), "a run id of the listed form");
    }
    assert.deepEqual([...ctx.kvAtStart.keys()].sort(), [recordKey(ctx.A.id), recordKey(ctx.B.id), recordKey(ctx.C.id)].sort(), "three run records, nothing else");
    for (const [key, { expiration }] of ctx.kvAtStart) assert.equal(typeof expiration, "number", `${key} is stored with an expiration`);
}, { timeout: 120_000 });

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        await pending?.close();
    }
}, { timeout: 120_000 });

// ---------------------------------------------------------------------------------------
// The corpus

const exec = (name, payload, status, code, more = {}) => ({ name, method: "POST", path: "/execute", body: payload, status, code, ...more });
const graphCase = (name, graph, more = {}) => exec(name, body(graph), 400, "invalid_graph", more);
/** The problems of an invalid_graph answer must mention each pattern. */
const problemsMatch = (...patterns) => (res) => {
    const problems = JSON.stringify(res.json.error.problems);
    assert.ok(Array.isArray(res.json.error.problems), "error.problems is a list");
    for (const p of patterns) assert.match(problems, p);
};
const callback = (name, pathFn, payload, status, code, more = {}) => ({ name, method: "POST", path: pathFn, body: payload, status, code, ...more });
const A1 = (c) => c.A.w1;
const validA1 = (c) => cbPath(c.A.id, c.A.w1.waitId, c.A.w1.token);
/** A noop answer: its reason, and (`more(ctx)`) where the run stands and the task the request named. */
const noopBody = (reason, more = () => ({})) => (res, c) => assert.deepEqual(res.json, { success: true, noop: true, reason, ...more(c) });
const pastMs = () => Date.now() - 60_000;
const mismatchOnA1 = (c) => [ev("A", c.A.w1.waitId, "callback", "task_mismatch")];
const mismatchOnA2 = (c) => [ev("A", c.A.w2.waitId, "callback", "task_mismatch")];
const validA2 = (c) => cbPath(c.A.id, c.A.w2.waitId, c.A.w2.token);
/** A heartbeat URL of run A's wait `w` ("w1" or "w2") with its own token. */
const hbA = (w) => (c) => `/callbacks/${c.A.id}/${c.A[w].waitId}/heartbeat?token=${encodeURIComponent(c.A[w].token)}`;
const heartbeat = (name, pathFn, payload, status, code, more = {}) => ({ name, method: "POST", path: pathFn, body: payload, status, code, ...more });

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
/** What a deployment without API keys answers (503 misconfigured). */
const NO_KEYS_MESSAGE =
    "no API keys are configured, so runs cannot be triggered or read: set the API_KEY_HASHES secret to the SHA-256 hex of " +
    "each key (`npm run hash-key -- <key>`, then `wrangler secret put API_KEY_HASHES`)";

const CASES = [
    // --- Broken JSON ------------------------------------------------------------------
    exec("truncated JSON", '{"graph": {"nodes": [{"id": "a", "type": "Inp', 400, "invalid_json"),
    exec("truncated after a key", '{"graph"', 400, "invalid_json"),
    exec("trailing garbage", '{"graph": {"nodes": []}} garbage', 400, "invalid_json"),
    exec("two JSON documents", '{"graph": {}}{"graph": {}}', 400, "invalid_json"),
    exec("NaN", '{"graph": NaN}', 400, "invalid_json"),
    exec("Infinity", '{"graph": {"nodes": [], "x": -Infinity}}', 400, "invalid_json"),
    exec("single quotes", "{'graph': {'nodes': []}}", 400, "invalid_json"),
    exec("unquoted keys", "{graph: {nodes: []}}", 400, "invalid_json"),
    exec("UTF-8 BOM before a valid body", () => Buffer.concat([BOM, Buffer.from(body(VALID_GRAPH))]), 400, "invalid_json"),
    exec("invalid UTF-8 bytes in a string", () => Buffer.concat([Buffer.from('{"graph": {"id": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('", "nodes": []}}')]), 400, "invalid_json"),
    exec("overlong UTF-8 encoding of '/'", () => Buffer.concat([Buffer.from('{"graph": {"id": "'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}')]), 400, "invalid_json"),
    exec("invalid UTF-8 outside strings", () => Buffer.concat([Buffer.from('{"graph": '), Buffer.from([0xfe, 0xff]), Buffer.from("}")]), 400, "invalid_json"),
    exec("lone surrogate escape", '{"graph": {"id": "\\ud800", "nodes": []}}', 400, "invalid_json"),
    exec("comment", '{"graph": {"nodes": []} /* hi */}', 400, "invalid_json"),
    exec("trailing commas", '{"graph": {"nodes": [],},}', 400, "invalid_json"),
    exec("raw control character in a string", '{"graph": {"id": "a\nb", "nodes": []}}', 400, "invalid_json"),
    exec("number out of range", '{"graph": {"nodes": [], "id": 1e999}}', 400, "invalid_json"),
    exec("hex number", '{"graph": 0x10}', 400, "invalid_json"),
    exec("undefined", '{"graph": undefined}', 400, "invalid_json"),
    exec("empty body", "", 400, "invalid_json"),
    exec("whitespace-only body", " \n\t\r ", 400, "invalid_json"),
    exec("gzip-compressed body (not decoded)", () => gzipSync(body(INVALID_GRAPH)), 400, "invalid_json", { headers: { "content-encoding": "gzip" } }),
    exec("UTF-16 body", () => Buffer.from(body(INVALID_GRAPH), "utf16le"), 400, "invalid_json", { headers: { "content-type": "application/json; charset=utf-16le" } }),
    exec("NUL byte before the JSON", () => Buffer.from("\u0000" + body(VALID_GRAPH)), 400, "invalid_json"),
    exec("form-encoded body", "graph=%7B%7D", 415, "unsupported_media_type", { headers: { "content-type": "application/x-www-form-urlencoded" } }),

    // --- Not an object / no graph --------------------------------------------------------
    exec("body is null", "null", 400, "invalid_request"),
    exec("body is an array", "[]", 400, "invalid_request"),
    exec("body is a string", '"graph"', 400, "invalid_request"),
    exec("body is a number", "42", 400, "invalid_request"),
    exec("body is true", "true", 400, "invalid_request"),
    exec("body without graph", "{}", 400, "invalid_request"),
    exec("graph under the wrong case", json({ Graph: VALID_GRAPH }), 400, "invalid_request"),
    exec("context is an array", body(VALID_GRAPH, { context: [1, 2] }), 400, "invalid_request"),
    exec("context is a string", body(VALID_GRAPH, { context: "ctx" }), 400, "invalid_request"),
    exec("context is a number", body(VALID_GRAPH, { context: 7 }), 400, "invalid_request"),
    exec("context is true", body(VALID_GRAPH, { context: true }), 400, "invalid_request"),
    exec("text/plain with a JSON body is parsed (invalid graph → 400 invalid_graph)", body(INVALID_GRAPH), 400, "invalid_graph", { headers: { "content-type": "text/plain" } }),
    exec("no content-type with a JSON body is parsed", body(INVALID_GRAPH), 400, "invalid_graph", { headers: { "content-type": "" } }),

    // --- Wrong types in the graph -----------------------------------------------------------
    graphCase("graph is a string", "nodes", { check: problemsMatch(/must be a JSON object/) }),
    graphCase("graph is an array", [VALID_GRAPH]),
    graphCase("graph is a number", 12),
    graphCase("graph is null", null),
    graphCase("graph is true", true),
    graphCase("nodes is an object", { nodes: { a: { id: "a", type: "Input" } } }, { check: problemsMatch(/graph\.nodes.*must be an array/) }),
    graphCase("nodes is a string", { nodes: "a,b" }),
    graphCase("nodes is missing", { edges: [] }, { check: problemsMatch(/is required/) }),
    graphCase("nodes is empty", { nodes: [], edges: [] }, { check: problemsMatch(/at least one node/) }),
    graphCase("nodes are a number, a string and null", { nodes: [1, "a", null] }, {
        check: (res) => {
            // One problem per bad node, plus the graph-level one: no usable node is left.
            assert.equal(res.json.error.problems.length, 4);
            problemsMatch(/nodes\[0\]/, /nodes\[1\]/, /nodes\[2\]/, /at least one node/)(res);
        },
    }),
    graphCase("node id is a number", { nodes: [{ id: 1, type: "Input" }] }, { check: problemsMatch(/nodes\[0\]\.id.*must be a string/) }),
    graphCase("node id is empty", { nodes: [{ id: "", type: "Input" }] }, { check: problemsMatch(/must not be empty/) }),
    graphCase("node id is null", { nodes: [{ id: null, type: "Input" }] }),
    graphCase("node id is missing", { nodes: [{ type: "Input" }] }),
    graphCase("node id is an object", { nodes: [{ id: { toString: "x" }, type: "Input" }] }),
    graphCase("node type is unknown", { nodes: [{ id: "a", type: "Banana" }] }, { check: problemsMatch(/unknown node type 'Banana'/) }),
    graphCase("node type is missing", { nodes: [{ id: "a" }] }),
    graphCase("node type is a number", { nodes: [{ id: "a", type: 1 }] }),
    graphCase("componentId is a number", { nodes: [{ id: "a", type: "Component", componentId: 42 }] }, { check: problemsMatch(/componentId.*must be a string/) }),
    graphCase("componentId is an unknown name", { nodes: [{ id: "a", type: "Component", componentId: "evil" }] }, { check: problemsMatch(/unknown component 'evil'/) }),
    graphCase("componentId is a file: URL", { nodes: [{ id: "a", type: "Component", componentId: "file:///etc/passwd" }] }),
    ...["http://example.com/h", "https://u:p@example.com/h", "ftp://example.com/h", "javascript:alert(1)", "", 7, ["https://x.test"]].map((url) =>
        exec(`final_callback_url ${JSON.stringify(url)}`, body(VALID_GRAPH, { final_callback_url: url }), 400, "invalid_final_callback_url"),
    ),
    exec("poll_task with a condition the language cannot read", body({ nodes: [{ id: "p", type: "Component", componentId: "poll_task", data: { url: "https://x.test", done_when: "status ===" } }] }), 400, "invalid_graph", {
        check: problemsMatch(/nodes\[0\]\.data\.done_when/),
    }),
    ...[0, -1, 1.5, "60", true, 31_536_001, 1e300].map((t) =>
        graphCase(`wait_timeout_seconds is ${JSON.stringify(t)}`, { nodes: [{ id: "a", type: "Component", componentId: "http://127.0.0.1:9/x", wait_timeout_seconds: t }] }, {
            check: problemsMatch(/nodes\[0\]\.wait_timeout_seconds/),
        }),
    ),
    ...["score >", "=== 3", "a b === 1", "{{a === 1", "x === 'open", "!"].map((condition) =>
        graphCase(`IF condition ${JSON.stringify(condition)}`, { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "IF", condition }] }, {
            check: problemsMatch(/edges\[0\]\.condition/),
        }),
    ),
    graphCase("componentId is http:// without a host", { nodes: [{ id: "a", type: "Component", componentId: "http:///etc/passwd" }] }),
    graphCase("componentId is a javascript: URL", { nodes: [{ id: "a", type: "Component", componentId: "javascript:alert(1)" }] }),
    graphCase("Component without componentId", { nodes: [{ id: "a", type: "Component" }] }, { check: problemsMatch(/no componentId/) }),
    graphCase("data is an array", { nodes: [{ ...passthrough("a"), data: [1, 2] }] }, { check: problemsMatch(/data.*must be an object/) }),
    graphCase("data is a string", { nodes: [{ ...passthrough("a"), data: "{{x}}" }] }),
    graphCase("label is an object", { nodes: [{ ...passthrough("a"), label: { x: 1 } }] }),
    graphCase("graph id and name of wrong types", { id: 5, name: { n: 1 }, nodes: [passthrough("a")] }, { check: problemsMatch(/graph\.id/, /graph\.name/) }),
    graphCase("edges is an object", { nodes: [passthrough("a")], edges: { from: "a", to: "a" } }, { check: problemsMatch(/graph\.edges.*must be an array/) }),
    graphCase("edges is a string", { nodes: [passthrough("a")], edges: "a->a" }),
    graphCase("edges are a number and null", { nodes: [passthrough("a")], edges: [3, null] }),
    graphCase("edge from is a number", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: 0, to: "b" }] }, { check: problemsMatch(/edges\[0\]\.from.*must be a string/) }),
    graphCase("edge to is a number", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: 1 }] }),
    graphCase("edge without from", { nodes: [passthrough("a"), passthrough("b")], edges: [{ to: "b" }] }),
    graphCase("edge to an unknown node", { nodes: [passthrough("a")], edges: [{ from: "a", to: "ghost" }] }, { check: problemsMatch(/unknown node 'ghost'/) }),
    graphCase("edge type is unknown", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "TELEPORT" }] }, { check: problemsMatch(/unknown edge type 'TELEPORT'/) }),
    graphCase("edge type is a number", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: 3 }] }),
    graphCase("IF condition is an object", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "IF", condition: { op: "==" } }] }, { check: problemsMatch(/condition/) }),
    graphCase("IF edge without a condition", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "IF" }] }, { check: problemsMatch(/needs a condition/) }),
    graphCase("ON_BRANCH without a branch", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "ON_BRANCH" }] }, { check: problemsMatch(/needs a branch/) }),
    graphCase("ON_BRANCH branch is an object", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "ON_BRANCH", branch: { b: 1 } }] }),
    graphCase("FOREACH iterator is a number and items an array", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "FOREACH", iterator: 1, items: ["x"] }] }, { check: problemsMatch(/iterator/, /items/) }),
    graphCase("FOREACH target with another incoming edge", {
        nodes: [passthrough("a"), passthrough("b"), passthrough("c")],
        edges: [{ from: "a", to: "c", type: "FOREACH" }, { from: "b", to: "c" }],
    }, { check: problemsMatch(/FOREACH edge and must have no other incoming edge/) }),

    // --- Cycles ---------------------------------------------------------------------------
    graphCase("self-loop", { nodes: [passthrough("a")], edges: [{ from: "a", to: "a", type: "PIPE" }] }, {
        check: (r) => assert.deepEqual(r.json.error.problems, [{ at: "graph.edges", message: "the graph has a cycle through these nodes: a" }]),
    }),
    graphCase("two-node cycle", { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b" }, { from: "b", to: "a", type: "ON_SUCCESS" }] }),
    graphCase("cycle behind a valid start", {
        nodes: [{ id: "in", type: "Input" }, passthrough("a"), passthrough("b")],
        edges: [{ from: "in", to: "a" }, { from: "a", to: "b" }, { from: "b", to: "a" }],
    }, { check: (r) => assert.deepEqual(r.json.error.problems, [{ at: "graph.edges", message: "the graph has a cycle through these nodes: a, b" }]) }),
    graphCase("2,000-node ring", (() => {
        const n = 2000;
        const nodes = Array.from({ length: n }, (_, i) => passthrough(`r${i}`));
        const edges = nodes.map((_, i) => ({ from: `r${i}`, to: `r${(i + 1) % n}` }));
        return { nodes, edges };
    })(), {
        check: (r) => {
            assert.ok(r.text.length < 4096, `cycle report is short (${r.text.length} bytes)`);
            const listed = r.json.error.problems[0].message.split(": ")[1].split(", ");
            assert.equal(listed.length, 20, `20 of the ring's 2,000 nodes are named, got ${listed.length}`);
            assert.deepEqual(r.json.error.problems, [{ at: "graph.edges", message: `the graph has a cycle through these nodes: ${listed.join(", ")}` }]);
            assert.equal(new Set(listed).size, 20);
            for (const id of listed) assert.match(id, /^r\d+$/);
        },
    }),

    // --- Sizes ----------------------------------------------------------------------------
    graphCase("10,000 duplicate node ids", { nodes: Array.from({ length: 10_000 }, () => ({ id: "dup", type: "Input" })) }, {
        check: (r) => {
            assert.ok(r.text.length < 2048, `the answer is small (${r.text.length} bytes)`);
            const dups = r.json.error.problems.filter((p) => /duplicate/.test(p.message));
            assert.equal(dups.length, 1, "the duplicate is listed once");
            assert.deepEqual(dups[0], { at: "nodes[id=dup]", message: "duplicate node id (used 10000 times)" });
        },
    }),
    graphCase("5,000 distinct problems are capped", { nodes: Array.from({ length: 5000 }, (_, i) => ({ id: i, type: "Input" })) }, {
        check: (r) => {
            assert.ok(r.text.length < SMALL_RESPONSE, `the answer is small (${r.text.length} bytes)`);
            // 5,000 bad ids and "no usable node": 100 listed, the other 4,901 counted.
            assert.equal(r.json.error.problems.length, 101, `${r.json.error.problems.length} problems listed`);
            assert.deepEqual(r.json.error.problems.slice(0, 100), Array.from({ length: 100 }, (_, i) => ({ at: `nodes[${i}].id`, message: "must be a string" })));
            assert.deepEqual(r.json.error.problems[100], { at: "graph", message: "and 4901 more problems" });
        },
    }),
    graphCase("20,001 nodes (MAX_NODES is 20,000)", { nodes: Array.from({ length: 20_001 }, (_, i) => ({ id: `n${i}`, type: "Input" })) }, {
        check: (r) => {
            problemsMatch(/20001 nodes; the limit is 20000/)(r);
            assert.ok(r.text.length < 2048);
        },
    }),
    graphCase("40,001 edges (MAX_EDGES is 40,000)", { nodes: [passthrough("a")], edges: Array.from({ length: 40_001 }, () => ({ from: "a", to: "a" })) }, {
        check: problemsMatch(/40001 edges; the limit is 40000/),
    }),
    exec("body of exactly MAX_BODY_BYTES is read (400 invalid_graph, not 413)", () => paddedBody(MAX_BODY), 400, "invalid_graph"),
    // Bodies the Worker refuses before reading go over a raw socket: fetch may report a failure
    // when the answer comes before its upload has finished.
    {
        name: "body one byte over MAX_BODY_BYTES",
        upload: { prefix: '{"pad": "', pieceBytes: MAX_BODY - 10, pieces: 1, suffix: '"}', declared: true },
        status: 413,
        code: "payload_too_large",
    },
    {
        name: "2 MiB body with an honest Content-Length",
        upload: { prefix: '{"pad": "', pieceBytes: 64 * 1024, pieces: 32, suffix: '"}', declared: true },
        status: 413,
        code: "payload_too_large",
    },
    {
        name: "2 MiB chunked body without Content-Length",
        upload: { prefix: '{"graph": {"nodes": []}, "pad": "', pieceBytes: 64 * 1024, pieces: 32, suffix: '"}' },
        status: 413,
        code: "payload_too_large",
    },
    {
        name: "64 MiB chunked body: answered once the limit is passed, not after reading it all",
        upload: { prefix: '{"pad": "', pieceBytes: 1 << 20, pieces: 64, suffix: '"}' },
        status: 413,
        code: "payload_too_large",
        // Socket buffers hold a few MiB; a Worker that stops at MAX_BODY_BYTES answers long
        // before the client has pushed 32 of the 64 MiB.
        check: (r) => assert.ok(r.sent < 32, `the client had sent ${r.sent} MiB before the 413: the whole body was buffered before the limit was checked`),
    },
    exec("small chunked body with broken JSON", () => new Blob(['{"graph": ']).stream(), 400, "invalid_json", { chunked: true }),
    {
        name: "big body without an API key is refused before it is read",
        upload: { prefix: '{"pad": "', pieceBytes: 64 * 1024, pieces: 32, suffix: '"}', declared: true, auth: false },
        status: 401,
        code: "unauthorized",
    },
    {
        name: "lying Content-Length: 5 MB declared, 2 bytes sent",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Content-Length: 5000000"], "{}"),
        status: 413,
        code: "payload_too_large",
    },
    {
        name: "lying Content-Length: 5 GB declared (over 32 bits), 2 bytes sent",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Content-Length: 5000000000"], "{}"),
        halfClose: true,
        status: 413,
        code: "payload_too_large",
    },
    {
        name: "lying Content-Length: shorter than the body cuts the JSON",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Content-Length: 10"], body(VALID_GRAPH)),
        status: 400,
        code: "invalid_json",
    },
    {
        name: "lying Content-Length: longer than the body, then the client stops",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Content-Length: 100"], '{"graph": 1}'),
        halfClose: true,
        status: 400,
        code: "invalid_json",
    },
    {
        name: "Transfer-Encoding chunked and Content-Length together (chunked wins)",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Content-Length: 3", "Transfer-Encoding: chunked"], 'c\r\n{"graph": 1}\r\n0\r\n\r\n'),
        status: 400,
        code: "invalid_graph",
    },
    {
        name: "malformed chunk size",
        raw: () => rawHttp("POST", "/execute", [AUTH, "Transfer-Encoding: chunked"], 'zz\r\n{"graph": 1}\r\n0\r\n\r\n'),
        status: 400,
        code: "invalid_json",
    },

    // --- Template bombs in requests rejected for another reason: nothing is expanded
    exec("template bomb in a graph with a cycle", () => body({
        nodes: [{ id: "in", type: "Input" }, { ...passthrough("boom"), data: { t: "{{big}}".repeat(10_000) } }],
        edges: [{ from: "in", to: "boom" }, { from: "boom", to: "boom" }],
    }, { context: { big: "z".repeat(500_000) } }), 400, "invalid_graph", { check: (r) => assert.ok(r.text.length < 2048, `small answer (${r.text.length} bytes)`) }),
    exec("template bomb without an API key", () => body({
        nodes: [{ ...passthrough("boom"), data: { t: "{{big}}".repeat(10_000) } }],
    }, { context: { big: "z".repeat(500_000) } }), 401, "unauthorized", { auth: null }),
    exec("template bomb with context as an array", () => body({
        nodes: [{ ...passthrough("boom"), data: { t: "{{0}}".repeat(10_000) } }],
    }, { context: ["z".repeat(500_000)] }), 400, "invalid_request"),

    // --- Deep nesting -------------------------------------------------------------------------
    exec("10,000 nested arrays", deepArrays(10_000), 400, "invalid_json"),
    exec("10,000 nested objects", deepObjects(10_000), 400, "invalid_json"),
    exec("10,000 nested arrays in node data", () => `{"graph": {"nodes": [{"id": "a", "type": "Input", "data": {"x": ${deepArrays(10_000)}}}]}}`, 400, "invalid_json"),
    exec("200 nested objects in context", () => body(VALID_GRAPH).replace(/}$/, `, "context": ${deepObjects(200)}}`), 400, "invalid_json"),

    // --- API keys -----------------------------------------------------------------------------
    exec("execute without an API key", body(VALID_GRAPH), 401, "unauthorized", { auth: null }),
    exec("execute with an unknown key", body(VALID_GRAPH), 401, "unauthorized", { auth: "not-a-key" }),
    exec("execute with an empty Bearer", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { authorization: "Bearer " } }),
    exec("execute with 'Bearer' and no key", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { authorization: "Bearer" } }),
    exec("execute with Basic auth of the key", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { authorization: `Basic ${Buffer.from(`${TEST_API_KEY}:`).toString("base64")}` } }),
    exec("execute with the bare key as Authorization", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { authorization: TEST_API_KEY } }),
    exec("execute with an empty X-Arcrun-API-Key", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { "x-arcrun-api-key": "" } }),
    exec("execute with X-Arcrun-API-Key in the wrong case", body(VALID_GRAPH), 401, "unauthorized", { auth: null, headers: { "x-arcrun-api-key": TEST_API_KEY.toUpperCase() } }),
    exec("execute presenting the key's hash as the key", body(VALID_GRAPH), 401, "unauthorized", { auth: TEST_API_KEY_HASH }),
    exec("execute with an 8 KiB key", body(VALID_GRAPH), 401, "unauthorized", { auth: "k".repeat(8192) }),
    exec("a wrong Bearer is not rescued by a right X-Arcrun-API-Key", body(VALID_GRAPH), 401, "unauthorized", { auth: "wrong", headers: { "x-arcrun-api-key": TEST_API_KEY } }),
    exec("broken JSON without a key is 401, not 400", "{{{", 401, "unauthorized", { auth: null }),
    { name: "read a run without an API key", path: (c) => `/runs/${c.A.id}`, auth: null, status: 401, code: "unauthorized" },
    { name: "read a run with an unknown key", path: (c) => `/runs/${c.A.id}`, auth: "nope", status: 401, code: "unauthorized" },
    { name: "read another key's run (B, started by the other key)", path: (c) => `/runs/${c.B.id}`, status: 404, code: "not_found" },
    { name: "the other key reads run A", path: (c) => `/runs/${c.A.id}`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "the other key reads run A via X-Arcrun-API-Key", path: (c) => `/runs/${c.A.id}`, auth: null, headers: { "x-arcrun-api-key": OTHER_KEY }, status: 404, code: "not_found" },
    { name: "the other key reads finished run C", path: (c) => `/runs/${c.C.id}`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "read a run that does not exist", path: `/runs/${"0".repeat(32)}`, status: 404, code: "not_found" },
    { name: "run id of 65 characters", path: `/runs/${"a".repeat(65)}`, status: 404, code: "not_found" },
    { name: "run id with a dot", path: "/runs/a.b", status: 404, code: "not_found" },
    { name: "run id that is an emoji", path: "/runs/%F0%9F%98%80", status: 404, code: "not_found" },
    { name: "run id with encoded traversal", path: "/runs/..%2F..%2Fetc%2Fpasswd", status: 404, code: "not_found" },
    { name: "run id with an encoded NUL", path: "/runs/abc%00def", status: 404, code: "not_found" },

    // --- Callback tokens ------------------------------------------------------------------------
    callback("callback without a token", (c) => cbPath(c.A.id, c.A.w1.waitId), (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized"),
    callback("callback with an empty token", (c) => cbPath(c.A.id, c.A.w1.waitId, ""), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("callback with token 'x'", (c) => cbPath(c.A.id, c.A.w1.waitId, "x"), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("tampered signature", (c) => {
        const t = c.A.w1.token;
        return cbPath(c.A.id, c.A.w1.waitId, t.slice(0, -2) + (t.endsWith("AA") ? "BB" : "AA"));
    }, (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("stretched expiry with the original signature", (c) => {
        const [exp, mac] = c.A.w1.token.split(".");
        return cbPath(c.A.id, c.A.w1.waitId, `${BigInt(exp) + 86_400_000n}.${mac}`);
    }, (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("token longer than 128 characters", (c) => cbPath(c.A.id, c.A.w1.waitId, c.A.w1.token + "A".repeat(100)), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("token with base64 padding", (c) => cbPath(c.A.id, c.A.w1.waitId, c.A.w1.token + "="), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("token with standard-base64 characters", (c) => {
        const [exp, mac] = c.A.w1.token.split(".");
        return cbPath(c.A.id, c.A.w1.waitId, `${exp}.+/${mac.slice(2)}`);
    }, (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("token with a negative expiry", (c) => cbPath(c.A.id, c.A.w1.waitId, `-1.${c.A.w1.token.split(".")[1]}`), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("token with an expiry beyond u64", (c) => cbPath(c.A.id, c.A.w1.waitId, `99999999999999999999.${c.A.w1.token.split(".")[1]}`), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("well-formed token signed with the wrong secret", (c) => cbPath(c.A.id, c.A.w1.waitId, mintToken("wrong-secret", c.A.id, c.A.w1.waitId, c.A.w1.exp)), (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized"),
    callback("token of another wait of the same run", (c) => cbPath(c.A.id, c.A.w2.waitId, c.A.w1.token), (c) => json({ task_id: c.A.w2.taskId, success: true }), 401, "unauthorized"),
    callback("token of run A on run B's path (cross-run)", (c) => cbPath(c.B.id, c.B.w1.waitId, c.A.w1.token), (c) => json({ task_id: c.B.w1.taskId, success: true }), 401, "unauthorized", {
        check: (_r, c) => assert.ok(c.sameWaitId, "A and B have the same wait id, so only the run differs"),
    }),
    callback("token of run B (other key) on run A's path", (c) => cbPath(c.A.id, c.A.w1.waitId, c.B.w1.token), (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized"),
    callback("callback to the other key's run without a token", (c) => cbPath(c.B.id, c.B.w1.waitId), (c) => json({ task_id: c.B.w1.taskId, success: true }), 401, "unauthorized"),
    callback("callback to the other key's run with the test key but a forged token", (c) => cbPath(c.B.id, c.B.w1.waitId, mintToken("guess", c.B.id, c.B.w1.waitId, c.B.w1.exp)), (c) => json({ task_id: c.B.w1.taskId, success: true }), 401, "unauthorized"),
    callback("two token parameters, the bad one first", (c) => `${cbPath(c.A.id, c.A.w1.waitId, "1.AAAA")}&token=${encodeURIComponent(c.A.w1.token)}`, (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized"),
    callback("token sent in Authorization instead of the URL", (c) => cbPath(c.A.id, c.A.w1.waitId), (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized", { auth: null, headers: (c) => ({ authorization: `Bearer ${c.A.w1.token}` }) }),
    callback("valid token, body is an array", validA1, "[]", 400, "invalid_request"),
    callback("valid token, body is null", validA1, "null", 400, "invalid_request"),
    callback("valid token, body is a string", validA1, (c) => json(A1(c).taskId), 400, "invalid_request"),
    callback("valid token, empty body", validA1, "", 400, "invalid_json"),
    callback("valid token, broken JSON", validA1, (c) => `{"task_id": "${A1(c).taskId}", "success": tru`, 400, "invalid_json"),
    callback("valid token, 10,000 nested arrays in data", validA1, (c) => `{"task_id": "${A1(c).taskId}", "data": ${deepArrays(10_000)}}`, 400, "invalid_json"),
    callback("valid token, 2 MiB body", validA1, (c) => json({ task_id: A1(c).taskId, data: { pad: "x".repeat(2 * MAX_BODY) } }), 413, "payload_too_large"),
    callback("valid token, task_id of no task", validA1, json({ task_id: "someone-else", success: true }), 409, "task_mismatch", {
        events: mismatchOnA1,
        check: (res, c) => assert.equal(res.json.error.message, `this callback URL is for task '${c.A.w1.taskId}', but the body names task 'someone-else'`),
    }),
    callback("valid token, task_id is a number", validA1, json({ task_id: 12345, success: true }), 409, "task_mismatch", {
        events: mismatchOnA1,
        check: (res, c) => assert.equal(res.json.error.message, `this callback URL is for task '${c.A.w1.taskId}', but the body names task '12345'`),
    }),
    callback("valid token, task_id of the run's other wait", validA1, (c) => json({ task_id: c.A.w2.taskId, success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("the other key's run, its own valid token, wrong task_id", (c) => cbPath(c.B.id, c.B.w1.waitId, c.B.w1.token), (c) => json({ task_id: A1(c).taskId, success: true }), 409, "task_mismatch", {
        events: (c) => [ev("B", c.B.w1.waitId, "callback", "task_mismatch")],
    }),
    callback("expired token (valid signature) with a correct body", (c) => cbPath(c.A.id, c.A.w1.waitId, c.expiredA1 ??= mintToken(CALLBACK_SECRET, c.A.id, c.A.w1.waitId, pastMs())), (c) => json({ task_id: A1(c).taskId, success: true, data: { late: true } }), 200, null, {
        check: noopBody("expired"),
    }),
    callback("expired token, body not an object", (c) => cbPath(c.A.id, c.A.w1.waitId, mintToken(CALLBACK_SECRET, c.A.id, c.A.w1.waitId, pastMs())), "[1]", 400, "invalid_request"),
    callback("expired token signed with the wrong secret", (c) => cbPath(c.A.id, c.A.w1.waitId, mintToken("wrong-secret", c.A.id, c.A.w1.waitId, pastMs())), (c) => json({ task_id: A1(c).taskId }), 401, "unauthorized"),
    callback("replayed callback (already applied)", (c) => cbPath(c.C.id, c.C.w1.waitId, c.C.w1.token), (c) => json({ task_id: c.C.w1.taskId, success: true, data: { v: 2 } }), 200, null, {
        check: noopBody("already_resumed", (c) => ({ status: "completed", run_id: c.C.id, task_id: c.C.w1.taskId })),
        events: (c) => [ev("C", c.C.w1.waitId, "callback", "duplicate")],
    }),
    callback("replayed callback with another task_id", (c) => cbPath(c.C.id, c.C.w1.waitId, c.C.w1.token), json({ task_id: "other", success: false }), 200, null, {
        check: noopBody("already_resumed", (c) => ({ status: "completed", run_id: c.C.id, task_id: "other" })),
        events: (c) => [ev("C", c.C.w1.waitId, "callback", "duplicate")],
    }),
    callback("replayed callback, body not an object", (c) => cbPath(c.C.id, c.C.w1.waitId, c.C.w1.token), '"again"', 400, "invalid_request"),
    callback("validly signed token for a run that does not exist", (c) => cbPath("f".repeat(32), "w1", mintToken(CALLBACK_SECRET, "f".repeat(32), "w1", Date.now() + 3_600_000)), json({ task_id: "t", success: true }), 200, null, {
        check: noopBody("unknown_run", () => ({ task_id: "t" })),
    }),
    callback("validly signed token for a wait run A never had", (c) => cbPath(c.A.id, "w99", mintToken(CALLBACK_SECRET, c.A.id, "w99", Date.now() + 3_600_000)), json({ task_id: "t", success: true }), 200, null, {
        check: noopBody("unknown_wait", (c) => ({ status: "paused", run_id: c.A.id, task_id: "t" })),
    }),
    callback("run id with characters outside [A-Za-z0-9_-]", (c) => `/callbacks/${c.A.id}.x/${c.A.w1.waitId}?token=${encodeURIComponent(c.A.w1.token)}`, (c) => json({ task_id: A1(c).taskId }), 404, "not_found"),
    callback("wait id of 65 characters", (c) => cbPath(c.A.id, "w".repeat(65), c.A.w1.token), (c) => json({ task_id: A1(c).taskId }), 404, "not_found"),
    callback("percent-encoded junk as run and wait ids", "/callbacks/%00%ff/%2e%2e%2f?token=1.AAAA", "{}", 404, "not_found"),
    callback("callback path with one id", "/callbacks/x", "{}", 404, "not_found"),
    callback("callback path with three ids", (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/extra?token=${encodeURIComponent(c.A.w1.token)}`, (c) => json({ task_id: A1(c).taskId }), 404, "not_found"),

    // --- The legacy bare resume route (disabled) --------------------------------------------------------
    callback("bare /workflows/resume with a real task_id", "/workflows/resume", (c) => json({ task_id: A1(c).taskId, success: true }), 401, "unauthorized"),
    callback("bare /workflows/resume with no body", "/workflows/resume", "", 401, "unauthorized"),

    // --- Methods ----------------------------------------------------------------------------
    ...["GET", "PUT", "DELETE", "PATCH"].map((method) => ({ name: `${method} /execute`, method, path: "/execute", status: 405, code: "method_not_allowed" })),
    // Every OPTIONS request is answered as a CORS preflight; without an allowed Origin it is refused.
    { name: "OPTIONS /execute without an Origin", method: "OPTIONS", path: "/execute", status: 403, code: "origin_not_allowed",
        check: (res) => assert.equal(res.headers.get("access-control-allow-origin"), null) },
    { name: "TRACE /execute", raw: () => rawHttp("TRACE", "/execute", [AUTH]), status: 405, code: "method_not_allowed" },
    ...["POST", "PUT", "DELETE", "PATCH"].map((method) => ({ name: `${method} /runs/{id}`, method, path: (c) => `/runs/${c.A.id}`, status: 405, code: "method_not_allowed" })),
    ...["GET", "PUT", "DELETE"].map((method) => ({ name: `${method} /runs/{id}/redeliver`, method, path: (c) => `/runs/${c.A.id}/redeliver`, status: 405, code: "method_not_allowed" })),
    { name: "redeliver without an API key", method: "POST", path: (c) => `/runs/${c.A.id}/redeliver`, status: 401, code: "unauthorized", auth: null },
    { name: "redeliver the other key's run", method: "POST", path: (c) => `/runs/${c.B.id}/redeliver`, status: 404, code: "not_found" },
    { name: "redeliver a paused run", method: "POST", path: (c) => `/runs/${c.A.id}/redeliver`, status: 409, code: "run_not_finished" },
    ...["GET", "PUT"].map((method) => ({ name: `${method} on a heartbeat URL`, method, path: (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/heartbeat?token=${c.A.w1.token}`, status: 405, code: "method_not_allowed" })),
    { name: "heartbeat without a token", method: "POST", path: (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/heartbeat`, body: "{}", status: 401, code: "unauthorized" },
    { name: "heartbeat with another wait's token", method: "POST", path: (c) => `/callbacks/${c.A.id}/${c.A.w2.waitId}/heartbeat?token=${c.A.w1.token}`, body: "{}", status: 401, code: "unauthorized" },
    { name: "heartbeat with a body that is not an object", method: "POST", path: (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/heartbeat?token=${c.A.w1.token}`, body: "[1]", status: 400, code: "invalid_request" },
    ...[0, -5, 1.5, "10", true].map((extend) => ({ name: `heartbeat extending by ${JSON.stringify(extend)}`, method: "POST", path: (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/heartbeat?token=${c.A.w1.token}`, body: JSON.stringify({ extend_seconds: extend }), status: 400, code: "invalid_request" })),
    { name: "heartbeat naming another task", method: "POST", path: (c) => `/callbacks/${c.A.id}/${c.A.w1.waitId}/heartbeat?token=${c.A.w1.token}`, body: JSON.stringify({ task_id: "not-this-one" }), status: 409, code: "task_mismatch", events: (c) => [ev("A", c.A.w1.waitId, "heartbeat", "task_mismatch")] },
    ...["GET", "PUT", "DELETE", "PATCH"].map((method) => ({ name: `${method} /runs/{id}/cancel`, method, path: (c) => `/runs/${c.A.id}/cancel`, status: 405, code: "method_not_allowed" })),
    { name: "cancel without an API key", method: "POST", path: (c) => `/runs/${c.A.id}/cancel`, status: 401, code: "unauthorized", auth: null },
    { name: "cancel with an unknown key", method: "POST", path: (c) => `/runs/${c.A.id}/cancel`, status: 401, code: "unauthorized", auth: "not-a-key" },
    { name: "cancel the other key's run", method: "POST", path: (c) => `/runs/${c.B.id}/cancel`, status: 404, code: "not_found" },
    { name: "cancel a run that does not exist", method: "POST", path: "/runs/" + "0".repeat(32) + "/cancel", status: 404, code: "not_found" },
    { name: "cancel with an id that cannot exist", method: "POST", path: "/runs/..%2f..%2fetc/cancel", status: 404, code: "not_found" },
    { name: "cancel with a 65-character id", method: "POST", path: "/runs/" + "a".repeat(65) + "/cancel", status: 404, code: "not_found" },
    ...["GET", "PUT", "DELETE", "PATCH"].map((method) => ({ name: `${method} on a valid callback URL`, method, path: validA1, status: 405, code: "method_not_allowed" })),
    // /workflows/{name} is the stored-workflow route: only POST /workflows/resume is the legacy resume.
    { name: "GET /workflows/resume (a stored workflow named 'resume', which does not exist)", path: "/workflows/resume", status: 404, code: "not_found",
        check: (res) => assert.equal(res.json.error.message, "no workflow 'resume'") },
    { name: "DELETE /workflows/resume (a stored workflow named 'resume', which does not exist)", method: "DELETE", path: "/workflows/resume", status: 404, code: "not_found",
        check: (res) => assert.equal(res.json.error.message, "no workflow 'resume'") },
    { name: "PUT /workflows/resume with no body", method: "PUT", path: "/workflows/resume", status: 400, code: "invalid_json" },
    { name: "PATCH /workflows/resume", method: "PATCH", path: "/workflows/resume", status: 405, code: "method_not_allowed" },
    { name: "POST /", method: "POST", path: "/", body: "{}", status: 405, code: "method_not_allowed" },
    { name: "PATCH /", method: "PATCH", path: "/", body: "{}", status: 405, code: "method_not_allowed" },
    { name: "DELETE /", method: "DELETE", path: "/", status: 405, code: "method_not_allowed" },
    { name: "DELETE /health", method: "DELETE", path: "/health", status: 405, code: "method_not_allowed" },
    { name: "PUT /health", method: "PUT", path: "/health", body: "{}", status: 405, code: "method_not_allowed" },
    { name: "PROPFIND /runs/{id} (a WebDAV method is not GET)", method: "PROPFIND", path: (c) => `/runs/${c.A.id}`, status: 405, code: "method_not_allowed" },

    // --- At the gate ------------------------------------------------------------------------
    // Requests that pass the route (valid token, or a valid API key) and reach the Durable Object
    // of a run in play: A, paused on its two waits w1 and w2. Each is turned away there. KV (values
    // and expirations) and what the gate serves for A, B and C stay byte for byte as they were,
    // except that a turned-away callback or heartbeat is recorded among its wait's `events`.
    callback("gate: w2's own token, w1's task_id", validA2, (c) => json({ task_id: c.A.w1.taskId, success: true, data: { stolen: true } }), 409, "task_mismatch", {
        events: mismatchOnA2,
        check: (res, c) => assert.equal(res.json.error.message, `this callback URL is for task '${c.A.w2.taskId}', but the body names task '${c.A.w1.taskId}'`),
    }),
    callback("gate: task_id null", validA1, json({ task_id: null, success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: task_id an object", validA1, json({ task_id: { $ne: "" }, success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: task_id an array holding the right id", validA1, (c) => json({ task_id: [c.A.w1.taskId], success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: task_id with a trailing space", validA1, (c) => json({ task_id: `${c.A.w1.taskId} `, success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: task_id in upper case", validA1, (c) => json({ task_id: c.A.w1.taskId.toUpperCase(), success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: task_id with a NUL appended", validA1, (c) => json({ task_id: `${c.A.w1.taskId}\u0000`, success: true }), 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: a failure body under another task", validA2, json({ task_id: "not-a2", success: false, error: { code: "boom", message: "forged failure" } }), 409, "task_mismatch", { events: mismatchOnA2 }),
    callback("gate: exactly MAX_BODY_BYTES of data under another task", validA1, () => {
        const shell = json({ task_id: "not-a1", success: true, data: { pad: "" } });
        const text = json({ task_id: "not-a1", success: true, data: { pad: "x".repeat(MAX_BODY - shell.length) } });
        assert.equal(text.length, MAX_BODY);
        return text;
    }, 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: 50,000 keys of data under another task", validA2, () => json({ task_id: "not-a2", data: Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [`k${i}`, i])) }), 409, "task_mismatch", { events: mismatchOnA2 }),
    callback("gate: data 100 levels deep under another task", validA1, `{"task_id": "not-a1", "data": ${deepArrays(99)}}`, 409, "task_mismatch", { events: mismatchOnA1 }),
    // 100 levels is the deepest body the route lets through (a stored run nests what it holds
    // about ten levels deeper, and must read back); 101 is refused before the gate.
    callback("gate: data nested to 100 levels in all (arrays) under another task", validA1, `{"task_id": "not-a1", "data": ${deepArrays(99)}}`, 409, "task_mismatch", { events: mismatchOnA1 }),
    callback("gate: data nested to 100 levels in all (objects) under another task", validA2, `{"task_id": "not-a2", "data": ${deepObjects(99)}}`, 409, "task_mismatch", { events: mismatchOnA2 }),
    callback("data nested to 101 levels in all is refused before the gate", validA2, `{"task_id": "not-a2", "data": ${deepArrays(100)}}`, 400, "invalid_json"),
    callback("data nested to 127 levels in all is refused before the gate", validA1, `{"task_id": "not-a1", "data": ${deepArrays(126)}}`, 400, "invalid_json"),
    callback("gate: w2, body is an array", validA2, "[]", 400, "invalid_request"),
    callback("gate: w2, body is its task id as a string", validA2, (c) => json(c.A.w2.taskId), 400, "invalid_request"),
    callback("gate: w2, body is a number", validA2, "42", 400, "invalid_request"),
    callback("gate: w2, body is null", validA2, "null", 400, "invalid_request"),
    heartbeat("gate: heartbeat on w2 naming w1's task, with progress and an extension", hbA("w2"), (c) => json({ task_id: c.A.w1.taskId, progress: { pct: 99 }, extend_seconds: 600 }), 409, "task_mismatch", {
        events: (c) => [ev("A", c.A.w2.waitId, "heartbeat", "task_mismatch")],
    }),
    heartbeat("gate: heartbeat with progress and extend_seconds -1", hbA("w1"), json({ progress: { pct: 50 }, extend_seconds: -1 }), 400, "invalid_request", {
        check: (res) => assert.equal(res.json.error.message, "extend_seconds must be a whole number of seconds, at least 1"),
    }),
    ...["1e20", "18446744073709551616", "1e300", "0.5", '"600"', "{}", "[600]", "false"].map((raw) =>
        heartbeat(`gate: heartbeat on w2 with progress and extend_seconds ${raw}`, hbA("w2"), `{"progress": {"pct": 10}, "extend_seconds": ${raw}}`, 400, "invalid_request", {
            check: (res) => assert.equal(res.json.error.message, "extend_seconds must be a whole number of seconds, at least 1"),
        }),
    ),
    heartbeat("gate: heartbeat with 900 KB of progress and extend_seconds 0", hbA("w1"), json({ progress: { blob: "p".repeat(900_000) }, extend_seconds: 0 }), 400, "invalid_request"),
    heartbeat("gate: heartbeat naming another task, progress nested to 100 levels in all", hbA("w1"), `{"task_id": "not-a1", "progress": ${deepArrays(99)}}`, 409, "task_mismatch", {
        events: (c) => [ev("A", c.A.w1.waitId, "heartbeat", "task_mismatch")],
    }),
    heartbeat("gate: heartbeat on w2, body is an array", hbA("w2"), "[]", 400, "invalid_request"),
    { name: "gate: the other key cancels run A", method: "POST", path: (c) => `/runs/${c.A.id}/cancel`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "gate: the other key cancels run A through X-Arcrun-API-Key", method: "POST", path: (c) => `/runs/${c.A.id}/cancel`, auth: null, headers: { "x-arcrun-api-key": OTHER_KEY }, status: 404, code: "not_found" },
    { name: "gate: the other key redelivers run A", method: "POST", path: (c) => `/runs/${c.A.id}/redeliver`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "gate: the other key cancels finished run C", method: "POST", path: (c) => `/runs/${c.C.id}/cancel`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "gate: the other key redelivers finished run C", method: "POST", path: (c) => `/runs/${c.C.id}/redeliver`, auth: OTHER_KEY, status: 404, code: "not_found" },
    { name: "gate: the owner cancels finished run C", method: "POST", path: (c) => `/runs/${c.C.id}/cancel`, status: 409, code: "run_finished", check: (res) => assert.equal(res.json.error.status, "completed") },
    { name: "gate: the owner redelivers run C, started without a final_callback_url", method: "POST", path: (c) => `/runs/${c.C.id}/redeliver`, status: 400, code: "invalid_request",
        check: (res) => assert.equal(res.json.error.message, "this run was started without a final_callback_url: there is nothing to redeliver") },

    // --- Paths ----------------------------------------------------------------------------
    // GET /runs (and /runs/) is the listing route: hostile requests to it are refused.
    { name: "GET /runs (the listing) without an API key", path: "/runs", auth: null, status: 401, code: "unauthorized" },
    { name: "GET /runs?status=banana", path: "/runs?status=banana", status: 400, code: "invalid_request",
        check: (res) => assert.equal(res.json.error.message, "status must be one of running, paused, completed, failed, cancelled") },
    { name: "GET /runs?limit=0", path: "/runs?limit=0", status: 400, code: "invalid_request",
        check: (res) => assert.equal(res.json.error.message, "limit must be a whole number from 1 to 1000") },
    { name: "GET /runs/?cursor=garbage (the listing, trailing slash)", path: "/runs/?cursor=garbage", status: 400, code: "invalid_request",
        check: (res) => assert.equal(res.json.error.message, "cursor is not one this API returned") },
    { name: "POST /runs", method: "POST", path: "/runs", body: "{}", status: 405, code: "method_not_allowed" },
    { name: "GET /runs/a/b", path: "/runs/a/b", status: 404, code: "not_found" },
    { name: "GET /callbacks/x", path: "/callbacks/x", status: 404, code: "not_found" },
    { name: "GET /../etc/passwd (raw, not normalised by the client)", raw: () => rawHttp("GET", "/../etc/passwd"), status: 404, code: "not_found" },
    { name: "GET /%2e%2e/%2e%2e/etc/passwd", path: "/%2e%2e/%2e%2e/etc/passwd", status: 404, code: "not_found" },
    { name: "GET a 60,000-character path", path: "/" + "a".repeat(60_000), status: 404, code: "not_found" },
    { name: "POST /execute%00", method: "POST", path: "/execute%00", body: body(VALID_GRAPH), status: 404, code: "not_found" },
    { name: "POST /%65xecute (encoded 'e')", method: "POST", path: "/%65xecute", body: body(VALID_GRAPH), status: 404, code: "not_found" },
    { name: "POST /EXECUTE", method: "POST", path: "/EXECUTE", body: body(VALID_GRAPH), status: 404, code: "not_found" },
    { name: "POST /execute.json", method: "POST", path: "/execute.json", body: body(VALID_GRAPH), status: 404, code: "not_found" },
    { name: "GET /workflows (the listing) without an API key", path: "/workflows", auth: null, status: 401, code: "unauthorized" },
    { name: "GET /workflows/..%2f..%2fetc (not a workflow name)", path: "/workflows/..%2f..%2fetc", status: 400, code: "invalid_workflow_name" },
    { name: "POST /workflows/resume/extra", method: "POST", path: "/workflows/resume/extra", body: "{}", status: 404, code: "not_found" },
    { name: "percent-encoded junk path (raw)", raw: () => rawHttp("GET", "/%ff%fe%00/%%41/%zz"), status: 404, code: "not_found" },
    { name: "GET /favicon.ico", path: "/favicon.ico", status: 404, code: "not_found" },
];

// ---------------------------------------------------------------------------------------
// Running one case

const resolve = (v) => (typeof v === "function" ? v(ctx) : v);

/** How many cases expect each status and code: a case that changes its expectation changes this. */
const EXPECTED_OUTCOMES = {
    "400 invalid_request": 42,
    "400 invalid_json": 38,
    "400 invalid_graph": 70,
    "400 invalid_final_callback_url": 7,
    "400 invalid_workflow_name": 1,
    "401 unauthorized": 44,
    "403 origin_not_allowed": 1,
    "404 not_found": 39,
    "405 method_not_allowed": 30,
    "409 task_mismatch": 20,
    "409 run_not_finished": 1,
    "409 run_finished": 1,
    "413 payload_too_large": 7,
    "415 unsupported_media_type": 1,
    "200 noop": 5,
};

/**
 * Answers read off a raw socket skip the harness's fetch wrapper: check them against the
 * OpenAPI document here — those the Worker gave (they carry its cost header), for a request
 * line that names a method and a path (workerd itself answers the ones that do not parse).
 */
function checkRawAnswer(requestLine, r) {
    if (!r.headers.has("x-arcrun-kv-ops")) return;
    const m = /^([A-Z]+) (\/\S*) HTTP\/1\.[01]$/.exec(requestLine);
    if (!m) return;
    assertMatchesOpenApi(m[1], worker.url + m[2], r.status, r.headers, r.text);
}

async function send(c) {
    if (c.upload) {
        const r = await rawChunkedUpload(ctx.port, "/execute", c.upload);
        checkRawAnswer("POST /execute HTTP/1.1", r);
        return r;
    }
    if (c.raw) {
        const request = resolve(c.raw);
        const r = await rawRequest(ctx.port, request, { halfClose: c.halfClose });
        checkRawAnswer(String(request).split("\r\n")[0], r);
        return { status: r.status, text: r.text, headers: r.headers };
    }
    const headers = {};
    const auth = c.auth === undefined ? TEST_API_KEY : c.auth;
    if (auth) headers.authorization = `Bearer ${auth}`;
    const payload = resolve(c.body);
    if (payload !== undefined) headers["content-type"] = "application/json";
    Object.assign(headers, resolve(c.headers) ?? {});
    let sendBody = payload;
    if (headers["content-type"] === "") {
        // No content-type at all: fetch adds text/plain to a string body, but not to bytes.
        delete headers["content-type"];
        sendBody = Buffer.from(payload);
    }
    const method = c.method ?? (payload === undefined ? "GET" : "POST");
    const res = await fetch(worker.url + resolve(c.path), {
        method,
        headers,
        body: sendBody,
        ...(c.chunked ? { duplex: "half" } : {}),
    });
    return { status: res.status, text: await res.text(), headers: res.headers };
}

test("the corpus is what it says: every case, status and code counted", { timeout: 60_000 }, (t) => {
    const fourXX = CASES.filter((c) => c.status >= 400 && c.status < 500);
    const noops = CASES.filter((c) => c.status === 200);
    t.diagnostic(`${CASES.length} cases: ${fourXX.length} expect a 4xx, ${noops.length} a 200 noop`);
    assert.equal(fourXX.length + noops.length, CASES.length, "every case expects a 4xx or a 200 noop");
    for (const c of noops) assert.equal(typeof c.check, "function", `the noop case "${c.name}" checks its body`);
    for (const c of fourXX) assert.equal(typeof c.code, "string", `the 4xx case "${c.name}" names its code`);
    const byOutcome = {};
    for (const c of CASES) byOutcome[`${c.status} ${c.code ?? "noop"}`] = (byOutcome[`${c.status} ${c.code ?? "noop"}`] ?? 0) + 1;
    assert.deepEqual(byOutcome, EXPECTED_OUTCOMES, JSON.stringify(byOutcome));
    assert.equal(CASES.filter((c) => c.name.startsWith("gate: ")).length, 37, "cases that reach run A's gate");
    assert.equal(CASES.filter((c) => c.events).length, 22, "cases that must record an event on a wait");
    const names = new Set(CASES.map((c) => c.name));
    assert.equal(names.size, CASES.length, "case names are unique");
});

for (const c of CASES) {
    test(`hostile: ${c.name} → ${c.status}${c.code ? ` ${c.code}` : ""}`, { timeout: 60_000 }, async () => {
        const kvBefore = await kvState();
        const servedBefore = await servedViews();
        const t0 = Date.now();
        const res = await send(c);
        const t1 = Date.now();
        const detail = `${c.name}: ${res.status} ${res.text.slice(0, 300)}`;
        assert.ok(res.status < 500, `never a 5xx — ${detail}`);
        assert.equal(res.status, c.status, detail);
        try {
            res.json = JSON.parse(res.text);
        } catch {
            assert.fail(`the answer is not JSON — ${detail}`);
        }
        if (res.status >= 400) {
            assert.equal(res.json.success, false, detail);
            assert.equal(typeof res.json.error, "object", detail);
            assert.equal(typeof res.json.error.code, "string", detail);
            assert.equal(typeof res.json.error.message, "string", detail);
            assert.ok(res.json.error.message.length > 0, detail);
            assert.equal(res.json.error.code, c.code, detail);
            assert.match(res.headers.get("content-type") ?? "", /application\/json/, detail);
        }
        if (c.check) await c.check(res, ctx);
        const kvAfter = await kvState();
        assert.deepEqual(kvAfter, kvBefore, `KV changed (values or expirations) — ${c.name}`);
        assertServedUnchanged(c.name, servedBefore, await servedViews(), resolve(c.events) ?? [], t0, t1);
    });
}

// ---------------------------------------------------------------------------------------
// After the corpus: the runs it aimed at are intact, and still work for their owner.

test("GET /runs (once a 404, now the listing) shows each key exactly its own runs, newest first, and changes nothing", { timeout: 60_000 }, async () => {
    const kvBefore = await kvState();
    const servedBefore = await servedViews();
    const listed = async (p, apiKey) => {
        const r = await worker.fetchJson(p, { apiKey });
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.deepEqual(kvOps(r), { reads: 0, writes: 0, lists: 1 }, "one KV list, no read");
        assert.deepEqual(Object.keys(r.body).sort(), ["runs", "success"], "one page: no next_cursor");
        return r.body.runs;
    };
    const expected = (names) => names.map((name) => {
        const view = JSON.parse(servedBefore[name]);
        return { run_id: ctx[name].id, workflow: null, status: view.status, created_at: view.created_at, updated_at: view.updated_at, open_waits: (view.waits ?? []).length };
    });
    // C was started after A, so it comes first; B belongs to the other key.
    assert.deepEqual(await listed("/runs", TEST_API_KEY), expected(["C", "A"]));
    assert.deepEqual(await listed("/runs/", TEST_API_KEY), expected(["C", "A"]));
    assert.deepEqual(await listed("/runs", OTHER_KEY), expected(["B"]));
    assert.deepEqual(await listed("/runs?status=paused", TEST_API_KEY), expected(["A"]));
    assert.deepEqual((await listed("/runs?status=paused", TEST_API_KEY))[0].open_waits, 2);
    assert.deepEqual(await kvState(), kvBefore, "listing changed KV");
    assertServedUnchanged("GET /runs", servedBefore, await servedViews(), [], 0, 0);
});

test("after the corpus, KV is as it was and the paused runs still resume with their real tokens", { timeout: 60_000 }, async () => {
    assert.deepEqual(await kvState(), ctx.kvAtStart);
    const a = await worker.fetchJson(`/runs/${ctx.A.id}`);
    assert.equal(a.body.status, "paused");
    assert.deepEqual(a.body.waits.map((w) => w.task_id).sort(), [ctx.A.w1.taskId, ctx.A.w2.taskId].sort());
    const b = await worker.fetchJson(`/runs/${ctx.B.id}`, { apiKey: OTHER_KEY });
    assert.equal(b.body.status, "paused");

    const r1 = await fetch(ctx.A.w1.url, { method: "POST", body: json({ task_id: ctx.A.w1.taskId, success: true, data: { one: 1 } }) });
    assert.equal(r1.status, 200);
    const a1 = await r1.json();
    assert.equal(a1.status, "paused", "one wait left");
    assertCallbackAnswer(a1, { status: "paused", run_id: ctx.A.id, task_id: ctx.A.w1.taskId, paused_again: undefined });
    const r2 = await fetch(ctx.A.w2.url, { method: "POST", body: json({ task_id: ctx.A.w2.taskId, success: true, data: { two: 2 } }) });
    assert.equal(r2.status, 200);
    assertCallbackAnswer(await r2.json(), { status: "completed", run_id: ctx.A.id, task_id: ctx.A.w2.taskId });
    const doneA = await worker.fetchJson(`/runs/${ctx.A.id}`);
    assert.equal(doneA.body.status, "completed");
    // The callback route is token-gated, not key-gated: B's owner need not be the caller.
    const r3 = await fetch(ctx.B.w1.url, { method: "POST", body: json({ task_id: ctx.B.w1.taskId, success: true }) });
    assert.equal(r3.status, 200);
    assertCallbackAnswer(await r3.json(), { status: "completed", run_id: ctx.B.id, task_id: ctx.B.w1.taskId });
});

// ---------------------------------------------------------------------------------------
// Requests that are fine on purpose, or 5xx by design: not in the corpus.

test("valid JSON sent as text/plain (or with no content-type) is accepted and runs", { timeout: 60_000 }, async () => {
    const before = await worker.kvSnapshot();
    for (const contentType of ["text/plain", undefined]) {
        const headers = { authorization: `Bearer ${TEST_API_KEY}` };
        if (contentType) headers["content-type"] = contentType;
        // A Buffer body, so that fetch adds no content-type of its own.
        const res = await fetch(`${worker.url}/execute`, { method: "POST", headers, body: Buffer.from(body(VALID_GRAPH, { context: { x: 1 } })) });
        assert.equal(res.status, 200);
        const out = await res.json();
        assert.equal(out.status, "completed");
        assert.ok(before.size < (await worker.kvSnapshot()).size, "the run was stored");
    }
    assert.equal((await worker.kvSnapshot()).size, before.size + 2);
});

test("a template that expands past MAX_TEMPLATE_BYTES fails the run (200, small answer), not the request", { timeout: 60_000 }, async () => {
    // 1,000 placeholders in one string, each expanding to 50 KB: 50 MB if unbounded.
    const big = "x".repeat(50_000);
    const graph = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "boom", type: "Component", componentId: "comp_passthrough", data: { text: "{{big}}".repeat(1000) } },
        ],
        edges: [{ from: "in", to: "boom", type: "PIPE" }],
    };
    const before = await worker.kvSnapshot();
    const started = Date.now();
    const r = await worker.fetchJson("/execute", { body: { graph, context: { big } } });
    assert.ok(r.status < 500, `${r.status} ${r.text.slice(0, 300)}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "failed");
    assert.equal(r.body.success, false);
    assert.deepEqual(r.body.error, { code: "node_failed", message: `templates expanded to more than ${TEMPLATE_LIMIT} bytes (MAX_TEMPLATE_BYTES)`, node_id: "boom" });
    assert.ok(r.text.length < 4 * big.length, `the failure answer is small (${r.text.length} bytes)`);
    assert.ok(Date.now() - started < 5000, "and quick");
    const after = await worker.kvSnapshot();
    assert.equal(after.size, before.size + 1, "exactly one (failed) run record is stored");
    const record = after.get(recordKey(r.body.run_id));
    assert.ok(record.length < 4 * big.length, `the stored record is not inflated (${record.length} bytes)`);
});

test("MAX_TEMPLATE_BYTES also bounds many whole-value placeholders in one node's data", { timeout: 60_000 }, async () => {
    // Each "{{big}}" that is a whole string takes the value itself (no text is rendered),
    // so 400 of them copy a 100 KB string 400 times: 40 MB from a 100 KB request. With a
    // 64 KiB template limit this must fail the run like the case above, not be accepted
    // (nor blow up the Worker). Run on a Worker of its own so a crash cannot spill over.
    const w = await startWorker({ bindings: { MAX_TEMPLATE_BYTES: String(TEMPLATE_LIMIT) } });
    try {
        const big = "y".repeat(100_000);
        const data = Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`k${i}`, "{{big}}"]));
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "boom", type: "Component", componentId: "comp_passthrough", data },
            ],
            edges: [{ from: "in", to: "boom", type: "PIPE" }],
        };
        const r = await w.fetchJson("/execute", { body: { graph, context: { big } } });
        assert.ok(r.status < 500, `never a 5xx: ${r.status} ${r.text.slice(0, 300)}`);
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.ok(r.text.length < 10 * big.length, `the answer is not amplified (${r.text.length} bytes)`);
        assert.equal(r.body.status, "failed", "the expansion exceeds MAX_TEMPLATE_BYTES");
        assert.deepEqual(
            r.body.error,
            { code: "node_failed", message: `templates expanded to more than ${TEMPLATE_LIMIT} bytes (MAX_TEMPLATE_BYTES)`, node_id: "boom" },
            "the run must fail on the template limit, before 400 copies of the value are made",
        );
    } finally {
        await w.stop();
    }
});

test("no API keys configured: 503 misconfigured (fail closed), KV untouched", { timeout: 60_000 }, async () => {
    const w = await startWorker({ bindings: { API_KEY_HASHES: "" } });
    try {
        const before = await w.kvSnapshot();
        for (const [p, init] of [
            ["/execute", { method: "POST", body: body(VALID_GRAPH) }],
            [`/runs/${"0".repeat(32)}`, {}],
        ]) {
            for (const headers of [{ authorization: `Bearer ${TEST_API_KEY}` }, {}]) {
                const res = await fetch(w.url + p, { ...init, headers });
                assert.equal(res.status, 503, p);
                const out = await res.json();
                assert.equal(out.success, false);
                assert.equal(out.error.code, "misconfigured");
                assert.equal(out.error.message, NO_KEYS_MESSAGE);
            }
        }
        assert.deepEqual(await w.kvSnapshot(), before);
        assert.equal(before.size, 0);
    } finally {
        await w.stop();
    }
});
