//! A Hugging Face checkpoint from memory (`safetensors::load_bytes`):
//! `config.json` and one `.safetensors` shard from arbitrary bytes must
//! load or fail with an error, never panic, hang or allocate without bound;
//! a store it accepts has every tensor's bytes inside its shard.
//!
//! Input: u16 LE length L, then L bytes of config.json, then the shard.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use main_engine::safetensors::load_bytes;

fuzz_target!(|bytes: &[u8]| {
    if bytes.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let rest = &bytes[2..];
    let (config, shard) = rest.split_at(n.min(rest.len()));
    let shard: Arc<[u8]> = Arc::from(shard);
    let Ok((config, store)) = load_bytes(config, vec![shard.clone()]) else {
        return;
    };
    assert!(config.validate().is_ok());
    for t in store.tensors.values() {
        assert!(
            t.offset + t.n_bytes <= shard.len(),
            "tensor '{}' escapes",
            t.name
        );
        assert_eq!(Some(t.n_bytes), t.dtype.row_bytes(t.n_elements()));
    }
});
