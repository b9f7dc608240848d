//! Deployment configuration, read from vars and secrets: once per request in
//! the front Worker, once per object in a run's gate.

use std::collections::BTreeMap;

use worker::Env;

use super::http::ApiError;
use crate::core::auth::{parse_key_hashes, KeyHash};
use crate::core::budget::ChildBudget;
use std::rc::Rc;

use crate::core::plan::{Directory, GraphLimits};
use crate::core::redact::Redactor;
use crate::core::run::Settings;
use crate::core::segment::GateConfig;
use crate::core::webhook::parse_secret;

pub const RUNS_KV: &str = "RUNS";
pub const RUN_GATE: &str = "RUN_GATE";
pub const TRIGGER_CLAIM: &str = "TRIGGER_CLAIM";

const MIN_TTL_SECS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Config {
    /// Base of every callback URL; `None` means "the origin the request came to".
    pub public_base_url: Option<String>,
    pub retention_secs: u64,
    pub component_timeout_ms: u64,
    /// Largest component response read; a larger one fails the call.
    pub max_component_response_bytes: usize,
    /// Child runs one root run's tree may start, and how fast.
    pub child_budget: ChildBudget,
    pub max_body_bytes: usize,
    /// Largest run record written to KV (whose own limit is 25 MiB).
    pub max_record_bytes: usize,
    pub limits: GraphLimits,
    pub settings: Settings,
    pub directory: Directory,
    /// The current callback secret first, then the previous one if rotating.
    pub callback_secrets: Vec<String>,
    pub bare_resume: bool,
    /// Origins a browser may call the API from (CORS); empty: none.
    pub allowed_origins: Vec<String>,
    /// Standard Webhooks keys for the final callback (current first).
    pub webhook_keys: Vec<Vec<u8>>,
    /// `final_callback_url` may be plain http to any host (else loopback only).
    pub allow_http_callbacks: bool,
    pub delivery_window_ms: u64,
    /// SHA-256 hashes of the API keys; empty means none configured (fail closed).
    pub api_key_hashes: Vec<KeyHash>,
    pub redactor: Redactor,
}

impl Config {
    /// The current callback secret, or the error that says how to set one.
    pub fn signing_secret(&self) -> Result<&str, ApiError> {
        self.callback_secrets
            .first()
            .map(String::as_str)
            .ok_or_else(|| {
                ApiError::Misconfigured(
                    "CALLBACK_SECRET is not set: run `wrangler secret put CALLBACK_SECRET` \
                 (locally, put it in .dev.vars)"
                        .into(),
                )
            })
    }

    pub fn from_env(env: &Env) -> Result<Self, String> {
        let var = |name: &str| {
            env.var(name)
                .ok()
                .map(|v| v.to_string())
                .filter(|v| !v.trim().is_empty())
        };
        let secret = |name: &str| {
            env.secret(name)
                .ok()
                .map(|v| v.to_string())
                .or_else(|| var(name))
                .filter(|v| !v.trim().is_empty())
        };
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name} must be a whole number, got '{v}'")),
            }
        };
        let paused_ttl_secs = number("PAUSED_RUN_TTL_SECONDS", 24 * 3600)?
            .clamp(MIN_TTL_SECS, crate::core::graph::MAX_WAIT_SECONDS);
        let retention_secs =
            number("FINISHED_RUN_RETENTION_SECONDS", 7 * 24 * 3600)?.max(MIN_TTL_SECS);
        let component_timeout_ms = number("COMPONENT_TIMEOUT_SECONDS", 120)?.max(1) * 1000;
        let max_component_response_bytes =
            number("MAX_COMPONENT_RESPONSE_BYTES", 4 << 20)?.max(1) as usize;
        // The free plan allows 50 subrequests per invocation; 45 leaves room.
        let max_calls_per_segment = number("MAX_SUBREQUESTS_PER_INVOCATION", 45)?.max(1) as usize;
        let directory = match var("COMPONENTS") {
            None => Directory::default(),
            Some(json) => Directory::new(
                serde_json::from_str::<BTreeMap<String, String>>(&json)
                    .map_err(|e| format!("COMPONENTS must be a JSON object of name → URL: {e}"))?,
            ),
        };
        let mut callback_secrets = Vec::new();
        if let Some(s) = secret("CALLBACK_SECRET") {
            callback_secrets.push(s);
            if let Some(prev) = secret("CALLBACK_SECRET_PREVIOUS") {
                callback_secrets.push(prev);
            }
        }
        let mut webhook_keys = Vec::new();
        for name in ["WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS"] {
            if let Some(text) = secret(name) {
                webhook_keys
                    .push(parse_secret(&text).map_err(|e| e.replace("WEBHOOK_SECRET", name))?);
            }
        }
        let defaults = GraphLimits::default();
        let max_record_bytes = number("MAX_RUN_RECORD_BYTES", 24 << 20)?.min(25 << 20) as usize;
        let max_wait_ms = number("MAX_WAIT_SECONDS", 7 * 24 * 3600)?
            .clamp(MIN_TTL_SECS, crate::core::graph::MAX_WAIT_SECONDS)
            * 1000;
        Ok(Self {
            public_base_url: var("PUBLIC_BASE_URL").map(|u| u.trim_end_matches('/').to_string()),
            retention_secs,
            component_timeout_ms,
            max_component_response_bytes,
            child_budget: ChildBudget {
                limit: number("MAX_CHILD_RUNS", 100)?.min(u32::MAX as u64) as u32,
                per_second: number("MAX_CHILD_RUNS_PER_SECOND", 10)?.clamp(1, u32::MAX as u64)
                    as u32,
            },
            max_body_bytes: number("MAX_BODY_BYTES", 1 << 20)? as usize,
            max_record_bytes,
            limits: GraphLimits {
                max_nodes: number("MAX_NODES", defaults.max_nodes as u64)? as usize,
                max_edges: number("MAX_EDGES", defaults.max_edges as u64)? as usize,
            },
            settings: Settings {
                wait_ttl_ms: paused_ttl_secs * 1000,
                max_wait_ms,
                call_timeout_ms: component_timeout_ms,
                max_template_bytes: number(
                    "MAX_TEMPLATE_BYTES",
                    Settings::default().max_template_bytes as u64,
                )? as usize,
                max_foreach_items: number(
                    "MAX_FOREACH_ITEMS",
                    Settings::default().max_foreach_items as u64,
                )? as usize,
                // Everything a run holds is stored, so it may hold no more than a record.
                max_run_bytes: max_record_bytes,
                max_calls_per_segment,
            },
            directory,
            callback_secrets,
            bare_resume: var("ALLOW_BARE_RESUME").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            allowed_origins: var("ALLOWED_ORIGINS")
                .unwrap_or_default()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|o| !o.is_empty())
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            webhook_keys,
            allow_http_callbacks: var("ALLOW_HTTP_CALLBACKS")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            delivery_window_ms: number("FINAL_CALLBACK_RETRY_SECONDS", 24 * 3600)?.max(1) * 1000,
            api_key_hashes: match secret("API_KEY_HASHES") {
                Some(text) => parse_key_hashes(&text)?,
                None => Vec::new(),
            },
            redactor: Redactor::with_extra(
                var("REDACT_FIELDS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty()),
            ),
        })
    }
}

impl Config {
    /// The base of callback URLs for a request that came to `url`:
    /// `PUBLIC_BASE_URL`, or else the origin the request arrived at.
    pub fn base_url(&self, url: &worker::Url) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| url.origin().ascii_serialization())
    }

    /// What a run's gate needs from the configuration.
    pub fn gate_config(&self) -> GateConfig {
        GateConfig {
            settings: self.settings,
            directory: self.directory.clone(),
            limits: self.limits,
            max_record_bytes: self.max_record_bytes,
            retention_secs: self.retention_secs,
            index_tasks: self.bare_resume,
            callback_secret: self.callback_secrets.first().map(|s| Rc::from(s.as_str())),
            webhook_keys: self.webhook_keys.clone(),
            delivery_window_ms: self.delivery_window_ms,
            redactor: self.redactor.clone(),
        }
    }
}
