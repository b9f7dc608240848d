//! What a simulated schedule is made of: the runs (their graphs), the
//! daemons' habits, the callers' cancels and retries, and how often the
//! objects crash — all drawn from the schedule's source.

use serde_json::{json, Map, Value};

use super::claims::KeyKind;
use super::source::Source;
use super::world::DaemonKnobs;

/// The shape of one schedule.
#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<RunPlan>,
    pub knobs: DaemonKnobs,
    /// Per mille, at each scheduling step: an object crashes.
    pub crash: u64,
    /// Calls one segment may make before it yields.
    pub max_calls_per_segment: usize,
    /// Per mille: the final callback's receiver answers `500` (or `410`).
    pub receiver_fails: u64,
}

#[derive(Debug, Clone)]
pub struct RunPlan {
    pub run_id: String,
    pub graph: Value,
    pub context: Map<String, Value>,
    pub start_at: u64,
    pub cancel_at: Option<u64>,
    pub retry_at: Option<u64>,
    /// Started under a claim (else by a caller without a key).
    pub keyed: Option<KeyKind>,
    /// Further requests sent with the same key, at nearly the same moment.
    pub duplicates: u64,
    /// The caller asked to be told when the run finishes.
    pub notify: bool,
}

const PEND: &str = "http://pend.sim/task";
const OK: &str = "http://ok.sim/step";

fn component(id: &str, url: &str, timeout_secs: u64) -> Value {
    json!({"id": id, "type": "Component", "componentId": url, "wait_timeout_seconds": timeout_secs})
}

/// One of the graph shapes that exercise waits: a chain, a join of two
/// waits (a race in some schedules: `with_races`), a FOREACH of waits (maybe
/// bounded), a wait with a failure branch.
fn graph(source: &mut Source) -> (Value, Map<String, Value>) {
    let timeout = source.between(3, 30);
    let input = json!({"id": "in", "type": "Input"});
    let output = json!({"id": "out", "type": "Output"});
    let mut context = Map::new();
    let graph = match source.below(4) {
        0 => json!({
            "nodes": [input, component("a", PEND, timeout), component("b", OK, timeout), output],
            "edges": [
                {"from": "in", "to": "a", "type": "PIPE"},
                {"from": "a", "to": "b", "type": "ON_SUCCESS"},
                {"from": "b", "to": "out", "type": "PIPE"}
            ]
        }),
        1 => json!({
            "nodes": [input, component("a", PEND, timeout), component("b", PEND, timeout),
                      component("j", OK, timeout), output],
            "edges": [
                {"from": "in", "to": "a", "type": "PIPE"},
                {"from": "in", "to": "b", "type": "PIPE"},
                {"from": "a", "to": "j", "type": "PIPE"},
                {"from": "b", "to": "j", "type": "PIPE"},
                {"from": "j", "to": "out", "type": "PIPE"}
            ]
        }),
        2 => {
            let items = source.between(1, 6);
            context.insert("things".into(), json!((0..items).collect::<Vec<_>>()));
            let mut each =
                json!({"from": "in", "to": "each", "type": "FOREACH", "items": "things"});
            if source.chance(500) {
                each["max_concurrency"] = json!(source.between(1, 3));
            }
            if source.chance(300) {
                each["tolerated_failures"] = json!(1);
            }
            json!({
                "nodes": [input, component("each", PEND, timeout), output],
                "edges": [each, {"from": "each", "to": "out", "type": "PIPE"}]
            })
        }
        _ => json!({
            "nodes": [input, component("a", PEND, timeout), component("f", OK, timeout), output],
            "edges": [
                {"from": "in", "to": "a", "type": "PIPE"},
                {"from": "a", "to": "out", "type": "ON_SUCCESS"},
                {"from": "a", "to": "f", "type": "ON_FAIL"}
            ]
        }),
    };
    (graph, context)
}

/// Half the schedules start their runs under claims (a caller's
/// `Idempotency-Key`, a sub-workflow call's child), sent more than once.
/// Drawn from a fork, so the other half replay as they did before claims
/// were simulated.
fn with_claims(mut fork: Source, mut runs: Vec<RunPlan>) -> Vec<RunPlan> {
    if !fork.chance(500) {
        return runs;
    }
    for run in &mut runs {
        run.keyed = match fork.below(3) {
            0 => Some(KeyKind::Trigger),
            1 => Some(KeyKind::Subflow),
            _ => None,
        };
        run.duplicates = *fork.pick(&[0, 1, 1, 2]);
    }
    runs
}

/// Half the schedules ask, for some of their runs, to be told when they
/// finish (a final callback). Drawn from a fork, so the other half replay as
/// they did before final callbacks were simulated.
fn with_receivers(fork: &mut Source, mut runs: Vec<RunPlan>) -> Vec<RunPlan> {
    if !fork.chance(500) {
        return runs;
    }
    for run in &mut runs {
        run.notify = fork.chance(700);
    }
    runs
}

/// Half the schedules make the join of two waits a race (`join: "any"`)
/// in some of their runs: the first callback wins and the other wait is
/// superseded. Drawn from a fork, so the other half replay as they did
/// before races were simulated.
fn with_races(mut fork: Source, mut runs: Vec<RunPlan>) -> Vec<RunPlan> {
    if !fork.chance(500) {
        return runs;
    }
    for run in &mut runs {
        let race = fork.chance(600);
        if let Some(join) = run.graph["nodes"]
            .as_array_mut()
            .and_then(|nodes| nodes.iter_mut().find(|n| n["id"] == "j"))
            .filter(|_| race)
        {
            join["join"] = json!("any");
        }
    }
    runs
}

/// Draws a schedule's plan from its source.
pub fn plan(source: &mut Source, t0: u64) -> Plan {
    let knobs = DaemonKnobs {
        early: *source.pick(&[0, 100, 300]),
        late: *source.pick(&[0, 50, 150]),
        never: *source.pick(&[0, 50, 200]),
        duplicate: *source.pick(&[0, 150, 500]),
        heartbeat: *source.pick(&[0, 200]),
        fail_result: *source.pick(&[0, 100]),
        hang: *source.pick(&[0, 0, 30]),
        fail: *source.pick(&[0, 30]),
    };
    let crash = *source.pick(&[0, 0, 2, 10, 40]);
    let runs = (0..source.between(1, 3))
        .map(|i| {
            let (graph, context) = graph(source);
            let start_at = t0 + source.below(2_000);
            RunPlan {
                run_id: format!("run-{i}"),
                graph,
                context,
                start_at,
                cancel_at: source.chance(100).then(|| start_at + source.below(20_000)),
                retry_at: source
                    .chance(200)
                    .then(|| start_at + source.between(5_000, 60_000)),
                keyed: None,
                duplicates: 0,
                notify: false,
            }
        })
        .collect();
    let runs = with_claims(source.fork(1), runs);
    let runs = with_races(source.fork(3), runs);
    let mut receivers = source.fork(2);
    let runs = with_receivers(&mut receivers, runs);
    Plan {
        runs,
        knobs,
        crash,
        max_calls_per_segment: *source.pick(&[2, 3, 45]),
        receiver_fails: *receivers.pick(&[0, 0, 100, 400]),
    }
}
