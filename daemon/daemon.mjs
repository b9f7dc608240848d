#!/usr/bin/env node
// Reference task daemon: a stand-in for a real long-running component.
//
// It accepts a task over HTTP, answers at once that the work is pending, and later reports
// the outcome to the task's `callback_url`, retrying the callback the way a production
// daemon would when the receiver is down or answers with an error. A callback attempt that
// gets no answer within the callback timeout (default 30 s) counts as failed and is retried.
//
// With heartbeats on, while a task runs (its delay not yet elapsed) the daemon POSTs every N ms
// to the task's heartbeat URL — its callback_url with `/heartbeat` before the query string —
// `{progress: {elapsed_ms, delay_ms}, extend_seconds: ceil(3 * N / 1000)}`, so the Worker shows
// progress and keeps moving the wait's deadline later. A callback URL is good until the deadline
// it was signed with, so the daemon switches to the callback_url and heartbeat_url each heartbeat
// answers with (signed with the new deadline). A failed heartbeat is logged, never fatal.
// A task body may set `delay_ms` and `heartbeat_ms` (0: none) for itself.
//
//   node daemon/daemon.mjs --port 8790 --delay-ms 3000 --retry-delays-ms 0,1000,5000,30000 \
//       --callback-timeout-ms 30000 --heartbeat-ms 5000
//
// Importable too: `startDaemon({ port, host, delayMs, retryDelaysMs, callbackTimeoutMs,
// heartbeatMs, log })`. No dependencies beyond Node itself.

import http from "node:http";
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";

export const DEFAULT_DELAY_MS = 2000;
/** Waits before each retry; the first attempt is made at once. */
export const DEFAULT_RETRY_DELAYS_MS = [0, 1000, 5000, 30000];
/** A callback attempt that takes longer than this counts as failed (and is retried). */
export const DEFAULT_CALLBACK_TIMEOUT_MS = 30000;
/** Heartbeats are off unless asked for. */
export const DEFAULT_HEARTBEAT_MS = 0;
const MAX_BODY_BYTES = 1024 * 1024;

function defaultLog(event) {
    process.stdout.write(JSON.stringify(event) + "\n");
}

export function parseDelayList(text) {
    if (text === undefined || text === null || String(text).trim() === "") return [];
    return String(text)
        .split(",")
        .map((part) => {
            const n = Number(part.trim());
            if (!Number.isFinite(n) || n < 0) throw new Error(`bad retry delay: ${part}`);
            return n;
        });
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (chunk) => {
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                reject(new Error("body too large"));
                req.destroy();
                return;
            }
            chunks.push(chunk);
        });
        req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        req.on("error", reject);
    });
}

function sendJson(res, status, body) {
    const text = JSON.stringify(body);
    res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
    });
    res.end(text);
}

/**
 * The heartbeat URL of a task: its callback URL with `/heartbeat` inserted before the query
 * string (`https://h/callbacks/r/w?token=T` → `https://h/callbacks/r/w/heartbeat?token=T`).
 */
export function heartbeatUrl(callbackUrl) {
    const url = String(callbackUrl);
    const q = url.search(/[?#]/);
    const base = q < 0 ? url : url.slice(0, q);
    const rest = q < 0 ? "" : url.slice(q);
    return `${base}${base.endsWith("/") ? "" : "/"}heartbeat${rest}`;
}

/** A heartbeat's body: the progress so far, and a deadline extension of three periods. */
export function buildHeartbeatPayload(elapsedMs, delayMs, heartbeatMs) {
    return {
        progress: { elapsed_ms: elapsedMs, delay_ms: delayMs },
        extend_seconds: Math.max(1, Math.ceil((3 * heartbeatMs) / 1000)),
    };
}

/** The callback payload, exactly as the Worker receives it. */
export function buildCallbackPayload(taskId, body, now = new Date()) {
    if (body.fail === true) {
        const error =
            typeof body.fail_message === "string" && body.fail_message !== ""
                ? body.fail_message
                : "task failed in daemon";
        return { task_id: taskId, success: false, error };
    }
    const { callback_url: _ignored, ...input } = body;
    const data = { task_id: taskId };
    if (body.result !== undefined) data.result = body.result;
    data.input = input;
    data.finished_at = now.toISOString();
    return { task_id: taskId, success: true, data };
}

/**
 * Starts the daemon. Resolves once it listens.
 * @returns {Promise<{url: string, port: number, stats: () => object, close: () => Promise<void>}>}
 */
export async function startDaemon({
    port = 0,
    host = "127.0.0.1",
    delayMs = DEFAULT_DELAY_MS,
    retryDelaysMs = DEFAULT_RETRY_DELAYS_MS,
    callbackTimeoutMs = DEFAULT_CALLBACK_TIMEOUT_MS,
    heartbeatMs = DEFAULT_HEARTBEAT_MS,
    log = defaultLog,
} = {}) {
    if (!Number.isFinite(callbackTimeoutMs) || callbackTimeoutMs <= 0) {
        throw new Error(`bad callbackTimeoutMs: ${callbackTimeoutMs}`);
    }
    if (!Number.isFinite(heartbeatMs) || heartbeatMs < 0) throw new Error(`bad heartbeatMs: ${heartbeatMs}`);
    const emit = typeof log === "function" ? log : () => {};
    const tasks = new Map(); // task_id -> record, in arrival order
    const timers = new Set();
    const inflight = new Set(); // AbortControllers of callback and heartbeat requests under way
    const intervals = new Set(); // heartbeat timers of running tasks
    let tasksReceived = 0;
    let closed = false;

    function sleep(ms) {
        return new Promise((resolve) => {
            if (closed) return resolve(false);
            const t = setTimeout(() => {
                timers.delete(t);
                resolve(true);
            }, ms);
            timers.add(t);
            // Lets `close()` end the wait early.
            t.cancel = () => resolve(false);
        });
    }

    /** POSTs `payload` as JSON; rejects with `timedOut: true` after the callback timeout. */
    async function postJson(url, payload) {
        const controller = new AbortController();
        inflight.add(controller);
        const timeout = setTimeout(() => {
            const err = new Error(`timed out after ${callbackTimeoutMs} ms`);
            err.timedOut = true;
            controller.abort(err);
        }, callbackTimeoutMs);
        try {
            const res = await fetch(url, {
                method: "POST",
                headers: { "content-type": "application/json" },
                body: JSON.stringify(payload),
                signal: controller.signal,
            });
            const text = await res.text();
            return { status: res.status, text };
        } finally {
            clearTimeout(timeout);
            inflight.delete(controller);
        }
    }

    async function deliver(record, callbackUrl, payload) {
        const waits = [0, ...retryDelaysMs]; // wait before each attempt
        for (let i = 0; i < waits.length; i++) {
            if (waits[i] > 0 && !(await sleep(waits[i]))) return;
            if (closed) return;
            record.attempts += 1;
            const attempt = record.attempts;
            const at = new Date().toISOString();
            try {
                const { status, text } = await postJson(callbackUrl, payload);
                record.last_status = status;
                emit({ event: "callback_attempt", task_id: record.task_id, attempt, status, at });
                if (status >= 200 && status < 300) {
                    record.delivered = true;
                    record.last_error = null;
                    try {
                        record.response = text === "" ? null : JSON.parse(text);
                    } catch {
                        record.response = text;
                    }
                    emit({
                        event: "callback_delivered",
                        task_id: record.task_id,
                        attempts: attempt,
                        status,
                        at: new Date().toISOString(),
                    });
                    return;
                }
                record.last_error = `HTTP ${status}`;
            } catch (err) {
                if (closed) return;
                const message = errorText(err);
                record.last_error = message;
                const event = { event: "callback_attempt", task_id: record.task_id, attempt, error: message, at };
                if (err?.timedOut) event.timed_out = true;
                emit(event);
            }
        }
        record.gave_up = true;
        emit({
            event: "callback_gave_up",
            task_id: record.task_id,
            attempts: record.attempts,
            last_status: record.last_status,
            last_error: record.last_error,
            at: new Date().toISOString(),
        });
    }

    async function sendHeartbeat(record, url, payload) {
        record.heartbeats += 1;
        const n = record.heartbeats;
        const at = new Date().toISOString();
        try {
            const { status, text } = await postJson(url, payload);
            record.last_heartbeat_status = status;
            if (status >= 200 && status < 300) {
                record.heartbeats_ok += 1;
                record.last_heartbeat_error = null;
                let answer = null;
                try {
                    answer = text === "" ? null : JSON.parse(text);
                } catch {
                    answer = text;
                }
                record.last_heartbeat_response = answer;
                // The wait's URLs, signed with its new deadline, from now on.
                if (typeof answer?.callback_url === "string") record.callback_url = answer.callback_url;
                if (typeof answer?.heartbeat_url === "string") record.heartbeat_url = answer.heartbeat_url;
                emit({ event: "heartbeat", task_id: record.task_id, heartbeat: n, status, at });
                return;
            }
            record.heartbeats_failed += 1;
            record.last_heartbeat_error = `HTTP ${status}`;
            emit({ event: "heartbeat_failed", task_id: record.task_id, heartbeat: n, status, at });
        } catch (err) {
            if (closed) return;
            record.heartbeats_failed += 1;
            record.last_heartbeat_error = errorText(err);
            const event = { event: "heartbeat_failed", task_id: record.task_id, heartbeat: n, error: record.last_heartbeat_error, at };
            if (err?.timedOut) event.timed_out = true;
            emit(event);
        }
    }

    /** Heartbeats every `every` ms until the returned stop function is called. */
    function startHeartbeats(record, callbackUrl, delay, every) {
        record.heartbeat_url = heartbeatUrl(callbackUrl);
        const started = Date.now();
        let current = null; // one heartbeat at a time: a slow receiver is not piled on
        const timer = setInterval(() => {
            if (closed || current) return;
            const elapsed = Math.min(Date.now() - started, delay);
            current = sendHeartbeat(record, record.heartbeat_url, buildHeartbeatPayload(elapsed, delay, every))
                .catch(() => {})
                .finally(() => {
                    current = null;
                });
        }, every);
        intervals.add(timer);
        // Stops the heartbeats; resolves once the one under way (if any) has been answered, so
        // that the callback never overtakes it.
        return async () => {
            clearInterval(timer);
            intervals.delete(timer);
            if (current) await current;
        };
    }

    async function runTask(record, body) {
        const wait = typeof body.delay_ms === "number" && body.delay_ms >= 0 ? body.delay_ms : delayMs;
        const every = typeof body.heartbeat_ms === "number" && body.heartbeat_ms >= 0 ? body.heartbeat_ms : heartbeatMs;
        record.heartbeat_ms = every;
        const stopHeartbeats = every > 0 && wait > 0 ? startHeartbeats(record, body.callback_url, wait, every) : async () => {};
        try {
            if (wait > 0 && !(await sleep(wait))) return;
        } finally {
            await stopHeartbeats();
        }
        if (closed) return;
        const payload = buildCallbackPayload(record.task_id, body);
        await deliver(record, record.callback_url, payload);
    }

    const server = http.createServer(async (req, res) => {
        try {
            const path = new URL(req.url, "http://daemon").pathname;
            if (req.method === "GET" && path === "/stats") {
                return sendJson(res, 200, stats());
            }
            if (req.method !== "POST") {
                return sendJson(res, 405, { success: false, error: "use POST with a JSON body" });
            }
            let body;
            try {
                body = JSON.parse(await readBody(req));
            } catch {
                return sendJson(res, 400, { success: false, error: "body must be JSON" });
            }
            if (body === null || typeof body !== "object" || Array.isArray(body)) {
                return sendJson(res, 400, { success: false, error: "body must be a JSON object" });
            }
            if (typeof body.callback_url !== "string" || body.callback_url === "") {
                return sendJson(res, 400, { success: false, error: "callback_url missing" });
            }
            tasksReceived += 1;
            const taskId = `task-${randomBytes(8).toString("hex")}`;
            const record = {
                task_id: taskId,
                path,
                callback_url: body.callback_url,
                received_at: new Date().toISOString(),
                attempts: 0,
                delivered: false,
                gave_up: false,
                last_status: null,
                last_error: null,
                response: null,
                heartbeat_ms: 0,
                heartbeat_url: null,
                heartbeats: 0,
                heartbeats_ok: 0,
                heartbeats_failed: 0,
                last_heartbeat_status: null,
                last_heartbeat_error: null,
                last_heartbeat_response: null,
            };
            tasks.set(taskId, record);
            emit({ event: "task_received", task_id: taskId, path, at: record.received_at });
            sendJson(res, 200, { success: true, pending: true, task_id: taskId });
            runTask(record, body).catch((err) => {
                emit({ event: "task_error", task_id: taskId, error: String(err?.message ?? err) });
            });
        } catch (err) {
            if (!res.headersSent) sendJson(res, 500, { success: false, error: String(err?.message ?? err) });
        }
    });

    function stats() {
        return {
            tasks_received: tasksReceived,
            tasks: [...tasks.values()].map((t) => ({ ...t })),
        };
    }

    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
            server.off("error", reject);
            resolve();
        });
    });
    const actualPort = server.address().port;
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;

    async function close() {
        if (closed) return;
        closed = true;
        for (const t of intervals) clearInterval(t);
        intervals.clear();
        for (const t of timers) {
            clearTimeout(t);
            t.cancel?.();
        }
        timers.clear();
        for (const c of inflight) c.abort(new Error("daemon closing"));
        await new Promise((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections?.();
        });
    }

    return { url, port: actualPort, stats, close };
}

function errorText(err) {
    if (err?.timedOut) return err.message;
    return err?.cause?.code || err?.cause?.message || err?.message || String(err);
}

function parseArgs(argv) {
    const opts = {};
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
        const value = () => {
            if (inline !== undefined) return inline;
            i += 1;
            if (i >= argv.length) throw new Error(`${flag} needs a value`);
            return argv[i];
        };
        switch (flag) {
            case "--port":
                opts.port = Number(value());
                break;
            case "--host":
                opts.host = value();
                break;
            case "--delay-ms":
                opts.delayMs = Number(value());
                break;
            case "--retry-delays-ms":
                opts.retryDelaysMs = parseDelayList(value());
                break;
            case "--callback-timeout-ms":
                opts.callbackTimeoutMs = Number(value());
                break;
            case "--heartbeat-ms":
                opts.heartbeatMs = Number(value());
                break;
            case "--quiet":
                opts.quiet = true;
                break;
            case "-h":
            case "--help":
                opts.help = true;
                break;
            default:
                throw new Error(`unknown argument: ${arg}`);
        }
    }
    return opts;
}

const USAGE = `usage: node daemon/daemon.mjs [--port N] [--host H] [--delay-ms MS] [--retry-delays-ms 0,1000,5000,30000]
                              [--callback-timeout-ms MS] [--heartbeat-ms MS] [--quiet]
  --delay-ms             how long a task runs before its callback (default ${DEFAULT_DELAY_MS}; a task's delay_ms wins)
  --retry-delays-ms      waits before each callback retry (default ${DEFAULT_RETRY_DELAYS_MS.join(",")})
  --callback-timeout-ms  an attempt unanswered this long counts as failed and is retried (default ${DEFAULT_CALLBACK_TIMEOUT_MS})
  --heartbeat-ms         while a task runs, POST {progress, extend_seconds} to its callback URL's /heartbeat
                         this often (default 0: off; a task's heartbeat_ms wins)
  env: DAEMON_PORT, DAEMON_DELAY_MS, DAEMON_RETRY_DELAYS_MS, DAEMON_CALLBACK_TIMEOUT_MS, DAEMON_HEARTBEAT_MS (flags win)`;

async function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
    } catch (err) {
        console.error(`${err.message}\n${USAGE}`);
        process.exit(2);
    }
    if (opts.help) {
        console.log(USAGE);
        return;
    }
    const env = process.env;
    const port = opts.port ?? (env.DAEMON_PORT ? Number(env.DAEMON_PORT) : 8790);
    const delayMs = opts.delayMs ?? (env.DAEMON_DELAY_MS ? Number(env.DAEMON_DELAY_MS) : DEFAULT_DELAY_MS);
    const retryDelaysMs =
        opts.retryDelaysMs ??
        (env.DAEMON_RETRY_DELAYS_MS !== undefined ? parseDelayList(env.DAEMON_RETRY_DELAYS_MS) : DEFAULT_RETRY_DELAYS_MS);
    const callbackTimeoutMs =
        opts.callbackTimeoutMs ??
        (env.DAEMON_CALLBACK_TIMEOUT_MS ? Number(env.DAEMON_CALLBACK_TIMEOUT_MS) : DEFAULT_CALLBACK_TIMEOUT_MS);
    const heartbeatMs = opts.heartbeatMs ?? (env.DAEMON_HEARTBEAT_MS ? Number(env.DAEMON_HEARTBEAT_MS) : DEFAULT_HEARTBEAT_MS);
    for (const [name, v, min] of [
        ["port", port, 0],
        ["delay-ms", delayMs, 0],
        ["callback-timeout-ms", callbackTimeoutMs, 1],
        ["heartbeat-ms", heartbeatMs, 0],
    ]) {
        if (!Number.isInteger(v) || v < min) {
            console.error(`bad --${name}: ${v}\n${USAGE}`);
            process.exit(2);
        }
    }
    const daemon = await startDaemon({
        port,
        host: opts.host ?? "127.0.0.1",
        delayMs,
        retryDelaysMs,
        callbackTimeoutMs,
        heartbeatMs,
        log: opts.quiet ? null : defaultLog,
    });
    console.log(
        JSON.stringify({
            event: "listening",
            url: daemon.url,
            delay_ms: delayMs,
            retry_delays_ms: retryDelaysMs,
            callback_timeout_ms: callbackTimeoutMs,
            heartbeat_ms: heartbeatMs,
        }),
    );
    console.error(`daemon listening on ${daemon.url}`);
    const stop = async () => {
        await daemon.close();
        process.exit(0);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
    main().catch((err) => {
        console.error(err);
        process.exit(1);
    });
}
