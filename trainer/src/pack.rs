//! Packing: examples laid end to end in one flat row of at most `tokens`
//! tokens per optimizer step, no padding. Attention stays inside each
//! sequence (`layerwise.rs` masks by the boundaries kept here) and positions
//! restart at 0 per sequence, so a packed step computes exactly what the
//! same sequences give unpacked.

use crate::data::Example;
use crate::error::{Error, Result};

/// One packed step of `n_tokens` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    /// (N) token ids of every sequence, end to end.
    pub ids: Vec<u32>,
    /// (N) position of each token inside its own sequence.
    pub positions: Vec<u32>,
    /// (n_seq + 1) cumulative lengths: sequence `s` is rows `starts[s]..starts[s + 1]`.
    pub starts: Vec<usize>,
    /// (M) the row whose output predicts each target.
    pub target_rows: Vec<u32>,
    /// (M) the target token ids.
    pub targets: Vec<u32>,
    /// (M) loss weight of each target: the example's weight over the run's
    /// normaliser (1 for an unweighted mean, see `eval`).
    pub weights: Vec<f64>,
}

impl Packed {
    /// Packs `examples` in order; `weight(example)` gives each target's weight.
    pub fn new(examples: &[&Example], weight: impl Fn(&Example) -> f64) -> Result<Packed> {
        let mut p = Packed {
            ids: Vec::new(),
            positions: Vec::new(),
            starts: vec![0],
            target_rows: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
        };
        for (i, e) in examples.iter().enumerate() {
            if e.n_prompt == 0 || e.n_prompt >= e.ids.len() {
                return Err(Error::invalid(
                    "packed step",
                    format!(
                        "example {i}: prompt of {} tokens in {} leaves no target after a prompt",
                        e.n_prompt,
                        e.ids.len()
                    ),
                ));
            }
            let s0 = p.ids.len();
            p.ids.extend_from_slice(&e.ids);
            p.positions.extend(0..e.ids.len() as u32);
            let w = weight(e);
            for t in e.n_prompt..e.ids.len() {
                p.target_rows.push((s0 + t - 1) as u32);
                p.targets.push(e.ids[t]);
                p.weights.push(w);
            }
            p.starts.push(p.ids.len());
        }
        if p.ids.is_empty() {
            return Err(Error::invalid("packed step", "no examples"));
        }
        Ok(p)
    }

    pub fn n_tokens(&self) -> usize {
        self.ids.len()
    }

    pub fn n_seq(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn n_targets(&self) -> usize {
        self.targets.len()
    }

    /// The sequence holding row `i`.
    pub fn seq_of(&self, i: usize) -> usize {
        self.starts.partition_point(|&s| s <= i) - 1
    }
}

/// How many of `lens` (token counts, in data order) the next step takes:
/// as many as fit in `tokens` together, at least one. An example longer
/// than `tokens` is an error naming it (`what(i)` says which example).
pub fn take_fitting(
    lens: impl Iterator<Item = usize>,
    tokens: usize,
    what: impl Fn(usize) -> String,
) -> Result<usize> {
    let (mut used, mut n) = (0usize, 0usize);
    for (i, len) in lens.enumerate() {
        if len > tokens {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "{} has {len} tokens, more than the {tokens} tokens of a step: raise --tokens or lower --max-tokens",
                    what(i)
                ),
            ));
        }
        if used + len > tokens {
            break;
        }
        used += len;
        n += 1;
    }
    Ok(n)
}

/// The loss normaliser of a packed run: the mean number of target tokens
/// in a full step, `tokens x (target tokens / tokens)` of the training set,
/// a constant of the run for the same reasons as `sft::loss_normaliser`
/// (there the mean targets of a micro-batch of `batch_size` examples).
pub fn packed_loss_normaliser(train: &[Example], tokens: usize) -> Option<f64> {
    let n_targets: usize = train.iter().map(Example::n_targets).sum();
    let n_tokens: usize = train.iter().map(|e| e.ids.len()).sum();
    if n_targets == 0 || n_tokens == 0 {
        return None;
    }
    Some(tokens as f64 * n_targets as f64 / n_tokens as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], n_prompt: usize, weight: f64) -> Example {
        Example {
            ids: ids.to_vec(),
            n_prompt,
            weight,
        }
    }

    #[test]
    fn packs_end_to_end_with_positions_restarting() {
        let a = ex(&[1, 2, 3], 1, 1.0);
        let b = ex(&[4, 5, 6, 7], 2, 0.5);
        let p = Packed::new(&[&a, &b], |e| e.weight / 2.0).unwrap();
        assert_eq!(p.ids, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p.positions, [0, 1, 2, 0, 1, 2, 3]);
        assert_eq!(p.starts, [0, 3, 7]);
        assert_eq!(p.target_rows, [0, 1, 4, 5]);
        assert_eq!(p.targets, [2, 3, 6, 7]);
        assert_eq!(p.weights, [0.5, 0.5, 0.25, 0.25]);
        assert_eq!((p.seq_of(2), p.seq_of(3), p.seq_of(6)), (0, 1, 1));
    }

    #[test]
    fn takes_what_fits_and_names_an_example_too_long() {
        let lens = [3usize, 4, 2, 5];
        assert_eq!(
            take_fitting(lens.iter().copied(), 9, |i| format!("#{i}")).unwrap(),
            3
        );
        assert_eq!(
            take_fitting(lens.iter().copied(), 7, |i| format!("#{i}")).unwrap(),
            2
        );
        let e = take_fitting([3usize, 12].into_iter(), 10, |i| format!("example #{i}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("example #1") && e.contains("12 tokens"), "{e}");
    }

    #[test]
    fn a_prompt_without_target_is_refused() {
        let a = ex(&[1, 2], 2, 1.0);
        assert!(Packed::new(&[&a], |_| 1.0).is_err());
    }
}
