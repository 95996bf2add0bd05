//! Duplicates: exact ones (the same text after normalisation: lower case,
//! whitespace collapsed) counted over every record by a 64-bit hash, and
//! near-duplicates (Jaccard similarity of word 3-shingles at least
//! [`NEAR_JACCARD`]) found by MinHash and LSH (the `gaoya` crate) on a
//! uniform sample of records, which keeps the index bounded.

use std::collections::{BTreeMap, HashMap};

use gaoya::minhash::{MinHashIndex, MinHasher, MinHasher32};
use serde::Serialize;

/// Lines kept per listed group.
const LINES_PER_GROUP: usize = 8;
/// Characters of a group's text shown.
const PREVIEW_CHARS: usize = 120;
/// Near-duplicates: the estimated Jaccard similarity a pair must reach.
pub const NEAR_JACCARD: f64 = 0.8;
/// LSH: 20 bands of 5 hashes find a pair at Jaccard 0.8 with probability
/// 1 - (1 - 0.8^5)^20 > 0.9996, and one at 0.5 with probability 0.47
/// before the signature check drops it.
const NUM_BANDS: usize = 20;
const BAND_WIDTH: usize = 5;

/// Lower case, runs of whitespace as one space, trimmed.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// A hash that is the same in every build and on every target.
pub fn text_hash(normalised: &str) -> u64 {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in normalised.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Groups of records sharing a text (JSON: `{"groups", "records",
/// "extra", "list": [{"count", "lines", "text"}]}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DuplicateGroups {
    /// Groups of two or more records.
    pub groups: u64,
    /// Records in those groups.
    pub records: u64,
    /// Records that repeat an earlier one (`records - groups`): what
    /// deduplication would remove.
    pub extra: u64,
    /// The largest groups (ties: the earliest first line first).
    pub list: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub count: u64,
    /// 1-based lines of the first members, at most [`LINES_PER_GROUP`].
    pub lines: Vec<u64>,
    /// The start of the first member's text (normalised).
    pub text: String,
}

/// Exact duplicates of one kind of text (instructions, responses, pairs).
#[derive(Clone, Debug, Default)]
pub struct ExactDuplicates {
    /// Hash -> (count, first line), for at most `max_distinct` hashes.
    seen: HashMap<u64, (u32, u32)>,
    /// For hashes seen twice or more: the lines and a preview.
    repeated: HashMap<u64, (Vec<u64>, String)>,
    max_distinct: usize,
    /// A new text arrived after `max_distinct` were tracked.
    pub overflowed: bool,
}

impl ExactDuplicates {
    pub fn new(max_distinct: usize) -> ExactDuplicates {
        ExactDuplicates {
            max_distinct,
            ..ExactDuplicates::default()
        }
    }

    pub fn add(&mut self, normalised: &str, line: u64) {
        let h = text_hash(normalised);
        let room = self.seen.len() < self.max_distinct;
        match self.seen.get_mut(&h) {
            Some((count, first)) => {
                *count = count.saturating_add(1);
                let first = *first as u64;
                let (lines, _) = self
                    .repeated
                    .entry(h)
                    .or_insert_with(|| (vec![first], preview(normalised)));
                if lines.len() < LINES_PER_GROUP {
                    lines.push(line);
                }
            }
            None if room => {
                self.seen.insert(h, (1, line as u32));
            }
            None => self.overflowed = true,
        }
    }

    /// The counts and the `n_listed` largest groups.
    pub fn groups(&self, n_listed: usize) -> DuplicateGroups {
        let mut g = DuplicateGroups::default();
        let mut list = Vec::new();
        for (h, (lines, text)) in &self.repeated {
            let count = self.seen[h].0 as u64;
            g.groups += 1;
            g.records += count;
            list.push(Group {
                count,
                lines: lines.clone(),
                text: text.clone(),
            });
        }
        g.extra = g.records - g.groups;
        list.sort_by(|a, b| b.count.cmp(&a.count).then(a.lines[0].cmp(&b.lines[0])));
        list.truncate(n_listed);
        g.list = list;
        g
    }
}

/// The start of a text; a pair's two texts joined by " → ".
fn preview(text: &str) -> String {
    let text = &text.replace('\u{1f}', " → ");
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Groups of near-duplicate texts among `texts` (line, normalised text):
/// connected components of the pairs whose MinHash similarity reaches
/// [`NEAR_JACCARD`], on word 3-shingles (the words themselves for a text
/// of fewer than three). Deterministic: gaoya's hashers are seeded.
pub fn near_duplicates(texts: &[(u64, String)], n_listed: usize) -> DuplicateGroups {
    let hasher = MinHasher32::new(NUM_BANDS * BAND_WIDTH);
    let mut index: MinHashIndex<u32, usize> =
        MinHashIndex::new(NUM_BANDS, BAND_WIDTH, NEAR_JACCARD);
    let mut signatures = Vec::with_capacity(texts.len());
    for (i, (_, text)) in texts.iter().enumerate() {
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let signature = if words.len() < 3 {
            hasher.create_signature(std::iter::once(words.as_slice()))
        } else {
            hasher.create_signature(words.windows(3))
        };
        index.insert(i, signature.clone());
        signatures.push(signature);
    }
    // Union-find over the sample.
    let mut parent: Vec<usize> = (0..texts.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, signature) in signatures.iter().enumerate() {
        for j in index.query_owned(signature) {
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            if a != b {
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..texts.len() {
        let r = root(&mut parent, i);
        members.entry(r).or_default().push(i);
    }
    let mut g = DuplicateGroups::default();
    let mut list = Vec::new();
    for m in members.values().filter(|m| m.len() > 1) {
        g.groups += 1;
        g.records += m.len() as u64;
        let mut lines: Vec<u64> = m.iter().map(|&i| texts[i].0).collect();
        lines.sort_unstable();
        let first = m
            .iter()
            .min_by_key(|&&i| texts[i].0)
            .copied()
            .unwrap_or(m[0]);
        lines.truncate(LINES_PER_GROUP);
        list.push(Group {
            count: m.len() as u64,
            lines,
            text: preview(&texts[first].1),
        });
    }
    g.extra = g.records - g.groups;
    list.sort_by(|a, b| b.count.cmp(&a.count).then(a.lines[0].cmp(&b.lines[0])));
    list.truncate(n_listed);
    g.list = list;
    g
}
