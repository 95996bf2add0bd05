//! Each kernel against the CPU: the weight decoders, RoPE and SwiGLU bit
//! for bit, packed attention against f64.

use super::*;

/// Every weight type decoded on `gpu` into f32 and bf16, against the CPU's
/// `dequantize_row`: one line per (type, element type) whose values differ
/// in any bit, with the count and the first difference.
fn decoder_mismatches(gpu: &Arc<dyn Backend>) -> Vec<String> {
    // Rows with a remainder of blocks per launch (n_out * blocks not a multiple of 256).
    let (n_out, n_in) = (7, 512);
    let mut bad = Vec::new();
    for dtype in DType::WEIGHT_TYPES {
        let x = values(n_out * n_in, dtype.ggml_id() as u64);
        let mut bytes = vec![0u8; n_out * n_in / dtype.block_len() * dtype.block_bytes()];
        quantize_row(dtype, &x, &mut bytes).unwrap();
        let mut want = vec![0f32; n_out * n_in];
        dequantize_row(dtype, &bytes, &mut want);
        let w = Weight {
            dtype,
            n_out,
            n_in,
            data: &bytes,
        };
        for elem in [Elem::F32, Elem::Bf16] {
            // Decoded into the middle of a fused matrix, as Q/K/V are.
            let dst = Buf::new(gpu, (n_out + 3) * n_in * elem.bytes(), "test").unwrap();
            decode_into(gpu, &w, "t", &dst, 2, elem).unwrap();
            let mut raw = vec![0u8; n_out * n_in * elem.bytes()];
            gpu.download(dst.at(2 * n_in * elem.bytes()), &mut raw)
                .unwrap();
            let got: Vec<f32> = match elem {
                Elem::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Elem::Bf16 => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
            };
            let differ: Vec<(usize, f32, f32)> = got
                .iter()
                .zip(&want)
                .enumerate()
                .map(|(i, (&g, &w))| (i, g, if elem == Elem::Bf16 { bf16_round(w) } else { w }))
                .filter(|(_, g, w)| g.to_bits() != w.to_bits())
                .collect();
            if let Some(&(i, g, w)) = differ.first() {
                bad.push(format!(
                    "{dtype:?} -> {elem:?}: {} of {} elements differ, first {i}: {g} vs {w}",
                    differ.len(),
                    got.len()
                ));
            }
        }
    }
    bad
}

/// RoPE on `gpu` against the CPU's (`model::RopeTable`, the same f64
/// tables rounded to f32), both layouts: how many values differ in any bit.
fn rope_mismatches(gpu: &Arc<dyn Backend>) -> usize {
    use crate::config::RopeStyle;
    let (h, hkv, hd) = (4usize, 2usize, 64usize);
    let s = (h + 2 * hkv) * hd;
    let positions: Vec<usize> = (0..37).map(|t| 3 * t + 1).collect();
    let n_tok = positions.len();
    let inv_freqs: Vec<f64> = (0..hd / 2)
        .map(|i| 10_000f64.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    // The GPU's table: every position up to the largest, as forward.rs builds it.
    let n_pos = positions.iter().max().unwrap() + 1;
    let table = crate::model::RopeTable::new(&inv_freqs, &(0..n_pos).collect::<Vec<_>>());
    let cpu = crate::model::RopeTable::new(&inv_freqs, &positions);
    let mut differ = 0;
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        let qkv = values(n_tok * s, 31);
        let (mut q, mut k) = (Vec::new(), Vec::new());
        for row in qkv.chunks_exact(s) {
            q.extend_from_slice(&row[..h * hd]);
            k.extend_from_slice(&row[h * hd..(h + hkv) * hd]);
        }
        let one = crate::threads::Threads::new(1);
        cpu.apply(&one, &mut q, h, hd, style);
        cpu.apply(&one, &mut k, hkv, hd, style);
        let qb = Buf::from_f32(gpu, &qkv, "t").unwrap();
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let posb = Buf::from_i32(gpu, &pos, "t").unwrap();
        let cosb = Buf::from_f32(gpu, &table.cos, "t").unwrap();
        let sinb = Buf::from_f32(gpu, &table.sin, "t").unwrap();
        let n = n_tok * (h + hkv) * hd / 2;
        gpu.launch(
            "rope",
            n.div_ceil(256) as u32,
            256,
            &[
                qb.arg(),
                posb.arg(),
                cosb.arg(),
                sinb.arg(),
                Arg::I64(n as i64),
                Arg::I32(h as i32),
                Arg::I32(hkv as i32),
                Arg::I32(hd as i32),
                Arg::I32((style == RopeStyle::Interleaved) as i32),
            ],
        )
        .unwrap();
        let got = qb.to_f32(n_tok * s).unwrap();
        for (t, row) in got.chunks_exact(s).enumerate() {
            let want_q = &q[t * h * hd..(t + 1) * h * hd];
            let want_k = &k[t * hkv * hd..(t + 1) * hkv * hd];
            let want_v = &qkv[t * s + (h + hkv) * hd..(t + 1) * s];
            let want = want_q.iter().chain(want_k).chain(want_v);
            differ += row
                .iter()
                .zip(want)
                .filter(|(g, w)| g.to_bits() != w.to_bits())
                .count();
        }
    }
    differ
}

#[test]
fn rope_kernel_equals_the_cpu_bit_for_bit() {
    assert_eq!(rope_mismatches(&device(GIB)), 0);
}

#[test]
fn weight_decoders_equal_the_cpu_for_every_block_type() {
    let bad = decoder_mismatches(&device(GIB));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The bit-exact kernel tests can see a fused multiply-add. With NVRTC's
/// default `--fmad=true` (translated for the emulator into `-mfma
/// -ffp-contract=fast`), RoPE's `x0 * cos - x1 * sin` rounds once where
/// the CPU rounds three times, and differs from it; so these tests hold on
/// a GPU only because `NVRTC_OPTIONS` turns contraction off, and the
/// emulator builds with the same options. (The decoders' `q * d + m` is
/// not moved by contraction: a 4- to 6-bit code times an f16 scale, or a
/// 6-bit scale times an f16, is exact in f32, so only the add rounds; their
/// test stays bit for bit under either option.)
#[test]
fn a_fused_multiply_add_would_break_the_bit_exact_kernels() {
    assert!(
        crate::cuda::NVRTC_OPTIONS.contains(&"--fmad=false"),
        "NVRTC_OPTIONS must turn off fused multiply-add: {:?}",
        crate::cuda::NVRTC_OPTIONS
    );
    assert!(
        crate::cuda::emulator::cxx_flags(crate::cuda::NVRTC_OPTIONS).contains(&"-ffp-contract=off")
    );
    if !crate::cuda::emulator::host_has_fma() {
        eprintln!("skipped: this CPU has no FMA, so the emulator cannot show NVRTC's default");
        return;
    }
    let fused: Vec<&str> = crate::cuda::NVRTC_OPTIONS
        .iter()
        .map(|&o| {
            if o == "--fmad=false" {
                "--fmad=true"
            } else {
                o
            }
        })
        .collect();
    let gpu: Arc<dyn Backend> = Arc::new(Emulator::with_nvrtc_options(GIB, &fused));
    let differ = rope_mismatches(&gpu);
    eprintln!("with --fmad=true, {differ} RoPE values differ from the CPU");
    assert!(differ > 0, "a contracted RoPE should differ from the CPU");
    let bad = decoder_mismatches(&gpu);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn swiglu_kernel_equals_the_cpu_bit_for_bit() {
    let gpu = device(GIB);
    let (t, f) = (3, 333);
    let gu = values(t * 2 * f, 7);
    let gub = Buf::from_f32(&gpu, &gu, "t").unwrap();
    let out = Buf::new(&gpu, t * f * 4, "t").unwrap();
    let n = t * f;
    gpu.launch(
        "swiglu_f32",
        n.div_ceil(256) as u32,
        256,
        &[gub.arg(), out.arg(), Arg::I64(n as i64), Arg::I32(f as i32)],
    )
    .unwrap();
    let got = out.to_f32(n).unwrap();
    for r in 0..t {
        let mut gate = gu[r * 2 * f..r * 2 * f + f].to_vec();
        crate::kernels::activation::silu_mul(&mut gate, &gu[r * 2 * f + f..(r + 1) * 2 * f]);
        for j in 0..f {
            let g = got[r * f + j];
            assert!(
                (g - gate[j]).abs() <= 1e-6 * gate[j].abs().max(1.0),
                "row {r} col {j}: {g} vs {}",
                gate[j]
            );
        }
    }
}

/// f64 attention of one query against keys/values `0..=p` (or the window).
fn attention_ref(q: &[f32], keys: &[&[f32]], values: &[&[f32]], scale: f64) -> Vec<f64> {
    let s: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(*k)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut out = vec![0f64; q.len()];
    for (w, v) in e.iter().zip(values) {
        for (o, &x) in out.iter_mut().zip(*v) {
            *o += w / z * x as f64;
        }
    }
    out
}

#[test]
fn packed_attention_with_a_prefix_gqa_and_a_window_matches_f64() {
    let gpu = device(GIB);
    // head_dim 40: a partial last lane group; 70 keys: chunks of 32 with a remainder.
    let (h, hkv, hd) = (4usize, 2usize, 40usize);
    let s = (h + 2 * hkv) * hd;
    let n_prefix = 9;
    // Two sequences: one continuing 5 prefix positions with 70 new tokens,
    // one from scratch with 33.
    let seqs = [(5usize, 70usize), (0, 33)];
    let n: usize = seqs.iter().map(|x| x.1).sum();
    let qkv = values(n * s, 11);
    let prefix = values(n_prefix * s, 12);
    let (mut pos, mut first) = (Vec::new(), Vec::new());
    for &(shared, len) in &seqs {
        let base = pos.len();
        for i in 0..len {
            pos.push((shared + i) as i32);
            first.push(base as i32);
        }
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for window in [0usize, 16] {
        let qb = Buf::from_f32(&gpu, &qkv, "t").unwrap();
        let pb = Buf::from_f32(&gpu, &prefix, "t").unwrap();
        let posb = Buf::from_i32(&gpu, &pos, "t").unwrap();
        let fb = Buf::from_i32(&gpu, &first, "t").unwrap();
        let out = Buf::new(&gpu, n * h * hd * 4, "t").unwrap();
        gpu.launch(
            "attention_f32",
            (n * h).div_ceil(4) as u32,
            128,
            &[
                qb.arg(),
                pb.arg(),
                posb.arg(),
                fb.arg(),
                out.arg(),
                Arg::I32(n as i32),
                Arg::I32(h as i32),
                Arg::I32(hkv as i32),
                Arg::I32(hd as i32),
                Arg::F32(scale),
                Arg::I32(window as i32),
            ],
        )
        .unwrap();
        let got = out.to_f32(n * h * hd).unwrap();
        let mut worst = 0f64;
        for t in 0..n {
            let (p, s0) = (pos[t] as usize, first[t] as usize);
            let shared = pos[s0] as usize;
            let row = |kp: usize| -> &[f32] {
                if kp < shared {
                    &prefix[kp * s..(kp + 1) * s]
                } else {
                    &qkv[(s0 + kp - shared) * s..(s0 + kp - shared + 1) * s]
                }
            };
            let lo = if window > 0 {
                (p + 1).saturating_sub(window)
            } else {
                0
            };
            for head in 0..h {
                let kvh = head / (h / hkv);
                let q = &qkv[t * s + head * hd..t * s + (head + 1) * hd];
                let ks: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[h * hd + kvh * hd..][..hd])
                    .collect();
                let vs: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[(h + hkv) * hd + kvh * hd..][..hd])
                    .collect();
                let want = attention_ref(q, &ks, &vs, scale as f64);
                for (i, w) in want.iter().enumerate() {
                    let g = got[t * h * hd + head * hd + i] as f64;
                    worst = worst.max((g - w).abs());
                }
            }
        }
        assert!(worst < 2e-5, "window {window}: worst difference {worst}");
    }
}

#[test]
fn decode_attention_over_per_sequence_caches_matches_f64() {
    let gpu = device(GIB);
    let (h, hkv, hd) = (4usize, 2usize, 40usize);
    let s = (h + 2 * hkv) * hd;
    // Three sequences at positions 0 (an empty cache), 37 and 70: chunks
    // of 32 keys with remainders; each cache has room to spare.
    let pos = [0i32, 37, 70];
    let n = pos.len();
    let capacity = 80;
    let qkv = values(n * s, 21);
    let caches: Vec<Vec<f32>> = (0..n)
        .map(|i| values(capacity * s, 30 + i as u64))
        .collect();
    let cache_bufs: Vec<Buf> = caches
        .iter()
        .map(|c| Buf::from_f32(&gpu, c, "t").unwrap())
        .collect();
    let addrs: Vec<u8> = cache_bufs
        .iter()
        .flat_map(|b| (b.ptr as i64).to_le_bytes())
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    for window in [0usize, 16] {
        let qb = Buf::from_f32(&gpu, &qkv, "t").unwrap();
        let ab = Buf::from_bytes(&gpu, &addrs, "t").unwrap();
        let posb = Buf::from_i32(&gpu, &pos, "t").unwrap();
        let out = Buf::new(&gpu, n * h * hd * 4, "t").unwrap();
        gpu.launch(
            "attention_decode_f32",
            (n * h).div_ceil(4) as u32,
            128,
            &[
                qb.arg(),
                ab.arg(),
                posb.arg(),
                out.arg(),
                Arg::I32(n as i32),
                Arg::I32(h as i32),
                Arg::I32(hkv as i32),
                Arg::I32(hd as i32),
                Arg::F32(scale),
                Arg::I32(window as i32),
            ],
        )
        .unwrap();
        let got = out.to_f32(n * h * hd).unwrap();
        let mut worst = 0f64;
        for t in 0..n {
            let p = pos[t] as usize;
            // Cached rows below p; the new token's row is its qkv row.
            let row = |kp: usize| -> &[f32] {
                if kp < p {
                    &caches[t][kp * s..(kp + 1) * s]
                } else {
                    &qkv[t * s..(t + 1) * s]
                }
            };
            let lo = if window > 0 {
                (p + 1).saturating_sub(window)
            } else {
                0
            };
            for head in 0..h {
                let kvh = head / (h / hkv);
                let q = &qkv[t * s + head * hd..t * s + (head + 1) * hd];
                let ks: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[h * hd + kvh * hd..][..hd])
                    .collect();
                let vs: Vec<&[f32]> = (lo..=p)
                    .map(|kp| &row(kp)[(h + hkv) * hd + kvh * hd..][..hd])
                    .collect();
                let want = attention_ref(q, &ks, &vs, scale as f64);
                for (i, w) in want.iter().enumerate() {
                    let g = got[t * h * hd + head * hd + i] as f64;
                    worst = worst.max((g - w).abs());
                }
            }
        }
        assert!(worst < 2e-5, "window {window}: worst difference {worst}");
    }
}

/// `append_rows` writes each sequence's new row at its own position of its
/// own cache, and nothing else: the rows around it keep their bytes.
#[test]
fn append_rows_writes_each_row_at_its_position() {
    let gpu = device(GIB);
    let (stride, capacity) = (300usize, 9usize);
    let pos = [0i32, 4, 8];
    let n = pos.len();
    let qkv = values(n * stride, 41);
    let before: Vec<Vec<f32>> = (0..n)
        .map(|i| values(capacity * stride, 50 + i as u64))
        .collect();
    let caches: Vec<Buf> = before
        .iter()
        .map(|c| Buf::from_f32(&gpu, c, "t").unwrap())
        .collect();
    let addrs: Vec<u8> = caches
        .iter()
        .flat_map(|b| (b.ptr as i64).to_le_bytes())
        .collect();
    let ab = Buf::from_bytes(&gpu, &addrs, "t").unwrap();
    let qb = Buf::from_f32(&gpu, &qkv, "t").unwrap();
    let posb = Buf::from_i32(&gpu, &pos, "t").unwrap();
    gpu.launch(
        "append_rows",
        n as u32,
        256,
        &[qb.arg(), ab.arg(), posb.arg(), Arg::I32(stride as i32)],
    )
    .unwrap();
    for t in 0..n {
        let mut want = before[t].clone();
        let p = pos[t] as usize;
        want[p * stride..(p + 1) * stride].copy_from_slice(&qkv[t * stride..(t + 1) * stride]);
        let got = caches[t].to_f32(capacity * stride).unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "sequence {t}: the cache differs from the expected append"
        );
    }
}
