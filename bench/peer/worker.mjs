// The benchmark's peer: Cloudflare Workflows doing what bench/e2e.mjs section (p) asks of
// arcrun, one `WorkflowEntrypoint` step by step, run locally by the same Miniflare/workerd.
//
//   POST /run     {kind, n, context}  create an instance, answer when its run() has returned
//                 kind: "chain" (n steps), "foreach-seq" / "foreach-par" (a list step, then
//                 one step per item, one after another / Promise.all)
//   POST /pause   {context, componentUrl}
//                                     create an instance, answer when its run() has reached
//                                     step.waitForEvent("callback") — after a step that
//                                     starts the remote job: a POST to componentUrl, the same
//                                     loopback component that answers arcrun `pending` in its
//                                     own pause (without one, no such step) (locally the instance
//                                     never shows `waiting`: it stays in memory, `running`;
//                                     an event sent before the waiter is registered is kept)
//   POST /event/{id} {payload}        sendEvent, answer when its run() has returned
//   GET  /status/{id}                 instance.status(), for checking after the clock stops
//
// "Returned" is seen through a flag run() sets in this isolate as it returns its output,
// polled every millisecond: the engine's own bookkeeping after that is not timed, which
// favours the peer slightly. instance.status() is not polled for completion, since it reads
// every step's log each time (a cost that grows with the steps and would count against it).

import { WorkflowEntrypoint } from "cloudflare:workers";

/** What arcrun's `comp_passthrough` does: its input, with the node's data over it. */
const passthrough = (input, data) => ({ ...input, ...data });

/** Instance id → its output, set as run() returns. */
const finished = new Map();
/** Instance ids whose run() has reached step.waitForEvent. */
const waiting = new Set();

export class PeerWorkflow extends WorkflowEntrypoint {
    async run(event, step) {
        const { kind, n = 0, context = {} } = event.payload;
        let out;
        if (kind === "chain") {
            let ctx = context;
            for (let i = 1; i <= n; i++) ctx = await step.do(`n${i}`, async () => passthrough(ctx, { step: i }));
            out = ctx;
        } else if (kind === "foreach-seq" || kind === "foreach-par") {
            const list = await step.do("list", async () => passthrough(context, {}));
            const each = (item, index) =>
                step.do(`each-${index}`, async () => passthrough(item, { label: `#${index} ${item.name}`, sku: item.sku }));
            let results;
            if (kind === "foreach-seq") {
                results = [];
                for (let i = 0; i < list.items.length; i++) results.push(await each(list.items[i], i));
            } else results = await Promise.all(list.items.map(each));
            out = { results };
        } else if (kind === "pause") {
            const { componentUrl } = event.payload;
            const before = await step.do("before", async () => {
                if (!componentUrl) return passthrough(context, {});
                const res = await fetch(componentUrl, {
                    method: "POST",
                    headers: { "content-type": "application/json" },
                    body: JSON.stringify(context),
                });
                return passthrough(context, { job: await res.json() });
            });
            waiting.add(event.instanceId);
            const callback = await step.waitForEvent("callback", { type: "callback", timeout: "1 hour" });
            out = await step.do("after", async () => passthrough(before, { got: callback.payload }));
        } else throw new Error(`unknown kind ${kind}`);
        finished.set(event.instanceId, out);
        return out;
    }
}

const json = (body, status = 200) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const tick = () => new Promise((r) => setTimeout(r, 1));

async function whenFinished(id, timeoutMs = 120_000) {
    const deadline = Date.now() + timeoutMs;
    while (!finished.has(id)) {
        if (Date.now() > deadline) throw new Error(`instance ${id} did not finish within ${timeoutMs} ms`);
        await tick();
    }
    const out = finished.get(id);
    finished.delete(id);
    return out;
}

export default {
    async fetch(request, env) {
        const url = new URL(request.url);
        const [, verb, id] = url.pathname.split("/");
        try {
            if (request.method === "GET" && verb === "health") return json({ ok: true });
            if (request.method === "GET" && verb === "status") return json(await (await env.PEER.get(id)).status());
            const body = request.method === "POST" ? await request.json() : {};
            if (verb === "run") {
                const instance = await env.PEER.create({ params: body });
                const output = await whenFinished(instance.id);
                return json({ id: instance.id, status: "completed", output });
            }
            if (verb === "pause") {
                const instance = await env.PEER.create({ params: { kind: "pause", context: body.context ?? {}, componentUrl: body.componentUrl } });
                const deadline = Date.now() + 60_000;
                while (!waiting.has(instance.id)) {
                    if (Date.now() > deadline) return json({ id: instance.id, error: "never reached waitForEvent" }, 500);
                    await tick();
                }
                waiting.delete(instance.id);
                return json({ id: instance.id, status: "paused" });
            }
            if (verb === "event") {
                const instance = await env.PEER.get(id);
                await instance.sendEvent({ type: "callback", payload: body.payload ?? null });
                const output = await whenFinished(id);
                return json({ id, status: "completed", output });
            }
            return json({ error: "not found" }, 404);
        } catch (err) {
            return json({ error: String(err?.stack ?? err) }, 500);
        }
    },
};
