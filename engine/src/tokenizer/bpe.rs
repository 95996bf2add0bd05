//! Byte-level BPE over one pre-tokenized word, as llama.cpp merges:
//! repeatedly merge the adjacent pair with the lowest merge rank (the
//! leftmost among equal ranks) until no pair has a rank.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::unicode::byte_to_char;
use super::Vocab;

/// Merge ranks keyed by the token ids of the two halves.
pub(crate) struct Merges {
    ranks: HashMap<(u32, u32), u32>,
}

impl Merges {
    /// `merges` are `"left right"` lines in rank order. A line whose halves
    /// are not both tokens can never apply (every symbol that takes part in
    /// a merge is a token) and is dropped.
    pub(crate) fn new(vocab: &Vocab, merges: &[&str]) -> Merges {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte, so a
            // left half may itself be a space.
            let Some(sp) = line.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) else {
                continue;
            };
            let (left, right) = (&line[..sp], &line[sp + 1..]);
            if let (Some(l), Some(r)) = (vocab.id(left), vocab.id(right)) {
                ranks.entry((l, r)).or_insert(rank as u32);
            }
        }
        Merges { ranks }
    }
}

struct Symbol {
    /// Byte range in the word.
    start: usize,
    len: usize,
    /// The token whose text this symbol is, if any.
    id: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Appends the tokens of one word. With `byte_encode` the word is first
/// mapped byte by byte to GPT-2's printable characters; otherwise pieces that
/// are not tokens fall back to `<0xXX>` byte tokens.
pub(crate) fn encode_word(
    vocab: &Vocab,
    merges: &Merges,
    word: &str,
    byte_encode: bool,
    ignore_merges: bool,
    out: &mut Vec<u32>,
) {
    let encoded: String;
    let word = if byte_encode {
        encoded = word.bytes().map(byte_to_char).collect();
        encoded.as_str()
    } else {
        word
    };
    if word.is_empty() {
        return;
    }
    if ignore_merges {
        if let Some(id) = vocab.id(word) {
            out.push(id);
            return;
        }
    }

    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            id: vocab.id(&word[start..start + len]),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = symbols.last_mut() {
        last.next = None;
    }

    // (rank, left index) ordered smallest first; the halves' lengths detect
    // entries made stale by a neighbouring merge.
    let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
    let push =
        |symbols: &[Symbol], queue: &mut BinaryHeap<_>, l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (Some(a), Some(b)) = (symbols[l].id, symbols[r].id) else {
                return;
            };
            if let Some(&rank) = merges.ranks.get(&(a, b)) {
                queue.push(Reverse((rank, l, symbols[l].len, symbols[r].len)));
            }
        };
    for i in 1..symbols.len() {
        push(&symbols, &mut queue, Some(i - 1), Some(i));
    }
    while let Some(Reverse((_, l, l_len, r_len))) = queue.pop() {
        let Some(r) = symbols[l].next else { continue };
        if symbols[l].len != l_len || symbols[r].len != r_len || symbols[r].len == 0 {
            continue;
        }
        let start = symbols[l].start;
        let len = l_len + r_len;
        symbols[l].len = len;
        symbols[l].id = vocab.id(&word[start..start + len]);
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

    let mut i = Some(0);
    while let Some(s) = i {
        let sym = &symbols[s];
        match sym.id {
            Some(id) => out.push(id),
            None => {
                // Each byte alone; llama.cpp drops bytes that have no token.
                for b in word[sym.start..sym.start + sym.len].bytes() {
                    let id = if byte_encode {
                        (b as char)
                            .is_ascii()
                            .then(|| vocab.id(&(b as char).to_string()))
                            .flatten()
                    } else {
                        vocab.id(&format!("<0x{b:02X}>"))
                    };
                    out.extend(id);
                }
            }
        }
        i = sym.next;
    }
}
