//! The component result protocol: how an answer says it failed or is still
//! pending, and the failure values the engine itself produces. Shared by the
//! run state machine and the stored format, which both need to know which
//! fields describe a node's own outcome rather than data flowing on.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A result's status fields describe that one node's outcome. They stay out
/// of the context that flows downstream (read them by node id, e.g.
/// `{{fetch.error}}`), or one failure would make every later node that echoes
/// its input look failed too. A resumed node's `task_id` is its own for the
/// same reason: carried on, the next component in a chain of pauses would
/// receive the previous task's id as if it were its own.
pub const RESULT_STATUS_KEYS: [&str; 4] = ["success", "error", "pending", "task_id"];

/// A result as the protocol reads it: by its top-level fields. Implemented
/// by plain JSON and by a node's output as the run holds it
/// (`record::NodeOutput`), which need not be copied out to be read.
pub trait Fielded {
    fn field(&self, key: &str) -> Option<&Value>;
}

impl Fielded for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

/// A result is a failure when `success === false`, or `error` is present and not null.
pub fn is_failure(output: &(impl Fielded + ?Sized)) -> bool {
    output.field("success") == Some(&Value::Bool(false))
        || output.field("error").is_some_and(|e| !e.is_null())
}

/// The human-readable reason of a failed result, `None` for a success.
pub fn error_text(output: &(impl Fielded + ?Sized)) -> Option<String> {
    if !is_failure(output) {
        return None;
    }
    Some(match output.field("error") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| Value::Object(o.clone()).to_string(), str::to_string),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "the component reported success: false".into(),
    })
}

/// The machine-readable code of a failed result: its `error.code` (a
/// component's own, or the engine's `wait_timeout`), else the `error_code`
/// the engine puts beside a text `error` (`coded_failure`).
pub fn error_code(output: &(impl Fielded + ?Sized)) -> Option<&str> {
    output
        .field("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .or_else(|| output.field("error_code")?.as_str())
}

/// A failure the engine reports for a node: `{"success": false, "error"}`,
/// plus the HTTP status when there was one.
pub fn failure(status: Option<u16>, error: &str) -> Value {
    let mut out = json!({ "success": false, "error": error });
    if let Some(s) = status {
        out["status"] = json!(s);
    }
    out
}

/// A failure with a machine-readable `error_code` beside its text. The
/// `error` stays a string, as nodes downstream (`{{fetch.error}}`) and
/// clients of the engine we descend from read it.
pub fn coded_failure(status: Option<u16>, error: &str, code: &str) -> Value {
    let mut out = failure(status, error);
    out["error_code"] = json!(code);
    out
}

/// The code of a node that failed because a template reference in its data
/// named nothing, in a graph with `strict_templates`.
pub const UNRESOLVED_TEMPLATE: &str = "unresolved_template";

/// Why an outbound call (a component, a status poll, a final callback) got
/// no usable answer. Each is a stable `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallFailure {
    /// The host name did not resolve.
    DnsFailure,
    /// The TLS handshake failed (not TLS at the other end, a bad certificate).
    TlsFailure,
    /// No answer within the engine's own deadline for the call.
    Timeout,
    /// The connection failed in a way the runtime does not tell apart:
    /// refused, reset or closed before the answer (see `core::outbound`).
    ConnectionFailed,
    /// An answer other than `2xx`.
    HttpStatus,
    /// A redirect, which is not followed.
    Redirect,
    /// A `2xx` answer whose body is not JSON.
    NotJson,
    /// An answer past `MAX_COMPONENT_RESPONSE_BYTES`.
    ResponseTooLarge,
}

impl CallFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::DnsFailure => "dns_failure",
            Self::TlsFailure => "tls_failure",
            Self::Timeout => "timeout",
            Self::ConnectionFailed => "connection_failed",
            Self::HttpStatus => "http_status",
            Self::Redirect => "redirect",
            Self::NotJson => "not_json",
            Self::ResponseTooLarge => "response_too_large",
        }
    }
}

/// The output of a node whose wait passed its deadline with no callback.
pub fn wait_timeout(task_id: &str, waited_ms: u64) -> Value {
    json!({
        "success": false,
        "task_id": task_id,
        "error": {
            "code": "wait_timeout",
            "message": format!(
                "no callback for task '{task_id}' within its deadline ({} s)",
                waited_ms.div_ceil(1000)
            ),
        },
    })
}

/// The deepest JSON the engine takes in — request bodies, component answers,
/// node outputs. A stored record nests what it holds about ten levels deeper,
/// and must stay within the JSON reader's own limit (128) to load again.
pub const MAX_JSON_DEPTH: usize = 100;

/// How deeply `v` nests (a scalar is 0, `[]` and `{}` are 1), without recursion.
pub fn json_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(depth + 1);
                stack.extend(fields.values().map(|f| (f, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The failure of a result nested deeper than `MAX_JSON_DEPTH`.
pub fn too_deep(what: &str) -> Value {
    failure(
        None,
        &format!("{what} nests JSON more than {MAX_JSON_DEPTH} levels deep"),
    )
}

/// The longest `task_id` a pending answer may carry: it is stored with the
/// run and shown in its answers, so a component cannot make it grow them.
pub const MAX_TASK_ID_BYTES: usize = 1024;

/// How an answer asks the run to wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Pending {
    /// A valid pending answer: wait for this task's callback.
    Task(String),
    /// `pending: true` without a usable task id: a failure.
    NoTaskId,
    /// A task id longer than `MAX_TASK_ID_BYTES`: a failure.
    TaskIdTooLong(usize),
}

/// A task id as a daemon sends it: a string, or a number (daemons that
/// number their tasks), taken as its decimal text. `None` for anything else.
pub fn task_id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(t) => Some(t.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `None` when the answer is not pending.
pub fn pending(output: &Value) -> Option<Pending> {
    if output.get("pending") != Some(&Value::Bool(true)) {
        return None;
    }
    Some(match output.get("task_id").and_then(task_id_text) {
        Some(t) if t.len() > MAX_TASK_ID_BYTES => Pending::TaskIdTooLong(t.len()),
        Some(t) if !t.trim().is_empty() => Pending::Task(t),
        _ => Pending::NoTaskId,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_and_pending_detection() {
        assert!(is_failure(&json!({"success": false})));
        assert!(is_failure(&json!({"error": "x"})));
        assert!(!is_failure(&json!({"error": null})));
        assert!(!is_failure(&json!({"success": true})));
        assert_eq!(
            pending(&json!({"pending": true, "task_id": "t"})),
            Some(Pending::Task("t".into()))
        );
        assert_eq!(
            pending(&json!({"pending": true, "task_id": " "})),
            Some(Pending::NoTaskId)
        );
        assert_eq!(pending(&json!({"pending": "yes"})), None);
        assert_eq!(
            pending(&json!({"pending": true, "task_id": 12345})),
            Some(Pending::Task("12345".into())),
            "a numbered task is its decimal text"
        );
        assert_eq!(
            pending(&json!({"pending": true, "task_id": [1]})),
            Some(Pending::NoTaskId)
        );
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(
            pending(&json!({"pending": true, "task_id": "x".repeat(1025)})),
            Some(Pending::TaskIdTooLong(1025))
        );
        let timeout = wait_timeout("t1", 2_000);
        assert!(is_failure(&timeout));
        assert_eq!(error_code(&timeout), Some("wait_timeout"));
        assert!(error_text(&timeout).unwrap().contains("t1"));
    }
}
