//! Work the views of a batch share, done once.
//!
//! - **Repeated views**: views with the same ids are computed once. A view's
//!   log-probs depend only on its own ids (every row of a batch is computed
//!   alone), so a repeat gets a copy of the first one's, bit for bit.
//! - **Shared prompts**: views with the same prompt and different targets
//!   are put next to each other in one group, so `Side::items` computes the
//!   prompt once and continues it with each target.
//!
//! Both are common where data is: a response scored under several
//! instructions (the pipeline's candidates: one unconditional view, one
//! reverse prompt for all of them), one instruction answered several ways
//! (preference data: one forward prompt, one unconditional reverse view).

use std::collections::HashMap;

use crate::views::ViewTokens;

/// The views a batch computes, each once, in the order they run.
pub(super) struct Plan<'a> {
    pub views: Vec<&'a ViewTokens>,
    /// The group of each view: its turn's, or one for all views that share
    /// its prompt. A group's views are next to each other.
    pub groups: Vec<usize>,
    /// For every input view, the index in `views` of the view computed for it.
    pub of: Vec<usize>,
}

/// Plans `views` (with `groups[i]`, the turn of view `i`, as `Side::run`
/// takes them): repeats dropped, views with a common prompt grouped, a
/// group of a prompt holding at most `max_group_tokens` tokens (its prompt
/// once, then its targets) unless one view alone is longer.
pub(super) fn plan<'a>(
    views: &[&'a ViewTokens],
    groups: &[usize],
    max_group_tokens: usize,
) -> Plan<'a> {
    // Distinct views, first occurrence first.
    let mut seen: HashMap<(&'a [u32], usize), usize> = HashMap::with_capacity(views.len());
    let mut distinct: Vec<(&'a ViewTokens, usize)> = Vec::with_capacity(views.len());
    let mut of = Vec::with_capacity(views.len());
    for (&v, &g) in views.iter().zip(groups) {
        let next = distinct.len();
        let u = *seen.entry((&v.ids[..], v.n_prompt)).or_insert(next);
        if u == next {
            distinct.push((v, g));
        }
        of.push(u);
    }
    // A prompt held by two or more distinct views makes their group; every
    // other view keeps its turn's.
    let mut prompts: HashMap<&'a [u32], usize> = HashMap::new();
    for (v, _) in &distinct {
        *prompts.entry(v.prompt()).or_default() += 1;
    }
    #[derive(Hash, PartialEq, Eq)]
    enum Key<'a> {
        Turn(usize),
        /// The views of a prompt, in parts of at most `max_group_tokens`
        /// new tokens: a part is packed into one forward call whole.
        Prompt(&'a [u32], usize),
    }
    let mut parts: HashMap<&'a [u32], (usize, usize)> = HashMap::new();
    let mut ids: HashMap<Key<'a>, usize> = HashMap::new();
    let new_group: Vec<usize> = distinct
        .iter()
        .map(|(v, g)| {
            let key = if prompts[v.prompt()] > 1 {
                let (part, tokens) = parts.entry(v.prompt()).or_insert((0, v.n_prompt));
                let n = v.ids.len() - v.n_prompt;
                if *tokens + n > max_group_tokens && *tokens > v.n_prompt {
                    (*part, *tokens) = (*part + 1, v.n_prompt);
                }
                *tokens += n;
                Key::Prompt(v.prompt(), *part)
            } else {
                Key::Turn(*g)
            };
            let n = ids.len();
            *ids.entry(key).or_insert(n)
        })
        .collect();
    // Groups numbered in order of first appearance: a stable sort by group
    // keeps a group's views in their order, and a batch without shared
    // prompts in its own.
    let mut order: Vec<usize> = (0..distinct.len()).collect();
    order.sort_by_key(|&i| new_group[i]);
    let mut position = vec![0; distinct.len()];
    for (p, &i) in order.iter().enumerate() {
        position[i] = p;
    }
    Plan {
        views: order.iter().map(|&i| distinct[i].0).collect(),
        groups: order.iter().map(|&i| new_group[i]).collect(),
        of: of.into_iter().map(|u| position[u]).collect(),
    }
}

impl Plan<'_> {
    /// The results of the planned views (in `views` order) for every input
    /// view.
    pub fn spread<T: Clone>(&self, results: Vec<T>) -> Vec<T> {
        let identity =
            self.of.len() == self.views.len() && self.of.iter().enumerate().all(|(i, &u)| i == u);
        if identity {
            return results;
        }
        self.of.iter().map(|&u| results[u].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ids: &[u32], n_prompt: usize) -> ViewTokens {
        ViewTokens {
            ids: ids.to_vec(),
            n_prompt,
            truncated: false,
        }
    }

    #[test]
    fn repeats_are_planned_once() {
        let (a, b, c) = (view(&[1, 2, 3], 1), view(&[1, 2, 3], 2), view(&[4, 5], 1));
        let a2 = a.clone();
        let p = plan(&[&a, &b, &a2, &c], &[0, 0, 1, 1], 100);
        // Same ids but another prompt length is another view.
        assert_eq!(p.views.len(), 3);
        assert_eq!(p.of, vec![0, 1, 0, 2]);
        assert_eq!(p.groups, vec![0, 0, 1]);
        assert_eq!(p.spread(vec!["a", "b", "c"]), vec!["a", "b", "a", "c"]);
    }

    #[test]
    fn views_with_one_prompt_are_grouped_next_to_each_other() {
        // Turn 0: (prompt 7 8, target 1), (prompt 9, target 1); turn 1:
        // (prompt 7 8, target 2), (prompt 9, target 2).
        let (a, b) = (view(&[7, 8, 1], 2), view(&[9, 1], 1));
        let (c, d) = (view(&[7, 8, 2], 2), view(&[9, 2], 1));
        let p = plan(&[&a, &b, &c, &d], &[0, 0, 1, 1], 100);
        assert_eq!(p.views, vec![&a, &c, &b, &d]);
        assert_eq!(p.groups, vec![0, 0, 1, 1]);
        assert_eq!(p.of, vec![0, 2, 1, 3]);
        assert_eq!(p.spread(vec!['a', 'c', 'b', 'd']), vec!['a', 'b', 'c', 'd']);
    }

    #[test]
    fn a_prompt_shared_by_many_views_is_grouped_in_parts_of_bounded_size() {
        // Prompt of 2, targets of 3: a part of 10 tokens holds 2 views.
        let vs: Vec<ViewTokens> = (0..5).map(|t| view(&[7, 8, t, t, t], 2)).collect();
        let refs: Vec<&ViewTokens> = vs.iter().collect();
        let p = plan(&refs, &[0, 1, 2, 3, 4], 10);
        assert_eq!(p.groups, vec![0, 0, 1, 1, 2]);
        // One view longer than the bound is a part of its own.
        let p = plan(&refs, &[0, 1, 2, 3, 4], 3);
        assert_eq!(p.groups, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn distinct_prompts_keep_their_turns_and_order() {
        let (a, b, c) = (view(&[1, 5], 1), view(&[2, 5], 1), view(&[3, 5], 1));
        let p = plan(&[&a, &b, &c], &[0, 0, 1], 100);
        assert_eq!(p.views, vec![&a, &b, &c]);
        assert_eq!(p.groups, vec![0, 0, 1]);
        assert_eq!(p.spread(vec![1, 2, 3]), vec![1, 2, 3]);
    }
}
