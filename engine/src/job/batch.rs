//! Batching: records are scored in fused calls of `batch` records, and the
//! contrastive score draws its negatives from the same call, so the batches
//! themselves are part of the result. A resumed run rebuilds the batches of
//! an uninterrupted one (records already written still join theirs), and a
//! short last batch borrows turns from the batch before.

use crate::conversation::Turn;
use crate::error::{Error, Result};
use crate::pairs::Sample;
use crate::score::{Pair, PairScore};
use crate::scorer::Scorer;

use super::read::{turns_of, Entry};
use super::splice::{splice_alignment, RecordScore};

/// Fills `turns` from `previous` up to the `negatives + 1` turns a
/// contrastive score draws from; an error when even then there are fewer.
pub fn fill_for_negatives<'a>(
    turns: &mut Vec<Turn<'a>>,
    previous: impl IntoIterator<Item = Turn<'a>>,
    negatives: usize,
) -> Result<()> {
    let k = negatives;
    if k == 0 || turns.len() > k {
        return Ok(());
    }
    let need = k + 1 - turns.len();
    turns.extend(previous.into_iter().take(need));
    if turns.len() < k + 1 {
        return Err(Error::invalid_argument(
            "--negatives",
            format!(
                "{k} negatives need at least {} pairs or turns, the input has {}",
                k + 1,
                turns.len()
            ),
        ));
    }
    Ok(())
}

/// Scores `pairs` in calls of `batch_size`, in order, exactly as the job
/// batches records of one pair each (for skins that take pairs, not files).
pub fn score_pairs_in_batches(
    scorer: &mut Scorer,
    pairs: &[Pair],
    batch_size: usize,
    negatives: usize,
) -> Result<Vec<PairScore>> {
    if batch_size == 0 || (negatives > 0 && batch_size <= negatives) {
        return Err(Error::invalid_argument(
            "batch_size",
            format!("{batch_size} must be at least 1 and above negatives ({negatives}): negatives are drawn from the same batch"),
        ));
    }
    let mut out = Vec::with_capacity(pairs.len());
    let mut previous: &[Pair] = &[];
    for chunk in pairs.chunks(batch_size) {
        let mut turns: Vec<Turn> = chunk.iter().map(Turn::of_pair).collect();
        fill_for_negatives(&mut turns, previous.iter().map(Turn::of_pair), negatives)?;
        let mut scores = scorer.score_turns(&turns)?;
        scores.truncate(chunk.len());
        out.extend(scores);
        previous = chunk;
    }
    Ok(out)
}

/// What one scored batch gives the job: the output bytes of its new
/// records and their scores, in order.
#[derive(Default)]
pub(crate) struct Scored {
    pub bytes: Vec<u8>,
    pub records: Vec<RecordScore>,
}

/// Gathers eligible records into batches and scores each full one.
pub(crate) struct Batcher {
    pub scorer: Scorer,
    pub batch_size: usize,
    pub negatives: usize,
    batch: Vec<Entry>,
    /// Records of the batch before, to fill a short last batch up to the
    /// `negatives + 1` turns the contrastive score draws from.
    previous: Vec<Sample>,
}

impl Batcher {
    pub fn new(scorer: Scorer, batch_size: usize, negatives: usize) -> Batcher {
        Batcher {
            scorer,
            batch_size,
            negatives,
            batch: Vec::new(),
            previous: Vec::new(),
        }
    }

    /// Adds `entry`; scores the batch when it is full.
    pub fn push(&mut self, entry: Entry) -> Result<Option<Scored>> {
        self.batch.push(entry);
        if self.batch.len() == self.batch_size {
            return self.flush().map(Some);
        }
        Ok(None)
    }

    /// Scores the records gathered so far (none: nothing to write).
    pub fn flush(&mut self) -> Result<Scored> {
        let batch = std::mem::take(&mut self.batch);
        let mut done = Scored::default();
        if batch.iter().any(|e| e.line.is_some()) {
            let k = self.negatives;
            // Without negatives a pair's score does not depend on its batch,
            // so records already written need no scoring.
            let scored: Vec<&Entry> = batch.iter().filter(|e| k > 0 || e.line.is_some()).collect();
            // Every turn of every record, in order (a pair is one turn).
            let mut turns: Vec<Turn> = scored.iter().flat_map(|e| turns_of(&e.sample)).collect();
            fill_for_negatives(&mut turns, self.previous.iter().flat_map(turns_of), k)?;
            // An error about a turn names its record's line, and its turn
            // when the record is a conversation.
            let names: Vec<String> = scored
                .iter()
                .flat_map(|e| match &e.sample {
                    Sample::Pair(_) => vec![format!("line {}", e.line_no)],
                    Sample::Conversation(c) => (1..=c.n_turns())
                        .map(|k| format!("line {} (turn {k})", e.line_no))
                        .collect(),
                })
                .collect();
            let name = |i: usize| {
                names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("a record of the batch before (pair {i})"))
            };
            let mut scores = self.scorer.score_turns_named(&turns, &name)?.into_iter();
            for entry in &scored {
                let record = match &entry.sample {
                    Sample::Pair(_) => RecordScore::Pair(scores.next().expect("one score a turn")),
                    Sample::Conversation(c) => {
                        RecordScore::Conversation(scores.by_ref().take(c.n_turns()).collect())
                    }
                };
                if let Some(line) = &entry.line {
                    splice_alignment(&mut done.bytes, line, entry.line_no, &record)?;
                    done.records.push(record);
                }
            }
        }
        if !batch.is_empty() {
            self.previous = batch.into_iter().map(|e| e.sample).collect();
        }
        Ok(done)
    }
}
