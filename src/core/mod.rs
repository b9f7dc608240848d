//! The engine's core: graph model, validation, templating and the run state
//! machine. It knows nothing of Cloudflare; time and ids are passed in.

pub mod auth;
pub mod builtins;
pub mod callback;
pub mod compact;
pub mod condition;
pub mod driver;
pub mod error;
pub mod executor;
pub mod graph;
pub mod plan;
pub mod record;
pub mod redact;
pub mod scope;
pub mod template;
pub mod view;
