"""How long does grading a class take? Grade N copies of a lab's instructor solution, one at a
time and then in parallel, and project the time for a class on a bigger node.

    python scripts/bench_grading.py 01-flops --hand-ins 4            # prints a table, writes nothing in the repo

Works in a temporary course root (the lab, nbgrader_config.py); the peaks cache is warm
before timing, as `labkit.grading.autograde` makes it.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import grading  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lab")
    ap.add_argument("--hand-ins", type=int, default=4)
    ap.add_argument("--class-size", type=int, default=200)
    ap.add_argument("--node-cores", type=int, default=16)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "nbgrader_config.py", root)
        shutil.copytree(REPO / "notebooks" / a.lab, root / "notebooks" / a.lab)
        grading.release(a.lab, root)
        students = [f"s{i:03d}" for i in range(a.hand_ins)]
        for s in students:
            grading.submit(a.lab, s, root / "notebooks" / a.lab / f"{a.lab}.ipynb", root)
        grading.warm_peaks_cache(root)
        rows = []
        for workers in sorted({1, cores}):
            t0 = time.perf_counter()
            res = grading.autograde(a.lab, root, students=students, workers=workers)
            seconds = time.perf_counter() - t0
            assert all(r.status == "graded" and r.score == r.max_score for r in res.values()), res
            rows.append((workers, seconds))
            print(f"{a.lab}: {a.hand_ins} hand-ins, {workers} worker(s): {seconds:.0f} s "
                  f"({seconds / a.hand_ins:.1f} s per hand-in)", flush=True)
    (_, t1), (w, tp) = rows[0], rows[-1]
    per = t1 / a.hand_ins
    print(f"speed-up with {w} workers on {cores} cores: {t1 / tp:.2f}x")
    # a projection, stated as one: perfect scaling over the node's cores from the 1-worker figure
    print(f"projected for {a.class_size} hand-ins on a {a.node_cores}-core node (ideal scaling of "
          f"{per:.1f} s per hand-in): {a.class_size * per / a.node_cores / 60:.1f} min")


if __name__ == "__main__":
    main()
