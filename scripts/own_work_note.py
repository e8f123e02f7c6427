"""Declare, in a lab's instructor source, which labkit objects each exercise must not use, and
tell the student so in the lab's first cell. Used once per lab by the course's authors:

    python scripts/own_work_note.py notebooks/01-flops/01-flops.ipynb ex1-days-tests=labkit.flops.training_days ...

Each TEST_ID=NAME[,NAME...] sets metadata.labkit.own_work on that test cell (see labkit.audit).
"""
import sys

import nbformat

NOTE = ("\n\n> **Own work.** Most exercises have a labkit twin, a function that does the same job (later cells and "
        "the hidden tests use it). Calling it from your exercise, directly, under another name or from a helper, earns 0 for "
        "that exercise, and changing labkit, torch or the test helpers from your cells earns 0 for every "
        "test after it: the grader reads your code outside your notebook.")


def main(path: str, *rules: str) -> None:
    nb = nbformat.read(path, 4)
    want = dict(r.split("=", 1) for r in rules)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for gid, names in want.items():
        if gid not in cells or not cells[gid].metadata["nbgrader"].get("grade"):
            sys.exit(f"{path}: no test cell {gid!r}; test cells: "
                     f"{[g for g, c in cells.items() if g and c.metadata['nbgrader'].get('grade')]}")
        cells[gid].metadata.setdefault("labkit", {})["own_work"] = names.split(",")
    first = nb.cells[0]
    if "**Own work.**" not in first.source:
        first.source = first.source.rstrip() + NOTE
    nbformat.write(nb, path)


if __name__ == "__main__":
    main(*sys.argv[1:])
