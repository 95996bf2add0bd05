//! The four views of a pair (DESIGN.md §2) as token ids: a prompt rendered
//! with the model's chat template from one user message, followed by the
//! target the model is scored (or trained) on.
//!
//! | view | prompt content | target |
//! |---|---|---|
//! | [`ViewKind::FwdCond`] | `x` | `y` + end-of-turn |
//! | [`ViewKind::FwdUncond`] | `""` | `y` + end-of-turn |
//! | [`ViewKind::RevCond`] | [`reverse_content`]`(y)` | `x` + end-of-turn |
//! | [`ViewKind::RevUncond`] | `""` | `x` + end-of-turn |
//!
//! A turn of a conversation gets the same four views with its history in
//! front of the user message ([`turn_views`], DESIGN.md §2 "Conversations").
//!
//! The trainer builds its training sequences with [`build_view`] too, so a
//! model is trained and scored on the same token sequences.

use crate::conversation::{Message, Turn};
use crate::error::{Error, Result};
use crate::score::Pair;
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// The instruction the reverse views put before a response (DESIGN.md §2).
pub const REVERSE_PROMPT: &str =
    "Below is a response to an instruction. Write the instruction that it answers.\n\nResponse:\n";

/// The user message of the reverse conditional view: [`REVERSE_PROMPT`] + `response`.
pub fn reverse_content(response: &str) -> String {
    format!("{REVERSE_PROMPT}{response}")
}

/// The four views, in the order [`pair_views`] returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewKind {
    FwdCond,
    FwdUncond,
    RevCond,
    RevUncond,
}

impl ViewKind {
    pub const ALL: [ViewKind; 4] = [
        ViewKind::FwdCond,
        ViewKind::FwdUncond,
        ViewKind::RevCond,
        ViewKind::RevUncond,
    ];

    /// The name of the view's score in [`crate::score::PairScore`].
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::FwdCond => "fwd_cond",
            ViewKind::FwdUncond => "fwd_uncond",
            ViewKind::RevCond => "rev_cond",
            ViewKind::RevUncond => "rev_uncond",
        }
    }
}

/// One view's token ids: the prompt, then the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewTokens {
    pub ids: Vec<u32>,
    /// Prompt length; the targets (the only scored tokens) are `ids[n_prompt..]`.
    pub n_prompt: usize,
    /// Some content was cut to fit `max_tokens`.
    pub truncated: bool,
}

impl ViewTokens {
    pub fn prompt(&self) -> &[u32] {
        &self.ids[..self.n_prompt]
    }

    pub fn target(&self) -> &[u32] {
        &self.ids[self.n_prompt..]
    }
}

/// The token ids of `template`'s prompt for one user message `content`,
/// followed by those of `target` + the template's end-of-turn.
///
/// The prompt is tokenized with special tokens parsed and the model's BOS
/// rule, except that no BOS is added when the template already wrote one
/// (LLaMA and Mistral templates start with `{{ bos_token }}`): a doubled BOS
/// is a sequence the model never saw. The target is tokenized on its own,
/// special tokens parsed, without BOS.
///
/// Truncation, when the whole is longer than `max_tokens`: content is cut
/// at its end, never the template.
/// 1. The target content is cut to its first tokens (decoded back to text,
///    end-of-turn re-appended, tokenized again) so that the target takes at
///    most `max(max_tokens / 2, max_tokens - prompt_len)` ids, but never
///    less than its end-of-turn and one more id, and never more than what
///    leaves room for the prompt with empty content.
/// 2. If the whole is still too long, the prompt content is cut the same
///    way and the template rendered again with it.
///
/// The view is then flagged `truncated`. At least one target id is always
/// kept. A template whose prompt with empty content plus its end-of-turn
/// (plus one id) does not fit in `max_tokens` is an error, and so is a
/// target with nothing to score (empty content, empty end-of-turn).
pub fn build_view(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    content: &str,
    target: &str,
    max_tokens: usize,
) -> Result<ViewTokens> {
    Ok(build_view_cut(
        tokenizer,
        template,
        Frame::default(),
        content,
        target,
        max_tokens,
    )?
    .0)
}

/// The four views of `pair` in [`ViewKind`] order; `fwd` serves the forward
/// views and `rev` the reverse views (the same model in zero-shot use).
///
/// Within one direction both views score the same target ids: the target is
/// cut by the conditional view's budget, and the unconditional view reuses
/// those ids after its own (empty-content) prompt.
pub fn pair_views(
    fwd: (&Tokenizer, &ChatTemplate),
    rev: (&Tokenizer, &ChatTemplate),
    pair: &Pair,
    max_tokens: usize,
) -> Result<[ViewTokens; 4]> {
    Ok(turn_views(fwd, rev, &Turn::of_pair(pair), max_tokens)?.0)
}

/// The four views of one turn of a conversation, in [`ViewKind`] order,
/// and how many of the oldest exchanges of its history were dropped.
///
/// Every view's prompt is the template rendered with the kept history, then
/// the view's user message, then (forward views only) the turn's context
/// messages, then the generation prompt. A turn with no history and no
/// context is a pair, and gets exactly [`pair_views`]' tokens.
///
/// When the views do not fit `max_tokens` with the whole history, the
/// fewest oldest exchanges are dropped that make all four fit uncut (the
/// system message stays); when none does, the whole history is dropped and
/// content is cut as for a pair. Either way every view is flagged
/// `truncated`. All four views keep the same history, so they share its
/// tokens as a prefix.
pub fn turn_views(
    fwd: (&Tokenizer, &ChatTemplate),
    rev: (&Tokenizer, &ChatTemplate),
    turn: &Turn,
    max_tokens: usize,
) -> Result<([ViewTokens; 4], usize)> {
    let context: Vec<(&str, &str)> = turn.context.iter().map(Message::rendered).collect();
    let reverse = reverse_content(turn.assistant);
    let build = |dropped: usize| -> Result<[ViewTokens; 4]> {
        let history = turn.kept_history(dropped);
        let fwd_frame = Frame {
            before: &history,
            after: &context,
        };
        let rev_frame = Frame {
            before: &history,
            after: &[],
        };
        let [fwd_cond, fwd_uncond] =
            direction(fwd, fwd_frame, turn.user, turn.assistant, max_tokens)?;
        let [rev_cond, rev_uncond] = direction(rev, rev_frame, &reverse, turn.user, max_tokens)?;
        Ok([fwd_cond, fwd_uncond, rev_cond, rev_uncond])
    };
    // Ok(None): does not fit uncut with this history.
    let fitting = |dropped: usize| -> Result<Option<[ViewTokens; 4]>> {
        match build(dropped) {
            Ok(v) if v.iter().all(|x| !x.truncated) => Ok(Some(v)),
            Ok(_) => Ok(None),
            Err(e) if too_long(&e) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let n = turn.n_exchanges();
    if n == 0 {
        return Ok((build(0)?, 0));
    }
    if let Some(v) = fitting(0)? {
        return Ok((v, 0));
    }
    // Binary search: a shorter history never makes a view longer.
    let (mut lo, mut hi) = (1, n);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        match fitting(mid)? {
            Some(v) => {
                best = Some((v, mid));
                hi = mid - 1;
            }
            None => lo = mid + 1,
        }
    }
    let (mut views, dropped) = match best {
        Some(found) => found,
        None => (build(n)?, n),
    };
    for v in &mut views {
        v.truncated = true;
    }
    Ok((views, dropped))
}

/// The forward conditional view of `turn` (with the history [`turn_views`]
/// kept, `dropped`) with another target: the contrastive score's negatives.
/// For a pair, [`build_view`] of its instruction and `target`.
pub fn negative_view(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    turn: &Turn,
    dropped: usize,
    target: &str,
    max_tokens: usize,
) -> Result<ViewTokens> {
    let history = turn.kept_history(dropped);
    let context: Vec<(&str, &str)> = turn.context.iter().map(Message::rendered).collect();
    let frame = Frame {
        before: &history,
        after: &context,
    };
    Ok(build_view_cut(tokenizer, template, frame, turn.user, target, max_tokens)?.0)
}

/// The error [`build_view_cut`] gives when the template and history alone
/// leave no room: a shorter history may fit.
fn too_long(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { name, .. } if name == "max_tokens")
}

/// The messages around a view's user message: `before` it (the system
/// message and the kept history) and `after` it (the tool calls and
/// observations a forward view sees). Both empty for a pair.
#[derive(Clone, Copy, Default)]
struct Frame<'a> {
    before: &'a [(&'a str, &'a str)],
    after: &'a [(&'a str, &'a str)],
}

/// The conditional and unconditional view of one direction.
fn direction(
    (tokenizer, template): (&Tokenizer, &ChatTemplate),
    frame: Frame,
    content: &str,
    target: &str,
    max_tokens: usize,
) -> Result<[ViewTokens; 2]> {
    let (cond, target_cut) =
        build_view_cut(tokenizer, template, frame, content, target, max_tokens)?;
    let mut ids = prompt_ids(tokenizer, template, frame, "")?;
    let n_prompt = ids.len();
    ids.extend_from_slice(cond.target());
    if ids.len() > max_tokens {
        // Only a template whose empty-content prompt is longer than its
        // prompt with content gets here, and only when nothing was cut.
        return Err(Error::invalid_argument(
            "max_tokens",
            format!(
                "the unconditional view is {} tokens, over {max_tokens}: its prompt ({n_prompt} tokens) \
                 is longer than the conditional one ({})",
                ids.len(),
                cond.n_prompt
            ),
        ));
    }
    let uncond = ViewTokens {
        ids,
        n_prompt,
        truncated: target_cut,
    };
    Ok([cond, uncond])
}

/// [`build_view`], and whether the target content was cut.
fn build_view_cut(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    frame: Frame,
    content: &str,
    target: &str,
    max_tokens: usize,
) -> Result<(ViewTokens, bool)> {
    let prompt_of = |c: &str| prompt_ids(tokenizer, template, frame, c);
    let eot = template.end_of_turn();
    let target_of = |t: &str| tokenizer.encode(&format!("{t}{eot}"), false, true);

    let prompt = prompt_of(content)?;
    let full_target = target_of(target)?;
    if full_target.is_empty() {
        return Err(Error::invalid_argument(
            "target",
            "empty, and the chat template has no end-of-turn: nothing to score",
        ));
    }
    if prompt.len() + full_target.len() <= max_tokens {
        return Ok((join(prompt, full_target, false), false));
    }

    let bare_prompt = prompt_of("")?.len();
    let bare_target = target_of("")?.len().max(1);
    if bare_prompt + bare_target > max_tokens {
        return Err(Error::invalid_argument(
            "max_tokens",
            format!(
                "{max_tokens} cannot hold the chat template alone: its prompt is {bare_prompt} tokens \
                 with empty content, and its target needs {bare_target}"
            ),
        ));
    }
    let target_budget = (max_tokens / 2)
        .max(max_tokens.saturating_sub(prompt.len()))
        .max(bare_target)
        .min(max_tokens - bare_prompt);
    let (mut target_ids, target_cut) = fit_prefix(tokenizer, target, target_budget, target_of)?;
    if target_ids.is_empty() {
        // Only when the first token is a fragment of a character, which
        // decodes to no whole character, and there is no end-of-turn.
        target_ids = full_target[..1].to_vec();
    }
    let (prompt, prompt_cut) =
        fit_prefix(tokenizer, content, max_tokens - target_ids.len(), prompt_of)?;
    Ok((join(prompt, target_ids, true), target_cut || prompt_cut))
}

fn join(mut prompt: Vec<u32>, target: Vec<u32>, truncated: bool) -> ViewTokens {
    let n_prompt = prompt.len();
    prompt.extend(target);
    ViewTokens {
        ids: prompt,
        n_prompt,
        truncated,
    }
}

fn prompt_ids(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    frame: Frame,
    content: &str,
) -> Result<Vec<u32>> {
    let text = if frame.before.is_empty() && frame.after.is_empty() {
        template.render_prompt(content)?
    } else {
        let mut messages = Vec::with_capacity(frame.before.len() + 1 + frame.after.len());
        messages.extend_from_slice(frame.before);
        messages.push(("user", content));
        messages.extend_from_slice(frame.after);
        template.render(&messages, true)?
    };
    let mut ids = tokenizer.encode(&text, false, true)?;
    if tokenizer.add_bos_default() {
        let bos = tokenizer.bos_id().ok_or_else(|| {
            Error::Tokenizer("the model adds BOS to prompts but has no BOS token".into())
        })?;
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    Ok(ids)
}

/// `build(text)` if it has at most `limit` ids; otherwise `build` of the
/// longest prefix of `text` cut at a token boundary that fits, and `true`.
/// The caller guarantees that `build("")` fits.
fn fit_prefix(
    tokenizer: &Tokenizer,
    text: &str,
    limit: usize,
    build: impl Fn(&str) -> Result<Vec<u32>>,
) -> Result<(Vec<u32>, bool)> {
    let ids = build(text)?;
    if ids.len() <= limit {
        return Ok((ids, false));
    }
    let tokens = tokenizer.encode(text, false, true)?;
    let overhead = build("")?.len();
    let mut keep = tokens.len().min(limit.saturating_sub(overhead));
    loop {
        let ids = build(text_prefix(tokenizer, text, &tokens[..keep]))?;
        if ids.len() <= limit {
            return Ok((ids, true));
        }
        if keep == 0 {
            return Err(Error::invalid_argument(
                "max_tokens",
                format!(
                    "{limit} tokens cannot hold the template with empty content ({} tokens)",
                    ids.len()
                ),
            ));
        }
        // Tokenizing a prefix again can merge differently at the cut, so
        // step back by the overshoot and try again.
        keep -= (ids.len() - limit).min(keep);
    }
}

/// The longest prefix of `text` that `ids` (a prefix of its tokens) decode
/// to, cut at a character boundary: decoding can end inside a character
/// (byte tokens) or normalize spaces, and the cut text must be `text`'s own.
fn text_prefix<'a>(tokenizer: &Tokenizer, text: &'a str, ids: &[u32]) -> &'a str {
    let decoded = tokenizer.decode(ids);
    let mut end = 0;
    for (a, b) in text.chars().zip(decoded.chars()) {
        if a != b {
            break;
        }
        end += a.len_utf8();
    }
    &text[..end]
}
