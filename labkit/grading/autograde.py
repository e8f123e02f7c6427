"""Autograde hand-ins in parallel, each in a sandbox, and read back a status and a score for each.

nbgrader's own exit status decides nothing here: each result is read from the gradebook and the
autograded folder, and given a status (STATUSES), so that a hand-in that could not be executed to
the end is never read as a score, and one that ran into a timeout or needs other hardware is
listed for a re-run instead of passing for a wrong answer.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import sandbox as sandbox_mod
from .course import _check_lab, _root, nbgrader


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
    submitted_at: str = ""            # the hand-in's timestamp (timestamp.txt), when it has one
    late_s: float = 0.0               # seconds past the lab's due date (nbgrader's count)
    reason: str = ""                  # one line: why the status is not "graded"
    log: str = ""                     # the end of nbgrader's account, for anything not graded


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
              sandbox: bool | None = None, memory_gb: float | None = None,
              shard: tuple[int, int] | None = None, threads: int | None = None) -> dict[str, Result]:
    """Autograde every hand-in of `lab` (or only `students`) and return their results.

    cell_timeout_s overrides the per-cell timeout of nbgrader_config.py; timeout_s bounds one
    student's whole hand-in (then it is killed: status "killed"). workers: hand-ins graded at
    once, each in its own nbgrader process whose kernel gets cores // workers threads (default:
    one worker per core). rerun=True grades only the hand-ins whose last status is in RERUN.
    sandbox: run each kernel in bubblewrap (labkit.sandbox); None = when bwrap works here, with a
    warning when it does not; True = refuse to grade without it. memory_gb: each sandboxed
    kernel's memory bound (default: 80 % of this machine's memory shared among the workers); an
    allocation past it fails in its cell, and the rest of the hand-in is graded. shard=(k, n):
    grade only every n-th hand-in from the k-th (students sorted): task k of a SLURM job array of
    n (scripts/grade.sbatch), so that the n tasks together grade each hand-in once. threads:
    each kernel's thread count, when several autograde calls share the machine.
    nbgrader's own exit status decides nothing: each result is read back from the gradebook and
    the autograded folder, and its status saved in grading-status/<lab>/.
    """
    root = _root(root)
    _check_lab(root, lab)
    students = students or sorted(p.parent.name for p in (root / "submitted").glob(f"*/{lab}"))
    if shard is not None:
        k, n = shard
        if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
            raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
        students = sorted(students)[k::n]
        if not students:
            print(f"labkit.grading: shard {k}/{n}: no hand-ins for this task", file=sys.stderr)
            return {}
    if rerun:
        last = _load_statuses(root, lab)
        students = [s for s in students if last.get(s, {}).get("status", "failed") in RERUN]
    if not students:
        raise FileNotFoundError(f"no hand-ins of {lab!r} to grade under {root / 'submitted'}"
                                + (" (--rerun: none needs a re-run)" if rerun else ""))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # a job's cores
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
    memory = int(memory_gb * 2**30) if memory_gb else int(0.8 * sandbox_mod.ram_bytes() / workers)
    threads = str(threads or max(1, cores // workers))  # workers x threads = cores: no oversubscription
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    warm_peaks_cache(root, env=env)
    # always the kit's python3 kernel (sandboxed when sandbox is on), whatever kernel the hand-in names
    args = ["autograde", lab, "--force", "--create", "--Execute.kernel_name=python3"]
    if cell_timeout_s is not None:
        args.append(f"--Execute.timeout={int(cell_timeout_s)}")

    def grade(student: str) -> Result:
        with tempfile.TemporaryDirectory(prefix="labkit-grade-") as scratch:
            workdir = root / "autograded" / student / lab
            extra, more_env = sandbox_mod.nbgrader_args(root, workdir, Path(scratch), memory) if sandbox else ([], {})
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
    from ..audit import audit
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
            if sub.timestamp is not None:
                out[student].submitted_at = f"{sub.timestamp:%Y-%m-%d %H:%M:%S} UTC"
                out[student].late_s = float(sub.total_seconds_late or 0.0)
        for student in roster:
            out[student] = Result(student, "missing", reason="no hand-in")
    return out


def export(lab: str, root=None, path=None) -> Path:
    """Write grades-<lab>.csv for an LMS: one row per student with the status, the total, one
    column per graded cell ("<grade_id> (<points>)"), the written answers still to grade by hand
    (formgrader), when it was handed in and how many hours late (against `due`; empty when on
    time or without a timestamp) and the reason for any status but graded. Only the SCORED statuses have scores;
    the others are empty, never a silent 0, and so is an answer nobody has graded yet."""
    root = _root(root)
    results = scores(lab, root)
    ids = sorted({gid: mx for r in results.values() for gid, (_, mx) in r.cells.items()}.items())
    path = Path(path or root / f"grades-{lab}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        total = sum(mx for _, mx in ids)
        w.writerow(["student", "status", f"score ({total:g})"] + [f"{gid} ({mx:g})" for gid, mx in ids]
                   + ["to grade by hand", "submitted at", "late (h)", "reason"])
        for r in sorted(results.values(), key=lambda r: r.student):
            scored = r.status in SCORED
            w.writerow([r.student, r.status, r.score if scored else ""]
                       + [r.cells.get(gid, ("", 0))[0] if scored and gid not in r.pending else "" for gid, _ in ids]
                       + [" ".join(r.pending), r.submitted_at, f"{r.late_s / 3600:.2f}" if r.late_s else "", r.reason])
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

    from ..plots import use_style
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

