"""The kit's one timer: warm-up, synchronisation, many repeats, median and spread.

A single run of a kernel is a bad measurement: the first call pays for compilation, cache
misses and memory allocation, and GPU work is asynchronous (the call returns before the work
is done). `benchmark` warms up, synchronises the device around every run, repeats until it
has spent `min_time_s`, and reports the median and the interquartile range.
"""
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Timing:
    """Seconds per call: the median and the spread (25th to 75th percentile) of `times_s`."""
    times_s: list[float] = field(repr=False)
    device: str = "cpu"

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def q25_s(self) -> float:
        return _quantile(self.times_s, 0.25)

    @property
    def q75_s(self) -> float:
        return _quantile(self.times_s, 0.75)

    @property
    def n(self) -> int:
        return len(self.times_s)

    def rate(self, work: float) -> float:
        """work per second at the median time, e.g. FLOP/s from FLOP or B/s from bytes."""
        return work / self.median_s

    def __str__(self) -> str:
        return (f"{format_seconds(self.median_s)} median "
                f"[{format_seconds(self.q25_s)} .. {format_seconds(self.q75_s)}], n={self.n}")


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def format_seconds(s: float) -> str:
    """A duration with the unit that keeps 3 significant digits readable: 12.3 us, 4.56 ms, 1.23 s."""
    s = float(f"{s:.3g}")  # round first, so 999.96 us prints as 1 ms, not 1e+03 us
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until every queued kernel on `device` has finished (no-op on the CPU).

    device=None synchronises the current GPU if this process has used CUDA at all.
    """
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(fn: Callable[[], object], *, device: torch.device | str | None = None,
              warmup: int = 3, min_repeats: int = 5, max_repeats: int = 1000,
              min_time_s: float = 0.2) -> Timing:
    """Time `fn()` and return a Timing.

    fn: a function of no arguments doing the work once (wrap arguments in a lambda).
    device: where fn's work runs.
        "cuda" / "cuda:N": each call is timed with CUDA events on that GPU (the GPU's own clock,
            not the time to queue kernels; recorded with that GPU current, whichever GPU is the
            current one outside), and that GPU is synchronised before the events are read.
        "cpu": wall-clock time of each call.
        None: wall-clock time of each call, with the current GPU synchronised before and after
            it when this process has used CUDA: right for CPU work and GPU work alike (a GPU
            call then includes its launch overhead). Name the device for the GPU's own timing.
    warmup: untimed calls first (compilation, allocation, caches).
    Runs at least `min_repeats` and at most `max_repeats` times, stopping once the
    timed runs add up to `min_time_s`.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    for name, value, low in (("warmup", warmup, 0), ("min_repeats", min_repeats, 1),
                             ("max_repeats", max_repeats, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if max_repeats < min_repeats:
        raise ValueError(f"max_repeats ({max_repeats}) must be >= min_repeats ({min_repeats})")
    if not min_time_s >= 0:
        raise ValueError(f"min_time_s must be >= 0 seconds, got {min_time_s!r}")
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        with torch.cuda.device(device):  # events are recorded on the current GPU's stream: make it this one
            return _benchmark_cuda(fn, device, warmup, min_repeats, max_repeats, min_time_s)

    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return Timing(times, device=str(device or "cpu"))


def _benchmark_cuda(fn, device: torch.device, warmup: int, min_repeats: int, max_repeats: int,
                    min_time_s: float) -> Timing:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        n = min(max(min_repeats, 1), max_repeats - len(times))  # a batch of calls per host round trip
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times += [start.elapsed_time(end) * 1e-3 for start, end in events]
    return Timing(times, device=str(device))


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ code writes to file descriptor 2 (the profiler's "USDT: profiler_start"
    lines, printed red in a notebook); Python's own errors still reach sys.stderr afterwards."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
