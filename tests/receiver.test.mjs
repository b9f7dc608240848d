// The reference receiver verifies final callbacks the way the Standard Webhooks specification
// says: checked here against deliveries signed by the `standardwebhooks` package (an
// implementation nobody here wrote), tampered ones, stale ones and retries.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";

import { startReceiver, verifyDelivery } from "../daemon/receiver.mjs";

const SECRET = "whsec_" + Buffer.from("receiver-test-key-of-32-bytes!!!").toString("base64");
const OLD = "whsec_" + Buffer.from("the-previous-key-of-32-bytes!!!!").toString("base64");

function signed(secret, id, body, when = new Date()) {
    return {
        "webhook-id": id,
        "webhook-timestamp": String(Math.floor(when.getTime() / 1000)),
        "webhook-signature": new Webhook(secret).sign(id, when, body),
    };
}

test("verifies what standardwebhooks signs, with either secret while rotating", () => {
    const body = JSON.stringify({ type: "run.completed", run_id: "r1", status: "completed" });
    assert.equal(verifyDelivery(body, signed(SECRET, "msg_1", body), [SECRET]).run_id, "r1");
    assert.equal(verifyDelivery(body, signed(OLD, "msg_1", body), [SECRET, OLD]).type, "run.completed");
    assert.throws(() => verifyDelivery(body, signed(OLD, "msg_1", body), [SECRET]), /signature/);
    assert.throws(() => verifyDelivery(body + " ", signed(SECRET, "msg_1", body), [SECRET]), /signature/);
    const stale = signed(SECRET, "msg_1", body, new Date(Date.now() - 3_600_000));
    assert.throws(() => verifyDelivery(body, stale, [SECRET]), /too old/);
    assert.throws(() => verifyDelivery(body, {}, [SECRET]), /missing/);
});

test("over HTTP: accepts, recognises a retry, refuses a forgery", async () => {
    const lines = [];
    const receiver = await startReceiver({ secrets: [SECRET], log: (l) => lines.push(l) });
    try {
        const body = JSON.stringify({ type: "run.failed", run_id: "r2", status: "failed", error: { code: "wait_timeout" } });
        const send = (headers) => fetch(receiver.url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
        assert.equal((await send(signed(SECRET, "msg_r2_failed", body))).status, 204);
        assert.equal((await send(signed(SECRET, "msg_r2_failed", body))).status, 204, "a retry is acknowledged");
        assert.equal((await send(signed(OLD, "msg_r2_failed", body))).status, 401);
        assert.deepEqual(receiver.stats(), { verified: 1, refused: 1 });
        assert.deepEqual(lines.map((l) => l.event), ["delivery_verified", "delivery_repeated", "delivery_refused"]);
    } finally {
        await receiver.close();
    }
});
