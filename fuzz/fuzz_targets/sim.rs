//! The deterministic simulation of gates (`arcrun::sim`), steered by the
//! fuzzer's bytes: each two bytes decide one choice of the schedule (which
//! request is polled next, a latency, a daemon's habit, a crash), so
//! coverage guides the search for schedules that break an invariant.
//!
//! Checked: every invariant `arcrun::sim::check` states (a callback answered
//! `resumed` or `accepted` is applied once and promptly, runs settle, KV is
//! written at most once a second per key, journaled calls are not made
//! again, the gate's run equals KV's record, deadlines are taken on time).

#![no_main]

use arcrun::sim::{simulate, source::Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = simulate(Source::from_bytes(data));
    assert!(
        report.violations.is_empty(),
        "an invariant broke:\n  {}",
        report.violations.join("\n  ")
    );
});
