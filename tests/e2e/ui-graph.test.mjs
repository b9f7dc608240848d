// The run as a picture and the actions on /ui, in a real headless Chromium (Debian's
// `chromium`, scripts/chromium.sh) against the built Worker: `graph` and `nodes` in
// GET /runs/{id}, the SVG laid out by dagre (served from public/vendor/), node states, edge
// labels, the paused marker with its deadline, FOREACH "n of m" updating live, a node's
// details, retry / cancel / redeliver with their confirmations and the API's answers, and the
// runs list (several statuses, a workflow, refreshing by itself, open waits, 1280 px).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";

import { chromium } from "playwright-core";

import {
    TEST_API_KEY,
    startWorker,
    startComponent,
    pendingComponent,
    postCallback,
    waitUntil,
    waitForStatus,
} from "./harness.mjs";
import { kvCaughtUp } from "./settle.mjs";

function chromiumPath() {
    if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
    if (existsSync("/usr/lib/chromium/chromium")) return "/usr/lib/chromium/chromium";
    try {
        return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim();
    } catch {
        throw new Error("chromium is not installed: run scripts/chromium.sh (apt-get install chromium)");
    }
}

let worker, pend, flaky, receiver, browser;
let flakyFails = true; // the flaky component fails until a test lets it succeed

before(async () => {
    pend = await pendingComponent();
    flaky = await startComponent(() => (flakyFails ? { success: false, error: "disk on fire" } : { fixed: true }));
    receiver = await startComponent(() => ({ ok: true }));
    worker = await startWorker();
    browser = await chromium.launch({
        executablePath: chromiumPath(),
        headless: true,
        args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    });
}, { timeout: 120_000 });

after(async () => {
    await browser?.close();
    try {
        await worker?.stop();
    } finally {
        await pend?.close();
        await flaky?.close();
        await receiver?.close();
    }
}, { timeout: 120_000 });

async function newPage(width = 1440) {
    const context = await browser.newContext({ viewport: { width, height: 1000 } });
    const page = await context.newPage();
    page.errors = [];
    page.on("pageerror", (err) => page.errors.push(err.message));
    page.on("console", (msg) => { if (msg.type() === "error") page.errors.push(msg.text()); });
    return page;
}

/** Opens /ui with the key, straight at a run when given. */
async function openUi(page, runId) {
    await page.goto(`${worker.url}/ui`);
    await page.fill("#api-key", TEST_API_KEY);
    await page.click("#key-save");
    if (runId) {
        await page.goto(`${worker.url}/ui#run/${runId}`);
        await page.waitForFunction((id) => document.getElementById("run-id").textContent === id && document.getElementById("run").dataset.status, runId);
    }
}

const nodeStatuses = (page) => page.$$eval("[data-testid=graph-node]", (gs) => Object.fromEntries(gs.map((g) => [g.dataset.node, g.dataset.status])));
const untilStatus = (page, status) => page.waitForFunction((s) => document.getElementById("run").dataset.status === s, status, { timeout: 20_000 });

const waitGraph = (name, p) => ({
    name,
    nodes: [
        { id: "in", type: "Input" },
        { id: "ask", type: "Component", componentId: `${pend.url}/${p}?token=sekrit`, data: { question: "{{q}}" } },
        { id: "out", type: "Output", data: { answer: "{{ask.answer}}" } },
    ],
    edges: [
        { from: "in", to: "ask", type: "PIPE" },
        { from: "ask", to: "out", type: "ON_SUCCESS" },
    ],
});

async function start(graph, extra = {}) {
    const t = await worker.fetchJson("/execute", { body: { graph, ...extra } });
    assert.ok([200, 202].includes(t.status), t.text);
    return t.body.run_id;
}

test("GET /runs/{id} carries the run's graph and where each node stands", { timeout: 60_000 }, async () => {
    const runId = await start(waitGraph("api view", "api"), { context: { q: "why" } });
    const paused = (await waitForStatus(worker, runId, ["paused"])).body;
    assert.deepEqual(paused.graph.edges.map((e) => `${e.from}>${e.to}:${e.type}`), ["in>ask:PIPE", "ask>out:ON_SUCCESS"]);
    // The component's URL is shown as callers see URLs: no query (where the token sits).
    assert.equal(paused.graph.nodes[1].componentId, `${pend.url}/api`);
    assert.deepEqual(paused.nodes, [
        { id: "in", status: "succeeded" },
        { id: "ask", status: "paused", component: `${pend.url}/api` },
        { id: "out", status: "waiting" },
    ]);
    assert.ok(!JSON.stringify(paused).includes("sekrit"));

    const call = pend.calls.at(-1);
    const cb = await postCallback(call.callbackUrl, call.taskId, { success: true, data: { answer: 1 } });
    assert.equal(cb.status, 200, cb.text);
    // Completed: its node states are released, and the nodes are read from its trace.
    const done = (await waitForStatus(worker, runId, ["completed"])).body;
    assert.deepEqual(done.nodes.map((n) => n.status), ["succeeded", "succeeded", "succeeded"]);
});

test("the picture: states, edge labels, the paused marker and deadline, FOREACH n of m live, a node's details", { timeout: 120_000 }, async () => {
    const graph = {
        name: "ui picture",
        nodes: [
            { id: "in", type: "Input" },
            { id: "each", type: "Component", componentId: `${pend.url}/each` },
            { id: "gather", type: "Component", componentId: "comp_passthrough" },
            { id: "out", type: "Output" },
        ],
        edges: [
            { from: "in", to: "each", type: "FOREACH", items: "xs" },
            { from: "each", to: "gather", type: "ON_SUCCESS" },
            { from: "gather", to: "out", type: "PIPE" },
        ],
    };
    const before = pend.calls.length;
    const runId = await start(graph, { context: { xs: [1, 2, 3, 4, 5] } });
    const api = (await waitForStatus(worker, runId, ["paused"])).body;
    await waitUntil("five item calls", () => pend.calls.length - before >= 5);
    const calls = pend.calls.slice(before);
    assert.deepEqual(api.nodes[1].items, { total: 5, succeeded: 0, failed: 0, paused: 5, running: 0, queued: 0 });

    const page = await newPage();
    try {
        await openUi(page, runId);
        await untilStatus(page, "paused");
        // Every node drawn, laid out left to right; every edge labelled with its type.
        assert.equal(await page.locator("[data-testid=graph-node]").count(), 4);
        const xs = await page.$$eval("[data-testid=graph-node]", (gs) => gs.map((g) => g.getBoundingClientRect().x));
        assert.ok(xs[0] < xs[1] && xs[1] < xs[2] && xs[2] < xs[3], `left to right: ${xs}`);
        const labels = await page.$$eval("[data-testid=edge-label]", (ls) => ls.map((l) => `${l.dataset.from}>${l.dataset.to}:${l.textContent}`));
        assert.deepEqual(labels.sort(), ["each>gather:ON_SUCCESS", "gather>out:PIPE", "in>each:FOREACH"]);
        assert.deepEqual(await nodeStatuses(page), { in: "succeeded", each: "paused", gather: "waiting", out: "waiting" });
        // Colour by state comes from the stylesheet.
        const fill = (id) => page.$eval(`[data-node=${id}] .n-box`, (r) => getComputedStyle(r).fill);
        assert.notEqual(await fill("in"), await fill("each"));
        // The paused node carries a visible marker and its wait's deadline.
        const each = page.locator("[data-testid=graph-node][data-node=each]");
        assert.ok(await each.locator("[data-testid=paused-marker]").isVisible());
        assert.equal(await page.locator("[data-node=in] [data-testid=paused-marker]").isVisible(), false);
        const earliest = Math.min(...api.waits.map((w) => w.expires_at));
        assert.equal(Number(await each.getAttribute("data-deadline")), earliest);
        // As the node shows it: the time (UTC), with the date when it is not today's.
        const deadlineText = await each.locator("[data-testid=node-deadline]").textContent();
        const iso = new Date(earliest).toISOString();
        const shownDeadline = iso.slice(0, 10) === new Date().toISOString().slice(0, 10) ? iso.slice(11, 16) : iso.slice(5, 16).replace("T", " ");
        assert.match(deadlineText, new RegExp(`^until ${shownDeadline} · in (23|24) h$`), deadlineText);
        assert.equal(await page.locator("[data-node=in] [data-testid=node-deadline]").textContent(), "");
        assert.equal(await each.locator("[data-testid=node-status-line]").textContent(), "0 of 5 done");

        // Three items call back: the open page shows 3 of 5 by itself.
        for (const c of calls.slice(0, 3)) {
            const r = await postCallback(c.callbackUrl, c.taskId, { success: true, data: { v: 1 } });
            assert.equal(r.status, 200, r.text);
        }
        await page.waitForFunction(() => document.querySelector("[data-node=each] [data-testid=node-status-line]").textContent === "3 of 5 done", null, { timeout: 20_000 });
        assert.match(await each.locator("[data-testid=node-extra]").textContent(), /2 paused/);

        // Clicking a node shows its trace entries, what goes in, output and error.
        await each.click();
        const details = page.locator("[data-testid=node-details]");
        await details.waitFor();
        assert.equal(await details.getAttribute("data-node"), "each");
        const apiNow = (await worker.fetchJson(`/runs/${runId}`)).body;
        assert.equal(await details.locator("[data-testid=node-trace-row]").count(), apiNow.trace.filter((e) => e.node_id === "each").length);
        assert.match(await details.locator("[data-testid=node-items]").textContent(), /3 of 5 done — 3 succeeded, 0 failed, 2 paused/);
        const input = JSON.parse(await details.locator("[data-testid=node-input]").textContent());
        assert.deepEqual(input.from, ["in (FOREACH)"]);
        assert.equal(input.foreach.items, "xs");
        assert.equal(await details.locator("[data-testid=node-component]").textContent(), `${pend.url}/each`);
        assert.equal(await details.locator("[data-testid=node-error]").textContent(), "(none)");
        // An inner node's own output comes from GET /runs/{id}/nodes/{node}, while the run holds it.
        await page.locator("[data-testid=graph-node][data-node=in]").click();
        await page.waitForFunction(() => {
            const d = document.querySelector("[data-testid=node-details]");
            return d.dataset.node === "in" && d.querySelector("[data-testid=node-output]").textContent.startsWith("{");
        }, null, { timeout: 10_000 });
        const inOutput = JSON.parse(await page.locator("[data-testid=node-output]").textContent());
        assert.deepEqual(inOutput.xs, [1, 2, 3, 4, 5]);

        // The rest call back: the run completes, every node turns green, the Output node shows the result.
        for (const c of calls.slice(3)) await postCallback(c.callbackUrl, c.taskId, { success: true, data: { v: 2 } });
        await untilStatus(page, "completed");
        assert.deepEqual(await nodeStatuses(page), { in: "succeeded", each: "succeeded", gather: "succeeded", out: "succeeded" });
        assert.equal(await each.locator("[data-testid=node-status-line]").textContent(), "5 of 5 done");
        await page.locator("[data-testid=graph-node][data-node=out]").click();
        await page.waitForFunction(() => document.querySelector("[data-testid=node-details]").dataset.node === "out");
        const out = JSON.parse(await page.locator("[data-testid=node-output]").textContent());
        const final = (await worker.fetchJson(`/runs/${runId}`)).body;
        assert.deepEqual(out, final.data);
        // A completed run keeps only its result: an inner node says so.
        await page.locator("[data-testid=graph-node][data-node=in]").click();
        await page.waitForFunction(() => /keeps only its result/.test(document.querySelector("[data-testid=node-output]")?.textContent ?? ""), null, { timeout: 10_000 });
        // Nothing came from elsewhere and nothing broke (the CSP would report inline styles).
        assert.deepEqual(page.errors, []);
    } finally {
        await page.context().close();
    }
});

test("retry a failed run from the page: confirm, the API's answer, the run completes", { timeout: 120_000 }, async () => {
    flakyFails = true;
    const runId = await start({
        name: "ui retry",
        nodes: [{ id: "in", type: "Input" }, { id: "boom", type: "Component", componentId: `${flaky.url}/boom` }, { id: "out", type: "Output" }],
        edges: [{ from: "in", to: "boom", type: "PIPE" }, { from: "boom", to: "out", type: "PIPE" }],
    });
    await waitForStatus(worker, runId, ["failed"]);
    const page = await newPage();
    try {
        await openUi(page, runId);
        await untilStatus(page, "failed");
        assert.deepEqual(await nodeStatuses(page), { in: "succeeded", boom: "failed", out: "waiting" });
        assert.equal(await page.isDisabled("#act-cancel"), true);
        assert.equal(await page.isDisabled("#act-redeliver"), true, "no final callback was asked for");
        await page.locator("[data-testid=graph-node][data-node=boom]").click();
        assert.match(await page.locator("[data-testid=node-error]").textContent(), /disk on fire/);

        // Declined: nothing is sent.
        page.once("dialog", (d) => d.dismiss());
        await page.click("#act-retry");
        await page.waitForTimeout(300);
        assert.equal(await page.locator("[data-testid=action-result]").isVisible(), false);
        assert.equal((await worker.fetchJson(`/runs/${runId}`)).body.status, "failed");

        flakyFails = false;
        let asked = "";
        page.once("dialog", (d) => { asked = d.message(); d.accept(); });
        await page.click("#act-retry");
        await page.waitForFunction(() => ["ok", "refused"].includes(document.querySelector("[data-testid=action-result]").dataset.state));
        assert.match(asked, /Retry this failed run/);
        assert.ok(asked.includes(runId), asked);
        assert.equal(await page.getAttribute("[data-testid=action-result]", "data-state"), "ok");
        assert.match(await page.textContent("[data-testid=action-summary]"), /^Retry: 200 — the run is completed$/);
        const answer = JSON.parse(await page.textContent("[data-testid=action-body]"));
        assert.equal(answer.run_id, runId);
        assert.equal(answer.attempt, 1);
        await untilStatus(page, "completed");
        assert.deepEqual(await nodeStatuses(page), { in: "succeeded", boom: "succeeded", out: "succeeded" });
        assert.equal(await page.isDisabled("#act-retry"), true);
        assert.deepEqual(page.errors, []);
    } finally {
        await page.context().close();
    }
});

test("cancel an open run and redeliver a final callback from the page", { timeout: 120_000 }, async () => {
    const runId = await start(waitGraph("ui cancel", "cancel"), { final_callback_url: receiver.url });
    await waitForStatus(worker, runId, ["paused"]);
    const page = await newPage();
    try {
        await openUi(page, runId);
        await untilStatus(page, "paused");
        assert.equal(await page.isDisabled("#act-retry"), true);
        assert.equal(await page.isDisabled("#act-redeliver"), true, "the run is still open");
        page.once("dialog", (d) => d.accept());
        await page.click("#act-cancel");
        await page.waitForFunction(() => document.querySelector("[data-testid=action-result]").dataset.state === "ok");
        assert.match(await page.textContent("[data-testid=action-summary]"), /^Cancel: 200 — the run is cancelled$/);
        await untilStatus(page, "cancelled");
        assert.deepEqual(await nodeStatuses(page), { in: "succeeded", ask: "cancelled", out: "waiting" });
        assert.equal((await worker.fetchJson(`/runs/${runId}`)).body.status, "cancelled");

        // The final callback is sent once the run is cancelled; then it can be sent again.
        const delivered = await waitUntil("the first delivery", async () => {
            const r = (await worker.fetchJson(`/runs/${runId}`)).body;
            return r.final_callback?.state === "delivered" && r;
        }, { timeoutMs: 20_000, everyMs: 300 });
        await page.waitForFunction(() => !document.getElementById("act-redeliver").disabled, null, { timeout: 10_000 });
        const hits = receiver.hits();
        page.once("dialog", (d) => d.accept());
        await page.click("#act-redeliver");
        await page.waitForFunction(() => document.querySelector("[data-testid=action-result]")?.dataset.action === "redeliver" && document.querySelector("[data-testid=action-result]").dataset.state === "ok");
        assert.match(await page.textContent("[data-testid=action-summary]"), /^Redeliver: 202 — the run is cancelled$/);
        assert.equal(JSON.parse(await page.textContent("[data-testid=action-body]")).final_callback.state, "retrying");
        await waitUntil("the redelivery", () => receiver.hits() > hits, { timeoutMs: 20_000 });
        await page.waitForFunction((n) => document.querySelectorAll("[data-testid=delivery]").length > n, delivered.deliveries.length, { timeout: 20_000 });

        // Cancelling a finished run: the API's refusal is shown, not hidden.
        await page.evaluate(() => { document.getElementById("act-cancel").disabled = false; });
        page.once("dialog", (d) => d.accept());
        await page.click("#act-cancel");
        await page.waitForFunction(() => document.querySelector("[data-testid=action-result]").dataset.action === "cancel" && document.querySelector("[data-testid=action-result]").dataset.state === "refused");
        assert.match(await page.textContent("[data-testid=action-summary]"), /^Cancel refused: 409 run_finished/);
        assert.deepEqual(page.errors.filter((e) => !/409/.test(e)), []);
    } finally {
        await page.context().close();
    }
});

test("the runs list: several statuses, a workflow, refreshing by itself, open waits, 1280 px", { timeout: 120_000 }, async () => {
    const a = await start(waitGraph("list alpha", "alpha"));
    const b = await start(waitGraph("list beta", "beta"));
    await waitForStatus(worker, a, ["paused"]);
    await waitForStatus(worker, b, ["paused"]);
    // The API's filter by workflow: one run.
    await kvCaughtUp(worker, b);
    const byName = (await worker.fetchJson(`/runs?workflow=${encodeURIComponent("list alpha")}`)).body;
    assert.deepEqual(byName.runs.map((r) => r.run_id), [a]);
    const both = (await worker.fetchJson(`/runs?workflow=${encodeURIComponent("list alpha")}&status=paused,failed`)).body;
    assert.deepEqual(both.runs.map((r) => r.run_id), [a]);
    assert.deepEqual((await worker.fetchJson(`/runs?workflow=${encodeURIComponent("list alpha")}&status=completed`)).body.runs, []);

    const page = await newPage(1280);
    try {
        await openUi(page);
        await page.locator(`tr[data-run-id="${b}"]`).waitFor();
        // Every column inside its box: nothing to scroll sideways, no header past the edge.
        const fits = await page.evaluate(() => {
            const box = document.querySelector("#runs").parentElement;
            const right = box.getBoundingClientRect().right;
            return { scroll: box.scrollWidth, client: box.clientWidth, over: [...document.querySelectorAll("#runs th")].filter((th) => th.getBoundingClientRect().right > right + 0.5).map((th) => th.textContent) };
        });
        assert.ok(fits.scroll <= fits.client, JSON.stringify(fits));
        assert.deepEqual(fits.over, []);
        // The total of open waits over the runs listed.
        const listed = await page.$$eval("[data-testid=run-row-waits]", (tds) => tds.reduce((n, td) => n + Number(td.dataset.waits), 0));
        assert.ok(listed >= 2);
        assert.equal(Number(await page.getAttribute("[data-testid=runs-waits]", "data-total")), listed);
        assert.match(await page.textContent("[data-testid=runs-waits]"), new RegExp(`^${listed}\\+? open waits in the \\d+ runs listed$`));

        // A workflow's runs only.
        await page.fill("#workflow-filter", "list beta");
        await page.click("#workflow-form button[type=submit]");
        await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=run-row]")].length === 1);
        assert.equal(await page.locator(`tr[data-run-id="${b}"]`).count(), 1);

        // Several statuses: paused and failed, any workflow.
        await page.fill("#workflow-filter", "");
        await page.check("#status-filter input[value=paused]");
        await page.check("#status-filter input[value=failed]");
        await page.waitForFunction(() => {
            const rows = [...document.querySelectorAll("[data-testid=run-row]")];
            return rows.length >= 2 && rows.every((r) => ["paused", "failed"].includes(r.querySelector("[data-testid=run-row-status]").textContent));
        });

        // A run started now appears without a click (the list refreshes by itself).
        const c = await start(waitGraph("list gamma", "gamma"));
        await page.locator(`tr[data-run-id="${c}"]`).waitFor({ timeout: 20_000 });
        // Unticked, it stays as it is.
        await page.uncheck("#runs-auto");
        const d = await start(waitGraph("list delta", "delta"));
        await kvCaughtUp(worker, d);
        await page.waitForTimeout(6000);
        assert.equal(await page.locator(`tr[data-run-id="${d}"]`).count(), 0);
        assert.deepEqual(page.errors, []);
    } finally {
        await page.context().close();
    }
});
