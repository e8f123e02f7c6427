"""How long does grading a class take? Grade N copies of each lab's instructor solution, one at a
time and then in parallel (one per core), check every copy gets full marks in the sandbox, and
project the time for a class on a bigger node.

    python scripts/bench_grading.py 01-flops --hand-ins 20        # one lab, 20 hand-ins
    python scripts/bench_grading.py all --hand-ins 2 --save grading-2core   # every lab, recorded in data/measurements/

Works in a temporary course root (the labs, nbgrader_config.py); the peaks cache is warm
before timing, as `labkit.grading.autograde` makes it. The projection assumes the per-hand-in
time of one worker on this machine and ideal scaling over the bigger node's cores: a
projection, printed as one.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import grading, record  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bench(lab: str, hand_ins: int, cores: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "nbgrader_config.py", root)
        shutil.copytree(REPO / "notebooks" / lab, root / "notebooks" / lab)
        grading.release(lab, root)
        students = [f"s{i:03d}" for i in range(hand_ins)]
        for s in students:
            grading.submit(lab, s, root / "notebooks" / lab / f"{lab}.ipynb", root)
        grading.warm_peaks_cache(root)
        seconds = {}
        for workers in sorted({1, cores}):
            t0 = time.perf_counter()
            res = grading.autograde(lab, root, students=students, workers=workers)
            seconds[workers] = time.perf_counter() - t0
            bad = {s: (r.status, r.score, r.max_score, r.reason) for s, r in res.items()
                   if r.status not in ("graded", "unmeasurable") or r.score != r.max_score - _unmeasured(r)}
            if bad:
                raise SystemExit(f"{lab}: the instructor solution did not get full marks: {bad}")
            print(f"{lab}: {hand_ins} hand-ins, {workers} worker(s): {seconds[workers]:.0f} s "
                  f"({seconds[workers] / hand_ins:.1f} s per hand-in)", flush=True)
    return {"hand_ins": hand_ins, "workers": sorted(seconds), "seconds": [seconds[w] for w in sorted(seconds)],
            "sandbox": grading.sandbox_mod.available()}


def _unmeasured(r) -> float:
    """Points no machine can give here: GPU targets on a CPU box, written answers a person grades."""
    return sum(r.cells[g][1] for g in set(r.unmeasurable) | set(r.pending))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lab", help="a lab (01-flops) or 'all'")
    ap.add_argument("--hand-ins", type=int, default=4)
    ap.add_argument("--class-size", type=int, default=200)
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--save", default=None, help="record the figures as data/measurements/NAME.json")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    labs = sorted(p.name for p in (REPO / "notebooks").iterdir() if p.is_dir()) if a.lab == "all" else [a.lab]
    results, rows = {}, []
    for lab in labs:
        r = results[lab] = bench(lab, a.hand_ins, cores)
        t1, tp = r["seconds"][0], r["seconds"][-1]
        per = t1 / a.hand_ins
        r["projected_class_min"] = a.class_size * per / a.node_cores / 60
        rows.append([lab, f"{per:.1f}", f"{tp / a.hand_ins:.1f}", f"{t1 / tp:.2f}x", f"{r['projected_class_min']:.1f}"])
    from tabulate import tabulate
    print(f"\n{a.hand_ins} instructor hand-ins per lab, this machine: {cores} cores; all graded full marks in the "
          f"{'sandbox' if grading.sandbox_mod.available() else 'grader (no sandbox here)'}")
    print(tabulate(rows, headers=["lab", "s per hand-in (1 worker)", f"s per hand-in ({cores} workers)",
                                  "speed-up", f"{a.class_size} hand-ins on {a.node_cores} cores (min, projected)"]))
    if a.save:
        print("recorded:", record.save(a.save, {"class_size": a.class_size, "node_cores": a.node_cores,
                                                "cores": cores, "labs": results}))


if __name__ == "__main__":
    main()
