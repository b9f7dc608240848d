//! Every answer the API sends, as a type that serializes to exactly what is
//! sent. The OpenAPI document is generated from these types (`src/bin/gen-docs.rs`),
//! so a field added here is a field documented there.
//!
//! One meaning per word, the same in every answer:
//! - `success` is `false` exactly when the request failed (an error answer,
//!   any 4xx or 5xx) or the run the answer reports on has failed or been
//!   cancelled; `true` otherwise (a run completed, running or paused, a
//!   callback that changed nothing, a listing).
//! - `status` is a run's status (`RunStatus`), wherever it appears.
//! - `error.code` names one kind of problem (`ErrorCode`).

mod catalog;
mod error;
mod mcp;
mod request;
mod run;

pub use catalog::*;
pub use error::*;
pub use mcp::*;
pub use request::*;
pub use run::*;

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, Serializer};

/// Serializes as `true`, documented as `const: true`: a field whose presence
/// is the message (`paused: true`, `noop: true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct True;

/// Serializes as `false`, documented as `const: false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct False;

impl Serialize for True {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl Serialize for False {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

impl JsonSchema for True {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "True".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": true })
    }
}

impl JsonSchema for False {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "False".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": false })
    }
}

/// Unix milliseconds, as every time in the API is given.
pub type Timestamp = u64;

/// Text that is sent as `null` when there is none (a field always present).
pub struct TextOrNull;

impl JsonSchema for TextOrNull {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "TextOrNull".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "oneOf": [{ "type": "string" }, { "type": "null" }] })
    }
}
