"""Grading with nbgrader: release student versions, autograde hand-ins, read the scores.

The course root (the folder holding nbgrader_config.py) follows nbgrader's layout:
    notebooks/<lab>/<lab>.ipynb             instructor source (solutions, hidden tests)
    release/<lab>/                          student version (nbgrader generate_assignment)
    submitted/<student>/<lab>/<lab>.ipynb   a hand-in
    autograded/<student>/<lab>/             executed and scored (nbgrader autograde)
This module drives the `nbgrader` command and reads `gradebook.db`. It adds one guard nbgrader
leaves to the reader: a hand-in that could not be executed to the end (its kernel died, or
nbgrader gave up on it) is reported as "failed" with no score, never as passing.

Command line:  python -m labkit.grading autograde 01-flops [--root DIR] [--timeout S]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """One student's result on one lab."""
    student: str
    status: str                       # "graded" or "failed" (not executed to the end: no score)
    score: float | None = None
    max_score: float | None = None
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    log: str = ""                     # for a failed hand-in: nbgrader's account of what went wrong


def _root(root) -> Path:
    root = Path(root or REPO_ROOT)
    if not (root / "nbgrader_config.py").exists():
        raise FileNotFoundError(f"root={str(root)!r} is not a course root: it has no nbgrader_config.py")
    return root


def _check_lab(root: Path, lab: str) -> None:
    if not (root / "notebooks" / lab).is_dir():
        have = sorted(p.name for p in (root / "notebooks").glob("*") if p.is_dir())
        raise ValueError(f"lab={lab!r} has no folder notebooks/{lab}/; labs here: {have}")


def nbgrader(*args: str, root=None, timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS...` in the course root with this Python; return the finished process.

    timeout_s bounds the whole command: past it, nbgrader and every process it started (the
    student's kernel included) are killed, and the return code is -9. This catches what the
    per-cell timeout cannot, such as code that ignores the interrupt nbgrader sends.
    """
    cmd = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader calls the `alembic` command by name: put this environment's bin/ first on PATH.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
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


def warm_peaks_cache(root=None, timeout_s: float = 120) -> None:
    """Measure this machine's peaks once, before any hand-in runs (a few seconds, cached).

    Every lab starts with labkit.setup(), which measures the peaks on a machine that has none
    cached. On a fresh grading machine that time would be charged to the first hand-in's cell
    timeout; measured here, it is charged to nobody, and every hand-in reads the same peaks.
    """
    code = "import labkit; labkit.hw.measured_peaks(progress=False)"
    p = subprocess.run([sys.executable, "-c", code], cwd=_root(root), capture_output=True, text=True,
                       timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"measuring this machine's peaks before grading failed:\n{p.stderr[-3000:]}")


def autograde(lab: str, root=None, cell_timeout_s: int | None = None, students=None,
              timeout_s: float = 1800) -> dict[str, Result]:
    """Autograde every hand-in of `lab` (or only `students`) and return their results.

    cell_timeout_s overrides the per-cell timeout of nbgrader_config.py; timeout_s bounds one
    student's whole hand-in (then it is killed and reported failed). nbgrader's own exit
    status decides nothing: each result is read back from the gradebook and the autograded
    folder (see scores).
    """
    root = _root(root)
    _check_lab(root, lab)
    students = students or sorted(p.parent.name for p in (root / "submitted").glob(f"*/{lab}"))
    if not students:
        raise FileNotFoundError(f"no hand-ins of {lab!r} under {root / 'submitted'}")
    warm_peaks_cache(root)
    args = ["autograde", lab, "--force", "--create"]
    if cell_timeout_s is not None:
        args.append(f"--Execute.timeout={int(cell_timeout_s)}")
    log = []
    for student in students:
        p = nbgrader(*args, f"--student={student}", root=root, timeout_s=timeout_s)
        if p.returncode == -9:  # killed mid-run: whatever nbgrader left behind is not a result
            shutil.rmtree(root / "autograded" / student / lab, ignore_errors=True)
        log.append(p.stdout + p.stderr)
    results = scores(lab, root, students)
    for r, text in zip(results.values(), log):
        if r.status == "failed":
            r.log = text[-3000:]
    return results


def scores(lab: str, root=None, students=None) -> dict[str, Result]:
    """Read each student's autograded score from gradebook.db.

    A student counts as graded only if nbgrader finished their notebook: its executed copy
    exists in autograded/<student>/<lab>/ and every graded cell has a score. Otherwise the
    result is "failed" with score None (nbgrader removes the folder when execution breaks off,
    e.g. when the kernel dies).
    """
    from nbgrader.api import Gradebook, MissingEntry
    root = _root(root)
    if not (root / "gradebook.db").exists():
        raise FileNotFoundError(f"no gradebook at {root / 'gradebook.db'}: release and autograde {lab!r} first")
    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        if students is None:
            try:
                students = [s.student.id for s in gb.assignment_submissions(lab)]
            except MissingEntry:
                raise ValueError(f"lab={lab!r} is not in the gradebook: release it first") from None
        for student in students:
            done = (root / "autograded" / student / lab / f"{lab}.ipynb").exists()
            try:
                sub = gb.find_submission(lab, student)
            except MissingEntry:
                out[student] = Result(student, "failed")
                continue
            cells = {g.name: (g.score, g.max_score) for nb in sub.notebooks for g in nb.grades}
            if not done or any(s is None for s, _ in cells.values()):
                out[student] = Result(student, "failed", cells=cells)
            else:
                out[student] = Result(student, "graded", sub.score, sub.max_score, cells)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.grading", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("release", "autograde", "scores"):
        p = sub.add_parser(name)
        p.add_argument("lab")
        p.add_argument("--root", default=None)
        if name == "autograde":
            p.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    a = ap.parse_args(argv)
    if a.cmd == "release":
        print(release(a.lab, a.root))
        return 0
    results = autograde(a.lab, a.root, a.timeout) if a.cmd == "autograde" else scores(a.lab, a.root)
    from tabulate import tabulate
    print(tabulate([[r.student, r.status, r.score, r.max_score] for r in results.values()],
                   headers=["student", "status", "score", "max"]))
    if not results:
        print(f"no hand-ins of {a.lab} were graded")
        return 1
    return 0 if all(r.status == "graded" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
