//! Shards: the record on 0-based input line L belongs to shard L % N, so the
//! outputs of all N shards hold every record exactly once, each in input
//! order, and no shard needs to know where another stopped.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Shard `index` of `count` (`--shard I/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    /// The whole input: shard 0 of 1.
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Shard `index` of `count`; the index must be below the count.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if index >= count {
            return Err(Error::invalid_argument(
                "--shard",
                format!("shard index {index} must be below the shard count {count}"),
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the record on 0-based input line `line_index` is this shard's.
    pub fn holds(self, line_index: usize) -> bool {
        line_index % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`, e.g. `0/4`.
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not I/N, e.g. 0/4"))?;
        let index: usize = i
            .parse()
            .map_err(|_| format!("shard index '{i}' is not a number"))?;
        let count: usize = n
            .parse()
            .map_err(|_| format!("shard count '{n}' is not a number"))?;
        if index >= count {
            return Err(format!(
                "shard index {index} must be below the shard count {count}"
            ));
        }
        Ok(Shard { index, count })
    }
}

/// Lines of the file at `path` in `shard`: the progress total. Read in
/// fixed chunks, so a large input costs no memory.
pub fn count_in_shard(path: &Path, shard: Shard) -> Result<usize> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0usize, b'\n');
    loop {
        let n = file.read(&mut chunk).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count();
        last = chunk[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok((lines + shard.count - 1 - shard.index) / shard.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_show() {
        let s: Shard = "1/4".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 4 });
        assert_eq!(s.to_string(), "1/4");
        assert!(s.holds(5) && !s.holds(4));
        assert!("4/4".parse::<Shard>().unwrap_err().contains("below"));
        assert!("x".parse::<Shard>().unwrap_err().contains("I/N"));
        assert!(Shard::new(2, 2).is_err());
    }
}
