//! The engine's core: graph model, validation, templating, the run state
//! machine, its stored format and the segment logic. It knows nothing of
//! Cloudflare; time, ids and storage are passed in.

pub mod answer;
pub mod auth;
pub mod budget;
pub mod builtins;
pub mod callback;
pub mod claim;
pub mod condition;
pub mod dates;
pub mod driver;
pub mod effect;
pub mod error;
pub mod fields;
pub mod gate;
pub mod graph;
pub mod listing;
pub mod memory;
pub mod outbound;
pub mod pacing;
pub mod plan;
pub mod progress;
pub mod protocol;
pub mod record;
pub mod redact;
pub mod run;
pub mod schema;
pub mod scope;
pub mod segment;
pub mod store;
pub mod stored;
pub mod template;
pub mod view;
pub mod webhook;
