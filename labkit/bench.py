"""The kit's one timer: warm-up, synchronisation, many repeats, median and spread.

A single run of a kernel is a bad measurement: the first call pays for compilation, cache
misses and memory allocation, and GPU work is asynchronous (the call returns before the work
is done). `benchmark` warms up, synchronises the device around every run, repeats until it
has spent `min_time_s`, and reports the median and the interquartile range.
"""
import statistics
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
    device: where fn's work runs. On CUDA each call is timed with CUDA events (the GPU's own
        clock, not the time to queue kernels) and the device is synchronised before reading
        them. device=None means CUDA if this process has used it, else the CPU.
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

    for _ in range(warmup):
        fn()
    synchronize(device)
    cuda = (torch.device(device).type == "cuda") if device is not None else \
        (torch.cuda.is_available() and torch.cuda.is_initialized())
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        if cuda:  # CUDA events time the GPU's work without a host round trip per call
            n = min(max(min_repeats, 1), max_repeats - len(times))
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            synchronize(device)
            times += [start.elapsed_time(end) * 1e-3 for start, end in events]
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Timing(times, device=str(device or ("cuda" if cuda else "cpu")))
