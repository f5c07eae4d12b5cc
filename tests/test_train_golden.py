"""The first optimizer steps of a tiny fixed run against stored losses (tests/make_train_golden.py)."""

import json

import pytest
from make_train_golden import GOLDEN, golden_run


def test_first_steps_match_the_stored_losses(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = golden_run(tmp_path)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, 13))
    for g, e in zip(got, expected):
        assert g["lr"] == pytest.approx(e["lr"], rel=1e-12), g["step"]
        assert g["loss"] == pytest.approx(e["loss"], rel=1e-5), g["step"]
