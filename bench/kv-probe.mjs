// The built Worker with its RUNS namespace counted at the binding, for the end-to-end
// benchmark: every get, put, list and delete the Worker or its RunGate objects make is
// tallied here, independently of what the Worker reports in its x-arcrun-kv-ops header.
//
// Served by workerd like build/index.js (modules resolved from the repository root).
// `GET /__kv-probe` answers the running totals; every other request goes to the Worker.
// The front Worker and the Durable Objects share one isolate locally, hence one tally.

import Engine, { RunGate as EngineGate } from "../build/index.js";

const tally = { reads: 0, writes: 0, lists: 0, deletes: 0 };

function countingNamespace(kv) {
    const counted = (name, field) =>
        function (...args) {
            tally[field] += 1;
            return kv[name](...args);
        };
    return {
        get: counted("get", "reads"),
        getWithMetadata: counted("getWithMetadata", "reads"),
        put: counted("put", "writes"),
        list: counted("list", "lists"),
        delete: counted("delete", "deletes"),
    };
}

function countingEnv(env) {
    let runs;
    return new Proxy(env, {
        get(target, prop) {
            const value = Reflect.get(target, prop);
            if (prop !== "RUNS" || value === undefined) return value;
            runs ??= countingNamespace(value);
            return runs;
        },
    });
}

export class RunGate extends EngineGate {
    constructor(state, env) {
        super(state, countingEnv(env));
    }
}

export default class extends Engine {
    constructor(ctx, env) {
        super(ctx, countingEnv(env));
    }

    async fetch(request) {
        if (new URL(request.url).pathname === "/__kv-probe") {
            return Response.json({ ...tally });
        }
        return super.fetch(request);
    }
}
