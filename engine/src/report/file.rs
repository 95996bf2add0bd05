//! A report of a scored file on disk, with its provenance (feature
//! `std-fs`).

use super::{lines, ReportBuilder, ReportData, ReportParams};
use crate::error::{Error, Result};

/// The report of the scored JSONL file at `path` (with the provenance file
/// beside it, or beside the output it was the scored stage of), reading
/// it line by line with lines capped at `params.max_line_bytes`;
/// `progress(bytes_read, bytes_total)` is called now and then.
pub fn report_file(
    path: &std::path::Path,
    params: &ReportParams,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReportData> {
    use std::io::BufReader;

    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let total = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut builder = ReportBuilder::new(params, &name)?;
    if let Some(p) = provenance_beside(path) {
        builder.set_provenance(p);
    }
    let mut reader = lines::BoundedLines::new(
        BufReader::with_capacity(1 << 20, file),
        params.max_line_bytes,
    );
    let mut line_no = 0;
    let mut last_report = 0u64;
    loop {
        line_no += 1;
        match reader.next_line().map_err(|e| Error::io(path, e))? {
            lines::Line::End => break,
            lines::Line::TooLong { bytes_so_far } => {
                return Err(Error::record(
                    name,
                    line_no,
                    format!(
                        "the line is longer than the limit of {} bytes (max_line_bytes; {bytes_so_far} bytes read before stopping)",
                        params.max_line_bytes
                    ),
                ))
            }
            lines::Line::Text(bytes) => builder.add_line(bytes, line_no)?,
        }
        if reader.bytes_read() - last_report >= 1 << 20 {
            last_report = reader.bytes_read();
            progress(last_report, total);
        }
    }
    progress(reader.bytes_read(), total);
    Ok(builder.finish())
}

/// The provenance of a scored file: `PATH.provenance.json`; for the
/// scored stage of a filtered output (`OUT.scored.jsonl`), OUT's
/// provenance, which records the filter, when it exists.
pub fn provenance_beside(path: &std::path::Path) -> Option<serde_json::Value> {
    let read = |p: std::path::PathBuf| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    };
    let name = path.to_string_lossy();
    if let Some(output) = name.strip_suffix(".scored.jsonl") {
        if let Some(p) = read(crate::job::provenance_path(std::path::Path::new(output))) {
            return Some(p);
        }
    }
    read(crate::job::provenance_path(path))
}
