"""Grading with nbgrader: release student versions, autograde hand-ins, read the scores.

The course root (the folder holding nbgrader_config.py) follows nbgrader's layout:
    notebooks/<lab>/<lab>.ipynb             instructor source (solutions, hidden tests)
    release/<lab>/                          student version (nbgrader generate_assignment)
    submitted/<student>/<lab>/<lab>.ipynb   a hand-in
    autograded/<student>/<lab>/             executed and scored (nbgrader autograde)
This module drives the `nbgrader` command and reads `gradebook.db`. It adds what nbgrader
leaves to the reader: each hand-in gets a status (STATUSES), so that a hand-in that could not be
executed to the end is never read as a score, and one that ran into a timeout is listed for a
re-run instead of passing for a wrong answer. Hand-ins are graded in parallel, one process each.

Command line:
    python -m labkit.grading autograde 01-flops [--student S ...] [--rerun] [--workers N] [--timeout S]
    python -m labkit.grading scores 01-flops          # the table again, from the gradebook
    python -m labkit.grading export 01-flops          # grades-01-flops.csv: per-exercise columns, status
    python -m labkit.grading stats 01-flops           # per exercise: mean, share at full marks and at 0; a plot
    python -m labkit.grading feedback 01-flops        # feedback HTML, hidden tests and their tracebacks removed
    python -m labkit.grading rubric 01-flops          # the written answers to grade by hand: question, model answer
    python -m labkit.grading workspace                # a student's own copies of the labs, in mywork/
"""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from . import sandbox as sandbox_mod

REPO_ROOT = Path(__file__).resolve().parent.parent

# What each status means, for the instructor. Only the SCORED ones carry a score.
STATUSES = {
    "graded": "executed to the end; the score is the hidden tests'",
    "timeout": "executed to the end, but cells ran past the cell timeout and their tests scored 0: "
               "re-run with more time (--rerun --timeout S)",
    "died": "the kernel died (a crash, os._exit, out of memory): no score; look at the log, then re-run",
    "killed": "code that ignored the interrupt at the cell timeout, or ran past the limit for the whole hand-in: "
              "no score; look, then re-run",
    "failed": "nbgrader could not grade it (see the log): no score",
    "unmeasurable": "executed to the end, but a graded target needs hardware this machine lacks (e.g. a GPU) "
                    "and its test scored 0 here: re-grade it on a machine that has it",
    "flagged": "executed to the end, but the audit of its code found something (labkit's own implementation "
               "of an exercise, a patched module, code the grader cannot read): affected tests score 0; see why",
    "missing": "in the gradebook's roster, but no hand-in of this lab",
}
SCORED = ("graded", "timeout", "unmeasurable", "flagged")         # the statuses that carry a score
RERUN = ("timeout", "unmeasurable", "died", "killed", "failed")   # the statuses --rerun grades again
STATUS_DIR = "grading-status"                     # <root>/grading-status/<lab>/<student>.json


@dataclass
class Result:
    """One student's result on one lab (status: one of STATUSES)."""
    student: str
    status: str
    score: float | None = None        # None unless the hand-in was executed to the end
    max_score: float | None = None
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    timeouts: list[str] = field(default_factory=list)  # cells that ran past the cell timeout
    flags: list[str] = field(default_factory=list)     # what the audit found (labkit.audit.Finding)
    unmeasurable: list[str] = field(default_factory=list)  # target tests this machine could not measure
    pending: list[str] = field(default_factory=list)   # answers awaiting a manual grade (formgrader)
    reason: str = ""                  # one line: why the status is not "graded"
    log: str = ""                     # the end of nbgrader's account, for anything not graded


def _root(root) -> Path:
    root = Path(root or REPO_ROOT)
    if not (root / "nbgrader_config.py").exists():
        raise FileNotFoundError(f"root={str(root)!r} is not a course root: it has no nbgrader_config.py")
    return root


def _check_lab(root: Path, lab: str) -> None:
    if not (root / "notebooks" / lab).is_dir():
        have = sorted(p.name for p in (root / "notebooks").glob("*") if p.is_dir())
        raise ValueError(f"lab={lab!r} has no folder notebooks/{lab}/; labs here: {have}")


def nbgrader(*args: str, root=None, timeout_s: float | None = None, env=None) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS...` in the course root with this Python; return the finished process.

    timeout_s bounds the whole command: past it, nbgrader and every process it started (the
    student's kernel included) are killed, and the return code is -9. This catches what the
    per-cell timeout cannot, such as code that ignores the interrupt nbgrader sends.
    env: variables added to this process's environment (e.g. the kernel's thread count).
    """
    cmd = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader calls the `alembic` command by name: put this environment's bin/ first on PATH.
    env = {**os.environ, **(env or {}),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.Popen(cmd, cwd=_root(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\nlabkit.grading: killed after {timeout_s} s (timeout_s)"
        return subprocess.CompletedProcess(cmd, -9, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def release(lab: str, root=None) -> Path:
    """Generate the student version of `lab` into release/<lab>/ and return that folder."""
    root = _root(root)
    _check_lab(root, lab)
    p = nbgrader("generate_assignment", lab, "--force", root=root)
    if p.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{p.stdout}\n{p.stderr}")
    return root / "release" / lab


def feedback(lab: str, root=None, students=None) -> dict[str, Path]:
    """Feedback HTML for each graded hand-in of `lab` (nbgrader generate_feedback) into
    feedback/<student>/<lab>/, with the hidden tests' code removed and, for the test cells, each
    error reduced to its one-line message (a traceback would quote the hidden lines): see
    nbgrader_config.py's GenerateFeedback.preprocessors and HideTestTracebacks."""
    root = _root(root)
    _check_lab(root, lab)
    students = students or sorted(p.parent.name for p in (root / "autograded").glob(f"*/{lab}"))
    out = {}
    for student in students:
        p = nbgrader("generate_feedback", lab, f"--student={student}", "--force", root=root)
        html = root / "feedback" / student / lab / f"{lab}.html"
        if p.returncode != 0 or not html.exists():
            raise RuntimeError(f"nbgrader generate_feedback {lab} --student={student} failed:\n{p.stdout}\n{p.stderr}")
        out[student] = html
    return out


class HideTestTracebacks(Preprocessor):
    """Feedback (nbconvert preprocessor): in a test cell's error output keep "Name: message" and
    drop the traceback, which would quote the hidden test's lines."""
    enabled = Bool(True)  # nbconvert preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        g = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and g.get("grade") and not g.get("solution"):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    o["traceback"] = [f"{o.get('ename', 'Error')}: {o.get('evalue', '')}"]
        return cell, resources


def workspace(dest=None, root=None) -> dict[str, str]:
    """The student's own copy of every lab, in `dest` (default <root>/mywork/): the student
    version (release/<lab>/, made when missing or older than the source) is copied there once,
    and a copy already there is never overwritten, edited or not. The copies name the
    "labkit" kernel (Python (labkit), which `make lab` registers). Returns {lab: what happened}."""
    import nbformat
    root = _root(root)
    dest = Path(dest or root / "mywork")
    done = {}
    for src in sorted((root / "notebooks").glob("*/*.ipynb")):
        lab = src.parent.name
        mine, rel = dest / lab / src.name, root / "release" / lab / src.name
        if not rel.exists() or rel.stat().st_mtime < src.stat().st_mtime:
            release(lab, root)
        if mine.exists():
            newer = rel.stat().st_mtime > mine.stat().st_mtime and rel.read_bytes() != mine.read_bytes()
            done[lab] = "kept yours" + (f" (a newer release is in {rel.parent})" if newer else "")
            continue
        shutil.copytree(rel.parent, mine.parent, dirs_exist_ok=True)
        nb = nbformat.read(mine, 4)
        nb.metadata["kernelspec"] = {"name": "labkit", "display_name": "Python (labkit)", "language": "python"}
        nbformat.write(nb, mine)
        done[lab] = "new"
    return done


def rubric(lab: str, root=None) -> list[dict]:
    """The written answers of `lab` that a person grades (nbgrader "manually graded answer"
    cells), as the formgrader's grader needs them: for each, its grade_id, its points, the
    question (the markdown cell above it, which states what earns the points) and the model
    answer from the instructor source (which the student version does not contain)."""
    import nbformat
    root = _root(root)
    _check_lab(root, lab)
    nb = nbformat.read(root / "notebooks" / lab / f"{lab}.ipynb", 4)
    out = []
    for i, cell in enumerate(nb.cells):
        g = cell.metadata.get("nbgrader", {})
        if g.get("grade") and g.get("solution"):  # graded and written by the student: graded by a person
            question = next((c.source for c in reversed(nb.cells[:i]) if c.cell_type == "markdown"), "")
            out.append({"grade_id": g["grade_id"], "points": g["points"], "question": question,
                        "model_answer": cell.source})
    return out


def submit(lab: str, student: str, notebook, root=None) -> Path:
    """Place a hand-in (a notebook file) at submitted/<student>/<lab>/<lab>.ipynb."""
    root = _root(root)
    _check_lab(root, lab)
    if not student or not student.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"student must be letters, digits, '-' or '_', got {student!r}")
    dest = root / "submitted" / student / lab / f"{lab}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest)
    return dest


def warm_peaks_cache(root=None, timeout_s: float = 120, env=None) -> None:
    """Measure this machine's peaks once, before any hand-in runs (a few seconds, cached).

    Every lab starts with labkit.setup(), which measures the peaks on a machine that has none
    cached. On a fresh grading machine that time would be charged to the first hand-in's cell
    timeout; measured here, it is charged to nobody, and every hand-in reads the same peaks.
    """
    code = "import labkit; labkit.hw.measured_peaks(progress=False)"
    p = subprocess.run([sys.executable, "-c", code], cwd=_root(root), capture_output=True, text=True,
                       timeout=timeout_s, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"measuring this machine's peaks before grading failed:\n{p.stderr[-3000:]}")


def autograde(lab: str, root=None, cell_timeout_s: int | None = None, students=None,
              timeout_s: float = 1800, workers: int | None = None, rerun: bool = False,
              sandbox: bool | None = None) -> dict[str, Result]:
    """Autograde every hand-in of `lab` (or only `students`) and return their results.

    cell_timeout_s overrides the per-cell timeout of nbgrader_config.py; timeout_s bounds one
    student's whole hand-in (then it is killed: status "killed"). workers: hand-ins graded at
    once, each in its own nbgrader process whose kernel gets cores // workers threads (default:
    one worker per core). rerun=True grades only the hand-ins whose last status is in RERUN.
    sandbox: run each kernel in bubblewrap (labkit.sandbox); None = when bwrap works here, with a
    warning when it does not; True = refuse to grade without it.
    nbgrader's own exit status decides nothing: each result is read back from the gradebook and
    the autograded folder, and its status saved in grading-status/<lab>/.
    """
    root = _root(root)
    _check_lab(root, lab)
    students = students or sorted(p.parent.name for p in (root / "submitted").glob(f"*/{lab}"))
    if rerun:
        last = _load_statuses(root, lab)
        students = [s for s in students if last.get(s, {}).get("status", "failed") in RERUN]
    if not students:
        raise FileNotFoundError(f"no hand-ins of {lab!r} to grade under {root / 'submitted'}"
                                + (" (--rerun: none needs a re-run)" if rerun else ""))
    cores = os.cpu_count() or 1
    workers = min(workers or cores, len(students))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if sandbox is None:
        sandbox = sandbox_mod.available()
        if not sandbox:
            print("labkit.grading: WARNING: bubblewrap (bwrap) is missing or not permitted here: hand-ins run "
                  "with the grader's rights. Install it (Debian: apt-get install bubblewrap).", file=sys.stderr)
    elif sandbox and not sandbox_mod.available():
        raise RuntimeError("sandbox=True but bubblewrap (bwrap) is missing or cannot create namespaces here")
    threads = str(max(1, cores // workers))  # workers x threads = cores: no oversubscription
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    warm_peaks_cache(root, env=env)
    # always the kit's python3 kernel (sandboxed when sandbox is on), whatever kernel the hand-in names
    args = ["autograde", lab, "--force", "--create", "--Execute.kernel_name=python3"]
    if cell_timeout_s is not None:
        args.append(f"--Execute.timeout={int(cell_timeout_s)}")

    def grade(student: str) -> Result:
        with tempfile.TemporaryDirectory(prefix="labkit-grade-") as scratch:
            workdir = root / "autograded" / student / lab
            extra, more_env = sandbox_mod.nbgrader_args(root, workdir, Path(scratch)) if sandbox else ([], {})
            p = nbgrader(*args, *extra, f"--student={student}", root=root, timeout_s=timeout_s,
                         env={**env, **more_env})
        if p.returncode == -9:  # killed mid-run: whatever nbgrader left behind is not a result
            shutil.rmtree(root / "autograded" / student / lab, ignore_errors=True)
        r = _gradebook_results(lab, root, [student])[student]  # this run's, not a saved status
        log = p.stdout + p.stderr
        if p.returncode == -9:
            r = Result(student, "killed", reason=f"ran past {timeout_s:g} s for the whole hand-in")
        elif r.status == "failed" and "Kernel died" in log:
            r.status, r.reason = "died", "the kernel died"
        elif r.status == "failed" and "CellTimeoutError" in log:
            r.status, r.reason = "killed", "a cell ignored the interrupt at the cell timeout; nbgrader gave up"
        elif r.status == "failed":
            r.reason = "nbgrader did not finish it"
        else:
            r = _audit(root, lab, r)
            done = root / "autograded" / student / lab / f"{lab}.ipynb"
            r.timeouts = _cells_with_error(done, "CellTimeoutError")
            r.unmeasurable = _cells_with_error(done, "NotMeasurableHere")
            if r.unmeasurable and not r.timeouts:  # before "flagged", after "timeout": it needs other hardware
                r.status = "unmeasurable"
                r.reason = "; ".join([f"{', '.join(r.unmeasurable)}: a target this machine cannot measure "
                                      "(see labkit.target); re-grade on a machine that has what it needs"] + r.flags)
            if r.timeouts:  # before "flagged": a re-run is what it needs first
                r.status = "timeout"
                r.reason = "; ".join([f"{len(r.timeouts)} cell(s) ran past the cell timeout: "
                                      f"{', '.join(r.timeouts)}"] + r.flags)
        if r.status != "graded":
            r.log = log[-3000:]
        _save_status(root, lab, r)
        return r

    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(students, pool.map(grade, students)))


def _audit(root: Path, lab: str, r: Result) -> Result:
    """Audit the code of a graded hand-in (labkit.audit, in this process, not the student's
    kernel) and put the findings in the gradebook: the tests they concern get a manual score of 0
    (what the formgrader and the export show), and the status becomes "flagged". Re-grading
    starts from the auto scores again."""
    import nbformat
    from nbgrader.api import Gradebook
    from .audit import audit
    source = nbformat.read(root / "notebooks" / lab / f"{lab}.ipynb", 4)
    findings = audit(nbformat.read(root / "autograded" / r.student / lab / f"{lab}.ipynb", 4), source)
    zero = {t for f in findings for t in f.tests}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for gid in r.cells:
            grade = gb.find_grade(gid, lab, lab, r.student)
            if grade.auto_score is not None:  # never touch a manually graded answer
                grade.manual_score = 0.0 if gid in zero else None
        gb.db.commit()
    r = _gradebook_results(lab, root, [r.student])[r.student]
    if findings:
        r.status, r.flags = "flagged", [str(f) for f in findings]
        r.reason = "; ".join(r.flags)
    return r


def _cells_with_error(path: Path, ename: str) -> list[str]:
    """The cells of an autograded notebook whose output is an `ename` error (CellTimeoutError: cut
    at the cell timeout; NotMeasurableHere: a target needing other hardware), each by its
    grade_id, or "cell N" for an ungraded cell."""
    import nbformat
    nb = nbformat.read(path, 4)
    out = []
    for i, cell in enumerate(nb.cells):
        if any(o.get("ename") == ename for o in cell.get("outputs", [])):
            out.append(cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}")
    return out


def _save_status(root: Path, lab: str, r: Result) -> None:
    path = root / STATUS_DIR / lab / f"{r.student}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in asdict(r).items() if k != "cells"}, indent=1))


def _load_statuses(root: Path, lab: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / STATUS_DIR / lab).glob("*.json"))}


def scores(lab: str, root=None, students=None) -> dict[str, Result]:
    """Each student's result on `lab`: the score from gradebook.db, the status from the last
    autograde (grading-status/<lab>/), and "missing" for a student of the gradebook's roster
    (`nbgrader db student import`) with no hand-in (only when `students` is None).
    """
    root = _root(root)
    out = _gradebook_results(lab, root, students)
    last = _load_statuses(root, lab)
    for student, r in out.items():
        saved = last.get(student, {})
        if r.status == "failed" and saved.get("status") in ("died", "killed"):
            r.status, r.reason, r.log = saved["status"], saved["reason"], saved.get("log", "")
        elif r.status == "graded" and saved.get("status") in ("timeout", "unmeasurable", "flagged"):
            r.status, r.reason = saved["status"], saved["reason"]
            r.timeouts, r.flags = saved.get("timeouts", []), saved.get("flags", [])
            r.unmeasurable = saved.get("unmeasurable", [])
    return out


def _gradebook_results(lab: str, root: Path, students=None) -> dict[str, Result]:
    """Scores as the gradebook has them. A student counts as graded only if nbgrader finished
    their notebook: its executed copy exists in autograded/<student>/<lab>/ and every graded
    cell has a score. Otherwise the result is "failed" with score None (nbgrader removes the
    folder when execution breaks off, e.g. when the kernel dies)."""
    from nbgrader.api import Gradebook, MissingEntry
    if not (root / "gradebook.db").exists():
        raise FileNotFoundError(f"no gradebook at {root / 'gradebook.db'}: release and autograde {lab!r} first")
    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        roster = []
        if students is None:
            try:
                students = [s.student.id for s in gb.assignment_submissions(lab)]
            except MissingEntry:
                raise ValueError(f"lab={lab!r} is not in the gradebook: release it first") from None
            roster = [s.id for s in gb.students if s.id not in students]
        for student in students:
            done = (root / "autograded" / student / lab / f"{lab}.ipynb").exists()
            try:
                sub = gb.find_submission(lab, student)
            except MissingEntry:
                out[student] = Result(student, "failed", reason="not in the gradebook")
                continue
            grades = [g for nb in sub.notebooks for g in nb.grades]
            cells = {g.name: (g.score, g.max_score) for g in grades}
            if not done:
                out[student] = Result(student, "failed", cells=cells, reason="nbgrader did not finish it")
            else:
                # a written answer nobody has graded yet: no auto score (nbgrader leaves it to a person)
                pending = [g.name for g in grades if g.auto_score is None and g.manual_score is None]
                out[student] = Result(student, "graded", sub.score, sub.max_score, cells, pending=pending)
        for student in roster:
            out[student] = Result(student, "missing", reason="no hand-in")
    return out


def export(lab: str, root=None, path=None) -> Path:
    """Write grades-<lab>.csv for an LMS: one row per student with the status, the total, one
    column per graded cell ("<grade_id> (<points>)"), the written answers still to grade by hand
    (formgrader) and the reason for any status but graded. Only the SCORED statuses have scores;
    the others are empty, never a silent 0, and so is an answer nobody has graded yet."""
    root = _root(root)
    results = scores(lab, root)
    ids = sorted({gid: mx for r in results.values() for gid, (_, mx) in r.cells.items()}.items())
    path = Path(path or root / f"grades-{lab}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        total = sum(mx for _, mx in ids)
        w.writerow(["student", "status", f"score ({total:g})"] + [f"{gid} ({mx:g})" for gid, mx in ids]
                   + ["to grade by hand", "reason"])
        for r in sorted(results.values(), key=lambda r: r.student):
            scored = r.status in SCORED
            w.writerow([r.student, r.status, r.score if scored else ""]
                       + [r.cells.get(gid, ("", 0))[0] if scored and gid not in r.pending else "" for gid, _ in ids]
                       + [" ".join(r.pending), r.reason])
    return path


def stats(lab: str, root=None) -> dict[str, dict]:
    """Class statistics per graded cell of `lab`, over the hand-ins that carry a score (SCORED):
    {grade_id: {"points", "n", "mean", "full" (share at full marks), "zero" (share at 0),
    "counts" {score: hand-ins}}}, plus "status": {status: hand-ins} for the whole class."""
    results = scores(lab, root)
    scored = [r for r in results.values() if r.status in SCORED]
    out = {}
    for gid in sorted({g for r in scored for g in r.cells}):
        got = [r.cells[gid][0] for r in scored if gid in r.cells and gid not in r.pending]
        if not got:  # a written answer nobody has graded yet
            continue
        mx = max(r.cells[gid][1] for r in scored if gid in r.cells)
        out[gid] = {"points": mx, "n": len(got), "mean": sum(got) / len(got),
                    "full": sum(g == mx for g in got) / len(got), "zero": sum(g == 0 for g in got) / len(got),
                    "counts": {v: got.count(v) for v in sorted(set(got))}}
    out["status"] = {st: sum(r.status == st for r in results.values()) for st in STATUSES
                     if any(r.status == st for r in results.values())}
    return out


def plot_stats(st: dict, lab: str, path=None) -> Path:
    """One bar per exercise: the class's mean score as a share of its points, with the shares at
    full marks and at zero beside it; saved as class-<lab>.png (or `path`)."""
    import matplotlib.pyplot as plt  # (no backend switch: headless machines pick Agg themselves)

    from .plots import use_style
    use_style()
    ids = [g for g in st if g != "status"]
    x = range(len(ids))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(ids)), 3.8))
    for k, (what, off) in enumerate((("mean", -0.27), ("full", 0.0), ("zero", 0.27))):
        vals = [st[g][what] / st[g]["points"] if what == "mean" else st[g][what] for g in ids]
        ax.bar([i + off for i in x], [100 * v for v in vals], width=0.27,
               label={"mean": "mean score", "full": "full marks", "zero": "zero"}[what])
    ax.set_xticks(list(x), ids, rotation=20, ha="right")
    ax.set_ylabel("% of points / % of hand-ins")
    ax.set_ylim(0, 105)
    n = sum(st["status"].values())
    ax.set_title(f"{lab}: {n} students\n{', '.join(f'{v} {k}' for k, v in st['status'].items())}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    path = Path(path or f"class-{lab}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.grading", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("workspace", help="copy every lab's student version into your own folder (never overwritten)")
    p.add_argument("--dest", default=None)
    p.add_argument("--root", default=None)
    for name in ("release", "autograde", "scores", "export", "feedback", "stats", "rubric"):
        p = sub.add_parser(name)
        p.add_argument("lab")
        p.add_argument("--root", default=None)
        if name == "autograde":
            p.add_argument("--student", action="append", help="grade only this student (repeatable)")
            p.add_argument("--rerun", action="store_true", help="grade only the hand-ins to re-run: " + ", ".join(RERUN))
            p.add_argument("--workers", type=int, default=None, help="hand-ins at once (default: one per core)")
            p.add_argument("--timeout", type=int, default=None, help="seconds per cell (nbgrader_config.py: 300)")
        if name == "export":
            p.add_argument("--out", default=None, help="CSV path (default: grades-LAB.csv in the course root)")
    a = ap.parse_args(argv)
    if a.cmd == "workspace":
        for lab, what in workspace(a.dest, a.root).items():
            print(f"{lab}: {what}")
        return 0
    if a.cmd == "release":
        print(release(a.lab, a.root))
        return 0
    if a.cmd == "export":
        print(export(a.lab, a.root, a.out))
        return 0
    if a.cmd == "stats":
        from tabulate import tabulate
        st = stats(a.lab, a.root)
        print(tabulate([[g, f"{v['mean']:.2f} / {v['points']:g}", f"{v['full']:.0%}", f"{v['zero']:.0%}", v["n"]]
                        for g, v in st.items() if g != "status"],
                       headers=["exercise", "mean", "full marks", "zero", "hand-ins"]))
        print("statuses:", st["status"], "| plot:", plot_stats(st, a.lab, _root(a.root) / f"class-{a.lab}.png"))
        return 0
    if a.cmd == "rubric":
        answers = rubric(a.lab, a.root)
        for r in answers:
            print(f"== {r['grade_id']} ({r['points']:g} points)\n-- question:\n{r['question']}\n"
                  f"-- model answer:\n{r['model_answer']}\n")
        print(f"{len(answers)} written answer(s) in {a.lab} to grade by hand in the formgrader (make lab-instructor)")
        return 0
    if a.cmd == "feedback":
        for student, html in feedback(a.lab, a.root).items():
            print(f"{student}: {html}")
        return 0
    if a.cmd == "autograde":
        results = autograde(a.lab, a.root, a.timeout, a.student, workers=a.workers, rerun=a.rerun)
    else:
        results = scores(a.lab, a.root)
    from tabulate import tabulate
    print(tabulate([[r.student, r.status, r.score, r.max_score, " ".join(r.pending), r.reason] for r in results.values()],
                   headers=["student", "status", "score", "max", "to grade by hand", "why"]))
    again = [r.student for r in results.values() if r.status in RERUN]
    if again:
        print(f"\n{len(again)} hand-in(s) to look at and re-run: {', '.join(again)}\n"
              f"  python -m labkit.grading autograde {a.lab} --rerun --timeout 600")
    if not results:
        print(f"no hand-ins of {a.lab} were graded")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
