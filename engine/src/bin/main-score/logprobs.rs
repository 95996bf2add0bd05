//! `main-score logprobs`: per-token log-probabilities and perplexity of a text.

use std::io::Write;
use std::path::Path;

use main_engine::logprob::{perplexity, sequence_logprobs};
use main_engine::matmul::Precision;
use main_engine::model::{Model, Runtime};
use main_engine::{Device, Error, Result};

fn read_text(path: &Path) -> Result<String> {
    let bytes = if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .map_err(|e| Error::io("stdin", e))?;
        b
    } else {
        std::fs::read(path).map_err(|e| Error::io(path, e))?
    };
    String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!(
            "{} is not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

pub fn logprobs(
    model_path: &Path,
    text_file: &Path,
    threads: usize,
    device: Device,
    precision: Precision,
    json: bool,
    report_speed: bool,
) -> Result<()> {
    let text = read_text(text_file)?;
    let model = Model::load(model_path)?;
    let ids = model
        .tokenizer
        .encode(&text, model.tokenizer.add_bos_default(), false)?;
    let start = std::time::Instant::now();
    let lps = match device {
        Device::Cpu => sequence_logprobs(&model, &Runtime::new(threads, precision), &ids)?,
        Device::Cuda(n) => main_engine::cuda::sequence_logprobs(&model, n, precision, &ids)?,
    };
    if report_speed {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            serde_json::json!({
                "tokens": ids.len(),
                "seconds": secs,
                "precision": precision.name(),
                "device": device.to_string(),
                // What MAIN_ISA and the CPU left the matmuls (the GPU ignores it).
                "kernels": main_engine::kernels::isa_name(main_engine::kernels::best().isa),
            })
        );
    }
    let ppl = perplexity(&lps);
    let pieces: Vec<String> = ids.iter().map(|&id| model.tokenizer.piece(id)).collect();
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("stdout", e);
    if json {
        let obj =
            serde_json::json!({ "ids": ids, "pieces": pieces, "logprobs": lps, "perplexity": ppl });
        writeln!(out, "{obj}").map_err(io)?;
    } else {
        for ((id, piece), lp) in ids.iter().zip(&pieces).zip(&lps) {
            let lp = lp.map_or("-".to_string(), |v| format!("{v:.4}"));
            writeln!(out, "{id:>7} {lp:>10}  {piece:?}").map_err(io)?;
        }
        writeln!(out, "tokens: {}  perplexity: {ppl:.4}", ids.len()).map_err(io)?;
    }
    Ok(())
}
