//! Credential redaction for everything the engine shows: responses and run
//! details. Components still receive real values; only what is displayed is
//! masked.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Field names that mark credentials. A field matches when its normalised
/// name (lowercase, `-` as `_`) equals one of these, or has one as its first
/// or last `_`-separated part: `access_token` and `db_password` match, while
/// `max_tokens` and `tokens_used` do not.
const DEFAULT_NAMES: [&str; 11] = [
    "authorization",
    "api_key",
    "apikey",
    "token",
    "password",
    "passwd",
    "secret",
    "credential",
    "credentials",
    "cookie",
    // Carries the signed callback token; only the component needs it.
    "callback_url",
];

#[derive(Debug, Clone)]
pub struct Redactor {
    names: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::with_extra(std::iter::empty::<&str>())
    }
}

impl Redactor {
    /// The default names plus `extra` (for example from `REDACT_FIELDS`).
    pub fn with_extra<S: AsRef<str>>(extra: impl IntoIterator<Item = S>) -> Self {
        let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(
            extra
                .into_iter()
                .map(|s| normalise(s.as_ref()))
                .filter(|s| !s.is_empty()),
        );
        Self { names }
    }

    pub fn is_sensitive(&self, field: &str) -> bool {
        let f = normalise(field);
        self.names.iter().any(|n| {
            f == *n
                || f.strip_suffix(n.as_str()).is_some_and(|p| p.ends_with('_'))
                || f.strip_prefix(n.as_str())
                    .is_some_and(|s| s.starts_with('_'))
        })
    }

    /// Masks every sensitive field in `value`, at any depth (iteratively).
    pub fn redact(&self, value: &mut Value) {
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (k, child) in map.iter_mut() {
                        if self.is_sensitive(k) && !child.is_null() {
                            *child = Value::String(REDACTED.into());
                        } else {
                            stack.push(child);
                        }
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_credentials_at_any_depth_and_spares_lookalikes() {
        let r = Redactor::with_extra(["ssn"]);
        let mut v = json!({
            "Authorization": "Bearer x", "nested": [{"access_token": "t", "X-API-Key": "k"}],
            "db_password": "p", "client_secret": "s", "credentials": {"a": 1},
            "max_tokens": 100, "tokens_used": 5, "task_id": "t1", "ssn": "123", "text": "keep",
            "callback_url": "https://x/cb?token=1.abc", "token": null
        });
        r.redact(&mut v);
        for path in [
            "/Authorization",
            "/nested/0/access_token",
            "/nested/0/X-API-Key",
            "/db_password",
            "/client_secret",
            "/credentials",
            "/ssn",
            "/callback_url",
        ] {
            assert_eq!(v.pointer(path).unwrap(), REDACTED, "{path}");
        }
        assert_eq!(v["max_tokens"], 100);
        assert_eq!(v["tokens_used"], 5);
        assert_eq!(v["task_id"], "t1");
        assert_eq!(v["text"], "keep");
        assert!(v["token"].is_null());
    }
}
