"""labkit: helpers for a course on making machine learning fast and cheap.

Every notebook starts with `lab = labkit.setup(seed=0)`: it seeds, picks the device, applies
the plotting style, and prints the machine and its measured peaks.
"""
import os
from dataclasses import dataclass

import torch

# Without a CUDA GPU, Triton kernels can only run in Triton's interpreter, and Triton reads that
# switch when it is first imported (its own library functions are defined then). Anything may
# import Triton later (torch, bitsandbytes, labkit.kernels), so the switch is set here, first.
# LABKIT_DEVICE=cpu (run a lab on the CPU on a GPU machine) puts the kernels on the CPU too.
if not torch.cuda.is_available() or os.environ.get("LABKIT_DEVICE", "auto").startswith("cpu"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

from . import bench, device, hw, plots, record, seed
from .bench import benchmark
from .device import describe_machine, pick_device
from .seed import seed_everything

__version__ = "0.1.0"
__all__ = ["setup", "Lab", "benchmark", "pick_device", "describe_machine", "seed_everything",
           "bench", "device", "hw", "plots", "record", "seed"]


@dataclass
class Lab:
    """What `setup` found: the device, the seed, and the machine's measured peaks."""
    device: torch.device
    seed: int
    machine: str
    peaks: dict | None

    @property
    def is_gpu(self) -> bool:
        return self.device.type == "cuda"


def setup(seed: int = 0, device: str = "auto", measure_peaks: bool = True, verbose: bool = True) -> Lab:
    """Seed everything, pick the device, set the plot style; measure (or load) the peaks.

    seed: for seed_everything. device: "auto", "cpu" or "cuda" (see pick_device).
    measure_peaks: this machine's matmul FLOP/s per dtype and copy bandwidth: measured the
    first time (a few seconds, sizes adapted to the machine, with a progress bar), then read
    from the cache after a quick re-check (see hw.measured_peaks).
    """
    seed_everything(seed)
    dev = pick_device(device)
    plots.use_style()
    peaks = hw.measured_peaks(dev, progress=verbose) if measure_peaks else None
    lab = Lab(device=dev, seed=seed, machine=describe_machine(dev), peaks=peaks)
    if verbose:
        print(f"labkit {__version__} | seed {seed} | {lab.machine}")
        if peaks:
            print(f"measured peaks ({peaks['date']}, cached in {hw.cache_path()}):\n{hw.describe_peaks(peaks)}")
    return lab
