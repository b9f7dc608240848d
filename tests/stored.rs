//! The stored record's versions: what version 3 writes (every enum tagged
//! outside, a `revision`), and records of versions 2 and 1 — as earlier
//! releases wrote them — read exactly, written back as version 3, and read
//! again unchanged.

mod support;

use std::collections::BTreeMap;

use arcrun::core::error::EngineError;
use arcrun::core::plan::Directory;
use arcrun::core::protocol::CallFailure;
use arcrun::core::record::RunStatus;
use arcrun::core::run::{CallOutcome, Journaled, Run, Settings};
use arcrun::core::segment::{Command, Reply};
use arcrun::core::stored::{decode, encode, CURRENT_VERSION};
use serde_json::{json, Value};
use support::gate::Gate;
use support::Network;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every version-2 record kept: the fixtures and the stored fuzz target's seeds.
fn v2_records() -> Vec<(String, String)> {
    let mut records = Vec::new();
    for dir in ["tests/fixtures/v2", "fuzz/seeds/stored"] {
        let root = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        for name in names {
            let text = read(&format!("{dir}/{name}"));
            if serde_json::from_str::<Value>(&text).unwrap()["version"] == json!(2) {
                records.push((format!("{dir}/{name}"), text));
            }
        }
    }
    assert!(records.len() >= 9, "{} version-2 records", records.len());
    records
}

fn v1_directory() -> Directory {
    Directory::new(BTreeMap::from([
        ("daemon_task".to_string(), "http://c/daemon".to_string()),
        ("after_component".to_string(), "http://c/after".to_string()),
    ]))
}

fn settings() -> Settings {
    Settings::default()
}

fn encoded(run: &Run) -> String {
    encode(&mut run.clone(), usize::MAX, run.record.updated_at)
}

/// The status as version 2 wrote it, from the run read back.
fn v2_status(status: &RunStatus) -> Value {
    match serde_json::to_value(status).unwrap() {
        Value::String(name) => json!({ "state": name }),
        Value::Object(tagged) => {
            let (name, mut fields) = tagged.into_iter().next().unwrap();
            fields["state"] = json!(name);
            fields
        }
        other => panic!("{other}"),
    }
}

#[test]
fn version_3_tags_the_status_outside_and_always_writes_the_revision() {
    let net = Network::echo_with_async();
    let clock = support::Clock::new();
    let graph = |component: &str| {
        json!({"nodes": [{"id": "in", "type": "Input"},
            {"id": "job", "type": "Component", "componentId": component},
            {"id": "out", "type": "Output"}],
          "edges": [{"from": "in", "to": "job"}, {"from": "job", "to": "out"}]})
    };
    let mut paused = support::run_graph(graph("http://c/async"), json!({"a": 1}), &net, &clock);
    let completed = support::run_graph(graph("http://c/echo"), json!({"a": 1}), &net, &clock);
    let stored = |run: &Run| -> Value { serde_json::from_str(&encoded(run)).unwrap() };

    let text = stored(&paused);
    assert_eq!(text["version"], json!(CURRENT_VERSION));
    assert_eq!(CURRENT_VERSION, 4);
    assert_eq!(text["revision"], json!(0), "written even when 0");
    assert_eq!(
        text["status"],
        json!({"paused": {"since": paused.record.updated_at}})
    );
    let done = stored(&completed);
    assert_eq!(
        done["status"]["completed"]["output"]["a"],
        json!(1),
        "{done}"
    );

    paused.record.status = RunStatus::Running;
    assert_eq!(stored(&paused)["status"], json!("running"));
    paused.record.status = RunStatus::Cancelled { finished_at: 7 };
    assert_eq!(
        stored(&paused)["status"],
        json!({"cancelled": {"finished_at": 7}})
    );

    // The revision is kept as written; a version-3 record without one reads as 0.
    paused.record.revision = 41;
    let text = encoded(&paused);
    assert_eq!(
        decode(&text, &Directory::default(), settings())
            .unwrap()
            .record
            .revision,
        41
    );
    let mut without: Value = serde_json::from_str(&text).unwrap();
    without.as_object_mut().unwrap().remove("revision");
    let run = decode(&without.to_string(), &Directory::default(), settings()).unwrap();
    assert_eq!(run.record.revision, 0);
}

#[test]
fn version_2_records_read_exactly_and_round_trip_as_the_current_version() {
    for (name, text) in v2_records() {
        let v2: Value = serde_json::from_str(&text).unwrap();
        let run = decode(&text, &Directory::default(), settings())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let record = &run.record;
        assert_eq!(record.revision, 0, "{name}");
        assert_eq!(v2_status(&record.status), v2["status"], "{name}");
        assert_eq!(json!(record.run_id), v2["run_id"], "{name}");
        assert_eq!(json!(record.updated_at), v2["updated_at"], "{name}");
        assert_eq!(json!(record.segments), v2["segments"], "{name}");
        assert_eq!(
            record.nodes.len(),
            v2["nodes"].as_array().unwrap().len(),
            "{name}"
        );
        assert_eq!(
            record.waits.keys().collect::<Vec<_>>(),
            v2["waits"].as_object().unwrap().keys().collect::<Vec<_>>(),
            "{name}"
        );

        let v3 = encoded(&run);
        let stored: Value = serde_json::from_str(&v3).unwrap();
        assert_eq!(stored["version"], json!(CURRENT_VERSION), "{name}");
        assert_eq!(stored["revision"], json!(0), "{name}");
        // Only the status's tagging, the version and outputs that repeat
        // what came before them (stored as deltas since version 4) changed;
        // the rest is as it was, and the nodes read back the same.
        let mut same = stored.clone();
        let mut before = v2.clone();
        for doc in [&mut same, &mut before] {
            for key in ["version", "revision", "status", "nodes"] {
                doc.as_object_mut().unwrap().remove(key);
            }
        }
        assert_eq!(same, before, "{name}");

        let again = decode(&v3, &Directory::default(), settings()).unwrap();
        assert_eq!(again.record, run.record, "{name}");
        assert_eq!(encoded(&again), v3, "{name}");
    }
}

#[test]
fn version_1_records_read_through_version_2_and_round_trip_as_the_current_version() {
    for name in ["paused-chain.json", "paused-foreach-join.json"] {
        let text = read(&format!("tests/fixtures/v1/{name}"));
        let run = decode(&text, &v1_directory(), settings()).unwrap();
        assert_eq!(run.record.revision, 0);
        assert!(matches!(run.record.status, RunStatus::Paused { .. }));
        let v3 = encoded(&run);
        let stored: Value = serde_json::from_str(&v3).unwrap();
        assert_eq!(stored["version"], json!(CURRENT_VERSION));
        assert_eq!(
            stored["status"],
            json!({"paused": {"since": 1_790_000_000_005u64}})
        );
        let again = decode(&v3, &Directory::default(), settings()).unwrap();
        assert_eq!(again.record, run.record, "{name}");
    }
}

#[test]
fn a_paused_version_2_record_resumes_and_is_stored_as_the_current_version() {
    let gate = Gate::with(
        Network::echo_with_async(),
        Settings::default(),
        Directory::default(),
    );
    let text = read("tests/fixtures/v2/paused-chain.json");
    gate.store.put_record("v2chainrun", text);
    gate.clock.set(1_790_000_100_000);
    let resumed = gate
        .send(Command::Callback {
            run_id: "v2chainrun".into(),
            wait_id: "n2".into(),
            body: json!({"task_id": "task-slow", "success": true, "data": {"answer": 42}}),
            base_url: "https://engine.test".into(),
            token_expires_at: None,
        })
        .unwrap();
    let Reply::Outcome { body, .. } = resumed.reply else {
        panic!("outcome expected");
    };
    assert_eq!(body["status"], json!("completed"), "{body}");
    // `after` is called at the URL the run pinned, not through a directory.
    assert_eq!(gate.net.hits("http://components.invalid/after"), 1);
    assert_eq!(gate.net.hits("http://components.invalid/daemon"), 0);
    let stored: Value = serde_json::from_str(&gate.store.record("v2chainrun").unwrap()).unwrap();
    assert_eq!(stored["version"], json!(CURRENT_VERSION));
    let output = &stored["status"]["completed"]["output"];
    assert_eq!(output["answer"], json!(42), "{stored}");
    assert_eq!(output["prepared"], json!("migrations"));
    assert_eq!(stored["closed"]["n2"]["how"], json!("resumed"));
}

#[test]
fn a_version_2_status_that_does_not_fit_is_corrupt() {
    let good: Value = serde_json::from_str(&read("tests/fixtures/v2/failed.json")).unwrap();
    assert!(decode(&good.to_string(), &Directory::default(), settings()).is_ok());
    let bad = [
        json!("failed"),
        json!({"failed": {"finished_at": 1}}),
        json!({"state": "failed"}),
        json!({"state": "paused", "finished_at": 1}),
        json!({"state": "sleeping", "since": 1}),
        json!({"state": 7}),
        json!(null),
    ];
    for status in bad {
        let mut c = good.clone();
        c["status"] = status.clone();
        match decode(&c.to_string(), &Directory::default(), settings()) {
            Err(EngineError::CorruptRecord(_)) => {}
            other => panic!(
                "{status}: expected corrupt_record, got {:?}",
                other.map(|r| r.record.status)
            ),
        }
    }
    // A version-2 status read by the version-3 reader, or the other way round, is corrupt too.
    let mut c = good.clone();
    c["version"] = json!(3);
    assert!(decode(&c.to_string(), &Directory::default(), settings()).is_err());
    let run = decode(&good.to_string(), &Directory::default(), settings()).unwrap();
    let mut c: Value = serde_json::from_str(&encoded(&run)).unwrap();
    c["version"] = json!(2);
    assert!(decode(&c.to_string(), &Directory::default(), settings()).is_err());
}

#[test]
fn join_and_superseded_are_additions_to_version_3_that_old_records_do_without() {
    // A record from before them reads, and is written back without them:
    // `join` is left out when it is the default, as every old graph has it.
    let old = decode(
        &read("tests/fixtures/v2/paused-chain.json"),
        &Directory::default(),
        settings(),
    )
    .unwrap();
    let mut v3: Value = serde_json::from_str(&encoded(&old)).unwrap();
    for node in v3["graph"]["nodes"].as_array().unwrap() {
        assert!(node.get("join").is_none(), "{node}");
    }
    // A closed wait that was superseded, and its node's trace entry, read
    // back and are written again as they were.
    v3["closed"]["n9"] = json!({
        "task_id": "t-lost", "node_id": "prep", "at": 1_790_000_000_010u64, "how": "superseded"
    });
    v3["trace"]
        .as_array_mut()
        .unwrap()
        .push(json!({"node_id": "prep", "status": "superseded", "at": 1_790_000_000_010u64}));
    let run = decode(&v3.to_string(), &Directory::default(), settings()).unwrap();
    let again: Value = serde_json::from_str(&encoded(&run)).unwrap();
    assert_eq!(again["closed"]["n9"]["how"], json!("superseded"));
    assert_eq!(
        again["trace"].as_array().unwrap().last().unwrap()["status"],
        json!("superseded")
    );
    // A way of closing this release does not know is a corrupt record, not a panic.
    let mut unknown = v3.clone();
    unknown["closed"]["n9"]["how"] = json!("vanished");
    assert!(matches!(
        decode(&unknown.to_string(), &Directory::default(), settings()),
        Err(EngineError::CorruptRecord(_))
    ));
}

#[test]
fn strict_templates_warnings_and_error_codes_are_additions_to_version_3_that_old_records_do_without(
) {
    // A record from before them reads, and is written back without them.
    let old = decode(
        &read("tests/fixtures/v2/failed.json"),
        &Directory::default(),
        settings(),
    )
    .unwrap();
    assert!(!old.record.graph.strict_templates);
    let mut v3: Value = serde_json::from_str(&encoded(&old)).unwrap();
    assert!(v3["graph"].get("strict_templates").is_none());
    for entry in v3["trace"].as_array().unwrap() {
        assert!(entry.get("warnings").is_none() && entry.get("error_code").is_none());
    }
    // With them, they read back and are written again as they were.
    v3["graph"]["strict_templates"] = json!(true);
    let trace = v3["trace"].as_array_mut().unwrap();
    trace[0]["warnings"] = json!(["unresolved template reference {{x}} at data.y"]);
    trace[1]["error_code"] = json!("connection_failed");
    let run = decode(&v3.to_string(), &Directory::default(), settings()).unwrap();
    assert!(run.record.graph.strict_templates);
    assert_eq!(
        run.record.trace[0].warnings,
        vec!["unresolved template reference {{x}} at data.y"]
    );
    let again: Value = serde_json::from_str(&encoded(&run)).unwrap();
    assert_eq!(again["graph"]["strict_templates"], json!(true));
    assert_eq!(again["trace"], v3["trace"]);
}

#[test]
fn a_journaled_failure_from_before_codes_reads_without_one() {
    let before = CallOutcome::Failed {
        status: Some(503),
        error: "component answered HTTP 503".into(),
        code: None,
    };
    let entry = r#"{"outcome":{"failed":{"status":503,"error":"component answered HTTP 503"}}}"#;
    assert_eq!(Journaled::parse(entry).unwrap().outcome, before);
    let bare = r#"{"failed":{"status":503,"error":"component answered HTTP 503"}}"#;
    assert_eq!(Journaled::parse(bare).unwrap().outcome, before);
    // And one with a code keeps it.
    let coded = Journaled {
        outcome: CallOutcome::Failed {
            status: None,
            error: "timed out after 5 ms".into(),
            code: Some(CallFailure::Timeout),
        },
        expires_at: None,
    };
    let text = serde_json::to_string(&coded).unwrap();
    assert!(text.contains(r#""code":"timeout""#), "{text}");
    assert_eq!(Journaled::parse(&text).unwrap(), coded);
}

#[test]
fn outputs_that_repeat_their_input_are_stored_as_deltas_and_version_3_still_reads() {
    // Input → 30 pass-through nodes each adding a key → a component that
    // pauses: every finished output repeats the one before it.
    let mut nodes = vec![json!({"id": "in", "type": "Input"})];
    let mut edges = Vec::new();
    let mut prev = "in".to_string();
    for i in 0..30 {
        let id = format!("g{i}");
        nodes.push(
            json!({"id": id, "type": "Component", "componentId": "comp_passthrough",
                          "data": {format!("k{i}"): format!("value {i}")}}),
        );
        edges.push(json!({"from": prev, "to": id}));
        prev = id;
    }
    nodes.push(json!({"id": "slow", "type": "Component", "componentId": "http://c/async"}));
    edges.push(json!({"from": prev, "to": "slow"}));
    nodes.push(json!({"id": "out", "type": "Output"}));
    edges.push(json!({"from": "slow", "to": "out"}));
    let gate = Gate::new(Network::echo_with_async());
    gate.start(
        json!({"nodes": nodes, "edges": edges}),
        json!({"payload": "x".repeat(1000)}),
    );
    let text = gate.store.record("run-1").expect("stored");
    let stored: Value = serde_json::from_str(&text).unwrap();
    let deltas = stored["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.get("done_delta").is_some())
        .count();
    assert_eq!(deltas, 31, "Input and every pass-through node: {text}");
    // The payload is held once (the trigger context), not 32 times.
    assert_eq!(text.matches(&"x".repeat(1000)).count(), 1);
    let run = decode(&text, &Directory::default(), settings()).unwrap();
    assert_eq!(run.record.nodes[30], gate.stored().record.nodes[30]);
    let arcrun::core::record::NodeState::Done { output } = &run.record.nodes[30] else {
        panic!("done")
    };
    assert_eq!(output.get("k29").unwrap(), &json!("value 29"));
    assert_eq!(output.get("k0").unwrap(), &json!("value 0"));
    assert_eq!(output.get("payload").unwrap(), &json!("x".repeat(1000)));
    assert_eq!(encoded(&run), text, "it writes back the same");

    // The same run as version 3 wrote it (every output whole) reads the same.
    let mut v3 = stored.clone();
    v3["version"] = json!(3);
    for (n, node) in v3["nodes"].as_array_mut().unwrap().iter_mut().enumerate() {
        if node.get("done_delta").is_some() {
            let arcrun::core::record::NodeState::Done { output } = &run.record.nodes[n] else {
                panic!("done")
            };
            *node = json!({"done": {"output": output}});
        }
    }
    let old = decode(&v3.to_string(), &Directory::default(), settings()).unwrap();
    assert_eq!(old.record, run.record);
    // Resumed, it completes with every key.
    gate.forget();
    gate.callback("n31", json!({"task_id": "t-slow", "success": true}))
        .unwrap();
    let RunStatus::Completed { output, .. } = gate.stored().record.status else {
        panic!("completed")
    };
    assert_eq!(output["k29"], json!("value 29"));
}
