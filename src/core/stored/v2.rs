//! Version 2 of the stored run record, written until version 3, read by
//! rewriting it into a version-3 document (JSON to JSON) that the v3 reader
//! then loads, as version 1 is.
//!
//! The two differ in one place: version 2 tagged the run's status inside
//! it (`{"state": "paused", "since": 5}`) while every other enum of the
//! record was tagged outside (`{"paused": {...}}`); version 3 tags them all
//! outside (`"running"`, `{"paused": {"since": 5}}`). A version-2 record has
//! no `revision`, so it reads as revision 0.

use serde_json::{json, Map, Value};

use super::super::error::EngineError;

pub const VERSION: u32 = 2;

fn corrupt(why: &str) -> EngineError {
    EngineError::CorruptRecord(format!("version-2 record: {why}"))
}

/// Rewrites a version-2 record as a version-3 document.
pub fn to_v3(mut old: Value) -> Result<Value, EngineError> {
    let record = old
        .as_object_mut()
        .ok_or_else(|| corrupt("not an object"))?;
    let status = match record.remove("status") {
        Some(Value::Object(status)) => status,
        _ => return Err(corrupt("no status object")),
    };
    record.insert("status".into(), status_to_v3(status)?);
    record.insert("version".into(), json!(3));
    Ok(old)
}

/// `{"state": "running"}` → `"running"`; `{"state": "paused", "since": 5}`
/// → `{"paused": {"since": 5}}`.
fn status_to_v3(mut status: Map<String, Value>) -> Result<Value, EngineError> {
    let Some(Value::String(state)) = status.remove("state") else {
        return Err(corrupt("a status without its state"));
    };
    // A variant without fields is its bare name; what else a version-2
    // reader ignored beside it is dropped.
    if state == "running" || status.is_empty() {
        return Ok(Value::String(state));
    }
    let mut tagged = Map::new();
    tagged.insert(state, Value::Object(status));
    Ok(Value::Object(tagged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v2: Value) -> Value {
        let doc = to_v3(json!({"version": 2, "status": v2})).unwrap();
        assert_eq!(doc["version"], json!(3));
        doc["status"].clone()
    }

    #[test]
    fn every_status_is_tagged_outside() {
        assert_eq!(status(json!({"state": "running"})), json!("running"));
        assert_eq!(
            status(json!({"state": "paused", "since": 5})),
            json!({"paused": {"since": 5}})
        );
        assert_eq!(
            status(json!({"state": "completed", "output": {"a": 1}, "finished_at": 9})),
            json!({"completed": {"output": {"a": 1}, "finished_at": 9}})
        );
        assert_eq!(
            status(
                json!({"state": "failed", "error": {"code": "c", "message": "m"}, "finished_at": 9})
            ),
            json!({"failed": {"error": {"code": "c", "message": "m"}, "finished_at": 9}})
        );
        assert_eq!(
            status(json!({"state": "cancelled", "finished_at": 9})),
            json!({"cancelled": {"finished_at": 9}})
        );
    }

    #[test]
    fn a_status_without_its_state_is_corrupt() {
        for bad in [
            json!("running"),
            json!({"since": 5}),
            json!({"state": 3}),
            json!(null),
        ] {
            let doc = json!({"version": 2, "status": bad});
            assert!(matches!(to_v3(doc), Err(EngineError::CorruptRecord(_))));
        }
        assert!(to_v3(json!({"version": 2})).is_err());
        assert!(to_v3(json!([2])).is_err());
    }
}
