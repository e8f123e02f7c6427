"""The grading pipeline, end to end with nbgrader: release every lab, autograde hostile hand-ins of
lab 01 and the blank release of every other lab, in the sandbox. (That every lab's instructor
solution passes all its tests, hidden ones included, nbval checks when it runs the sources.)

Hand-ins, graded in parallel: the instructor source (full marks), the blank release (0, and
grading finishes), one with an infinite loop in exercise 2 (cut by the cell timeout, the rest
still graded, listed for a re-run), one whose kernel dies in exercise 2 (never scored as passing),
one that calls labkit's twin in exercise 1 and snoops from exercise 3, and one that patches a test
helper. The grading machine is fresh: no peaks cached, so the peaks are measured before any
hand-in runs, never inside one's timeout.
"""
import csv
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from labkit import grading, sandbox

LAB = "01-flops"
MAX, AUTO, ANSWER = 24, 21, "answer-mfu"  # lab 01: 21 points autograded (exercises and the target), 3 for a written answer
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


# A correct exercise 1 that also tries to read what a hand-in must not see and to write outside its folder.
SNOOP = """
tried = []
for path in ["{root}/notebooks/01-flops/01-flops.ipynb", "{root}/submitted/instructor/01-flops/01-flops.ipynb",
             "{root}/gradebook.db"]:
    try:
        tried.append(len(open(path, "rb").read()))
    except OSError as e:
        tried.append(type(e).__name__)
try:
    open("{root}/escape.txt", "w").write("x")
    tried.append("wrote")
except OSError as e:
    tried.append(type(e).__name__)
print("SNOOP", tried)
"""


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
    # borrows: exercise 1 calls labkit's twin, and exercise 3 (correct) also snoops (one hand-in, two checks)
    hand_in("borrows", {"ex1-days": "def days_to_train(*args):\n    return flops.training_days(*args)",
                        "ex3-gpt": solutions["ex3-gpt"] + SNOOP.format(root=course)})
    hand_in("patches", {"ex1-days": "import torch\ntorch.testing.assert_close = lambda *a, **k: None\n" + solutions["ex1-days"]})
    return grading.autograde(LAB, course, cell_timeout_s=30)


@pytest.mark.parametrize("lab", LABS)
def test_student_version_has_no_solutions_and_no_hidden_tests(course, lab):
    src = nbformat.read(course / "notebooks" / lab / f"{lab}.ipynb", 4)
    text = (course / "release" / lab / f"{lab}.ipynb").read_text()
    student = nbformat.reads(text, 4)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    student_lines = {line.strip() for c in student.cells for line in c.source.splitlines()}
    import re
    given = {line.strip() for c in src.cells  # lines the students are given anyway: outside the solution markers
             for line in re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "", c.source, flags=re.S).splitlines()
             if c.cell_type == "code" or not c.metadata.get("nbgrader", {}).get("solution")}
    for gid, cell in _cells(src, "solution").items():
        if cell.cell_type == "markdown":  # a written answer: the model answer stays in the instructor source
            assert cell.source.strip() not in text and "YOUR ANSWER HERE" in _cells(student, "solution")[gid].source
            continue
        body = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
        for line in {ln.strip() for ln in body.splitlines() if ln.strip()} - given:
            assert line not in student_lines, f"solution line of {gid} leaked: {line!r}"
        assert "raise NotImplementedError()" in _cells(student, "solution")[gid].source
    for gid, cell in _cells(src, "grade").items():
        if cell.metadata["nbgrader"].get("solution"):
            continue  # a written answer (checked above)
        if "### BEGIN HIDDEN TESTS" in cell.source:  # a measured target has none: it measures again
            hidden = cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            assert hidden.strip() not in text, f"hidden tests of {gid} leaked"
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0].strip()
        assert _cells(student, "grade")[gid].source.strip() == visible  # visible asserts stay
    points = sum(c.metadata["nbgrader"]["points"] for c in _cells(student, "grade").values())
    assert points == sum(c.metadata["nbgrader"]["points"] for c in _cells(src, "grade").values()) >= 6


def errors(course, student, lab=LAB) -> list[str]:
    """Error outputs of any cell of an autograded notebook (what nbval would fail on)."""
    nb = nbformat.read(course / "autograded" / student / lab / f"{lab}.ipynb", 4)
    return [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


def test_instructor_source_gets_full_marks(results, course):
    r = results["instructor"]
    assert r.status == "graded" and r.score == AUTO and r.max_score == MAX and r.pending == [ANSWER]
    assert errors(course, "instructor") == []  # every cell ran: this run is the notebook's test too


def test_peaks_were_measured_before_the_hand_ins_ran(results, course, fresh_cache):
    # the grader measured them (one entry, steady or not); every hand-in only read them
    peaks = json.loads((fresh_cache / "peaks.json").read_text())
    assert len(peaks) == 1 and next(iter(peaks.values()))["matmul_flop_per_s"]["fp32"] > 0
    graded = (course / "autograded" / "instructor" / LAB / f"{LAB}.ipynb").read_text()
    assert "measured peaks" in graded and "first time only" not in graded


def test_blank_release_gets_zero_and_grading_finishes(results):
    r = results["blank"]
    assert r.status == "graded" and r.score == 0 and r.max_score == MAX
    assert len(r.cells) == 10 and all(not score for score, _ in r.cells.values())  # 8 exercises, the target, the answer


def test_infinite_loop_is_cut_and_other_exercises_still_graded(results):
    r = results["loops"]
    assert r.status == "timeout" and r.timeouts == ["ex2-attention"] and "re-run" in grading.STATUSES["timeout"]
    assert r.cells["ex2-attention-tests"] == (0, 2)
    others = {gid: s for gid, s in r.cells.items() if gid not in ("ex2-attention-tests", ANSWER)}
    assert others and all(score == mx for score, mx in others.values())
    assert r.score == AUTO - 2


def test_calling_labkit_s_implementation_earns_zero_for_that_exercise(results):
    r = results["borrows"]
    assert r.status == "flagged" and r.cells["ex1-days-tests"] == (0, 2) and r.score == AUTO - 2
    assert "labkit.flops.training_days" in r.reason


def test_patching_a_test_helper_earns_zero_for_every_later_test(results):
    r = results["patches"]  # every test passed in the kernel; the audit outside it says why they don't count
    assert r.status == "flagged" and r.score == 0 and "torch.testing.assert_close" in r.reason


def test_hand_in_cannot_read_other_work_or_write_outside_its_folder(results, course):
    if not sandbox.available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must grade in the sandbox: install bubblewrap")
        pytest.skip("bubblewrap (bwrap) is not available here")
    r = results["borrows"]                     # its exercise 3 snoops; only exercise 1's borrowing costs points
    assert r.score == AUTO - 2 and r.cells["ex3-gpt-tests"][0] == r.cells["ex3-gpt-tests"][1]
    graded = nbformat.read(course / "autograded" / "borrows" / LAB / f"{LAB}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in graded.cells for o in c.get("outputs", []))
    line = printed.split("SNOOP ")[1].splitlines()[0]
    assert line == "['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'OSError']", line  # read-only
    assert not (course / "escape.txt").exists()


def test_dead_kernel_is_not_scored_as_passing(results):
    r = results["dies"]
    assert r.status == "died" and r.score is None
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
    assert r.status == "killed" and r.score is None
    assert not (course / "autograded" / "stubborn" / LAB).exists()
    assert grading.scores(LAB, course, ["stubborn"])["stubborn"].status == "killed"  # remembered


def test_cli_lists_hand_ins_to_re_run_and_export_tells_statuses_apart(results, course, capsys):
    assert grading.main(["scores", LAB, "--root", str(course)]) == 0
    out = capsys.readouterr().out
    assert "instructor" in out and "died" in out and "timeout" in out
    assert "re-run" in out and "dies" in out.split("re-run:")[1] and "loops" in out.split("re-run:")[1]
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_student("absent")  # on the roster, handed nothing in
    path = grading.export(LAB, course)
    rows = {r["student"]: r for r in csv.DictReader(open(path))}
    assert rows["instructor"]["status"] == "graded" and float(rows["instructor"][f"score ({MAX})"]) == AUTO
    assert rows["blank"]["status"] == "graded" and float(rows["blank"][f"score ({MAX})"]) == 0
    assert rows["loops"]["status"] == "timeout" and float(rows["loops"]["ex2-attention-tests (2)"]) == 0
    assert float(rows["loops"]["ex1-days-tests (2)"]) == 2
    assert rows["dies"]["status"] == "died" and rows["dies"][f"score ({MAX})"] == ""  # never a silent 0
    assert rows["absent"]["status"] == "missing" and rows["absent"][f"score ({MAX})"] == ""


def test_class_statistics_per_exercise_and_plot(results, course, capsys):
    st = grading.stats(LAB, course)
    # scored: instructor 18, blank 0, loops 16 (ex2 0), borrows 16 (ex1 0), patches 0
    ex1, ex2 = st["ex1-days-tests"], st["ex2-attention-tests"]
    assert ex1["n"] == 5 and ex1["points"] == 2 and ex1["counts"] == {0.0: 3, 2.0: 2}
    assert ex2["counts"] == {0.0: 3, 2.0: 2} and ex2["full"] == 0.4 and abs(ex2["mean"] - 0.8) < 1e-9
    assert st["status"]["died"] == 1 and st["status"]["flagged"] == 2
    assert grading.main(["stats", LAB, "--root", str(course)]) == 0
    assert "ex1-days-tests" in capsys.readouterr().out
    png = course / f"class-{LAB}.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_rerun_grades_only_what_needs_it(results, course):
    again = grading.autograde(LAB, course, cell_timeout_s=30, rerun=True, students=["instructor", "dies"])
    assert list(again) == ["dies"] and again["dies"].status == "died"  # the graded one is left alone


def test_bad_arguments_are_clear(course, tmp_path):
    with pytest.raises(ValueError, match="lab='99-nope'"):
        grading.release("99-nope", course)
    with pytest.raises(FileNotFoundError, match="nbgrader_config.py"):
        grading.release(LAB, tmp_path)
    with pytest.raises(ValueError, match="student"):
        grading.submit(LAB, "../evil", course / "blank.ipynb", course)


OTHERS = ["07-parallel", "08-memory", "09-pipeline", "04-lowbit", "05-pruning", "03-int8", "06-energy", "02-kernels", "10-io"]  # slowest first


@pytest.fixture(scope="module")
def blanks(course):
    """The blank release of every other lab, graded two labs at a time (one hand-in each)."""
    from concurrent.futures import ThreadPoolExecutor
    assert sorted(OTHERS) == [lab for lab in LABS if lab != LAB], "a new lab: add it to OTHERS"
    for lab in OTHERS:
        grading.submit(lab, "blank", course / "release" / lab / f"{lab}.ipynb", course)
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda lab: grading.autograde(lab, course, cell_timeout_s=120, students=["blank"],
                                                      threads=1)["blank"], OTHERS)
        return dict(zip(OTHERS, done))


@pytest.mark.parametrize("lab", OTHERS)
def test_every_other_lab_grades_the_blank_release_zero_in_the_sandbox(blanks, lab):
    # no test passes without a solution; the given cells all run in the sandbox
    blank = blanks[lab]
    assert blank.status == "graded" and blank.score == 0 and blank.max_score > 0, \
        f"{lab}: {blank.status} {blank.score}/{blank.max_score} {blank.reason}\n{blank.log[-3000:]}"
    assert blank.cells and all(score == 0 for score, _ in blank.cells.values())


def test_feedback_shows_no_hidden_test_code_nor_its_traceback(results, course):
    import html
    import re
    src = nbformat.read(course / "notebooks" / LAB / f"{LAB}.ipynb", 4)
    hidden = {ln.strip() for c in _cells(src, "grade").values() if "### BEGIN HIDDEN TESTS" in c.source
              for ln in c.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0].splitlines()
              if len(ln.strip()) > 12}  # distinctive lines, not "import random"
    shown = {ln.strip() for c in src.cells for part in re.split(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS",
                                                                 c.source, flags=re.S) for ln in part.splitlines()}
    hidden -= shown  # lines the notebook also shows elsewhere are no leak
    pages = grading.feedback(LAB, course, ["instructor", "loops"])
    for student, page in pages.items():
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert "days_to_train" in text  # the student's own code is there
        leaked = [ln for ln in hidden if ln in text]
        assert not leaked, (student, leaked)
    assert "NameError" in html.unescape(re.sub(r"<[^>]+>", "", pages["loops"].read_text()))  # the failure's name stays
