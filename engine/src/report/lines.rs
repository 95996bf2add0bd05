//! Reading lines with a bound: a line longer than the limit is reported,
//! never held, so a 2 GB line costs no more memory than the limit.

use std::io::{self, BufRead};

/// One line of a [`BoundedLines`].
pub enum Line<'a> {
    /// The line's bytes, without its `\n`.
    Text(&'a [u8]),
    /// The line has more than the limit of bytes (reading stops here).
    TooLong {
        bytes_so_far: usize,
    },
    End,
}

pub struct BoundedLines<R> {
    reader: R,
    max_bytes: usize,
    buf: Vec<u8>,
    bytes_read: u64,
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(reader: R, max_bytes: usize) -> BoundedLines<R> {
        BoundedLines {
            reader,
            max_bytes,
            buf: Vec::new(),
            bytes_read: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub fn next_line(&mut self) -> io::Result<Line<'_>> {
        self.buf.clear();
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(if self.buf.is_empty() {
                    Line::End
                } else {
                    Line::Text(&self.buf)
                });
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let body = if done { take - 1 } else { take };
            if self.buf.len() + body > self.max_bytes {
                let so_far = self.buf.len() + body;
                self.reader.consume(take);
                self.bytes_read += take as u64;
                return Ok(Line::TooLong {
                    bytes_so_far: so_far,
                });
            }
            self.buf.extend_from_slice(&chunk[..body]);
            self.reader.consume(take);
            self.bytes_read += take as u64;
            if done {
                return Ok(Line::Text(&self.buf));
            }
        }
    }
}

/// The JSON text of a line (`line_no` 1-based): `None` for a blank one;
/// a byte-order mark on the first line and trailing whitespace (`\r`) left
/// out; an error for bytes that are not UTF-8.
pub fn record_text(buf: &[u8], line_no: usize) -> Result<Option<&str>, String> {
    let text = std::str::from_utf8(buf).map_err(|e| {
        format!(
            "not valid UTF-8 (bad byte at column {})",
            e.valid_up_to() + 1
        )
    })?;
    let text = if line_no == 1 {
        text.trim_start_matches('\u{feff}')
    } else {
        text
    };
    let text = text.trim_end();
    Ok((!text.trim_start().is_empty()).then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_limit_are_reported_not_held() {
        let data = b"ab\ncdefgh\nij".to_vec();
        let mut r = BoundedLines::new(io::BufReader::with_capacity(2, &data[..]), 4);
        assert!(matches!(r.next_line().unwrap(), Line::Text(b"ab")));
        assert!(matches!(
            r.next_line().unwrap(),
            Line::TooLong { bytes_so_far: 5.. }
        ));
        let mut r = BoundedLines::new(&data[..], 6);
        assert!(matches!(r.next_line().unwrap(), Line::Text(b"ab")));
        assert!(matches!(r.next_line().unwrap(), Line::Text(b"cdefgh")));
        assert!(matches!(r.next_line().unwrap(), Line::Text(b"ij")));
        assert!(matches!(r.next_line().unwrap(), Line::End));
        assert_eq!(r.bytes_read(), data.len() as u64);
    }
}
