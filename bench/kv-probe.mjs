// The built Worker with its RUNS namespace counted at the binding, for the end-to-end
// benchmark: every get, put, list and delete the Worker or its RunGate objects make is
// tallied here, independently of what the Worker reports in its x-arcrun-kv-ops header.
// The RunGate objects' own storage (the call journal, the alarm and its meta) is tallied
// too, against the x-arcrun-do-ops header.
//
// Served by workerd like build/index.js (modules resolved from the repository root).
// `GET /__kv-probe` answers the running totals; every other request goes to the Worker.
// Every put and delete is also tallied per key — the bytes of each put's value (and of its
// metadata), and the time (Date.now()) of each write — so that the answer can say how many
// bytes were put in all, and, for each key named by `?key=…` (repeatable), how many writes
// it took and the most of them within any 1,000 ms (Cloudflare refuses a second write to a
// key within a second); `?busiest=1` adds the key with the most writes within 1,000 ms.
// Behind the harness's KV write limiter (a wrapped binding) the probe wraps the limiter's
// object: it counts every write attempted, refused ones included (as `refused`).
// The front Worker and the Durable Objects share one isolate locally, hence one tally —
// which also takes in what alarm invocations do, though they answer no request.

import Engine, { RunGate as EngineGate, TriggerClaim } from "../build/index.js";
// Idempotency claims pass through uncounted by class (their storage is their own).
export { TriggerClaim };

const tally = { reads: 0, writes: 0, lists: 0, deletes: 0 };

/**
 * Durable Object storage operations of every RunGate. Journal entries (keys `outcome:…`)
 * are told apart from the rest (the gate's meta, kept requests, events turned away), so the
 * journal's cost per call can be read; all of them together compare with x-arcrun-do-ops
 * (reads = gets and lists, writes = puts, deletes = keys deleted).
 */
const doTally = {
    journal_lists: 0,
    journal_puts: 0,
    journal_deleted_keys: 0,
    journal_delete_calls: 0,
    other_gets: 0,
    other_lists: 0,
    other_puts: 0,
    other_deletes: 0,
    alarm_sets: 0,
    alarm_deletes: 0,
    alarm_gets: 0,
    unknown: 0,
};

const JOURNAL_PREFIX = "outcome:";
const isJournal = (key) => typeof key === "string" && key.startsWith(JOURNAL_PREFIX);

/** Bytes put (values and metadata), over all keys. */
const bytesTally = { bytes_put: 0, metadata_bytes_put: 0, unmeasured_puts: 0 };
/** Per key: {puts, deletes, bytes, metadata_bytes, refused, times: [Date.now() of each write]}. */
const perKey = new Map();
const utf8 = new TextEncoder();

/** Bytes of a KV value as put: text as UTF-8, binary as is; null for a stream (not read here). */
function valueBytes(value) {
    if (typeof value === "string") return utf8.encode(value).byteLength;
    if (value instanceof ArrayBuffer) return value.byteLength;
    if (ArrayBuffer.isView(value)) return value.byteLength;
    return null;
}

function keyEntry(key) {
    const k = String(key);
    let e = perKey.get(k);
    if (!e) {
        e = { puts: 0, deletes: 0, bytes: 0, metadata_bytes: 0, refused: 0, times: [] };
        perKey.set(k, e);
    }
    return e;
}

/** Counts a refused write (a call that threw or rejected) against its key; passes the result on. */
function watchRefusal(entry, call) {
    let result;
    try {
        result = call();
    } catch (err) {
        entry.refused += 1;
        throw err;
    }
    if (result && typeof result.then === "function") {
        return result.then(undefined, (err) => {
            entry.refused += 1;
            throw err;
        });
    }
    return result;
}

/** The most writes among `times` (ascending) within any 1,000 ms (t_last - t_first < 1000). */
function maxWithinSecond(times) {
    let most = 0;
    let first = 0;
    for (let last = 0; last < times.length; last++) {
        while (times[last] - times[first] >= 1000) first++;
        most = Math.max(most, last - first + 1);
    }
    return most;
}

/** A key's report: writes, bytes put, refusals, the most writes within 1,000 ms and the closest two. */
function keyStats(key) {
    const e = perKey.get(key);
    if (!e) return { key, writes: 0, puts: 0, deletes: 0, bytes: 0, metadata_bytes: 0, refused: 0, max_writes_per_1000ms: 0, min_gap_ms: null };
    const times = [...e.times].sort((a, b) => a - b);
    let minGap = null;
    for (let i = 1; i < times.length; i++) minGap = minGap === null ? times[i] - times[i - 1] : Math.min(minGap, times[i] - times[i - 1]);
    return {
        key,
        writes: e.puts + e.deletes,
        puts: e.puts,
        deletes: e.deletes,
        bytes: e.bytes,
        metadata_bytes: e.metadata_bytes,
        refused: e.refused,
        max_writes_per_1000ms: maxWithinSecond(times),
        min_gap_ms: minGap,
        first_at: times[0] ?? null,
        last_at: times.at(-1) ?? null,
    };
}

function countingNamespace(kv) {
    const counted = (name, field) =>
        function (...args) {
            tally[field] += 1;
            return kv[name](...args);
        };
    return {
        get: counted("get", "reads"),
        getWithMetadata: counted("getWithMetadata", "reads"),
        put(key, value, options) {
            tally.writes += 1;
            const entry = keyEntry(key);
            entry.puts += 1;
            entry.times.push(Date.now());
            const bytes = valueBytes(value);
            if (bytes === null) bytesTally.unmeasured_puts += 1;
            else {
                entry.bytes += bytes;
                bytesTally.bytes_put += bytes;
            }
            if (options?.metadata !== undefined) {
                const meta = utf8.encode(JSON.stringify(options.metadata)).byteLength;
                entry.metadata_bytes += meta;
                bytesTally.metadata_bytes_put += meta;
            }
            return watchRefusal(entry, () => kv.put(key, value, options));
        },
        list: counted("list", "lists"),
        delete(key, ...rest) {
            tally.deletes += 1;
            const entry = keyEntry(key);
            entry.deletes += 1;
            entry.times.push(Date.now());
            return watchRefusal(entry, () => kv.delete(key, ...rest));
        },
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
            else doTally.other_lists += 1;
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
        const url = new URL(request.url);
        if (url.pathname === "/__kv-probe") {
            const answer = { ...tally, ...bytesTally, written_keys: perKey.size, do: { ...doTally } };
            const keys = url.searchParams.getAll("key");
            if (keys.length) answer.keys = Object.fromEntries(keys.map((k) => [k, keyStats(k)]));
            if (url.searchParams.get("busiest")) {
                let busiest = null;
                for (const k of perKey.keys()) {
                    const st = keyStats(k);
                    if (!busiest || st.max_writes_per_1000ms > busiest.max_writes_per_1000ms) busiest = st;
                }
                answer.busiest = busiest;
            }
            return Response.json(answer);
        }
        return super.fetch(request);
    }
}
