//! Native benchmarks of the engine core: `cargo bench --bench core`.
//!
//! Every case goes through what one Worker request does with a run: build the
//! plan from graph JSON (parse + validate), start the run and drive it to
//! completion through the real executor and driver, serialize the record as it
//! is stored in KV, and load it back as a callback would. Each phase is timed
//! over repeated runs with `Instant` and, alongside, with the thread's CPU
//! time. The runs of every case are spread over three passes through the
//! suite, so that a slow spell of the (shared, virtual) machine falls on part
//! of every case's samples rather than on all samples of one case.
//!
//! The report gives wall-clock medians and p95s, the time per node (or per
//! FOREACH item), the serialized record size, and how each family grows when
//! its size grows tenfold. Growth is judged on instruction counts: after the
//! timed passes, this binary runs itself under callgrind once per case
//! (`BENCH_ONE`), collecting only inside the four phase functions and dumping
//! the counters as each returns, so each phase's `Ir` is counted on its own.
//! Instruction counts do not depend on what else the (shared) machine is
//! doing; CPU-time and wall-clock ratios are shown for reference. Without
//! valgrind, growth is judged on CPU-time medians as a fallback.
//!
//! Environment:
//! - `BENCH_SMOKE=1`: tiny sizes, a handful of repetitions, one pass; the
//!   wall-clock budget is not judged (instruction counts are).
//! - `BENCH_JSON=<path>`: also write the results there as JSON.
//! - `BENCH_ONLY=<family>` or `BENCH_ONLY="<family> <size>"`: measure only
//!   that (for profiling one case).
//! - `BENCH_ONE=<family>:<size>`: run exactly one measured pass of that case
//!   and exit (what runs under callgrind; any size may be given).
//! - `BENCH_PAUSED_ITEMS=<n>`: the items of the paused FOREACH run whose
//!   callback, write and read are measured against the free plan (2,000).
//! - `BENCH_ONLY=requests`: measure only those requests.
//! - `BENCH_CALLGRIND=0`: do not count instructions; `BENCH_CALLGRIND_DIR`:
//!   where callgrind's output files go (default: a temporary directory).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use arcrun::core::plan::{plan_from_json, Directory, GraphLimits, Plan};
use arcrun::core::record::RunStatus;
use arcrun::core::redact::Redactor;
use arcrun::core::run::{Run, Settings};
use arcrun::core::stored::{decode, encode};
use arcrun::core::view::run_details;
use serde_json::{json, Map, Value};
use support::{chain, continue_run, Clock, Network};

/// A family's time and record size may grow at most this much for 10× its size.
const MAX_GROWTH_RATIO: f64 = 11.0;
/// The 20-node mixed graph: plan + run must take less than this (median).
const MIXED_WORK_BUDGET: Duration = Duration::from_millis(1);
/// The largest record the Worker writes (its `MAX_RUN_RECORD_BYTES` default).
const MAX_RECORD_BYTES: usize = 24 << 20;

// ---------------------------------------------------------------------------
// Graph families
// ---------------------------------------------------------------------------

/// A kind of graph, built at several sizes.
struct Family {
    id: &'static str,
    title: &'static str,
    /// What the size counts, and what "per unit" times are per.
    unit: &'static str,
    sizes: &'static [usize],
    smoke_sizes: &'static [usize],
    /// Graph and trigger context for one size.
    build: fn(usize) -> (Value, Value),
}

const FAMILIES: &[Family] = &[
    Family {
        id: "chain",
        title: "pass-through chain",
        unit: "node",
        sizes: &[10, 100, 1_000, 10_000],
        smoke_sizes: &[10, 100],
        build: passthrough_chain,
    },
    Family {
        id: "foreach",
        title: "FOREACH over N items",
        unit: "item",
        sizes: &[100, 1_000, 10_000],
        smoke_sizes: &[10, 100],
        build: foreach,
    },
    Family {
        id: "growing",
        title: "growing-context chain",
        unit: "node",
        sizes: &[100, 1_000],
        smoke_sizes: &[10, 100],
        build: growing_chain,
    },
    Family {
        id: "fan",
        title: "fan-out / fan-in, width N",
        unit: "node",
        sizes: &[10, 100, 1_000],
        smoke_sizes: &[10, 100],
        build: fan_out_fan_in,
    },
    Family {
        id: "template",
        title: "heavy templating chain",
        unit: "node",
        sizes: &[10, 100, 1_000],
        smoke_sizes: &[10, 100],
        build: templating_chain,
    },
    Family {
        id: "mixed",
        title: "mixed graph, N parallel copies",
        unit: "node",
        sizes: &[1, 10],
        smoke_sizes: &[1, 10],
        build: mixed,
    },
];

/// Collects nodes and edges of a graph under construction.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<Value>,
    edges: Vec<Value>,
}

impl GraphBuilder {
    fn node(&mut self, id: &str, kind: &str, component: Option<&str>, data: Value) {
        let mut node = json!({ "id": id, "type": kind });
        if let Some(c) = component {
            node["componentId"] = json!(c);
        }
        if data.as_object().is_some_and(|d| !d.is_empty()) {
            node["data"] = data;
        }
        self.nodes.push(node);
    }

    fn passthrough(&mut self, id: &str, data: Value) {
        self.node(id, "Component", Some("comp_passthrough"), data);
    }

    fn edge(&mut self, from: &str, to: &str, kind: &str) {
        self.edges
            .push(json!({ "from": from, "to": to, "type": kind }));
    }

    /// An edge with extra fields (`condition`, `branch`, `items`, `iterator`).
    fn edge_with(&mut self, from: &str, to: &str, kind: &str, extra: Value) {
        let mut edge = json!({ "from": from, "to": to, "type": kind });
        if let (Some(e), Value::Object(x)) = (edge.as_object_mut(), extra) {
            e.extend(x);
        }
        self.edges.push(edge);
    }

    fn build(self, id: &str) -> Value {
        json!({ "id": id, "nodes": self.nodes, "edges": self.edges })
    }
}

/// Input → N pass-through components → Output.
fn passthrough_chain(len: usize) -> (Value, Value) {
    let context = json!({
        "request_id": "req-7f3a",
        "topic": "benchmarks",
        "payload": "x".repeat(100),
    });
    (chain(len, "comp_passthrough"), context)
}

/// Input → N pass-through components, each adding its own key to what it
/// passes on → Output: the context grows by one key a node.
fn growing_chain(len: usize) -> (Value, Value) {
    let mut g = GraphBuilder::default();
    g.node("in", "Input", None, json!({}));
    let mut prev = "in".to_string();
    for i in 0..len {
        let id = format!("g{i}");
        g.passthrough(
            &id,
            json!({ format!("k{i}"): format!("value of step {i}") }),
        );
        g.edge(&prev, &id, "PIPE");
        prev = id;
    }
    g.node("out", "Output", None, json!({}));
    g.edge(&prev, "out", "PIPE");
    (
        g.build("growing"),
        json!({ "request_id": "req-7f3a", "topic": "benchmarks" }),
    )
}

/// Input → list → (FOREACH) each → Output, over N items from the context.
fn foreach(items: usize) -> (Value, Value) {
    let mut g = GraphBuilder::default();
    g.node("in", "Input", None, json!({}));
    g.passthrough("list", json!({}));
    g.passthrough(
        "each",
        json!({
            "label": "#{{index}} {{item.name}}",
            "sku": "{{item.sku}}",
            "batch": "{{batch}}",
        }),
    );
    g.node("out", "Output", None, json!({}));
    g.edge("in", "list", "PIPE");
    g.edge_with(
        "list",
        "each",
        "FOREACH",
        json!({ "items": "items", "iterator": "item" }),
    );
    g.edge("each", "out", "PIPE");
    let rows: Vec<Value> = (0..items)
        .map(|i| json!({ "id": i, "name": format!("item {i}"), "sku": format!("SKU-{i:06}"), "qty": i % 5 + 1 }))
        .collect();
    (
        g.build("foreach"),
        json!({ "batch": "b-2024-11", "items": rows }),
    )
}

/// Input → N parallel branches, each adding its own field → join → Output.
fn fan_out_fan_in(width: usize) -> (Value, Value) {
    let mut g = GraphBuilder::default();
    g.node("in", "Input", None, json!({}));
    for i in 0..width {
        let id = format!("b{i}");
        g.passthrough(&id, json!({ id.clone(): format!("{{{{seed}}}}-{i}") }));
        g.edge("in", &id, "PIPE");
        g.edge(&id, "join", "PIPE");
    }
    g.passthrough("join", json!({}));
    g.node("out", "Output", None, json!({}));
    g.edge("join", "out", "PIPE");
    (
        g.build("fan"),
        json!({ "seed": "s-91", "payload": "x".repeat(100) }),
    )
}

/// The data of one heavily templated node: 34 placeholders, among them whole
/// values, interpolations, array indexing, references to the previous node's
/// output by id, and one that does not resolve. Keys are the same on every
/// node, so the flowing context keeps its size along the chain.
fn heavy_data(prev: &str) -> Value {
    json!({
        "greeting": "Dear {{customer.first_name}} {{customer.last_name}},",
        "summary": "Order {{order.id}} of {{order.date}}: {{order.count}} items for \
                    {{order.total}} {{order.currency}}, to {{customer.address.city}} \
                    ({{customer.address.country}}).",
        "contact": "{{customer.email}} / {{customer.phone}}",
        "code": "{{order.id}}-{{customer.id}}",
        "previous_code": format!("{{{{{prev}.code}}}}"),
        "echo": format!("after {{{{{prev}.greeting}}}} came {{{{{prev}.contact}}}}"),
        "customer_id": "{{customer.id}}",
        "total": "{{order.total}}",
        "first_line": "{{order.lines.0.sku}} x {{order.lines.0.qty}} @ {{order.lines.0.price}}",
        "second_line": "{{order.lines.1.sku}} x {{order.lines.1.qty}} @ {{order.lines.1.price}}",
        "flags": ["{{flags.express}}", "{{flags.gift}}", "{{flags.fragile}}"],
        "address": {
            "line": "{{customer.address.street}}",
            "zip": "{{customer.address.zip}}",
            "city": "{{customer.address.city}}",
        },
        "locale": "{{settings.locale}} {{settings.timezone}} {{settings.currency}}",
        "missing": "{{does.not.exist}} stays as written",
    })
}

fn templating_chain(len: usize) -> (Value, Value) {
    let mut g = GraphBuilder::default();
    g.node("in", "Input", None, json!({}));
    let mut prev = "in".to_string();
    for i in 0..len {
        let id = format!("t{i}");
        g.passthrough(&id, heavy_data(&prev));
        g.edge(&prev, &id, "PIPE");
        prev = id;
    }
    g.node("out", "Output", None, json!({}));
    g.edge(&prev, "out", "PIPE");
    let context = json!({
        "customer": {
            "id": "c-1029", "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.com", "phone": "+44 20 7946 0958",
            "address": {"street": "12 St James's Square", "zip": "SW1Y 4JH", "city": "London", "country": "UK"},
        },
        "order": {
            "id": "o-5531", "date": "2024-11-20", "count": 2, "total": 149.9, "currency": "EUR",
            "lines": [
                {"sku": "SKU-001", "qty": 1, "price": 99.9},
                {"sku": "SKU-002", "qty": 2, "price": 25.0},
            ],
        },
        "flags": {"express": true, "gift": false, "fragile": true},
        "settings": {"locale": "en-GB", "timezone": "Europe/London", "currency": "EUR"},
    });
    (g.build("templating"), context)
}

/// One 18-node body of the mixed graph, ids prefixed with `p`: templating,
/// remote components (answered in-process by the test network), IF_CONTROL
/// with ON_TRUE/ON_FALSE, SWITCH with ON_BRANCH, joins over skipped branches,
/// a FOREACH, an IF edge and an ON_FAIL fallback.
fn mixed_body(g: &mut GraphBuilder, p: &str, from: &str, to: &str) {
    let n = |id: &str| format!("{p}{id}");
    g.passthrough(
        &n("normalize"),
        json!({"name": "{{user.name}}", "tier": "{{user.tier}}", "score": "{{user.score}}"}),
    );
    g.node(
        &n("profile"),
        "Component",
        Some("http://c/profile"),
        json!({"lookup": "{{user.id}}"}),
    );
    g.node(
        &n("gate"),
        "Component",
        Some("if_control"),
        json!({"condition": "score > 50"}),
    );
    g.passthrough(&n("premium"), json!({"lane": "premium", "sla_hours": 4}));
    g.passthrough(&n("standard"), json!({"lane": "standard", "sla_hours": 24}));
    g.passthrough(&n("lane_join"), json!({}));
    g.node(
        &n("tier"),
        "Component",
        Some("switch"),
        json!({"value": "{{tier}}", "cases": ["gold", "silver"], "default": "other"}),
    );
    g.passthrough(&n("gold"), json!({"discount": 20}));
    g.passthrough(&n("silver"), json!({"discount": 10}));
    g.passthrough(&n("other"), json!({"discount": 0}));
    g.passthrough(&n("tier_join"), json!({}));
    g.passthrough(
        &n("line"),
        json!({"line_total": "{{line.qty}} x {{line.price}}", "sku": "{{line.sku}}"}),
    );
    g.passthrough(&n("totals"), json!({"lines_done": "{{count}}"}));
    g.node(
        &n("notify"),
        "Component",
        Some("http://c/notify"),
        json!({"to": "{{user.email}}", "text": "Hi {{name}}, {{count}} lines processed"}),
    );
    g.passthrough(&n("fallback"), json!({"notified": false}));
    g.passthrough(&n("audit"), json!({"audited": true, "lane": "{{lane}}"}));
    g.passthrough(&n("merge"), json!({}));
    g.passthrough(
        &n("enrich"),
        json!({"summary": "{{name}} ({{tier}}): {{lane}} lane, discount {{discount}}%"}),
    );

    g.edge(from, &n("normalize"), "PIPE");
    g.edge(&n("normalize"), &n("profile"), "PIPE");
    g.edge(&n("profile"), &n("gate"), "PIPE");
    g.edge(&n("gate"), &n("premium"), "ON_TRUE");
    g.edge(&n("gate"), &n("standard"), "ON_FALSE");
    g.edge(&n("premium"), &n("lane_join"), "PIPE");
    g.edge(&n("standard"), &n("lane_join"), "PIPE");
    g.edge(&n("lane_join"), &n("tier"), "PIPE");
    for branch in ["gold", "silver", "other"] {
        g.edge_with(
            &n("tier"),
            &n(branch),
            "ON_BRANCH",
            json!({ "branch": branch }),
        );
        g.edge(&n(branch), &n("tier_join"), "PIPE");
    }
    g.edge_with(
        &n("tier_join"),
        &n("line"),
        "FOREACH",
        json!({"items": "order.lines", "iterator": "line"}),
    );
    g.edge(&n("line"), &n("totals"), "PIPE");
    g.edge_with(
        &n("totals"),
        &n("notify"),
        "IF",
        json!({"condition": "count > 0"}),
    );
    g.edge(&n("notify"), &n("fallback"), "ON_FAIL");
    g.edge(&n("notify"), &n("audit"), "ON_SUCCESS");
    g.edge(&n("audit"), &n("merge"), "PIPE");
    g.edge(&n("fallback"), &n("merge"), "PIPE");
    g.edge(&n("merge"), &n("enrich"), "PIPE");
    g.edge(&n("enrich"), to, "PIPE");
}

/// Input → `copies` parallel mixed bodies → Output: 20 nodes for one copy.
fn mixed(copies: usize) -> (Value, Value) {
    let mut g = GraphBuilder::default();
    g.node("in", "Input", None, json!({"request_id": "{{meta.id}}"}));
    for k in 0..copies {
        let prefix = if copies == 1 {
            String::new()
        } else {
            format!("c{k}_")
        };
        mixed_body(&mut g, &prefix, "in", "out");
    }
    g.node("out", "Output", None, json!({"result": "{{summary}}"}));
    let context = json!({
        "meta": {"id": "req-42"},
        "user": {"id": "u-1", "name": "Ada", "email": "ada@example.com", "tier": "gold", "score": 72},
        "order": {"id": "o-9", "lines": [
            {"sku": "A-1", "qty": 1, "price": 10.0},
            {"sku": "A-2", "qty": 2, "price": 5.5},
            {"sku": "B-7", "qty": 1, "price": 99.0},
            {"sku": "C-3", "qty": 4, "price": 1.25},
            {"sku": "D-9", "qty": 3, "price": 7.0},
        ]},
    });
    (g.build("mixed"), context)
}

// ---------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------

/// How long to measure each case, and within which repetition bounds.
#[derive(Clone, Copy)]
struct Effort {
    /// Measuring time per case, over all passes.
    target: Duration,
    min_reps: usize,
    max_reps: usize,
    /// Every case is measured in this many passes over the whole suite, so
    /// that a slow spell of the (shared, virtual) machine falls on a part of
    /// each case's samples rather than on all samples of one case.
    passes: usize,
}

impl Effort {
    fn full() -> Self {
        Self {
            target: Duration::from_millis(2_500),
            min_reps: 15,
            max_reps: 20_000,
            passes: 3,
        }
    }

    fn smoke() -> Self {
        Self {
            target: Duration::from_millis(30),
            min_reps: 3,
            max_reps: 50,
            passes: 1,
        }
    }

    fn reps_for(self, one: Duration) -> usize {
        let fit = (self.target.as_nanos() / one.as_nanos().max(1)) as usize;
        fit.clamp(self.min_reps, self.max_reps)
    }
}

/// Wall-clock and CPU time of one stretch of work.
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: Duration,
    /// CPU time of this thread; zero where the platform does not report it.
    cpu: Duration,
}

impl std::ops::Add for Timing {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
        }
    }
}

/// Reads both clocks at each lap. Wall time is what a caller waits; the
/// thread's CPU time leaves out whatever else the (shared) machine was running.
struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    fn start() -> Self {
        Self {
            cpu: thread_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// The time since the previous lap (or the start).
    fn lap(&mut self) -> Timing {
        let wall = Instant::now();
        let cpu = thread_cpu_time();
        let timing = Timing {
            wall: wall - self.wall,
            cpu: cpu.saturating_sub(self.cpu),
        };
        self.cpu = thread_cpu_time();
        self.wall = Instant::now();
        timing
    }
}

/// CPU time consumed so far by the calling thread.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes one timespec through the valid pointer given.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

/// The timings of one complete pass over a case.
#[derive(Clone, Copy)]
struct Sample {
    plan: Timing,
    run: Timing,
    save: Timing,
    load: Timing,
}

impl Sample {
    /// Plan + run: the engine's own work for one trigger.
    fn work(&self) -> Timing {
        self.plan + self.run
    }

    fn total(&self) -> Duration {
        (self.work() + self.save + self.load).wall
    }
}

// The four phases of one pass, each its own function that is never inlined:
// under callgrind (`BENCH_ONE`), collection is switched on only inside these
// (`--toggle-collect`) and the counters are dumped as each returns
// (`--dump-after`), so every phase's instructions are counted separately and
// nothing else (building the graph JSON, the test network, drops) is.

#[inline(never)]
fn callgrind_phase_plan(graph: &Value, directory: &Directory) -> Plan {
    plan_from_json(black_box(graph), directory, GraphLimits::default()).expect("valid graph")
}

#[inline(never)]
fn callgrind_phase_run(plan: Plan, ctx: Map<String, Value>, net: &Network, clock: &Clock) -> Run {
    // The engine's own work, in one segment: no call budget.
    let settings = Settings {
        max_calls_per_segment: usize::MAX,
        ..Settings::default()
    };
    let mut run = Run::start(plan, "bench-run".into(), ctx, clock.now(), settings);
    continue_run(&mut run, net, clock);
    run
}

#[inline(never)]
fn callgrind_phase_serialize(run: &mut Run, now: u64) -> String {
    encode(black_box(run), MAX_RECORD_BYTES, now)
}

#[inline(never)]
fn callgrind_phase_load(text: &str, directory: &Directory, settings: Settings) -> Run {
    decode(black_box(text), directory, settings).expect("record loads")
}

/// One pass: plan → run to completion → serialize → deserialize and load.
/// Returns the timings and the serialized record's size.
fn measure_once(graph: &Value, context: &Map<String, Value>) -> (Sample, usize) {
    let directory = Directory::default();
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let ctx = context.clone();

    let mut watch = Stopwatch::start();
    let plan = callgrind_phase_plan(graph, &directory);
    let plan_time = watch.lap();
    let mut run = callgrind_phase_run(plan, ctx, &net, &clock);
    let run_time = watch.lap();
    let text = callgrind_phase_serialize(&mut run, clock.now());
    let save_time = watch.lap();
    let loaded = callgrind_phase_load(&text, &directory, *run.settings());
    let load_time = watch.lap();

    assert!(
        matches!(run.status(), RunStatus::Completed { .. }),
        "the benchmark graph must complete, got {:?}",
        run.status().name()
    );
    black_box(&loaded);
    let sample = Sample {
        plan: plan_time,
        run: run_time,
        save: save_time,
        load: load_time,
    };
    (sample, text.len())
}

/// Median and 95th percentile of a set of durations.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p95: Duration,
}

impl Stats {
    fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        let at = |q: f64| {
            let rank = ((values.len() as f64) * q).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Self {
            median: at(0.5),
            p95: at(0.95),
        }
    }

    fn json(self) -> Value {
        json!({ "median_ns": self.median.as_nanos() as u64, "p95_ns": self.p95.as_nanos() as u64 })
    }
}

/// Wall-clock and CPU-time statistics of one phase.
#[derive(Clone, Copy)]
struct PhaseStats {
    wall: Stats,
    cpu: Stats,
}

impl PhaseStats {
    fn of(samples: &[Sample], phase: fn(&Sample) -> Timing) -> Self {
        let pick = |clock: fn(Timing) -> Duration| {
            Stats::of(samples.iter().map(|s| clock(phase(s))).collect())
        };
        Self {
            wall: pick(|t| t.wall),
            cpu: pick(|t| t.cpu),
        }
    }

    /// The share of the wall-clock median the thread actually ran.
    fn on_cpu(&self) -> Option<f64> {
        (!self.cpu.median.is_zero()).then(|| {
            (self.cpu.median.as_secs_f64() / self.wall.median.as_secs_f64().max(1e-12)).min(1.0)
        })
    }

    fn json(&self) -> Value {
        json!({ "wall": self.wall.json(), "cpu": self.cpu.json() })
    }
}

/// The measured result of one family at one size.
struct CaseResult {
    family: &'static Family,
    size: usize,
    nodes: usize,
    edges: usize,
    reps: usize,
    work: PhaseStats,
    plan: PhaseStats,
    run: PhaseStats,
    save: PhaseStats,
    load: PhaseStats,
    record_bytes: usize,
    /// Instructions of one pass, counted under callgrind (when it ran).
    ir: Option<PhaseIr>,
}

impl CaseResult {
    /// How many units the per-unit time is divided by: items for FOREACH,
    /// nodes otherwise.
    fn units(&self) -> usize {
        if self.family.unit == "item" {
            self.size
        } else {
            self.nodes
        }
    }

    fn per_unit(&self) -> Duration {
        self.work.wall.median / self.units().max(1) as u32
    }

    fn name(&self) -> String {
        format!("{} {}", self.family.id, self.size)
    }
}

/// One size of a family being measured.
struct Case {
    family: &'static Family,
    size: usize,
    graph: Value,
    context: Map<String, Value>,
    record_bytes: usize,
    reps: usize,
    samples: Vec<Sample>,
}

impl Case {
    /// Builds the graph, warms up caches and the allocator, and sizes the
    /// repetitions from the faster of two warm-up passes.
    fn prepare(family: &'static Family, size: usize, effort: Effort) -> Self {
        let (graph, context) = (family.build)(size);
        let context = context.as_object().cloned().unwrap_or_default();
        let (first, record_bytes) = measure_once(&graph, &context);
        let (second, _) = measure_once(&graph, &context);
        let reps = effort.reps_for(first.total().min(second.total()));
        Self {
            family,
            size,
            graph,
            context,
            record_bytes,
            reps,
            samples: Vec::with_capacity(reps),
        }
    }

    /// One pass's share of the repetitions, back to back after one warm-up
    /// run (which brings the allocator and caches back to this case's size).
    fn measure_pass(&mut self, pass: usize, passes: usize) {
        let share = (pass + 1) * self.reps / passes - pass * self.reps / passes;
        if share == 0 {
            return;
        }
        measure_once(&self.graph, &self.context);
        for _ in 0..share {
            self.sample();
        }
    }

    fn sample(&mut self) {
        let (sample, bytes) = measure_once(&self.graph, &self.context);
        assert_eq!(
            bytes, self.record_bytes,
            "a run's record size is deterministic"
        );
        self.samples.push(sample);
    }

    fn result(self) -> CaseResult {
        let count = |key: &str| self.graph[key].as_array().map_or(0, Vec::len);
        let samples = &self.samples;
        CaseResult {
            family: self.family,
            size: self.size,
            nodes: count("nodes"),
            edges: count("edges"),
            reps: self.reps,
            work: PhaseStats::of(samples, Sample::work),
            plan: PhaseStats::of(samples, |s| s.plan),
            run: PhaseStats::of(samples, |s| s.run),
            save: PhaseStats::of(samples, |s| s.save),
            load: PhaseStats::of(samples, |s| s.load),
            record_bytes: self.record_bytes,
            ir: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Instruction counts (callgrind)
// ---------------------------------------------------------------------------

/// The phase functions of `measure_once`, as callgrind names them.
const PHASE_FUNCTIONS: [&str; 4] = [
    "callgrind_phase_plan",
    "callgrind_phase_run",
    "callgrind_phase_serialize",
    "callgrind_phase_load",
];

/// Instructions executed (callgrind's `Ir`) by each phase of one pass.
#[derive(Clone, Copy, Default)]
struct PhaseIr {
    plan: u64,
    run: u64,
    save: u64,
    load: u64,
}

impl PhaseIr {
    fn work(&self) -> u64 {
        self.plan + self.run
    }

    fn total(&self) -> u64 {
        self.work() + self.save + self.load
    }

    fn json(&self) -> Value {
        json!({
            "plan": self.plan,
            "run": self.run,
            "work": self.work(),
            "serialize": self.save,
            "load": self.load,
        })
    }
}

/// How the growth budget's time ratios are obtained.
enum Counting {
    /// Instruction counts under callgrind (the valgrind version).
    Callgrind(String),
    /// callgrind is not there or not wanted: CPU-time medians instead.
    Unavailable(String),
}

impl Counting {
    /// `BENCH_CALLGRIND=0` turns counting off; otherwise valgrind must answer
    /// `--version`.
    fn detect() -> Self {
        if std::env::var("BENCH_CALLGRIND").is_ok_and(|v| v == "0") {
            return Self::Unavailable("BENCH_CALLGRIND=0".into());
        }
        match std::process::Command::new("valgrind")
            .arg("--version")
            .output()
        {
            Ok(out) if out.status.success() => {
                Self::Callgrind(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Ok(out) => Self::Unavailable(format!("valgrind --version exited with {}", out.status)),
            Err(e) => Self::Unavailable(format!("valgrind not found ({e})")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Callgrind(version) => format!("instruction counts from callgrind ({version})"),
            Self::Unavailable(why) => format!("CPU-time medians; callgrind not used: {why}"),
        }
    }
}

/// Runs this binary under callgrind for one pass of one case
/// (`BENCH_ONE`), collecting only inside the phase functions and dumping the
/// counters as each returns, and reads each dump's `summary:` line.
fn count_instructions(
    family: &Family,
    size: usize,
    dir: &std::path::Path,
) -> Result<PhaseIr, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let stem = format!("{}-{size}.callgrind", family.id);
    // Dumps from an earlier run would be read as this one's.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&stem) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let out_file = dir.join(&stem);
    let mut cmd = std::process::Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg("--collect-atstart=no");
    // One --toggle-collect only (valgrind keeps just one), matching all four;
    // one --dump-after per phase (each is honoured).
    cmd.arg(format!(
        "--toggle-collect={}::callgrind_phase_*",
        module_path!()
    ));
    for f in PHASE_FUNCTIONS {
        cmd.arg(format!("--dump-after={}::{f}", module_path!()));
    }
    let output = cmd
        .arg(&exe)
        .env("BENCH_ONE", format!("{}:{size}", family.id))
        .env_remove("BENCH_JSON")
        .env_remove("BENCH_ONLY")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start valgrind: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(format!(
            "valgrind exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    let mut ir = PhaseIr::default();
    let mut found = [false; 4];
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let trigger = text
            .lines()
            .find_map(|l| l.strip_prefix("desc: Trigger:"))
            .unwrap_or("");
        let Some(phase) = PHASE_FUNCTIONS
            .iter()
            .position(|f| trigger.trim_end().ends_with(&format!("::{f}")))
        else {
            continue; // the dump at program termination: nothing collected
        };
        let summary = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("{}: no summary line", entry.path().display()))?;
        let slot = match phase {
            0 => &mut ir.plan,
            1 => &mut ir.run,
            2 => &mut ir.save,
            _ => &mut ir.load,
        };
        *slot += summary;
        found[phase] = true;
    }
    if let Some(missing) = found.iter().position(|f| !f) {
        return Err(format!(
            "no callgrind dump after {} (files {}*)",
            PHASE_FUNCTIONS[missing],
            out_file.display()
        ));
    }
    Ok(ir)
}

// ---------------------------------------------------------------------------
// Growth
// ---------------------------------------------------------------------------

/// Growth ratios of plan+run, serialize and load between two sizes.
#[derive(Clone, Copy)]
struct PhaseRatios {
    work: f64,
    save: f64,
    load: f64,
}

impl PhaseRatios {
    fn worst(&self) -> f64 {
        self.work.max(self.save).max(self.load)
    }

    fn json(&self) -> Value {
        json!({ "work": self.work, "serialize": self.save, "load": self.load })
    }
}

/// What a growth verdict rests on.
#[derive(Clone, Copy, PartialEq)]
enum Judged {
    /// Instruction counts: deterministic, blind to other work on the machine.
    Instructions,
    /// CPU-time medians (callgrind unavailable).
    CpuTime,
    /// Smoke run without instruction counts: record bytes only.
    BytesOnly,
}

impl Judged {
    fn label(self) -> &'static str {
        match self {
            Self::Instructions => "instructions",
            Self::CpuTime => "CPU time",
            Self::BytesOnly => "bytes only (smoke)",
        }
    }
}

/// How a family grew from one size to ten times that size: in instructions
/// (judged, when counted), in CPU-time and wall-clock medians (for
/// reference), and in record bytes (judged).
struct Growth {
    family: &'static Family,
    from: usize,
    to: usize,
    ir: Option<PhaseRatios>,
    cpu: PhaseRatios,
    /// Plan + run in wall-clock time, for reference.
    work_wall: f64,
    bytes: f64,
    judged: Judged,
}

impl Growth {
    /// The largest judged ratio.
    fn worst(&self) -> f64 {
        let times = match (self.judged, &self.ir) {
            (Judged::Instructions, Some(ir)) => ir.worst(),
            (Judged::CpuTime, _) => self.cpu.worst(),
            _ => 0.0,
        };
        times.max(self.bytes)
    }

    /// The ratios shown with the verdict: instructions where counted.
    fn shown(&self) -> PhaseRatios {
        self.ir.unwrap_or(self.cpu)
    }

    fn passes(&self) -> bool {
        self.worst() <= MAX_GROWTH_RATIO
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    b.as_secs_f64() / a.as_secs_f64().max(1e-12)
}

fn cpu_growth(a: &PhaseStats, b: &PhaseStats) -> f64 {
    if a.cpu.median.is_zero() || b.cpu.median.is_zero() {
        ratio(a.wall.median, b.wall.median)
    } else {
        ratio(a.cpu.median, b.cpu.median)
    }
}

fn ir_ratio(a: u64, b: u64) -> f64 {
    b as f64 / a.max(1) as f64
}

fn growths(results: &[CaseResult], smoke: bool) -> Vec<Growth> {
    results
        .windows(2)
        .filter(|w| std::ptr::eq(w[0].family, w[1].family) && w[1].size == w[0].size * 10)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let ir = match (a.ir, b.ir) {
                (Some(x), Some(y)) => Some(PhaseRatios {
                    work: ir_ratio(x.work(), y.work()),
                    save: ir_ratio(x.save, y.save),
                    load: ir_ratio(x.load, y.load),
                }),
                _ => None,
            };
            let judged = if ir.is_some() {
                Judged::Instructions
            } else if smoke {
                // A smoke run takes too few samples for time ratios to mean much.
                Judged::BytesOnly
            } else {
                Judged::CpuTime
            };
            Growth {
                family: a.family,
                from: a.size,
                to: b.size,
                ir,
                cpu: PhaseRatios {
                    work: cpu_growth(&a.work, &b.work),
                    save: cpu_growth(&a.save, &b.save),
                    load: cpu_growth(&a.load, &b.load),
                },
                work_wall: ratio(a.work.wall.median, b.work.wall.median),
                bytes: b.record_bytes as f64 / a.record_bytes as f64,
                judged,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_bytes(n: usize) -> String {
    let mut digits = n.to_string();
    let mut i = digits.len();
    while i > 3 {
        i -= 3;
        digits.insert(i, ',');
    }
    digits
}

fn fmt_share(share: Option<f64>) -> String {
    share.map_or_else(|| "n/a".into(), |s| format!("{:.0} %", 100.0 * s))
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A Markdown table: a header row, then rows; the first column left-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i == 0 {
                format!(":{}", "-".repeat(w.saturating_sub(1)))
            } else {
                format!("{}:", "-".repeat(w.saturating_sub(1)))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The profile this binary was built with: `cargo bench` uses the bench
/// profile, which inherits `[profile.release]` (read from Cargo.toml as it
/// was at compile time, plus any `[profile.bench]` overrides).
fn profile_description() -> String {
    let manifest = include_str!("../Cargo.toml");
    let section = |name: &str| -> Vec<String> {
        let header = format!("[{name}]");
        manifest
            .lines()
            .skip_while(|l| l.trim() != header)
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let mut out = format!(
        "bench profile (= [profile.release]: {}",
        section("profile.release").join(", ")
    );
    let bench = section("profile.bench");
    if !bench.is_empty() {
        out.push_str(&format!("; [profile.bench]: {}", bench.join(", ")));
    }
    out.push(')');
    out
}

/// An instruction count, shortened: 1.23 M, 45.6 k, 7.89 G.
fn fmt_count(n: u64) -> String {
    let x = n as f64;
    if x < 1e3 {
        format!("{n}")
    } else if x < 1e6 {
        format!("{:.1} k", x / 1e3)
    } else if x < 1e9 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.2} G", x / 1e9)
    }
}

struct Report {
    smoke: bool,
    counting: Counting,
    /// Cases whose instructions could not be counted, with why.
    counting_errors: Vec<String>,
    results: Vec<CaseResult>,
    growths: Vec<Growth>,
    /// Single requests against the free plan's CPU limit.
    requests: Vec<RequestCost>,
}

impl Report {
    fn mixed_single(&self) -> Option<&CaseResult> {
        self.results
            .iter()
            .find(|r| r.family.id == "mixed" && r.size == 1)
    }

    /// The 20-node graph's time budget; not judged in a smoke run.
    fn mixed_verdict(&self, m: &CaseResult) -> Option<bool> {
        (!self.smoke).then(|| m.work.wall.median < MIXED_WORK_BUDGET)
    }

    /// Every missed budget, one line each.
    fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .growths
            .iter()
            .filter(|g| !g.passes())
            .map(|g| {
                let r = g.shown();
                format!(
                    "(core) {}, {} → {}: grew {:.2}× judged on {} (plan+run {:.2}×, serialize {:.2}×, \
                     load {:.2}×, record bytes {:.2}×; plan+run wall clock {:.2}×); budget ≤ {MAX_GROWTH_RATIO}×",
                    g.family.title,
                    fmt_bytes(g.from),
                    fmt_bytes(g.to),
                    g.worst(),
                    g.judged.label(),
                    r.work,
                    r.save,
                    r.load,
                    g.bytes,
                    g.work_wall,
                )
            })
            .collect();
        out.extend(
            self.counting_errors
                .iter()
                .map(|e| format!("(core) callgrind could not count a case, so growth involving it was judged without instruction counts: {e}")),
        );
        if let Some(m) = self
            .mixed_single()
            .filter(|m| self.mixed_verdict(m) == Some(false))
        {
            out.push(format!(
                "(core) 20-node mixed graph: plan + run {} (median); budget < {}",
                fmt_duration(m.work.wall.median),
                fmt_duration(MIXED_WORK_BUDGET)
            ));
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.family.title.to_string(),
                    fmt_bytes(r.size),
                    fmt_bytes(r.nodes),
                    r.reps.to_string(),
                    fmt_duration(r.work.wall.median),
                    fmt_duration(r.work.wall.p95),
                    fmt_share(r.work.on_cpu()),
                    format!("{}/{}", fmt_duration(r.per_unit()), r.family.unit),
                    fmt_duration(r.plan.wall.median),
                    fmt_duration(r.run.wall.median),
                    fmt_duration(r.save.wall.median),
                    fmt_duration(r.load.wall.median),
                    fmt_bytes(r.record_bytes),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "case",
                "N",
                "nodes",
                "reps",
                "plan+run median",
                "plan+run p95",
                "on CPU",
                "per unit",
                "plan",
                "run",
                "serialize",
                "load",
                "record bytes",
            ],
            &rows,
        ));
        out.push('\n');

        let counted: Vec<&CaseResult> = self.results.iter().filter(|r| r.ir.is_some()).collect();
        if !counted.is_empty() {
            let rows: Vec<Vec<String>> = counted
                .iter()
                .map(|r| {
                    let ir = r.ir.unwrap_or_default();
                    vec![
                        r.family.title.to_string(),
                        fmt_bytes(r.size),
                        fmt_count(ir.plan),
                        fmt_count(ir.run),
                        fmt_count(ir.save),
                        fmt_count(ir.load),
                        fmt_count(ir.total()),
                        format!(
                            "{}/{}",
                            fmt_count(ir.work() / r.units().max(1) as u64),
                            r.family.unit
                        ),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "instructions, one pass (callgrind Ir)",
                    "N",
                    "plan",
                    "run",
                    "serialize",
                    "load",
                    "total",
                    "plan+run per unit",
                ],
                &rows,
            ));
            out.push('\n');
        }

        let rows: Vec<Vec<String>> = self
            .growths
            .iter()
            .map(|g| {
                let ir = |f: fn(&PhaseRatios) -> f64| {
                    g.ir.as_ref()
                        .map_or("n/a".into(), |r| format!("{:.2}", f(r)))
                };
                vec![
                    g.family.title.to_string(),
                    format!("{} → {}", fmt_bytes(g.from), fmt_bytes(g.to)),
                    ir(|r| r.work),
                    ir(|r| r.save),
                    ir(|r| r.load),
                    format!("{:.2}", g.bytes),
                    format!("{:.2}", g.cpu.work),
                    format!("{:.2}", g.work_wall),
                    format!("≤ {MAX_GROWTH_RATIO}"),
                    g.judged.label().to_string(),
                    verdict(g.passes()).to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "growth at 10× size",
                "N",
                "plan+run × (Ir)",
                "serialize × (Ir)",
                "load × (Ir)",
                "record bytes ×",
                "(plan+run × CPU time)",
                "(plan+run × wall clock)",
                "budget",
                "judged on",
                "verdict",
            ],
            &rows,
        ));
        if let Some(m) = self.mixed_single() {
            out.push('\n');
            let rows = vec![vec![
                format!("{}-node mixed graph: plan + run", m.nodes),
                fmt_duration(m.work.wall.median),
                fmt_duration(m.work.wall.p95),
                format!("< {} (median)", fmt_duration(MIXED_WORK_BUDGET)),
                self.mixed_verdict(m)
                    .map_or("not judged (smoke)", verdict)
                    .to_string(),
            ]];
            out.push_str(&table(
                &["figure", "median", "p95", "budget", "verdict"],
                &rows,
            ));
        }
        if !self.requests.is_empty() {
            out.push('\n');
            out.push_str(&requests_markdown(&self.requests));
        }
        out
    }

    fn json(&self) -> Value {
        let cases: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "name": r.name(),
                    "family": r.family.id,
                    "title": r.family.title,
                    "size": r.size,
                    "unit": r.family.unit,
                    "nodes": r.nodes,
                    "edges": r.edges,
                    "reps": r.reps,
                    "work": r.work.json(),
                    "plan": r.plan.json(),
                    "run": r.run.json(),
                    "serialize": r.save.json(),
                    "load": r.load.json(),
                    "on_cpu": r.work.on_cpu(),
                    "per_unit_ns": r.per_unit().as_nanos() as u64,
                    "record_bytes": r.record_bytes,
                    "instructions": r.ir.map(|ir| ir.json()),
                })
            })
            .collect();
        let growths: Vec<Value> = self
            .growths
            .iter()
            .map(|g| {
                json!({
                    "family": g.family.id,
                    "title": g.family.title,
                    "from": g.from,
                    "to": g.to,
                    "instructions": g.ir.map(|r| r.json()),
                    "cpu_time": g.cpu.json(),
                    "work_wall": g.work_wall,
                    "record_bytes": g.bytes,
                    "judged_on": g.judged.label(),
                    "worst": g.worst(),
                    "budget": MAX_GROWTH_RATIO,
                    "pass": g.passes(),
                })
            })
            .collect();
        let mixed = self.mixed_single().map(|m| {
            json!({
                "nodes": m.nodes,
                "work": m.work.json(),
                "budget_ns": MIXED_WORK_BUDGET.as_nanos() as u64,
                "pass": self.mixed_verdict(m),
            })
        });
        let failures = self.failures();
        json!({
            "suite": "core",
            "smoke": self.smoke,
            "profile": profile_description(),
            "growth_judged_on": self.counting.describe(),
            "cases": cases,
            "growth": growths,
            "mixed_20": mixed,
            "pass": failures.is_empty(),
            "failures": failures,
            "requests": self.requests.iter().map(|r| json!({
                "name": r.name,
                "what": r.what,
                "wall": r.wall.json(),
                "ir": r.ir,
                "bytes": r.bytes,
                "within_free_plan": r.wall.median <= FREE_PLAN_CPU,
            })).collect::<Vec<_>>(),
            "markdown": self.markdown(),
        })
    }
}

/// `BENCH_ONE="<family>:<size>"`: one measured pass of that case, then exit.
/// This is what runs under callgrind; it prints the case and its record size.
fn bench_one(spec: &str) -> ! {
    let fail = |why: String| -> ! {
        eprintln!("[bench] BENCH_ONE={spec:?}: {why}");
        std::process::exit(2)
    };
    let Some((id, size)) = spec.split_once(':') else {
        fail("expected <family>:<size>".into())
    };
    let Some(family) = FAMILIES.iter().find(|f| f.id == id.trim()) else {
        let ids: Vec<&str> = FAMILIES.iter().map(|f| f.id).collect();
        fail(format!("no family {id:?} (families: {})", ids.join(", ")))
    };
    let Ok(size) = size.trim().parse::<usize>() else {
        fail(format!("size {size:?} is not a number"))
    };
    let (graph, context) = (family.build)(size);
    let context = context.as_object().cloned().unwrap_or_default();
    let (sample, bytes) = measure_once(&graph, &context);
    println!(
        "{} {size}: plan+run {}, serialize {}, load {}, record {} B",
        family.id,
        fmt_duration(sample.work().wall),
        fmt_duration(sample.save.wall),
        fmt_duration(sample.load.wall),
        fmt_bytes(bytes)
    );
    std::process::exit(0)
}

/// Counts every measured case's instructions under callgrind, one process
/// per case; returns the cases that could not be counted, with why.
fn count_all(results: &mut [CaseResult]) -> Vec<String> {
    let dir = std::env::var_os("BENCH_CALLGRIND_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("arcrun-callgrind-{}", std::process::id()))
        });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return vec![format!("cannot create {}: {e}", dir.display())];
    }
    let mut errors = Vec::new();
    for r in results.iter_mut() {
        let started = Instant::now();
        match count_instructions(r.family, r.size, &dir) {
            Ok(ir) => {
                eprintln!(
                    "[bench] callgrind {:<14} plan {:>10}  run {:>10}  serialize {:>10}  load {:>10}  ({:.1} s)",
                    r.name(),
                    fmt_count(ir.plan),
                    fmt_count(ir.run),
                    fmt_count(ir.save),
                    fmt_count(ir.load),
                    started.elapsed().as_secs_f64()
                );
                r.ir = Some(ir);
            }
            Err(e) => {
                eprintln!("[bench] callgrind {}: {e}", r.name());
                errors.push(format!("{}: {e}", r.name()));
            }
        }
    }
    errors
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_ONE") {
        bench_one(&spec);
    }
    if std::env::var("BENCH_REQUESTS_ONE").is_ok() {
        requests_one();
    }
    let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
    let effort = if smoke {
        Effort::smoke()
    } else {
        Effort::full()
    };
    let only = std::env::var("BENCH_ONLY").ok();
    let started = Instant::now();
    let mut cases = Vec::new();
    for family in FAMILIES {
        let sizes = if smoke {
            family.smoke_sizes
        } else {
            family.sizes
        };
        for &size in sizes {
            let wanted = only
                .as_deref()
                .is_none_or(|o| o == family.id || o == format!("{} {size}", family.id));
            if wanted {
                cases.push(Case::prepare(family, size, effort));
            }
        }
    }
    for pass in 0..effort.passes {
        for case in &mut cases {
            case.measure_pass(pass, effort.passes);
        }
    }
    let mut results: Vec<CaseResult> = cases.into_iter().map(Case::result).collect();
    for r in &results {
        eprintln!(
            "[bench] {:<14} {:>6} reps  plan+run median {:>10}  p95 {:>10}  record {:>12} B",
            r.name(),
            r.reps,
            fmt_duration(r.work.wall.median),
            fmt_duration(r.work.wall.p95),
            fmt_bytes(r.record_bytes),
        );
    }
    let counting = Counting::detect();
    eprintln!("[bench] growth judged on {}", counting.describe());
    let counting_errors = match counting {
        Counting::Callgrind(_) => count_all(&mut results),
        Counting::Unavailable(_) => Vec::new(),
    };
    let growths = growths(&results, smoke);
    let requests = if only.as_deref().is_none_or(|o| o == "requests") {
        measure_requests(smoke, &counting)
    } else {
        Vec::new()
    };
    let report = Report {
        requests,
        smoke,
        counting,
        counting_errors,
        results,
        growths,
    };

    println!(
        "\nengine core, native{} ({:.1} s)\n\n{}",
        if smoke { ", SMOKE" } else { "" },
        started.elapsed().as_secs_f64(),
        report.markdown()
    );
    let failures = report.failures();
    if failures.is_empty() {
        println!("budgets: all met");
    } else {
        println!("budgets: MISSED\n  {}", failures.join("\n  "));
    }

    if let Some(path) = std::env::var_os("BENCH_JSON") {
        let text = serde_json::to_string_pretty(&report.json()).expect("report serializes");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("[bench] cannot write {}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
        eprintln!("[bench] wrote {}", path.to_string_lossy());
    }
}

// ---------------------------------------------------------------------------
// Requests against the free plan's CPU limit
// ---------------------------------------------------------------------------

/// The free plan's CPU time per request.
const FREE_PLAN_CPU: Duration = Duration::from_millis(10);
/// Nodes of the triggered graph, and items of the paused FOREACH run.
const TRIGGER_NODES: usize = 100;
const PAUSED_ITEMS: usize = 2_000;

/// The paused FOREACH run's items: `BENCH_PAUSED_ITEMS`, or 2,000 (to find
/// the largest run whose requests fit the free plan).
fn paused_items() -> usize {
    std::env::var("BENCH_PAUSED_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PAUSED_ITEMS)
}

/// One request's core work, measured on its own.
struct RequestCost {
    name: &'static str,
    what: String,
    wall: Stats,
    ir: Option<u64>,
    bytes: usize,
}

/// The request functions, as callgrind names them (`BENCH_REQUESTS_ONE`).
const REQUEST_FUNCTIONS: [&str; 4] = [
    "callgrind_request_trigger",
    "callgrind_request_callback",
    "callgrind_request_write",
    "callgrind_request_read",
];

/// Input → 98 pass-through components → Output: 100 nodes.
fn trigger_graph() -> (Value, Map<String, Value>) {
    let (graph, ctx) = passthrough_chain(TRIGGER_NODES - 2);
    (graph, ctx.as_object().cloned().unwrap_or_default())
}

/// Input → list → (FOREACH) a component answering pending per item → Output.
fn paused_foreach_graph() -> (Value, Map<String, Value>) {
    let (mut graph, ctx) = foreach(paused_items());
    if let Some(each) = graph["nodes"]
        .as_array_mut()
        .and_then(|n| n.iter_mut().find(|n| n["id"] == "each"))
    {
        each["componentId"] = json!("http://c/async");
    }
    (graph, ctx.as_object().cloned().unwrap_or_default())
}

/// A trigger: plan, run to its end (the graph completes in-process), and the
/// record as written.
#[inline(never)]
fn callgrind_request_trigger(graph: &Value, ctx: Map<String, Value>) -> String {
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let plan = plan_from_json(
        black_box(graph),
        &Directory::default(),
        GraphLimits::default(),
    )
    .expect("valid graph");
    let mut run = Run::start(
        plan,
        "bench-run".into(),
        ctx,
        clock.now(),
        Settings::default(),
    );
    continue_run(&mut run, &net, &clock);
    encode(&mut run, MAX_RECORD_BYTES, clock.now())
}

/// A callback for one item of the paused run: load the record, apply the
/// callback, continue the run, write the record.
#[inline(never)]
fn callgrind_request_callback(text: &str, now: u64) -> String {
    let mut run =
        decode(black_box(text), &Directory::default(), Settings::default()).expect("record loads");
    let body = json!({"task_id": "t-each-7", "success": true, "note": "done"});
    let resumed = run.resume("n2-7", body, None, now).expect("a callback");
    assert!(resumed.is_ok(), "the callback applies");
    run.begin_segment(None);
    let effects = run.step(now);
    black_box(effects);
    encode(&mut run, MAX_RECORD_BYTES, now)
}

/// The write of the paused run's record; its length. (Not the same body
/// as `callgrind_phase_serialize`: identical functions are folded into one
/// symbol, and callgrind would see only one of them.)
#[inline(never)]
fn callgrind_request_write(run: &mut Run, now: u64) -> usize {
    encode(black_box(run), MAX_RECORD_BYTES, now).len()
}

/// `GET /runs/{id}`: load the record, build the view, serialize it.
#[inline(never)]
fn callgrind_request_read(text: &str) -> String {
    let run =
        decode(black_box(text), &Directory::default(), Settings::default()).expect("record loads");
    let details = run_details(&run.record, &Redactor::default());
    serde_json::to_string(&details).expect("view serializes")
}

/// The paused 2,000-item run (every item waiting for its callback) and its
/// record.
fn paused_foreach() -> (Run, String, u64) {
    let (graph, ctx) = paused_foreach_graph();
    let clock = Clock::new();
    let net = Network::echo_with_async();
    let plan =
        plan_from_json(&graph, &Directory::default(), GraphLimits::default()).expect("valid");
    let settings = Settings {
        max_calls_per_segment: usize::MAX,
        ..Settings::default()
    };
    let mut run = Run::start(plan, "bench-run".into(), ctx, clock.now(), settings);
    continue_run(&mut run, &net, &clock);
    assert!(
        matches!(run.status(), RunStatus::Paused { .. }),
        "the FOREACH run pauses, got {}",
        run.status().name()
    );
    let text = encode(&mut run.clone(), MAX_RECORD_BYTES, clock.now());
    (run, text, clock.now())
}

/// One pass over the four requests; what each returned, by size.
fn requests_once(
    trigger: &(Value, Map<String, Value>),
    paused: &(Run, String, u64),
) -> [(Duration, usize); 4] {
    let (run, text, now) = paused;
    let t = Instant::now();
    let a = callgrind_request_trigger(&trigger.0, trigger.1.clone()).len();
    let ta = t.elapsed();
    let t = Instant::now();
    let b = callgrind_request_callback(text, now + 1_000).len();
    let tb = t.elapsed();
    let mut copy = run.clone();
    let t = Instant::now();
    let c = callgrind_request_write(&mut copy, *now);
    let tc = t.elapsed();
    let t = Instant::now();
    let d = callgrind_request_read(text).len();
    let td = t.elapsed();
    [(ta, a), (tb, b), (tc, c), (td, d)]
}

/// `BENCH_REQUESTS_ONE=1`: one pass of the requests, then exit (what runs
/// under callgrind).
fn requests_one() -> ! {
    let trigger = trigger_graph();
    let paused = paused_foreach();
    black_box(requests_once(&trigger, &paused));
    std::process::exit(0)
}

/// Instructions of each request function, from one pass under callgrind.
fn count_request_instructions(dir: &std::path::Path) -> Result<[u64; 4], String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let stem = "requests.callgrind";
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(stem) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mut cmd = std::process::Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", dir.join(stem).display()))
        .arg("--collect-atstart=no")
        .arg(format!(
            "--toggle-collect={}::callgrind_request_*",
            module_path!()
        ));
    for f in REQUEST_FUNCTIONS {
        cmd.arg(format!("--dump-after={}::{f}", module_path!()));
    }
    let output = cmd
        .arg(&exe)
        .env("BENCH_REQUESTS_ONE", "1")
        .env_remove("BENCH_ONE")
        .env_remove("BENCH_JSON")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start valgrind: {e}"))?;
    if !output.status.success() {
        return Err(format!("valgrind exited with {}", output.status));
    }
    let mut ir = [0u64; 4];
    let mut found = [false; 4];
    for entry in std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with(stem) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        let trigger = text
            .lines()
            .find_map(|l| l.strip_prefix("desc: Trigger:"))
            .unwrap_or("");
        let Some(i) = REQUEST_FUNCTIONS
            .iter()
            .position(|f| trigger.trim_end().ends_with(&format!("::{f}")))
        else {
            continue;
        };
        let summary = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or("no summary line")?;
        ir[i] += summary;
        found[i] = true;
    }
    match found.iter().position(|f| !f) {
        Some(i) => Err(format!("no dump after {}", REQUEST_FUNCTIONS[i])),
        None => Ok(ir),
    }
}

/// Times the requests over repeated passes and counts their instructions.
fn measure_requests(smoke: bool, counting: &Counting) -> Vec<RequestCost> {
    let trigger = trigger_graph();
    let paused = paused_foreach();
    let reps = if smoke { 3 } else { 25 };
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut bytes = [0usize; 4];
    for _ in 0..reps {
        for (i, (t, b)) in requests_once(&trigger, &paused).into_iter().enumerate() {
            times[i].push(t);
            bytes[i] = b;
        }
    }
    let ir = match counting {
        Counting::Callgrind(_) => {
            let dir = std::env::var_os("BENCH_CALLGRIND_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("arcrun-callgrind-{}", std::process::id()))
                });
            let _ = std::fs::create_dir_all(&dir);
            count_request_instructions(&dir)
                .map_err(|e| eprintln!("[bench] callgrind requests: {e}"))
                .ok()
        }
        Counting::Unavailable(_) => None,
    };
    let what = [
        format!(
            "trigger of a {TRIGGER_NODES}-node graph (plan, run to completion, record written)"
        ),
        format!(
            "callback on a {}-item FOREACH run (load, resume one item, continue, record written)",
            fmt_bytes(paused_items())
        ),
        format!(
            "write of that run's record ({} items paused)",
            fmt_bytes(paused_items())
        ),
        "`GET /runs/{id}` of it (load, view, view serialized)".to_string(),
    ];
    let mut out = Vec::new();
    for (i, name) in ["trigger", "callback", "write", "read"]
        .into_iter()
        .enumerate()
    {
        out.push(RequestCost {
            name,
            what: what[i].clone(),
            wall: Stats::of(std::mem::take(&mut times[i])),
            ir: ir.map(|ir| ir[i]),
            bytes: bytes[i],
        });
    }
    out
}

fn requests_markdown(requests: &[RequestCost]) -> String {
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            vec![
                r.what.clone(),
                fmt_duration(r.wall.median),
                fmt_duration(r.wall.p95),
                r.ir.map_or("—".into(), fmt_count),
                fmt_bytes(r.bytes),
                if r.wall.median <= FREE_PLAN_CPU {
                    "yes".into()
                } else {
                    "no: paid plan".into()
                },
            ]
        })
        .collect();
    format!(
        "Requests against the free plan's {} ms of CPU (the core's work natively; the Worker adds its \
         own I/O and runs wasm, so these are lower bounds):\n\n{}",
        FREE_PLAN_CPU.as_millis(),
        table(
            &[
                "request",
                "median",
                "p95",
                "instructions (Ir)",
                "bytes written / answered",
                "within 10 ms natively",
            ],
            &rows,
        )
    )
}
