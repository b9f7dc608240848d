use std::cell::RefCell;
use std::collections::BTreeMap;

use futures::executor::block_on;

use super::*;

fn asked(run: &str, hash: &str, at: u64) -> Claim {
    Claim {
        run_id: run.into(),
        body_hash: hash.into(),
        at,
        ..Claim::default()
    }
}

#[test]
fn the_first_claim_is_made_and_handed_out() {
    let verdict = decide(asked("r1", "h", 5), None, false);
    let Verdict::Keep {
        claim,
        hand_out,
        new,
    } = verdict
    else {
        panic!("not kept: {verdict:?}");
    };
    assert_eq!((claim.run_id.as_str(), claim.at, claim.taken), ("r1", 5, 0));
    assert!(hand_out && new);
}

#[test]
fn a_later_claim_is_told_the_held_one_and_whether_it_is_being_started() {
    let held = asked("r1", "h", 5);
    assert_eq!(
        decide(asked("r2", "h", 6), Some(held.clone()), true),
        Verdict::Tell(Claim {
            starting: true,
            ..held.clone()
        })
    );
    let started = Claim {
        started: true,
        ..held
    };
    // A confirmed claim is never "being started", whatever the memory says.
    assert_eq!(
        decide(asked("r2", "h", 6), Some(started.clone()), true),
        Verdict::Tell(started)
    );
}

#[test]
fn only_the_holder_of_the_current_take_releases_or_confirms() {
    let held = Claim {
        taken: 1,
        ..asked("r1", "h", 5)
    };
    let stale = Claim {
        release: true,
        ..asked("r1", "h", 9)
    };
    assert!(matches!(
        decide(stale, Some(held.clone()), false),
        Verdict::Tell(_)
    ));
    let current = Claim {
        release: true,
        taken: 1,
        ..asked("r1", "h", 9)
    };
    assert!(matches!(
        decide(current, Some(held.clone()), false),
        Verdict::Forget(_)
    ));
    let confirm = Claim {
        started: true,
        taken: 1,
        ..asked("r1", "h", 9)
    };
    let Verdict::Keep {
        claim,
        hand_out,
        new,
    } = decide(confirm, Some(held), true)
    else {
        panic!("not confirmed");
    };
    assert!(claim.started && !hand_out && !new);
    assert_eq!(claim.at, 5, "confirming keeps the claim's 24 hours");
}

#[test]
fn a_take_over_is_a_compare_and_swap_on_the_takes_so_far() {
    let held = asked("r1", "h", 5);
    let take = |taken| Claim {
        take_over: Some(taken),
        ..asked("r1", "h", 40_000)
    };
    let Verdict::Keep {
        claim, hand_out, ..
    } = decide(take(0), Some(held.clone()), false)
    else {
        panic!("not taken over");
    };
    assert_eq!(claim.taken, 1);
    assert!(hand_out);
    // Whoever asks next with the old count loses to the first.
    assert!(matches!(
        decide(take(0), Some(claim), false),
        Verdict::Tell(_)
    ));
    // Never while the object's holder may still be on its way.
    assert!(matches!(
        decide(take(0), Some(held.clone()), true),
        Verdict::Tell(_)
    ));
    // Never a confirmed run's claim.
    let started = Claim {
        started: true,
        ..held
    };
    assert!(matches!(
        decide(take(0), Some(started), false),
        Verdict::Tell(_)
    ));
}

#[test]
fn replacing_needs_the_claim_in_force_and_a_peek_changes_nothing() {
    let held = asked("r1", "h", 5);
    let replace = Claim {
        replaces: Some(("r1".into(), "h".into())),
        ..asked("r2", "g", 9)
    };
    assert!(matches!(
        decide(replace.clone(), Some(held.clone()), false),
        Verdict::Keep { new: true, .. }
    ));
    let wrong = Claim {
        replaces: Some(("r0".into(), "h".into())),
        ..replace
    };
    assert!(matches!(
        decide(wrong, Some(held.clone()), false),
        Verdict::Tell(_)
    ));
    let peek = Claim {
        peek: true,
        ..asked("r2", "g", 9)
    };
    assert_eq!(
        decide(peek.clone(), Some(held.clone()), false),
        Verdict::Tell(held)
    );
    let Verdict::Tell(none) = decide(peek, None, false) else {
        panic!("a peek made a claim");
    };
    assert_eq!(none.run_id, "");
}

#[test]
fn names_of_different_kinds_never_meet() {
    let owner = "a".repeat(64);
    let trigger = ClaimName::Trigger {
        owner: &owner,
        key: "subflow/x",
    };
    let subflow = ClaimName::Subflow {
        owner: &owner,
        call: "x",
    };
    assert_ne!(trigger.object_name(), subflow.object_name());
    assert!(ClaimName::Trigger {
        owner: "not-an-owner",
        key: "k"
    }
    .object_name()
    .is_err());
    assert_eq!(
        ClaimName::Task { hash: "ab" }.object_name(),
        Ok("task/ab".to_string())
    );
}

/// One claim object in memory, its storage and its alarm.
#[derive(Default)]
struct Object {
    stored: RefCell<Option<String>>,
    alarm: RefCell<Option<u64>>,
}

impl ClaimStorage for Object {
    async fn get(&self) -> Result<Option<String>, EngineError> {
        Ok(self.stored.borrow().clone())
    }
    async fn put(&self, text: String) -> Result<(), EngineError> {
        *self.stored.borrow_mut() = Some(text);
        Ok(())
    }
    async fn forget(&self) -> Result<(), EngineError> {
        *self.stored.borrow_mut() = None;
        *self.alarm.borrow_mut() = None;
        Ok(())
    }
    async fn set_alarm(&self, at: u64) -> Result<(), EngineError> {
        *self.alarm.borrow_mut() = Some(at);
        Ok(())
    }
}

#[test]
fn the_keeper_stores_claims_sets_their_end_and_forgets_expired_ones() {
    let object = Object::default();
    let keeper = ClaimKeeper::default();
    let made = block_on(keeper.handle(&object, asked("r1", "h", 1_000), 1_000)).unwrap();
    assert!(made.made);
    assert_eq!(*object.alarm.borrow(), Some(1_000 + CLAIM_TTL_MS));
    let again = block_on(keeper.handle(&object, asked("r2", "h", 2_000), 2_000)).unwrap();
    assert_eq!(
        (again.run_id.as_str(), again.made, again.starting),
        ("r1", false, true)
    );
    // A new life remembers the claim but not that it handed it out.
    let restarted = ClaimKeeper::default();
    let told = block_on(restarted.handle(&object, asked("r2", "h", 3_000), 3_000)).unwrap();
    assert_eq!((told.run_id.as_str(), told.starting), ("r1", false));
    // Past its end (the alarm late, say) the claim counts for nothing.
    let late = 1_000 + CLAIM_TTL_MS;
    let fresh = block_on(restarted.handle(&object, asked("r3", "h", late), late)).unwrap();
    assert_eq!((fresh.run_id.as_str(), fresh.made), ("r3", true));
}

/// Claim objects by name and the runs their gates know, in memory.
#[derive(Default)]
struct World {
    objects: BTreeMap<String, Object>,
    keepers: BTreeMap<String, ClaimKeeper>,
    known: RefCell<Vec<String>>,
    now: u64,
}

impl Claimant for World {
    type View = &'static str;
    async fn ask(&self, name: &ClaimName<'_>, claim: &Claim) -> Result<Claim, EngineError> {
        let name = name.object_name()?;
        keeper_handle(self, &name, claim.clone()).await
    }
    async fn read(&self, run_id: &str) -> Result<GateRead<&'static str>, EngineError> {
        let known = self.known.borrow().iter().any(|r| r == run_id);
        Ok(GateRead {
            known,
            view: if known { "run" } else { "unknown" },
        })
    }
    fn now(&self) -> u64 {
        self.now
    }
}

async fn keeper_handle(world: &World, name: &str, claim: Claim) -> Result<Claim, EngineError> {
    let object = &world.objects[name];
    world.keepers[name].handle(object, claim, world.now).await
}

fn world_with(name: &ClaimName<'_>) -> World {
    let mut world = World::default();
    let object_name = name.object_name().unwrap();
    world.objects.insert(object_name.clone(), Object::default());
    world.keepers.insert(object_name, ClaimKeeper::default());
    world
}

#[test]
fn a_claimed_run_never_stored_is_started_again_under_its_id_by_one_request() {
    let owner = "b".repeat(64);
    let name = ClaimName::Trigger {
        owner: &owner,
        key: "k",
    };
    let mut world = world_with(&name);
    let Claimed::Start(first) = block_on(claim_run(&world, &name, "r1", "h")).unwrap() else {
        panic!("the first request does not start");
    };
    // Moments later the holder may still be on its way: told, as running.
    world.now = 1_000;
    assert_eq!(
        block_on(claim_run(&world, &name, "r2", "h")).unwrap(),
        Claimed::Replay {
            run_id: "r1".into(),
            view: "unknown",
            starting: true
        }
    );
    // The holder died; its object restarted and forgot handing it out.
    let object_name = name.object_name().unwrap();
    world.keepers.insert(object_name, ClaimKeeper::default());
    world.now = 60_000;
    let Claimed::Start(taken) = block_on(claim_run(&world, &name, "r3", "h")).unwrap() else {
        panic!("the claim was not taken over");
    };
    assert_eq!((taken.run_id.as_str(), taken.taken), ("r1", 1));
    // The first holder's late release cannot free the taken claim.
    block_on(settle_start(&world, &name, &first, StartOutcome::Refused));
    world.known.borrow_mut().push("r1".into());
    block_on(settle_start(&world, &name, &taken, StartOutcome::Started));
    assert_eq!(
        block_on(claim_run(&world, &name, "r4", "h")).unwrap(),
        Claimed::Replay {
            run_id: "r1".into(),
            view: "run",
            starting: false
        }
    );
    assert!(matches!(
        block_on(claim_run(&world, &name, "r5", "other")).unwrap(),
        Claimed::Conflict(held) if held.run_id == "r1"
    ));
}

#[test]
fn an_unsure_start_is_taken_over_under_its_id_only_when_the_gate_does_not_know_the_run() {
    let owner = "c".repeat(64);
    let name = ClaimName::Subflow {
        owner: &owner,
        call: "parent.wait",
    };
    let world = world_with(&name);
    let Claimed::Start(claim) = block_on(claim_run(&world, &name, "r1", "")).unwrap() else {
        panic!("no start");
    };
    world.known.borrow_mut().push("r1".into());
    block_on(settle_start(&world, &name, &claim, StartOutcome::Unsure));
    assert!(matches!(
        block_on(claim_run(&world, &name, "r2", "")).unwrap(),
        Claimed::Replay { run_id, starting: false, .. } if run_id == "r1"
    ));
    world.known.borrow_mut().clear();
    block_on(settle_start(&world, &name, &claim, StartOutcome::Unsure));
    // Not freed for another run: the next request starts the same one.
    let Claimed::Start(again) = block_on(claim_run(&world, &name, "r3", "")).unwrap() else {
        panic!("the abandoned claim was not taken over");
    };
    assert_eq!((again.run_id.as_str(), again.taken), ("r1", 1));
}

#[test]
fn a_refused_start_frees_the_name() {
    let owner = "d".repeat(64);
    let name = ClaimName::Trigger {
        owner: &owner,
        key: "k",
    };
    let world = world_with(&name);
    let Claimed::Start(claim) = block_on(claim_run(&world, &name, "r1", "h")).unwrap() else {
        panic!("no start");
    };
    block_on(settle_start(&world, &name, &claim, StartOutcome::Refused));
    let Claimed::Start(fresh) = block_on(claim_run(&world, &name, "r2", "h2")).unwrap() else {
        panic!("the released name was not free");
    };
    assert_eq!(fresh.run_id, "r2");
}
