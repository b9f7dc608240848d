// The built Worker (build/index.js) with its bindings counted where the runtime serves them,
// for tests/e2e/guarantees.test.mjs. Counted here, independently of anything the Worker says
// about itself (its x-arcrun-kv-ops / x-arcrun-do-ops headers):
//
// - kv:      every call on the RUNS KV namespace (get, getWithMetadata, put, list, delete),
//            whether the front Worker or a RunGate object makes it;
// - do:      Durable Object work requested through the RUN_GATE namespace binding: stubs taken
//            (`get`), requests sent to them (`fetch` = Durable Object requests), ids made;
// - storage: every call a RunGate object makes on its own storage (get, put, delete, list,
//            setAlarm, getAlarm, deleteAlarm, …), by method.
//
// `GET /__probe` answers the running totals. `POST /__probe/log?m=<text>` writes <text> with
// console.log and console.error (a positive control for tests that read the Worker's logs).
// Every other request goes to the Worker unchanged. The front Worker and the RunGate objects
// run in one isolate locally, so one module-level tally sees both (and alarm invocations too).
//
// Served by workerd with modules resolved from the repository root (see startProbedWorker in
// guarantees.test.mjs).

import Engine, { RunGate as EngineGate, TriggerClaim } from "../../build/index.js";
// Idempotency claims pass through uncounted by class (their storage is their own).
export { TriggerClaim };

const tally = {
    kv: { get: 0, getWithMetadata: 0, put: 0, list: 0, delete: 0 },
    do: { idFromName: 0, idFromString: 0, newUniqueId: 0, get: 0, fetch: 0 },
    storage: {},
};

function countingKv(kv) {
    const counted = (name) =>
        function (...args) {
            tally.kv[name] += 1;
            return kv[name](...args);
        };
    return {
        get: counted("get"),
        getWithMetadata: counted("getWithMetadata"),
        put: counted("put"),
        list: counted("list"),
        delete: counted("delete"),
    };
}

/** A Durable Object stub whose requests are counted. */
function countingStub(stub) {
    return new Proxy(stub, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (prop === "fetch" && typeof value === "function") {
                return (...args) => {
                    tally.do.fetch += 1;
                    return value.apply(target, args);
                };
            }
            if (prop === "constructor" || typeof value !== "function") return value;
            return value.bind(target);
        },
    });
}

/**
 * The RUN_GATE namespace, counted. workers-rs checks a binding's `constructor.name`
 * ("DurableObjectNamespace"), so `constructor` is handed out as it is, never bound.
 */
function countingNamespace(ns) {
    return new Proxy(ns, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (prop === "constructor" || typeof value !== "function") return value;
            if (prop === "get") {
                return (...args) => {
                    tally.do.get += 1;
                    return countingStub(value.apply(target, args));
                };
            }
            if (prop in tally.do) {
                return (...args) => {
                    tally.do[prop] += 1;
                    return value.apply(target, args);
                };
            }
            return value.bind(target);
        },
    });
}

function countingEnv(env) {
    let runs;
    let gate;
    return new Proxy(env, {
        get(target, prop) {
            const value = Reflect.get(target, prop);
            if (value === undefined) return value;
            if (prop === "RUNS") return (runs ??= countingKv(value));
            if (prop === "RUN_GATE") return (gate ??= countingNamespace(value));
            return value;
        },
    });
}

/** A RunGate's storage with every method call counted by name. */
function countingStorage(storage) {
    return new Proxy(storage, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (typeof value !== "function" || prop === "constructor") return value;
            return (...args) => {
                tally.storage[prop] = (tally.storage[prop] ?? 0) + 1;
                return value.apply(target, args);
            };
        },
    });
}

function countingState(state) {
    let storage;
    return new Proxy(state, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (prop === "storage" && value) return (storage ??= countingStorage(value));
            return typeof value === "function" ? value.bind(target) : value;
        },
    });
}

export class RunGate extends EngineGate {
    constructor(state, env) {
        super(countingState(state), countingEnv(env));
    }
}

export default class extends Engine {
    constructor(ctx, env) {
        super(ctx, countingEnv(env));
    }

    async fetch(request) {
        const url = new URL(request.url);
        if (url.pathname === "/__probe") {
            return Response.json({ kv: { ...tally.kv }, do: { ...tally.do }, storage: { ...tally.storage } });
        }
        if (url.pathname === "/__probe/log") {
            const m = url.searchParams.get("m") ?? "";
            console.log(m);
            console.error(m);
            return Response.json({ logged: m });
        }
        return super.fetch(request);
    }
}
