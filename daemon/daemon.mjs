#!/usr/bin/env node
// Reference task daemon: a stand-in for a real long-running component.
//
// It accepts a task over HTTP, answers at once that the work is pending, and later reports
// the outcome to the task's `callback_url`, retrying the callback the way a production
// daemon would when the receiver is down or answers with an error.
//
//   node daemon/daemon.mjs --port 8790 --delay-ms 3000 --retry-delays-ms 0,1000,5000,30000
//
// Importable too: `startDaemon({ port, host, delayMs, retryDelaysMs, log })`.
// No dependencies beyond Node itself.

import http from "node:http";
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";

export const DEFAULT_DELAY_MS = 2000;
/** Waits before each retry; the first attempt is made at once. */
export const DEFAULT_RETRY_DELAYS_MS = [0, 1000, 5000, 30000];
/** A callback attempt that takes longer than this counts as failed. */
const CALLBACK_TIMEOUT_MS = 10000;
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
    log = defaultLog,
} = {}) {
    const emit = typeof log === "function" ? log : () => {};
    const tasks = new Map(); // task_id -> record, in arrival order
    const timers = new Set();
    const inflight = new Set(); // AbortControllers of callback requests under way
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

    async function attemptCallback(url, payload) {
        const controller = new AbortController();
        inflight.add(controller);
        const timeout = setTimeout(() => controller.abort(new Error("callback timed out")), CALLBACK_TIMEOUT_MS);
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
                const { status, text } = await attemptCallback(callbackUrl, payload);
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
                const message = err?.cause?.code || err?.cause?.message || err?.message || String(err);
                record.last_error = message;
                emit({ event: "callback_attempt", task_id: record.task_id, attempt, error: message, at });
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

    async function runTask(record, body) {
        const wait = typeof body.delay_ms === "number" && body.delay_ms >= 0 ? body.delay_ms : delayMs;
        if (wait > 0 && !(await sleep(wait))) return;
        if (closed) return;
        const payload = buildCallbackPayload(record.task_id, body);
        await deliver(record, body.callback_url, payload);
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

const USAGE = `usage: node daemon/daemon.mjs [--port N] [--host H] [--delay-ms MS] [--retry-delays-ms 0,1000,5000,30000] [--quiet]
  env: DAEMON_PORT, DAEMON_DELAY_MS, DAEMON_RETRY_DELAYS_MS (flags win)`;

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
    for (const [name, v] of [["port", port], ["delay-ms", delayMs]]) {
        if (!Number.isInteger(v) || v < 0) {
            console.error(`bad --${name}: ${v}\n${USAGE}`);
            process.exit(2);
        }
    }
    const daemon = await startDaemon({
        port,
        host: opts.host ?? "127.0.0.1",
        delayMs,
        retryDelaysMs,
        log: opts.quiet ? null : defaultLog,
    });
    console.log(
        JSON.stringify({ event: "listening", url: daemon.url, delay_ms: delayMs, retry_delays_ms: retryDelaysMs }),
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
