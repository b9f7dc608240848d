//! The gate's inbox: requests kept in its storage until a write of the
//! record covers them. Pure bookkeeping, tested natively; the gate performs
//! the storage operations it implies.
//!
//! A request is *kept* (stored under `inbox:{key}`) until a write that holds
//! its change is seen to land, or, for a callback that found a segment
//! running, from before it is applied at all (*queued*). Keys sort in the
//! order the requests were applied, so a replay applies them in that order;
//! each key also records when its request arrived, the time it is judged
//! at. The two differ when a request waited for the run's turn while a
//! later one (the alarm's) took it.

use std::collections::VecDeque;

/// Width of the arrival time in a key: Unix ms, zero-padded.
const TIME_DIGITS: usize = 13;

/// A storage key that sorts in the order requests were applied: a time
/// (the arrival, or the last key's if that is later), then the life of the
/// object that made it (a gate started again after a crash counts from
/// zero, and must never overwrite what its predecessor kept in the same
/// millisecond), then a counter that orders keys made in the same
/// millisecond; and last, when the request arrived.
pub fn key(order: u64, life: u32, counter: u32, arrived: u64) -> String {
    format!(
        "{order:0width$}-{life:08x}-{counter:010}-{arrived:0width$}",
        width = TIME_DIGITS
    )
}

/// The arrival time a key records (`None` for a key this gate did not make).
/// Keys of earlier releases sorted by arrival and carry it first.
pub fn arrival(key: &str) -> Option<u64> {
    let parts: Vec<&str> = key.split('-').collect();
    match parts.as_slice() {
        [_, _, _, arrived] => arrived.parse().ok(),
        _ => key.get(..TIME_DIGITS)?.parse().ok(),
    }
}

/// Requests the gate has kept, as far as its memory knows them.
#[derive(Debug)]
pub struct Inbox<Q> {
    /// Storage may hold requests the kept run has not applied: true when
    /// cold, and again whenever the kept run is dropped.
    pub unchecked: bool,
    /// Kept requests the kept run has applied: forgotten after the next write.
    pub applied: Vec<String>,
    /// Callbacks that arrived while a segment ran: kept, not yet applied.
    pub queued: VecDeque<Q>,
    /// Tells this object's keys from those of its earlier lives.
    pub life: u32,
    counter: u32,
    /// The order time of the last key made.
    last: u64,
}

impl<Q> Default for Inbox<Q> {
    fn default() -> Self {
        Self {
            unchecked: true,
            applied: Vec::new(),
            queued: VecDeque::new(),
            life: 0,
            counter: 0,
            last: 0,
        }
    }
}

impl<Q> Inbox<Q> {
    /// The key for a request that arrived at `at` and is applied (or
    /// queued) now, after every request keyed before it.
    pub fn next_key(&mut self, at: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        self.last = self.last.max(at);
        key(self.last, self.life, self.counter, at)
    }

    /// What memory knew is lost (the kept run was dropped): storage is the
    /// truth again, and the next turn replays all of it — queued callbacks
    /// included, since they were kept before they were queued.
    pub fn forget(&mut self) {
        self.unchecked = true;
        self.queued.clear();
        self.applied.clear();
    }

    /// The write covered every applied request: these keys may go.
    pub fn take_applied(&mut self) -> Vec<String> {
        std::mem::take(&mut self.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_the_order_requests_were_applied_and_tell_their_arrival() {
        let mut inbox = Inbox::<()>::default();
        let a = inbox.next_key(1_700_000_000_123);
        let b = inbox.next_key(1_700_000_000_123);
        let c = inbox.next_key(1_700_000_000_124);
        assert!(a < b && b < c);
        assert_eq!(arrival(&a), Some(1_700_000_000_123));
        // One that waited for the turn while a later arrival took it sorts
        // after that one, and is still judged at its arrival.
        let late = inbox.next_key(1_700_000_000_100);
        assert!(late > c);
        assert_eq!(arrival(&late), Some(1_700_000_000_100));
        assert_eq!(arrival("junk"), None);
        // Keys of earlier releases still tell their arrival.
        assert_eq!(arrival("1700000000123-0000000001"), Some(1_700_000_000_123));
        assert_eq!(
            arrival("1700000000123-00000007-0000000001"),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn an_object_started_again_never_reuses_its_predecessors_keys() {
        let mut before = Inbox::<()>::default();
        let mut after = Inbox::<()> {
            life: 7,
            ..Inbox::default()
        };
        assert_ne!(before.next_key(5), after.next_key(5));
    }

    #[test]
    fn forgetting_makes_storage_the_truth_again() {
        let mut inbox = Inbox::<u8> {
            unchecked: false,
            ..Inbox::default()
        };
        inbox.applied.push("k".into());
        inbox.queued.push_back(1);
        inbox.forget();
        assert!(inbox.unchecked && inbox.applied.is_empty() && inbox.queued.is_empty());
    }
}
