//! The API documents in `public/` are generated from the Worker's types
//! (`cargo run --bin gen-docs`); this fails when they were edited by hand or
//! not regenerated after a type changed.

#[test]
fn the_checked_in_documents_are_the_generated_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (path, generated) in arcrun::apidoc::documents() {
        let on_disk = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if on_disk != generated {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the types generate: run `cargo run --bin gen-docs` and commit the result"
    );
}

#[test]
fn every_error_code_has_one_status_and_is_documented() {
    use arcrun::core::answer::ErrorCode;
    let doc = arcrun::apidoc::openapi();
    let documented = &doc["components"]["schemas"]["ErrorCode"];
    let text = documented.to_string();
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("\"{}\"", code.as_str())),
            "{} is not documented",
            code.as_str()
        );
        assert!((400..600).contains(&code.status()));
    }
}
