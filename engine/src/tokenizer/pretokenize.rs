//! Pre-tokenization of byte-level BPE vocabularies: the text is cut into
//! words before merges run, by the regex list llama.cpp keeps for each
//! `tokenizer.ggml.pre` name (src/llama-vocab.cpp). Each regex cuts every
//! piece left by the previous one; the text between matches stays a piece of
//! its own (HF's `Split` with behavior `Isolated`).
//!
//! llama.cpp runs the GPT-2, LLaMA-3, Qwen2 and Qwen3.5 patterns (and the
//! Gemma-4 newline split) through hand-written matchers rather than a regex
//! engine; we do the same so that their corner cases (what ends a run of
//! white space, the one-character lookahead of `[^\r\n\p{L}\p{N}]?\p{L}+`)
//! are reproduced, not approximated.

use tokenizers::utils::SysRegex;

use super::unicode::{is_letter, is_mark, is_number, is_whitespace};
use crate::error::{Error, Result};

pub(crate) const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
pub(crate) const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const NEWLINES: &str = r"[^\n]+|[\n]+";

const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+";
const CJK: &str = "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+";
const DEEPSEEK3_MAIN: &str = r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CHUNKS: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a vocabulary turns text into BPE words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PreSpec {
    /// The regexes, applied in order.
    pub exprs: Vec<&'static str>,
    /// GPT-2 byte-to-character encoding of each word before merging; off for
    /// SentencePiece-style BPE vocabularies (Gemma 4) whose tokens are raw
    /// UTF-8 with `<0xXX>` byte fallback.
    pub byte_encode: bool,
    /// A word that is itself a token is emitted whole, without merges
    /// (LLaMA 3 and a few others, as in HF's `ignore_merges`).
    pub ignore_merges: bool,
    /// The detokenizer removes the space before `?!.,` and some apostrophes.
    pub clean_spaces: bool,
    /// BOS is added by default (before `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre == pre`.
pub(crate) fn spec_for(pre: &str) -> Result<PreSpec> {
    let spec = |exprs: Vec<&'static str>, ignore_merges: bool, clean_spaces: bool| PreSpec {
        exprs,
        byte_encode: true,
        ignore_merges,
        clean_spaces,
        add_bos: false,
    };
    let with_bos = |s: PreSpec| PreSpec { add_bos: true, ..s };
    let default = vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"];
    let starcoder = vec![r"\p{N}", GPT2];
    Ok(match pre {
        "" | "default" => spec(default, false, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => with_bos(spec(vec![LLAMA3], true, true)),
        "dbrx" | "smaug-bpe" => spec(vec![LLAMA3], false, true),
        "chatglm-bpe" => spec(vec![LLAMA3], false, true),
        "glm4" | "glm5" => spec(vec![LLAMA3], true, true),
        "deepseek-llm" => spec(
            vec![
                "[\r\n]",
                DEEPSEEK_LLM_LETTERS,
                "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
                r"\s+$",
                CJK,
                r"\p{N}+",
            ],
            false,
            false,
        ),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => spec(
            vec![r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3_MAIN],
            false,
            false,
        ),
        "deepseek-coder" => spec(
            vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"],
            false,
            false,
        ),
        "falcon" => spec(
            vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            true,
        ),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            spec(starcoder, false, true)
        }
        "command-r" | "smollm" => spec(starcoder, false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "exaone4" | "mpt" | "olmo" | "jais" => spec(vec![GPT2], false, true),
        "trillion" | "granite-docling" => spec(vec![GPT2], false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "megrez" => spec(vec![QWEN2], false, false),
        "stablelm2" => spec(vec![QWEN2], false, true),
        "hunyuan" | "solar-open" | "grok-2" => spec(vec![QWEN2], false, false),
        "qwen35" => spec(vec![QWEN35], false, false),
        "poro-chat" | "bloom" | "gpt3-finnish" => spec(vec![CHUNKS], false, pre != "poro-chat"),
        "viking" => spec(vec![CHUNKS, r"\p{N}"], false, false),
        "tekken" => with_bos(spec(vec![TEKKEN], true, false)),
        "gpt-4o" | "llama4" => spec(vec![GPT4O], false, false),
        "gemma4" => PreSpec {
            exprs: vec![NEWLINES],
            byte_encode: false,
            ignore_merges: false,
            clean_spaces: true,
            add_bos: true,
        },
        other => {
            return Err(Error::unsupported(
                "pre-tokenizer (tokenizer.ggml.pre)",
                other,
            ))
        }
    })
}

enum Splitter {
    /// llama.cpp's matcher for [`GPT2`].
    Gpt2,
    /// llama.cpp's matcher for the LLaMA-3 family of patterns: `max_digits`
    /// is 3 for [`LLAMA3`], 1 for [`QWEN2`]; `marks` extends letter runs by
    /// `\p{M}` ([`QWEN35`]).
    Llama3 {
        max_digits: usize,
        marks: bool,
    },
    Newlines,
    Regex(SysRegex),
}

/// A compiled [`PreSpec`] regex list.
pub(crate) struct PreTokenizer {
    splitters: Vec<Splitter>,
}

impl PreTokenizer {
    pub(crate) fn new(spec: &PreSpec) -> Result<PreTokenizer> {
        let splitters = spec
            .exprs
            .iter()
            .map(|&e| {
                Ok(match e {
                    GPT2 => Splitter::Gpt2,
                    LLAMA3 => Splitter::Llama3 {
                        max_digits: 3,
                        marks: false,
                    },
                    QWEN2 => Splitter::Llama3 {
                        max_digits: 1,
                        marks: false,
                    },
                    QWEN35 => Splitter::Llama3 {
                        max_digits: 1,
                        marks: true,
                    },
                    NEWLINES => Splitter::Newlines,
                    _ => Splitter::Regex(SysRegex::new(e).map_err(|err| {
                        Error::Tokenizer(format!("pre-tokenizer regex {e:?}: {err}"))
                    })?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(PreTokenizer { splitters })
    }

    /// The words of `text`, as byte ranges that tile it.
    pub(crate) fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        for splitter in &self.splitters {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                let piece = &text[start..end];
                match splitter {
                    Splitter::Regex(re) => split_regex(re, piece, start, &mut next),
                    _ => {
                        let chars: Vec<(usize, char)> = piece.char_indices().collect();
                        let mut ends = Vec::new();
                        match *splitter {
                            Splitter::Gpt2 => split_gpt2(&chars, &mut ends),
                            Splitter::Llama3 { max_digits, marks } => {
                                split_llama3(&chars, max_digits, marks, &mut ends)
                            }
                            Splitter::Newlines => split_newlines(&chars, &mut ends),
                            Splitter::Regex(_) => unreachable!("handled above"),
                        }
                        let mut prev = 0;
                        for e in ends {
                            let b = chars.get(e).map_or(piece.len(), |&(b, _)| b);
                            next.push((start + prev, start + b));
                            prev = b;
                        }
                    }
                }
            }
            pieces = next;
        }
        pieces
    }
}

fn split_regex(re: &SysRegex, piece: &str, base: usize, out: &mut Vec<(usize, usize)>) {
    let mut prev = 0;
    for (s, e) in re.find_iter(piece) {
        if s > prev {
            out.push((base + prev, base + s));
        }
        // An empty match adds no word (llama.cpp adds an empty one that
        // produces no tokens).
        if e > s {
            out.push((base + s, base + e));
        }
        prev = e;
    }
    if prev < piece.len() {
        out.push((base + prev, base + piece.len()));
    }
}

/// Character classes as llama.cpp's matchers see them; a position past the
/// piece belongs to no class at all.
#[derive(Clone, Copy)]
struct Class {
    some: bool,
    letter: bool,
    number: bool,
    space: bool,
    mark: bool,
}

fn class_at(chars: &[(usize, char)], i: usize) -> Class {
    match chars.get(i) {
        None => Class {
            some: false,
            letter: false,
            number: false,
            space: false,
            mark: false,
        },
        Some(&(_, c)) => Class {
            some: true,
            letter: is_letter(c),
            number: is_number(c),
            space: is_whitespace(c),
            mark: is_mark(c),
        },
    }
}

fn char_at(chars: &[(usize, char)], i: usize) -> Option<char> {
    chars.get(i).map(|&(_, c)| c)
}

/// `'s|'t|'m|'d` (2 chars) or `'re|'ve|'ll` (3 chars) at `pos`, after
/// `fold` (ASCII lower-casing for the case-insensitive patterns).
fn contraction_len(chars: &[(usize, char)], pos: usize, fold: bool) -> Option<usize> {
    let n = chars.len();
    if char_at(chars, pos) != Some('\'') || pos + 1 >= n {
        return None;
    }
    let f = |c: char| if fold { c.to_ascii_lowercase() } else { c };
    let c1 = f(chars[pos + 1].1);
    if matches!(c1, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < n {
        let c2 = f(chars[pos + 2].1);
        if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

/// The end of a white-space run starting at `pos` as `\s+(?!\S)|\s+` takes
/// it: all of it at the end of the piece, all but its last character before
/// a non-space. `None` when `pos` is not white space.
fn whitespace_end(chars: &[(usize, char)], pos: usize) -> Option<usize> {
    let mut k = 0;
    while class_at(chars, pos + k).space {
        k += 1;
    }
    if k > 1 && pos + k < chars.len() {
        Some(pos + k - 1)
    } else if k > 0 {
        Some(pos + k)
    } else {
        None
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
/// pushes the char index where each word ends.
fn split_gpt2(chars: &[(usize, char)], ends: &mut Vec<usize>) {
    let n = chars.len();
    let mut pos = 0;
    while pos < n {
        if let Some(len) = contraction_len(chars, pos, false) {
            pos += len;
            ends.push(pos);
            continue;
        }
        let lead_space = chars[pos].1 == ' ';
        let first = if lead_space { pos + 1 } else { pos };
        let c = class_at(chars, first);
        let run: Option<fn(Class) -> bool> = if c.letter {
            Some(|c| c.letter)
        } else if c.number {
            Some(|c| c.number)
        } else if c.some && !c.space {
            Some(|c| c.some && !(c.space || c.letter || c.number))
        } else {
            None
        };
        if let Some(in_run) = run {
            pos = first;
            while in_run(class_at(chars, pos)) {
                pos += 1;
            }
            ends.push(pos);
            continue;
        }
        pos = whitespace_end(chars, pos).unwrap_or(pos + 1);
        ends.push(pos);
    }
}

/// The LLaMA-3 pattern (see [`Splitter::Llama3`] for its variants).
fn split_llama3(chars: &[(usize, char)], max_digits: usize, marks: bool, ends: &mut Vec<usize>) {
    let n = chars.len();
    let word = |c: Class| c.letter || (marks && c.mark);
    let mut pos = 0;
    while pos < n {
        if let Some(len) = contraction_len(chars, pos, true) {
            pos += len;
            ends.push(pos);
            continue;
        }
        let ch = chars[pos].1;
        let c = class_at(chars, pos);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(ch == '\r' || ch == '\n' || c.number) && (word(c) || word(class_at(chars, pos + 1))) {
            pos += 1;
            while word(class_at(chars, pos)) {
                pos += 1;
            }
            ends.push(pos);
            continue;
        }
        // \p{N}{1,max_digits}
        if c.number {
            let mut run = 0;
            while class_at(chars, pos).number {
                pos += 1;
                run += 1;
                if run == max_digits {
                    ends.push(pos);
                    run = 0;
                }
            }
            if run > 0 {
                ends.push(pos);
            }
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; llama.cpp tests the class of the
        // current character (not the one after the space) for being in the
        // piece, so a lone trailing space also lands here.
        let other = |c: Class| c.some && !(c.space || c.letter || c.number || (marks && c.mark));
        let c2 = if ch == ' ' {
            class_at(chars, pos + 1)
        } else {
            c
        };
        if !(c2.space || c2.letter || c2.number || (marks && c2.mark)) {
            if ch == ' ' {
                pos += 1;
            }
            while other(class_at(chars, pos)) {
                pos += 1;
            }
            while matches!(char_at(chars, pos), Some('\r' | '\n')) {
                pos += 1;
            }
            ends.push(pos);
            continue;
        }
        // \s*[\r\n]+ takes white space up to its last line break.
        let mut k = 0;
        let mut last_break = None;
        while class_at(chars, pos + k).space {
            if matches!(chars[pos + k].1, '\r' | '\n') {
                last_break = Some(pos + k + 1);
            }
            k += 1;
        }
        if let Some(end) = last_break {
            pos = end;
            ends.push(pos);
            continue;
        }
        pos = whitespace_end(chars, pos).unwrap_or(pos + 1);
        ends.push(pos);
    }
}

/// `[^\n]+|[\n]+`.
fn split_newlines(chars: &[(usize, char)], ends: &mut Vec<usize>) {
    let mut pos = 0;
    while pos < chars.len() {
        let newline = chars[pos].1 == '\n';
        while pos < chars.len() && (chars[pos].1 == '\n') == newline {
            pos += 1;
        }
        ends.push(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'a>(pre: &PreTokenizer, text: &'a str) -> Vec<&'a str> {
        pre.split(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    /// The hand-written matchers agree with the regex they stand for on text
    /// without the corner cases they exist for.
    #[test]
    fn matchers_agree_with_their_regex() {
        let texts = [
            "Hello, world! It's 2024: y'all   can't   stop\n\n  now.\t\tok",
            "  leading and trailing  ",
            "numbers 1234567 and 3.14159; Привет мир 你好世界",
            "'S 'RE 'll mixed\r\n\r\nlines\n \n",
        ];
        for expr in [GPT2, LLAMA3, QWEN2, QWEN35, NEWLINES] {
            let fast = PreTokenizer::new(&PreSpec {
                exprs: vec![expr],
                byte_encode: true,
                ignore_merges: false,
                clean_spaces: true,
                add_bos: false,
            })
            .unwrap();
            let re = SysRegex::new(expr).unwrap();
            for t in texts {
                let mut by_regex = Vec::new();
                split_regex(&re, t, 0, &mut by_regex);
                let by_regex: Vec<&str> = by_regex.into_iter().map(|(s, e)| &t[s..e]).collect();
                assert_eq!(words(&fast, t), by_regex, "{expr} on {t:?}");
            }
        }
    }

    #[test]
    fn every_pre_tokenizer_compiles() {
        for pre in [
            "default",
            "llama3",
            "dbrx",
            "deepseek-llm",
            "deepseek-v3",
            "deepseek-coder",
            "falcon",
            "starcoder",
            "command-r",
            "gpt-2",
            "qwen2",
            "qwen35",
            "bloom",
            "viking",
            "tekken",
            "gpt-4o",
            "gemma4",
        ] {
            PreTokenizer::new(&spec_for(pre).unwrap()).unwrap_or_else(|e| panic!("{pre}: {e}"));
        }
        assert!(spec_for("no-such-pre").is_err());
    }
}
