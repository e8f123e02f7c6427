"""`python -m labkit.grading ...`: the command line (see labkit.grading)."""
import argparse

from . import __doc__ as DOC
from .autograde import RERUN, autograde, export, feedback, plot_stats, scores, stats
from .course import LMS, _root, collect, due, release, rubric, similar, workspace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.grading", description=DOC.split("\n")[0])
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

