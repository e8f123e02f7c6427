"""The course around the grader: student versions out, hand-ins in, and what the instructor reads.

    release(lab)             the student version, release/<lab>/ (nbgrader generate_assignment)
    workspace()              a student's own copy of every lab (mywork/), never overwritten
    submit / collect / due   hand-ins placed by hand or from an LMS download (nbgrader zip_collect),
                             with timestamps and a due date for lateness
    rubric(lab)              the written answers to grade by hand: question and model answer
    similar(lab)             near-identical code between hand-ins, or with labkit's own
The course root (the folder holding nbgrader_config.py) follows nbgrader's layout (see
labkit.grading); every nbgrader command runs there through `nbgrader()`.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


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
    from ..audit import similar as find
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

