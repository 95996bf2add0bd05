//! Tokenizers: GGUF vocabularies (byte-level BPE "gpt2" with the model's
//! pre-tokenizer, SentencePiece-style "llama", Gemma 4's "gemma4"),
//! tokenizing exactly as llama.cpp's `llama_tokenize`, and Hugging Face
//! `tokenizer.json` through the `tokenizers` crate.
//!
//! The GGUF path re-implements llama.cpp rather than converting to a
//! `tokenizers` pipeline because the two differ in places that change ids:
//! llama.cpp splits out user-defined tokens even when special tokens are not
//! parsed, strips spaces around some special tokens, prefixes a space after
//! every special token for SentencePiece vocabularies, and runs hand-written
//! pre-tokenizers. The test vectors llama.cpp ships for its vocabularies
//! (`tests/tokenizer_vectors.rs`) hold this module to that.

mod bpe;
mod hf;
mod pretokenize;
mod spm;
mod unicode;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gguf::{FromValue, Gguf};

use pretokenize::{PreSpec, PreTokenizer};

// ---------------------------------------------------------------------------
// Token attributes (llama.cpp's `llama_token_attr` bits)
// ---------------------------------------------------------------------------

const ATTR_UNKNOWN: u32 = 1 << 0;
const ATTR_UNUSED: u32 = 1 << 1;
const ATTR_NORMAL: u32 = 1 << 2;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_BYTE: u32 = 1 << 5;
const ATTR_LSTRIP: u32 = 1 << 7;
const ATTR_RSTRIP: u32 = 1 << 8;

/// `tokenizer.ggml.token_type` values to attributes.
fn attr_of_type(token_type: i64) -> u32 {
    match token_type {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0,
    }
}

/// End-of-turn tokens looked up by text when the GGUF names none, in order
/// of preference (a chat model's turn end before a document end).
const EOT_CANDIDATES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// Token texts, scores and attributes of a GGUF vocabulary.
pub(crate) struct Vocab {
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    /// SentencePiece byte fallback: `<0xXX>`, else the byte itself as a token.
    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        self.id(&format!("<0x{b:02X}>")).or_else(|| {
            b.is_ascii()
                .then(|| self.id(&(b as char).to_string()))
                .flatten()
        })
    }

    fn len(&self) -> usize {
        self.texts.len()
    }
}

// ---------------------------------------------------------------------------
// GGUF tokenizer
// ---------------------------------------------------------------------------

enum Algorithm {
    /// "llama": SentencePiece-style score-ranked merges.
    Spm,
    /// "gpt2" / "gemma4": rank-ordered BPE merges after pre-tokenization.
    Bpe {
        merges: bpe::Merges,
        merge_lines: Vec<String>,
        pre: PreTokenizer,
        spec: PreSpec,
        /// Spaces become `▁` before pre-tokenization (Gemma 4).
        escape_whitespaces: bool,
    },
}

struct GgufTokenizer {
    model: String,
    pre_name: String,
    vocab: Vocab,
    algorithm: Algorithm,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// Tokens split out of the text before tokenizing (control, user-defined
    /// and unknown), longest text first.
    specials: Vec<u32>,
}

/// A piece of input text during special-token splitting: a byte range of the
/// text still to tokenize, or a token already decided.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for lstrip/rstrip.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl GgufTokenizer {
    fn from_gguf(g: &Gguf) -> Result<GgufTokenizer> {
        let model = g.get_str("tokenizer.ggml.model")?.to_string();
        let mut pre_name = g
            .get_opt::<&str>("tokenizer.ggml.pre")?
            .unwrap_or("")
            .to_string();
        let is_spm = match model.as_str() {
            "llama" => true,
            "gpt2" => false,
            "gemma4" => {
                pre_name = "gemma4".to_string();
                false
            }
            other => {
                return Err(Error::unsupported(
                    "tokenizer model (tokenizer.ggml.model)",
                    other,
                ))
            }
        };

        // Token texts, scores, attributes. A later duplicate text takes the
        // id, as in llama.cpp's map.
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let texts: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    s.to_string()
                }
            })
            .collect();
        let scores = match per_token::<f32>(g, "tokenizer.ggml.scores", n)? {
            None => vec![0.0; n],
            Some(scores) => scores,
        };
        let mut attrs = match per_token::<i64>(g, "tokenizer.ggml.token_type", n)? {
            None => vec![ATTR_NORMAL; n],
            Some(types) => types.into_iter().map(attr_of_type).collect(),
        };
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            ids.insert(t.clone(), i as u32);
        }

        // Special ids: the algorithm's defaults, then the metadata; ids past
        // the vocabulary are ignored.
        let in_range = |id: u32| (id as usize) < n;
        let (mut bos, mut eos, mut unk) = match (is_spm, model.as_str()) {
            (true, _) => (Some(1), Some(2), Some(0)),
            (false, "gpt2") => (Some(11), Some(11), None),
            _ => (None, None, None),
        };
        bos = bos.filter(|&i| in_range(i));
        eos = eos.filter(|&i| in_range(i));
        unk = unk.filter(|&i| in_range(i));
        let meta_id = |key: &str| -> Result<Option<u32>> {
            Ok(g.get_opt::<u64>(key)?
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&i| in_range(i)))
        };
        bos = meta_id("tokenizer.ggml.bos_token_id")?.or(bos);
        eos = meta_id("tokenizer.ggml.eos_token_id")?.or(eos);
        unk = meta_id("tokenizer.ggml.unknown_token_id")?.or(unk);
        let mut eot = meta_id("tokenizer.ggml.eot_token_id")?;
        if eot.is_none() {
            eot = EOT_CANDIDATES.iter().find_map(|t| ids.get(*t).copied());
            // llama.cpp makes a detected end-of-turn token a control token.
            if let Some(id) = eot {
                attrs[id as usize] |= ATTR_CONTROL;
            }
        }

        let (algorithm, default_add_bos, clean_spaces) = if is_spm {
            (Algorithm::Spm, true, false)
        } else {
            let spec = pretokenize::spec_for(&pre_name)?;
            let pre = PreTokenizer::new(&spec)?;
            let merge_lines: Vec<String> = g
                .get_str_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(str::to_string)
                .collect();
            let vocab_for_merges = Vocab {
                texts: Vec::new(),
                scores: Vec::new(),
                attrs: Vec::new(),
                ids,
            };
            let refs: Vec<&str> = merge_lines.iter().map(String::as_str).collect();
            let merges = bpe::Merges::new(&vocab_for_merges, &refs);
            ids = vocab_for_merges.ids;
            let (add_bos, clean) = (spec.add_bos, spec.clean_spaces);
            (
                Algorithm::Bpe {
                    merges,
                    merge_lines,
                    pre,
                    spec,
                    escape_whitespaces: model == "gemma4",
                },
                add_bos,
                clean,
            )
        };
        let add_bos = g
            .get_opt::<bool>("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos)
            || model == "gemma4";
        let add_space_prefix = g
            .get_opt::<bool>("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(is_spm);

        // Phi-3's special tokens swallow the white space after them
        // (llama.cpp keys this on the model name).
        let name = g
            .get_opt::<&str>("general.name")?
            .unwrap_or("")
            .to_lowercase();
        let phi3 = name.contains("phi-3") || name.contains("phi3");

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));
        if phi3 {
            for &i in &specials {
                attrs[i as usize] |= ATTR_RSTRIP;
            }
            if let Some(&i) = ids.get("</s>") {
                attrs[i as usize] |= ATTR_RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&i) = ids.get(t) {
                    attrs[i as usize] &= !ATTR_RSTRIP;
                }
            }
        }

        Ok(GgufTokenizer {
            model,
            pre_name,
            vocab: Vocab {
                texts,
                scores,
                attrs,
                ids,
            },
            algorithm,
            bos,
            eos,
            eot,
            unk,
            add_bos,
            add_space_prefix,
            clean_spaces,
            specials,
        })
    }

    /// llama.cpp's `tokenizer_st_partition`: each special token in turn (the
    /// longest first) is cut out of every text fragment, left to right.
    /// Control and unknown tokens only when `parse_special`; user-defined
    /// tokens always.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let mut fragments = vec![Fragment::Text(0, text.len())];
        for &id in &self.specials {
            let attr = self.vocab.attrs[id as usize];
            if !parse_special && attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let needle = self.vocab.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len());
            for f in fragments {
                let Fragment::Text(mut start, end) = f else {
                    next.push(f);
                    continue;
                };
                loop {
                    let Some(i) = text[start..end].find(needle) else {
                        if start < end {
                            next.push(Fragment::Text(start, end));
                        }
                        break;
                    };
                    let at = start + i;
                    let mut left_end = at;
                    if attr & ATTR_LSTRIP != 0 {
                        while left_end > start && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text(start, left_end));
                    }
                    next.push(Fragment::Token(id));
                    start = at + needle.len();
                    if attr & ATTR_RSTRIP != 0 {
                        while start < end && is_c_space(bytes[start]) {
                            start += 1;
                        }
                    }
                    if start >= end {
                        break;
                    }
                }
            }
            fragments = next;
        }
        fragments
    }

    fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_bos {
            out.push(self.bos.ok_or_else(|| {
                Error::invalid_argument("add_bos", "the vocabulary has no BOS token")
            })?);
        }
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        match &self.algorithm {
            Algorithm::Spm => {
                // A space goes before the text at the start and after every
                // special token, as SentencePiece's dummy prefix would.
                let mut after_special = true;
                for f in fragments {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(s, e) => {
                            let mut piece = String::with_capacity(e - s + 3);
                            if self.add_space_prefix && after_special {
                                piece.push(' ');
                            }
                            piece.push_str(&text[s..e]);
                            spm::encode(&self.vocab, &piece.replace(' ', "▁"), &mut out);
                            after_special = false;
                        }
                    }
                }
            }
            Algorithm::Bpe {
                merges,
                pre,
                spec,
                escape_whitespaces,
                ..
            } => {
                for f in fragments {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(s, e) => {
                            let escaped;
                            let piece = if *escape_whitespaces {
                                escaped = text[s..e].replace(' ', "▁");
                                escaped.as_str()
                            } else {
                                &text[s..e]
                            };
                            for (ws, we) in pre.split(piece) {
                                let word = &piece[ws..we];
                                // Gemma 4 keeps a run of newlines whole when
                                // it is a token.
                                if self.model == "gemma4" && word.bytes().all(|b| b == b'\n') {
                                    if let Some(id) = self.vocab.id(word) {
                                        out.push(id);
                                        continue;
                                    }
                                }
                                bpe::encode_word(
                                    &self.vocab,
                                    merges,
                                    word,
                                    spec.byte_encode,
                                    spec.ignore_merges,
                                    &mut out,
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// llama.cpp's `token_to_piece` with special tokens rendered.
    fn piece_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let Some(text) = self.vocab.texts.get(id as usize) else {
            return;
        };
        let attr = self.vocab.attrs[id as usize];
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
            out.extend_from_slice(text.as_bytes());
        } else if attr & ATTR_NORMAL != 0 {
            match &self.algorithm {
                Algorithm::Bpe {
                    escape_whitespaces: false,
                    ..
                } => {
                    for c in text.chars() {
                        match unicode::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => out.extend_from_slice(c.to_string().as_bytes()),
                        }
                    }
                }
                _ => out.extend_from_slice(text.replace('▁', " ").as_bytes()),
            }
        } else if attr & ATTR_BYTE != 0 {
            if let Some(b) = text
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
            }
        }
    }

    /// llama.cpp's `detokenize(remove_special = false, unparse_special = true)`.
    fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut text = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let start = text.len();
            self.piece_bytes(id, &mut text);
            // The space SentencePiece put before the first word is not text.
            if i == 0 && self.add_space_prefix && text.get(start) == Some(&b' ') {
                text.remove(start);
            }
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }
}

/// The detokenizer's `clean_spaces` passes: no space before `?!.,`, none
/// around a lone apostrophe, none before `'s 'm 're 've`.
fn clean_up_spaces(text: &mut Vec<u8>) {
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    let t = std::mem::take(&mut out);
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    let t = std::mem::take(&mut out);
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied();
            if matches!(x1, b's' | b'm')
                || matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e')))
            {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}

// ---------------------------------------------------------------------------
// Per-token metadata
// ---------------------------------------------------------------------------

/// A per-token array (`tokenizer.ggml.scores`, `tokenizer.ggml.token_type`)
/// read through `gguf`'s typed accessors, cut to the `n` tokens; `None` when
/// the file has none. Fewer than `n` elements is an error naming the key.
fn per_token<'a, T: FromValue<'a>>(g: &'a Gguf, key: &str, n: usize) -> Result<Option<Vec<T>>> {
    let Some(mut values) = g.get_opt::<Vec<T>>(key)? else {
        return Ok(None);
    };
    if values.len() < n {
        return Err(Error::metadata(
            key,
            format!("{} elements for {n} tokens", values.len()),
        ));
    }
    values.truncate(n);
    Ok(Some(values))
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

enum Backend {
    Gguf(Box<GgufTokenizer>),
    Hf(Box<hf::HfTokenizer>),
}

/// A model's tokenizer.
pub struct Tokenizer {
    backend: Backend,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Gguf(t) => format!("gguf {} (pre '{}')", t.model, t.pre_name),
            Backend::Hf(_) => "tokenizer.json".to_string(),
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        Ok(Tokenizer {
            backend: Backend::Gguf(Box::new(GgufTokenizer::from_gguf(g)?)),
        })
    }

    /// A Hugging Face `tokenizer.json`; `config` is `tokenizer_config.json`,
    /// whose `add_bos_token` / `bos_token` / `eos_token` give the BOS rule
    /// and special ids.
    pub fn from_json_bytes(bytes: &[u8], config: Option<&serde_json::Value>) -> Result<Tokenizer> {
        Ok(Tokenizer {
            backend: Backend::Hf(Box::new(hf::HfTokenizer::from_bytes(bytes, config)?)),
        })
    }

    /// [`Tokenizer::from_json_bytes`] reading `path`, and
    /// `tokenizer_config.json` beside it when present.
    #[cfg(feature = "std-fs")]
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                Error::format(
                    config_path.display().to_string(),
                    e.column() as u64,
                    e.to_string(),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(config_path, e)),
        };
        Tokenizer::from_json_bytes(&bytes, config.as_ref())
    }

    /// Token ids of `text`, as llama.cpp's `llama_tokenize(text, add_special
    /// = add_bos, parse_special)` for a model that adds no EOS: with
    /// `add_bos` the BOS token first (an error if there is none); with
    /// `parse_special` control tokens written in the text (`<|im_end|>`)
    /// become their ids, otherwise they are tokenized as text.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Gguf(t) => t.encode(text, add_bos, parse_special),
            Backend::Hf(t) => t.encode(text, add_bos, parse_special),
        }
    }

    /// `text` with the model's own BOS rule and special tokens not parsed.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, self.add_bos_default(), false)
    }

    /// The text of `ids`, special tokens included, as llama.cpp detokenizes
    /// (SentencePiece's leading space dropped; invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Gguf(t) => String::from_utf8_lossy(&t.decode(ids)).into_owned(),
            Backend::Hf(t) => t.decode(ids),
        }
    }

    /// The bytes one token stands for (a byte-level token may hold part of
    /// a UTF-8 character).
    pub fn piece_bytes(&self, id: u32) -> Vec<u8> {
        match &self.backend {
            Backend::Gguf(t) => {
                let mut out = Vec::new();
                t.piece_bytes(id, &mut out);
                out
            }
            Backend::Hf(t) => t.piece_bytes(id),
        }
    }

    /// The text of one token ([`Tokenizer::piece_bytes`], lossily as UTF-8).
    pub fn piece(&self, id: u32) -> String {
        String::from_utf8_lossy(&self.piece_bytes(id)).into_owned()
    }

    pub fn bos_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(t) => t.bos,
            Backend::Hf(t) => t.bos,
        }
    }

    pub fn eos_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(t) => t.eos,
            Backend::Hf(t) => t.eos,
        }
    }

    /// The end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...) when the
    /// vocabulary has one.
    pub fn eot_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(t) => t.eot,
            Backend::Hf(t) => t.eot,
        }
    }

    pub fn unk_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(t) => t.unk,
            Backend::Hf(t) => t.unk,
        }
    }

    /// Number of token ids (the largest id + 1).
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Gguf(t) => t.vocab.len(),
            Backend::Hf(t) => t.vocab_size(),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(t) => t.vocab.id(token),
            Backend::Hf(t) => t.token_to_id(token),
        }
    }

    /// The raw vocabulary entry of `id` (e.g. `Ġhello`, `▁hello`, `<0x0A>`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Gguf(t) => t.vocab.texts.get(id as usize).cloned(),
            Backend::Hf(t) => t.id_to_token(id),
        }
    }

    /// Whether the model wants BOS before a prompt.
    pub fn add_bos_default(&self) -> bool {
        match &self.backend {
            Backend::Gguf(t) => t.add_bos,
            Backend::Hf(t) => t.add_bos,
        }
    }

    /// An equivalent Hugging Face `tokenizer.json`, for exporting a GGUF
    /// model as safetensors. The BOS rule is in its `TemplateProcessing`
    /// post-processor.
    pub fn to_json_string(&self) -> Result<String> {
        match &self.backend {
            Backend::Gguf(t) => hf::gguf_to_json(t),
            Backend::Hf(t) => t.to_json_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_passes() {
        let mut t = b"Hello , world ! It ' s ok . I 'm here 'd you 've".to_vec();
        clean_up_spaces(&mut t);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "Hello, world! It's ok. I'm here 'd you've"
        );
    }
}
