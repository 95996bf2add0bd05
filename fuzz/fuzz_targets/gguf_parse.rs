//! `Gguf::parse` on arbitrary bytes must return, never panic, hang or
//! allocate without bound; a file it accepts must be safe to use: every
//! tensor's bytes in range, every accessor total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use main_engine::gguf::{Gguf, Value};

fuzz_target!(|bytes: &[u8]| {
    let Ok(g) = Gguf::parse(bytes) else {
        return;
    };
    assert!(g.alignment.is_power_of_two());
    assert!(g.data_offset <= bytes.len());
    let mut checksum = 0u8;
    for t in &g.tensors {
        // Slicing panics if the reader let a tensor escape the file.
        let data = &bytes[t.offset..t.offset + t.n_bytes];
        checksum ^= data.iter().fold(0, |a, &b| a ^ b);
        assert_eq!((t.offset - g.data_offset) % g.alignment, 0);
        let _ = t.n_elements();
        assert!(std::ptr::eq(g.tensor(&t.name).unwrap(), t));
    }
    for (key, value) in &g.metadata {
        let _ = g.get_u32(key);
        let _ = g.get_u64(key);
        let _ = g.get_usize(key);
        let _ = g.get_i64(key);
        let _ = g.get_f32(key);
        let _ = g.get_bool(key);
        let _ = g.get_str(key);
        let _ = g.get_array(key);
        let _ = g.get_str_array(key);
        let _ = g.get_f32_array(key);
        let _ = g.get_i32_array(key);
        let _ = g.get_opt::<Vec<Vec<&str>>>(key);
        let _ = value.type_name();
        assert!(std::ptr::eq(g.get(key).unwrap(), value));
        if let Value::Array(items) = value {
            for item in items {
                let _ = (item.as_u32(), item.as_i32(), item.as_f64(), item.as_str());
            }
        }
    }
    std::hint::black_box(checksum);
});
