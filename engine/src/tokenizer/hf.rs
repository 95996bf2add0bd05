//! Hugging Face `tokenizer.json`: loading one through the `tokenizers` crate,
//! and writing one equivalent to a GGUF vocabulary for export.

use std::str::FromStr;

use serde_json::{json, Map, Value as Json};

use super::{
    Algorithm, GgufTokenizer, ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN,
    ATTR_USER_DEFINED, EOT_CANDIDATES,
};
use crate::error::{Error, Result};

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

pub(crate) struct HfTokenizer {
    /// Splits special tokens out of the text.
    parsing: tokenizers::Tokenizer,
    /// Tokenizes special tokens' text like any other text.
    literal: tokenizers::Tokenizer,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) add_bos: bool,
    /// Token strings are GPT-2 byte-level characters (else `▁` for space and
    /// `<0xXX>` byte fallback).
    byte_level: bool,
    vocab_size: usize,
}

/// `"<s>"` or `{"content": "<s>", ...}` in `tokenizer_config.json`.
fn config_token(config: Option<&Json>, key: &str) -> Option<String> {
    match config?.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl HfTokenizer {
    pub(crate) fn from_bytes(bytes: &[u8], config: Option<&Json>) -> Result<HfTokenizer> {
        // Malformed JSON first: `tokenizers` panics on some syntax errors
        // (its decoder's deserializer unwraps them; found by fuzzing).
        let json: Json = serde_json::from_slice(bytes)
            .map_err(|e| Error::format("tokenizer.json", e.column() as u64, e.to_string()))?;
        let parsing = tokenizers::Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        let mut literal = parsing.clone();
        literal.set_encode_special_tokens(true);

        let byte_level = json
            .get("decoder")
            .is_some_and(|d| d.to_string().contains("\"ByteLevel\""));

        let id_of = |key: &str| config_token(config, key).and_then(|t| parsing.token_to_id(&t));
        let eos = id_of("eos_token");
        let unk = id_of("unk_token");
        let eot = EOT_CANDIDATES.iter().find_map(|t| parsing.token_to_id(t));
        // What the post-processor puts around an empty text: its first token
        // is the BOS it adds, if any.
        let added_to_empty = parsing
            .encode("", true)
            .map_err(tok_err)?
            .get_ids()
            .to_vec();
        let bos = id_of("bos_token").or_else(|| added_to_empty.first().copied());
        // An explicit `add_bos_token` wins; otherwise the post-processor
        // decides.
        let add_bos = match config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(Json::as_bool)
        {
            Some(b) => b,
            None => bos.is_some() && added_to_empty.first().copied() == bos,
        };
        let vocab_size = parsing
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Ok(HfTokenizer {
            parsing,
            literal,
            bos,
            eos,
            eot,
            unk,
            add_bos,
            byte_level,
            vocab_size,
        })
    }

    pub(crate) fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let tok = if parse_special {
            &self.parsing
        } else {
            &self.literal
        };
        let mut out = Vec::new();
        if add_bos {
            out.push(self.bos.ok_or_else(|| {
                Error::invalid_argument("add_bos", "the tokenizer has no BOS token")
            })?);
        }
        if !text.is_empty() {
            out.extend_from_slice(tok.encode(text, false).map_err(tok_err)?.get_ids());
        }
        Ok(out)
    }

    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        self.parsing.decode(ids, false).unwrap_or_default()
    }

    pub(crate) fn piece_bytes(&self, id: u32) -> Vec<u8> {
        let Some(token) = self.parsing.id_to_token(id) else {
            return Vec::new();
        };
        if self.parsing.get_added_tokens_decoder().contains_key(&id) {
            return token.into_bytes();
        }
        if self.byte_level {
            let mut out = Vec::with_capacity(token.len());
            for c in token.chars() {
                match super::unicode::char_to_byte(c) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(c.to_string().as_bytes()),
                }
            }
            return out;
        }
        if let Some(b) = token
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            return vec![b];
        }
        token.replace('▁', " ").into_bytes()
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.parsing.token_to_id(token)
    }

    pub(crate) fn id_to_token(&self, id: u32) -> Option<String> {
        self.parsing.id_to_token(id)
    }

    pub(crate) fn to_json_string(&self) -> Result<String> {
        self.parsing.to_string(false).map_err(tok_err)
    }
}

/// SentencePiece merges recovered from scores, as HF's converter does: every
/// split of a token into two tokens, ranked by the whole token's score.
fn merges_from_scores(t: &GgufTokenizer) -> Vec<(String, String)> {
    let v = &t.vocab;
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, text) in v.texts.iter().enumerate() {
        for (cut, _) in text.char_indices().skip(1) {
            if let (Some(l), Some(r)) = (v.id(&text[..cut]), v.id(&text[cut..])) {
                merges.push((v.scores[id], id as u32, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then((a.2, a.3).cmp(&(b.2, b.3)))
    });
    merges
        .into_iter()
        .map(|(_, _, l, r)| (v.texts[l as usize].clone(), v.texts[r as usize].clone()))
        .collect()
}

/// `tokenizer.json` for a GGUF vocabulary, checked by loading it back.
pub(crate) fn gguf_to_json(t: &GgufTokenizer) -> Result<String> {
    let v = &t.vocab;
    let mut vocab = Map::new();
    for (id, text) in v.texts.iter().enumerate() {
        vocab.insert(text.clone(), json!(id));
    }
    let added: Vec<Json> = (0..v.len())
        .filter(|&i| v.attrs[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
        .map(|i| {
            let a = v.attrs[i];
            json!({
                "id": i,
                "content": v.texts[i],
                "single_word": false,
                "lstrip": a & ATTR_LSTRIP != 0,
                "rstrip": a & ATTR_RSTRIP != 0,
                "normalized": false,
                "special": a & ATTR_USER_DEFINED == 0,
            })
        })
        .collect();
    let post_processor = match (t.add_bos, t.bos) {
        (true, Some(bos)) => {
            let b = &v.texts[bos as usize];
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    {"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}
                ],
                "special_tokens": {b.as_str(): {"id": b, "ids": [bos], "tokens": [b]}}
            })
        }
        _ => Json::Null,
    };
    let spm_decoder = |strip_prefix: bool| {
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if strip_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({"type": "Sequence", "decoders": decoders})
    };
    let replace_spaces = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});

    let (normalizer, pre_tokenizer, decoder, merges, byte_fallback, ignore_merges) = match &t
        .algorithm
    {
        Algorithm::Spm => {
            let mut norms = Vec::new();
            if t.add_space_prefix {
                norms.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            norms.push(replace_spaces);
            (
                json!({"type": "Sequence", "normalizers": norms}),
                Json::Null,
                spm_decoder(t.add_space_prefix),
                merges_from_scores(t),
                true,
                false,
            )
        }
        Algorithm::Bpe {
            merge_lines,
            spec,
            escape_whitespaces,
            ..
        } => {
            let mut pres: Vec<Json> = spec
                .exprs
                .iter()
                .map(|e| json!({"type": "Split", "pattern": {"Regex": e}, "behavior": "Isolated", "invert": false}))
                .collect();
            if spec.byte_encode {
                pres.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
            }
            let merges = merge_lines
                .iter()
                .filter_map(|l| {
                    let sp = l.bytes().skip(1).position(|b| b == b' ')? + 1;
                    Some((l[..sp].to_string(), l[sp + 1..].to_string()))
                })
                .collect();
            let (normalizer, decoder) = if spec.byte_encode {
                (
                    Json::Null,
                    json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
                )
            } else {
                let n = if *escape_whitespaces {
                    replace_spaces
                } else {
                    Json::Null
                };
                (n, spm_decoder(false))
            };
            (
                normalizer,
                json!({"type": "Sequence", "pretokenizers": pres}),
                decoder,
                merges,
                !spec.byte_encode,
                spec.ignore_merges,
            )
        }
    };
    let merges: Vec<Json> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
    let unk = t
        .unk
        .filter(|_| byte_fallback)
        .map(|u| v.texts[u as usize].clone());
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": byte_fallback,
            "byte_fallback": byte_fallback,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    let text = doc.to_string();
    let loaded = tokenizers::Tokenizer::from_str(&text).map_err(tok_err)?;
    loaded.to_string(false).map_err(tok_err)
}
