"""Graded measured targets and written answers, through nbgrader end to end, on a small lab made
here (the real labs use the same cells: labkit.target in a graded test cell, a manually graded
markdown answer under a question that states its rubric).

The lab: one exercise (a fast sum), a target measured from the student's code at autograde time
(its speed-up over a Python loop), a target that needs a GPU, and a written answer. On a machine
without a GPU, every hand-in is "unmeasurable" (listed for a re-grade), never a silent 0; on one
with a GPU, the GPU target is measured.
"""
import csv
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit import grading

LAB = "00-target"
REPO = Path(__file__).resolve().parent.parent
GPU = torch.cuda.is_available()
pytestmark = pytest.mark.integration

QUESTION = """**Written answer (2 points).** Why is your sum faster than the Python loop, and by how much?
Graded on: names the measured speed-up (1 point); explains it by the interpreter's work per element (1 point)."""
MODEL_ANSWER = "About 50x here: the loop runs bytecode for every element, torch.sum runs one compiled loop."


def _cell(kind, source, grade_id=None, points=None, solution=False):
    cell = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": points is not None, "solution": solution,
                                     "locked": not solution, "schema_version": 3,
                                     **({"points": points} if points is not None else {})}
    return cell


def _lab() -> nbformat.NotebookNode:
    nb = new_notebook(cells=[
        _cell("markdown", "# A lab with a measured target and a written answer"),
        _cell("code", "QUICK = True"),
        _cell("code", "import time\nimport torch\nfrom labkit.target import Target\nprint(f'QUICK={QUICK}')"),
        _cell("code", "def fast_sum(xs):\n    ### BEGIN SOLUTION\n    return float(torch.as_tensor(xs).sum())\n"
                      "    ### END SOLUTION", "ex1-sum", solution=True),
        _cell("code", "assert abs(fast_sum(torch.ones(10)) - 10) < 1e-6, 'ten ones sum to 10'", "ex1-sum-tests", 1),
        _cell("code", "print('DEMO RAN')  # a long demonstration no test depends on"),
        _cell("markdown", "**Target (2 points):** `fast_sum` at least 5x faster than a Python loop, median of 3."),
        _cell("code", "def speedup(n=200_000):\n    xs = torch.rand(n)\n    t0 = time.perf_counter()\n"
                      "    sum(xs.tolist())\n    loop = time.perf_counter() - t0\n    t0 = time.perf_counter()\n"
                      "    fast_sum(xs)\n    return loop / (time.perf_counter() - t0)\n"
                      "print(Target('speed-up over the loop', goal=5, unit='x').measure(speedup).require())",
              "target-speedup", 2),
        _cell("code", "print(Target('GPU figure', goal=1, needs='cuda').measure(lambda: 2.0).require())", "target-gpu", 1),
        _cell("markdown", QUESTION),
        _cell("markdown", MODEL_ANSWER, "answer-why", 2, solution=True),
    ])
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[5].metadata["tags"] = ["skip-at-grading"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", root)
    (root / "notebooks" / LAB).mkdir(parents=True)
    nbformat.write(_lab(), root / "notebooks" / LAB / f"{LAB}.ipynb")
    release = grading.release(LAB, root) / f"{LAB}.ipynb"
    grading.due(LAB, DUE, root)
    grading.submit(LAB, "instructor", root / "notebooks" / LAB / f"{LAB}.ipynb", root, timestamp="2026-12-01 16:59:00 UTC")
    blank = nbformat.read(release, 4)  # untouched, but for its test tagged to be skipped, which must not count
    blank.cells[4].metadata["tags"] = ["skip-at-grading"]
    nbformat.write(blank, root / "blank.ipynb")
    grading.submit(LAB, "blank", root / "blank.ipynb", root)
    slow = nbformat.read(release, 4)  # right answer, slow code, an answer that will need a person
    for cell in slow.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "ex1-sum":
            cell.source = "def fast_sum(xs):\n    return sum(float(x) for x in xs)"
        elif gid == "answer-why":
            cell.source = "It is faster because it is torch."
        elif "parameters" in cell.metadata.get("tags", []):
            cell.source = "QUICK = False  # the full run I did on a GPU node"
    nbformat.write(slow, root / "slow.ipynb")
    grading.submit(LAB, "slow", root / "slow.ipynb", root, timestamp="2026-12-01 19:00:00 UTC")
    solution = _lab().cells[3].source
    hog = nbformat.read(release, 4)  # a correct answer that prints 50 MB, then allocates past its bound
    hog.cells[3].source = solution + CHATTY + HOG
    nbformat.write(hog, root / "hog.ipynb")
    grading.submit(LAB, "hog", root / "hog.ipynb", root)
    return root


CHATTY = "\nimport sys\nsys.stdout.write(('x' * 99 + '\\n') * 500_000)  # 50 MB of output"
HOG = "\nhog = torch.ones(2**30)  # then 4 GiB, past the 2 GiB bound"
MEMORY_GB = 2
DUE = "2026-12-01 17:00:00 UTC"


@pytest.fixture(scope="module")
def results(course):
    return grading.autograde(LAB, course, cell_timeout_s=60, memory_gb=MEMORY_GB)


def test_the_target_is_measured_from_the_student_s_code(results):
    assert results["instructor"].cells["target-speedup"] == (2, 2)
    assert results["slow"].cells["ex1-sum-tests"] == (1, 1), "correct, so the exercise's test passes"
    assert results["slow"].cells["target-speedup"] == (0, 2), "but the target, measured at grading, is missed"
    assert results["blank"].cells["target-speedup"] == (0, 2)


def test_a_gpu_target_is_never_a_silent_zero(results):
    for student in ("instructor", "slow", "blank"):
        r = results[student]
        if GPU:
            assert r.unmeasurable == [] and r.status == "graded", r.reason
        else:
            assert r.status == "unmeasurable" and r.unmeasurable == ["target-gpu"], (student, r.status, r.reason)
            assert "re-grade on a machine that has" in r.reason
    if not GPU:
        assert "unmeasurable" in grading.RERUN and "unmeasurable" in grading.SCORED


def test_written_answers_wait_for_a_person(course, results):
    from nbgrader.api import Gradebook
    assert results["instructor"].pending == ["answer-why"] and results["slow"].pending == ["answer-why"]
    assert results["blank"].pending == [], "an untouched answer cell scores 0 by itself"
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:  # what the formgrader lists to grade
        assert gb.find_grade("answer-why", LAB, LAB, "slow").needs_manual_grade
        assert not gb.find_grade("ex1-sum-tests", LAB, LAB, "slow").needs_manual_grade
    rows = {r["student"]: r for r in csv.DictReader(open(grading.export(LAB, course)))}
    assert rows["slow"]["to grade by hand"] == "answer-why" and rows["slow"]["answer-why (2)"] == ""
    assert rows["blank"]["answer-why (2)"] == "0.0" and rows["blank"]["to grade by hand"] == ""
    # a person grades it (in the formgrader; here through the gradebook it writes to)
    before = grading.scores(LAB, course)["slow"].score
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.find_grade("answer-why", LAB, LAB, "slow").manual_score = 1.0
        gb.db.commit()
    after = grading.scores(LAB, course)["slow"]
    assert after.pending == [] and after.score == before + 1.0
    assert after.status == ("graded" if GPU else "unmeasurable")
    # the class statistics count every answer graded, never the instructor's, still to grade
    assert grading.stats(LAB, course)["answer-why"]["n"] == len(results) - 1


def test_the_rubric_is_in_the_instructor_source_only(course):
    (r,) = grading.rubric(LAB, course)
    assert r["grade_id"] == "answer-why" and r["points"] == 2
    assert r["question"] == QUESTION and r["model_answer"] == MODEL_ANSWER
    release = (course / "release" / LAB / f"{LAB}.ipynb").read_text()
    assert "Graded on: names the measured speed-up" in release and MODEL_ANSWER not in release


def test_50_mb_of_output_still_gets_full_marks(course, results):
    r = results["hog"]
    assert r.cells["ex1-sum-tests"] == (1, 1) and r.cells["target-speedup"] == (2, 2), r.reason
    size = (course / "autograded" / "hog" / LAB / f"{LAB}.ipynb").stat().st_size
    assert size < 5e6, f"nbgrader's LimitOutput keeps the graded notebook small: {size / 1e6:.1f} MB"


def test_memory_is_bounded_per_hand_in_and_the_rest_is_graded(course, results):
    if not grading.sandbox_mod.available():
        pytest.skip("no bubblewrap/prlimit here: hand-ins run unbounded (CI installs bubblewrap)")
    r = results["hog"]
    assert r.status in ("graded", "unmeasurable"), (r.status, r.reason)
    assert r.cells["ex1-sum-tests"] == (1, 1) and r.cells["target-speedup"] == (2, 2)
    nb = nbformat.read(course / "autograded" / "hog" / LAB / f"{LAB}.ipynb", 4)
    (err,) = [o for o in nb.cells[3].outputs if o.output_type == "error"]
    assert "can't allocate memory" in err.evalue, err.evalue


def test_similar_reads_the_hand_ins_and_skips_one_line_answers(course, capsys):
    assert grading.similar(LAB, course, threshold=0.5) == [], "a one-line sum is alike by nature, never a copy"
    assert grading.main(["similar", LAB, "--root", str(course)]) == 0
    assert "0 near-identical pair(s) in 00-target" in capsys.readouterr().out
    with pytest.raises(ValueError, match="lab='nope' has no folder"):
        grading.similar("nope", course)


def test_lateness_comes_from_nbgrader_s_due_date_and_timestamps(course, results):
    rows = {r["student"]: r for r in csv.DictReader(open(grading.export(LAB, course)))}
    assert rows["slow"]["late (h)"] == "2.00" and rows["slow"]["submitted at"] == "2026-12-01 19:00:00 UTC"
    assert rows["instructor"]["late (h)"] == "" and rows["instructor"]["submitted at"] == "2026-12-01 16:59:00 UTC"
    assert rows["blank"]["submitted at"] == "", "no timestamp: nothing to say about lateness"
    with pytest.raises(ValueError, match="when='next friday'"):
        grading.due(LAB, "next friday", course)
    with pytest.raises(ValueError):
        grading.submit(LAB, "zoe", course / "slow.ipynb", course, timestamp="soon")


def test_collect_from_an_lms_download(course, tmp_path):
    import zipfile
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as z:  # Canvas's names; a resubmission carries -1
        z.write(course / "slow.ipynb", f"smithzoe_1001_2001_{LAB}.ipynb")
        z.write(course / "slow.ipynb", f"leeyan_LATE_1002_2002_{LAB}-1.ipynb")
        z.write(course / "slow.ipynb", "notes.txt")
    assert grading.collect(LAB, archive, "canvas", course) == ["leeyan", "smithzoe"]
    for student in ("leeyan", "smithzoe"):
        assert (course / "submitted" / student / LAB / f"{LAB}.ipynb").exists()
    with pytest.raises(ValueError, match="lms must be one of"):
        grading.collect(LAB, archive, "blackboard", course)


def test_grading_runs_quick_mode_whatever_the_hand_in_set(course, results):
    nb = nbformat.read(course / "autograded" / "slow" / LAB / f"{LAB}.ipynb", 4)
    assert nb.cells[1].source == "QUICK = True"
    assert "QUICK=True" in "".join(o.get("text", "") for o in nb.cells[2].outputs)


def test_demonstrations_tagged_in_the_source_are_skipped_and_tests_never_are(course, results):
    nb = nbformat.read(course / "autograded" / "instructor" / LAB / f"{LAB}.ipynb", 4)
    out = "".join(o.get("text", "") for o in nb.cells[5].outputs)
    assert "not run at grading" in out and "DEMO RAN" not in out
    assert results["blank"].cells["ex1-sum-tests"] == (0, 1), "a test tagged by the hand-in still runs"
