"""Bit-for-bit regression guard (issue 13): the tiny end-to-end runs reproduce the recorded fixture.

``tests/regression_record.py`` (its docstring says what runs and when regenerating is legitimate)
ran a segmentation DMT script, a classification DMT script and the demo, each tiny, fp32, one
process on the CPU, and wrote ``tests/fixtures/regression.json``: the metric fields of every log.txt
line, a sha256 of every pseudo-label array and of every snapshot's model weights. This test reruns
the same runs and requires every recorded value to be identical; the first difference is reported
by run, kind and name. The one thing allowed to differ: a log.txt line may gain fields that the
fixture does not have (a new descriptive field is not a change of the numbers); its recorded fields,
and the sets of lines, pseudo-label arrays and snapshots, must be exactly the recorded ones.

Float results depend on the CPU's kernels and the libraries' versions, not only on the code: when
``torch.__version__``, ``torch.backends.cpu.get_cpu_capability()`` or the numpy / Pillow versions
differ from those the fixture was recorded with, the test is skipped (with the two environments in
the reason), since a difference there would say nothing about the code.
"""
from __future__ import annotations

import json

import pytest

from tests import regression_record as rec

pytestmark = pytest.mark.slow


def first_difference(expected, actual, path: str = "") -> str | None:
    """A one-line description of the first place where two JSON-like values differ, or None."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        missing = sorted(set(expected) - set(actual))
        if missing:
            return f"{path or 'top level'}: missing {missing[0]!r} (recorded {json.dumps(expected[missing[0]])[:200]})"
        extra = sorted(set(actual) - set(expected))
        if extra:
            return f"{path or 'top level'}: unexpected {extra[0]!r} (now {json.dumps(actual[extra[0]])[:200]})"
        for key in sorted(expected):
            found = first_difference(expected[key], actual[key], f"{path}/{key}")
            if found:
                return found
        return None
    if expected != actual:
        return f"{path}: recorded {expected!r}, now {actual!r}"
    return None


def test_first_difference_names_the_place():
    assert first_difference({"a": {"b": "1"}}, {"a": {"b": "1"}}) is None
    assert first_difference({"a": {"b": "1", "c": "2"}}, {"a": {"b": "1", "c": "3"}}) == "/a/c: recorded '2', now '3'"
    assert "missing 'c'" in first_difference({"a": {"c": "2"}}, {"a": {}})
    assert "unexpected 'd'" in first_difference({"a": {}}, {"a": {"d": "2"}})


def test_digests_see_dtype_shape_and_bytes():
    import numpy as np
    import torch
    a = np.arange(6, dtype=np.float32)
    assert rec.array_digest(a) == rec.array_digest(a.copy())
    assert rec.array_digest(a) != rec.array_digest(a.reshape(2, 3))
    assert rec.array_digest(a) != rec.array_digest(a.view(np.int32))
    b = a.copy()
    b[3] = np.nextafter(b[3], np.float32(10))  # one ulp
    assert rec.array_digest(a) != rec.array_digest(b)
    weights = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    assert rec.state_dict_digest(weights) == rec.state_dict_digest(dict(reversed(list(weights.items()))))
    assert rec.state_dict_digest(weights) != rec.state_dict_digest({"w": torch.ones(2, 2), "c": torch.zeros(2)})
    assert rec.state_dict_digest(weights) != rec.state_dict_digest({"w": torch.ones(2, 2, dtype=torch.float64),
                                                                    "b": torch.zeros(2)})


def test_tiny_runs_reproduce_the_fixture_bit_for_bit(tmp_path):
    if not rec.FIXTURE.is_file():
        pytest.fail(f"{rec.FIXTURE} is missing; record it with `python -m tests.regression_record`")
    fixture = json.loads(rec.FIXTURE.read_text())
    here = rec.environment()
    if here != fixture["environment"]:
        pytest.skip(f"float results depend on the CPU kernels and library versions: the fixture was recorded "
                    f"with {fixture['environment']}, this machine has {here}")
    runs = rec.record(tmp_path)
    for name in sorted(fixture["runs"]):
        assert name in runs, f"run {name!r} of the fixture did not run"
        recorded_log, log = fixture["runs"][name]["log"], runs[name]["log"]
        for line in set(recorded_log) & set(log):  # fields added since the recording are not compared
            log[line] = {k: v for k, v in log[line].items() if k in recorded_log[line]}
        found = first_difference(fixture["runs"][name], runs[name], name)
        assert found is None, f"regression (not bit-identical to {rec.FIXTURE.name}): {found}"
    assert sorted(runs) == sorted(fixture["runs"])
