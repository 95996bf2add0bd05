"""A chat template is bounded in memory from Python too (issue 21).

A GGUF whose chat template doubles a string, nests ``~`` in macros,
repeats a list, makes a namespace hold itself or recurses is refused when
``Scorer`` loads it, with ``ModelError`` and the engine's message naming
the template and the limit: within a second, and the Python process that
loads it under 200 MB at its peak. Each case runs in a fresh interpreter
that reports its own peak resident memory (``VmHWM`` of /proc/self/status,
which starts again at exec), so one case's peak cannot hide behind
another's. Not ``ru_maxrss``: Linux carries it across exec from the process
that forked, so a child of a large pytest reports pytest's peak.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, need

TEMPLATES = {
    "doubling": '{% set ns = namespace(s="xxxxxxxx") %}{% for i in range(64) %}'
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "macro_concat": "{% macro twice(s) %}{{ s ~ s }}{% endmacro %}"
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}"
    "{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s }}",
    "list_times": "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}"
    "{% set ns.l = ns.l * 2 %}{% endfor %}{{ ns.l | join }}",
    "namespace_self": "{% set ns = namespace(a=0) %}{% set ns.a = ns %}"
    "{{ ns ~ '' }}{{ ns | string }}{{ ns | pprint }}{{ ns == ns }}",
    "macro_recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}

# Fixed sizes of GGUF value types; 8 is a string, 9 an array.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip(buf: bytes, off: int, kind: int) -> int:
    if kind in _SIZES:
        return off + _SIZES[kind]
    if kind == 8:
        (n,) = struct.unpack_from("<Q", buf, off)
        return off + 8 + n
    if kind == 9:
        item, n = struct.unpack_from("<IQ", buf, off)
        off += 12
        if item in _SIZES:
            return off + n * _SIZES[item]
        for _ in range(n):
            off = _skip(buf, off, item)
        return off
    raise ValueError(f"GGUF value type {kind}")


def with_template(src: bytes, template: str) -> bytes:
    """The GGUF `src` with `template` as its tokenizer.chat_template."""
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", src, 0)
    off, kvs, alignment = 24, [], 32
    for _ in range(n_kv):
        start = off
        (klen,) = struct.unpack_from("<Q", src, off)
        key = src[off + 8 : off + 8 + klen].decode()
        off += 8 + klen
        (kind,) = struct.unpack_from("<I", src, off)
        off += 4
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", src, off)
        off = _skip(src, off, kind)
        if key != "tokenizer.chat_template":
            kvs.append(src[start:off])
    infos = off
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", src, off)
        off += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", src, off)
        off += 4 + 8 * n_dims + 4 + 8
    data = src[-(-off // alignment) * alignment :]
    key, value = b"tokenizer.chat_template", template.encode()
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    head = struct.pack("<4sIQQ", magic, version, n_tensors, len(kvs) + 1)
    head += b"".join(kvs) + kv + src[infos:off]
    return head + b"\0" * (-len(head) % alignment) + data


# Run in a fresh interpreter: load, time the load, report the peak.
CHILD = r"""
import json, sys, time
import main_align
start = time.perf_counter()
try:
    main_align.Scorer(sys.argv[1])
    out = {"error": None}
except main_align.ModelError as e:
    out = {"error": str(e)}
out["seconds"] = time.perf_counter() - start
with open("/proc/self/status") as f:
    hwm = next(line for line in f if line.startswith("VmHWM:"))
out["peak"] = int(hwm.split()[1]) * 1024
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_runaway_template_is_refused_fast_and_small(name, tmp_path):
    src = need(FIXTURES / "mistral-tiny" / "model.gguf", "run scripts/fetch-fixtures")
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(with_template(Path(src).read_bytes(), TEMPLATES[name]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(name, out)
    assert out["error"] is not None, "the model loaded"
    assert "chat template: chat_template" in out["error"], out["error"]
    assert "limit" in out["error"], out["error"]
    assert out["seconds"] < 1.0, out
    assert 0 < out["peak"] < 200 << 20, out


def test_the_rewritten_fixture_still_loads(tmp_path):
    """The GGUF rewriting above is sound: a real template in it loads."""
    import main_align

    src = need(FIXTURES / "mistral-tiny" / "model.gguf", "run scripts/fetch-fixtures")
    path = tmp_path / "chatml.gguf"
    chatml = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    path.write_bytes(with_template(Path(src).read_bytes(), chatml))
    main_align.Scorer(str(path))
