//! Where scored records go: stdout, or a file that is its own checkpoint.
//!
//! A file is resumed after its last complete line: a trailing partial line
//! (a run killed mid-write) is cut off when it is opened. Each batch is
//! written with one write call, so a kill leaves at most one partial line;
//! a failed write (a full disk) is cut back to the last complete record at
//! once.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::summary::Summary;

use super::params::is_stdio;
use super::scored::read_scored;

pub(crate) enum Sink {
    Stdout(std::io::Stdout),
    File {
        file: File,
        path: PathBuf,
        /// Bytes of complete records: where a failed write is cut back to.
        len: u64,
    },
}

/// What an opened output already held.
pub(crate) struct Opened<T = usize> {
    pub sink: Sink,
    /// What the reader made of each complete record: for scores, its input
    /// line (`0`: a record without one).
    pub lines: Vec<T>,
    /// Bytes of a partial last line cut off (0 when there was none).
    pub dropped: u64,
}

impl Sink {
    /// Opens `path`, cutting a trailing partial line; the scores of the
    /// complete records already there go into `summary`.
    pub fn open(path: &Path, summary: &mut Summary) -> Result<Opened> {
        Sink::open_with(path, |line, line_no| {
            let s = read_scored(line, path, line_no)?;
            summary.add(|name| s.number(name));
            Ok(s.line().unwrap_or(0))
        })
    }

    /// Opens `path`, cutting a trailing partial line; `read(line, line_no)`
    /// checks each complete record already there (1-based `line_no`) and
    /// says what to keep of it.
    pub fn open_with<T>(
        path: &Path,
        mut read: impl FnMut(&[u8], usize) -> Result<T>,
    ) -> Result<Opened<T>> {
        if is_stdio(path) {
            return Ok(Opened {
                sink: Sink::Stdout(std::io::stdout()),
                lines: Vec::new(),
                dropped: 0,
            });
        }
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let (mut complete, mut lines) = (0u64, Vec::new());
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            lines.push(read(&line, lines.len() + 1)?);
            complete += n as u64;
        }
        drop(reader);
        let len = file.metadata().map_err(io)?.len();
        if len > complete {
            file.set_len(complete).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Opened {
            sink: Sink::File {
                file,
                path: path.to_path_buf(),
                len: complete,
            },
            lines,
            dropped: len.saturating_sub(complete),
        })
    }

    /// Appends one batch of complete records with one write.
    pub fn write_batch(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("stdout", e))
            }
            Sink::File { file, path, len } => match file.write_all(bytes) {
                Ok(()) => {
                    *len += bytes.len() as u64;
                    Ok(())
                }
                // A full disk (or a file-size limit) takes part of a batch:
                // cut back to the last complete record, so the file stays a
                // clean checkpoint for the next run.
                Err(e) => {
                    let cut = file
                        .set_len(*len)
                        .and_then(|()| file.seek(SeekFrom::Start(*len)));
                    let note = match cut {
                        Ok(_) => "; the records before this batch are intact: run the same command again to resume",
                        Err(_) => "; a partial record may remain, which the next run drops",
                    };
                    Err(Error::Input(format!(
                        "writing scores to {}: {e}{note}",
                        path.display()
                    )))
                }
            },
        }
    }
}
