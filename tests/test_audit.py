"""labkit.audit: a hand-in's code read outside its kernel, on lab 01's real instructor source."""
import copy
from pathlib import Path

import nbformat
import pytest

from labkit import audit

REPO = Path(__file__).resolve().parent.parent
LABS = sorted(p for p in (REPO / "notebooks").glob("*/*.ipynb"))


@pytest.fixture(scope="module")
def src():
    return nbformat.read(REPO / "notebooks" / "01-flops" / "01-flops.ipynb", 4)


def hand_in(src, **solutions):
    nb = copy.deepcopy(src)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id", "").replace("-", "_")
        if gid in solutions:
            cell.source = solutions[gid]
    return nb


def found(nb, src):
    return [(f.kind, f.cell, tuple(f.tests)) for f in audit.audit(nb, src)]


@pytest.mark.parametrize("path", LABS, ids=[p.parent.name for p in LABS])
def test_every_instructor_solution_is_clean_and_every_lab_states_the_rule(path):
    nb = nbformat.read(path, 4)
    assert audit.audit(nb, nb) == []
    assert "**Own work.**" in nb.cells[0].source


@pytest.mark.parametrize("code", [
    "def days_to_train(*a):\n    return flops.training_days(*a)",                                   # direct
    "from labkit.flops import training_days as td\ndef days_to_train(*a):\n    return td(*a)",      # import alias
    "td = flops.training_days\ndef days_to_train(*a):\n    return td(*a)",                           # assigned alias
    "import labkit\ndef helper(*a):\n    return labkit.flops.training_days(*a)\n"
    "def days_to_train(*a):\n    return helper(*a)",                                                 # through a helper
])
def test_labkit_implementation_scores_zero_for_its_exercise_only(src, code):
    kinds = set(found(hand_in(src, ex1_days=code), src))
    assert kinds == {("labkit", "ex1-days", ("ex1-days-tests",))}


@pytest.mark.parametrize("code, what", [
    ("import torch\ntorch.testing.assert_close = lambda *a, **k: None", "replaces torch.testing.assert_close"),
    ("flops.training_days = lambda *a: 0", "replaces labkit.flops.training_days"),   # the hidden test's reference
    ("import numpy.testing as npt\nsetattr(npt, 'assert_allclose', print)", "setattr() on numpy.testing"),
    ("import builtins\ndel builtins.abs", "replaces builtins.abs"),
    ("class M:\n    isclose = staticmethod(lambda *a, **k: True)\nmath = M()", "rebinds 'math'"),  # a name tests use
])
def test_patching_what_tests_rely_on_scores_zero_for_every_later_test(src, code, what):
    nb = hand_in(src, ex2_attention="def attention_flops(*a, **k):\n    return 0\n" + code)
    fs = [f for f in audit.audit(nb, src) if f.kind == "patch"]
    assert fs and what in fs[0].detail, [str(f) for f in fs]
    assert fs[0].tests == ["ex2-attention-tests", "ex3-gpt-tests", "ex4-intensity-tests", "ex5-roofline-tests"]


def test_dynamic_names_are_flagged_and_plain_code_is_not(src):
    nb = hand_in(src, ex1_days="def days_to_train(*a):\n    return getattr(flops, 'training' + '_days')(*a)",
                 ex2_attention="import importlib\nf = importlib.import_module('labkit.flops')\n"
                               "def attention_flops(*a, **k):\n    return 0")
    kinds = {(k, c) for k, c, _ in found(nb, src)}
    assert kinds == {("dynamic", "ex1-days"), ("dynamic", "ex2-attention")}
    # own code, re-imports, a local variable that shadows nothing the tests use, a magic line
    clean = hand_in(src, ex1_days="%time 1\nimport math\nimport torch\nresult = 0\n"
                                  "def days_to_train(t, n, p, m):\n    return t / (n * p * m) / 86400")
    assert found(clean, src) == []


def test_rules_come_from_the_instructor_source_not_the_hand_in(src):
    nb = hand_in(src, ex1_days="def days_to_train(*a):\n    return flops.training_days(*a)")
    for cell in nb.cells:
        cell.metadata.pop("labkit", None)  # the student deleted the rules
    assert [f.kind for f in audit.audit(nb, src)] == ["labkit"]
    assert audit.own_work_rules(src)["ex1-days-tests"] == {"labkit.flops.training_days"}


def test_own_work_follows_the_student_s_helpers_but_not_other_cells(src):
    # a helper defined in another exercise's cell, reached from ex1's code: found
    nb = hand_in(src, ex2_attention="def helper(*a):\n    return flops.training_days(*a)\n"
                                    "def attention_flops(*a, **k):\n    return 0",
                 ex1_days="def days_to_train(*a):\n    return helper(*a)")
    assert set(found(nb, src)) == {("labkit", "ex2-attention", ("ex1-days-tests",))}
    # labkit's function used in a cell of its own (trying it out, timing it): no finding
    nb = hand_in(src, ex5_roofline=src.cells[[c.metadata.get("nbgrader", {}).get("grade_id") for c in src.cells]
                                              .index("ex5-roofline")].source
                 + "\nprint(flops.training_days(1e24, 8, 1e15, 0.4))")
    assert found(nb, src) == []
