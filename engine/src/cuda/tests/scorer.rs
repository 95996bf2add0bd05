//! The whole scorer on the GPU path against the CPU's scores.

use super::*;

/// pairs equals the CPU's within 1e-4 in exact, contrastive and per-token
/// detail included.
#[test]
fn scorer_on_the_gpu_path_gives_the_cpu_scores() {
    use crate::score::Pair;
    use crate::scorer::{Scorer, ScorerParams};
    let Some(path) = fixture("mistral-tiny/model.gguf") else {
        return;
    };
    let model = Arc::new(Model::load(&path).unwrap());
    let pairs = [
        Pair::new("Name a primary colour.", "Red."),
        Pair::new(
            "What is 2 + 2?",
            "2 + 2 = 4, because adding two and two gives four.",
        ),
        Pair::new("Translate 'cat' to French.", "Chat."),
        Pair::new(
            "Write a very short poem about rain on a tin roof at night.",
            "Drum of the dark, / tin sings under water, / sleep comes in the noise.",
        ),
    ];
    let params = ScorerParams {
        precision: Precision::Exact,
        negatives: 2,
        tokens: true,
        max_tokens: 40,
        ..ScorerParams::default()
    };
    let mut cpu = Scorer::new(model.clone(), None, params.clone()).unwrap();
    let want = cpu.score_batch(&pairs).unwrap();
    let mut gpu = Scorer::with_backend(model, None, params, Some(device(GIB))).unwrap();
    let got = gpu.score_batch(&pairs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let fields = |s: &crate::score::PairScore| {
            [
                s.alignment,
                s.fwd_pmi,
                s.rev_pmi,
                s.fwd_cond,
                s.fwd_uncond,
                s.rev_cond,
                s.rev_uncond,
                s.semantic,
                s.structural,
                s.contrastive.unwrap(),
            ]
        };
        for (a, b) in fields(g).iter().zip(fields(w)) {
            assert!((a - b).abs() < 1e-4, "pair {i}: {a} vs {b}");
        }
        assert_eq!(g.truncated, w.truncated);
        assert_eq!(g.response_tokens, w.response_tokens);
        let (gd, wd) = (
            g.response_detail.as_ref().unwrap(),
            w.response_detail.as_ref().unwrap(),
        );
        assert_eq!(gd.len(), wd.len());
        assert!(gd
            .iter()
            .zip(wd)
            .all(|(a, b)| a.text == b.text && (a.cond - b.cond).abs() < 1e-4));
    }
    assert!(
        got.iter().any(|s| s.truncated),
        "max_tokens 40 should cut the poem"
    );
}
