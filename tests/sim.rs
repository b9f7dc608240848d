//! The deterministic simulation (`arcrun::sim`): the real gate and run
//! state machine against simulated Cloudflare — KV's write limit, Durable
//! Object storage, alarms that fire late or twice, crashes at every await,
//! concurrent requests, daemons and callers with every habit — under a
//! fixed set of seeds. A failing seed prints the command that replays it.
//! `scripts/sim.sh [seconds]` runs new seeds for longer.

use std::time::{Duration, Instant};

use arcrun::sim::{simulate, simulate_traced, source::Source, Report};

/// Seeds that found bugs, kept so they never come back (see the note on
/// each).
const REGRESSIONS: &[u64] = &[];

/// How many fresh seeds `cargo test` runs after the regressions.
const SEEDS: u64 = 30_000;

fn replay_hint(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test --test sim -- one_seed --ignored --nocapture")
}

fn run(seed: u64) -> Report {
    let report = simulate(Source::seeded(seed));
    if !report.violations.is_empty() {
        panic!(
            "seed {seed} breaks an invariant:\n  {}\nreplay: {}",
            report.violations.join("\n  "),
            replay_hint(seed)
        );
    }
    report
}

#[test]
fn regression_seeds_hold() {
    for seed in REGRESSIONS {
        run(*seed);
    }
}

#[test]
fn fixed_seeds_hold() {
    let started = Instant::now();
    let mut total = Report::default();
    for seed in 0..SEEDS {
        let report = run(seed);
        total.steps += report.steps;
        total.crashes += report.crashes;
        total.requests += report.requests;
        total.alarms += report.alarms;
    }
    println!(
        "{SEEDS} schedules, {} steps, {} requests, {} alarms, {} crashes in {:?}",
        total.steps,
        total.requests,
        total.alarms,
        total.crashes,
        started.elapsed()
    );
    assert!(total.crashes > 0 && total.alarms > 0);
}

/// `SIM_SEED=n` replays one schedule; `SIM_SECONDS=s` (with `SIM_BASE`)
/// runs fresh seeds for that long (scripts/sim.sh).
#[test]
#[ignore = "run by scripts/sim.sh or to replay a seed"]
fn one_seed() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        let report = simulate_traced(Source::seeded(seed), true);
        for line in &report.trace {
            println!("{line}");
        }
        println!(
            "steps {}, requests {}, alarms {}, crashes {}",
            report.steps, report.requests, report.alarms, report.crashes
        );
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        return;
    }
    let seconds: u64 = std::env::var("SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let base: u64 = std::env::var("SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 32);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut total = Report::default();
    let mut seed = base;
    while Instant::now() < deadline {
        let report = run(seed);
        total.steps += report.steps;
        total.crashes += report.crashes;
        total.requests += report.requests;
        seed += 1;
    }
    println!(
        "sim: {} schedules (seeds {base}..{seed}), {} steps, {} requests, {} crashes injected, 0 invariants broken",
        seed - base,
        total.steps,
        total.requests,
        total.crashes
    );
}
