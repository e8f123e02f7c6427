"""Which device to run on, and a one-line description of the machine at hand."""
import os
import platform
import re

import torch

_CHOICES = ("auto", "cpu", "cuda")


def pick_device(prefer: str | torch.device = "auto") -> torch.device:
    """Return the device the labs run on.

    prefer: "auto" (CUDA if present, else CPU), "cpu", "cuda" or "cuda:N" (an error if that GPU
    is absent; "cuda:N" also becomes the current GPU). The environment variable LABKIT_DEVICE overrides "auto", so a batch job or a
    student can force the CPU without editing a notebook.
    """
    prefer = str(prefer)
    source = "prefer"
    if prefer == "auto" and os.environ.get("LABKIT_DEVICE", "auto") != "auto":
        prefer, source = os.environ["LABKIT_DEVICE"], "LABKIT_DEVICE"
    if prefer not in _CHOICES and not re.fullmatch(r"cuda:\d+", prefer):
        raise ValueError(f"{source} must be one of {_CHOICES} or 'cuda:N', got {prefer!r}")
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{source}={prefer!r} but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        if ":" in prefer:
            index = int(prefer.split(":")[1])
            if index >= torch.cuda.device_count():
                raise RuntimeError(f"{source}={prefer!r} but only {torch.cuda.device_count()} GPU(s) are visible")
            # make it the current GPU too: code that says "cuda" (a tensor, a stream, an event, a
            # synchronize) then means this one, not GPU 0
            torch.cuda.set_device(index)
    return torch.device(prefer)


def cpu_name() -> str:
    """The CPU model as the kernel reports it (falls back to platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may use (respects taskset / SLURM cpu binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def device_name(device: torch.device | str | None = None) -> str:
    """The hardware's name: GPU model for CUDA, CPU model otherwise."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming the hardware and the software that the numbers depend on."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (f"GPU {p.name} (compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                f"{p.multi_processor_count} SMs) | CUDA {torch.version.cuda} | torch {torch.__version__}")
    return (f"CPU {cpu_name()} ({cpu_cores()} cores, {torch.get_num_threads()} torch threads) | "
            f"no CUDA GPU | torch {torch.__version__}")


def machine_key(device: torch.device | str | None = None) -> str:
    """A short stable name for this hardware, used to cache its measured peaks: on a CPU it
    includes torch's thread count (what a matmul can use: the cores SLURM gave, or OMP_NUM_THREADS)."""
    device = torch.device(device) if device is not None else pick_device()
    name = device_name(device)
    if device.type == "cpu":
        name = f"{name}-{torch.get_num_threads()}t"
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{device.type}-{name}-torch{torch.__version__}").strip("-").lower()
