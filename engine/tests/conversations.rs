//! Conversations (DESIGN.md §2 "Conversations") on real multi-turn data:
//! LLaMA-Factory's tool-call demo (ShareGPT with `function_call` and
//! `observation` turns) and its DPO demo's conversations closed by their
//! chosen answers (some with a system message), both fetched by
//! scripts/fetch-fixtures from the llamafactory sdist.
//!
//! - every turn's four means equal those of its views scored alone, each
//!   rendered here from the messages and run as one whole sequence with no
//!   shared prefix or batch (an independent path), within 1e-5 nats;
//! - scoring many turns in one batch equals scoring each alone, bit for bit
//!   (the batch computes the prompts its turns share once);
//! - a turn whose answer is replaced by another conversation's scores below
//!   the original in at least 95% of cases, and the conversation with it;
//! - a one-turn conversation without a system message is exactly a pair.

mod common;

use std::sync::Arc;

use common::*;
use main_engine::conversation::{weakest, Conversation, Message, Role, Turn};
use main_engine::logprob::sequence_logprobs;
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::pairs::{parse_sample_line, Format, Sample};
use main_engine::score::{Pair, PairScore};
use main_engine::scorer::{Scorer, ScorerParams};
use main_engine::template::ChatTemplate;
use main_engine::views::{reverse_content, turn_views};

fn conversations(file: &str) -> Vec<Conversation> {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    text.lines()
        .enumerate()
        .map(
            |(i, l)| match parse_sample_line(l, i + 1, &Format::Auto).unwrap().1 {
                Sample::Conversation(c) => c,
                Sample::Pair(_) => panic!("{file}:{}: not a conversation", i + 1),
            },
        )
        .collect()
}

fn text_len(c: &Conversation) -> usize {
    c.messages().iter().map(|m| m.content.len()).sum()
}

fn model() -> Arc<Model> {
    Arc::new(Model::load(&default_model()).unwrap())
}

fn scorer(model: &Arc<Model>, precision: Precision, max_tokens: usize) -> Scorer {
    let params = ScorerParams {
        precision,
        max_tokens,
        ..Default::default()
    };
    Scorer::new(model.clone(), None, params).unwrap()
}

/// Target log-probs of one view built from scratch: the template rendered
/// with `before`, the user message `user` and `after`, tokenized with the
/// model's BOS rule, the target and the end-of-turn after it, the whole
/// sequence run through the model at once.
struct Alone<'a> {
    model: &'a Model,
    rt: &'a Runtime,
    template: &'a ChatTemplate,
}

impl Alone<'_> {
    fn view(
        &self,
        before: &[(&str, &str)],
        user: &str,
        after: &[(&str, &str)],
        target: &str,
    ) -> (Vec<u32>, Vec<f64>) {
        let mut messages = before.to_vec();
        messages.push(("user", user));
        messages.extend_from_slice(after);
        let text = self.template.render(&messages, true).unwrap();
        let tok = &self.model.tokenizer;
        let mut ids = tok.encode(&text, false, true).unwrap();
        let bos = tok.bos_id();
        if tok.add_bos_default() && ids.first().copied() != bos {
            ids.insert(0, bos.unwrap());
        }
        let n_prompt = ids.len();
        let eot = self.template.end_of_turn();
        ids.extend(tok.encode(&format!("{target}{eot}"), false, true).unwrap());
        let lps = sequence_logprobs(self.model, self.rt, &ids).unwrap();
        let target = lps[n_prompt..].iter().map(|x| x.unwrap()).collect();
        (ids, target)
    }

    /// The four means of `turn` with its history's `dropped` oldest exchanges left out.
    fn means(&self, turn: &Turn, dropped: usize) -> [f64; 4] {
        let history = turn.kept_history(dropped);
        let context: Vec<(&str, &str)> = turn.context.iter().map(Message::rendered).collect();
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let a = turn.assistant;
        [
            mean(self.view(&history, turn.user, &context, a).1),
            mean(self.view(&history, "", &context, a).1),
            mean(self.view(&history, &reverse_content(a), &[], turn.user).1),
            mean(self.view(&history, "", &[], turn.user).1),
        ]
    }
}

fn means(s: &PairScore) -> [f64; 4] {
    [s.fwd_cond, s.fwd_uncond, s.rev_cond, s.rev_uncond]
}

/// Real conversations of every shape the demos hold: tool calls and
/// observations, a system message, several turns. Short ones, so the test
/// stays within a minute on 2 cores.
fn sample_conversations() -> Vec<Conversation> {
    let mut glaive = conversations("glaive_toolcall_en_demo.jsonl");
    glaive.sort_by_key(text_len);
    let with_tools = |c: &Conversation| c.messages().iter().any(|m| m.role == Role::Tool);
    let mut out: Vec<Conversation> = glaive
        .iter()
        .filter(|c| with_tools(c))
        .take(3)
        .cloned()
        .collect();
    out.extend(glaive.iter().filter(|c| c.n_turns() >= 3).take(2).cloned());
    let mut dpo = conversations("sharegpt_dpo_en_demo.jsonl");
    dpo.sort_by_key(text_len);
    let system = |c: &Conversation| c.messages()[0].role == Role::System;
    out.extend(dpo.iter().filter(|c| system(c)).take(2).cloned());
    out.extend(dpo.iter().filter(|c| c.n_turns() >= 2).take(1).cloned());
    assert_eq!(out.len(), 8);
    out
}

#[test]
fn every_turn_equals_its_views_scored_alone() {
    let model = model();
    let template = ChatTemplate::for_model(&model).unwrap();
    // The default precision is Exact on AVX2 and on portable kernels: each
    // precision once.
    let mut precisions = vec![Precision::Exact];
    if Precision::default() != Precision::Exact {
        precisions.push(Precision::default());
    }
    for precision in precisions {
        let rt = Runtime::new(0, precision);
        let alone = Alone {
            model: &model,
            rt: &rt,
            template: &template,
        };
        let mut scorer = scorer(&model, precision, 2048);
        let (mut n_turns, mut worst) = (0, 0f64);
        for c in sample_conversations() {
            let scores = scorer.score_conversation(&c).unwrap();
            assert_eq!(scores.len(), c.n_turns());
            for (k, (turn, s)) in c.turns().zip(&scores).enumerate() {
                assert!(!s.truncated, "turn {} fits 2048 tokens", k + 1);
                let want = alone.means(&turn, 0);
                for (got, want) in means(s).iter().zip(want) {
                    worst = worst.max((got - want).abs());
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{precision:?} turn {}: {got} vs {want} alone",
                        k + 1
                    );
                }
                n_turns += 1;
            }
        }
        eprintln!("{precision:?}: {n_turns} turns, largest |scored - alone| {worst:.2e} nats");
        assert!(n_turns >= 12, "{n_turns} turns");
    }
}

#[test]
fn a_long_history_loses_its_oldest_exchanges_first() {
    let model = model();
    let template = ChatTemplate::for_model(&model).unwrap();
    let rt = Runtime::new(0, Precision::Exact);
    let alone = Alone {
        model: &model,
        rt: &rt,
        template: &template,
    };
    let mut glaive = conversations("glaive_toolcall_en_demo.jsonl");
    glaive.sort_by_key(text_len);
    let c = glaive.iter().find(|c| c.n_turns() >= 4).unwrap();
    let last = c.turns().last().unwrap();
    let tok = (&model.tokenizer, &template);
    // Long enough for the last exchange, too short for the whole history.
    let full = turn_views(tok, tok, &last, 1 << 20).unwrap().0;
    let longest = full.iter().map(|v| v.ids.len()).max().unwrap();
    let max_tokens = longest * 2 / 3;
    let (views, dropped) = turn_views(tok, tok, &last, max_tokens).unwrap();
    assert!(
        dropped >= 1 && dropped < last.n_exchanges(),
        "dropped {dropped}"
    );
    assert!(views
        .iter()
        .all(|v| v.truncated && v.ids.len() <= max_tokens));
    // The views are the turn rendered with the kept history, nothing cut...
    let history = last.kept_history(dropped);
    let context: Vec<(&str, &str)> = last.context.iter().map(Message::rendered).collect();
    let (ids, _) = alone.view(&history, last.user, &context, last.assistant);
    assert_eq!(views[0].ids, ids);
    // ...and one exchange fewer dropped would not fit.
    let history = last.kept_history(dropped - 1);
    let (ids, _) = alone.view(&history, last.user, &context, last.assistant);
    let (rev, _) = alone.view(&history, &reverse_content(last.assistant), &[], last.user);
    assert!(ids.len().max(rev.len()) > max_tokens);
    // The system message, when there is one, is never dropped.
    let dpo = conversations("sharegpt_dpo_en_demo.jsonl");
    let c = dpo
        .iter()
        .find(|c| c.messages()[0].role == Role::System && c.n_turns() >= 1)
        .unwrap();
    let t = c.turns().next().unwrap();
    assert_eq!(t.kept_history(5)[0].0, "system");

    let mut scorer = scorer(&model, Precision::Exact, max_tokens);
    let turns: Vec<Turn> = vec![last];
    let s = &scorer.score_turns(&turns).unwrap()[0];
    assert!(s.truncated);
    let want = alone.means(&last, dropped);
    for (got, want) in means(s).iter().zip(want) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn batched_turns_equal_turns_scored_one_at_a_time() {
    let model = model();
    let mut scorer = scorer(&model, Precision::default(), 1024);
    let convs = sample_conversations();
    let turns: Vec<Turn> = convs.iter().flat_map(|c| c.turns()).collect();
    let batched = scorer.score_turns(&turns).unwrap();
    let mut worst = 0f64;
    for (t, b) in turns.iter().zip(&batched) {
        let one = &scorer.score_turns(std::slice::from_ref(t)).unwrap()[0];
        for (x, y) in means(b).iter().zip(means(one)) {
            worst = worst.max((x - y).abs());
        }
        assert_eq!(
            (b.response_tokens, b.instruction_tokens, b.truncated),
            (one.response_tokens, one.instruction_tokens, one.truncated)
        );
    }
    eprintln!(
        "{} turns: largest |batched - alone| {worst:.2e} nats",
        turns.len()
    );
    // Bit for bit: every kernel computes each token's row alone, so neither
    // the turns' shared histories nor the prompts a batch's turns share (the
    // tool-call conversations' system messages: `scorer/clusters.rs`)
    // change a result, only the work.
    assert_eq!(worst, 0.0);
}

#[test]
fn a_one_turn_conversation_without_system_is_exactly_a_pair() {
    let model = model();
    let mut scorer = scorer(&model, Precision::default(), 1024);
    let pair = Pair::new("What is 17 multiplied by 23?", "17 x 23 = 391.");
    let line = r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 17 multiplied by 23?"}]}, {"role": "assistant", "content": "17 x 23 = 391."}]}"#;
    let Sample::Conversation(c) = parse_sample_line(line, 1, &Format::Auto).unwrap().1 else {
        panic!("a conversation")
    };
    assert_eq!(
        scorer.score_conversation(&c).unwrap(),
        scorer.score_batch(&[pair]).unwrap()
    );
}

/// For each conversation of 2 or 3 turns, its longest answer (the
/// substantive one: the demos close many conversations with the same
/// "You're welcome!") is replaced by the longest answer of another
/// conversation (the first from half the list away whose answer differs),
/// on 80 distinct conversations.
/// That turn's alignment must fall below the original's in at least 95% of
/// cases. Where the swapped turn is the last one, the conversation's score
/// (its weakest turn) must not rise whenever the turn fell; an earlier
/// answer is also the history of the turns after it and moves their
/// scores, so there the conversation's score is reported, not asserted.
#[test]
fn a_turn_answered_by_another_conversation_scores_lower() {
    let mut convs: Vec<Conversation> = conversations("glaive_toolcall_en_demo.jsonl");
    convs.extend(conversations("sharegpt_dpo_en_demo.jsonl"));
    convs.retain(|c| (2..=3).contains(&c.n_turns()));
    convs.sort_by_key(text_len);
    // The tool-call demo repeats some conversations word for word: each is
    // one case, not several.
    let mut seen = std::collections::HashSet::new();
    convs.retain(|c| seen.insert(c.messages().to_vec()));
    convs.truncate(80);
    let n = convs.len();
    assert_eq!(n, 80);
    let model = model();
    let mut scorer = scorer(&model, Precision::default(), 768);
    let swapped: Vec<(usize, Conversation)> = convs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (k, mine) = longest(c);
            let answer = (n / 2..n + n / 2)
                .map(|j| longest(&convs[(i + j) % n]).1)
                .find(|a| *a != mine)
                .unwrap();
            (k, swap_answer(c, k, answer))
        })
        .collect();
    // Every turn of the originals, and of each swapped conversation the
    // turns from the swapped one on, in one fused call (turns of different
    // conversations batch like pairs), cut back per conversation. The turns
    // before the swap have the same history and texts as the original's,
    // so they take the original's scores: scoring them again, or 160 calls
    // one conversation at a time, costs minutes.
    let mut turns: Vec<Turn> = convs.iter().flat_map(|c| c.turns()).collect();
    turns.extend(swapped.iter().flat_map(|(k, c)| c.turns().skip(*k)));
    let mut scores = scorer.score_turns(&turns).unwrap().into_iter();
    let originals: Vec<Vec<PairScore>> = convs
        .iter()
        .map(|c| scores.by_ref().take(c.n_turns()).collect())
        .collect();
    let per_conversation: Vec<Vec<PairScore>> = originals
        .iter()
        .cloned()
        .chain(swapped.iter().zip(&originals).map(|((k, c), orig)| {
            let mut s = orig[..*k].to_vec();
            s.extend(scores.by_ref().take(c.n_turns() - k));
            s
        }))
        .collect();
    assert!(scores.next().is_none());
    let (mut lower, mut conv_lower, mut mean_lower) = (0, 0, 0);
    let (mut last, mut last_lower, mut last_not_higher) = (0, 0, 0);
    for (i, c) in convs.iter().enumerate() {
        let (k, mine) = longest(c);
        let answer = swapped[i].1.turns().nth(k).unwrap().assistant;
        let (orig, swap) = (&per_conversation[i], &per_conversation[n + i]);
        let fell = swap[k].alignment < orig[k].alignment;
        lower += usize::from(fell);
        if !fell {
            eprintln!(
                "not lower: conversation {i} turn {}/{}: {:.3} -> {:.3} (fwd_pmi {:.3} -> {:.3}, rev_pmi {:.3} -> {:.3})\n  user: {:?}\n  answer: {:?}\n  swapped in: {:?}",
                k + 1,
                c.n_turns(),
                orig[k].alignment,
                swap[k].alignment,
                orig[k].fwd_pmi,
                swap[k].fwd_pmi,
                orig[k].rev_pmi,
                swap[k].rev_pmi,
                c.turns().nth(k).unwrap().user,
                mine,
                answer
            );
        }
        let (a, b) = (
            weakest(swap).unwrap().alignment,
            weakest(orig).unwrap().alignment,
        );
        conv_lower += usize::from(a < b);
        // The mean over turns, reported beside the weakest turn (DESIGN.md
        // §3's rule) so the two rules can be compared on the same swaps.
        let mean = |s: &[PairScore]| s.iter().map(|t| t.alignment).sum::<f64>() / s.len() as f64;
        mean_lower += usize::from(mean(swap) < mean(orig));
        if k + 1 == c.n_turns() {
            last += 1;
            last_lower += usize::from(fell);
            last_not_higher += usize::from(a <= b);
        }
    }
    eprintln!(
        "{n} conversations: the swapped turn scores lower in {lower}; the conversation lower in \
         {conv_lower} (its mean over turns lower in {mean_lower}); where the last turn was swapped ({last}), the turn lower in {last_lower} and \
         the conversation not higher in {last_not_higher}"
    );
    assert!(lower * 100 >= 95 * n, "{lower} of {n}");
    assert!(last >= 20, "{last} last-turn swaps");
    // Nothing before the last turn changed: the conversation falls with it.
    assert!(
        last_not_higher >= last_lower,
        "{last_not_higher} < {last_lower}"
    );
}

/// The turn of `c` with the longest answer (the first of equals), and the answer.
fn longest(c: &Conversation) -> (usize, &str) {
    let k = (0..c.n_turns())
        .max_by_key(|&k| c.turns().nth(k).unwrap().assistant.len())
        .unwrap();
    (k, c.turns().nth(k).unwrap().assistant)
}

/// `c` with the assistant message of turn `k` (0-based) replaced by `answer`.
fn swap_answer(c: &Conversation, k: usize, answer: &str) -> Conversation {
    let mut messages = c.messages().to_vec();
    let mut seen = 0;
    let mut open = false;
    for m in &mut messages {
        match m.role {
            Role::User => open = true,
            Role::Assistant if open => {
                if seen == k {
                    m.content = answer.to_string();
                }
                seen += 1;
                open = false;
            }
            _ => {}
        }
    }
    Conversation::new(messages).unwrap()
}
