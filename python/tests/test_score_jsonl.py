"""One job, three skins: ``main-score score``, ``main_align.score_jsonl`` and
libmain's ``main_score_jsonl`` (through ctypes) run the engine's job and
write byte-identical files (the scored records and their provenance), also
after an interrupted run is resumed: the CLI killed with SIGKILL mid-run,
Python and C stopped by their progress callbacks."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import main_align
from conftest import FIXTURES, MAIN_SCORE, ROOT, TARGET, need

LIBMAIN = Path(os.environ.get("MAIN_LIBMAIN", TARGET / "release" / "libmain.so"))

#: Options every run gets: with negatives the batches are part of the
#: result, so a resume must rebuild them exactly (8 records: batches of 3,
#: 3 and 2, the last borrowing a turn from the one before).
NEGATIVES, BATCH, MAX_TOKENS, THREADS = 2, 3, 512, 2


@pytest.fixture(scope="module")
def job_input(tmp_path_factory) -> Path:
    """The two shortest ShareGPT conversations of the tool-call demo (real
    data), then the first six records of examples/pairs.jsonl (Alpaca,
    prompt/response and OpenAI messages)."""
    pairs = (ROOT / "examples" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    assert any("messages" in json.loads(p) for p in pairs)
    demo = need(FIXTURES / "glaive_toolcall_en_demo.jsonl", "run scripts/fetch-fixtures")
    conversations = sorted(demo.read_text(encoding="utf-8").splitlines(), key=len)[:2]
    assert all("conversations" in json.loads(c) for c in conversations)
    path = tmp_path_factory.mktemp("job") / "input.jsonl"
    path.write_text("\n".join(conversations + pairs) + "\n", encoding="utf-8")
    return path


def records(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def files(output: Path) -> tuple[bytes, str]:
    """The scored records, and the provenance without the file paths (each
    skin was given the same ones, but the comparison should not rest on it)."""
    provenance = json.loads(Path(str(output) + ".provenance.json").read_text())
    return output.read_bytes(), json.dumps(provenance, sort_keys=True)


def cli_args(model: str, job_input: Path, output: Path) -> list[str]:
    binary = need(MAIN_SCORE, "build it: cargo build --release -p main-engine --bin main-score")
    return [
        str(binary), "score", "--model", model, "--input", str(job_input), "--output", str(output),
        "--negatives", str(NEGATIVES), "--batch", str(BATCH), "--max-tokens", str(MAX_TOKENS),
        "--threads", str(THREADS),
    ]


def run_cli(model: str, job_input: Path, output: Path) -> None:
    subprocess.run(cli_args(model, job_input, output), check=True, capture_output=True)


def kill_cli_mid_run(model: str, job_input: Path, output: Path) -> int:
    """Starts main-score and kills it (SIGKILL) once its first batch is written."""
    proc = subprocess.Popen(cli_args(model, job_input, output), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while records(output) < BATCH and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return records(output)


def run_python(model: str, job_input: Path, output: Path, stop_after: int | None = None) -> dict:
    def progress(event: dict):
        if stop_after is not None and event["event"] == "scored" and event["done"] >= stop_after:
            return False
        return None

    return main_align.score_jsonl(
        job_input, output, model, threads=THREADS, negatives=NEGATIVES, batch_size=BATCH,
        max_tokens=MAX_TOKENS, progress=progress,
    )


# libmain's structs, as include/main.h declares them.
class JobParams(ctypes.Structure):
    _fields_ = [
        ("input", ctypes.c_char_p), ("output", ctypes.c_char_p), ("model", ctypes.c_char_p),
        ("reverse_model", ctypes.c_char_p),
        ("n_threads", ctypes.c_uint32), ("max_tokens", ctypes.c_uint32),
        ("precision", ctypes.c_uint32), ("device", ctypes.c_uint32), ("gpu", ctypes.c_uint32),
        ("combine", ctypes.c_uint32), ("negatives", ctypes.c_uint32), ("batch", ctypes.c_uint32),
        ("tokens", ctypes.c_bool), ("keep_top", ctypes.c_double), ("rank_by", ctypes.c_char_p),
        ("min_alignment", ctypes.c_double), ("use_min_alignment", ctypes.c_bool),
        ("shard_index", ctypes.c_uint32), ("shard_count", ctypes.c_uint32),
        ("skip_invalid", ctypes.c_bool),
        ("instruction_field", ctypes.c_char_p), ("response_field", ctypes.c_char_p),
        ("input_field", ctypes.c_char_p),
    ]


class JobEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint32), ("done", ctypes.c_size_t), ("total", ctypes.c_int64),
        ("records", ctypes.c_size_t), ("bytes", ctypes.c_uint64), ("line", ctypes.c_size_t),
        ("text", ctypes.c_char_p),
    ]


class JobReport(ctypes.Structure):
    _fields_ = [
        ("records", ctypes.c_size_t), ("scored_now", ctypes.c_size_t),
        ("resumed", ctypes.c_size_t), ("invalid", ctypes.c_size_t),
        ("kept", ctypes.c_int64), ("stopped", ctypes.c_bool),
    ]


PROGRESS = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.POINTER(JobEvent), ctypes.c_void_p)
MAIN_JOB_SCORED = 3


@pytest.fixture(scope="module")
def libmain():
    lib = ctypes.CDLL(str(need(LIBMAIN, "build it: cargo build --release -p main-ffi")))
    lib.main_job_default_params.restype = JobParams
    lib.main_score_jsonl.argtypes = [
        ctypes.POINTER(JobParams), PROGRESS, ctypes.c_void_p, ctypes.POINTER(JobReport),
    ]
    lib.main_score_jsonl.restype = ctypes.c_int
    lib.main_last_error.restype = ctypes.c_char_p
    return lib


def run_c(lib, model: str, job_input: Path, output: Path, stop_after: int | None = None) -> JobReport:
    p = lib.main_job_default_params()
    p.input, p.output, p.model = (str(x).encode() for x in (job_input, output, model))
    p.n_threads, p.negatives, p.batch, p.max_tokens = THREADS, NEGATIVES, BATCH, MAX_TOKENS

    @PROGRESS
    def progress(event, _user_data):
        e = event.contents
        return not (stop_after is not None and e.kind == MAIN_JOB_SCORED and e.done >= stop_after)

    report = JobReport()
    status = lib.main_score_jsonl(ctypes.byref(p), progress, None, ctypes.byref(report))
    assert status == 0, lib.main_last_error().decode()
    return report


def test_cli_python_and_c_write_the_same_bytes_also_after_a_resume(model, job_input, libmain, tmp_path):
    n = 8
    assert records(job_input) == n

    cli = tmp_path / "cli.jsonl"
    run_cli(model, job_input, cli)
    want = files(cli)
    assert records(cli) == n

    py = tmp_path / "py.jsonl"
    report = run_python(model, job_input, py)
    assert (report["records"], report["scored_now"], report["stopped"]) == (n, n, False)
    assert files(py) == want, "score_jsonl differs from main-score"

    c = tmp_path / "c.jsonl"
    r = run_c(libmain, model, job_input, c)
    assert (r.records, r.scored_now, r.stopped, r.kept) == (n, n, False, -1)
    assert files(c) == want, "main_score_jsonl differs from main-score"

    # Interrupted, then resumed with the same call.
    cli2 = tmp_path / "cli-killed.jsonl"
    killed_at = kill_cli_mid_run(model, job_input, cli2)
    assert killed_at < n, f"main-score finished ({killed_at} records) before it was killed"
    run_cli(model, job_input, cli2)
    assert files(cli2) == want, f"main-score killed after {killed_at} records and resumed differs"

    py2 = tmp_path / "py-stopped.jsonl"
    first = run_python(model, job_input, py2, stop_after=BATCH)
    assert first["stopped"] and first["records"] == BATCH, first
    second = run_python(model, job_input, py2)
    assert (second["resumed"], second["scored_now"], second["stopped"]) == (BATCH, n - BATCH, False)
    assert files(py2) == want, "score_jsonl stopped and resumed differs"

    c2 = tmp_path / "c-stopped.jsonl"
    first = run_c(libmain, model, job_input, c2, stop_after=2 * BATCH)
    assert first.stopped and first.records == 2 * BATCH
    second = run_c(libmain, model, job_input, c2)
    assert (second.resumed, second.scored_now, second.stopped) == (2 * BATCH, n - 2 * BATCH, False)
    assert files(c2) == want, "main_score_jsonl stopped and resumed differs"


def test_errors_name_the_file_and_line(model, tmp_path, libmain):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', encoding="utf-8")
    with pytest.raises(main_align.InputError, match=r"bad\.jsonl, line 2: missing field 'output'"):
        main_align.score_jsonl(bad, tmp_path / "out.jsonl", model, threads=THREADS)
    # What came before the bad record was written, and the report counts a skip.
    report = main_align.score_jsonl(
        bad, tmp_path / "out.jsonl", model, threads=THREADS, skip_invalid=True
    )
    assert (report["resumed"], report["invalid"], report["records"]) == (1, 1, 1)

    p = libmain.main_job_default_params()
    p.input, p.output = str(bad).encode(), str(tmp_path / "c.jsonl").encode()
    assert libmain.main_score_jsonl(ctypes.byref(p), PROGRESS(), None, None) == 1
    assert libmain.main_last_error() == b"invalid argument 'params->model': is NULL"
    p.model = str(model).encode()
    p.shard_index, p.shard_count = 2, 2
    assert libmain.main_score_jsonl(ctypes.byref(p), PROGRESS(), None, None) == 1
    assert b"params->shard_index" in libmain.main_last_error()
    p.shard_index = 0
    p.shard_count = 1
    assert libmain.main_score_jsonl(ctypes.byref(p), PROGRESS(), None, None) == 1
    assert b"bad.jsonl, line 2: missing field 'output'" in libmain.main_last_error()
    assert libmain.main_score_jsonl(None, PROGRESS(), None, None) == 1
    assert libmain.main_last_error() == b"invalid argument 'params': is NULL"
