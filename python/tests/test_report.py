"""``main_align.report`` and ``report_summary`` (issue 23): the same report as
``main-score report``, from the same engine code. On the shared scored demo
set (target/report/scored-1000.jsonl, scripts/scored-demo): the dict equals
the CLI's ``--json``, the page equals the CLI's byte for byte, an Arrow table
and a list of the same records give the same data (bar the source's name and
the provenance only a file has), and an unusable record is a ValueError
naming its line."""

from __future__ import annotations

import json
import subprocess

import pyarrow.json
import pytest

import main_align
from conftest import MAIN_SCORE, ROOT, need

SCORED = ROOT / "target" / "report" / "scored-1000.jsonl"
OPTIONS = {"keep_top": 0.3, "min": "alignment=0"}
CLI_OPTIONS = ["--keep-top", "0.3", "--min", "alignment=0"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> tuple[dict, bytes]:
    scored = need(SCORED, "run scripts/scored-demo")
    out = tmp_path_factory.mktemp("report")
    subprocess.run(
        [str(need(MAIN_SCORE, "build main-score")), "report", str(scored), "-o", str(out / "r.html"),
         "--json", str(out / "r.json"), *CLI_OPTIONS],
        check=True, capture_output=True,
    )
    return json.loads((out / "r.json").read_text()), (out / "r.html").read_bytes()


def test_the_dict_and_the_page_equal_main_score_report(cli, tmp_path):
    data, page = cli
    assert main_align.report_summary(str(SCORED), **OPTIONS) == data
    written = main_align.report(SCORED, tmp_path / "py.html", **OPTIONS)
    assert written == data
    assert (tmp_path / "py.html").read_bytes() == page
    assert data["records"] == 1000 and data["conversations"] == 4
    assert data["filter"]["of"] == 1000
    assert data["provenance"]["options"]["--max-tokens"] == "64"


def test_tables_and_records_give_the_same_data(cli):
    data, _ = cli
    records = [json.loads(line) for line in SCORED.read_text().splitlines() if line.strip()]
    from_records = main_align.report_summary(records, **OPTIONS)
    # read_json: the schema of every record (Table.from_pylist takes the
    # first record's keys and would drop the conversations).
    from_table = main_align.report_summary(pyarrow.json.read_json(SCORED), **OPTIONS)
    expected = {k: v for k, v in data.items() if k not in ("source", "provenance")}
    for got, source in ((from_records, "<records>"), (from_table, "<pyarrow.Table>")):
        assert got.pop("source") == source
        assert got.pop("provenance") is None
        assert got == expected, source


def test_unusable_records_are_value_errors_naming_the_line(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(ValueError, match=r"plain\.jsonl, line 1: no \"alignment\" object"):
        main_align.report_summary(plain)
    good = {"instruction": "a", "output": "b", "alignment": {"alignment": 0.1, "fwd_pmi": 0.1, "rev_pmi": 0.1}}
    with pytest.raises(main_align.ReportInputError, match=r"line 2: no \"alignment\""):
        main_align.report_summary([good, {"instruction": "x"}])
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps(good) + "\n" + "x" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"line 2: the line is longer than the limit of 1000 bytes"):
        main_align.report(long, tmp_path / "r.html", max_line_bytes=1000)
    with pytest.raises(main_align.ArgumentError, match="--min"):
        main_align.report_summary([good], min="nope=1")
