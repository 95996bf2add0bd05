//! Code point classes and the GPT-2 byte <-> character map.
//!
//! llama.cpp's hand-written pre-tokenizers ask three questions of a code
//! point: is it a letter (`\p{L}`), a number (`\p{N}`), white space (`\s`);
//! Qwen 3.5 adds marks (`\p{M}`). `char` answers the last two exactly
//! (`is_numeric` is Nd|Nl|No, `is_whitespace` is the White_Space property,
//! the same 25 code points as llama.cpp's table). Letters and marks have no
//! `std` test, so their sets are read once from the regex engine's Unicode
//! tables into bitsets: no generated table to keep in sync, and it works on
//! wasm.

use std::sync::OnceLock;

use tokenizers::utils::SysRegex;

const N_CODEPOINTS: usize = 0x11_0000;

struct Bitset(Vec<u64>);

impl Bitset {
    fn contains(&self, c: char) -> bool {
        let i = c as usize;
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }
}

/// All code points matched by `class` (e.g. `\p{L}`), found by running the
/// regex over a string of every scalar value.
fn bitset_of(class: &str) -> Bitset {
    let all: String = (0..N_CODEPOINTS as u32)
        .filter_map(char::from_u32)
        .collect();
    let re = SysRegex::new(&format!("{class}+")).expect("a Unicode class regex compiles");
    let mut bits = vec![0u64; N_CODEPOINTS / 64];
    for (start, end) in re.find_iter(&all) {
        for c in all[start..end].chars() {
            let i = c as usize;
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    Bitset(bits)
}

fn letters() -> &'static Bitset {
    static SET: OnceLock<Bitset> = OnceLock::new();
    SET.get_or_init(|| bitset_of(r"\p{L}"))
}

fn marks() -> &'static Bitset {
    static SET: OnceLock<Bitset> = OnceLock::new();
    SET.get_or_init(|| bitset_of(r"\p{M}"))
}

pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    letters().contains(c)
}

pub(crate) fn is_mark(c: char) -> bool {
    !c.is_ascii() && marks().contains(c)
}

pub(crate) fn is_number(c: char) -> bool {
    c.is_numeric()
}

pub(crate) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// GPT-2's reversible map from bytes to printable characters: printable
/// Latin-1 bytes stand for themselves, the other 68 are shifted to U+0100..
pub(crate) fn byte_to_char(b: u8) -> char {
    byte_tables().0[b as usize]
}

/// The inverse of [`byte_to_char`]; `None` for characters outside the map.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let i = c as usize;
    if i < 324 {
        let b = byte_tables().1[i];
        (b >= 0).then_some(b as u8)
    } else {
        None
    }
}

fn byte_tables() -> &'static ([char; 256], [i16; 324]) {
    static TABLES: OnceLock<([char; 256], [i16; 324])> = OnceLock::new();
    TABLES.get_or_init(|| {
        let printable =
            |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut to_char = ['\0'; 256];
        let mut to_byte = [-1i16; 324];
        let mut shifted = 0u32;
        for b in 0..256u32 {
            let c = if printable(b) {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            to_char[b as usize] = char::from_u32(c).expect("below U+0144");
            to_byte[c as usize] = b as i16;
        }
        (to_char, to_byte)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2s() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn classes() {
        assert!(is_letter('é') && is_letter('я') && is_letter('中') && !is_letter('1'));
        assert!(!is_letter('\u{301}') && is_mark('\u{301}'));
        assert!(is_number('٣') && is_number('½') && !is_number('a'));
        assert!(is_whitespace('\u{3000}') && is_whitespace('\u{85}') && !is_whitespace('\u{200B}'));
    }
}
