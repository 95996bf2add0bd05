//! `main-score quantize` and `main-score export`: writing a model in another form.

use std::path::Path;

use main_engine::model::Model;
use main_engine::quant::DType;
use main_engine::{convert, Error, Result};

pub fn quantize(input: &Path, output: &Path, dtype: &str) -> Result<()> {
    let ty = DType::from_name(dtype).ok_or_else(|| {
        Error::invalid_argument(
            "--type",
            format!("'{dtype}' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k"),
        )
    })?;
    let model = Model::load(input)?;
    let report = convert::write_gguf(&model, ty, output)?;
    eprintln!(
        "main-score: wrote {} ({} tensors, {:.1} MB)",
        output.display(),
        report.n_tensors,
        report.n_bytes as f64 / 1e6
    );
    Ok(())
}

pub fn export(input: &Path, output_dir: &Path) -> Result<()> {
    let model = Model::load(input)?;
    convert::write_hf_f32(&model, output_dir)?;
    eprintln!("main-score: wrote {}", output_dir.display());
    Ok(())
}
