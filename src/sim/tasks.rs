//! What runs on the simulated objects: a request or an alarm on a run's
//! gate, a request or an alarm on a claim object, each a task the
//! scheduler polls and may drop (a crash), over the world's platform.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use serde_json::Value;

use super::claims::SimClaimStorage;
use super::senders::Sender;
use super::world::{Shared, SimClock, SimComponents, SimNotifier, SimObject, SimRecords};
use super::{Simulation, T0};
use crate::core::claim::ClaimKeeper;
use crate::core::error::EngineError;
use crate::core::gate::{Answer, Gate, GateLog, Platform};
use crate::core::segment::{Command, GateConfig};

pub(super) type TaskFuture = Pin<Box<dyn Future<Output = Result<Answer, EngineError>>>>;

pub(super) struct Task {
    pub(super) object: String,
    pub(super) origin: Origin,
    pub(super) future: TaskFuture,
}

/// What a task is doing on its object.
pub(super) enum Origin {
    /// Answering a request from outside.
    Request(u64, Box<Sender>),
    /// Answering a sub-request of another task (`claims::Rpc`).
    Rpc(u64),
    Alarm,
}

/// The gate's own log, in the trace.
fn trace_log(world: &Shared, event: GateLog<'_>) {
    if let GateLog::Segment {
        run_id,
        outcome,
        started,
    } = event
    {
        let line = match outcome {
            Ok(report) => format!("  segment {run_id} {} from {}", report.kind, started - T0),
            Err(e) => format!("  segment {run_id} failed: {e}"),
        };
        world.borrow_mut().note(|| line);
    }
}

/// The platform pieces of one object, owned by the task that uses them.
struct Parts {
    records: SimRecords,
    components: SimComponents,
    clock: SimClock,
    object: SimObject,
    notifier: SimNotifier,
}

impl Parts {
    fn new(world: &Shared, object: &str) -> Self {
        Self {
            records: SimRecords {
                world: Rc::clone(world),
                object: object.to_string(),
            },
            components: SimComponents {
                world: Rc::clone(world),
                run_id: object.to_string(),
            },
            clock: SimClock {
                world: Rc::clone(world),
            },
            object: SimObject {
                world: Rc::clone(world),
                run_id: object.to_string(),
            },
            notifier: SimNotifier {
                world: Rc::clone(world),
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn platform<'a>(
        &'a self,
        config: &'a GateConfig,
        log: &'a dyn Fn(GateLog<'_>),
    ) -> Platform<'a, SimRecords, SimComponents, SimClock, SimNotifier, SimObject> {
        Platform {
            records: &self.records,
            components: &self.components,
            clock: &self.clock,
            notifier: &self.notifier,
            object: &self.object,
            config,
            log,
        }
    }
}

impl Simulation {
    pub(super) fn gate(&mut self, object: &str) -> Rc<Gate> {
        if !self.gates.contains_key(object) {
            let gate = self.fresh_gate();
            self.gates.insert(object.to_string(), gate);
        }
        Rc::clone(&self.gates[object])
    }

    /// A new life of an object: its memory empty, its keys its own.
    pub(super) fn fresh_gate(&self) -> Rc<Gate> {
        let life = self.world.borrow_mut().source.below(u64::from(u32::MAX)) as u32;
        Rc::new(Gate::starting(life))
    }

    pub(super) fn request_future(&mut self, object: &str, command: Command) -> TaskFuture {
        let gate = self.gate(object);
        let world = Rc::clone(&self.world);
        let config = Rc::clone(&self.config);
        let object = object.to_string();
        Box::pin(async move {
            let parts = Parts::new(&world, &object);
            let log = |event: GateLog<'_>| trace_log(&world, event);
            gate.handle(&parts.platform(&config, &log), command).await
        })
    }

    pub(super) fn alarm_future(&mut self, object: &str) -> TaskFuture {
        let gate = self.gate(object);
        let world = Rc::clone(&self.world);
        let config = Rc::clone(&self.config);
        let object = object.to_string();
        Box::pin(async move {
            let parts = Parts::new(&world, &object);
            let log = |event: GateLog<'_>| trace_log(&world, event);
            gate.alarm(&parts.platform(&config, &log)).await?;
            Ok(Answer {
                status: 200,
                body: Value::Null,
            })
        })
    }

    pub(super) fn keeper(&mut self, object: &str) -> Rc<ClaimKeeper> {
        Rc::clone(self.keepers.entry(object.to_string()).or_default())
    }

    pub(super) fn claim_future(
        &mut self,
        object: &str,
        claim: crate::core::claim::Claim,
    ) -> TaskFuture {
        let keeper = self.keeper(object);
        let world = Rc::clone(&self.world);
        let storage = SimClaimStorage {
            world: Rc::clone(&self.world),
            object: object.to_string(),
        };
        Box::pin(async move {
            let now = world.borrow().now;
            let answer = keeper.handle(&storage, claim, now).await?;
            Ok(Answer {
                status: 200,
                body: serde_json::to_value(answer).unwrap_or_default(),
            })
        })
    }

    pub(super) fn claim_alarm_future(&mut self, object: &str) -> TaskFuture {
        let keeper = self.keeper(object);
        let storage = SimClaimStorage {
            world: Rc::clone(&self.world),
            object: object.to_string(),
        };
        Box::pin(async move {
            keeper.expire(&storage).await?;
            Ok(Answer {
                status: 200,
                body: Value::Null,
            })
        })
    }
}
