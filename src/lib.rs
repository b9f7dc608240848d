//! arcrun: a resumable workflow engine for Cloudflare Workers.
//!
//! `core` is plain Rust (graph, validation, templating, run state machine);
//! `adapter` binds it to Workers (routes, KV, Durable Objects, fetch, clock).

pub mod core;

#[cfg(target_arch = "wasm32")]
mod adapter;
