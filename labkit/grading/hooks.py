"""nbconvert preprocessors that nbgrader runs for the course (named in nbgrader_config.py).

They run in nbgrader's own process, never in a student's kernel: FastGrading before a hand-in is
executed (quick mode, tagged demonstrations skipped), HideTestTracebacks when feedback is made.
"""
import re
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool


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
        skip = {c.source for c in source.cells if _given(c) and SKIP_TAG in c.metadata.get("tags", [])}
        for cell in nb.cells:
            if _is_parameters(cell):
                cell.source = given if given is not None else re.sub(
                    r"(?m)^(\s*)QUICK\s*=.*$", r"\1QUICK = True  # the grader runs quick mode", cell.source)
            elif _given(cell) and cell.source in skip:
                cell.source = 'print("(a demonstration that no grade depends on: not run at grading)")'
        return nb, resources


SKIP_TAG = "skip-at-grading"


def _given(cell) -> bool:
    """A code cell that is neither graded nor the student's to write."""
    g = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and not g.get("grade") and not g.get("solution")


def _is_parameters(cell) -> bool:
    return cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])

