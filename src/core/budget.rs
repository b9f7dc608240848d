//! How many runs one request may make. A sub-workflow node starts a child
//! run, a FOREACH of them starts one per item, and a child may do the same:
//! without a bound, one trigger makes K^depth runs (and as many KV writes).
//! So every run started below a root run — at any depth — draws on the
//! root's budget: at most `limit` child runs in all, at most `per_second` of
//! them started in any one second. The count lives in one place per root
//! (the adapter keeps it in a Durable Object named after the root run); this
//! is the decision alone, with time passed in.

use serde::{Deserialize, Serialize};

/// The bounds, from the deployment's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildBudget {
    /// Child runs one root run may start, through every depth.
    pub limit: u32,
    /// Child runs started in any one second (a window per second).
    pub per_second: u32,
}

impl Default for ChildBudget {
    fn default() -> Self {
        Self {
            limit: 100,
            per_second: 10,
        }
    }
}

/// What has been drawn from a root's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawn {
    /// Child runs started so far.
    pub started: u32,
    /// The second the current window began (Unix ms).
    pub window_start: u64,
    /// Child runs started in the current window.
    pub in_window: u32,
}

/// The answer to one child run asking to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "grant")]
pub enum Grant {
    /// It may start; it is the `started`-th.
    Granted { started: u32 },
    /// The root's runs have started `limit` children already.
    Exhausted { limit: u32 },
    /// This second's starts are spent: ask again at `at`.
    Later { at: u64 },
}

/// Draws one child run from the budget, or says why not.
pub fn draw(drawn: &mut Drawn, budget: ChildBudget, now: u64) -> Grant {
    if drawn.started >= budget.limit {
        return Grant::Exhausted {
            limit: budget.limit,
        };
    }
    if now.saturating_sub(drawn.window_start) >= 1000 {
        drawn.window_start = now;
        drawn.in_window = 0;
    }
    if drawn.in_window >= budget.per_second.max(1) {
        return Grant::Later {
            at: drawn.window_start + 1000,
        };
    }
    drawn.started += 1;
    drawn.in_window += 1;
    Grant::Granted {
        started: drawn.started,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: ChildBudget = ChildBudget {
        limit: 25,
        per_second: 10,
    };

    #[test]
    fn a_second_holds_per_second_starts_then_says_when_to_ask_again() {
        let mut drawn = Drawn::default();
        for n in 1..=10 {
            assert_eq!(
                draw(&mut drawn, BUDGET, 5_000 + n),
                Grant::Granted { started: n as u32 }
            );
        }
        assert_eq!(draw(&mut drawn, BUDGET, 5_400), Grant::Later { at: 6_001 });
        // Refused, it drew nothing.
        assert_eq!(drawn.started, 10);
        assert_eq!(
            draw(&mut drawn, BUDGET, 6_001),
            Grant::Granted { started: 11 }
        );
    }

    #[test]
    fn the_limit_holds_however_slowly_children_start() {
        let mut drawn = Drawn::default();
        let mut granted = 0;
        for n in 0..100u64 {
            if let Grant::Granted { .. } = draw(&mut drawn, BUDGET, n * 2_000) {
                granted += 1;
            }
        }
        assert_eq!(granted, 25);
        assert_eq!(
            draw(&mut drawn, BUDGET, 1_000_000),
            Grant::Exhausted { limit: 25 }
        );
    }

    #[test]
    fn a_rate_of_zero_still_lets_one_a_second_through() {
        let budget = ChildBudget {
            limit: 3,
            per_second: 0,
        };
        let mut drawn = Drawn::default();
        assert!(matches!(draw(&mut drawn, budget, 0), Grant::Granted { .. }));
        assert_eq!(draw(&mut drawn, budget, 10), Grant::Later { at: 1_000 });
    }
}
