#!/usr/bin/env node
// End-to-end benchmark of the built Worker (build/index.js + build/index_bg.wasm) running in
// workerd through Miniflare, with local KV and the per-run Durable Object, real loopback
// components and the reference daemon:
//
//   (a) trigger → completion latency of a 50-node in-process graph
//   (b) pause → daemon callback → completion with the reference daemon (delayMs 0)
//   (c) 1,000 runs paused, then resumed concurrently: throughput, none lost, none twice
//   (d) KV operations per request: the x-arcrun-kv-ops header against a count at the binding
//   (e) bytes: a paused run's stored record against its context and node outputs; FOREACH
//       response size at 100 and 1,000 items
//   (f) bundle: raw and gzip size of build/index_bg.wasm
//
//   node bench/e2e.mjs [--smoke] [--json <path>]
//
// Prints a table of figure / value / budget / verdict; --json also writes the results.

import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";

import { REPO_ROOT, freePort, startComponent, startWorker } from "../tests/e2e/harness.mjs";
import { startDaemon } from "../daemon/daemon.mjs";

const KV_HEADER = "x-arcrun-kv-ops";
const GZIP_BUDGET_BYTES = 400 * 1024;
const STORED_OVERHEAD_BUDGET = 1.5;
const LINEAR_RATIO_BUDGET = 11;

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

function parseArgs(argv) {
    const opts = { smoke: false, json: null };
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        if (arg === "--smoke") opts.smoke = true;
        else if (arg === "--json") {
            opts.json = argv[++i];
            if (!opts.json) throw new Error("--json needs a path");
        } else if (arg.startsWith("--json=")) opts.json = arg.slice("--json=".length);
        else throw new Error(`unknown argument: ${arg}\nusage: node bench/e2e.mjs [--smoke] [--json <path>]`);
    }
    return opts;
}

const SIZES = {
    full: {
        latencyRuns: 200,
        latencyWarmup: 20,
        cycles: 100,
        cycleWarmup: 5,
        concurrentRuns: 1000,
        concurrency: 50,
        foreachItems: [100, 1000],
    },
    smoke: {
        latencyRuns: 10,
        latencyWarmup: 2,
        cycles: 3,
        cycleWarmup: 1,
        concurrentRuns: 20,
        concurrency: 5,
        foreachItems: [10, 100],
    },
};

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

const now = () => performance.now();

function percentile(values, q) {
    if (values.length === 0) return NaN;
    const sorted = [...values].sort((a, b) => a - b);
    const rank = Math.ceil(sorted.length * q);
    return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

function summary(values) {
    return {
        n: values.length,
        p50: percentile(values, 0.5),
        p95: percentile(values, 0.95),
        min: Math.min(...values),
        max: Math.max(...values),
    };
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results keep item order. */
async function pool(items, limit, fn) {
    const results = new Array(items.length);
    let next = 0;
    async function lane() {
        while (next < items.length) {
            const i = next++;
            results[i] = await fn(items[i], i);
        }
    }
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
    return results;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

async function postJson(url, body) {
    const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
    });
    const text = await res.text();
    let parsed = null;
    try {
        parsed = JSON.parse(text);
    } catch {
        // keep the text
    }
    return { status: res.status, headers: res.headers, body: parsed, text };
}

function parseKvHeader(value) {
    const ops = { reads: NaN, writes: NaN, lists: NaN };
    for (const part of String(value ?? "").split(";")) {
        const [k, v] = part.split("=");
        if (k?.trim() in ops) ops[k.trim()] = Number(v);
    }
    return ops;
}

function expect(condition, message) {
    if (!condition) throw new Error(message);
}

const bytesOf = (value) => Buffer.byteLength(typeof value === "string" ? value : JSON.stringify(value));

function fmtMs(ms) {
    if (!Number.isFinite(ms)) return "n/a";
    return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

function fmtInt(n) {
    return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a";
}

// ---------------------------------------------------------------------------------------
// Figures and the report
// ---------------------------------------------------------------------------------------

class Figures {
    constructor() {
        this.rows = [];
    }

    /**
     * Records a figure. `pass` is true/false when there is a budget, null when the figure is
     * information only.
     */
    add(section, id, figure, { value, unit, display, budget = null, pass = null }) {
        const row = { section, id, figure, value, unit, display, budget, pass };
        this.rows.push(row);
        const verdict = pass === null ? "" : pass ? "  PASS" : "  FAIL";
        console.error(`[e2e] (${section}) ${figure}: ${display}${budget ? ` (budget ${budget})` : ""}${verdict}`);
        return row;
    }

    failures() {
        return this.rows.filter((r) => r.pass === false).map((r) => `(${r.section}) ${r.figure}: ${r.display}`);
    }

    markdown() {
        const header = ["", "figure", "value", "budget", "verdict"];
        const rows = this.rows.map((r) => [
            `(${r.section})`,
            r.figure,
            r.display,
            r.budget ?? "—",
            r.pass === null ? "info" : r.pass ? "PASS" : "FAIL",
        ]);
        const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
        const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
        return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n") + "\n";
    }
}

// ---------------------------------------------------------------------------------------
// Graphs
// ---------------------------------------------------------------------------------------

/** Input → in-process components (templated pass-throughs; every 8th an IF_CONTROL gate
 * whose ON_TRUE edge carries on) → Output: `totalNodes` nodes in all. */
function inProcessGraph(totalNodes) {
    const nodes = [{ id: "in", type: "Input", data: { trace_id: "{{request.id}}" } }];
    const edges = [];
    const link = (from, to) =>
        edges.push({ from: from.id, to: to.id, type: from.componentId === "if_control" ? "ON_TRUE" : "PIPE" });
    for (let i = 1; i <= totalNodes - 2; i++) {
        const node =
            i % 8 === 0
                ? { id: `n${i}`, type: "Component", componentId: "if_control", data: { condition: "step >= 0" } }
                : {
                      id: `n${i}`,
                      type: "Component",
                      componentId: "comp_passthrough",
                      data: { step: i, label: `{{request.topic}} step ${i} for {{user.name}}` },
                  };
        link(nodes.at(-1), node);
        nodes.push(node);
    }
    const out = { id: "out", type: "Output", data: { summary: "{{label}}", trace_id: "{{trace_id}}" } };
    link(nodes.at(-1), out);
    nodes.push(out);
    return { id: "in-process", name: `${nodes.length}-node in-process graph`, nodes, edges };
}

/** Input → one remote component → an in-process step → Output. */
function oneRemoteStep(componentUrl) {
    return {
        id: "one-remote",
        nodes: [
            { id: "in", type: "Input" },
            { id: "remote", type: "Component", componentId: componentUrl, data: { prompt: "{{topic}}" } },
            { id: "after", type: "Component", componentId: "comp_passthrough", data: { got: "{{remote.data.result}}" } },
            { id: "out", type: "Output" },
        ],
        edges: [
            { from: "in", to: "remote", type: "PIPE" },
            { from: "remote", to: "after", type: "ON_SUCCESS" },
            { from: "after", to: "out", type: "PIPE" },
        ],
    };
}

/** Input → pending component → counting component → Output. */
function parkThenCount(parkUrl, countUrl) {
    return {
        id: "park-count",
        nodes: [
            { id: "in", type: "Input" },
            { id: "park", type: "Component", componentId: parkUrl },
            { id: "count", type: "Component", componentId: countUrl },
            { id: "out", type: "Output", data: { answer: "{{park.data.answer}}" } },
        ],
        edges: [
            { from: "in", to: "park", type: "PIPE" },
            { from: "park", to: "count", type: "ON_SUCCESS" },
            { from: "count", to: "out", type: "PIPE" },
        ],
    };
}

function foreachGraph() {
    return {
        id: "foreach",
        nodes: [
            { id: "in", type: "Input" },
            { id: "list", type: "Component", componentId: "comp_passthrough" },
            {
                id: "each",
                type: "Component",
                componentId: "comp_passthrough",
                data: { label: "#{{index}} {{item.name}}", sku: "{{item.sku}}" },
            },
            { id: "out", type: "Output" },
        ],
        edges: [
            { from: "in", to: "list", type: "PIPE" },
            { from: "list", to: "each", type: "FOREACH", items: "items", iterator: "item" },
            { from: "each", to: "out", type: "PIPE" },
        ],
    };
}

const words = (n, seed) =>
    range(n)
        .map((i) => ["order", "refund", "shipping", "invoice", "account", "delay", "item", "support"][(i * 7 + seed) % 8])
        .join(" ");

/** A support-ticket triage run: sizable ticket context, two lookups in parallel, a prompt
 * built from both, then an LLM draft that answers pending — where the run pauses. */
function triageScenario(urls) {
    const context = {
        ticket: {
            id: "T-48213",
            subject: "Refund for a delayed order that arrived damaged",
            body: words(600, 1),
            channel: "email",
            created_at: "2024-11-20T08:14:00Z",
            attachments: range(4).map((i) => ({
                name: `photo-${i}.jpg`,
                bytes: 180_000 + i * 1000,
                url: `https://files.example.com/t/48213/${i}`,
            })),
        },
        customer: {
            id: "c-1029",
            name: "Ada Lovelace",
            email: "ada@example.com",
            plan: "business",
            locale: "en-GB",
            orders: range(8).map((i) => ({ id: `o-${5500 + i}`, total: 40 + i * 12.5, status: i ? "delivered" : "delayed" })),
        },
        history: range(10).map((i) => ({ from: i % 2 ? "agent" : "customer", at: `2024-11-1${i}T10:00:00Z`, text: words(30, i) })),
    };
    const graph = {
        id: "triage",
        name: "support ticket triage",
        nodes: [
            { id: "in", type: "Input" },
            { id: "classify", type: "Component", componentId: urls.classify, data: { text: "{{ticket.subject}}" } },
            { id: "retrieve", type: "Component", componentId: urls.retrieve, data: { query: "{{ticket.subject}}", k: 5 } },
            {
                id: "prompt",
                type: "Component",
                componentId: "comp_passthrough",
                data: {
                    prompt:
                        "You are a support agent. Customer: {{customer.name}} ({{customer.plan}}).\n" +
                        "Ticket {{ticket.id}}: {{ticket.subject}}\n{{ticket.body}}\n" +
                        "Category: {{classify.category}}. Relevant articles: {{retrieve.articles}}",
                },
            },
            { id: "draft", type: "Component", componentId: urls.draft, data: { max_tokens: 800 } },
            { id: "review", type: "Component", componentId: "comp_passthrough", data: { reviewed: true } },
            { id: "out", type: "Output", data: { reply: "{{draft.data.text}}" } },
        ],
        edges: [
            { from: "in", to: "classify", type: "PIPE" },
            { from: "in", to: "retrieve", type: "PIPE" },
            { from: "classify", to: "prompt", type: "PIPE" },
            { from: "retrieve", to: "prompt", type: "PIPE" },
            { from: "prompt", to: "draft", type: "PIPE" },
            { from: "draft", to: "review", type: "ON_SUCCESS" },
            { from: "review", to: "out", type: "PIPE" },
        ],
    };
    return { graph, context };
}

// ---------------------------------------------------------------------------------------
// (a) trigger → completion latency
// ---------------------------------------------------------------------------------------

async function benchTriggerLatency(worker, figures, sizes) {
    const graph = inProcessGraph(50);
    const context = { request: { id: "req-1", topic: "latency" }, user: { name: "Ada" } };
    const once = async () => {
        const t0 = now();
        const res = await worker.fetchJson("/execute", { body: { graph, context } });
        const ms = now() - t0;
        expect(res.status === 200 && res.body?.status === "completed", `(a) run did not complete: ${res.text.slice(0, 300)}`);
        return ms;
    };
    for (let i = 0; i < sizes.latencyWarmup; i++) await once();
    const samples = [];
    for (let i = 0; i < sizes.latencyRuns; i++) samples.push(await once());
    const s = summary(samples);
    const label = `trigger → completed, ${graph.nodes.length}-node in-process graph (${s.n} runs)`;
    figures.add("a", "latency_p50", `${label}: p50`, { value: s.p50, unit: "ms", display: fmtMs(s.p50) });
    figures.add("a", "latency_p95", `${label}: p95`, { value: s.p95, unit: "ms", display: fmtMs(s.p95) });
    return { nodes: graph.nodes.length, ...s };
}

// ---------------------------------------------------------------------------------------
// (b) pause → daemon callback → completion
// ---------------------------------------------------------------------------------------

/**
 * Times every request this process makes to a callback URL, the reference daemon's
 * included: from the call until the response body has been read. Undo with restore().
 */
function timeCallbackRequests() {
    const original = globalThis.fetch;
    const records = [];
    globalThis.fetch = async (input, init) => {
        const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
        if (!new URL(url).pathname.startsWith("/callbacks/")) return original(input, init);
        const start = now();
        const res = await original(input, init);
        const body = await res.arrayBuffer();
        const end = now();
        records.push({ runId: new URL(url).pathname.split("/")[2], start, end, status: res.status });
        return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    };
    return {
        records,
        restore() {
            globalThis.fetch = original;
        },
    };
}

async function benchDaemonCycle(worker, figures, sizes) {
    const waiting = new Map(); // task_id → resolve
    const delivered = new Map(); // task_id → event
    const daemon = await startDaemon({
        delayMs: 0,
        retryDelaysMs: [100, 500, 2000],
        log: (event) => {
            if (event.event !== "callback_delivered" && event.event !== "callback_gave_up") return;
            delivered.set(event.task_id, event);
            waiting.get(event.task_id)?.(event);
        },
    });
    const timing = timeCallbackRequests();
    const whenDelivered = (taskId) =>
        delivered.has(taskId)
            ? Promise.resolve(delivered.get(taskId))
            : new Promise((resolve, reject) => {
                  const timer = setTimeout(() => reject(new Error(`(b) no callback for ${taskId} within 30 s`)), 30_000);
                  waiting.set(taskId, (e) => {
                      clearTimeout(timer);
                      resolve(e);
                  });
              });
    const graph = oneRemoteStep(daemon.url);
    const cycles = [];
    const callbacks = [];
    let retried = 0;
    try {
        for (let i = 0; i < sizes.cycleWarmup + sizes.cycles; i++) {
            const t0 = now();
            const trigger = await worker.fetchJson("/execute", { body: { graph, context: { topic: `cycle ${i}` } } });
            expect(trigger.body?.status === "paused", `(b) trigger did not pause: ${trigger.text.slice(0, 300)}`);
            const event = await whenDelivered(trigger.body.task_id);
            expect(event.event === "callback_delivered", `(b) the daemon gave up on ${trigger.body.task_id}`);
            const task = daemon.stats().tasks.find((t) => t.task_id === trigger.body.task_id);
            expect(task.response?.status === "completed", `(b) the callback did not complete the run`);
            const attempts = timing.records.filter((r) => r.runId === trigger.body.run_id);
            const last = attempts.at(-1);
            if (i < sizes.cycleWarmup) continue;
            if (attempts.length > 1) retried += 1;
            cycles.push(last.end - t0);
            callbacks.push(last.end - last.start);
        }
    } finally {
        timing.restore();
        await daemon.close();
    }
    const cycle = summary(cycles);
    const callback = summary(callbacks);
    const n = `${cycle.n} cycles`;
    figures.add("b", "cycle_p50", `trigger → pause → daemon callback answered (completed), ${n}: p50`, {
        value: cycle.p50,
        unit: "ms",
        display: fmtMs(cycle.p50),
    });
    figures.add("b", "cycle_p95", `trigger → pause → daemon callback answered (completed), ${n}: p95`, {
        value: cycle.p95,
        unit: "ms",
        display: fmtMs(cycle.p95),
    });
    figures.add("b", "callback_p50", `callback request alone (daemon → Worker → completed): p50`, {
        value: callback.p50,
        unit: "ms",
        display: fmtMs(callback.p50),
    });
    figures.add("b", "callback_p95", `callback request alone (daemon → Worker → completed): p95`, {
        value: callback.p95,
        unit: "ms",
        display: fmtMs(callback.p95),
    });
    figures.add("b", "callback_retries", "cycles whose callback needed a retry", {
        value: retried,
        unit: "cycles",
        display: String(retried),
        budget: "0",
        pass: retried === 0,
    });
    return { cycle, callback, retried };
}

// ---------------------------------------------------------------------------------------
// (c) many paused runs resumed concurrently
// ---------------------------------------------------------------------------------------

async function benchConcurrentResume(worker, figures, sizes) {
    const runs = sizes.concurrentRuns;
    const limit = sizes.concurrency;
    const parked = new Map(); // seq → {task_id, callback_url}
    const parker = await startComponent((body) => {
        const task_id = `park-${body.seq}`;
        parked.set(body.seq, { task_id, callback_url: body.callback_url });
        return { pending: true, task_id };
    });
    const hits = new Map(); // seq → count
    const counter = await startComponent((body) => {
        hits.set(body.seq, (hits.get(body.seq) ?? 0) + 1);
        return { counted: true };
    });
    try {
        const graph = parkThenCount(`${parker.url}/park`, `${counter.url}/count`);
        const seqs = range(runs);

        let t0 = now();
        const runIds = await pool(seqs, limit, async (seq) => {
            const res = await worker.fetchJson("/execute", { body: { graph, context: { seq } } });
            expect(res.body?.status === "paused", `(c) run ${seq} did not pause: ${res.text.slice(0, 300)}`);
            return res.body.run_id;
        });
        const pauseSecs = (now() - t0) / 1000;
        expect(parked.size === runs, `(c) ${parked.size} of ${runs} runs reached the pending component`);

        t0 = now();
        const latencies = [];
        const resumed = await pool(seqs, limit, async (seq) => {
            const { task_id, callback_url } = parked.get(seq);
            const t = now();
            const res = await postJson(callback_url, { task_id, success: true, data: { answer: seq } });
            latencies.push(now() - t);
            return res.status === 200 && res.body?.status === "completed" && res.body?.resumed === true;
        });
        const resumeSecs = (now() - t0) / 1000;

        const states = await pool(seqs, limit, async (seq) => {
            const res = await worker.fetchJson(`/runs/${runIds[seq]}`);
            return res.body?.status;
        });
        const hitsAfterResume = seqs.map((seq) => hits.get(seq) ?? 0);

        const resent = await pool(seqs, limit, async (seq) => {
            const { task_id, callback_url } = parked.get(seq);
            const res = await postJson(callback_url, { task_id, success: true, data: { answer: -1 } });
            return res.body?.noop === true && res.body?.reason === "already_resumed";
        });
        const extraHits = seqs.reduce((n, seq) => n + (hits.get(seq) ?? 0), 0) - hitsAfterResume.reduce((a, b) => a + b, 0);

        const completed = states.filter((s) => s === "completed").length;
        const answeredCompleted = resumed.filter(Boolean).length;
        const counted = hitsAfterResume.filter((h) => h === 1).length;
        const twice = hitsAfterResume.filter((h) => h > 1).length;
        const noops = resent.filter(Boolean).length;
        const lat = summary(latencies);

        figures.add("c", "pause_throughput", `${runs} triggers that pause, ${limit} in flight`, {
            value: runs / pauseSecs,
            unit: "runs/s",
            display: `${(runs / pauseSecs).toFixed(0)} runs/s`,
        });
        figures.add("c", "resume_throughput", `${runs} callbacks resuming to completion, ${limit} in flight`, {
            value: runs / resumeSecs,
            unit: "runs/s",
            display: `${(runs / resumeSecs).toFixed(0)} runs/s`,
        });
        figures.add("c", "resume_latency", `callback latency under that load: p50 / p95`, {
            value: lat.p50,
            unit: "ms",
            display: `${fmtMs(lat.p50)} / ${fmtMs(lat.p95)}`,
        });
        figures.add("c", "completed", "runs reading `completed` via GET /runs/{id}", {
            value: completed,
            unit: "runs",
            display: `${completed} / ${runs}`,
            budget: `${runs} / ${runs}`,
            pass: completed === runs && answeredCompleted === runs,
        });
        figures.add("c", "counted_once", "runs whose downstream component was hit exactly once", {
            value: counted,
            unit: "runs",
            display: `${counted} / ${runs} (twice or more: ${twice})`,
            budget: `${runs} / ${runs}`,
            pass: counted === runs && twice === 0,
        });
        figures.add("c", "resend_noop", "re-sent callbacks answered `noop: already_resumed`", {
            value: noops,
            unit: "callbacks",
            display: `${noops} / ${runs} (new downstream hits: ${extraHits})`,
            budget: `${runs} / ${runs}, 0 hits`,
            pass: noops === runs && extraHits === 0,
        });
        return { runs, limit, pauseSecs, resumeSecs, latency: lat, completed, answeredCompleted, counted, twice, noops, extraHits };
    } finally {
        await parker.close();
        await counter.close();
    }
}

// ---------------------------------------------------------------------------------------
// (d) KV operations per request
// ---------------------------------------------------------------------------------------

/** The built Worker behind bench/kv-probe.mjs, which counts KV calls at the binding. */
function startProbedWorker(persistDir, port) {
    return startWorker({
        scriptPath: "bench/kv-probe.mjs",
        persistDir,
        port,
        bindings: { COMPONENT_TIMEOUT_SECONDS: "30" },
        miniflare: {
            modulesRoot: REPO_ROOT,
            modulesRules: [
                { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
                { type: "CompiledWasm", include: ["**/*.wasm"] },
            ],
        },
    });
}

async function benchKvOps(figures) {
    const persistDir = await mkdtemp(path.join(os.tmpdir(), "arcrun-bench-kv-"));
    const parked = [];
    const parker = await startComponent((body) => {
        const task_id = `kv-${parked.length}`;
        parked.push({ task_id, callback_url: body.callback_url });
        return { pending: true, task_id };
    });
    // A fixed port: callback URLs handed out before the restart below must still reach it.
    const port = await freePort();
    let worker = await startProbedWorker(persistDir, port);
    const steps = [];
    /** Performs one request and compares its header with the binding's count. */
    async function step(label, send, writeBudget) {
        const before = (await worker.fetchJson("/__kv-probe")).body;
        const res = await send();
        const after = (await worker.fetchJson("/__kv-probe")).body;
        const actual = {
            reads: after.reads - before.reads,
            writes: after.writes - before.writes + (after.deletes - before.deletes),
            lists: after.lists - before.lists,
        };
        const header = parseKvHeader(res.headers.get(KV_HEADER));
        steps.push({ label, status: res.status, header, actual, writeBudget });
        return res;
    }
    try {
        const inProcess = inProcessGraph(10);
        const park = parkThenCount(`${parker.url}/park`, "comp_passthrough");
        const trigger = (graph, context) => () => worker.fetchJson("/execute", { body: { graph, context } });
        const callback = (i) => () => postJson(parked[i].callback_url, { task_id: parked[i].task_id, success: true, data: { answer: i } });

        await step("run that never pauses (POST /execute → completed)", trigger(inProcess, { request: { id: "r" } }), 1);
        const paused = await step("trigger that pauses (POST /execute → paused)", trigger(park, { seq: 0 }), 1);
        expect(paused.body?.status === "paused", `(d) trigger did not pause: ${paused.text.slice(0, 300)}`);
        await step("GET /runs/{id} of the paused run", () => worker.fetchJson(`/runs/${paused.body.run_id}`), null);
        const done = await step("callback that completes (gate warm)", callback(0), 1);
        expect(done.body?.status === "completed", `(d) callback did not complete: ${done.text.slice(0, 300)}`);
        await step("repeated callback (noop)", callback(0), 0);

        // A callback hours later usually finds its gate evicted: restart workerd on the same
        // state so that the Durable Object starts empty and must read the record from KV.
        const second = await step("trigger that pauses (second run)", trigger(park, { seq: 1 }), 1);
        await worker.stop();
        worker = await startProbedWorker(persistDir, port);
        await step("GET /runs/{id} (gate cold)", () => worker.fetchJson(`/runs/${second.body.run_id}`), null);
        const cold = await step("callback that completes (gate cold)", callback(1), 1);
        expect(cold.body?.status === "completed", `(d) cold callback did not complete: ${cold.text.slice(0, 300)}`);
    } finally {
        await worker.stop();
        await parker.close();
        await rm(persistDir, { recursive: true, force: true });
    }

    const show = (o) => `r${o.reads} w${o.writes} l${o.lists}`;
    for (const s of steps) {
        const within = s.writeBudget === null || s.actual.writes <= s.writeBudget;
        const budget =
            s.writeBudget === null ? "lists = 0" : s.writeBudget === 0 ? "0 writes, lists = 0" : `≤ ${s.writeBudget} write, lists = 0`;
        figures.add("d", `kv_${steps.indexOf(s)}`, `KV ops, ${s.label}`, {
            value: s.actual,
            unit: "ops",
            display: `${show(s.actual)} (header: ${show(s.header)})`,
            budget,
            pass: within && s.actual.lists === 0 && s.header.lists === 0,
        });
    }
    const mismatched = steps.filter(
        (s) => s.header.reads !== s.actual.reads || s.header.writes !== s.actual.writes || s.header.lists !== s.actual.lists,
    );
    figures.add("d", "kv_header_accuracy", "x-arcrun-kv-ops header equals the count at the binding", {
        value: steps.length - mismatched.length,
        unit: "requests",
        display: `${steps.length - mismatched.length} / ${steps.length} requests`,
        budget: `${steps.length} / ${steps.length}`,
        pass: mismatched.length === 0,
    });
    return steps;
}

// ---------------------------------------------------------------------------------------
// (e) bytes
// ---------------------------------------------------------------------------------------

/** Which part of a stored record takes how many bytes. */
function recordBreakdown(record) {
    const parts = { graph: 0, context: 0, done_outputs: 0, paused_ctx: 0, waiting_arrivals: 0, other_nodes: 0, trace: 0, waits: 0 };
    parts.graph = bytesOf(record.graph);
    parts.context = bytesOf(record.context);
    parts.trace = bytesOf(record.trace);
    parts.waits = bytesOf(record.waits) + bytesOf(record.resumed);
    for (const node of record.nodes) {
        if (node?.done) parts.done_outputs += bytesOf(node.done.output);
        else if (node?.paused) parts.paused_ctx += bytesOf(node.paused.ctx);
        else if (node?.waiting) parts.waiting_arrivals += bytesOf(node.waiting.arrivals);
        else parts.other_nodes += bytesOf(node);
    }
    return parts;
}

async function benchBytes(worker, figures, sizes) {
    const articles = range(5).map((i) => ({
        id: `kb-${100 + i}`,
        title: `How refunds work for ${["delayed", "damaged", "lost", "partial", "gift"][i]} orders`,
        snippet: words(110, i + 3),
        url: `https://help.example.com/articles/kb-${100 + i}`,
        score: 0.9 - i * 0.07,
    }));
    const classify = await startComponent(() => ({
        category: "refund",
        confidence: 0.93,
        labels: ["refund", "delay", "damage"],
        entities: range(12).map((i) => ({ type: i % 2 ? "order" : "product", text: `entity-${i}`, span: [i * 10, i * 10 + 8] })),
        rationale: words(80, 5),
    }));
    const retrieve = await startComponent(() => ({ articles, took_ms: 42 }));
    const draft = await startComponent(() => ({ pending: true, task_id: `draft-${Date.now()}` }));
    try {
        const { graph, context } = triageScenario({ classify: classify.url, retrieve: retrieve.url, draft: draft.url });
        const res = await worker.fetchJson("/execute", { body: { graph, context } });
        expect(res.body?.status === "paused", `(e) triage run did not pause: ${res.text.slice(0, 300)}`);
        const kv = await worker.mf.getKVNamespace("RUNS");
        const stored = await kv.get(`run:${res.body.run_id}`, "text");
        expect(stored, "(e) the paused run is not in KV");
        const record = JSON.parse(stored);
        const parts = recordBreakdown(record);
        const storedBytes = Buffer.byteLength(stored);
        const payload = parts.context + parts.done_outputs;
        const ratio = storedBytes / payload;
        figures.add("e", "paused_record_ratio", "stored paused run vs JSON of its context + node outputs", {
            value: ratio,
            unit: "×",
            display: `${ratio.toFixed(2)}× (${fmtInt(storedBytes)} B vs ${fmtInt(parts.context)} + ${fmtInt(parts.done_outputs)} B)`,
            budget: `≤ ${STORED_OVERHEAD_BUDGET}×`,
            pass: ratio <= STORED_OVERHEAD_BUDGET,
        });

        const foreach = {};
        for (const n of sizes.foreachItems) {
            const items = range(n).map((i) => ({ id: i, name: `item ${i}`, sku: `SKU-${String(i).padStart(6, "0")}` }));
            const r = await worker.fetchJson("/execute", { body: { graph: foreachGraph(), context: { batch: "b-1", items } } });
            expect(r.body?.status === "completed", `(e) FOREACH over ${n} did not complete: ${r.text.slice(0, 300)}`);
            const storedText = await kv.get(`run:${r.body.run_id}`, "text");
            foreach[n] = { response: Buffer.byteLength(r.text), stored: Buffer.byteLength(storedText) };
        }
        const [small, large] = sizes.foreachItems;
        const growth = foreach[large].response / foreach[small].response;
        figures.add("e", "foreach_response_growth", `FOREACH response size, ${fmtInt(large)} vs ${fmtInt(small)} items`, {
            value: growth,
            unit: "×",
            display: `${growth.toFixed(2)}× (${fmtInt(foreach[large].response)} B vs ${fmtInt(foreach[small].response)} B)`,
            budget: `≤ ${LINEAR_RATIO_BUDGET}× (linear)`,
            pass: growth <= LINEAR_RATIO_BUDGET,
        });
        const storedGrowth = foreach[large].stored / foreach[small].stored;
        figures.add("e", "foreach_stored_growth", `FOREACH stored record size, ${fmtInt(large)} vs ${fmtInt(small)} items`, {
            value: storedGrowth,
            unit: "×",
            display: `${storedGrowth.toFixed(2)}× (${fmtInt(foreach[large].stored)} B vs ${fmtInt(foreach[small].stored)} B)`,
            budget: `≤ ${LINEAR_RATIO_BUDGET}× (linear)`,
            pass: storedGrowth <= LINEAR_RATIO_BUDGET,
        });
        return { paused: { storedBytes, payloadBytes: payload, ratio, breakdown: parts }, foreach };
    } finally {
        await classify.close();
        await retrieve.close();
        await draft.close();
    }
}

/** Where the bytes of the stored paused record in (e) go. */
function breakdownMarkdown(paused) {
    const labels = {
        graph: "graph (as submitted)",
        context: "trigger context",
        done_outputs: "outputs of finished nodes",
        paused_ctx: "incoming context kept by the paused node",
        waiting_arrivals: "contexts kept by nodes waiting on other edges",
        other_nodes: "other node states",
        trace: "trace",
        waits: "waits and resumed waits",
    };
    const rows = Object.entries(paused.breakdown).map(([k, v]) => [
        labels[k] ?? k,
        fmtInt(v),
        `${((100 * v) / paused.storedBytes).toFixed(1)} %`,
    ]);
    rows.push(["total stored (incl. keys and punctuation)", fmtInt(paused.storedBytes), "100 %"]);
    const header = ["(e) stored paused record, by part", "bytes", "share"];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells) => `| ${cells.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(" | ")} |`;
    const rule = `| ${widths.map((w, i) => (i ? "-".repeat(w - 1) + ":" : "-".repeat(w))).join(" | ")} |`;
    return [line(header), rule, ...rows.map(line)].join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------
// (f) bundle
// ---------------------------------------------------------------------------------------

async function benchBundle(figures) {
    const wasm = await readFile(path.join(REPO_ROOT, "build", "index_bg.wasm"));
    const js = await readFile(path.join(REPO_ROOT, "build", "index.js"));
    const gz = gzipSync(wasm, { level: 9 }).length;
    figures.add("f", "wasm_raw", "build/index_bg.wasm, raw", {
        value: wasm.length,
        unit: "B",
        display: `${fmtInt(wasm.length)} B (${(wasm.length / 1024).toFixed(0)} KiB)`,
    });
    figures.add("f", "wasm_gzip", "build/index_bg.wasm, gzip -9", {
        value: gz,
        unit: "B",
        display: `${fmtInt(gz)} B (${(gz / 1024).toFixed(0)} KiB)`,
        budget: `≤ ${GZIP_BUDGET_BYTES / 1024} KiB`,
        pass: gz <= GZIP_BUDGET_BYTES,
    });
    figures.add("f", "js_raw", "build/index.js, raw", { value: js.length, unit: "B", display: `${fmtInt(js.length)} B` });
    const sha256 = createHash("sha256").update(wasm).digest("hex");
    return { wasmBytes: wasm.length, wasmGzipBytes: gz, jsBytes: js.length, wasmSha256: sha256 };
}

// ---------------------------------------------------------------------------------------

async function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
    } catch (err) {
        console.error(err.message);
        process.exit(2);
    }
    const sizes = opts.smoke ? SIZES.smoke : SIZES.full;
    const figures = new Figures();
    const details = {};
    const started = Date.now();

    details.bundle = await benchBundle(figures);

    const worker = await startWorker({ bindings: { COMPONENT_TIMEOUT_SECONDS: "30" } });
    try {
        details.latency = await benchTriggerLatency(worker, figures, sizes);
        details.daemon = await benchDaemonCycle(worker, figures, sizes);
        details.concurrent = await benchConcurrentResume(worker, figures, sizes);
        details.bytes = await benchBytes(worker, figures, sizes);
    } finally {
        await worker.stop();
    }
    details.kv = await benchKvOps(figures);

    const order = ["a", "b", "c", "d", "e", "f"];
    figures.rows.sort((x, y) => order.indexOf(x.section) - order.indexOf(y.section));
    const markdown = figures.markdown() + "\n" + breakdownMarkdown(details.bytes.paused);
    const failures = figures.failures();
    console.log(`\nend to end, built Worker in workerd${opts.smoke ? ", SMOKE" : ""} (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
    console.log(markdown);
    console.log(failures.length ? `budgets: MISSED\n  ${failures.join("\n  ")}` : "budgets: all met");

    if (opts.json) {
        const result = { suite: "e2e", smoke: opts.smoke, sizes, figures: figures.rows, details, failures, pass: failures.length === 0, markdown };
        await writeFile(opts.json, JSON.stringify(result, null, 2));
        console.error(`[e2e] wrote ${opts.json}`);
    }
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
