//! What a scorer generates with its models: the reverse model's guesses of
//! an instruction, the forward model's answers, and the prompts both take
//! (for the engine's batched generation or an external server).

use super::{Compute, Scorer, Side};
use crate::error::{Error, Result};
use crate::views::reverse_content;

/// The reverse prompt of `response` as token ids, leaving `max_new` tokens
/// of the model's context for the guess (or half the context, if that is
/// less): a longer response is cut at its end, as scoring cuts content
/// (DESIGN.md §2), since generation cannot run past the context.
fn reverse_prompt_ids(rev: &Side, response: &str, max_new: usize) -> Result<Vec<u32>> {
    Ok(reverse_prompt(rev, response, max_new)?.1)
}

/// The reverse model's prompt for guessing `response`'s instruction, as
/// rendered text and as ids, the response cut at its end until prompt and
/// guess fit the context.
fn reverse_prompt(rev: &Side, response: &str, max_new: usize) -> Result<(String, Vec<u32>)> {
    let tok = &rev.model.tokenizer;
    let context = rev.model.config.context_length;
    let budget = context.saturating_sub(max_new).max(context / 2);
    let encode = |r: &str| -> Result<(String, Vec<u32>)> {
        let prompt = rev.template.render_prompt(&reverse_content(r))?;
        let ids = tok.encode(&prompt, tok.add_bos_default(), true)?;
        Ok((prompt, ids))
    };
    let mut out = encode(response)?;
    let content = tok.encode(response, false, false)?;
    let mut keep = content.len();
    // Decoded pieces may merge differently when encoded again: cut until it fits.
    while out.1.len() > budget && keep > 0 {
        keep = keep.saturating_sub(out.1.len() - budget).min(keep - 1);
        out = encode(&tok.decode(&content[..keep]))?;
    }
    Ok(out)
}

/// A prompt as text, for a server that tokenizes it itself (the external
/// generator), and the strings that end its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPrompt {
    /// The rendered chat template; the server adds BOS as its model says.
    pub text: String,
    pub stop: Vec<String>,
}

impl Scorer {
    /// The reverse model's guess of the instruction behind a response
    /// (greedy or sampled), for the annotation tool.
    pub fn guess_instruction(
        &mut self,
        response: &str,
        max_new: usize,
        sampler: &mut crate::sample::Sampler,
    ) -> Result<String> {
        let mut out = self.guess_instructions(&[response], max_new, vec![sampler.clone()])?;
        Ok(out.remove(0))
    }

    /// The reverse model's guesses for many responses at once, one sampler
    /// each (`samplers[i]` for `responses[i]`): decoded together by
    /// [`crate::generate::generate_batch`], so each weight is read once per
    /// step for all of them. A guess depends only on its response and its
    /// sampler, never on the others.
    pub fn guess_instructions(
        &mut self,
        responses: &[&str],
        max_new: usize,
        samplers: Vec<crate::sample::Sampler>,
    ) -> Result<Vec<String>> {
        use crate::generate::{chat_stop_ids, Request};
        if samplers.len() != responses.len() {
            return Err(Error::invalid_argument(
                "samplers",
                format!(
                    "{} samplers for {} responses: one each is required",
                    samplers.len(),
                    responses.len()
                ),
            ));
        }
        let rev = self.reverse_side();
        let stop = chat_stop_ids(&rev.model, &rev.template)?;
        let requests = responses
            .iter()
            .zip(samplers)
            .map(|(response, sampler)| {
                Ok(Request {
                    stop_ids: stop.clone(),
                    sampler,
                    ..Request::new(reverse_prompt_ids(rev, response, max_new)?, max_new)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self.generate(true, requests)?;
        Ok(out.into_iter().map(|g| g.text.trim().to_string()).collect())
    }

    /// The forward model's greedy answers to `instructions` (its chat
    /// template, at most `max_new` tokens, ended by its end of turn),
    /// decoded together on the scorer's device: the agreement check's
    /// answers. Each is the answer it would get alone.
    pub fn answers(&mut self, instructions: &[&str], max_new: usize) -> Result<Vec<String>> {
        use crate::generate::{chat_stop_ids, Request};
        let (model, tpl) = (&self.forward.model, &self.forward.template);
        let stop = chat_stop_ids(model, tpl)?;
        let tok = &model.tokenizer;
        let requests = instructions
            .iter()
            .map(|x| {
                let ids = tok.encode(&tpl.render_prompt(x)?, tok.add_bos_default(), true)?;
                Ok(Request {
                    stop_ids: stop.clone(),
                    ..Request::new(ids, max_new)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .generate(false, requests)?
            .into_iter()
            .map(|g| g.text)
            .collect())
    }

    /// Batched generation on the reverse (`reverse`) or forward side's
    /// model, where its forward passes run: the GPU's decode loop when the
    /// scorer is on a GPU, else the CPU with the scorer's threads and
    /// precision.
    fn generate(
        &mut self,
        reverse: bool,
        requests: Vec<crate::generate::Request>,
    ) -> Result<Vec<crate::generate::Generation>> {
        use crate::generate::{generate_batch, generate_batch_on, BatchParams};
        let side = match (reverse, self.reverse.as_mut()) {
            (true, Some(rev)) => rev,
            _ => &mut self.forward,
        };
        match &mut side.compute {
            Compute::Cpu { .. } => {
                generate_batch(&side.model, &self.rt, requests, BatchParams::default())
            }
            Compute::Gpu(gpu) => generate_batch_on(
                &mut crate::cuda::decode::GpuDecoder::new(&side.model, gpu.gpu_model())?,
                requests,
                BatchParams::default(),
            ),
        }
    }

    /// The text [`Scorer::guess_instructions`] decodes from for `response`
    /// (the reverse template, the response cut to fit the same way), and
    /// the end of turn that stops the guess: what an external generator is
    /// sent instead.
    pub fn guess_prompt(&self, response: &str, max_new: usize) -> Result<TextPrompt> {
        let rev = self.reverse_side();
        Ok(TextPrompt {
            text: reverse_prompt(rev, response, max_new)?.0,
            stop: vec![rev.template.end_of_turn().to_string()],
        })
    }

    /// The forward model's chat prompt for `instruction` (its answer comes
    /// next) and the end of turn that stops the answer.
    pub fn answer_prompt(&self, instruction: &str) -> Result<TextPrompt> {
        let tpl = &self.forward.template;
        Ok(TextPrompt {
            text: tpl.render_prompt(instruction)?,
            stop: vec![tpl.end_of_turn().to_string()],
        })
    }
}
