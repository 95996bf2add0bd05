//! The filters: `keep_top` (the best fraction by a ranking) and
//! `min_alignment` (the mismatch filter). They need every score first, so
//! the job streams records to OUTPUT.scored.jsonl (resumable like any
//! output) and then writes the kept ones, in input order, to OUTPUT through
//! a temporary file and a rename.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::atomic_write::write_atomic_with;
use crate::error::{Error, Result};
use crate::rank::{self, RankBy};

use super::provenance::{Filter, Provenance};
use super::scored::read_scored;

/// What [`filter`] calls with each scored line, its ranking key and its alignment.
type LineVisitor<'a> = dyn FnMut(&[u8], f64, f64) -> Result<()> + 'a;

/// Writes the records of `scored` that pass the filters to `output`
/// (atomically), in input order, and `output`'s provenance: the scored
/// file's, with the filter added. Returns how many were kept.
pub fn filter(scored: &Path, output: &Path, rank_by: &RankBy, mut rules: Filter) -> Result<usize> {
    let io = |p: &Path, e| Error::io(p, e);
    // Calls `f` with each record's line, its ranking key (better is higher;
    // a missing or NaN value ranks below all) and its alignment (NaN passes
    // no threshold).
    let each_line = |f: &mut LineVisitor| -> Result<()> {
        let mut reader = BufReader::new(File::open(scored).map_err(|e| io(scored, e))?);
        let mut line = Vec::new();
        for line_no in 1.. {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io(scored, e))?
                == 0
            {
                return Ok(());
            }
            let s = read_scored(&line, scored, line_no)?;
            let alignment = s.number("alignment").unwrap_or(f64::NAN);
            f(&line, rank_by.key(s.number(rank_by.field)), alignment)?;
        }
        Ok(())
    };
    // keep_top: exactly round(fraction x count) records, ties in input order.
    let top = match rules.keep_top {
        Some(fraction) => {
            let mut keys = Vec::new();
            each_line(&mut |_, key, _| {
                keys.push(key);
                Ok(())
            })?;
            Some(rank::keep_top(&keys, fraction))
        }
        None => None,
    };
    let (mut kept, mut index) = (0usize, 0usize);
    write_atomic_with(output, |out| {
        each_line(&mut |line, _, alignment| {
            let keep = rules.min_alignment.is_none_or(|m| alignment >= m)
                && top
                    .as_ref()
                    .is_none_or(|t| t.get(index).copied().unwrap_or(false));
            index += 1;
            if keep {
                kept += 1;
                out.write_all(line).map_err(|e| io(output, e))?;
            }
            Ok(())
        })
    })?;

    let mut made_of = Provenance::read(scored)?;
    rules.kept = kept;
    rules.of = index;
    made_of.filter = Some(rules);
    made_of.write(output)?;
    Ok(kept)
}
