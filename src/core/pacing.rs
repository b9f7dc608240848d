//! When a run's record is written to KV. KV takes at most one write per
//! second to a key, and a run whose waits are answered faster than that (two
//! thousand FOREACH items calling back within two minutes) would be refused
//! on Cloudflare. So the gate gathers what its segments change and writes the
//! record at once when the last write is a second old, otherwise as soon as
//! it is; meanwhile it keeps each applied request in its own storage, so a
//! crash in between loses nothing. This is the policy alone, with time passed
//! in; the gate (`adapter::gate`) performs it.

/// The shortest time between two writes of one key.
pub const MIN_WRITE_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePacer {
    /// When the record was last written (began to be). A fresh object
    /// learns it from the gate's meta before it writes (`learned_write`):
    /// KV remembers a write whatever restarts.
    last_write: Option<u64>,
    /// When the oldest change not yet written was made.
    dirty_since: Option<u64>,
}

impl WritePacer {
    /// The run changed at `at` (the start of the segment that changed it).
    pub fn changed(&mut self, at: u64) {
        self.dirty_since = Some(self.dirty_since.map_or(at, |since| since.min(at)));
    }

    /// Since when changes are waiting to be written, if any are.
    pub fn dirty_since(&self) -> Option<u64> {
        self.dirty_since
    }

    /// The earliest time the record may be written again.
    pub fn allowed_at(&self) -> u64 {
        self.last_write
            .map_or(0, |at| at.saturating_add(MIN_WRITE_INTERVAL_MS))
    }

    pub fn may_write(&self, now: u64) -> bool {
        now >= self.allowed_at()
    }

    /// When the waiting changes are to be written (`None`: nothing waits):
    /// as soon as KV allows, and never before the first of them was made.
    pub fn flush_at(&self) -> Option<u64> {
        self.dirty_since.map(|since| self.allowed_at().max(since))
    }

    /// The record was written, with every change so far, and the write
    /// finished at `at` (counting from its end keeps a margin over the limit).
    pub fn wrote(&mut self, at: u64) {
        self.last_write = Some(at);
        self.dirty_since = None;
    }

    /// A write is known to have begun at `at` (a gate started again read it
    /// from its own storage): none may follow within the interval. Changes
    /// waiting to be written still wait.
    pub fn learned_write(&mut self, at: u64) {
        self.last_write = Some(self.last_write.map_or(at, |known| known.max(at)));
    }

    /// What is known is lost (the kept run was dropped): changes wait again
    /// for the replay that rebuilds them; the last write's time stays.
    pub fn forget_changes(&mut self) {
        self.dirty_since = None;
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_run_writes_at_once_and_then_once_a_second() {
        let mut pacer = WritePacer::default();
        assert_eq!(pacer.flush_at(), None);
        pacer.changed(10_000);
        assert!(pacer.may_write(10_000));
        assert_eq!(pacer.flush_at(), Some(10_000), "as soon as it changed");
        pacer.wrote(10_005);
        assert_eq!(pacer.flush_at(), None);
        // Changes 100 ms later wait for the second to pass.
        pacer.changed(10_100);
        pacer.changed(10_400);
        assert!(!pacer.may_write(10_400));
        assert_eq!(pacer.dirty_since(), Some(10_100));
        assert_eq!(pacer.flush_at(), Some(11_005));
        assert!(pacer.may_write(11_005));
        pacer.wrote(11_010);
        assert_eq!(pacer.allowed_at(), 12_010);
    }

    #[test]
    fn writes_of_a_steady_stream_of_changes_are_a_second_apart() {
        // 16 changes a second for two minutes, written whenever allowed.
        let mut pacer = WritePacer::default();
        let mut writes = Vec::new();
        for i in 0..(16 * 120) {
            let now = 5_000 + i * 1000 / 16;
            pacer.changed(now);
            if pacer.may_write(now) {
                pacer.wrote(now);
                writes.push(now);
            }
        }
        assert!(writes
            .windows(2)
            .all(|w| w[1] - w[0] >= MIN_WRITE_INTERVAL_MS));
        assert!(writes.len() >= 110, "{} writes", writes.len());
    }

    #[test]
    fn forgetting_changes_keeps_the_last_write() {
        let mut pacer = WritePacer::default();
        pacer.wrote(1_000);
        pacer.changed(1_200);
        pacer.forget_changes();
        assert_eq!(pacer.flush_at(), None);
        assert!(!pacer.may_write(1_500));
    }

    #[test]
    fn a_write_learned_after_a_restart_keeps_what_waits() {
        let mut pacer = WritePacer::default();
        pacer.changed(5_000);
        pacer.learned_write(4_500);
        assert_eq!(pacer.dirty_since(), Some(5_000));
        assert!(!pacer.may_write(5_400));
        assert_eq!(pacer.flush_at(), Some(5_500));
        // An older write learned later changes nothing.
        pacer.learned_write(1_000);
        assert_eq!(pacer.allowed_at(), 5_500);
    }

    #[test]
    fn earliest_of_two_optional_times() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(3), None), Some(3));
        assert_eq!(earliest(None, Some(4)), Some(4));
        assert_eq!(earliest(Some(5), Some(4)), Some(4));
    }
}
