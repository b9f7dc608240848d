//! What the front Worker asks of a run's gate, as JSON between the two. It
//! is written with serde and read by hand from a `Value`: the derived reader
//! would cost the module a parser per variant, several KB, for a message
//! only this Worker writes.

use serde::Serialize;
use serde_json::{Map, Value};

/// What the front Worker asks of a run's gate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateRequest {
    Start {
        run_id: String,
        graph: Value,
        context: Map<String, Value>,
        base_url: String,
        owner: Option<String>,
        #[serde(default)]
        final_callback_url: Option<String>,
        #[serde(default)]
        workflow: Option<String>,
        #[serde(default)]
        depth: u32,
        #[serde(default)]
        parent: Option<String>,
    },
    Callback {
        run_id: String,
        wait_id: String,
        body: Value,
        base_url: String,
        #[serde(default)]
        token_expires_at: Option<u64>,
    },
    Heartbeat {
        run_id: String,
        wait_id: String,
        body: Value,
        token_expires_at: u64,
    },
    Read {
        run_id: String,
        owner: Option<String>,
    },
    Cancel {
        run_id: String,
        owner: Option<String>,
    },
    Redeliver {
        run_id: String,
        owner: Option<String>,
    },
    Retry {
        run_id: String,
        owner: Option<String>,
    },
    /// Never sent: what the gate keeps of a continuation its alarm ran
    /// before the record could be written, so a replay runs it in order.
    Wake { run_id: String },
}

impl GateRequest {
    /// Reads what `serde_json::to_string(&request)` wrote (variants tagged
    /// in snake case; fields the writer may leave out are optional).
    pub fn parse(text: &str) -> Option<Self> {
        let Value::Object(outer) = serde_json::from_str(text).ok()? else {
            return None;
        };
        let (tag, fields) = outer.into_iter().next()?;
        let Value::Object(mut f) = fields else {
            return None;
        };
        let run_id = string(&mut f, "run_id")?;
        Some(match tag.as_str() {
            "start" => Self::Start {
                run_id,
                graph: f.remove("graph")?,
                context: match f.remove("context")? {
                    Value::Object(context) => context,
                    _ => return None,
                },
                base_url: string(&mut f, "base_url")?,
                owner: string(&mut f, "owner"),
                final_callback_url: string(&mut f, "final_callback_url"),
                workflow: string(&mut f, "workflow"),
                depth: number(&f, "depth").unwrap_or(0).try_into().ok()?,
                parent: string(&mut f, "parent"),
            },
            "callback" => Self::Callback {
                run_id,
                wait_id: string(&mut f, "wait_id")?,
                body: f.remove("body")?,
                base_url: string(&mut f, "base_url")?,
                token_expires_at: number(&f, "token_expires_at"),
            },
            "heartbeat" => Self::Heartbeat {
                run_id,
                wait_id: string(&mut f, "wait_id")?,
                body: f.remove("body")?,
                token_expires_at: number(&f, "token_expires_at")?,
            },
            "read" => Self::Read {
                run_id,
                owner: string(&mut f, "owner"),
            },
            "cancel" => Self::Cancel {
                run_id,
                owner: string(&mut f, "owner"),
            },
            "redeliver" => Self::Redeliver {
                run_id,
                owner: string(&mut f, "owner"),
            },
            "retry" => Self::Retry {
                run_id,
                owner: string(&mut f, "owner"),
            },
            "wake" => Self::Wake { run_id },
            _ => return None,
        })
    }
}

fn string(fields: &mut Map<String, Value>, key: &str) -> Option<String> {
    match fields.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn number(fields: &Map<String, Value>, key: &str) -> Option<u64> {
    fields.get(key).and_then(Value::as_u64)
}
