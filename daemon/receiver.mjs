// A small receiver for arcrun's final callbacks: verifies every delivery per the Standard
// Webhooks specification (HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the
// whsec_ secret; several secrets while rotating), refuses stale timestamps, recognises
// retries of a delivery it already has by webhook-id, and logs one JSON line per delivery.
//
//   WEBHOOK_SECRET=whsec_… node daemon/receiver.mjs --port 9000
//   (then pass "final_callback_url": "http://127.0.0.1:9000/hooks" to /execute)
//
// Importable too: `startReceiver({ port, host, secrets, toleranceSecs, log })`.

import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";
import { pathToFileURL } from "node:url";

/** How far a delivery's timestamp may be from now (the specification suggests 5 minutes). */
export const DEFAULT_TOLERANCE_SECS = 300;

function keyOf(secret) {
    if (!secret.startsWith("whsec_")) throw new Error("a webhook secret looks like whsec_<base64>");
    return Buffer.from(secret.slice("whsec_".length), "base64");
}

/**
 * Checks one delivery. Returns the parsed event, or throws an Error saying why it is refused.
 * @param {string} body the raw request body
 * @param {Record<string, string | undefined>} headers lower-case header names
 * @param {string[]} secrets whsec_ secrets, any of which may have signed it
 */
export function verifyDelivery(body, headers, secrets, { nowSecs = Date.now() / 1000, toleranceSecs = DEFAULT_TOLERANCE_SECS } = {}) {
    const id = headers["webhook-id"];
    const timestamp = headers["webhook-timestamp"];
    const signatures = headers["webhook-signature"];
    if (!id || !timestamp || !signatures) throw new Error("missing webhook-id, webhook-timestamp or webhook-signature");
    if (!/^\d+$/.test(timestamp)) throw new Error("webhook-timestamp is not a number of seconds");
    if (Math.abs(nowSecs - Number(timestamp)) > toleranceSecs) throw new Error("webhook-timestamp is too old or too new");
    const signed = Buffer.from(`${id}.${timestamp}.${body}`);
    const expected = secrets.map((s) => createHmac("sha256", keyOf(s)).update(signed).digest());
    const valid = signatures.split(" ").some((entry) => {
        const [version, value] = entry.split(",", 2);
        if (version !== "v1" || !value) return false;
        const given = Buffer.from(value, "base64");
        return expected.some((e) => e.length === given.length && timingSafeEqual(e, given));
    });
    if (!valid) throw new Error("no valid v1 signature");
    return JSON.parse(body);
}

/** Starts the receiver; resolves once it listens. */
export async function startReceiver({ port = 0, host = "127.0.0.1", secrets, toleranceSecs = DEFAULT_TOLERANCE_SECS, log = (line) => console.log(JSON.stringify(line)) } = {}) {
    if (!secrets?.length) throw new Error("startReceiver needs at least one webhook secret");
    secrets.forEach(keyOf);
    const events = []; // accepted deliveries, first of each webhook-id
    const seen = new Set();
    let refused = 0;
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", () => {
            const body = Buffer.concat(chunks).toString("utf8");
            let event;
            try {
                if (req.method !== "POST") throw new Error("use POST");
                event = verifyDelivery(body, req.headers, secrets, { toleranceSecs });
            } catch (err) {
                refused += 1;
                log({ event: "delivery_refused", reason: err.message, at: new Date().toISOString() });
                res.writeHead(401, { "content-type": "application/json" });
                return res.end(JSON.stringify({ error: err.message }));
            }
            const id = req.headers["webhook-id"];
            const duplicate = seen.has(id);
            if (!duplicate) {
                seen.add(id);
                events.push(event);
            }
            log({ event: duplicate ? "delivery_repeated" : "delivery_verified", webhook_id: id, type: event.type, run_id: event.run_id, status: event.status, at: new Date().toISOString() });
            res.writeHead(204);
            res.end();
        });
    });
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, resolve);
    });
    const { port: bound } = server.address();
    return {
        url: `http://${host}:${bound}/hooks`,
        port: bound,
        events: () => events.slice(),
        stats: () => ({ verified: events.length, refused }),
        close: () => new Promise((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
        }),
    };
}

const USAGE = "usage: WEBHOOK_SECRET=whsec_… [WEBHOOK_SECRET_PREVIOUS=whsec_…] node daemon/receiver.mjs [--port N] [--host H]";

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
    const args = process.argv.slice(2);
    const opt = (name, fallback) => {
        const i = args.indexOf(name);
        return i >= 0 ? args[i + 1] : fallback;
    };
    if (args.includes("--help")) {
        console.log(USAGE);
        process.exit(0);
    }
    const secrets = [process.env.WEBHOOK_SECRET, process.env.WEBHOOK_SECRET_PREVIOUS].filter(Boolean);
    if (secrets.length === 0) {
        console.error(`WEBHOOK_SECRET is not set\n${USAGE}`);
        process.exit(2);
    }
    const receiver = await startReceiver({ port: Number(opt("--port", "9000")), host: opt("--host", "127.0.0.1"), secrets });
    console.log(JSON.stringify({ event: "listening", url: receiver.url }));
}
