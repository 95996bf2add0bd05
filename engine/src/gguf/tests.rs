use std::path::{Path, PathBuf};

use super::*;
use crate::quant::DType;

/// Deterministic filler so round trips compare real content, not zeros.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn n_bytes(dtype: DType, dims: &[usize]) -> usize {
    dtype.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<usize>()
}

/// A small valid file: two tensors, the last one a multiple of 32 bytes long,
/// so the file ends exactly where its data does and every proper prefix is
/// truncated somewhere that matters.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add("llama.block_count", 2u32).unwrap();
    w.add("tokenizer.ggml.tokens", vec!["a", "bc", ""]).unwrap();
    w.add("tokenizer.ggml.scores", vec![0.5f32, -1.0, 2.0])
        .unwrap();
    w.add("flag", true).unwrap();
    w.add_tensor("a.weight", DType::F32, &[8, 2], pattern(64, 1))
        .unwrap();
    w.add_tensor("b.weight", DType::Q8_0, &[32, 16], pattern(34 * 16, 2))
        .unwrap();
    w.to_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

/// Byte offset of the `u32 n_dims` field of a tensor info.
fn n_dims_at(bytes: &[u8], name: &str) -> usize {
    let mut prefix = (name.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(name.as_bytes());
    find(bytes, &prefix) + prefix.len()
}

/// Byte offsets of (type, offset) fields of a tensor info with `n_dims` dims.
fn type_and_offset_at(bytes: &[u8], name: &str, n_dims: usize) -> (usize, usize) {
    let type_at = n_dims_at(bytes, name) + 4 + 8 * n_dims;
    (type_at, type_at + 4)
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn parse_err(bytes: &[u8]) -> String {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("parsed a malformed file"),
        Err(e) => e.to_string(),
    }
}

/// Builds a file by hand (header + one metadata entry given as raw bytes),
/// for shapes the writer refuses to produce.
fn raw_file(kv_count: u64, kvs: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&kv_count.to_le_bytes());
    b.extend_from_slice(kvs);
    b.resize(b.len().next_multiple_of(32), 0);
    b
}

fn raw_key(key: &str, ty: u32) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b
}

// ---- round trips ----

fn every_value_type() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.u64", Value::U64(u64::MAX - 1)),
        ("t.i64", Value::I64(i64::MIN + 1)),
        ("t.f32", Value::F32(-1.5e-6)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.bool_true", Value::Bool(true)),
        ("t.bool_false", Value::Bool(false)),
        ("t.string", Value::String("héllo, 世界 \n\0 end".into())),
        ("t.empty_string", Value::String(String::new())),
        ("t.arr_u8", vec![0u8, 1, 255].into()),
        ("t.arr_i8", vec![-128i8, 0, 127].into()),
        ("t.arr_u16", vec![1u16, 65535].into()),
        ("t.arr_i16", vec![-1i16, 32767].into()),
        ("t.arr_u32", vec![7u32, 8, 9].into()),
        ("t.arr_i32", vec![-7i32, 8, -9].into()),
        ("t.arr_u64", vec![1u64 << 40].into()),
        ("t.arr_i64", vec![-(1i64 << 40), 3].into()),
        ("t.arr_f32", vec![0.25f32, -3.0, f32::MAX].into()),
        ("t.arr_f64", vec![1e300f64, -0.0].into()),
        ("t.arr_bool", vec![true, false, true].into()),
        ("t.arr_str", vec!["x", "", "<|im_end|>"].into()),
        ("t.arr_empty", Value::Array(vec![])),
    ]
}

/// Every weight type we compute with, with 1 to 4 dims.
fn some_tensors() -> Vec<(&'static str, DType, Vec<usize>)> {
    vec![
        ("f32.vec", DType::F32, vec![5]),
        ("f16.mat", DType::F16, vec![3, 7]),
        ("bf16.3d", DType::BF16, vec![2, 3, 4]),
        ("q4_0.mat", DType::Q4_0, vec![64, 3]),
        ("q4_1.mat", DType::Q4_1, vec![32, 5]),
        ("q8_0.4d", DType::Q8_0, vec![32, 2, 1, 3]),
        ("q4_k.mat", DType::Q4_K, vec![256, 2]),
        ("q5_k.mat", DType::Q5_K, vec![512, 1]),
        ("q6_k.mat", DType::Q6_K, vec![256, 3]),
        ("empty", DType::F32, vec![0, 4]),
    ]
}

/// Writes every value type and tensor type, reads them back, returns the file.
fn round_trip(alignment: Option<u32>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    if let Some(a) = alignment {
        w.add(ALIGNMENT_KEY, a).unwrap();
    }
    for (k, v) in every_value_type() {
        w.add(k, v).unwrap();
    }
    let datas: Vec<Vec<u8>> = some_tensors()
        .iter()
        .enumerate()
        .map(|(i, (_, t, dims))| pattern(n_bytes(*t, dims), i as u8))
        .collect();
    for ((name, dtype, dims), data) in some_tensors().into_iter().zip(&datas) {
        w.add_tensor(name, dtype, &dims, data.as_slice()).unwrap();
    }
    let bytes = w.to_bytes();
    let expect_alignment = alignment.map_or(32, |a| a as usize);
    assert_eq!(bytes.len() % expect_alignment, 0);

    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, expect_alignment);
    assert_eq!(g.data_offset % expect_alignment, 0);
    let mut expected: Vec<(String, Value)> = Vec::new();
    if let Some(a) = alignment {
        expected.push((ALIGNMENT_KEY.to_string(), Value::U32(a)));
    }
    expected.extend(
        every_value_type()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    assert_eq!(g.metadata, expected);

    assert_eq!(g.tensors.len(), datas.len());
    for ((t, (name, dtype, dims)), data) in g.tensors.iter().zip(some_tensors()).zip(&datas) {
        assert_eq!(
            (t.name.as_str(), t.dtype, &t.dims, t.shard),
            (name, dtype, &dims, 0)
        );
        assert_eq!(t.n_bytes, data.len(), "{name}");
        assert_eq!((t.offset - g.data_offset) % expect_alignment, 0, "{name}");
        assert_eq!(
            &bytes[t.offset..t.offset + t.n_bytes],
            data.as_slice(),
            "{name}"
        );
    }
    bytes
}

#[test]
fn round_trip_every_value_type_and_tensor_type() {
    let bytes = round_trip(None);
    // tests/reference/check_gguf_writer.py sets this to read the same file
    // with the python `gguf` package.
    if let Some(path) = std::env::var_os("MAIN_GGUF_SAMPLE_OUT") {
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn round_trip_with_custom_alignment() {
    round_trip(Some(64));
    round_trip(Some(1));
}

#[test]
fn writer_output_is_byte_exact() {
    // Pins the layout llama.cpp and the python reader expect: header, kv,
    // tensor info, zero padding to 32, data, zero padding to 32.
    let mut w = GgufWriter::new();
    w.add("k", 7u8).unwrap();
    w.add_tensor("t", DType::F32, &[1], vec![1, 2, 3, 4])
        .unwrap();
    let mut expected = b"GGUF".to_vec();
    expected.extend_from_slice(&3u32.to_le_bytes());
    expected.extend_from_slice(&1u64.to_le_bytes()); // tensors
    expected.extend_from_slice(&1u64.to_le_bytes()); // kvs
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(b"k");
    expected.extend_from_slice(&0u32.to_le_bytes()); // u8
    expected.push(7);
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(b"t");
    expected.extend_from_slice(&1u32.to_le_bytes()); // n_dims
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(&0u32.to_le_bytes()); // F32
    expected.extend_from_slice(&0u64.to_le_bytes()); // offset
    expected.resize(96, 0);
    expected.extend_from_slice(&[1, 2, 3, 4]);
    expected.resize(128, 0);
    assert_eq!(w.to_bytes(), expected);
    let mut sink = Vec::new();
    assert_eq!(w.write_to(&mut sink).unwrap(), 128);
}

#[test]
fn version_2_is_read() {
    let mut bytes = small_file();
    put_u32(&mut bytes, 4, 2);
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.tensors.len(), 2);
}

#[test]
fn file_without_tensors() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    let bytes = w.to_bytes();
    let g = Gguf::parse(&bytes).unwrap();
    assert!(g.tensors.is_empty());
    assert_eq!(g.data_offset, bytes.len());
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    // llama.cpp's vocabulary-only files stop right after the metadata.
    let unpadded = &bytes[..find(&bytes, b"llama") + 5];
    let g = Gguf::parse(unpadded).unwrap();
    assert_eq!(g.data_offset, unpadded.len());
    assert!(Gguf::parse(&unpadded[..unpadded.len() - 1]).is_err());
}

// ---- accessors ----

#[test]
fn typed_accessors() {
    let mut w = GgufWriter::new();
    w.add("u8", 5u8).unwrap();
    w.add("i64", 1i64 << 40).unwrap();
    w.add("neg", -1i32).unwrap();
    w.add("f32", 0.5f32).unwrap();
    w.add("f64", 0.25f64).unwrap();
    w.add("b", true).unwrap();
    w.add("s", "text").unwrap();
    w.add("strs", vec!["a", "b"]).unwrap();
    w.add("f32s", vec![1.0f32, 2.0]).unwrap();
    w.add("f64s", vec![1.5f64]).unwrap();
    w.add("i32s", vec![1i32, -2]).unwrap();
    w.add("u8s", vec![3u8, 4]).unwrap();
    w.add("u32s_big", vec![1u32, u32::MAX]).unwrap();
    w.add_tensor("w", DType::F32, &[2], pattern(8, 0)).unwrap();
    let bytes = w.to_bytes();
    let g = Gguf::parse(&bytes).unwrap();

    assert_eq!(g.get_u32("u8").unwrap(), 5);
    assert_eq!(g.get_u64("u8").unwrap(), 5);
    assert_eq!(g.get_usize("u8").unwrap(), 5);
    assert_eq!(g.get_u64("i64").unwrap(), 1 << 40);
    assert_eq!(g.get_i64("neg").unwrap(), -1);
    assert_eq!(g.get_f32("f32").unwrap(), 0.5);
    assert_eq!(g.get_f32("f64").unwrap(), 0.25);
    assert!(g.get_bool("b").unwrap());
    assert_eq!(g.get_str("s").unwrap(), "text");
    assert_eq!(g.get_str_array("strs").unwrap(), ["a", "b"]);
    assert_eq!(g.get_f32_array("f32s").unwrap(), [1.0, 2.0]);
    assert_eq!(g.get_f32_array("f64s").unwrap(), [1.5]);
    assert_eq!(g.get_i32_array("i32s").unwrap(), [1, -2]);
    assert_eq!(g.get_i32_array("u8s").unwrap(), [3, 4]);
    assert_eq!(g.get_array("strs").unwrap().len(), 2);
    assert_eq!(g.get_opt::<u32>("u8").unwrap(), Some(5));
    assert_eq!(g.get_opt::<u32>("absent").unwrap(), None);

    let t = g.tensor("w").unwrap();
    assert_eq!(
        (t.dtype, t.dims.as_slice(), t.n_bytes),
        (DType::F32, &[2][..], 8)
    );
    assert_eq!(&bytes[t.offset..t.offset + 8], pattern(8, 0).as_slice());
    assert!(g.tensor("absent").is_none());

    let missing = g.get_u32("absent").unwrap_err().to_string();
    assert!(
        missing.contains("'absent'") && missing.contains("missing"),
        "{missing}"
    );
    let wrong = g.get_u32("s").unwrap_err().to_string();
    assert!(
        wrong.contains("'s'") && wrong.contains("found string"),
        "{wrong}"
    );
    assert!(!wrong.contains("missing"), "{wrong}");
    let range = g.get_u32("neg").unwrap_err().to_string();
    assert!(
        range.contains("-1") && range.contains("does not fit"),
        "{range}"
    );
    let range = g.get_u32("i64").unwrap_err().to_string();
    assert!(range.contains("does not fit in u32"), "{range}");
    let elem = g.get_i32_array("u32s_big").unwrap_err().to_string();
    assert!(
        elem.contains("'u32s_big'") && elem.contains("element 1"),
        "{elem}"
    );
    let elem = g.get_str_array("f32s").unwrap_err().to_string();
    assert!(
        elem.contains("element 0") && elem.contains("expected string"),
        "{elem}"
    );
    let not_array = g.get_str_array("s").unwrap_err().to_string();
    assert!(not_array.contains("expected array"), "{not_array}");
    assert!(g.get_opt::<bool>("s").is_err());
    assert!(g.get_f32("u8").is_err());
    assert!(g.get_bool("u8").is_err());
}

#[test]
fn value_helpers() {
    assert_eq!(Value::I8(-1).as_u32(), None);
    assert_eq!(Value::I8(-1).as_i32(), Some(-1));
    assert_eq!(Value::U64(u64::MAX).as_i64(), None);
    assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
    assert_eq!(Value::U16(9).as_usize(), Some(9));
    assert_eq!(Value::F32(1.0).as_u32(), None);
    assert_eq!(Value::F32(1.5).as_f64(), Some(1.5));
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::U8(1).as_bool(), None);
    assert_eq!(Value::from("s").as_str(), Some("s"));
    assert_eq!(Value::from(vec![1u8]).as_array(), Some(&[Value::U8(1)][..]));
    assert_eq!(Value::from(vec!["a"]).type_name(), "array of string");
    assert_eq!(Value::Array(vec![]).type_name(), "empty array");
}

// ---- writer validation ----

#[test]
fn writer_rejects_what_readers_would_not_read() {
    let mut w = GgufWriter::new();
    w.add("k", 1u32).unwrap();
    assert!(w.add("k", 2u32).unwrap_err().to_string().contains("'k'"));
    assert!(w.add(ALIGNMENT_KEY, 48u32).is_err());
    assert!(
        w.add(ALIGNMENT_KEY, 64u64).is_err(),
        "llama.cpp reads it as u32"
    );
    let mixed = Value::Array(vec![Value::U8(1), Value::I8(1)]);
    assert!(w
        .add("mixed", mixed)
        .unwrap_err()
        .to_string()
        .contains("element 1"));
    let nested = Value::Array(vec![vec![1u8].into()]);
    let e = w.add("nested", nested).unwrap_err().to_string();
    assert!(e.contains("'nested'") && e.contains("llama.cpp"), "{e}");
    assert_eq!(w.alignment(), 32);

    let data = pattern(16, 0);
    w.add_tensor("t", DType::F32, &[4], data.as_slice())
        .unwrap();
    let e = w.add_tensor("t", DType::F32, &[4], data.as_slice());
    assert!(e.unwrap_err().to_string().contains("added twice"));
    let e = w.add_tensor("u", DType::F32, &[5], data.as_slice());
    assert!(e.unwrap_err().to_string().contains("20 bytes but 16"));
    assert!(w
        .add_tensor("u", DType::Q8_0, &[16], data.as_slice())
        .is_err());
    assert!(w.add_tensor("u", DType::F32, &[], data.as_slice()).is_err());
    assert!(w
        .add_tensor("u", DType::F32, &[1, 1, 1, 1, 4], data.as_slice())
        .is_err());
    assert!(w
        .add_tensor("x".repeat(64), DType::F32, &[4], data.as_slice())
        .is_err());
    assert!(w
        .add_tensor("u", DType::Q8_K, &[256], vec![0u8; 292])
        .is_err());
    // The rejected calls left the writer unchanged.
    let g = Gguf::parse(&w.to_bytes()).unwrap();
    assert_eq!(g.metadata.len(), 1);
    assert_eq!(g.tensors.len(), 1);
}

// ---- malformed files: tests/malformed.rs ----

mod malformed;

// ---- real files ----

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MAIN_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(name);
    assert!(
        path.exists(),
        "fixture {} is missing: run scripts/fetch-fixtures (or set MAIN_FIXTURES to the fixtures directory)",
        path.display()
    );
    path
}

#[test]
fn real_model_file() {
    let path = fixture("SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_usize("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(g.get_str_array("general.languages").unwrap(), ["en"]);
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        &tokens[..3],
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    );
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );

    // Offsets as the python gguf package reports them.
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dtype, DType::Q8_0);
    assert_eq!(embd.dims, [576, 49152]);
    assert_eq!((embd.offset, embd.n_bytes), (1785664, 30081024));
    assert_eq!(g.data_offset, 1785664);
    let last = g.tensors.last().unwrap();
    assert_eq!(last.name, "output_norm.weight");
    assert_eq!(last.offset + last.n_bytes, bytes.len());
    let count = |t: DType| g.tensors.iter().filter(|x| x.dtype == t).count();
    assert_eq!(
        (count(DType::Q4_1), count(DType::F32), count(DType::Q8_0)),
        (210, 61, 1)
    );
}

#[test]
fn llama_cpp_vocab_files() {
    // Vocabulary-only files from llama.cpp's test suite: many tokenizer
    // kinds, no tensors.
    let dir = fixture("llama-vocab");
    let mut n_files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gguf") {
            let bytes = std::fs::read(&path).unwrap();
            let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
            assert!(!tokens.is_empty(), "{}", path.display());
            n_files += 1;
        }
    }
    assert!(
        n_files >= 10,
        "only {n_files} vocab files in {}",
        dir.display()
    );
}
