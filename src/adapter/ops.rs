//! What an answer cost: the storage operations counted for one request,
//! and the headers that report them. Every module that stores, or relays
//! another's answer, reaches for these; they need nothing but `http`.

use worker::{Headers, Response};

use super::http::{ApiError, REPLAYED_HEADER};

/// Storage operations performed for one request, reported in response
/// headers (`x-arcrun-kv-ops`, `x-arcrun-do-ops`) so cost is measured, not
/// estimated. For Durable Object storage, `reads` counts list calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ops {
    pub reads: u32,
    pub writes: u32,
    pub lists: u32,
    pub deletes: u32,
}

pub type KvOps = Ops;

impl Ops {
    pub const HEADER: &'static str = "x-arcrun-kv-ops";
    pub const DO_HEADER: &'static str = "x-arcrun-do-ops";

    pub fn header_value(self) -> String {
        format!(
            "reads={};writes={};lists={}",
            self.reads, self.writes, self.lists
        )
    }

    pub fn do_header_value(self) -> String {
        format!(
            "reads={};writes={};deletes={}",
            self.reads, self.writes, self.deletes
        )
    }

    /// The KV counts as a log line gives them.
    pub fn kv_log(self) -> serde_json::Value {
        serde_json::json!({"reads": self.reads, "writes": self.writes, "lists": self.lists})
    }

    /// The Durable Object storage counts as a log line gives them.
    pub fn do_log(self) -> serde_json::Value {
        serde_json::json!({"reads": self.reads, "writes": self.writes, "deletes": self.deletes})
    }

    /// What was counted after `before`.
    pub fn since(self, before: Ops) -> Ops {
        Ops {
            reads: self.reads.saturating_sub(before.reads),
            writes: self.writes.saturating_sub(before.writes),
            lists: self.lists.saturating_sub(before.lists),
            deletes: self.deletes.saturating_sub(before.deletes),
        }
    }

    /// Adds the counts found in another response's header.
    pub fn absorb(&mut self, header: &str) {
        for part in header.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let n: u32 = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "reads" => self.reads += n,
                "writes" => self.writes += n,
                "lists" => self.lists += n,
                "deletes" => self.deletes += n,
                _ => {}
            }
        }
    }
}

/// Answers with `ops` in the KV-operations header, keeping what the answer
/// said of its gate's Durable Object operations and of an idempotent replay.
/// A response relayed from the gate has immutable headers, so it is rebuilt
/// rather than edited.
pub async fn with_kv_ops(mut response: Response, ops: KvOps) -> Result<Response, ApiError> {
    let status = response.status_code();
    let kept: Vec<(&str, String)> = [KvOps::DO_HEADER, REPLAYED_HEADER]
        .into_iter()
        .filter_map(|name| Some((name, response.headers().get(name).ok().flatten()?)))
        .collect();
    let text = response.text().await?;
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set(KvOps::HEADER, &ops.header_value())?;
    for (name, value) in kept {
        headers.set(name, &value)?;
    }
    Ok(Response::ok(text)?
        .with_status(status)
        .with_headers(headers))
}
