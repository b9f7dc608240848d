// End-to-end harness: runs the built Worker (build/index.js + build/index_bg.wasm) inside
// workerd through Miniflare, listening on a real loopback port so that components and the
// reference daemon can call it back over HTTP, and lets tests look straight into its KV.
//
// Set E2E_LOG=1 to see workerd's and the Worker's own logs while debugging.

import { createHash, createHmac } from "node:crypto";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, Log, LogLevel } from "miniflare";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const COMPATIBILITY_DATE = "2026-04-01";
export const TEST_API_KEY = "test-key";
export const TEST_API_KEY_HASH = createHash("sha256").update(TEST_API_KEY).digest("hex");
/** Signs final callbacks in tests (Standard Webhooks format). */
export const TEST_WEBHOOK_SECRET = "whsec_" + Buffer.from("arcrun-test-webhook-key-32-bytes").toString("base64");

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort() {
    const server = http.createServer();
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
    });
    const { port } = server.address();
    await new Promise((resolve) => server.close(resolve));
    return port;
}

function encodeBody(body, headers) {
    if (body === undefined || body === null) return undefined;
    if (typeof body === "string" || body instanceof Uint8Array || body instanceof ArrayBuffer) return body;
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
        headers["content-type"] = "application/json";
    }
    return JSON.stringify(body);
}

async function decodeResponse(res) {
    const text = await res.text();
    let body = text;
    if (text !== "") {
        try {
            body = JSON.parse(text);
        } catch {
            // not JSON: hand back the text as it is
        }
    } else {
        body = null;
    }
    return { status: res.status, headers: res.headers, body, text };
}

/**
 * Starts the Worker.
 *
 * @param {object} [opts]
 * @param {number} [opts.port]        port to listen on (default: a free one)
 * @param {string} [opts.persistDir]  keep KV and Durable Object state here, so a Worker
 *                                    started again with the same dir sees the same state
 * @param {object} [opts.bindings]    vars/secrets, merged over the defaults
 * @param {string} [opts.scriptPath]  defaults to build/index.js
 * @param {object} [opts.miniflare]   extra Miniflare options, merged last (an inline
 *                                    `script` here replaces scriptPath)
 */
export async function startWorker({ port, persistDir, bindings = {}, scriptPath, miniflare = {} } = {}) {
    const buildOptions = (listenPort) => {
        const script = path.resolve(REPO_ROOT, scriptPath ?? "build/index.js");
        const options = {
            scriptPath: script,
            // Module names are taken relative to modulesRoot (by default the current
            // directory); workerd refuses names that climb out with "..", so anchor them at
            // the script's own directory and tests can be run from anywhere.
            modulesRoot: path.dirname(script),
            modules: true,
            modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
            compatibilityDate: COMPATIBILITY_DATE,
            kvNamespaces: ["RUNS"],
            // public/ as wrangler.toml's [assets] serves it: ahead of the Worker.
            assets: { directory: path.join(REPO_ROOT, "public"), routerConfig: { has_user_worker: true } },
            durableObjects: { RUN_GATE: "RunGate", TRIGGER_CLAIM: "TriggerClaim" },
            host: "127.0.0.1",
            port: listenPort,
            bindings: {
                PUBLIC_BASE_URL: `http://127.0.0.1:${listenPort}`,
                CALLBACK_SECRET: "test-secret",
                // SHA-256 of TEST_API_KEY; the deployment holds hashes only.
            API_KEY_HASHES: TEST_API_KEY_HASH,
                WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
                ...bindings,
            },
            ...(process.env.E2E_LOG ? { log: new Log(LogLevel.DEBUG) } : {}),
            ...(persistDir
                ? {
                      kvPersist: path.join(persistDir, "kv"),
                      durableObjectsPersist: path.join(persistDir, "do"),
                  }
                : {}),
            ...miniflare,
        };
        // An inline `script` (used by the harness's own test) replaces the built Worker.
        if (miniflare.script !== undefined) {
            delete options.scriptPath;
            delete options.modulesRoot;
        }
        return options;
    };

    // A port picked by freePort() can be taken by someone else before workerd binds it;
    // that alone is worth another try with a fresh port.
    const maxAttempts = 3;
    let mf;
    let url;
    let listenPort;
    for (let attempt = 1; ; attempt++) {
        listenPort = port ?? (await freePort());
        mf = new Miniflare(buildOptions(listenPort));
        try {
            url = (await mf.ready).href.replace(/\/$/, "");
            break;
        } catch (err) {
            await mf.dispose().catch(() => {});
            const retryable = err?.code === "ERR_ADDRESS_IN_USE" && port === undefined;
            if (!retryable || attempt >= maxAttempts) throw err;
            console.error(`[harness] port ${listenPort} was taken; retrying on another (${attempt}/${maxAttempts})`);
        }
    }

    /** Calls the Worker over real HTTP; a non-string `body` is sent as JSON, with the test API key. */
    async function fetchJson(p, { method, body, headers = {}, apiKey = TEST_API_KEY } = {}) {
        // Sends the test API key unless told otherwise (apiKey: null sends none).
        const hdrs = apiKey ? { authorization: `Bearer ${apiKey}`, ...headers } : { ...headers };
        const payload = encodeBody(body, hdrs);
        const res = await fetch(url + (p.startsWith("/") ? p : `/${p}`), {
            method: method ?? (payload === undefined ? "GET" : "POST"),
            headers: hdrs,
            body: payload,
        });
        return decodeResponse(res);
    }

    /** Every key of the RUNS namespace and its value (text, or parsed with {json: true}). */
    async function kvSnapshot({ json = false } = {}) {
        const kv = await mf.getKVNamespace("RUNS");
        const snapshot = new Map();
        let cursor;
        do {
            const page = await kv.list(cursor ? { cursor } : {});
            for (const { name } of page.keys) {
                const value = await kv.get(name, "text");
                let v = value;
                if (json && value !== null) {
                    try {
                        v = JSON.parse(value);
                    } catch {
                        // leave non-JSON values as text
                    }
                }
                snapshot.set(name, v);
            }
            cursor = page.list_complete ? undefined : page.cursor;
        } while (cursor);
        return snapshot;
    }

    let stopped = false;
    async function stop() {
        if (stopped) return;
        stopped = true;
        await mf.dispose();
    }

    return { mf, url, port: listenPort, fetchJson, kvSnapshot, stop };
}

/**
 * A fake component on 127.0.0.1. `handler(jsonBody, req)` returns (or resolves to) either
 * `{status, body, headers?}` or a plain object that is answered as 200 JSON. A handler that
 * throws answers 500. Non-JSON request bodies reach the handler as text.
 */
export async function startComponent(handler) {
    const hitsByPath = new Map();
    const received = [];
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", async () => {
            const pathname = new URL(req.url, "http://component").pathname;
            hitsByPath.set(pathname, (hitsByPath.get(pathname) ?? 0) + 1);
            const text = Buffer.concat(chunks).toString("utf8");
            let body = null;
            if (text !== "") {
                try {
                    body = JSON.parse(text);
                } catch {
                    body = text;
                }
            }
            received.push({ method: req.method, path: pathname, headers: req.headers, body });

            let status = 200;
            let out;
            let headers = {};
            try {
                const result = await handler(body, req);
                if (
                    result !== null &&
                    typeof result === "object" &&
                    typeof result.status === "number" &&
                    "body" in result
                ) {
                    status = result.status;
                    out = result.body;
                    headers = result.headers ?? {};
                } else {
                    out = result;
                }
            } catch (err) {
                status = 500;
                out = { success: false, error: String(err?.message ?? err) };
            }
            const payload = typeof out === "string" ? out : JSON.stringify(out ?? null);
            res.writeHead(status, {
                "content-type": typeof out === "string" ? "text/plain" : "application/json",
                ...headers,
            });
            res.end(payload);
        });
    });
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
    });
    const url = `http://127.0.0.1:${server.address().port}`;

    return {
        url,
        /** Hits on one path, or on all paths when none is given. */
        hits(p) {
            if (p === undefined) return [...hitsByPath.values()].reduce((a, b) => a + b, 0);
            return hitsByPath.get(p) ?? 0;
        },
        /** Every request received so far: {method, path, headers, body}. */
        requests() {
            return received.slice();
        },
        close() {
            return new Promise((resolve) => {
                server.close(() => resolve());
                server.closeAllConnections();
            });
        },
    };
}

/** Polls `fn` until it returns something truthy and returns that; throws naming `what` after `timeoutMs`. */
export async function waitUntil(what, fn, { timeoutMs = 10000, everyMs = 100 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, everyMs));
    }
}

/** `{reads, writes, lists}` from a response's x-arcrun-kv-ops header (null when absent). */
export function kvOpsOf(res) {
    const h = res.headers.get("x-arcrun-kv-ops");
    if (!h) return null;
    return Object.fromEntries(h.split(";").map((p) => p.split("=")).map(([k, v]) => [k.trim(), Number(v)]));
}

/**
 * A daemon stand-in: every call answers pending with a fresh task id (after `delayMs`) and is
 * kept in `calls` as `{path, body, taskId, callbackUrl, answered}`, so a test decides when to
 * call back (`answered` turns true as the pending answer is sent).
 */
export async function pendingComponent({ delayMs = 0 } = {}) {
    const calls = [];
    let n = 0;
    const c = await startComponent(async (body, req) => {
        const p = new URL(req.url, "http://component").pathname;
        const taskId = `task${p.replace(/\//g, "-")}-${body?.index ?? "x"}-${++n}`;
        const call = { path: p, body, taskId, callbackUrl: body?.callback_url, answered: false };
        calls.push(call);
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        call.answered = true;
        return { pending: true, task_id: taskId };
    });
    return { ...c, calls, on: (p) => calls.filter((x) => x.path === p) };
}

/** POSTs `{task_id, ...extra}` to a callback URL as a daemon would; `{status, headers, body, text}`. */
export async function postCallback(callbackUrl, taskId, extra = { success: true }) {
    const res = await fetch(callbackUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ task_id: taskId, ...extra }),
    });
    return decodeResponse(res);
}

/** A wait's heartbeat URL: its callback URL with `/heartbeat` before the query string. */
export function heartbeatUrlOf(callbackUrl) {
    const u = new URL(callbackUrl);
    u.pathname = `${u.pathname.replace(/\/$/, "")}/heartbeat`;
    return u.href;
}

/** POSTs a heartbeat (`{progress?, extend_seconds?}`, or any raw body) for a wait; `{status, headers, body, text}`. */
export async function postHeartbeat(callbackUrl, body = {}) {
    const res = await fetch(heartbeatUrlOf(callbackUrl), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return decodeResponse(res);
}

/** The harness's CALLBACK_SECRET. */
export const TEST_CALLBACK_SECRET = "test-secret";

/**
 * A callback token as the Worker signs one: `{expires_at}.{base64url HMAC-SHA256}` over the
 * length-prefixed domain, run id and wait id, then the expiry (see src/core/callback.rs).
 */
export function mintToken(secret, runId, waitId, expiresAt) {
    const mac = createHmac("sha256", secret);
    for (const field of [Buffer.from("arcrun-callback-v1"), Buffer.from(runId), Buffer.from(waitId)]) {
        const len = Buffer.alloc(8);
        len.writeBigUInt64BE(BigInt(field.length));
        mac.update(len);
        mac.update(field);
    }
    const exp = Buffer.alloc(8);
    exp.writeBigUInt64BE(BigInt(expiresAt));
    mac.update(exp);
    return `${expiresAt}.${mac.digest("base64url")}`;
}

/** Alarms fire within ~2 s locally; the shared machine is slow, so allow far more. */
export const ALARM_SLACK_MS = 10000;

/** GET /runs/{id} until its status is one of `states`; returns that response. */
export async function waitForStatus(w, runId, states, timeoutMs = ALARM_SLACK_MS) {
    let last;
    try {
        return await waitUntil(`run ${runId} to be ${states}`, async () => {
            last = await w.fetchJson(`/runs/${runId}`);
            return states.includes(last.body?.status) ? last : null;
        }, { timeoutMs, everyMs: 150 });
    } catch (err) {
        err.message += `; last answer: ${last?.status} ${last?.text?.slice(0, 600)}`;
        throw err;
    }
}

/** `{reads, writes, lists}` from the x-arcrun-kv-ops header, which must be there. */
export function kvOps(res) {
    const ops = kvOpsOf(res);
    if (!ops) throw new Error("the x-arcrun-kv-ops header is missing");
    return ops;
}
