//! SentencePiece-style BPE ("llama" vocabularies of LLaMA 1/2, Mistral,
//! Phi-3) as llama.cpp runs it: start from UTF-8 characters, repeatedly merge
//! the adjacent pair whose concatenation is the token with the highest score
//! (leftmost among equal scores), then spell every symbol that is not a
//! token as `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Vocab;

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the pair when queued; a different sum later means a
    /// neighbour merged first and the entry is stale.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the tokens of `text` (spaces already escaped to `▁`).
pub(crate) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    let Some(last) = symbols.last_mut() else {
        return;
    };
    last.next = None;

    let mut queue = BinaryHeap::new();
    let push =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let len = symbols[l].len + symbols[r].len;
            let start = symbols[l].start;
            if let Some(id) = vocab.id(&text[start..start + len]) {
                queue.push(Bigram {
                    score: vocab.score(id),
                    left: l,
                    right: r,
                    len,
                });
            }
        };
    for i in 1..symbols.len() {
        push(&symbols, &mut queue, Some(i - 1), Some(i));
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (b.left, b.right);
        if symbols[l].len == 0 || symbols[r].len == 0 || symbols[l].len + symbols[r].len != b.len {
            continue;
        }
        symbols[l].len = b.len;
        symbols[r].len = 0;
        symbols[l].next = symbols[r].next;
        if let Some(n) = symbols[r].next {
            symbols[n].prev = Some(l);
        }
        let prev = symbols[l].prev;
        push(&symbols, &mut queue, prev, Some(l));
        let next = symbols[l].next;
        push(&symbols, &mut queue, Some(l), next);
    }

    // Every merged symbol is a token by construction; only single characters
    // can be missing from the vocabulary.
    let mut i = Some(0);
    while let Some(s) = i {
        let piece = &text[symbols[s].start..symbols[s].start + symbols[s].len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    out.extend(vocab.byte_token(b));
                }
            }
        }
        i = symbols[s].next;
    }
}
