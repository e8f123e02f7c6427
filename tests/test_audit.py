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
    graded = [c.metadata["nbgrader"]["grade_id"] for c in src.cells if c.metadata.get("nbgrader", {}).get("grade")
              and c.cell_type == "code"]                   # the autograded cells, in order (not the written answer)
    assert fs[0].tests == graded[graded.index("ex2-attention-tests"):], "every test from the patching cell on scores 0"
    assert fs[0].tests[:4] == ["ex2-attention-tests", "ex3-gpt-tests", "ex4-timer-tests", "target-mfu"]


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
    nb = hand_in(src, ex6_roofline=src.cells[[c.metadata.get("nbgrader", {}).get("grade_id") for c in src.cells]
                                              .index("ex6-roofline")].source
                 + "\nprint(flops.training_days(1e24, 8, 1e15, 0.4))")
    assert found(nb, src) == []


# --- near-duplicates ------------------------------------------------------------------------

MINE = '''def two_four(w):
    """My 2:4 mask."""
    out = torch.zeros(w.shape, dtype=torch.bool)
    flat, kept = w.reshape(-1, 4), out.reshape(-1, 4)
    for row in range(flat.shape[0]):
        order = sorted(range(4), key=lambda j: -abs(float(flat[row, j])))
        for j in order[:2]:
            kept[row, j] = True
    return out
'''
THEIRS = '''def two_four(w):
    b = w.new_zeros(w.size()).bool()
    for i, quad in enumerate(w.view(-1, 4).abs()):
        top = quad.argsort(descending=True)[:2]
        b.view(-1, 4)[i, top] = True
    return b
'''
LABKITS = '''def two_four(weights):
    # kept the 2 largest of each 4
    g = weights.detach().abs().reshape(-1, 4)
    mask = torch.zeros_like(g, dtype=torch.bool)
    mask.scatter_(1, torch.topk(g, 2, dim=1).indices, True)
    return mask.view_as(weights)
'''


def _mask_lab(**solutions):
    from nbformat.v4 import new_code_cell, new_notebook
    sol = new_code_cell("def two_four(w):\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION")
    sol.metadata["nbgrader"] = {"grade_id": "ex-mask", "solution": True, "grade": False}
    formula = new_code_cell("def density(k, n):\n    ### BEGIN SOLUTION\n    return k / n\n    ### END SOLUTION")
    formula.metadata["nbgrader"] = {"grade_id": "ex-density", "solution": True, "grade": False}
    test = new_code_cell("assert two_four(torch.ones(4)).sum() == 2")
    test.metadata["nbgrader"] = {"grade_id": "ex-mask-tests", "grade": True, "solution": False, "points": 1}
    test.metadata["labkit"] = {"own_work": ["labkit.prune.nm_mask"]}
    nb = new_notebook(cells=[sol, formula, test])
    if solutions:
        nb.cells[0].source, nb.cells[1].source = solutions["mask"], solutions.get("density", "")
    return nb


def test_near_duplicates_are_found_through_renames_and_comments():
    renamed = (MINE.replace("out", "result").replace("flat", "rows").replace("kept", "chosen")
               .replace("My 2:4 mask.", "Two of four, by magnitude.").replace("order", "ranking"))
    handins = {"alice": _mask_lab(mask=MINE, density="def density(k, n):\n    return k / n"),
               "bob": _mask_lab(mask=renamed, density="def density(k, n):\n    return k / n"),
               "carol": _mask_lab(mask=THEIRS), "dave": _mask_lab(mask=LABKITS)}
    found = {(m.exercise, m.a, m.b) for m in audit.similar(handins, _mask_lab())}
    assert ("ex-mask", "alice", "bob") in found, "a renamed copy must be found"
    assert ("ex-mask", "dave", "labkit:labkit.prune.nm_mask") in found, "labkit's code, renamed"
    assert not any("carol" in (a, b) for _, a, b in found), "an independent solution is not a copy"
    assert not any(ex == "ex-density" for ex, _, _ in found), "a one-line formula is alike by nature"
    assert len(found) == 2


def _borrowing_cases():
    for path in LABS:
        nb = nbformat.read(path, 4)
        for test, names in sorted(audit.own_work_rules(nb).items()):
            yield pytest.param(path, test, sorted(names)[0], id=f"{path.parent.name}:{test}")


@pytest.mark.parametrize("path, test, name", list(_borrowing_cases()))
def test_every_lab_every_exercise_borrowing_labkit_scores_zero_for_it(path, test, name):
    """On every lab: an exercise whose code reaches labkit's implementation of it earns 0 for
    that exercise's test and nothing else changes."""
    src = nbformat.read(path, 4)
    nb = copy.deepcopy(src)
    cells = nb.cells
    at = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("grade_id") == test)
    sol = next(c for c in reversed(cells[:at]) if c.metadata.get("nbgrader", {}).get("solution"))
    module, attr = name.rsplit(".", 1)
    sol.source += f"\nimport {module} as _mod\n_shortcut = _mod.{attr}  # the kit's answer\n"
    hits = [f for f in audit.audit(nb, src) if f.kind == "labkit"]
    assert hits and {t for f in hits for t in f.tests} == {test}, [str(f) for f in audit.audit(nb, src)]
