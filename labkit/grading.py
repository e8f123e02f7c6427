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
    python -m labkit.grading due 01-flops "2026-12-01 17:00:00 UTC"   # lateness is then recorded per hand-in
    python -m labkit.grading collect 01-flops submissions.zip --lms canvas   # an LMS download -> submitted/
    python -m labkit.grading autograde 01-flops [--student S ...] [--rerun] [--workers N] [--timeout S] [--memory-gb G]
    python -m labkit.grading scores 01-flops          # the table again, from the gradebook
    python -m labkit.grading export 01-flops          # grades-01-flops.csv: per-exercise columns, status
    python -m labkit.grading stats 01-flops           # per exercise: mean, share at full marks and at 0; a plot
    python -m labkit.grading feedback 01-flops        # feedback HTML, hidden tests and their tracebacks removed
    python -m labkit.grading rubric 01-flops          # the written answers to grade by hand: question, model answer
    python -m labkit.grading similar 01-flops         # near-identical code: between hand-ins, or with labkit's
    python -m labkit.grading workspace                # a student's own copies of the labs, in mywork/
"""
import argparse
import csv
import json
import os
import re
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
    submitted_at: str = ""            # the hand-in's timestamp (timestamp.txt), when it has one
    late_s: float = 0.0               # seconds past the lab's due date (nbgrader's count)
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


class FastGrading(Preprocessor):
    """Autograde (nbgrader's sanitizing step, before anything runs), so that grading runs no work
    that no grade depends on, at no size bigger than quick mode:
    - the hand-in's parameters cell (papermill's tag "parameters") is replaced by the instructor
      source's: quick mode at the lab's own sizes, whatever the hand-in set (a hand-in left at
      QUICK = False after a full run on a GPU node would run for hours on the grading machine);
    - a demonstration cell the instructor source tags "skip-at-grading" (one no test depends on)
      is replaced by a line saying it was skipped. Only cells whose code is exactly the source's
      are skipped, and never a graded or solution cell, so a hand-in cannot skip a test by
      tagging it.
    Runs in nbgrader's process, from the course root (where the sources are)."""
    enabled = Bool(True)

    def preprocess(self, nb, resources):
        import nbformat
        g = resources.get("nbgrader", {})
        path = Path("notebooks") / g.get("assignment", "") / f"{g.get('notebook', '')}.ipynb"
        source = nbformat.read(path, 4) if path.is_file() else nbformat.v4.new_notebook()
        given = next((c.source for c in source.cells if _is_parameters(c)), None)
        skip = {c.source for c in source.cells if c.cell_type == "code" and SKIP_TAG in c.metadata.get("tags", [])
                and not c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.get("nbgrader", {}).get("solution")}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if _is_parameters(cell):
                cell.source = given if given is not None else re.sub(
                    r"(?m)^(\s*)QUICK\s*=.*$", r"\1QUICK = True  # the grader runs quick mode", cell.source)
            elif cell.cell_type == "code" and cell.source in skip and not meta.get("grade") and not meta.get("solution"):
                cell.source = 'print("(a demonstration that no grade depends on: not run at grading)")'
        return nb, resources


SKIP_TAG = "skip-at-grading"


def _is_parameters(cell) -> bool:
    return cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])


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


def similar(lab: str, root=None, threshold: float = 0.8) -> list:
    """Hand-ins of `lab` whose code for an exercise is near-identical to another's or to
    labkit's own implementation (labkit.audit.similar): pairs for the instructor to read,
    most similar first. No score changes."""
    import nbformat
    from .audit import similar as find
    root = _root(root)
    _check_lab(root, lab)
    handins = {p.parent.parent.name: nbformat.read(p, 4) for p in sorted((root / "submitted").glob(f"*/{lab}/{lab}.ipynb"))}
    return find(handins, nbformat.read(root / "notebooks" / lab / f"{lab}.ipynb", 4), threshold)


def submit(lab: str, student: str, notebook, root=None, timestamp: str | None = None) -> Path:
    """Place a hand-in (a notebook file) at submitted/<student>/<lab>/<lab>.ipynb; with
    `timestamp` (when it was handed in, e.g. "2026-12-01 17:05:00 UTC"), also the timestamp.txt
    from which nbgrader's autograde computes how late it is against the lab's due date (`due`)."""
    root = _root(root)
    _check_lab(root, lab)
    if not student or not student.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"student must be letters, digits, '-' or '_', got {student!r}")
    dest = root / "submitted" / student / lab / f"{lab}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest)
    if timestamp is not None:
        from nbgrader.utils import parse_utc
        parse_utc(timestamp)  # refuse what nbgrader could not read later
        (dest.parent / "timestamp.txt").write_text(timestamp)
    return dest


def due(lab: str, when: str, root=None) -> None:
    """Set the due date of `lab` in the gradebook (nbgrader's own: `nbgrader db assignment add
    LAB --duedate=WHEN`, e.g. "2026-12-01 17:00:00 UTC"). Autograde then records, for each hand-in
    with a timestamp, how late it was; the export shows it. nbgrader's late penalty
    (LateSubmissionPlugin.penalty_method in nbgrader_config.py) is "none" here: the course decides."""
    from nbgrader.utils import parse_utc
    root = _root(root)
    _check_lab(root, lab)
    try:
        parse_utc(when)
    except Exception as e:
        raise ValueError(f"when={when!r} is not a date nbgrader reads (e.g. '2026-12-01 17:00:00 UTC'): {e}") from None
    p = nbgrader("db", "assignment", "add", lab, f"--duedate={when}", root=root)
    if p.returncode != 0:
        raise RuntimeError(f"nbgrader db assignment add {lab} --duedate failed:\n{p.stdout}\n{p.stderr}")


# How LMS downloads name hand-ins: the student's id and the notebook, for nbgrader's zip_collect.
LMS = {
    # Canvas "Download submissions": smithalice_12345_67890_01-flops.ipynb (_LATE_ after the name
    # when late; a resubmission gets -1, -2 before .ipynb)
    "canvas": r".*/(?P<student_id>[^/_]+)(?:_LATE)?_\d+_\d+_(?P<file_id>[^/]+?)(?:-\d+)?\.ipynb$",
    # Moodle "Download all submissions": Alice Smith_123456_assignsubmission_file_/01-flops.ipynb
    "moodle": r".*/[^/_]+_(?P<student_id>\d+)_assignsubmission_file_/(?P<file_id>[^/]+)\.ipynb$",
    # a folder per student: alice/01-flops.ipynb
    "folders": r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+)\.ipynb$",
}


def collect(lab: str, archive, lms: str = "canvas", root=None) -> list[str]:
    """Hand-ins from an LMS download (a .zip, or a folder of them) into submitted/, with
    nbgrader's zip_collect: the archive is copied to downloaded/<lab>/archive/, extracted, and
    each notebook whose name matches `lms` (a key of LMS, or your own regular expression with
    the groups student_id and file_id, optionally timestamp) is placed at
    submitted/<student_id>/<lab>/. Returns the students collected."""
    root = _root(root)
    _check_lab(root, lab)
    archive = Path(archive)
    if not archive.exists():
        raise FileNotFoundError(f"archive={str(archive)!r} does not exist")
    regexp = LMS.get(lms, lms)
    if "(?P<student_id>" not in regexp or "(?P<file_id>" not in regexp:
        raise ValueError(f"lms must be one of {sorted(LMS)} or a regular expression with the groups "
                         f"student_id and file_id, got {lms!r}")
    dest = root / "downloaded" / lab / "archive"
    dest.mkdir(parents=True, exist_ok=True)
    if archive.is_dir():
        shutil.copytree(archive, dest, dirs_exist_ok=True)
    else:
        shutil.copy(archive, dest)
    p = nbgrader("zip_collect", lab, "--force", f"--FileNameCollectorPlugin.named_regexp={regexp}", root=root)
    if p.returncode != 0:
        raise RuntimeError(f"nbgrader zip_collect {lab} failed:\n{p.stdout}\n{p.stderr}")
    found = [re.match(regexp, str(f)) for f in (root / "downloaded" / lab / "extracted").rglob("*.ipynb")]
    return sorted({m["student_id"] for m in found if m and (root / "submitted" / m["student_id"] / lab).is_dir()})


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
    p = sub.add_parser("due", help="set a lab's due date (nbgrader's gradebook)")
    p.add_argument("lab")
    p.add_argument("when", help='e.g. "2026-12-01 17:00:00 UTC"')
    p.add_argument("--root", default=None)
    p = sub.add_parser("collect", help="hand-ins from an LMS download (zip) into submitted/ (nbgrader zip_collect)")
    p.add_argument("lab")
    p.add_argument("archive")
    p.add_argument("--lms", default="canvas", help=f"{', '.join(LMS)} or a regular expression (default canvas)")
    p.add_argument("--root", default=None)
    p = sub.add_parser("workspace", help="copy every lab's student version into your own folder (never overwritten)")
    p.add_argument("--dest", default=None)
    p.add_argument("--root", default=None)
    for name in ("release", "autograde", "scores", "export", "feedback", "stats", "rubric", "similar"):
        p = sub.add_parser(name)
        p.add_argument("lab")
        p.add_argument("--root", default=None)
        if name == "autograde":
            p.add_argument("--student", action="append", help="grade only this student (repeatable)")
            p.add_argument("--rerun", action="store_true", help="grade only the hand-ins to re-run: " + ", ".join(RERUN))
            p.add_argument("--workers", type=int, default=None, help="hand-ins at once (default: one per core)")
            p.add_argument("--timeout", type=int, default=None, help="seconds per cell (nbgrader_config.py: 300)")
            p.add_argument("--shard", default=None, metavar="K/N",
                           help="grade every N-th hand-in from the K-th (a SLURM array task: scripts/grade.sbatch)")
            p.add_argument("--memory-gb", type=float, default=None,
                           help="memory per hand-in (default: 80%% of this machine's, shared among the workers)")
        if name == "similar":
            p.add_argument("--threshold", type=float, default=0.8, help="share of fingerprints in common (default 0.8)")
        if name == "export":
            p.add_argument("--out", default=None, help="CSV path (default: grades-LAB.csv in the course root)")
    a = ap.parse_args(argv)
    if a.cmd == "workspace":
        for lab, what in workspace(a.dest, a.root).items():
            print(f"{lab}: {what}")
        return 0
    if a.cmd == "due":
        due(a.lab, a.when, a.root)
        print(f"{a.lab} is due {a.when}")
        return 0
    if a.cmd == "collect":
        got = collect(a.lab, a.archive, a.lms, a.root)
        print(f"collected {len(got)} hand-in(s) of {a.lab}: {', '.join(got)}")
        return 0 if got else 1
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
    if a.cmd == "similar":
        matches = similar(a.lab, a.root, a.threshold)
        for m in matches:
            print(m)
        print(f"{len(matches)} near-identical pair(s) in {a.lab} at >= {a.threshold:.0%}: read them before deciding anything")
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
        shard = None
        if a.shard:
            try:
                shard = tuple(int(x) for x in a.shard.split("/"))
            except ValueError:
                ap.error(f"--shard must be K/N (two integers), got {a.shard!r}")
        results = autograde(a.lab, a.root, a.timeout, a.student, workers=a.workers, rerun=a.rerun,
                            memory_gb=a.memory_gb, shard=shard)
        if shard and not results:
            return 0  # a task with nothing to grade is not a failure
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
