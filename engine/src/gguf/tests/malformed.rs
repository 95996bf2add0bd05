//! Malformed GGUF files: every prefix, every corrupted byte, and each way a
//! header can lie about its counts, lengths, types and offsets gets an
//! error (never a panic or an allocation the file cannot back).

use super::*;

#[test]
fn every_prefix_is_an_error() {
    let bytes = small_file();
    assert!(Gguf::parse(&bytes).is_ok());
    for n in 0..bytes.len() {
        assert!(
            Gguf::parse(&bytes[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn every_single_byte_corruption_is_handled() {
    // No assertion on the result: corrupting a data byte yields a valid file.
    // This checks that no header byte can make the reader panic or hang.
    let bytes = small_file();
    for i in 0..bytes.len() {
        for v in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = Gguf::parse(&b);
        }
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGML");
    let e = parse_err(&bytes);
    assert!(
        e.contains("GGUF header") && e.contains("byte 0") && e.contains("GGML"),
        "{e}"
    );
}

#[test]
fn unsupported_versions() {
    let mut bytes = small_file();
    put_u32(&mut bytes, 4, 1);
    let e = Gguf::parse(&bytes).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(
        e.to_string().contains("version") && e.to_string().contains('1'),
        "{e}"
    );

    put_u32(&mut bytes, 4, 4);
    let e = Gguf::parse(&bytes).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("GGUF version: 4"), "{e}");

    put_u32(&mut bytes, 4, 3u32.swap_bytes());
    let e = parse_err(&bytes);
    assert!(e.contains("big-endian"), "{e}");
}

/// The 12-byte `GGUF garbage`: a damaged file (Format), not an
/// unsupported version, and so is any absurd version number.
#[test]
fn garbage_after_magic_is_a_format_error() {
    let e = Gguf::parse(b"GGUF garbage").unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    let mut bytes = small_file();
    bytes[4..8].copy_from_slice(b" gar");
    let e = Gguf::parse(&bytes).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(
        e.to_string().contains("1918986016") && e.to_string().contains("byte 4"),
        "{e}"
    );

    for cut in [4, 8, 16, 23] {
        let e = Gguf::parse(&small_file()[..cut]).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "cut at {cut}: {e}");
    }
}

#[test]
fn absurd_n_dims() {
    for n_dims in [0u32, 5, u32::MAX] {
        let mut bytes = small_file();
        let at = n_dims_at(&bytes, "b.weight");
        put_u32(&mut bytes, at, n_dims);
        let e = parse_err(&bytes);
        assert!(
            e.contains("'b.weight'") && e.contains(&format!("byte {at}")) && e.contains("n_dims"),
            "{e}"
        );
    }
}

#[test]
fn absurd_dimensions() {
    // b.weight is Q8_0 [32, 16]: dims at n_dims_at + 4 and + 12.
    let cases: [(usize, u64, &str); 4] = [
        (1, 1 << 50, "past the end"),
        (1, u64::MAX, "overflow"),
        (0, 1 << 40, "past the end"),
        (0, 33, "not a multiple of the Q8_0 block length 32"),
    ];
    for (dim, value, why) in cases {
        let mut bytes = small_file();
        let at = n_dims_at(&bytes, "b.weight") + 4 + 8 * dim;
        put_u64(&mut bytes, at, value);
        let e = parse_err(&bytes);
        assert!(
            e.contains("'b.weight'") && e.contains(why),
            "dims[{dim}] = {value}: {e}"
        );
    }
    // Q4_0 stores 18 bytes per 32 elements, so 3 * 2^31 x 2^32 elements fit
    // in a u64 byte size while the element count overflows.
    let mut bytes = small_file();
    let at = n_dims_at(&bytes, "b.weight") + 4;
    put_u64(&mut bytes, at, 3 << 31);
    put_u64(&mut bytes, at + 8, 1 << 32);
    put_u32(&mut bytes, at + 16, DType::Q4_0.ggml_id());
    let e = parse_err(&bytes);
    assert!(e.contains("overflow the element count"), "{e}");
}

#[test]
fn unknown_and_unsupported_tensor_types() {
    let cases = [
        (10u32, "Q2_K (id 10) in tensor 'b.weight'"),
        (999, "unknown (id 999) in tensor 'b.weight'"),
        (15, "Q8_K (id 15) in tensor 'b.weight'"),
    ];
    for (id, want) in cases {
        let mut bytes = small_file();
        let (type_at, _) = type_and_offset_at(&bytes, "b.weight", 2);
        put_u32(&mut bytes, type_at, id);
        let e = Gguf::parse(&bytes).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains(&format!("at byte {type_at}")), "{e}");
    }
}

#[test]
fn tensor_data_beyond_the_end() {
    let mut bytes = small_file();
    let (_, offset_at) = type_and_offset_at(&bytes, "b.weight", 2);
    put_u64(&mut bytes, offset_at, 1 << 20);
    let e = parse_err(&bytes);
    assert!(
        e.contains("'b.weight'") && e.contains("past the end of the file"),
        "{e}"
    );

    put_u64(&mut bytes, offset_at, u64::MAX - 31);
    let e = parse_err(&bytes);
    assert!(
        e.contains("'b.weight'") && e.contains("past the end of the file"),
        "{e}"
    );

    // One byte short: the last tensor ends exactly at the end of the file.
    let bytes = small_file();
    let e = parse_err(&bytes[..bytes.len() - 1]);
    assert!(e.contains("'b.weight'"), "{e}");
}

#[test]
fn misaligned_tensor_offset() {
    let mut bytes = small_file();
    let (_, offset_at) = type_and_offset_at(&bytes, "b.weight", 2);
    put_u64(&mut bytes, offset_at, 16);
    let e = parse_err(&bytes);
    assert!(
        e.contains("'b.weight'") && e.contains("not a multiple of the alignment 32"),
        "{e}"
    );
}

#[test]
fn string_length_bigger_than_the_file() {
    let mut bytes = small_file();
    let at = find(&bytes, b"general.architecture") + 20 + 4;
    assert_eq!(&bytes[at..at + 8], &5u64.to_le_bytes());
    put_u64(&mut bytes, at, 1 << 60);
    let e = parse_err(&bytes);
    assert!(
        e.contains("'general.architecture'")
            && e.contains(&format!("byte {at}"))
            && e.contains("string length"),
        "{e}"
    );

    // The key's own length.
    let mut bytes = small_file();
    put_u64(&mut bytes, 24, u64::MAX);
    let e = parse_err(&bytes);
    assert!(
        e.contains("metadata entry #0 key") && e.contains("byte 24"),
        "{e}"
    );
}

#[test]
fn array_count_bigger_than_the_file() {
    for (key, ty) in [
        ("tokenizer.ggml.tokens", 8u32),
        ("tokenizer.ggml.scores", 6),
    ] {
        let mut bytes = small_file();
        // key, array type (4), element type (4), count.
        let at = find(&bytes, key.as_bytes()) + key.len() + 8;
        assert_eq!(&bytes[at - 4..at], &ty.to_le_bytes());
        put_u64(&mut bytes, at, 1 << 60);
        let e = parse_err(&bytes);
        assert!(
            e.contains(&format!("'{key}'")) && e.contains("array count"),
            "{e}"
        );
        // Small enough to allocate, too big for the bytes that remain.
        let too_many = (bytes.len() - at) as u64;
        put_u64(&mut bytes, at, too_many);
        assert!(Gguf::parse(&bytes).is_err());
    }
}

#[test]
fn header_counts_bigger_than_the_file() {
    let mut bytes = small_file();
    put_u64(&mut bytes, 8, 1 << 60);
    assert!(parse_err(&bytes).contains("tensor count"));
    let mut bytes = small_file();
    put_u64(&mut bytes, 16, u64::MAX);
    assert!(parse_err(&bytes).contains("metadata count"));
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for (bad, why) in [(48u32, "not a power of two"), (0, "not a power of two")] {
        let mut w = GgufWriter::new();
        w.add(ALIGNMENT_KEY, 64u32).unwrap();
        w.add_tensor("t", DType::F32, &[16], pattern(64, 0))
            .unwrap();
        let mut bytes = w.to_bytes();
        let at = find(&bytes, ALIGNMENT_KEY.as_bytes()) + ALIGNMENT_KEY.len() + 4;
        put_u32(&mut bytes, at, bad);
        let e = parse_err(&bytes);
        assert!(
            e.contains(ALIGNMENT_KEY) && e.contains(why) && e.contains(&format!("byte {at}")),
            "{e}"
        );
    }
    let mut kv = raw_key(ALIGNMENT_KEY, value_type::STRING);
    kv.extend_from_slice(&2u64.to_le_bytes());
    kv.extend_from_slice(b"32");
    assert!(parse_err(&raw_file(1, &kv)).contains("non-negative integer"));
}

#[test]
fn duplicate_tensor_name() {
    let mut bytes = small_file();
    let at = n_dims_at(&bytes, "b.weight") - "b.weight".len();
    bytes[at] = b'a';
    let e = parse_err(&bytes);
    assert!(
        e.contains("'a.weight'") && e.contains("duplicate tensor name"),
        "{e}"
    );
}

#[test]
fn duplicate_key() {
    let mut w = GgufWriter::new();
    w.add("k", 1u8).unwrap();
    w.add("j", 2u8).unwrap();
    let mut bytes = w.to_bytes();
    let at = find(&bytes, &[1, 0, 0, 0, 0, 0, 0, 0, b'j']) + 8;
    bytes[at] = b'k';
    let e = parse_err(&bytes);
    assert!(e.contains("'k'") && e.contains("duplicate key"), "{e}");
}

/// `depth` arrays, each holding the next, the innermost holding one u32.
fn raw_nested(depth: usize) -> Vec<u8> {
    let mut kv = raw_key("nested", value_type::ARRAY);
    for _ in 1..depth {
        kv.extend_from_slice(&value_type::ARRAY.to_le_bytes());
        kv.extend_from_slice(&1u64.to_le_bytes());
    }
    kv.extend_from_slice(&value_type::U32.to_le_bytes());
    kv.extend_from_slice(&1u64.to_le_bytes());
    kv.extend_from_slice(&7u32.to_le_bytes());
    raw_file(1, &kv)
}

#[test]
fn nested_arrays_are_read() {
    // Arrays of arrays whose inner element types differ, which llama.cpp
    // refuses but the format and the python package allow.
    let mut kv = raw_key("nested", value_type::ARRAY);
    kv.extend_from_slice(&value_type::ARRAY.to_le_bytes());
    kv.extend_from_slice(&3u64.to_le_bytes());
    kv.extend_from_slice(&value_type::U32.to_le_bytes());
    kv.extend_from_slice(&2u64.to_le_bytes());
    kv.extend_from_slice(&1u32.to_le_bytes());
    kv.extend_from_slice(&2u32.to_le_bytes());
    kv.extend_from_slice(&value_type::STRING.to_le_bytes());
    kv.extend_from_slice(&1u64.to_le_bytes());
    kv.extend_from_slice(&1u64.to_le_bytes());
    kv.extend_from_slice(b"x");
    kv.extend_from_slice(&value_type::U8.to_le_bytes());
    kv.extend_from_slice(&0u64.to_le_bytes());
    let g = Gguf::parse(&raw_file(1, &kv)).unwrap();
    let expected = Value::Array(vec![
        vec![1u32, 2].into(),
        vec!["x"].into(),
        Value::Array(vec![]),
    ]);
    assert_eq!(g.get("nested"), Some(&expected));
    let e = g.get_as::<Vec<Vec<u32>>>("nested").unwrap_err().to_string();
    assert!(
        e.contains("array element 1: array element 0: expected an integer"),
        "{e}"
    );

    let g = Gguf::parse(&raw_nested(8)).unwrap();
    let mut v = g.get("nested").unwrap();
    for _ in 0..8 {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::U32(7));
    assert!(parse_err(&raw_nested(9)).contains("nested more than 8 deep"));
}

#[test]
fn bad_values() {
    let mut kv = raw_key("b", value_type::BOOL);
    kv.push(2);
    assert!(parse_err(&raw_file(1, &kv)).contains("bool byte is 2"));

    let mut kv = raw_key("ty", 13);
    kv.push(0);
    assert!(parse_err(&raw_file(1, &kv)).contains("unknown value type 13"));

    let mut kv = raw_key("arr", value_type::ARRAY);
    kv.extend_from_slice(&77u32.to_le_bytes());
    kv.extend_from_slice(&0u64.to_le_bytes());
    assert!(parse_err(&raw_file(1, &kv)).contains("unknown array element type 77"));

    let mut kv = raw_key("s", value_type::STRING);
    kv.extend_from_slice(&2u64.to_le_bytes());
    kv.extend_from_slice(&[0xc3, 0x28]);
    assert!(parse_err(&raw_file(1, &kv)).contains("UTF-8"));

    // Deep nesting is refused before it can exhaust the stack.
    let mut kv = raw_key("deep", value_type::ARRAY);
    for _ in 0..100_000 {
        kv.extend_from_slice(&value_type::ARRAY.to_le_bytes());
        kv.extend_from_slice(&1u64.to_le_bytes());
    }
    assert!(parse_err(&raw_file(1, &kv)).contains("nested more than 8"));
}

#[test]
fn data_section_past_the_end() {
    // A file that stops right after its tensor infos, without the padding.
    let mut w = GgufWriter::new();
    w.add_tensor("t", DType::F32, &[0], Vec::new()).unwrap();
    let bytes = w.to_bytes();
    let infos_end = n_dims_at(&bytes, "t") + 4 + 8 + 4 + 8;
    assert!(bytes.len() > infos_end);
    let e = parse_err(&bytes[..infos_end]);
    assert!(
        e.contains("GGUF tensor data") && e.contains("past the end"),
        "{e}"
    );
}
