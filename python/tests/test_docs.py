"""The examples in the docstrings run (doctest), from the checkout's root so
their relative fixture path resolves."""

from __future__ import annotations

import doctest

import pytest

import main_align
import main_align.hf
import main_align.ray
from conftest import ROOT


@pytest.mark.parametrize("module", [main_align, main_align.hf, main_align.ray])
def test_docstring_examples(module, model, monkeypatch):
    monkeypatch.chdir(ROOT)
    scorer = main_align.Scorer(model, threads=2)
    failed, attempted = doctest.testmod(module, extraglobs={"scorer": scorer, "pa": main_align.pa})
    assert failed == 0
    assert attempted > 0
