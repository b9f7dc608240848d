// The built Worker with its RUNS namespace counted at the binding, for the end-to-end
// benchmark: every get, put, list and delete the Worker or its RunGate objects make is
// tallied here, independently of what the Worker reports in its x-arcrun-kv-ops header.
// The RunGate objects' own storage (the call journal, the alarm and its meta) is tallied
// too, against the x-arcrun-do-ops header.
//
// Served by workerd like build/index.js (modules resolved from the repository root).
// `GET /__kv-probe` answers the running totals; every other request goes to the Worker.
// The front Worker and the Durable Objects share one isolate locally, hence one tally —
// which also takes in what alarm invocations do, though they answer no request.

import Engine, { RunGate as EngineGate, TriggerClaim } from "../build/index.js";
// Idempotency claims pass through uncounted by class (their storage is their own).
export { TriggerClaim };

const tally = { reads: 0, writes: 0, lists: 0, deletes: 0 };

/**
 * Durable Object storage operations of every RunGate. Journal entries (keys `outcome:…`)
 * are told apart from the gate's meta, so that they compare with x-arcrun-do-ops
 * (reads = journal lists, writes = journal puts, deletes = journal keys deleted).
 */
const doTally = {
    journal_lists: 0,
    journal_puts: 0,
    journal_deleted_keys: 0,
    journal_delete_calls: 0,
    other_gets: 0,
    other_puts: 0,
    other_deletes: 0,
    alarm_sets: 0,
    alarm_deletes: 0,
    alarm_gets: 0,
    unknown: 0,
};

const JOURNAL_PREFIX = "outcome:";
const isJournal = (key) => typeof key === "string" && key.startsWith(JOURNAL_PREFIX);

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

/** Counts one storage call by what it touches. */
function countStorage(name, args) {
    const [first, options] = args;
    switch (name) {
        case "get":
            doTally.other_gets += 1;
            break;
        case "put":
            if (typeof first === "object" && first !== null) {
                for (const key of Object.keys(first)) isJournal(key) ? (doTally.journal_puts += 1) : (doTally.other_puts += 1);
            } else if (isJournal(first)) doTally.journal_puts += 1;
            else doTally.other_puts += 1;
            break;
        case "delete": {
            const keys = Array.isArray(first) ? first : [first];
            const journal = keys.filter(isJournal).length;
            if (journal > 0) {
                doTally.journal_deleted_keys += journal;
                doTally.journal_delete_calls += 1;
            }
            doTally.other_deletes += keys.length - journal;
            break;
        }
        case "list":
            if (isJournal(options?.prefix ?? first?.prefix)) doTally.journal_lists += 1;
            else doTally.unknown += 1;
            break;
        case "setAlarm":
            doTally.alarm_sets += 1;
            break;
        case "deleteAlarm":
            doTally.alarm_deletes += 1;
            break;
        case "getAlarm":
            doTally.alarm_gets += 1;
            break;
        default:
            doTally.unknown += 1;
    }
}

const COUNTED_STORAGE = new Set(["get", "put", "delete", "list", "setAlarm", "deleteAlarm", "getAlarm", "deleteAll", "transaction"]);

/** The object's storage, every call counted; methods run against the real one. */
function countingStorage(storage) {
    return new Proxy(storage, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (typeof value !== "function") return value;
            if (!COUNTED_STORAGE.has(prop)) return value.bind(target);
            return (...args) => {
                // list() takes its options first
                countStorage(prop, prop === "list" ? [undefined, args[0]] : args);
                return value.apply(target, args);
            };
        },
    });
}

/** The object's state with its storage counted. */
function countingState(state) {
    let storage;
    return new Proxy(state, {
        get(target, prop) {
            const value = Reflect.get(target, prop, target);
            if (prop === "storage" && value) {
                storage ??= countingStorage(value);
                return storage;
            }
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
        if (new URL(request.url).pathname === "/__kv-probe") {
            return Response.json({ ...tally, do: { ...doTally } });
        }
        return super.fetch(request);
    }
}
