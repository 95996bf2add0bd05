//! `main-score report`: its options, turned into the engine's
//! [`ReportParams`]; the report itself (reading, histograms, samples,
//! duplicates, the HTML page) is `main_engine::report`, which Python's
//! `report` runs too. Here: the arguments, the progress bar, the files.

use std::io::IsTerminal;
use std::path::PathBuf;

use main_engine::report::{self, ReportParams, Rule};
use main_engine::{Error, Result};

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A scored JSONL file (the output of `main-score score`).
    scored: PathBuf,
    /// The HTML page to write: one self-contained file that opens offline.
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
    /// Also write the report's data (the JSON the page embeds) here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Mark the filter "FIELD at least X" (repeatable; every rule must hold).
    /// Without --min and --keep-top, the filter the scored file's provenance
    /// records, if any.
    #[arg(long, value_name = "FIELD=X", allow_hyphen_values = true)]
    min: Vec<String>,
    /// Mark the filter "the best FRACTION by --rank-by".
    #[arg(long, value_name = "FRACTION")]
    keep_top: Option<f64>,
    /// The score --keep-top ranks by, best first (a leading '-' keeps the lowest).
    #[arg(long, value_name = "FIELD", default_value = main_engine::rank::DEFAULT_RANK_BY,
          allow_hyphen_values = true)]
    rank_by: String,
    /// Percentiles whose pairs are shown, comma-separated.
    #[arg(long, value_name = "P,P,...", default_value = "5,50,95")]
    percentiles: String,
    /// The score whose percentiles pick the examples [default: the filter's field, else alignment].
    #[arg(long, value_name = "FIELD")]
    examples_by: Option<String>,
    /// Dots of the scatters: a uniform sample of at most N records.
    #[arg(long, value_name = "N", default_value_t = ReportParams::default().dots)]
    dots: usize,
    /// Records kept for exact quantiles and correlations (a uniform sample beyond).
    #[arg(long, value_name = "N", default_value_t = ReportParams::default().exact_cap)]
    exact_cap: usize,
    /// Records searched for near-duplicates (a uniform sample).
    #[arg(long, value_name = "N", default_value_t = ReportParams::default().near_sample)]
    near_sample: usize,
    /// Distinct texts tracked per kind for exact duplicates.
    #[arg(long, value_name = "N", default_value_t = ReportParams::default().max_distinct)]
    max_distinct: usize,
    /// The longest line read, in bytes; a longer one is an error.
    #[arg(long, value_name = "BYTES", default_value_t = ReportParams::default().max_line_bytes)]
    max_line_bytes: usize,
    /// Show the progress bar even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Print `{"peak_bytes": N}` (VmHWM of /proc/self/status) to stderr at
    /// the end (the memory test and benches/report_scale.sh).
    #[arg(long, hide = true)]
    report_peak_memory: bool,
}

impl ReportArgs {
    fn params(&self) -> Result<ReportParams> {
        let mut rules = self
            .min
            .iter()
            .map(|m| Rule::parse_min(m))
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = self.keep_top {
            rules.push(Rule::keep_top(f, &self.rank_by)?);
        }
        let percentiles = self
            .percentiles
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<f64>().map_err(|_| {
                    Error::invalid_argument("--percentiles", format!("{s:?} is not a number"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ReportParams {
            rules,
            percentiles,
            examples_by: self.examples_by.clone(),
            dots: self.dots,
            exact_cap: self.exact_cap,
            near_sample: self.near_sample,
            max_line_bytes: self.max_line_bytes,
            max_distinct: self.max_distinct,
            ..ReportParams::default()
        })
    }
}

/// Runs `main-score report`: reads the scored file with a progress bar,
/// writes the page (and the JSON).
pub fn report(a: ReportArgs) -> Result<()> {
    let params = a.params()?;
    let total = std::fs::metadata(&a.scored)
        .map_err(|e| Error::io(&a.scored, e))?
        .len();
    let bar = Progress::bytes(a.progress || std::io::stderr().is_terminal(), total);
    let data = report::report_file(&a.scored, &params, &mut |done, _| bar.set(done as usize));
    bar.finish();
    let data = data?;
    if let Some(path) = &a.json {
        std::fs::write(path, data.to_json()).map_err(|e| Error::io(path, e))?;
    }
    let html = report::render_html(&data);
    std::fs::write(&a.output, html).map_err(|e| Error::io(&a.output, e))?;
    eprintln!(
        "main-score: {} records of {}: report in {}",
        data.records,
        a.scored.display(),
        a.output.display()
    );
    if let Some(f) = &data.filter {
        eprintln!(
            "main-score: the filter keeps {} of {} ({:.1}%)",
            f.kept,
            f.of,
            100.0 * f.share
        );
    }
    for w in data.summary.iter().filter_map(|r| r.warning.as_ref()) {
        eprintln!("main-score: warning: {w}");
    }
    if a.report_peak_memory {
        eprintln!("{{\"peak_bytes\": {}}}", peak_bytes().unwrap_or(0));
    }
    Ok(())
}

/// This process's peak resident memory (VmHWM), where /proc has it.
fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
