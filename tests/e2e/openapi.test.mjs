// The OpenAPI document (public/openapi.json) and the graph schema (public/schema/graph.json),
// checked against the built Worker instead of hoped right:
//
// - the document lints clean (redocly) and every schema in it compiles under ajv's strict mode;
// - both files are served as static assets, unchanged and at no KV cost;
// - the graph schema agrees with the Worker's own validation on real graphs (taken from the other
//   end-to-end tests and tests/fixtures) and on broken ones;
// - every route and method is exercised, with every error status the Worker can be made to give,
//   and every answer is checked against the document (checkAgainstOpenApi in harness.mjs: path
//   template, method, status, headers, body schema); at the end every documented operation must
//   have been seen;
// - the fetch wrapper that checks every answer of every other end-to-end test (harness.mjs, on
//   unless ARCRUN_OPENAPI_CHECK=0) fails the request on an undocumented answer.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

import {
    REPO_ROOT,
    TEST_API_KEY,
    TEST_CALLBACK_SECRET,
    OPENAPI_PATH,
    OPENAPI_KNOWN_DEVIATIONS,
    GRAPH_SCHEMA_PATH,
    startWorker,
    startComponent,
    pendingComponent,
    mintToken,
    heartbeatUrlOf,
    checkAgainstOpenApi,
    loadOpenApi,
    openApiValidator,
    trackOpenApiOrigin,
    installOpenApiFetchCheck,
    uncheckedFetch,
} from "./harness.mjs";
import { kvCaughtUp } from "./settle.mjs";

const ORIGIN = "https://app.example";
const MAX_BODY = 65536;
const FIXTURES = path.join(REPO_ROOT, "tests", "fixtures", "v1");

let worker;
let echo;
let failing;
let flaky;
let pending;
let receiver;
const delivered = [];
/** route → set of statuses seen, for the coverage check at the end. */
const seen = new Map();

/**
 * Calls the Worker (without the fetch wrapper) and checks the answer against the document.
 * `{status, headers, body, text, route}`; fails the test on any problem but known deviations.
 */
async function call(w, p, { method, body, headers = {}, apiKey = TEST_API_KEY, redirect = "follow", expect } = {}) {
    const hdrs = { ...headers };
    if (apiKey) hdrs.authorization = `Bearer ${apiKey}`;
    let payload;
    if (body !== undefined) {
        if (typeof body === "string" || body instanceof Uint8Array) payload = body;
        else payload = JSON.stringify(body);
        if (!Object.keys(hdrs).some((h) => h.toLowerCase() === "content-type")) hdrs["content-type"] = "application/json";
    }
    const url = p.startsWith("http") ? p : w.url + p;
    const m = method ?? (payload === undefined ? "GET" : "POST");
    const res = await uncheckedFetch(url, { method: m, headers: hdrs, body: payload, redirect });
    const text = await res.text();
    const { route, problems } = checkAgainstOpenApi(m, new URL(res.url || url).pathname, res.status, res.headers, text);
    // Known deviations (harness.mjs) are tolerated here and checked by the todo test at the end.
    const unexpected = problems.filter((pr) => !OPENAPI_KNOWN_DEVIATIONS.some((re) => re.test(pr)));
    assert.deepEqual(unexpected, [], `${m} ${p} → ${res.status} does not match the document:\n${unexpected.join("\n")}`);
    if (!seen.has(route)) seen.set(route, new Set());
    seen.get(route).add(String(res.status));
    let parsed = null;
    try {
        parsed = text === "" ? null : JSON.parse(text);
    } catch {
        parsed = text;
    }
    const out = { status: res.status, headers: res.headers, body: parsed, text, route, problems };
    if (expect !== undefined) {
        const [status, code] = Array.isArray(expect) ? expect : [expect];
        assert.equal(out.status, status, `${m} ${p}: ${text.slice(0, 400)}`);
        if (code) assert.equal(out.body?.error?.code, code, `${m} ${p}: ${text.slice(0, 400)}`);
    }
    return out;
}

/** A callback URL's path and query, for call(). */
const local = (u) => {
    const x = new URL(u);
    return x.pathname + x.search;
};

async function waitFor(what, fn, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 150));
    }
}

async function runUntil(w, runId, states) {
    return waitFor(`run ${runId} to be ${states}`, async () => {
        const r = await call(w, `/runs/${runId}`);
        return states.includes(r.body?.status) ? r : null;
    });
}

const passthrough = (id) => ({ id, type: "Component", componentId: "comp_passthrough" });
const linear = (componentId, extra = {}) => ({
    id: "g",
    name: "openapi demo",
    nodes: [{ id: "in", type: "Input" }, { id: "c", type: "Component", componentId, ...extra }, { id: "out", type: "Output" }],
    edges: [
        { from: "in", to: "c" },
        { from: "c", to: "out", type: "ON_SUCCESS" },
    ],
});

before(async () => {
    echo = await startComponent((body) => ({ echoed: true, n: body?.n ?? null }));
    failing = await startComponent(() => ({ success: false, error: "nope" }));
    let flakyCalls = 0;
    flaky = await startComponent(() => (++flakyCalls === 1 ? { success: false, error: "first call fails" } : { ok: true }));
    pending = await pendingComponent();
    receiver = http.createServer((req, res) => {
        let text = "";
        req.on("data", (c) => (text += c));
        req.on("end", () => {
            delivered.push(text);
            res.writeHead(200).end("ok");
        });
    });
    await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
    worker = await startWorker({
        bindings: {
            ALLOW_BARE_RESUME: "true",
            ALLOWED_ORIGINS: ORIGIN,
            MAX_BODY_BYTES: String(MAX_BODY),
            MAX_SUBREQUESTS_PER_INVOCATION: "2",
            COMPONENTS: JSON.stringify({ daemon_task: `${echo.url}/daemon`, after_component: `${echo.url}/after` }),
        },
    });
});

after(async () => {
    // Everything closes even when stopping the Worker throws (a KV write-limit violation).
    try {
        await worker?.stop();
    } finally {
        for (const c of [echo, failing, flaky, pending]) await c?.close();
        await new Promise((r) => (receiver ? receiver.close(r) : r()));
    }
});

// ---------------------------------------------------------------------------------------------
// The documents themselves
// ---------------------------------------------------------------------------------------------

test("redocly lint passes on public/openapi.json (with redocly.yaml)", { timeout: 120_000 }, async () => {
    const bin = path.join(REPO_ROOT, "node_modules", ".bin", "redocly");
    const { stdout, stderr } = await promisify(execFile)(bin, ["lint", "public/openapi.json"], {
        cwd: REPO_ROOT,
        timeout: 110_000,
        env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
    }).catch((err) => {
        assert.fail(`redocly lint failed:\n${err.stdout}\n${err.stderr}`);
    });
    assert.match(stdout + stderr, /Your API description is valid/, stdout + stderr);
    assert.doesNotMatch(stdout + stderr, /You have \d+ warnings?/, "no warnings either");
});

test("every schema, header and response of the document compiles under ajv strict mode; every $ref resolves", () => {
    const state = loadOpenApi({ strict: true });
    const { doc } = state;
    const pointers = [];
    const esc = (s) => s.replace(/~/g, "~0").replace(/\//g, "~1");
    for (const name of Object.keys(doc.components.schemas)) pointers.push(`#/components/schemas/${esc(name)}`);
    for (const name of Object.keys(doc.components.headers)) pointers.push(`#/components/headers/${esc(name)}/schema`);
    const refs = [];
    (function walk(node, at) {
        if (Array.isArray(node)) return node.forEach((v, i) => walk(v, `${at}/${i}`));
        if (!node || typeof node !== "object") return;
        if (typeof node.$ref === "string") refs.push([node.$ref, at]);
        for (const [k, v] of Object.entries(node)) {
            if ((k === "schema" && at.includes("/content/")) || (k === "schema" && at.includes("/headers/")) || (k === "schema" && at.includes("/parameters/"))) {
                pointers.push(`${at}/${esc(k)}`);
            }
            walk(v, `${at}/${esc(k)}`);
        }
    })(doc, "#");
    assert.ok(pointers.length > 100, `${pointers.length} schemas`);
    for (const p of pointers) {
        assert.doesNotThrow(() => openApiValidator(state, p), `${p} compiles`);
    }
    const get = (pointer) => pointer.slice(2).split("/").reduce((n, k) => n?.[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
    for (const [ref, at] of refs) {
        if (ref.startsWith("#")) assert.notEqual(get(ref), undefined, `${at}: ${ref} resolves`);
        else assert.equal(ref, "schema/graph.json", `${at}: the only external $ref is the graph schema`);
    }
    // The graph schema is a valid 2020-12 schema on its own.
    assert.equal(state.graph.$schema, "https://json-schema.org/draft/2020-12/schema");
});

test("every route the Worker's router knows is in the document", () => {
    const { doc } = loadOpenApi();
    const source = fs.readFileSync(path.join(REPO_ROOT, "src", "adapter", "routes.rs"), "utf8");
    const body = source.slice(source.indexOf("async fn route("), source.indexOf("\n}\n", source.indexOf("async fn route(")));
    // Match arms of `route()`: `["runs", run_id, "cancel"] =>`, `[] | ["health"] =>`, `["workflows", name] if … =>`.
    const arms = [...body.matchAll(/^\s+(\[.*?\](?:\s*\|\s*\[.*?\])*)(?:\s+if\s.*)?\s*=>/gm)].flatMap((m) => m[1].split("|").map((a) => a.trim()));
    assert.ok(arms.length >= 15, `found ${arms.length} route arms: ${arms.join(" ")}`);
    for (const arm of arms) {
        const segs = [...arm.matchAll(/"([^"]+)"|([a-z_]+)/g)].map((m) => (m[1] !== undefined ? m[1] : `{${m[2]}}`));
        const p = "/" + segs.join("/");
        const documented = Object.keys(doc.paths).some((t) => t.replace(/\{[^}]+\}/g, "{}") === p.replace(/\{[^}]+\}/g, "{}"));
        assert.ok(documented, `${arm} (${p}) is documented`);
    }
});

test("GET /openapi.json and /schema/graph.json serve the files as they are, at no KV cost; /ui too", async () => {
    for (const [p, file] of [["/openapi.json", OPENAPI_PATH], ["/schema/graph.json", GRAPH_SCHEMA_PATH]]) {
        const r = await call(worker, p, { apiKey: null, expect: 200 });
        assert.deepEqual(r.body, JSON.parse(fs.readFileSync(file, "utf8")), `${p} is the file`);
        assert.equal(r.headers.get("x-arcrun-kv-ops"), "reads=0;writes=0;lists=0");
        const etag = r.headers.get("etag");
        assert.ok(etag, `${p}: served by the static asset server (it has an etag)`);
        const head = await call(worker, p, { method: "HEAD", apiKey: null, expect: 200 });
        assert.equal(head.text, "");
        assert.equal(head.headers.get("x-arcrun-kv-ops"), "reads=0;writes=0;lists=0");
        await call(worker, p, { apiKey: null, headers: { "if-none-match": etag }, expect: 304 });
        await call(worker, p, { method: "HEAD", apiKey: null, headers: { "if-none-match": etag }, expect: 304 });
        await call(worker, p, { method: "POST", body: {}, apiKey: null, expect: 405 });
    }
    if (fs.existsSync(path.join(REPO_ROOT, "public", "ui.html"))) {
        const ui = await call(worker, "/ui", { apiKey: null, expect: 200 });
        assert.match(ui.headers.get("content-type"), /^text\/html/);
        assert.equal(ui.headers.get("x-arcrun-kv-ops"), "reads=0;writes=0;lists=0");
        await call(worker, "/ui", { method: "HEAD", apiKey: null, expect: 200 });
        for (const method of ["GET", "HEAD"]) await call(worker, "/ui", { method, apiKey: null, headers: { "if-none-match": ui.headers.get("etag") }, expect: 304 });
        const moved = await call(worker, "/ui.html", { apiKey: null, redirect: "manual", expect: 307 });
        assert.equal(moved.headers.get("location"), "/ui");
        await call(worker, "/ui.html", { method: "HEAD", apiKey: null, redirect: "manual", expect: 307 });
        // The viewer's layout library, which scripts/build.sh copies into public/vendor/.
        for (const asset of ["/ui.js", "/ui.css", "/vendor/dagre.min.js"]) {
            const file = await call(worker, asset, { apiKey: null, expect: 200 });
            await call(worker, asset, { method: "HEAD", apiKey: null, expect: 200 });
            for (const method of ["GET", "HEAD"]) await call(worker, asset, { method, apiKey: null, headers: { "if-none-match": file.headers.get("etag") }, expect: 304 });
        }
    }
});

// ---------------------------------------------------------------------------------------------
// The graph schema against the Worker's own validation
// ---------------------------------------------------------------------------------------------

/** Real graphs from the other end-to-end tests, the README and the version-1 fixtures. */
function realGraphs() {
    const url = "http://127.0.0.1:9/x";
    const twoWay = (ok, fail) => ({
        nodes: [{ id: "c", type: "Component", componentId: url }, { id: "good", type: "Output", data: { path: "good" } }, { id: "bad", type: "Output", data: { path: "bad", why: "{{c.error}}" } }],
        edges: [{ from: "c", to: "good", type: ok }, { from: "c", to: "bad", type: fail }],
    });
    const graphs = {
        "README demo": {
            id: "demo",
            name: "summarize later",
            nodes: [
                { id: "in", type: "Input" },
                { id: "slow", type: "Component", componentId: "http://127.0.0.1:8790/tasks", data: { result: "summary of {{topic}}" } },
                { id: "out", type: "Output", data: { summary: "{{slow.data.result}}" } },
            ],
            edges: [{ from: "in", to: "slow", type: "PIPE" }, { from: "slow", to: "out", type: "ON_SUCCESS" }],
        },
        "README join any (first of two vendors)": {
            nodes: [
                { id: "in", type: "Input" },
                { id: "vendor_a", type: "Component", componentId: "https://a.example.com/quote" },
                { id: "vendor_b", type: "Component", componentId: "https://b.example.com/quote" },
                { id: "first", type: "Component", componentId: "comp_passthrough", join: "any" },
                { id: "out", type: "Output", data: { quote: "{{first.data.price}}" }, join: "all" },
            ],
            edges: [{ from: "in", to: "vendor_a" }, { from: "in", to: "vendor_b" }, { from: "vendor_a", to: "first" }, { from: "vendor_b", to: "first" }, { from: "first", to: "out" }],
        },
        "README poll_task": {
            nodes: [
                {
                    id: "render",
                    type: "Component",
                    componentId: "poll_task",
                    data: { url: "https://api.example.com/jobs/{{start.job_id}}", headers: { authorization: "Bearer {{token}}" }, interval_seconds: 10, timeout_seconds: 3600, done_when: "state === 'ready'" },
                },
            ],
        },
        "IF (條件滿足時) into if_control, TRUE/ELSE out of it (compat)": {
            nodes: [
                { id: "in", type: "Input" },
                { id: "check", type: "Component", componentId: "if_control", data: { condition: "n > 1" } },
                { id: "yes", type: "Output", data: { path: "yes" } },
                { id: "no", type: "Output", data: { path: "no" } },
            ],
            edges: [{ from: "in", to: "check", type: "條件滿足時", condition: "n >= 0" }, { from: "check", to: "yes", type: "TRUE" }, { from: "check", to: "no", type: "ELSE" }],
        },
        "switch with BRANCH edges (compat)": {
            nodes: [
                { id: "in", type: "Input" },
                { id: "pick", type: "Component", componentId: "switch", data: { value: "{{color}}", cases: ["red", "blue"] } },
                { id: "red", type: "Output", data: { path: "red" } },
                { id: "blue", type: "Output", data: { path: "blue" } },
            ],
            edges: [{ from: "in", to: "pick", type: "PIPE" }, { from: "pick", to: "red", type: "BRANCH", branch: "red" }, { from: "pick", to: "blue", type: "ON_BRANCH", branch: true }],
        },
        "對每個 over a component, then 完成後 (compat)": {
            nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: url }, { id: "out", type: "Output", data: { count: "{{each.count}}" } }],
            edges: [{ from: "in", to: "each", type: "對每個", items: "xs" }, { from: "each", to: "out", type: "完成後" }],
        },
        "structural edges, some ends not nodes (compat)": {
            nodes: [{ id: "in", type: "Input" }, { id: "a", type: "Component", componentId: url }, { id: "out", type: "Output", data: { got: "{{a.echoed}}" } }],
            edges: [
                { from: "in", to: "a", type: "PIPE" },
                { from: "a", to: "out", type: "PIPE" },
                { from: "out", to: "in", type: "CONTAINS" },
                { from: "a", to: "style-1", type: "HAS_STYLE" },
                { from: "a", to: "out", type: "HAS_BEHAVIOR" },
                { from: "in", to: "out", type: "IS_A" },
                { from: "out", to: "a", type: "CONTINUE" },
                { from: "page-9", to: "behaviour-3", type: "HAS_BEHAVIOR" },
                { from: "out", to: "out", type: "contains" },
            ],
        },
        "FOREACH with max_concurrency and tolerances (many)": {
            nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: url }, { id: "out", type: "Output" }],
            edges: [
                { from: "in", to: "each", type: "FOREACH", items: "list", iterator: "x", max_concurrency: 3, tolerated_failures: 2, tolerated_failure_percent: 12.5 },
                { from: "each", to: "out", type: "ON_FAIL" },
            ],
        },
        "sub-workflow and wait_timeout_seconds, edge types in any case": {
            nodes: [
                { id: "in", type: "input" },
                { id: "call", type: "COMPONENT", componentId: "workflow://child-now", wait_timeout_seconds: 60, label: "child" },
                { id: "out", type: "output", data: null },
            ],
            edges: [{ from: "in", to: "call", type: " calls_subflow " }, { from: "call", to: "out", type: null }],
        },
        "single node without edges": { nodes: [passthrough("only")] },
    };
    for (const [i, pair] of [["SUCCESS", "FAIL"], ["完成後", "失敗時"], ["ON_CLICK", "ON_FAIL"], ["CLICK", "FAIL"], ["SUBFLOW", "失敗時"], ["success", "fail"]].entries()) {
        graphs[`alias pair ${pair.join("/")} (compat ${i})`] = twoWay(...pair);
    }
    for (const pair of [["成立時", "否則"], ["為真時", "為假時"], ["ON_TRUE", "不成立時"]]) {
        const g = structuredClone(graphs["IF (條件滿足時) into if_control, TRUE/ELSE out of it (compat)"]);
        g.edges[1].type = pair[0];
        g.edges[2].type = pair[1];
        graphs[`if_control with ${pair.join("/")} (compat)`] = g;
    }
    for (const file of fs.readdirSync(FIXTURES).filter((f) => f.endsWith(".json"))) {
        graphs[`tests/fixtures/v1/${file}`] = JSON.parse(fs.readFileSync(path.join(FIXTURES, file), "utf8")).graph;
    }
    return graphs;
}

/** Graphs of a broken shape (from hostile.test.mjs and the brief): the schema and the Worker both refuse them. */
function brokenGraphs() {
    const ab = (edge) => ({ nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", ...edge }] });
    return {
        "no nodes": { edges: [] },
        "nodes is empty": { nodes: [], edges: [] },
        "not an object": [passthrough("a")],
        "edges is an object": { nodes: [passthrough("a")], edges: { from: "a", to: "a" } },
        "edges are a number and null": { nodes: [passthrough("a")], edges: [3, null] },
        "node id is a number": { nodes: [{ id: 1, type: "Input" }] },
        "node id is empty": { nodes: [{ id: "", type: "Input" }] },
        "node id is missing": { nodes: [{ type: "Input" }] },
        "node type is unknown": { nodes: [{ id: "a", type: "Banana" }] },
        "node type is missing": { nodes: [{ id: "a" }] },
        "Component without componentId": { nodes: [{ id: "a", type: "Component" }] },
        "componentId is a number": { nodes: [{ id: "a", type: "Component", componentId: 42 }] },
        "data is an array": { nodes: [{ ...passthrough("a"), data: [1, 2] }] },
        "label is an object": { nodes: [{ ...passthrough("a"), label: { x: 1 } }] },
        "graph id and name of wrong types": { id: 5, name: { n: 1 }, nodes: [passthrough("a")] },
        ...Object.fromEntries(
            [0, -1, 1.5, "60", true, 31_536_001].map((t) => [`wait_timeout_seconds ${JSON.stringify(t)}`, { nodes: [{ id: "a", type: "Component", componentId: "http://127.0.0.1:9/x", wait_timeout_seconds: t }] }]),
        ),
        "poll_task done_when is a number": { nodes: [{ id: "p", type: "Component", componentId: "poll_task", data: { url: "https://x.test", done_when: 3 } }] },
        "join is unknown": { nodes: [{ ...passthrough("a"), join: "first" }] },
        "join is a number": { nodes: [{ ...passthrough("a"), join: 1 }] },
        "edge type is unknown": ab({ type: "TELEPORT" }),
        "edge type NEXT_STEP": ab({ type: "NEXT_STEP" }),
        "edge type is a number": ab({ type: 3 }),
        "edge from is a number": { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: 0, to: "b" }] },
        "edge without from": { nodes: [passthrough("a"), passthrough("b")], edges: [{ to: "b" }] },
        "IF edge without a condition": ab({ type: "IF" }),
        "IF condition is an object": ab({ type: "IF", condition: { op: "==" } }),
        "ON_BRANCH without a branch": ab({ type: "ON_BRANCH" }),
        "ON_BRANCH branch is an object": ab({ type: "ON_BRANCH", branch: { b: 1 } }),
        "FOREACH iterator is a number and items an array": ab({ type: "FOREACH", iterator: 1, items: ["x"] }),
        "max_concurrency 0": ab({ type: "FOREACH", max_concurrency: 0 }),
        "max_concurrency 1.5": ab({ type: "FOREACH", max_concurrency: 1.5 }),
        "max_concurrency on a PIPE edge": ab({ type: "PIPE", max_concurrency: 2 }),
        "tolerated_failures on an edge without a type": ab({ tolerated_failures: 1 }),
        "tolerated_failures -1": ab({ type: "FOREACH", tolerated_failures: -1 }),
        "tolerated_failure_percent 101": ab({ type: "FOREACH", tolerated_failure_percent: 101 }),
    };
}

/** Graphs the schema cannot tell from good ones (the Worker's planner refuses them). */
function semanticallyBroken() {
    return {
        "edge to an unknown node": { nodes: [passthrough("a")], edges: [{ from: "a", to: "ghost" }] },
        "join any on a node with one incoming edge": { nodes: [passthrough("a"), { ...passthrough("b"), join: "any" }], edges: [{ from: "a", to: "b" }] },
        "a cycle": { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b" }, { from: "b", to: "a", type: "ON_SUCCESS" }] },
        "duplicate node ids": { nodes: [passthrough("a"), passthrough("a")] },
        "a condition the language cannot read": { nodes: [passthrough("a"), passthrough("b")], edges: [{ from: "a", to: "b", type: "IF", condition: "score >" }] },
        "an unknown component name": { nodes: [{ id: "a", type: "Component", componentId: "evil" }] },
    };
}

test("the graph schema accepts real graphs and refuses broken ones, as the Worker does", { timeout: 120_000 }, async () => {
    const { ajv, graph } = loadOpenApi();
    const validate = ajv.getSchema(graph.$id ?? "https://arcrun.invalid/schema/graph.json");
    assert.ok(validate, "the graph schema is registered");
    const worker400 = async (name, g) => {
        const r = await call(worker, `/workflows/schema-case-${name.replace(/[^A-Za-z0-9]+/g, "-").slice(0, 80)}`, { method: "PUT", body: g });
        assert.ok(r.status === 200 || (r.status === 400 && r.body.error.code === "invalid_graph"), `${name}: ${r.status} ${r.text.slice(0, 300)}`);
        return r.status === 400 ? r.body.error.problems : null;
    };
    let n = 0;
    for (const [name, g] of Object.entries(realGraphs())) {
        assert.ok(validate(g), `schema accepts ${name}: ${JSON.stringify(validate.errors)}`);
        assert.equal(await worker400(name, g), null, `the Worker accepts ${name}`);
        n++;
    }
    for (const [name, g] of Object.entries(brokenGraphs())) {
        assert.equal(validate(g), false, `schema refuses ${name}`);
        const problems = await worker400(name, g);
        assert.ok(problems, `the Worker refuses ${name}`);
        n++;
    }
    for (const [name, g] of Object.entries(semanticallyBroken())) {
        assert.ok(validate(g), `the schema cannot see what is wrong with ${name}: ${JSON.stringify(validate.errors)}`);
        assert.ok(await worker400(name, g), `the Worker refuses ${name}`);
        n++;
    }
    assert.ok(n > 50, `${n} graphs compared`);
    // Stored graphs read back are graphs too (GET /workflows/{name} is checked against Graph).
    await call(worker, "/workflows/schema-case-README-demo", { expect: 200 });
});

// ---------------------------------------------------------------------------------------------
// Every route, every answer
// ---------------------------------------------------------------------------------------------

test("/health, /, unknown paths and methods, CORS preflights", async () => {
    for (const p of ["/", "/health", "/health/"]) {
        const r = await call(worker, p, { apiKey: null, expect: 200 });
        assert.equal(r.body.ok, true);
        await call(worker, p, { method: "HEAD", apiKey: null, expect: 200 });
    }
    const del = await call(worker, "/health", { method: "DELETE", apiKey: null, expect: [405, "method_not_allowed"] });
    assert.equal(del.headers.get("allow"), "GET, HEAD");
    await call(worker, "/", { method: "PATCH", body: "{}", apiKey: null, expect: [405, "method_not_allowed"] });
    await call(worker, "/nope", { expect: [404, "not_found"] });
    await call(worker, "/runs/a/b/c/d", { method: "PUT", body: "{}", expect: [404, "not_found"] });
    const get = await call(worker, "/execute", { method: "GET", expect: [405, "method_not_allowed"] });
    assert.equal(get.headers.get("allow"), "POST");
    await call(worker, "/execute", { method: "HEAD", expect: 405 });
    await call(worker, "/mcp", { method: "GET", expect: [405, "method_not_allowed"] });
    const post = await call(worker, "/workflows/x", { method: "POST", body: {}, expect: [405, "method_not_allowed"] });
    assert.equal(post.headers.get("allow"), "GET, PUT, DELETE, HEAD");
    await call(worker, "/runs/x/cancel", { method: "GET", expect: [405, "method_not_allowed"] });

    // A preflight on every Worker path, from the allowed origin and from another.
    const { doc } = loadOpenApi();
    const sample = { run_id: "0123456789abcdef-00000000000-aa", wait_id: "n1", name: "x", task_id: "t" };
    for (const [template, item] of Object.entries(doc.paths)) {
        if (item["x-arcrun-static"]) {
            await call(worker, template, { method: "OPTIONS", apiKey: null, headers: { origin: ORIGIN }, expect: 405 });
            continue;
        }
        const p = template.replace(/\{([^}]+)\}/g, (_, k) => sample[k]);
        const ok = await call(worker, p, { method: "OPTIONS", apiKey: null, headers: { origin: ORIGIN, "access-control-request-method": "POST" }, expect: 204 });
        assert.equal(ok.headers.get("access-control-allow-origin"), ORIGIN);
    }
    await call(worker, "/execute", { method: "OPTIONS", apiKey: null, headers: { origin: "https://evil.example" }, expect: [403, "origin_not_allowed"] });
    await call(worker, "/nope", { method: "OPTIONS", apiKey: null, expect: [403, "origin_not_allowed"] });
    await call(worker, "/nope", { method: "OPTIONS", apiKey: null, headers: { origin: ORIGIN }, expect: 204 });
    // An answer to an allowed origin carries the CORS headers (documented on every answer).
    const cors = await call(worker, "/health", { apiKey: null, headers: { origin: ORIGIN }, expect: 200 });
    assert.equal(cors.headers.get("access-control-allow-origin"), ORIGIN);
});

test("POST /execute: completed, failed, paused, running; every refusal", { timeout: 120_000 }, async () => {
    const done = await call(worker, "/execute", { body: { graph: linear("comp_passthrough"), context: { a: 1 } }, expect: 200 });
    assert.equal(done.body.status, "completed");
    assert.match(done.headers.get("x-arcrun-do-ops"), /^reads=\d+;writes=\d+;deletes=\d+$/);
    const failed = await call(worker, "/execute", { body: { graph: linear(`${failing.url}/f`) }, expect: 200 });
    assert.equal(failed.body.status, "failed");
    assert.equal(failed.body.success, false);
    // `success` means the same in every answer: the failed run reads `success: false` too.
    const failedRead = await call(worker, `/runs/${failed.body.run_id}`, { expect: 200 });
    assert.equal(failedRead.body.status, "failed");
    assert.equal(failedRead.body.success, false);
    const paused = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/p`) }, apiKey: null, headers: { "x-arcrun-api-key": TEST_API_KEY }, expect: 200 });
    assert.equal(paused.body.status, "paused");
    // More component calls than one invocation may make (MAX_SUBREQUESTS_PER_INVOCATION=2): 202.
    const many = {
        nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${echo.url}/each` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "each", type: "FOREACH", items: "xs" }, { from: "each", to: "out" }],
    };
    const running = await call(worker, "/execute", { body: { graph: many, context: { xs: [1, 2, 3, 4, 5] } }, expect: 202 });
    assert.equal(running.body.status, "running");
    await runUntil(worker, running.body.run_id, ["completed"]);

    await call(worker, "/execute", { body: "", expect: [400, "invalid_json"] });
    await call(worker, "/execute", { body: "{not json", expect: [400, "invalid_json"] });
    await call(worker, "/execute", { body: "graph=1", headers: { "content-type": "application/x-www-form-urlencoded" }, expect: [415, "unsupported_media_type"] });
    // JSON sent as text/plain (fetch's default for a string body) or as an application/*+json type is read as JSON.
    await call(worker, "/execute", { body: JSON.stringify({ graph: linear("comp_passthrough") }), headers: { "content-type": "text/plain;charset=UTF-8" }, expect: 200 });
    await call(worker, "/execute", { body: JSON.stringify({ graph: linear("comp_passthrough") }), headers: { "content-type": "application/vnd.api+json" }, expect: 200 });
    await call(worker, "/execute", { body: [1, 2], expect: [400, "invalid_request"] });
    await call(worker, "/execute", { body: { context: {} }, expect: [400, "invalid_request"] });
    await call(worker, "/execute", { body: { graph: linear("comp_passthrough"), context: [1] }, expect: [400, "invalid_request"] });
    const bad = await call(worker, "/execute", { body: { graph: { nodes: [] } }, expect: [400, "invalid_graph"] });
    assert.ok(bad.body.error.problems.length >= 1);
    await call(worker, "/execute", { body: { graph: linear("comp_passthrough"), final_callback_url: "ftp://x.test/h" }, expect: [400, "invalid_final_callback_url"] });
    await call(worker, "/execute", { body: { graph: linear("comp_passthrough") }, headers: { "idempotency-key": "has space" }, expect: [400, "invalid_idempotency_key"] });
    await call(worker, "/execute", { body: { graph: linear("comp_passthrough") }, apiKey: null, expect: [401, "unauthorized"] });
    await call(worker, "/execute", { body: { graph: linear("comp_passthrough") }, apiKey: "wrong", expect: [401, "unauthorized"] });
    await call(worker, "/execute", { body: JSON.stringify({ graph: linear("comp_passthrough"), pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });

    // Idempotency-Key: the first starts a run, a repeat answers it (200, replayed), another body is 422.
    const key = `openapi-${Date.now()}`;
    const first = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/idem`) }, headers: { "idempotency-key": key }, expect: 200 });
    const again = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/idem`) }, headers: { "idempotency-key": key }, expect: 200 });
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.equal(again.body.run_id, first.body.run_id);
    const reused = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/other`) }, headers: { "idempotency-key": key }, expect: [422, "idempotency_key_reused"] });
    assert.equal(reused.body.error.run_id, first.body.run_id);
});

test("runs: list, read, cancel, retry, redeliver — and their refusals", { timeout: 120_000 }, async () => {
    // A paused run, cancelled; a failed run, retried; a run with a final callback, redelivered.
    const paused = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/to-cancel`) }, expect: 200 });
    const runId = paused.body.run_id;
    const read = await call(worker, `/runs/${runId}`, { expect: 200 });
    assert.equal(read.body.status, "paused");
    await call(worker, `/runs/${runId}`, { method: "HEAD", expect: 200 });
    // One node: the Input node's output, the paused node's context (the Input's output merged
    // in), the node not reached yet with neither; an unknown node or run is 404.
    const input = await call(worker, `/runs/${runId}/nodes/in`, { expect: 200 });
    assert.equal(input.body.status, "succeeded");
    assert.equal(input.body.kept, true);
    assert.equal(typeof input.body.output, "object", input.text);
    const waiting = await call(worker, `/runs/${runId}/nodes/c`, { expect: 200 });
    assert.equal(waiting.body.status, "paused");
    assert.equal(typeof waiting.body.input, "object", waiting.text);
    assert.equal(waiting.body.output, undefined);
    assert.match(waiting.body.component, /\/to-cancel$/);
    const later = await call(worker, `/runs/${runId}/nodes/out`, { expect: 200 });
    assert.equal(later.body.status, "waiting");
    assert.deepEqual([later.body.input, later.body.output], [undefined, undefined]);
    await call(worker, `/runs/${runId}/nodes/in`, { method: "HEAD", expect: 200 });
    await call(worker, `/runs/${runId}/nodes/no%20such%20node`, { expect: [404, "not_found"] });
    await call(worker, `/runs/not!valid/nodes/in`, { expect: [404, "not_found"] });
    await call(worker, `/runs/${runId}/nodes/in`, { apiKey: null, expect: [401, "unauthorized"] });
    await call(worker, `/runs/${runId}/redeliver`, { method: "POST", expect: [409, "run_not_finished"] });
    const cancelled = await call(worker, `/runs/${runId}/cancel`, { method: "POST", expect: 200 });
    assert.equal(cancelled.body.status, "cancelled");
    // A cancelled run keeps no node's data.
    const released = await call(worker, `/runs/${runId}/nodes/in`, { expect: 200 });
    assert.deepEqual([released.body.kept, released.body.output, released.body.success], [false, undefined, false]);
    await call(worker, `/runs/${runId}/cancel`, { method: "POST", expect: [409, "run_finished"] });
    await call(worker, `/runs/${runId}/retry`, { method: "POST", expect: [409, "not_retryable"] });
    await call(worker, `/runs/${runId}/redeliver`, { method: "POST", expect: [400, "invalid_request"] });

    const failed = await call(worker, "/execute", { body: { graph: linear(`${flaky.url}/flaky`) }, expect: 200 });
    assert.equal(failed.body.status, "failed");
    const failedRead = await call(worker, `/runs/${failed.body.run_id}`, { expect: 200 });
    assert.equal(failedRead.body.error.node_id, "c");
    const retried = await call(worker, `/runs/${failed.body.run_id}/retry`, { method: "POST", expect: 200 });
    assert.equal(retried.body.status, "completed");
    assert.equal(retried.body.attempt, 1);

    // A failed FOREACH of more calls than one invocation may make: its retry answers 202.
    const manyFailing = {
        nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${failing.url}/each` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "each", type: "FOREACH", items: "xs" }, { from: "each", to: "out" }],
    };
    const bulk = await call(worker, "/execute", { body: { graph: manyFailing, context: { xs: [1, 2, 3, 4, 5] } }, expect: 202 });
    await runUntil(worker, bulk.body.run_id, ["failed"]);
    const bulkRetry = await call(worker, `/runs/${bulk.body.run_id}/retry`, { method: "POST", expect: 202 });
    assert.equal(bulkRetry.body.status, "running");
    await runUntil(worker, bulk.body.run_id, ["failed"]);

    const withHook = await call(worker, "/execute", {
        body: { graph: linear("comp_passthrough"), final_callback_url: `http://127.0.0.1:${receiver.address().port}/hook` },
        expect: 200,
    });
    const hookId = withHook.body.run_id;
    await waitFor("the final callback", async () => (await call(worker, `/runs/${hookId}`)).body.final_callback?.state === "delivered");
    const again = await call(worker, `/runs/${hookId}/redeliver`, { method: "POST", expect: 202 });
    assert.equal(again.body.final_callback.state, "retrying");
    await waitFor("the redelivery", async () => (await call(worker, `/runs/${hookId}`)).body.deliveries?.length >= 2);

    for (const action of ["cancel", "retry", "redeliver"]) {
        await call(worker, `/runs/0123456789abcdef-00000000000-ff/${action}`, { method: "POST", expect: [404, "not_found"] });
        await call(worker, `/runs/not!valid/${action}`, { method: "POST", expect: [404, "not_found"] });
        await call(worker, `/runs/${runId}/${action}`, { method: "POST", apiKey: null, expect: [401, "unauthorized"] });
    }
    await call(worker, "/runs/0123456789abcdef-00000000000-ff", { expect: [404, "not_found"] });
    await call(worker, "/runs/not!valid", { method: "HEAD", expect: 404 });
    await call(worker, `/runs/${runId}`, { apiKey: null, expect: [401, "unauthorized"] });

    // Listing (eventually consistent: wait for the runs to show).
    const page = await waitFor("runs to be listed", async () => {
        const r = await call(worker, "/runs?limit=2", { expect: 200 });
        return r.body.runs.length === 2 && r.body.next_cursor ? r : null;
    });
    await call(worker, `/runs?limit=2&cursor=${encodeURIComponent(page.body.next_cursor)}`, { expect: 200 });
    const filtered = await call(worker, "/runs?status=cancelled,completed&limit=1000", { expect: 200 });
    assert.ok(filtered.body.runs.every((r) => ["cancelled", "completed"].includes(r.status)));
    await call(worker, "/runs", { method: "HEAD", expect: 200 });
    await call(worker, "/runs?status=bogus", { expect: [400, "invalid_request"] });
    await call(worker, "/runs?limit=0", { expect: [400, "invalid_request"] });
    await call(worker, "/runs?cursor=not-a-cursor", { expect: [400, "invalid_request"] });
    await call(worker, "/runs", { apiKey: null, expect: [401, "unauthorized"] });
});

test("callbacks and heartbeats: resumed, paused again, every noop, every refusal", { timeout: 120_000 }, async () => {
    // Two pending nodes in a row: the first callback resumes and pauses again.
    const chain = {
        nodes: [
            { id: "in", type: "Input" },
            { id: "one", type: "Component", componentId: `${pending.url}/one` },
            { id: "two", type: "Component", componentId: `${pending.url}/two` },
            { id: "out", type: "Output" },
        ],
        edges: [{ from: "in", to: "one" }, { from: "one", to: "two" }, { from: "two", to: "out" }],
    };
    await call(worker, "/execute", { body: { graph: chain }, expect: 200 });
    const one = pending.on("/one").at(-1);
    const cb1 = local(one.callbackUrl);

    // Heartbeats: accepted with new URLs; a bad extend_seconds and a wrong task are refused.
    const hb = await call(worker, local(heartbeatUrlOf(one.callbackUrl)), { apiKey: null, body: { progress: { pct: 40 }, extend_seconds: 600 }, expect: 200 });
    assert.ok(hb.body.expires_at > Date.now());
    await call(worker, local(heartbeatUrlOf(one.callbackUrl)), { apiKey: null, body: { extend_seconds: 0 }, expect: [400, "invalid_request"] });
    await call(worker, local(heartbeatUrlOf(one.callbackUrl)), { apiKey: null, body: { task_id: "someone-else" }, expect: [409, "task_mismatch"] });

    // A failure result is still a result: it resumes the run, which fails (no ON_FAIL edge).
    const failedByCallback = await call(worker, cb1, { apiKey: null, body: { task_id: one.taskId, success: false }, expect: 200 });
    assert.equal(failedByCallback.body.resumed, true);
    assert.equal(failedByCallback.body.status, "failed");
    // Start again for the rest: refusals before the run is touched, then at its gate.
    const started2 = await call(worker, "/execute", { body: { graph: chain }, expect: 200 });
    const run2 = started2.body.run_id;
    const first = pending.on("/one").at(-1);
    const cb = local(first.callbackUrl);
    const noToken = cb.split("?")[0];
    await call(worker, noToken, { apiKey: null, body: { task_id: first.taskId }, expect: [401, "unauthorized"] });
    await call(worker, `${noToken}?token=123.garbage`, { apiKey: null, body: { task_id: first.taskId }, expect: [401, "unauthorized"] });
    await call(worker, `/callbacks/${run2}/bad!id?token=1.x`, { apiKey: null, body: { task_id: first.taskId }, expect: [404, "not_found"] });
    await call(worker, `/callbacks/${run2}/bad!id/heartbeat?token=1.x`, { apiKey: null, body: {}, expect: [404, "not_found"] });
    await call(worker, `${noToken}/heartbeat`, { apiKey: null, body: {}, expect: [401, "unauthorized"] });
    await call(worker, cb, { apiKey: null, body: "", expect: [400, "invalid_json"] });
    await call(worker, cb, { apiKey: null, body: "not json", expect: [400, "invalid_json"] });
    // A body sent as anything but JSON is refused unread; text/plain (fetch's default) is read.
    await call(worker, cb, { apiKey: null, body: "task_id=x", headers: { "content-type": "application/x-www-form-urlencoded" }, expect: [415, "unsupported_media_type"] });
    await call(worker, local(heartbeatUrlOf(first.callbackUrl)), { apiKey: null, body: "<progress/>", headers: { "content-type": "application/xml" }, expect: [415, "unsupported_media_type"] });
    await call(worker, cb, { apiKey: null, body: [1], expect: [400, "invalid_request"] });
    await call(worker, local(heartbeatUrlOf(first.callbackUrl)), { apiKey: null, body: [1], expect: [400, "invalid_request"] });
    await call(worker, cb, { apiKey: null, body: JSON.stringify({ task_id: first.taskId, pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });
    await call(worker, local(heartbeatUrlOf(first.callbackUrl)), { apiKey: null, body: JSON.stringify({ pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });
    await call(worker, cb, { apiKey: null, body: { task_id: "someone-else" }, expect: [409, "task_mismatch"] });

    // Resumed, paused again at the next node.
    const resumed = await call(worker, cb, { apiKey: null, body: { task_id: first.taskId, success: true, data: { x: 1 } }, expect: 200 });
    assert.equal(resumed.body.resumed, true);
    assert.equal(resumed.body.paused_again, true);
    assert.equal(resumed.body.status, "paused");
    // A repeat, and a heartbeat on the closed wait.
    const dup = await call(worker, cb, { apiKey: null, body: { task_id: first.taskId, success: true }, expect: 200 });
    assert.equal(dup.body.reason, "already_resumed");
    const hbClosed = await call(worker, local(heartbeatUrlOf(first.callbackUrl)), { apiKey: null, body: {}, expect: 200 });
    assert.equal(hbClosed.body.reason, "already_resumed");
    // A wait that does not exist (yet) in this run, and a run that does not exist.
    const far = Date.now() + 3_600_000;
    const unknownWait = await call(worker, `/callbacks/${run2}/n9?token=${mintToken(TEST_CALLBACK_SECRET, run2, "n9", far)}`, { apiKey: null, body: { task_id: "t" }, expect: 200 });
    assert.equal(unknownWait.body.reason, "unknown_wait");
    const ghost = "0123456789abcdef-00000000000-ee";
    const unknownRun = await call(worker, `/callbacks/${ghost}/n1?token=${mintToken(TEST_CALLBACK_SECRET, ghost, "n1", far)}`, { apiKey: null, body: { task_id: "t" }, expect: 200 });
    assert.equal(unknownRun.body.reason, "unknown_run");
    const unknownRunHb = await call(worker, `/callbacks/${ghost}/n1/heartbeat?token=${mintToken(TEST_CALLBACK_SECRET, ghost, "n1", far)}`, { apiKey: null, body: {}, expect: 200 });
    assert.equal(unknownRunHb.body.reason, "unknown_run");
    // A URL past the deadline it was signed with: expired, without reading anything.
    const second = pending.on("/two").at(-1);
    const waitId = new URL(second.callbackUrl).pathname.split("/").pop();
    const stale = mintToken(TEST_CALLBACK_SECRET, run2, waitId, Date.now() - 1000);
    const expired = await call(worker, `/callbacks/${run2}/${waitId}?token=${stale}`, { apiKey: null, body: { task_id: second.taskId }, expect: 200 });
    assert.equal(expired.body.reason, "expired");
    assert.equal(expired.headers.get("x-arcrun-kv-ops"), "reads=0;writes=0;lists=0");
    const expiredHb = await call(worker, `/callbacks/${run2}/${waitId}/heartbeat?token=${stale}`, { apiKey: null, body: {}, expect: 200 });
    assert.equal(expiredHb.body.reason, "expired");
    // Cancelled: a later callback is told the run finished.
    await call(worker, `/runs/${run2}/cancel`, { method: "POST", expect: 200 });
    const late = await call(worker, local(second.callbackUrl), { apiKey: null, body: { task_id: second.taskId, success: true }, expect: 200 });
    assert.equal(late.body.reason, "run_finished");
    const read = await call(worker, `/runs/${run2}`, { expect: 200 });
    assert.ok(read.body.closed_waits.some((w) => w.events?.some((e) => e.outcome === "late")), read.text);

    // Completed by a callback.
    const single = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/single`) }, expect: 200 });
    const s = pending.on("/single").at(-1);
    const finished = await call(worker, local(s.callbackUrl), { apiKey: null, body: { task_id: s.taskId, success: true, data: { v: 2 } }, expect: 200 });
    assert.equal(finished.body.status, "completed");
    assert.equal(finished.body.task_id, s.taskId);
    await call(worker, `/runs/${single.body.run_id}`, { expect: 200 });
});

test("callbacks that arrive while a segment of their run is executing: kept, 202 accepted past 3 s, applied when it ends", { timeout: 60_000 }, async () => {
    // in → a (pending) → out; in → b (pending) → slow (answers after 4.5 s) → out. b's callback
    // runs a segment that waits on slow; a's callbacks (signed and bare) arrive meanwhile.
    let slowCalled = 0;
    const slow = await startComponent(async () => {
        slowCalled++;
        await new Promise((r) => setTimeout(r, 4500));
        return { slow: true };
    });
    try {
        const graph = {
            nodes: [
                { id: "in", type: "Input" },
                { id: "a", type: "Component", componentId: `${pending.url}/acc-a` },
                { id: "b", type: "Component", componentId: `${pending.url}/acc-b` },
                { id: "slow", type: "Component", componentId: `${slow.url}/slow` },
                { id: "out", type: "Output" },
            ],
            edges: [
                { from: "in", to: "a" },
                { from: "in", to: "b" },
                { from: "b", to: "slow" },
                { from: "a", to: "out" },
                { from: "slow", to: "out" },
            ],
        };
        const started = await call(worker, "/execute", { body: { graph }, expect: 200 });
        assert.equal(started.body.status, "paused", started.text);
        const runId = started.body.run_id;
        // Stored first: a callback that came while the gate's alarm writes the trigger's change
        // would be applied by that alarm (and answered 202 once its segment passed 3 s).
        await kvCaughtUp(worker, runId);
        const a = pending.on("/acc-a").at(-1);
        const b = pending.on("/acc-b").at(-1);
        const bAnswer = call(worker, local(b.callbackUrl), { apiKey: null, body: { task_id: b.taskId, success: true } });
        await waitFor("b's segment to call slow", () => slowCalled > 0, 10_000);
        const t0 = Date.now();
        const [signed, bare] = await Promise.all([
            call(worker, local(a.callbackUrl), { apiKey: null, body: { task_id: a.taskId, success: true, data: { from: "a" } } }),
            call(worker, "/workflows/resume", { apiKey: null, body: { task_id: a.taskId, success: true, data: { from: "bare" } } }),
        ]);
        for (const [what, r] of [["signed", signed], ["bare", bare]]) {
            assert.equal(r.status, 202, `${what}: ${r.text}`);
            assert.equal(r.body.accepted, true, r.text);
            assert.equal(r.body.status, "running", r.text);
            assert.equal(r.body.run_id, runId, r.text);
        }
        assert.ok(Date.now() - t0 >= 2900, `answered 202 after waiting about 3 s (${Date.now() - t0} ms)`);
        const bDone = await bAnswer;
        assert.equal(bDone.status, 200, bDone.text);
        assert.equal(bDone.body.resumed, true, bDone.text);
        // Both were kept and applied once the segment ended: one resumed a, the other was a repeat.
        const done = await runUntil(worker, runId, ["completed", "failed"]);
        assert.equal(done.body.status, "completed", done.text);
        const closedA = done.body.closed_waits.find((w) => w.task_id === a.taskId);
        assert.ok(closedA, done.text);
        assert.deepEqual(closedA.events.map((e) => `${e.kind}:${e.outcome}`).sort(), ["callback:accepted", "callback:duplicate"], done.text);
        assert.ok(["a", "bare"].includes(done.body.data.data?.from), done.text);
        assert.equal(slowCalled, 1);
    } finally {
        await slow.close();
    }
});

test("legacy routes: /workflows/resume, /executions/paused, /executions/{task_id}", { timeout: 60_000 }, async () => {
    const started = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/legacy`) }, expect: 200 });
    const call1 = pending.on("/legacy").at(-1);
    const paused = await waitFor("the paused run to be listed", async () => {
        const r = await call(worker, "/executions/paused", { expect: 200 });
        return r.body.runs.some((x) => x.run_id === started.body.run_id) ? r : null;
    });
    assert.equal(paused.headers.get("deprecation"), "true");
    await call(worker, "/executions/paused", { method: "HEAD", expect: 200 });
    await call(worker, "/executions/paused", { apiKey: null, expect: [401, "unauthorized"] });
    const byTask = await call(worker, `/executions/${encodeURIComponent(call1.taskId)}`, { expect: 200 });
    assert.equal(byTask.body.run_id, started.body.run_id);
    assert.equal(byTask.headers.get("link"), `</runs/${started.body.run_id}>; rel="successor-version"`);
    await call(worker, `/executions/${encodeURIComponent(call1.taskId)}`, { method: "HEAD", expect: 200 });
    await call(worker, "/executions/no-such-task", { expect: [404, "not_found"] });
    await call(worker, "/executions/no-such-task", { apiKey: null, expect: [401, "unauthorized"] });

    const unknown = await call(worker, "/workflows/resume", { apiKey: null, body: { task_id: "no-such-task" }, expect: 200 });
    assert.equal(unknown.body.reason, "unknown_task");
    await call(worker, "/workflows/resume", { apiKey: null, body: { success: true }, expect: [400, "invalid_request"] });
    await call(worker, "/workflows/resume", { apiKey: null, body: "", expect: [400, "invalid_json"] });
    await call(worker, "/workflows/resume", { apiKey: null, body: "task_id=x", headers: { "content-type": "application/x-www-form-urlencoded" }, expect: [415, "unsupported_media_type"] });
    await call(worker, "/workflows/resume", { apiKey: null, body: JSON.stringify({ task_id: "x", pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });
    const resumed = await call(worker, "/workflows/resume", { apiKey: null, body: { task_id: call1.taskId, success: true, data: { v: 1 } }, expect: 200 });
    assert.equal(resumed.body.resumed, true);
    assert.equal(resumed.body.status, "completed");
    const again = await call(worker, "/workflows/resume", { apiKey: null, body: { task_id: call1.taskId, success: true }, expect: 200 });
    assert.equal(again.body.noop, true);
});

test("stored workflows: put, get, list, delete, execute — and their refusals", { timeout: 60_000 }, async () => {
    const graph = linear("comp_passthrough");
    const put = await call(worker, "/workflows/oa-demo", { method: "PUT", body: graph, expect: 200 });
    assert.equal(put.body.workflow.nodes, 3);
    await call(worker, "/workflows/oa-demo.v2_x", { method: "PUT", body: { graph }, expect: 200 });
    await call(worker, "/workflows/oa-pending", { method: "PUT", body: linear(`${pending.url}/stored`), expect: 200 });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: { graph: { nodes: [] } }, expect: [400, "invalid_graph"] });
    await call(worker, "/workflows/bad%20name", { method: "PUT", body: graph, expect: [400, "invalid_workflow_name"] });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: "", expect: [400, "invalid_json"] });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: "{", expect: [400, "invalid_json"] });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: "graph=1", headers: { "content-type": "application/x-www-form-urlencoded" }, expect: [415, "unsupported_media_type"] });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: JSON.stringify({ ...graph, pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });
    await call(worker, "/workflows/oa-demo", { method: "PUT", body: graph, apiKey: null, expect: [401, "unauthorized"] });

    const got = await call(worker, "/workflows/oa-demo", { expect: 200 });
    assert.deepEqual(got.body.workflow.graph, graph);
    await call(worker, "/workflows/oa-demo", { method: "HEAD", expect: 200 });
    await call(worker, "/workflows/missing", { expect: [404, "not_found"] });
    await call(worker, "/workflows/resume", { expect: [404, "not_found"] });
    await call(worker, "/workflows/bad%20name", { expect: [400, "invalid_workflow_name"] });
    await call(worker, "/workflows/oa-demo", { apiKey: null, expect: [401, "unauthorized"] });

    const list = await call(worker, "/workflows?limit=1", { expect: 200 });
    assert.ok(list.body.next_cursor, list.text);
    await call(worker, `/workflows?cursor=${encodeURIComponent(list.body.next_cursor)}`, { expect: 200 });
    await call(worker, "/workflows", { method: "HEAD", expect: 200 });
    await call(worker, "/workflows?limit=0", { expect: [400, "invalid_request"] });
    await call(worker, "/workflows?cursor=%%%", { expect: [400, "invalid_request"] });
    await call(worker, "/workflows", { apiKey: null, expect: [401, "unauthorized"] });

    const ran = await call(worker, "/workflows/oa-demo/execute", { body: { context: { a: 1 } }, expect: 200 });
    assert.equal(ran.body.status, "completed");
    const key = `wf-${Date.now()}`;
    const first = await call(worker, "/workflows/oa-pending/execute", { body: {}, headers: { "idempotency-key": key }, expect: 200 });
    const replay = await call(worker, "/workflows/oa-pending/execute", { body: {}, headers: { "idempotency-key": key }, expect: 200 });
    assert.equal(replay.body.run_id, first.body.run_id);
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    await call(worker, "/workflows/oa-pending/execute", { body: { context: { other: true } }, headers: { "idempotency-key": key }, expect: [422, "idempotency_key_reused"] });
    await call(worker, "/workflows/oa-demo/execute", { body: {}, headers: { "idempotency-key": "bad key" }, expect: [400, "invalid_idempotency_key"] });
    await call(worker, "/workflows/oa-demo/execute", { body: { graph }, expect: [400, "invalid_request"] });
    await call(worker, "/workflows/oa-demo/execute", { body: "", expect: [400, "invalid_json"] });
    await call(worker, "/workflows/oa-demo/execute", { body: "context=1", headers: { "content-type": "multipart/form-data; boundary=x" }, expect: [415, "unsupported_media_type"] });
    await call(worker, "/workflows/oa-demo/execute", { body: { final_callback_url: "ftp://x" }, expect: [400, "invalid_final_callback_url"] });
    await call(worker, "/workflows/bad%20name/execute", { body: {}, expect: [400, "invalid_workflow_name"] });
    await call(worker, "/workflows/missing/execute", { body: {}, expect: [404, "not_found"] });
    await call(worker, "/workflows/oa-demo/execute", { body: JSON.stringify({ pad: "x".repeat(MAX_BODY) }), expect: [413, "payload_too_large"] });
    await call(worker, "/workflows/oa-demo/execute", { body: {}, apiKey: null, expect: [401, "unauthorized"] });
    const many = {
        nodes: [{ id: "in", type: "Input" }, { id: "each", type: "Component", componentId: `${echo.url}/each` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "each", type: "FOREACH", items: "xs" }, { from: "each", to: "out" }],
    };
    await call(worker, "/workflows/oa-many", { method: "PUT", body: many, expect: 200 });
    const running = await call(worker, "/workflows/oa-many/execute", { body: { context: { xs: [1, 2, 3, 4] } }, expect: 202 });
    await runUntil(worker, running.body.run_id, ["completed"]);

    await call(worker, "/workflows/oa-demo", { method: "DELETE", expect: 200 });
    await call(worker, "/workflows/oa-demo", { method: "DELETE", expect: [404, "not_found"] });
    await call(worker, "/workflows/bad%20name", { method: "DELETE", expect: [400, "invalid_workflow_name"] });
    await call(worker, "/workflows/oa-demo", { method: "DELETE", apiKey: null, expect: [401, "unauthorized"] });
});

test("POST /mcp: JSON-RPC answers, notifications, refusals", { timeout: 60_000 }, async () => {
    const rpc = (id, method, params) => ({ jsonrpc: "2.0", ...(id === undefined ? {} : { id }), method, ...(params ? { params } : {}) });
    // A client of revision 2025-06-18 names it on every request after initialize.
    const headers = { "mcp-protocol-version": "2025-06-18" };
    const init = await call(worker, "/mcp", { body: rpc(1, "initialize", { protocolVersion: "2025-06-18" }), expect: 200 });
    assert.equal(init.body.result.serverInfo.name, "arcrun");
    await call(worker, "/mcp", { body: rpc("two", "ping"), expect: 200 });
    const tools = await call(worker, "/mcp", { body: rpc(3, "tools/list"), expect: 200 });
    assert.ok(tools.body.result.tools.length >= 4);
    const ran = await call(worker, "/mcp", { headers, body: rpc(4, "tools/call", { name: "execute_workflow", arguments: { graph: linear(`${pending.url}/mcp`) } }), expect: 200 });
    const runId = ran.body.result.structuredContent.run_id;
    await call(worker, "/mcp", { headers, body: rpc(5, "tools/call", { name: "get_run", arguments: { run_id: runId } }), expect: 200 });
    // To an older client, the same answer as text.
    const asText = await call(worker, "/mcp", { body: rpc(55, "tools/call", { name: "get_run", arguments: { run_id: runId } }), expect: 200 });
    assert.equal(JSON.parse(asText.body.result.content[0].text).run_id, runId);
    await call(worker, "/mcp", { body: rpc(6, "tools/call", { name: "list_runs", arguments: { status: "paused", limit: 5 } }), expect: 200 });
    await call(worker, "/mcp", { body: rpc(7, "tools/call", { name: "cancel_run", arguments: { run_id: runId } }), expect: 200 });
    const refused = await call(worker, "/mcp", { body: rpc(8, "tools/call", { name: "cancel_run", arguments: { run_id: runId } }), expect: 200 });
    assert.equal(refused.body.result.isError, true);
    assert.equal(JSON.parse(refused.body.result.content[0].text).error.code, "run_finished");
    const noTool = await call(worker, "/mcp", { body: rpc(9, "tools/call", { name: "nope" }), expect: 200 });
    assert.equal(noTool.body.error.code, -32602);
    const noMethod = await call(worker, "/mcp", { body: rpc(10, "nope"), expect: 200 });
    assert.equal(noMethod.body.error.code, -32601);
    const note = await call(worker, "/mcp", { body: rpc(undefined, "notifications/initialized"), expect: 202 });
    assert.equal(note.text, "");
    await call(worker, "/mcp", { body: "[1]", expect: 400 });
    await call(worker, "/mcp", { body: "{", expect: 400 });
    await call(worker, "/mcp", { body: { jsonrpc: "2.0", id: 11 }, expect: 400 });
    await call(worker, "/mcp", { body: JSON.stringify({ ...rpc(12, "ping"), pad: "x".repeat(MAX_BODY) }), expect: 413 });
    await call(worker, "/mcp", { body: { jsonrpc: "1.0", id: 14, method: "ping" }, expect: 400 });
    await call(worker, "/mcp", { body: rpc(13, "ping"), apiKey: null, expect: [401, "unauthorized"] });
});

test("a deployment without API keys or a callback secret: 503 misconfigured; bare resume off: 401", { timeout: 60_000 }, async () => {
    const bare = await startWorker({ bindings: { API_KEY_HASHES: "", CALLBACK_SECRET: "" } });
    try {
        const m = "misconfigured";
        await call(bare, "/execute", { body: { graph: linear("comp_passthrough") }, expect: [503, m] });
        await call(bare, "/runs", { expect: [503, m] });
        await call(bare, "/runs/0123456789abcdef-00000000000-aa", { expect: [503, m] });
        await call(bare, "/runs/0123456789abcdef-00000000000-aa/cancel", { method: "POST", expect: [503, m] });
        await call(bare, "/runs/0123456789abcdef-00000000000-aa/retry", { method: "POST", expect: [503, m] });
        await call(bare, "/runs/0123456789abcdef-00000000000-aa/redeliver", { method: "POST", expect: [503, m] });
        await call(bare, "/workflows", { expect: [503, m] });
        await call(bare, "/workflows/x", { expect: [503, m] });
        await call(bare, "/workflows/x", { method: "PUT", body: {}, expect: [503, m] });
        await call(bare, "/workflows/x", { method: "DELETE", expect: [503, m] });
        await call(bare, "/workflows/x/execute", { body: {}, expect: [503, m] });
        await call(bare, "/executions/paused", { expect: [503, m] });
        await call(bare, "/executions/t", { expect: [503, m] });
        await call(bare, "/mcp", { body: { jsonrpc: "2.0", id: 1, method: "ping" }, expect: [503, m] });
        await call(bare, "/callbacks/0123456789abcdef-00000000000-aa/n1?token=1.x", { apiKey: null, body: { task_id: "t" }, expect: [503, m] });
        await call(bare, "/callbacks/0123456789abcdef-00000000000-aa/n1/heartbeat?token=1.x", { apiKey: null, body: {}, expect: [503, m] });
        await call(bare, "/workflows/resume", { apiKey: null, body: { task_id: "t" }, expect: [401, "unauthorized"] });
        await call(bare, "/health", { apiKey: null, expect: 200 });
    } finally {
        await bare.stop();
    }
});

// ---------------------------------------------------------------------------------------------
// The check itself
// ---------------------------------------------------------------------------------------------

test("the fetch wrapper fails the request that receives an undocumented answer", async () => {
    let answer = { status: 200, body: { success: true, ok: true, service: "arcrun", version: "0.1.0" } };
    const fake = http.createServer((req, res) => {
        res.writeHead(answer.status, { "content-type": "application/json; charset=utf-8", "x-arcrun-kv-ops": "reads=0;writes=0;lists=0", ...(answer.headers ?? {}) });
        res.end(typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body));
    });
    await new Promise((r) => fake.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${fake.address().port}`;
    installOpenApiFetchCheck();
    const release = trackOpenApiOrigin(url);
    try {
        // Documented: passes, and the caller still reads the body.
        const ok = await fetch(`${url}/health`);
        assert.equal((await ok.json()).ok, true);
        // Drift in the body.
        answer = { status: 200, body: { success: true, ok: "yes", service: "arcrun", version: "0.1.0" } };
        await assert.rejects(
            fetch(`${url}/health`),
            (err) => err.code === "ERR_OPENAPI_MISMATCH" && /GET \/health → 200: body: \/ok must be equal to constant/.test(err.message),
        );
        // An undocumented status on a documented route.
        answer = { status: 418, body: { success: false, error: { code: "teapot", message: "x" } } };
        await assert.rejects(fetch(`${url}/health`), /GET \/health → 418: status 418 is not documented/);
        // An undocumented route answering 200.
        answer = { status: 200, body: { success: true } };
        await assert.rejects(fetch(`${url}/no/such/route`), /no documented path\) → 200: status 200 is not documented/);
        // A missing cost header.
        answer = { status: 404, body: { success: false, error: { code: "not_found", message: "x" } }, headers: { "x-arcrun-kv-ops": "" } };
        await assert.rejects(fetch(`${url}/nope`), /header x-arcrun-kv-ops/);
        // An error code that does not belong to the status.
        answer = { status: 404, body: { success: false, error: { code: "run_finished", message: "x", status: "completed" } } };
        await assert.rejects(fetch(`${url}/runs/abc`), /\/error\/code must be equal to constant/);
        // Not JSON where JSON is documented.
        answer = { status: 200, body: "<html>", headers: { "content-type": "text/html" } };
        await assert.rejects(fetch(`${url}/runs`), /content-type "text\/html" is not documented/);
        // The documented 404 of an unknown path passes.
        answer = { status: 404, body: { success: false, error: { code: "not_found", message: "no route for /nope" } } };
        assert.equal((await fetch(`${url}/nope`)).status, 404);
        // Once released (a Worker's stop() does this), the origin is no longer checked.
        release();
        answer = { status: 418, body: "anything" };
        assert.equal((await fetch(`${url}/health`)).status, 418);
    } finally {
        release();
        await new Promise((r) => fake.close(r));
    }
});

test("checkAgainstOpenApi matches literal paths before templates, and HEAD by its own operation", () => {
    const h = { "content-type": "application/json", "x-arcrun-kv-ops": "reads=0;writes=0;lists=1" };
    const noop = { success: true, noop: true, reason: "unknown_task" };
    assert.match(checkAgainstOpenApi("POST", "/workflows/resume", 200, h, noop).route, /^POST \/workflows\/resume$/);
    assert.match(checkAgainstOpenApi("GET", "/workflows/resume", 404, h, { success: false, error: { code: "not_found", message: "x" } }).route, /^GET \/workflows\/\{name\}$/);
    assert.deepEqual(checkAgainstOpenApi("GET", "/executions/paused", 200, { ...h, deprecation: "true", link: '</runs?status=paused>; rel="successor-version"' }, { success: true, runs: [] }).problems, []);
    assert.match(checkAgainstOpenApi("GET", "/executions/paused", 200, h, { success: true, runs: [] }).problems.join(), /header deprecation is missing/);
    assert.deepEqual(checkAgainstOpenApi("HEAD", "/runs", 200, h, "").problems, []);
    // A callback noop may not be `unknown_task` (only the legacy route answers that).
    assert.match(checkAgainstOpenApi("POST", "/callbacks/r1/n1", 200, h, noop).problems.join(), /body/);
});

test("coverage: every documented operation was exercised", () => {
    const { doc } = loadOpenApi();
    const missingOps = [];
    const missingStatuses = [];
    for (const [template, item] of Object.entries(doc.paths)) {
        for (const method of ["get", "head", "post", "put", "delete", "options"]) {
            const op = item[method];
            if (!op) continue;
            const route = `${method.toUpperCase()} ${template}`;
            const got = seen.get(route);
            if (!got) {
                missingOps.push(route);
                continue;
            }
            for (const status of Object.keys(op.responses)) if (!got.has(status)) missingStatuses.push(`${route} ${status}`);
        }
    }
    // Only statuses nothing here can provoke may be missing: 500 (a storage failure) and the
    // 503s of routes only a broken deployment answers (tested on the routes that check config first).
    const unprovokable = missingStatuses.filter(
        (s) =>
            !/ (500|503)$/.test(s) && // storage failures; routes whose config is read after the check that fails here
            !/^OPTIONS .* 403$/.test(s) && // the same answer on every path (provoked on some)
            !/^HEAD .* (400|401|404|409|503)$/.test(s) && // the GET twins' refusals (provoked there)
            s !== "POST /workflows/resume 409", // the legacy route finds the wait by its task, so the task always matches
    );
    if (missingStatuses.length) console.log(`[openapi] documented statuses not provoked here: ${missingStatuses.join(", ")}`);
    assert.deepEqual(missingOps, [], "every operation is exercised");
    assert.deepEqual(unprovokable, [], "every provokable status is exercised");
});

// ---------------------------------------------------------------------------------------------
// The README's header promises, on the answers that once broke them
// ---------------------------------------------------------------------------------------------

test(
    "the Worker keeps the README's header promises (x-arcrun-kv-ops on every answer and counting what it cost; x-arcrun-do-ops wherever a gate is reached)",
    async () => {
        const problems = [];
        const strict = async (p, opts) => {
            const r = await call(worker, p, opts);
            problems.push(...r.problems);
            return r;
        };
        await strict("/execute", { method: "OPTIONS", apiKey: null, headers: { origin: "https://evil.example" } });
        await call(worker, "/workflows/oa-strict", { method: "PUT", body: linear("comp_passthrough"), expect: 200 });
        await strict("/workflows/oa-strict/execute", { body: {} });
        const key = `strict-${Date.now()}`;
        await strict("/execute", { body: { graph: linear("comp_passthrough") }, headers: { "idempotency-key": key } });
        await strict("/execute", { body: { graph: linear("comp_passthrough") }, headers: { "idempotency-key": key } });
        const p = await call(worker, "/execute", { body: { graph: linear(`${pending.url}/strict`) }, expect: 200 });
        await strict(`/executions/${encodeURIComponent(p.body.task_id)}`);
        // MCP tools run the routes, but their answer keeps none of the routes' cost headers.
        const listed = await strict("/mcp", { body: { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "list_runs", arguments: {} } } });
        if (!/lists=[1-9]/.test(listed.headers.get("x-arcrun-kv-ops"))) problems.push(`POST /mcp (list_runs) → x-arcrun-kv-ops: ${listed.headers.get("x-arcrun-kv-ops")} (the listing's KV list is not counted)`);
        const got = await strict("/mcp", { body: { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "get_run", arguments: { run_id: p.body.run_id } } } });
        if (!got.headers.get("x-arcrun-do-ops")) problems.push("POST /mcp (get_run) reached the run's gate but has no x-arcrun-do-ops");
        assert.deepEqual(problems, []);
    },
);
