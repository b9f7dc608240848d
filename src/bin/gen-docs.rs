//! Writes `public/openapi.json` and `public/schema/graph.json` from the
//! Worker's own types. `cargo test` (tests/docs.rs) fails when the files in
//! the repository differ from what this writes.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in arcrun::apidoc::documents() {
        std::fs::write(root.join(path), text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        println!("wrote {path}");
    }
}
