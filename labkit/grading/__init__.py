"""Grading with nbgrader: release student versions, autograde hand-ins, read the scores.

The course root (the folder holding nbgrader_config.py) follows nbgrader's layout:
    notebooks/<lab>/<lab>.ipynb             instructor source (solutions, hidden tests)
    release/<lab>/                          student version (nbgrader generate_assignment)
    submitted/<student>/<lab>/<lab>.ipynb   a hand-in
    autograded/<student>/<lab>/             executed and scored (nbgrader autograde)
This package drives the `nbgrader` command and reads `gradebook.db`. It adds what nbgrader
leaves to the reader: each hand-in gets a status (STATUSES), so that a hand-in that could not be
executed to the end is never read as a score, and one that ran into a timeout is listed for a
re-run instead of passing for a wrong answer. Hand-ins are graded in parallel, one process each.

Modules: course (release, hand-ins in, due dates, LMS downloads, the student workspace, rubric,
near-duplicates), autograde (statuses, parallel sandboxed grading, scores, export, statistics,
feedback), hooks (the preprocessors nbgrader_config.py names), cli (the command line).

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
from .autograde import (RERUN, SCORED, STATUS_DIR, STATUSES, Result, autograde, export, feedback,  # noqa: F401
                        plot_stats, sandbox_mod, scores, stats, warm_peaks_cache)
from .cli import main  # noqa: F401
from .course import (LMS, REPO_ROOT, collect, due, nbgrader, release, rubric, similar, submit,  # noqa: F401
                     workspace)
from .hooks import SKIP_TAG, FastGrading, HideTestTracebacks  # noqa: F401
