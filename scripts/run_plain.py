"""Run a lab notebook's code cells top to bottom in one Python process, without Jupyter.

    python scripts/run_plain.py notebooks/08-memory/08-memory.ipynb [--full] [--budget 120]

For GPU nodes whose image has torch but no Jupyter stack (no kernel, nbclient or papermill): the
cells run in order in one namespace, as a kernel would run them, with the parameters cell's QUICK
set by --full. IPython magics and shell lines (`%...`, `!...`) are skipped and said so. Each cell
is compiled under its own file name in linecache, so functions defined in a cell keep their source
(labkit.parallel sends notebook functions to its ranks as source). Prints each cell's time; the
exit code is 1 if a cell raised (--keep-going: the later cells run all the same), 2 if the time budget ran out. Figures go to the Agg backend.
"""
import argparse
import json
import linecache
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--full", action="store_true", help="QUICK = False (the full sizes)")
    ap.add_argument("--keep-going", action="store_true", help="run the later cells after a cell fails")
    ap.add_argument("--budget", type=float, default=600.0, help="stop after this many seconds (default 600)")
    a = ap.parse_args()
    cells = [c for c in json.loads(a.notebook.read_text())["cells"] if c["cell_type"] == "code"]
    os.chdir(a.notebook.parent)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    ns = {"__name__": "__main__"}
    t_start, failed = time.perf_counter(), []
    for i, cell in enumerate(cells):
        lines = "".join(cell["source"]).splitlines()
        if "parameters" in cell.get("metadata", {}).get("tags", []) or (i == 0 and lines and lines[0].startswith("QUICK")):
            lines = [f"QUICK = {not a.full}" if ln.startswith("QUICK") else ln for ln in lines]
        skipped = [ln for ln in lines if ln.lstrip().startswith(("%", "!"))]
        src = "\n".join("pass  # skipped: " + ln.strip() if ln in skipped else ln for ln in lines) + "\n"
        name = f"<{a.notebook.stem}-cell-{i}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        t0 = time.perf_counter()
        try:
            exec(compile(src, name, "exec"), ns)
        except Exception:
            traceback.print_exc()
            print(f"[{a.notebook.stem}] cell {i} FAILED after {time.perf_counter() - t0:.1f} s", flush=True)
            failed.append(i)
            if a.keep_going:
                continue
            return 1
        print(f"[{a.notebook.stem}] cell {i} ok in {time.perf_counter() - t0:.1f} s"
              + (f" (skipped {len(skipped)} magic line(s))" if skipped else ""), flush=True)
        if time.perf_counter() - t_start > a.budget:
            print(f"[{a.notebook.stem}] budget of {a.budget:.0f} s spent after cell {i} of {len(cells)}", flush=True)
            return 2
    print(f"[{a.notebook.stem}] {len(cells) - len(failed)} of {len(cells)} code cells ran in "
          f"{time.perf_counter() - t_start:.1f} s" + (f"; failed: cells {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
