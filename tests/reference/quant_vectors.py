#!/usr/bin/env python3
"""Golden vectors for the block formats in engine/src/quant/, from the official
`gguf` python package (gguf.quants), an implementation independent of ours.

For each type NAME this writes, under engine/tests/data/quant/:

* input.f32        the float inputs (little-endian f32), shared by all types;
* NAME.quant.bin   gguf.quants.quantize(input) for the types the package can
                   quantize (F16, BF16, Q4_0, Q4_1, Q8_0); for the
                   k-quants Q4_K, Q5_K, Q6_K, which the package can only
                   dequantize, random blocks with sane f16 scales instead;
* NAME.dequant.f32 gguf.quants.dequantize(NAME.quant.bin);
* kquant.input.f32 and NAME.ggml.quant.bin for Q4_K, Q5_K, Q6_K: ggml's own
  reference quantizers (quantize_row_*_ref through ggml_quantize_chunk, no
  importance matrix) via the `ggml-python` bindings, when they are installed,
  since the gguf package has no k-quant quantizer;
* (no rows of the real model: weights are never committed; the Rust test
  reads them from the fixture file instead)
  of the SmolLM2 fixture (blk.0.attn_q.weight, Q4_1; token_embd.weight, Q8_0),
  read with gguf.GGUFReader, when the fixture is present.

The Rust tests (engine/src/quant/mod.rs) check that our dequantize reproduces
NAME.dequant.f32 bit for bit and our quantize reproduces NAME.quant.bin byte
for byte. The data is seeded, so rerunning this script rewrites the same files.

CLI:
    python3 tests/reference/quant_vectors.py [--out engine/tests/data/quant]
        [--model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

N_VALUES = 512  # two k-quant super-blocks, sixteen 32-element blocks


def inputs(rng: np.random.Generator) -> np.ndarray:
    """Weights-like data with the edge cases a quantizer must get right."""
    x = rng.standard_normal(N_VALUES).astype(np.float32) * np.float32(0.05)
    x[0:32] = 0.0  # an all-zero block: the scale must be 0, not NaN
    x[32:64] = 0.25  # a constant block
    x[64:96] *= 100.0  # a block of large values
    x[100] = -3.0  # a negative outlier sets the sign of Q4_0's scale
    x[140] = 3.0  # a positive outlier
    x[160:192] = np.abs(x[160:192])  # all-positive: Q4_1's minimum is > 0
    x[192:224] = -np.abs(x[192:224])  # all-negative
    x[224:256] = np.round(x[224:256] * 400.0) / 400.0  # values on a grid, ties for rounding
    x[300:310] = 1e-8  # tiny values next to ordinary ones
    return x


def random_k_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Random k-quant blocks whose f16 scales are finite and of weight size."""
    block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
    n_blocks = N_VALUES // block_size
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales = (rng.uniform(1e-4, 1e-2, size=(n_blocks, 2))).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:
        raw[:, -2:] = scales[:, 0:2]  # d is the last field
    else:
        raw[:, 0:4] = scales  # d and dmin lead the block
    return raw.reshape(-1)


def write(out: Path, name: str, data: np.ndarray) -> None:
    """Stores little-endian bytes as hex under `name` in OUT/vectors.json (the
    project keeps golden values as small JSON), keeping the other entries."""
    path = out / "vectors.json"
    vectors = json.loads(path.read_text()) if path.exists() else {}
    vectors[name] = np.ascontiguousarray(data).tobytes().hex()
    path.write_text(json.dumps(vectors, indent=0, sort_keys=True) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("engine/tests/data/quant"))
    ap.add_argument("--model", type=Path, default=Path("fixtures/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)

    x = inputs(rng)
    write(args.out, "input.f32", x.astype("<f4"))
    for qtype in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0):
        name = qtype.name.lower()
        q = quants.quantize(x, qtype).view(np.uint8).reshape(-1)
        y = quants.dequantize(q, qtype).astype(np.float32).reshape(-1)
        write(args.out, f"{name}.quant.bin", q)
        write(args.out, f"{name}.dequant.f32", y.astype("<f4"))

    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        name = qtype.name.lower()
        q = random_k_blocks(rng, qtype)
        y = quants.dequantize(q, qtype).astype(np.float32).reshape(-1)
        write(args.out, f"{name}.quant.bin", q)
        write(args.out, f"{name}.dequant.f32", y.astype("<f4"))

    try:
        import ggml  # noqa: F401  (the ggml-python package)
    except ImportError:
        print("ggml-python not installed: k-quant quantizer vectors left as they are")
    else:
        write_kquant_vectors(rng, args.out)

    # Rows of the real model are not written: weights stay out of the repo.


def write_kquant_vectors(rng: np.random.Generator, out: Path) -> None:
    """ggml's reference k-quant quantizers on 16 super-blocks of varied data."""
    import ctypes

    import ggml

    n_per_row, n_rows = 256, 16
    x = rng.standard_normal((n_rows, n_per_row)).astype(np.float32)
    for r in range(n_rows):
        x[r] *= np.float32(10.0 ** rng.uniform(-4, 1))  # scales from 1e-4 to 10
        if r % 4 == 1:
            x[r] = np.abs(x[r])  # one sign: the minimum search clamps at 0
        if r % 4 == 2:
            x[r, rng.integers(0, n_per_row, 3)] *= 30.0  # outliers
        if r % 8 == 3:
            x[r, :100] = 0.0  # zero sub-blocks
    x = np.ascontiguousarray(x.reshape(-1))
    write(out, "kquant.input.f32", x.astype("<f4"))
    for qtype, gtype in ((T.Q4_K, ggml.GGML_TYPE_Q4_K), (T.Q5_K, ggml.GGML_TYPE_Q5_K), (T.Q6_K, ggml.GGML_TYPE_Q6_K)):
        q = np.zeros(ggml.ggml_row_size(gtype, n_per_row) * n_rows, dtype=np.uint8)
        ggml.ggml_quantize_chunk(
            gtype,
            x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            q.ctypes.data_as(ctypes.c_void_p),
            0,
            n_rows,
            n_per_row,
            None,
        )
        write(out, f"{qtype.name.lower()}.ggml.quant.bin", q)


if __name__ == "__main__":
    main()
