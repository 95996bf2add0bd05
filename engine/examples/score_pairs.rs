//! Scores a few pairs with the library API: `cargo run --release -p main-engine --example score_pairs`.
use std::sync::Arc;

use main_engine::model::Model;
use main_engine::score::Pair;
use main_engine::scorer::{Scorer, ScorerParams};

fn main() -> main_engine::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let model = Arc::new(Model::load(path.as_ref())?);
    let mut scorer = Scorer::new(
        model,
        None,
        ScorerParams {
            negatives: 2,
            ..Default::default()
        },
    )?;
    let pairs = [
        Pair::new("What is the capital of France?", "The capital of France is Paris."),
        Pair::new("Write a haiku about autumn.", "Crimson leaves drift down,\nthe cold wind hums through bare trees,\nsummer says goodbye."),
        Pair::new("Add 17 and 25.", "17 + 25 = 42."),
        Pair::new("What is the capital of France?", "17 + 25 = 42."),
    ];
    let t = std::time::Instant::now();
    let scores = scorer.score_batch(&pairs)?;
    for (p, s) in pairs.iter().zip(&scores) {
        println!(
            "{:<40} align {:+.3}  fwd {:+.3}  rev {:+.3}  ifd {:.3}  sem {:+.3}  str {:+.3}  nce {:+.3}",
            format!("{:.38}", p.instruction), s.alignment, s.fwd_pmi, s.rev_pmi, s.ifd, s.semantic, s.structural, s.contrastive.unwrap_or(f64::NAN)
        );
    }
    eprintln!("{} pairs in {:.2}s", pairs.len(), t.elapsed().as_secs_f64());
    Ok(())
}
