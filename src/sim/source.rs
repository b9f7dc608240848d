//! The one source of every choice a simulation makes: a seeded generator,
//! or the bytes a fuzzer hands in (so coverage guides the schedules), with
//! the seed taking over when the bytes run out.

/// Decides every interleaving, fault and timing of one simulation.
#[derive(Debug, Clone)]
pub struct Source {
    state: u64,
    bytes: Vec<u8>,
    at: usize,
}

impl Source {
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: seed,
            bytes: Vec::new(),
            at: 0,
        }
    }

    /// Choices read from `bytes` first: a fuzzer's input steers the run.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let seed = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            state: seed,
            bytes: bytes.to_vec(),
            at: 0,
        }
    }

    /// SplitMix64: small, fast, and good enough to spread schedules.
    fn next_seeded(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A source of its own, drawn from this one's state without moving it:
    /// choices added to the simulator later draw from a fork, so a seed
    /// that does not take them replays the schedule it always did.
    pub fn fork(&self, salt: u64) -> Self {
        let mut fork = Self::seeded(self.state ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        fork.next_seeded();
        fork
    }

    pub fn next_u64(&mut self) -> u64 {
        if self.at + 2 <= self.bytes.len() {
            let pair = [self.bytes[self.at], self.bytes[self.at + 1]];
            self.at += 2;
            // Two bytes decide a choice: every choice made here is of far
            // fewer than 65,536 options.
            return u64::from(u16::from_le_bytes(pair));
        }
        self.next_seeded()
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_sequence() {
        let a: Vec<u64> = {
            let mut s = Source::seeded(7);
            (0..5).map(|_| s.next_u64()).collect()
        };
        let mut s = Source::seeded(7);
        assert_eq!(a, (0..5).map(|_| s.next_u64()).collect::<Vec<_>>());
        let mut t = Source::seeded(8);
        assert_ne!(a[0], t.next_u64());
    }

    #[test]
    fn bytes_steer_the_choices_then_the_seed_takes_over() {
        let mut s = Source::from_bytes(&[3, 0, 1]);
        assert_eq!(s.below(1000), 3);
        // One byte left: not enough for a choice; the generator decides.
        let _ = s.below(10);
        assert!(s.between(5, 7) >= 5);
    }
}
