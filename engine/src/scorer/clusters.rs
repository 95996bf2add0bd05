//! Items of a batch that start with the same long prompt, computed once.
//!
//! Every view continues the scorer's precomputed prompt, and the views of a
//! turn continue their shared history (`Side::items`). What neither covers
//! is a long prefix that several *turns* start with: a conversation's
//! system message and tool definitions, which each of its turns repeats in
//! every view, or the system prompt that every record of a data set
//! repeats. A cluster computes such a prefix once per batch; its items'
//! shared histories and lone views continue from it. Results do not change
//! (a row's keys and values are computed alone, whatever call computes
//! them); only the work does.

use super::side::{shared_len, Item};
use crate::views::ViewTokens;

/// Fewest tokens beyond the precomputed prompt that a cluster must share:
/// below it the extra forward call and cache copies cost about what they save.
pub(super) const MIN_SHARED: usize = 16;

/// Where one item of a batch starts: `ids` are the tokens it may take from
/// a prefix (its turn's shared history, or a lone view's prompt but its
/// last token), of which the precomputed prompt covers the first `covered`.
#[derive(Clone, Copy)]
pub(super) struct Start<'a> {
    pub ids: &'a [u32],
    pub covered: usize,
}

/// Items (indices into the batch) that share their first `len` ids, of
/// which the precomputed prompt covers the first `from`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cluster {
    pub items: Vec<usize>,
    pub from: usize,
    pub len: usize,
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Clusters of `starts`: the items sorted by their ids (so items sharing a
/// prefix are neighbours, wherever the batch put them), then each added to
/// the open cluster while that lowers the tokens computed (the cluster's
/// shared part, plus each member's own part after it) against starting a
/// new one. Clusters of one item, or sharing fewer than [`MIN_SHARED`]
/// tokens beyond the precomputed prompt, are left out.
pub(super) fn clusters(starts: &[Start]) -> Vec<Cluster> {
    let mut order: Vec<usize> = (0..starts.len()).collect();
    order.sort_by(|&a, &b| starts[a].ids.cmp(starts[b].ids));
    let mut out = Vec::new();
    let mut open: Option<Cluster> = None;
    for i in order {
        let s = starts[i];
        if let Some(c) = &mut open {
            let first = starts[c.items[0]];
            let len = lcp(first.ids, s.ids).min(c.len);
            // Joining shortens the shared part from c.len to len for the
            // other members (n - 1 of them pay the difference again each:
            // the first is the cluster), and saves this item len - covered.
            let n = c.items.len();
            let cost = (n - 1) * (c.len - len);
            if len >= s.covered + MIN_SHARED && cost < len - s.covered {
                c.len = len;
                c.from = c.from.min(s.covered);
                c.items.push(i);
                continue;
            }
        }
        if let Some(c) = open.take() {
            keep(c, &mut out);
        }
        open = Some(Cluster {
            items: vec![i],
            from: s.covered.min(s.ids.len()),
            len: s.ids.len(),
        });
    }
    if let Some(c) = open {
        keep(c, &mut out);
    }
    out
}

fn keep(mut c: Cluster, out: &mut Vec<Cluster>) {
    if c.items.len() > 1 && c.len >= c.from + MIN_SHARED {
        c.items.sort_unstable();
        out.push(c);
    }
}

/// Where each item starts (`clusters::Start`): a turn's shared history, or a
/// lone view's prompt but its last token.
pub(super) fn starts<'a>(
    all: &[&'a ViewTokens],
    items: &[Item],
    prefix_ids: &[u32],
) -> Vec<Start<'a>> {
    items
        .iter()
        .map(|it| match it.prefix {
            Some(p) => Start {
                ids: &all[it.views.start].ids[..p.len],
                covered: p.from,
            },
            None => {
                let v = all[it.views.start];
                Start {
                    ids: &v.ids[..v.n_prompt.saturating_sub(1)],
                    covered: shared_len(prefix_ids, v),
                }
            }
        })
        .collect()
}

/// `items` reordered so that the items of each cluster (`clusters`) are
/// next to each other, and the units they are dealt to lanes and cut into
/// batches by: a cluster's items, or one item. Without it a cluster's items
/// would land in different lanes and batches, and share nothing.
pub(super) fn cluster_order(
    all: &[&ViewTokens],
    items: Vec<Item>,
    prefix_ids: &[u32],
) -> (Vec<Item>, Vec<std::ops::Range<usize>>) {
    let clusters = clusters(&starts(all, &items, prefix_ids));
    let mut first_of = vec![None; items.len()];
    let mut member = vec![false; items.len()];
    for (k, c) in clusters.iter().enumerate() {
        first_of[c.items[0]] = Some(k);
        for &i in &c.items {
            member[i] = true;
        }
    }
    // Each cluster where its first item was, the other items in order.
    let mut order = Vec::with_capacity(items.len());
    let mut units = Vec::new();
    for i in 0..items.len() {
        let start = order.len();
        match first_of[i] {
            Some(k) => order.extend(&clusters[k].items),
            None if !member[i] => order.push(i),
            None => continue,
        }
        units.push(start..order.len());
    }
    let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    let items = order
        .iter()
        .map(|&i| slots[i].take().expect("each item once"))
        .collect();
    (items, units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(ids: &[u32], covered: usize) -> Start<'_> {
        Start { ids, covered }
    }

    #[test]
    fn items_with_a_long_common_start_share_it_wherever_they_are() {
        let system: Vec<u32> = (100..140).collect();
        let with = |tail: &[u32]| [&[1, 2][..], &system, tail].concat();
        let (a, b) = (with(&[7, 8]), with(&[9]));
        let other: Vec<u32> = vec![1, 2, 3, 4];
        // The precomputed prompt covers [1, 2].
        let starts = [start(&a, 2), start(&other, 2), start(&b, 2)];
        let got = clusters(&starts);
        assert_eq!(
            got,
            vec![Cluster {
                items: vec![0, 2],
                from: 2,
                len: 42
            }]
        );
    }

    #[test]
    fn a_short_common_start_makes_no_cluster() {
        let a: Vec<u32> = (0..20).collect();
        let mut b = a[..10].to_vec();
        b.extend([99; 10]);
        // 10 shared, 2 covered: 8 beyond the precomputed prompt.
        assert!(clusters(&[start(&a, 2), start(&b, 2)]).is_empty());
        // One item alone is never a cluster.
        assert!(clusters(&[start(&a, 2)]).is_empty());
    }

    #[test]
    fn a_member_that_would_cut_a_long_shared_part_starts_its_own() {
        // Three items share 100 tokens; a fourth shares only 20 of them.
        let long: Vec<u32> = (0..100).collect();
        let items: Vec<Vec<u32>> = (0..3).map(|t| [&long[..], &[1000 + t]].concat()).collect();
        let short = [&long[..20], &[5000, 5001]].concat();
        let mut starts: Vec<Start> = items.iter().map(|x| start(x, 0)).collect();
        starts.push(start(&short, 0));
        let got = clusters(&starts);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].items.clone(), got[0].len), (vec![0, 1, 2], 100));
    }
}
