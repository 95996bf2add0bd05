//! Provenance: what a scored output was made from.
//!
//! Resuming must never mix runs, so an output carries its provenance:
//! OUTPUT.provenance.json beside it names the input, the model files and
//! every option that changes a score, each file by length and BLAKE3 hash,
//! and each record's "alignment" holds its 1-based input "line". A resume
//! whose input, models or options differ, or whose records do not sit on
//! the lines this input gives them, is refused with what differs and how to
//! start afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};
use crate::matmul::Precision;
use crate::pairs::Format;
use crate::rank::RankBy;

use super::params::{is_stdio, JobParams};

/// Bumped when the records or the provenance file change meaning. 2:
/// `messages` records are conversations, every turn scored (with the system
/// message), so an output begun before must not be continued.
const PROVENANCE_VERSION: u32 = 2;

/// `OUTPUT.provenance.json`: what OUTPUT was made from.
pub fn provenance_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".provenance.json");
    PathBuf::from(name)
}

/// The advice every refused resume ends with.
pub(crate) fn start_afresh(output: &Path) -> String {
    format!(
        "to start afresh, remove {} and {} (or choose another --output)",
        output.display(),
        provenance_path(output).display()
    )
}

/// Record `record` of `output` was written for input line `its_line` (0:
/// unknown), where this input's next eligible record is on `line`.
pub(crate) fn record_mismatch(
    output: &Path,
    record: usize,
    its_line: usize,
    input_name: &str,
    line: usize,
) -> Error {
    let was = match its_line {
        0 => "has no input line (written by an older main-score)".to_string(),
        n => format!("is for input line {n}"),
    };
    Error::invalid_argument(
        "--output",
        format!(
            "record {record} of {} {was}, but the next record of {input_name} to resume after is on line {line}: the output does not match this input, shard and format; {}",
            output.display(),
            start_afresh(output)
        ),
    )
}

/// A file by content: two files are the same input when length and hash
/// agree, wherever they lie (data sets move between machines).
#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct FileId {
    /// Where it was read (shown in messages; not compared).
    path: String,
    bytes: u64,
    blake3: String,
}

impl FileId {
    fn of(path: &Path) -> Result<FileId> {
        let io = |e| Error::io(path, e);
        let mut hasher = blake3::Hasher::new();
        let file = File::open(path).map_err(io)?;
        hasher.update_reader(file).map_err(io)?;
        Ok(FileId {
            path: path.display().to_string(),
            bytes: std::fs::metadata(path).map_err(io)?.len(),
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }

    fn same_content(&self, other: &FileId) -> bool {
        self.bytes == other.bytes && self.blake3 == other.blake3
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} bytes, BLAKE3 {}...)",
            self.path,
            self.bytes,
            &self.blake3[..self.blake3.len().min(12)]
        )
    }
}

/// A model's files: the GGUF file, or every JSON and safetensors file of a
/// Hugging Face folder (what the loader may read), by name.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct ModelId {
    path: String,
    files: Vec<FileId>,
}

impl ModelId {
    fn of(path: &Path) -> Result<ModelId> {
        let mut files = Vec::new();
        if path.is_dir() {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
                let entry = entry.map_err(|e| Error::io(path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") || name.ends_with(".safetensors") {
                    names.push(name);
                }
            }
            names.sort();
            for name in names {
                let mut id = FileId::of(&path.join(&name))?;
                id.path = name;
                files.push(id);
            }
        } else {
            let mut id = FileId::of(path)?;
            id.path = path
                .file_name()
                .map_or(id.path, |n| n.to_string_lossy().into_owned());
            files.push(id);
        }
        Ok(ModelId {
            path: path.display().to_string(),
            files,
        })
    }

    fn same_content(&self, other: &ModelId) -> bool {
        self.files.len() == other.files.len()
            && self
                .files
                .iter()
                .zip(&other.files)
                .all(|(a, b)| a.same_content(b))
    }

    fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(FileId::describe).collect();
        format!("{}: {}", self.path, files.join(", "))
    }
}

/// What a scored output was made from (OUTPUT.provenance.json).
#[derive(Serialize, Deserialize)]
pub(crate) struct Provenance {
    provenance_version: u32,
    /// The main-score that wrote it: another version may score differently.
    main_score: String,
    /// `None`: stdin, which cannot be identified.
    input: Option<FileId>,
    model: ModelId,
    reverse_model: Option<ModelId>,
    /// Every option that changes a record, as `main-score score` spells it.
    options: BTreeMap<String, String>,
    /// Only in a filtered output's provenance: how it was cut from the
    /// scored records (such an output is not resumable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

impl Provenance {
    /// The provenance of a run of `p` at `precision` (the resolved one).
    pub fn of_run(p: &JobParams, precision: Precision) -> Result<Provenance> {
        let format = match &p.format {
            Format::Fields {
                instruction,
                response,
                input,
            } => format!(
                "instruction={instruction} response={response} input={}",
                input.as_deref().unwrap_or("(none)")
            ),
            Format::Auto => "auto".to_string(),
        };
        let mut options = BTreeMap::new();
        let mut set = |k: &str, v: String| options.insert(k.to_string(), v);
        set("--precision", precision.name().to_string());
        set("--device", p.device.to_string());
        set("--max-tokens", p.max_tokens.to_string());
        set("--combine", p.combine.name().to_string());
        set("--negatives", p.negatives.to_string());
        set("--tokens", p.tokens.to_string());
        set("--shard", p.shard.to_string());
        set("format", format);
        // Without negatives a pair's score does not depend on its batch.
        if p.negatives > 0 {
            set("--batch", p.batch.to_string());
        }
        Ok(Provenance {
            provenance_version: PROVENANCE_VERSION,
            main_score: env!("CARGO_PKG_VERSION").to_string(),
            input: (!is_stdio(&p.input))
                .then(|| FileId::of(&p.input))
                .transpose()?,
            model: ModelId::of(&p.model)?,
            reverse_model: p.reverse_model.as_deref().map(ModelId::of).transpose()?,
            options,
            filter: None,
        })
    }

    /// The provenance file beside `output`.
    pub fn read(output: &Path) -> Result<Provenance> {
        let from = provenance_path(output);
        let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Input(format!(
                "{}: not a provenance file written by main-score ({e})",
                from.display()
            ))
        })
    }

    /// Writes this provenance beside `output`, atomically.
    pub fn write(&self, output: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Input(format!("serializing provenance: {e}")))?;
        write_atomic(&provenance_path(output), format!("{text}\n").as_bytes())
    }

    /// For a fresh output (no records yet), writes this run's provenance
    /// beside it; for one with `records`, checks that it was made by a run
    /// like this one.
    pub fn check_or_start(&self, output: &Path, records: usize) -> Result<()> {
        let path = provenance_path(output);
        if records == 0 {
            return self.write(output);
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid_argument(
                    "--output",
                    format!(
                        "{} holds {records} records but has no {}, so what made them is unknown (an older main-score, or another tool) and resuming could mix runs; {}",
                        output.display(),
                        path.display(),
                        start_afresh(output)
                    ),
                ))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let before: Provenance = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Input(format!(
                "{}: not a provenance file written by main-score ({e}); {}",
                path.display(),
                start_afresh(output)
            ))
        })?;
        if let Some(f) = &before.filter {
            return Err(Error::invalid_argument(
                "--output",
                format!(
                    "{} holds the {} records a filter kept of {} (its scored records are in {}): a filtered output cannot be resumed; to filter again, run with --keep-top or --min-alignment, or {}",
                    output.display(),
                    f.kept,
                    f.of,
                    f.scored,
                    start_afresh(output)
                ),
            ));
        }
        let differences = before.differences(self);
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::invalid_argument(
            "--output",
            format!(
                "{} holds {records} records of another run, and resuming would mix them with this one's: {}; {}",
                output.display(),
                differences.join("; "),
                start_afresh(output)
            ),
        ))
    }

    /// What differs between the run that wrote an output (`self`) and this one.
    fn differences(&self, now: &Provenance) -> Vec<String> {
        let mut d = Vec::new();
        if self.provenance_version != now.provenance_version || self.main_score != now.main_score {
            d.push(format!(
                "it was written by main-score {}, this is {}",
                self.main_score, now.main_score
            ));
        }
        match (&self.input, &now.input) {
            (Some(a), Some(b)) if a.same_content(b) => {}
            (None, _) => d.push(
                "its input was stdin, which cannot be checked against this run's".to_string(),
            ),
            (Some(_), None) => d.push(
                "this run reads stdin, which cannot be checked against its input".to_string(),
            ),
            (Some(a), Some(b)) => d.push(format!(
                "its input was {}, this run reads {}",
                a.describe(),
                b.describe()
            )),
        }
        if !self.model.same_content(&now.model) {
            d.push(format!(
                "its model was {}, this run uses {}",
                self.model.describe(),
                now.model.describe()
            ));
        }
        match (&self.reverse_model, &now.reverse_model) {
            (None, None) => {}
            (Some(a), Some(b)) if a.same_content(b) => {}
            (a, b) => {
                let describe = |m: &Option<ModelId>| {
                    m.as_ref()
                        .map_or("none (the forward model)".to_string(), ModelId::describe)
                };
                d.push(format!(
                    "its reverse model was {}, this run uses {}",
                    describe(a),
                    describe(b)
                ));
            }
        }
        let keys: BTreeSet<&String> = self.options.keys().chain(now.options.keys()).collect();
        for key in keys {
            let (a, b) = (self.options.get(key), now.options.get(key));
            if a != b {
                let show = |v: Option<&String>| v.map_or("(not set)", String::as_str).to_string();
                d.push(format!("{key} was {}, now {}", show(a), show(b)));
            }
        }
        d
    }
}

/// What a filtered output was cut from and by which rules: the `"filter"`
/// of its provenance file, so the file says which field ranked it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Filter {
    pub keep_top: Option<f64>,
    /// The field `keep_top` ranked by (a leading '-': the lowest were kept).
    pub rank_by: Option<String>,
    pub min_alignment: Option<f64>,
    /// The field `min_alignment` is a threshold of.
    pub min_alignment_field: Option<String>,
    /// The file of every scored record the filter read.
    pub scored: String,
    pub kept: usize,
    pub of: usize,
}

impl Filter {
    /// The rules of a job, before they ran (`kept` and `of` are 0).
    pub fn new(
        keep_top: Option<f64>,
        rank_by: &RankBy,
        min_alignment: Option<f64>,
        scored: &Path,
    ) -> Filter {
        Filter {
            keep_top,
            rank_by: keep_top.map(|_| rank_by.to_string()),
            min_alignment,
            min_alignment_field: min_alignment.map(|_| "alignment".to_string()),
            scored: scored.display().to_string(),
            kept: 0,
            of: 0,
        }
    }
}
