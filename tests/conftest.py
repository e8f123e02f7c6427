import os

import pytest
import torch

import labkit  # noqa: F401  first: it switches Triton's interpreter on (no GPU) before anything imports triton

# Tests never touch the user's cache of measured peaks.
os.environ["LABKIT_CACHE_DIR"] = os.path.join(os.path.dirname(__file__), "..", ".cache", "test")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
