"""The grading pipeline on lab 01, end to end with nbgrader: release, then autograde four hand-ins.

Hand-ins: the instructor source (full marks), the blank release (0, and grading finishes),
one with an infinite loop in exercise 2 (cut by the cell timeout, the rest still graded) and
one whose kernel dies in exercise 2 (never scored as passing). The grading machine is fresh:
no peaks cached, so the peaks are measured before any hand-in runs, never inside one's timeout.
"""
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from labkit import grading

LAB = "01-flops"
REPO = Path(__file__).resolve().parent.parent
LABS = sorted(p.name for p in (REPO / "notebooks").iterdir() if (p / f"{p.name}.ipynb").exists())
pytestmark = pytest.mark.integration


def _cells(nb, kind):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get(kind)}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", root)
    for lab in LABS:
        shutil.copytree(REPO / "notebooks" / lab, root / "notebooks" / lab)
        grading.release(lab, root)
    return root


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """An empty peaks cache, as on a grading machine that never ran labkit."""
    cache, old = tmp_path_factory.mktemp("fresh-cache"), os.environ.get("LABKIT_CACHE_DIR")
    os.environ["LABKIT_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LABKIT_CACHE_DIR")
    else:
        os.environ["LABKIT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def results(course, fresh_cache):
    src = nbformat.read(course / "notebooks" / LAB / f"{LAB}.ipynb", 4)
    release = course / "release" / LAB / f"{LAB}.ipynb"
    solutions = {gid: c.source for gid, c in _cells(src, "solution").items()}

    def hand_in(student, overrides):
        nb = nbformat.read(release, 4)
        for gid, cell in _cells(nb, "solution").items():
            cell.source = overrides.get(gid, solutions[gid])
        path = course / f"{student}.ipynb"
        nbformat.write(nb, path)
        grading.submit(LAB, student, path, course)

    grading.submit(LAB, "instructor", course / "notebooks" / LAB / f"{LAB}.ipynb", course)
    grading.submit(LAB, "blank", release, course)
    hand_in("loops", {"ex2-attention": "while True:\n    pass"})
    hand_in("dies", {"ex2-attention": "import os\nos._exit(1)"})
    return grading.autograde(LAB, course, cell_timeout_s=30)


@pytest.mark.parametrize("lab", LABS)
def test_student_version_has_no_solutions_and_no_hidden_tests(course, lab):
    src = nbformat.read(course / "notebooks" / lab / f"{lab}.ipynb", 4)
    text = (course / "release" / lab / f"{lab}.ipynb").read_text()
    student = nbformat.reads(text, 4)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    student_lines = {line.strip() for c in student.cells for line in c.source.splitlines()}
    given = {line.strip() for c in src.cells if not c.metadata.get("nbgrader", {}).get("solution")
             for line in c.source.splitlines()}  # lines the students are given anyway
    for gid, cell in _cells(src, "solution").items():
        body = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
        for line in {ln.strip() for ln in body.splitlines() if ln.strip()} - given:
            assert line not in student_lines, f"solution line of {gid} leaked: {line!r}"
        assert "raise NotImplementedError()" in _cells(student, "solution")[gid].source
    for gid, cell in _cells(src, "grade").items():
        hidden = cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
        assert hidden.strip() not in text, f"hidden tests of {gid} leaked"
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0].strip()
        assert _cells(student, "grade")[gid].source.strip() == visible  # visible asserts stay
    points = sum(c.metadata["nbgrader"]["points"] for c in _cells(student, "grade").values())
    assert points == sum(c.metadata["nbgrader"]["points"] for c in _cells(src, "grade").values()) >= 6


def test_instructor_source_gets_full_marks(results):
    r = results["instructor"]
    assert r.status == "graded" and r.score == r.max_score == 10


def test_peaks_were_measured_before_the_hand_ins_ran(results, course, fresh_cache):
    # the grader measured them (one entry, steady or not); every hand-in only read them
    peaks = json.loads((fresh_cache / "peaks.json").read_text())
    assert len(peaks) == 1 and next(iter(peaks.values()))["matmul_flops"]["fp32"] > 0
    graded = (course / "autograded" / "instructor" / LAB / f"{LAB}.ipynb").read_text()
    assert "measured peaks" in graded and "first time only" not in graded


def test_blank_release_gets_zero_and_grading_finishes(results):
    r = results["blank"]
    assert r.status == "graded" and r.score == 0 and r.max_score == 10
    assert len(r.cells) == 5 and all(score == 0 for score, _ in r.cells.values())


def test_infinite_loop_is_cut_and_other_exercises_still_graded(results):
    r = results["loops"]
    assert r.status == "graded"
    assert r.cells["ex2-attention-tests"] == (0, 2)
    others = {gid: s for gid, s in r.cells.items() if gid != "ex2-attention-tests"}
    assert others and all(score == mx == 2 for score, mx in others.values())
    assert r.score == 8


def test_dead_kernel_is_not_scored_as_passing(results):
    r = results["dies"]
    assert r.status == "failed" and r.score is None
    assert "Kernel died" in r.log


def test_hand_in_that_ignores_interrupts_is_killed_and_failed(results, course):
    # The cell timeout sends an interrupt; this code ignores it. The per-hand-in limit kills it.
    src = nbformat.read(course / "notebooks" / LAB / f"{LAB}.ipynb", 4)
    nb = nbformat.read(course / "release" / LAB / f"{LAB}.ipynb", 4)
    for gid, cell in _cells(nb, "solution").items():
        cell.source = _cells(src, "solution")[gid].source
    _cells(nb, "solution")["ex2-attention"].source = (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
    nbformat.write(nb, course / "stubborn.ipynb")
    grading.submit(LAB, "stubborn", course / "stubborn.ipynb", course)
    r = grading.autograde(LAB, course, cell_timeout_s=5, students=["stubborn"], timeout_s=45)["stubborn"]
    assert r.status == "failed" and r.score is None
    assert not (course / "autograded" / "stubborn" / LAB).exists()


def test_cli_reports_scores_and_fails_on_a_failed_hand_in(results, course, capsys):
    assert grading.main(["scores", LAB, "--root", str(course)]) == 1  # "dies" failed
    out = capsys.readouterr().out
    assert "instructor" in out and "failed" in out


def test_bad_arguments_are_clear(course, tmp_path):
    with pytest.raises(ValueError, match="lab='99-nope'"):
        grading.release("99-nope", course)
    with pytest.raises(FileNotFoundError, match="nbgrader_config.py"):
        grading.release(LAB, tmp_path)
    with pytest.raises(ValueError, match="student"):
        grading.submit(LAB, "../evil", course / "blank.ipynb", course)


@pytest.mark.parametrize("lab", [lab for lab in LABS if lab != LAB])
def test_every_other_lab_grades_full_marks_and_zero(course, lab):
    grading.submit(lab, "instructor", course / "notebooks" / lab / f"{lab}.ipynb", course)
    grading.submit(lab, "blank", course / "release" / lab / f"{lab}.ipynb", course)
    results = grading.autograde(lab, course, cell_timeout_s=120, students=["instructor", "blank"])
    full, blank = results["instructor"], results["blank"]
    assert full.status == "graded" and full.score == full.max_score > 0, full
    assert blank.status == "graded" and blank.score == 0, blank
