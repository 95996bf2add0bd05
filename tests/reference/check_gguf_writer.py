#!/usr/bin/env python3
"""Reads a file written by main-engine's GgufWriter with the official python
`gguf` package (pip install gguf) and checks every value and tensor; then,
when llama-cpp-python is installed, loads it with llama.cpp's own
`gguf_init_from_file` (data included, so the padding must be right).

The file is the one `gguf::tests::round_trip_every_value_type_and_tensor_type`
builds; this script runs that test with MAIN_GGUF_SAMPLE_OUT set to get it,
or checks the path given as its argument. The expectations below mirror
`every_value_type()` and `some_tensors()` in engine/src/gguf/tests.rs.

    python3 tests/reference/check_gguf_writer.py [sample.gguf]
"""

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGUFValueType as T, GGMLQuantizationType as Q

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXPECTED_VALUES = [
    ("t.u8", T.UINT8, 200),
    ("t.i8", T.INT8, -100),
    ("t.u16", T.UINT16, 60000),
    ("t.i16", T.INT16, -30000),
    ("t.u32", T.UINT32, 4_000_000_000),
    ("t.i32", T.INT32, -2_000_000_000),
    ("t.u64", T.UINT64, 2**64 - 2),
    ("t.i64", T.INT64, -(2**63) + 1),
    ("t.f32", T.FLOAT32, float(np.float32(-1.5e-6))),
    ("t.f64", T.FLOAT64, math.pi),
    ("t.bool_true", T.BOOL, True),
    ("t.bool_false", T.BOOL, False),
    ("t.string", T.STRING, "héllo, 世界 \n\0 end"),
    ("t.empty_string", T.STRING, ""),
    ("t.arr_u8", [T.ARRAY, T.UINT8], [0, 1, 255]),
    ("t.arr_i8", [T.ARRAY, T.INT8], [-128, 0, 127]),
    ("t.arr_u16", [T.ARRAY, T.UINT16], [1, 65535]),
    ("t.arr_i16", [T.ARRAY, T.INT16], [-1, 32767]),
    ("t.arr_u32", [T.ARRAY, T.UINT32], [7, 8, 9]),
    ("t.arr_i32", [T.ARRAY, T.INT32], [-7, 8, -9]),
    ("t.arr_u64", [T.ARRAY, T.UINT64], [1 << 40]),
    ("t.arr_i64", [T.ARRAY, T.INT64], [-(1 << 40), 3]),
    ("t.arr_f32", [T.ARRAY, T.FLOAT32], [0.25, -3.0, float(np.finfo(np.float32).max)]),
    ("t.arr_f64", [T.ARRAY, T.FLOAT64], [1e300, -0.0]),
    ("t.arr_bool", [T.ARRAY, T.BOOL], [True, False, True]),
    ("t.arr_str", [T.ARRAY, T.STRING], ["x", "", "<|im_end|>"]),
    # The writer gives an empty array element type u8; gguf-py lists none.
    ("t.arr_empty", [T.ARRAY], []),
]

# name, type, numpy shape (ggml order, as the python reader reports it)
EXPECTED_TENSORS = [
    ("f32.vec", Q.F32, [5]),
    ("f16.mat", Q.F16, [3, 7]),
    ("bf16.3d", Q.BF16, [2, 3, 4]),
    ("q4_0.mat", Q.Q4_0, [64, 3]),
    ("q4_1.mat", Q.Q4_1, [32, 5]),
    ("q8_0.4d", Q.Q8_0, [32, 2, 1, 3]),
    ("q4_k.mat", Q.Q4_K, [256, 2]),
    ("q5_k.mat", Q.Q5_K, [512, 1]),
    ("q6_k.mat", Q.Q6_K, [256, 3]),
    ("empty", Q.F32, [0, 4]),
]


def pattern(n, seed):
    return bytes((i * 31 + seed) % 256 for i in range(n))


def sample_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    out = os.path.join(tempfile.mkdtemp(prefix="main-gguf-"), "sample.gguf")
    subprocess.run(
        ["cargo", "test", "-q", "-p", "main-engine", "--lib",
         "gguf::tests::round_trip_every_value_type_and_tensor_type"],
        cwd=ROOT, check=True, env={**os.environ, "MAIN_GGUF_SAMPLE_OUT": out},
    )
    return out


def check_with_llama_cpp(path, failures):
    try:
        import ctypes
        import llama_cpp
    except ImportError:
        print("llama-cpp-python not installed: llama.cpp check skipped", file=sys.stderr)
        return
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for name in ["gguf_get_n_tensors", "gguf_get_n_kv", "gguf_get_version"]:
        getattr(lib, name).restype = ctypes.c_int64
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.gguf_get_tensor_name.restype = ctypes.c_char_p
    lib.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]

    # no_alloc = False: llama.cpp also reads the tensor data into a context.
    ctx = ctypes.c_void_p()
    g = lib.gguf_init_from_file(path.encode(), InitParams(False, ctypes.pointer(ctx)))
    if not g:
        failures.append("llama.cpp's gguf_init_from_file refused the file")
        return
    n_kv, n_tensors = lib.gguf_get_n_kv(g), lib.gguf_get_n_tensors(g)
    if (lib.gguf_get_version(g), n_kv, n_tensors) != (3, len(EXPECTED_VALUES), len(EXPECTED_TENSORS)):
        failures.append(f"llama.cpp: version/kv/tensors {lib.gguf_get_version(g)}/{n_kv}/{n_tensors}")
    names = [lib.gguf_get_tensor_name(g, i).decode() for i in range(n_tensors)]
    if names != [n for n, _, _ in EXPECTED_TENSORS]:
        failures.append(f"llama.cpp: tensor names {names}")
    lib.gguf_free(g)
    lib.ggml_free(ctx)
    print(f"{path}: read by llama.cpp's gguf_init_from_file")


def main():
    path = sample_path()
    r = GGUFReader(path)
    failures = []

    def check(cond, msg):
        if not cond:
            failures.append(msg)

    check(int(r.fields["GGUF.version"].contents()) == 3, "version")
    fields = [f for name, f in r.fields.items() if not name.startswith("GGUF.")]
    check([f.name for f in fields] == [k for k, _, _ in EXPECTED_VALUES],
          f"keys in order: {[f.name for f in fields]}")
    for key, types, value in EXPECTED_VALUES:
        f = r.fields.get(key)
        if f is None:
            failures.append(f"{key}: missing")
            continue
        types = types if isinstance(types, list) else [types]
        check(f.types[: len(types)] == types, f"{key}: types {f.types}, expected {types}")
        got = f.contents()
        check(got == value, f"{key}: {got!r} != {value!r}")

    check(len(r.tensors) == len(EXPECTED_TENSORS), f"{len(r.tensors)} tensors")
    for i, (t, (name, qtype, shape)) in enumerate(zip(r.tensors, EXPECTED_TENSORS)):
        check(t.name == name, f"tensor {i}: name {t.name}")
        check(t.tensor_type == qtype, f"{name}: type {t.tensor_type!r}")
        check([int(d) for d in t.shape] == shape, f"{name}: shape {list(t.shape)}")
        data = bytes(np.asarray(t.data).tobytes())
        check(data == pattern(int(t.n_bytes), i), f"{name}: data differs")
        check(t.data_offset % 32 == 0, f"{name}: offset {t.data_offset} not aligned")

    check_with_llama_cpp(path, failures)
    if failures:
        print(f"{path}: {len(failures)} mismatches", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print(f"{path}: {len(fields)} keys and {len(r.tensors)} tensors read back by gguf-py")


if __name__ == "__main__":
    main()
