"""Bad models, arguments and inputs raise main_align's exceptions with clear
messages, and the process (and the scorer) live on."""

from __future__ import annotations

import pyarrow as pa
import pytest

from main_align import ArgumentError, InputError, MainError, ModelError, Scorer


@pytest.fixture(scope="module")
def scorer(model):
    return Scorer(model, threads=2)


def still_works(scorer):
    t = scorer.score(["Name a primary colour."], ["Red."])
    assert t.num_rows == 1 and t.column("response_tokens")[0].as_py() > 0


def test_exception_hierarchy():
    for e in (ModelError, ArgumentError, InputError):
        assert issubclass(e, MainError) and issubclass(e, Exception)


def test_missing_model(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match="nope.gguf"):
        Scorer(path)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 20, "malformed"),
        (b"GGUF\x03\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00", "malformed"),
        (b"not a model at all, just text\n" * 4, "bad.gguf"),
    ],
)
def test_malformed_gguf(tmp_path, content, words, scorer):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        Scorer(path)
    assert words in str(e.value)
    still_works(scorer)


def test_truncated_copy_of_the_real_model(tmp_path, model):
    path = tmp_path / "cut.gguf"
    with open(model, "rb") as f:
        path.write_bytes(f.read(1 << 20))
    with pytest.raises(ModelError, match="cut.gguf|malformed|tensor"):
        Scorer(path)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(threads="2"), "'threads': expected an int, got str"),
        (dict(threads=-1), "'threads'"),
        (dict(max_tokens=4), "max_tokens"),
        (dict(max_tokens=2.5), "'max_tokens': expected an int, got float"),
        (dict(precision="fp8"), "'precision': \"fp8\" is not one of"),
        (dict(precision=8), "'precision': expected a str"),
        (dict(device="tpu"), "expected cpu, cuda or cuda:N"),
        (dict(device="cpu", precision="bf16"), "bf16 does not run on cpu"),
        (dict(combine="max"), "'max' is not one of min, mean, softmin"),
        (dict(negatives=True), "'negatives': expected an int, got bool"),
    ],
)
def test_bad_arguments(model, kwargs, words):
    with pytest.raises(ArgumentError) as e:
        Scorer(model, **kwargs)
    assert words in str(e.value)


def test_model_of_wrong_type():
    with pytest.raises(ArgumentError, match="'model': expected a path"):
        Scorer(3)


def test_cuda_without_a_gpu_build(model):
    # On this CPU build a GPU is refused with an engine error, never a crash.
    with pytest.raises(MainError, match="cuda"):
        Scorer(model, device="cuda:0")


def test_mismatched_lengths(scorer):
    with pytest.raises(InputError, match="lengths differ: 2 instructions, 1 responses, 2 inputs"):
        scorer.score(["a", "b"], ["x"])
    with pytest.raises(InputError, match="lengths differ: 1 instructions, 1 responses, 3 inputs"):
        scorer.score(["a"], ["x"], ["", "", ""])
    still_works(scorer)


@pytest.mark.parametrize(
    "instructions, responses, inputs, words",
    [
        (["a", 3], ["x", "y"], None, "instructions[1] is int, not str"),
        (["a"], [None], None, "responses[0] is NoneType, not str"),
        (["a"], [b"bytes"], None, "responses[0] is bytes, not str"),
        (["a"], ["x"], [1.5], "inputs[0] is float, not str or None"),
        (["\ud800"], ["x"], None, "instructions[0] is not valid Unicode"),
        (pa.array([1, 2]), ["x", "y"], None, "instructions[0] is int, not str"),
    ],
)
def test_non_string_values(scorer, instructions, responses, inputs, words):
    with pytest.raises(InputError) as e:
        scorer.score(instructions, responses, inputs)
    assert words in str(e.value)
    still_works(scorer)


def test_not_a_sequence(scorer):
    with pytest.raises(ArgumentError, match="not a single str"):
        scorer.score("What?", "That.")
    with pytest.raises(ArgumentError, match="sequence of str, not int"):
        scorer.score(5, ["x"])
    with pytest.raises(ArgumentError, match="'output'"):
        scorer.score(["a"], ["x"], output="pandas")
    with pytest.raises(ArgumentError, match="batch_size"):
        scorer.score(["a"], ["x"], batch_size=0)


def test_score_table_errors(scorer):
    t = pa.table({"instruction": ["Say hi."], "output": ["Hi!"], "alignment": [1.0]})
    with pytest.raises(ArgumentError, match="no column 'prompt'"):
        scorer.score_table(t, instruction="prompt")
    with pytest.raises(ArgumentError, match=r"score columns \['alignment'\] would replace"):
        scorer.score_table(t)
    out = scorer.score_table(t, prefix="main_")
    assert out.column_names[:3] == ["instruction", "output", "alignment"]
    assert "main_alignment" in out.column_names
    with pytest.raises(InputError, match="instructions\\[0\\] is int"):
        scorer.score_table(pa.table({"instruction": [1], "output": ["x"]}))
    with pytest.raises(ArgumentError, match="expected a pyarrow.Table"):
        scorer.score_table(42)
    still_works(scorer)


def test_accepts_pandas_and_tuples(scorer):
    import pandas as pd

    df = pd.DataFrame({"instruction": ["Say hi."], "output": ["Hi!"]})
    a = scorer.score_table(df)
    b = scorer.score(("Say hi.",), ("Hi!",))
    assert a.select(b.column_names).equals(b)
