//! Uniform reservoir samples (Vitter's Algorithm R) with a seeded generator,
//! so the same file always gives the same report (the CLI and Python write
//! the same bytes).

/// SplitMix64: a small, seedable generator; statistical quality is ample
/// for choosing which records a sample keeps.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n` (Lemire's multiply-shift; the bias, below
    /// n / 2^64, does not matter here).
    pub fn below_or_eq(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * (n as u128 + 1)) >> 64) as u64
    }
}

/// A uniform sample of at most `capacity` of the items offered: every item
/// offered so far is in it with the same probability.
#[derive(Clone, Debug)]
pub struct Reservoir<T> {
    capacity: usize,
    /// Items offered so far.
    seen: u64,
    items: Vec<T>,
    rng: SplitMix64,
}

impl<T> Reservoir<T> {
    pub fn new(capacity: usize, seed: u64) -> Reservoir<T> {
        Reservoir {
            capacity,
            seen: 0,
            items: Vec::new(),
            rng: SplitMix64::new(seed),
        }
    }

    /// Where the next offered item would go: `Some(slot)` to keep it (a
    /// slot of `items()`, or `len()` to append), `None` to drop it. Lets a
    /// caller build the item only when it is kept.
    pub fn slot(&mut self) -> Option<usize> {
        let i = self.seen;
        self.seen += 1;
        if (i as usize) < self.capacity {
            return Some(i as usize);
        }
        let j = self.rng.below_or_eq(i);
        ((j as usize) < self.capacity).then_some(j as usize)
    }

    /// Puts `item` in the slot [`Self::slot`] gave.
    pub fn put(&mut self, slot: usize, item: T) {
        if slot == self.items.len() {
            self.items.push(item);
        } else {
            self.items[slot] = item;
        }
    }

    pub fn offer(&mut self, item: T) {
        if let Some(slot) = self.slot() {
            self.put(slot, item);
        }
    }

    /// Items offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the sample holds every item offered.
    pub fn is_complete(&self) -> bool {
        self.seen as usize <= self.capacity
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_all_while_it_fits() {
        let mut r = Reservoir::new(10, 1);
        for i in 0..7 {
            r.offer(i);
        }
        assert!(r.is_complete());
        assert_eq!(r.items(), &[0, 1, 2, 3, 4, 5, 6]);
        for i in 7..100_000 {
            r.offer(i);
        }
        assert_eq!(r.items().len(), 10);
        assert!(!r.is_complete());
        assert_eq!(r.seen(), 100_000);
    }

    #[test]
    fn the_sample_is_uniform() {
        // Each of 100 items lands in a sample of 10 with probability 0.1:
        // over 4,000 samples, each count is 400 +- 19 (one sd); 5 sd bound.
        let mut hits = [0u32; 100];
        for seed in 0..4000 {
            let mut r = Reservoir::new(10, seed);
            for i in 0..100 {
                r.offer(i);
            }
            for &i in r.items() {
                hits[i] += 1;
            }
        }
        for (i, &h) in hits.iter().enumerate() {
            assert!((305..=495).contains(&h), "item {i}: {h} of 4000");
        }
    }
}
