import os

import pytest
import torch

import labkit  # noqa: F401  first: it switches Triton's interpreter on (no GPU) before anything imports triton

# Tests never touch the user's cache of measured peaks.
os.environ["LABKIT_CACHE_DIR"] = os.path.join(os.path.dirname(__file__), "..", ".cache", "test")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# Lab 01's instructor notebook is executed in full, hidden tests included, as the instructor's
# hand-in of tests/test_grading.py (in the sandbox, with a 30 s cell timeout). When that test is in
# the session, nbval's second run of the same notebook is deselected: one execution, not two.
GRADED_IN_FULL = ("tests/test_grading.py::test_instructor_source_gets_full_marks", "notebooks/01-flops/")


def pytest_collection_modifyitems(config, items):
    graded, prefix = GRADED_IN_FULL
    if any(item.nodeid == graded for item in items):
        twice = [item for item in items if item.nodeid.startswith(prefix)]
        if twice:
            config.hook.pytest_deselected(items=twice)
            items[:] = [item for item in items if not item.nodeid.startswith(prefix)]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
