//! Splitting a batch of views over threads by view rather than inside each
//! matmul.
//!
//! Inside one forward pass every matmul, attention call and log-softmax is
//! split over the threads and joined before the next: hundreds of joins per
//! batch, each waiting for the slowest thread, with the element-wise work
//! between them (norms, RoPE, residual adds, copies) run by one thread while
//! the others wait. Two one-thread processes on halves of the data have
//! none of that, and were measured 18% faster than one two-thread process
//! (issue 22). So when a batch holds enough new tokens, the scorer deals
//! its views out to one *lane* per thread, and each lane runs whole forward
//! passes on its own thread, with no synchronisation until the lanes are
//! done. A view's log-probs depend only on its own tokens (every kernel
//! computes each token's row on its own), so how views are dealt never
//! changes a result.

use std::ops::Range;

/// Fewest new tokens a lane must get for lanes to pay: below it a lane's
/// matmuls read each weight for too few tokens, and splitting each matmul
/// over the threads (the other way) is faster.
pub const MIN_LANE_TOKENS: usize = 256;

/// How many lanes to deal `total_tokens` new tokens to with `n_threads`
/// threads: one per thread when each gets at least [`MIN_LANE_TOKENS`],
/// else 1 (no lanes: the threads share each matmul instead). Fewer lanes
/// than threads would leave threads idle, so that is never chosen.
pub fn n_lanes(n_threads: usize, total_tokens: usize) -> usize {
    if n_threads > 1 && total_tokens >= n_threads * MIN_LANE_TOKENS {
        n_threads
    } else {
        1
    }
}

/// Deals items of `sizes[i]` tokens to `n_lanes` lanes so that the lanes'
/// totals differ by at most one item: largest first, each to the lane with
/// the fewest tokens so far (ties to the lowest lane). Each lane lists its
/// items in their original order; every item is in exactly one lane.
pub fn deal(sizes: &[usize], n_lanes: usize) -> Vec<Vec<usize>> {
    assert!(n_lanes >= 1, "at least one lane");
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Stable: equal sizes keep their order, so the deal is deterministic.
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut lanes = vec![Vec::new(); n_lanes];
    let mut load = vec![0usize; n_lanes];
    for i in order {
        let lane = (0..n_lanes)
            .min_by_key(|&l| load[l])
            .expect("at least one lane");
        lanes[lane].push(i);
        load[lane] += sizes[i];
    }
    for lane in &mut lanes {
        lane.sort_unstable();
    }
    lanes
}

/// Consecutive runs of items, each of at most `limit` tokens (or a single
/// larger item): greedy, as many items as fit.
pub fn batches(sizes: &[usize], limit: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let (mut end, mut n) = (start, 0);
        while end < sizes.len() {
            if end > start && n + sizes[end] > limit {
                break;
            }
            n += sizes[end];
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_only_when_every_thread_gets_enough_tokens() {
        assert_eq!(n_lanes(1, 100_000), 1);
        assert_eq!(n_lanes(2, 2 * MIN_LANE_TOKENS - 1), 1);
        assert_eq!(n_lanes(2, 2 * MIN_LANE_TOKENS), 2);
        assert_eq!(n_lanes(4, 3 * MIN_LANE_TOKENS), 1);
        assert_eq!(n_lanes(4, 40 * MIN_LANE_TOKENS), 4);
    }

    #[test]
    fn deal_is_a_balanced_partition_in_order() {
        let sizes = [120, 80, 300, 95, 95, 40, 210, 150, 60, 77, 130];
        for n in 1..=4 {
            let lanes = deal(&sizes, n);
            assert_eq!(lanes.len(), n);
            let mut seen: Vec<usize> = lanes.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..sizes.len()).collect::<Vec<_>>(), "{n} lanes");
            for lane in &lanes {
                assert!(lane.windows(2).all(|w| w[0] < w[1]), "{lane:?} in order");
            }
            let loads: Vec<usize> = lanes
                .iter()
                .map(|l| l.iter().map(|&i| sizes[i]).sum())
                .collect();
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= 300, "{n} lanes: loads {loads:?}");
        }
        // Largest-first keeps equal items even.
        let loads: Vec<usize> = deal(&[100; 10], 2).iter().map(|l| 100 * l.len()).collect();
        assert_eq!(loads, [500, 500]);
    }

    #[test]
    fn batches_are_greedy_runs_under_the_limit() {
        assert_eq!(batches(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(batches(&[4, 4, 4, 30, 1], 10), [0..2, 2..3, 3..4, 4..5]);
        assert_eq!(batches(&[5, 5, 5], 10), [0..2, 2..3]);
    }
}
