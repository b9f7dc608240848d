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
//! its size grows tenfold. Growth is judged on CPU-time medians: long samples
//! lose time slices to other work on the machine that short ones do not,
//! which would otherwise pass for superlinear growth.
//!
//! Environment:
//! - `BENCH_SMOKE=1`: tiny sizes, a handful of repetitions, one pass; time
//!   budgets are not judged.
//! - `BENCH_JSON=<path>`: also write the results there as JSON.
//! - `BENCH_ONLY=<family>` or `BENCH_ONLY="<family> <size>"`: measure only
//!   that (for profiling one case).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use arcrun::core::plan::{plan_from_json, Directory, GraphLimits};
use arcrun::core::record::RunStatus;
use arcrun::core::run::{Run, Settings};
use arcrun::core::stored::{decode, encode};
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

/// One pass: plan → run to completion → serialize → deserialize and load.
/// Returns the timings and the serialized record's size.
fn measure_once(graph: &Value, context: &Map<String, Value>) -> (Sample, usize) {
    let directory = Directory::default();
    let net = Network::echo_with_async();
    let clock = Clock::new();
    let ctx = context.clone();

    let mut watch = Stopwatch::start();
    let plan = plan_from_json(graph, &directory, GraphLimits::default()).expect("valid graph");
    let plan_time = watch.lap();
    // The engine's own work, in one segment: no call budget.
    let settings = Settings {
        max_calls_per_segment: usize::MAX,
        ..Settings::default()
    };
    let mut run = Run::start(plan, "bench-run".into(), ctx, clock.now(), settings);
    continue_run(&mut run, &net, &clock);
    let run_time = watch.lap();
    let text = encode(&mut run, MAX_RECORD_BYTES, clock.now());
    let save_time = watch.lap();
    let loaded = decode(&text, &directory, settings).expect("record loads");
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
        }
    }
}

/// How a family grew from one size to ten times that size. Time ratios are
/// of CPU-time medians, which other work on a shared machine inflates far
/// less than wall-clock ones (wall-clock medians where CPU time is not
/// available).
struct Growth {
    family: &'static Family,
    from: usize,
    to: usize,
    work: f64,
    save: f64,
    load: f64,
    bytes: f64,
    /// Plan + run in wall-clock time, for reference.
    work_wall: f64,
    /// Whether the time ratios count towards the budget; a smoke run takes
    /// too few samples for them to mean much, so there only bytes count.
    judge_time: bool,
}

impl Growth {
    fn worst(&self) -> f64 {
        let times = [self.work, self.save, self.load];
        let judged: &[f64] = if self.judge_time { &times } else { &[] };
        judged.iter().copied().fold(self.bytes, f64::max)
    }

    fn passes(&self) -> bool {
        self.worst() <= MAX_GROWTH_RATIO
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    b.as_secs_f64() / a.as_secs_f64().max(1e-12)
}

fn growth(a: &PhaseStats, b: &PhaseStats) -> f64 {
    if a.cpu.median.is_zero() || b.cpu.median.is_zero() {
        ratio(a.wall.median, b.wall.median)
    } else {
        ratio(a.cpu.median, b.cpu.median)
    }
}

fn growths(results: &[CaseResult], judge_time: bool) -> Vec<Growth> {
    results
        .windows(2)
        .filter(|w| std::ptr::eq(w[0].family, w[1].family) && w[1].size == w[0].size * 10)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            Growth {
                family: a.family,
                from: a.size,
                to: b.size,
                work: growth(&a.work, &b.work),
                save: growth(&a.save, &b.save),
                load: growth(&a.load, &b.load),
                bytes: b.record_bytes as f64 / a.record_bytes as f64,
                work_wall: ratio(a.work.wall.median, b.work.wall.median),
                judge_time,
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

struct Report {
    smoke: bool,
    results: Vec<CaseResult>,
    growths: Vec<Growth>,
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
                format!(
                    "(core) {}, {} → {}: grew {:.2}× (plan+run {:.2}×, serialize {:.2}×, \
                     load {:.2}×, record bytes {:.2}×); budget ≤ {MAX_GROWTH_RATIO}×",
                    g.family.title,
                    fmt_bytes(g.from),
                    fmt_bytes(g.to),
                    g.worst(),
                    g.work,
                    g.save,
                    g.load,
                    g.bytes
                )
            })
            .collect();
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

        let rows: Vec<Vec<String>> = self
            .growths
            .iter()
            .map(|g| {
                vec![
                    g.family.title.to_string(),
                    format!("{} → {}", fmt_bytes(g.from), fmt_bytes(g.to)),
                    format!("{:.2}", g.work),
                    format!("{:.2}", g.save),
                    format!("{:.2}", g.load),
                    format!("{:.2}", g.bytes),
                    format!("{:.2}", g.work_wall),
                    if g.judge_time {
                        format!("≤ {MAX_GROWTH_RATIO}")
                    } else {
                        format!("bytes ≤ {MAX_GROWTH_RATIO} (smoke)")
                    },
                    verdict(g.passes()).to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "growth at 10× size",
                "N",
                "plan+run ×",
                "serialize ×",
                "load ×",
                "record bytes ×",
                "(plan+run × wall clock)",
                "budget",
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
                    "work": g.work,
                    "serialize": g.save,
                    "load": g.load,
                    "record_bytes": g.bytes,
                    "work_wall": g.work_wall,
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
            "profile": "bench profile (= [profile.release]: opt-level \"s\", lto, codegen-units 1)",
            "time_ratios": "CPU time of the benchmark thread (wall clock where unavailable)",
            "cases": cases,
            "growth": growths,
            "mixed_20": mixed,
            "pass": failures.is_empty(),
            "failures": failures,
            "markdown": self.markdown(),
        })
    }
}

fn main() {
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
    let results: Vec<CaseResult> = cases.into_iter().map(Case::result).collect();
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
    let growths = growths(&results, !smoke);
    let report = Report {
        smoke,
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
