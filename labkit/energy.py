"""Energy: measured where the machine allows it, estimated (and labelled so) where it does not.

    meter = EnergyMeter()                    # picks every backend this machine offers
    with meter.window("inference") as w:     # or meter.begin_window(name) / meter.end_window(name)
        model(x)
    for r in w.readings: print(r)            # one Reading per backend: joules, watts, and its method

Backends, best first:
- NVML energy counter (Volta and newer): the GPU's own accumulated millijoules.
- NVML power samples: a background thread reads the board power every few ms; we integrate.
  Many GPUs report power as an average over a window of ~1 s, so short kernels are smeared out.
- Intel RAPL via powercap (/sys/class/powercap): package and DRAM energy counters in µJ, which
  wrap around at max_energy_range_uj and are often readable only by root.
- Estimate: an assumed CPU power (TDP) × this process's CPU utilisation, the way CodeCarbon falls
  back when it can read nothing. Always labelled an estimate; never passed off as a measurement.
A window shorter than a counter's update period yields no reading (joules None, and a note),
never a false 0 J.
"""
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------- units, cost, CO2

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
# €200 M a year for 1.59 TWh (SemiAnalysis's 100k-H100 cluster, quoted in the course deck): €0.126/kWh
DEFAULT_EUR_PER_KWH = 200e6 / 1.59e9
# IEA, Electricity 2025 - Emissions: global average intensity of electricity generation in 2024
DEFAULT_G_CO2_PER_KWH = 445.0


def joules_to_kwh(joules: float) -> float:
    return joules / J_PER_KWH


def kwh_to_joules(kwh: float) -> float:
    return kwh * J_PER_KWH


def cost_eur(joules: float, eur_per_kwh: float = DEFAULT_EUR_PER_KWH) -> float:
    """Electricity cost of `joules` at a stated price (default: €0.126/kWh, see DEFAULT_EUR_PER_KWH)."""
    return joules_to_kwh(joules) * eur_per_kwh


def co2_kg(joules: float, g_per_kwh: float = DEFAULT_G_CO2_PER_KWH) -> float:
    """kg of CO₂ for `joules` at a stated grid intensity (default: IEA's 2024 world average, 445 g/kWh)."""
    return joules_to_kwh(joules) * g_per_kwh / 1000


def format_energy(joules: float) -> str:
    """J, kJ, MJ... with Wh alongside once it is more than a few hundred joules."""
    from .hw import format_rate
    s = format_rate(joules, "J")
    return s if joules < 360 else f"{s} ({format_rate(joules / J_PER_WH, 'Wh')})"


# ---------------------------------------------------------------- the arithmetic of readings


def _trace(times_s, watts) -> tuple[list, list]:
    times_s, watts = list(times_s), list(watts)
    if len(times_s) != len(watts) or not times_s:
        raise ValueError(f"times_s and watts must be non-empty and of equal length, got {len(times_s)} and {len(watts)}")
    if any(b < a for a, b in zip(times_s, times_s[1:])):
        raise ValueError("times_s must be non-decreasing")
    return times_s, watts


def integrate_power(times_s, watts) -> float:
    """Energy (J) of a power trace by the trapezoid rule: Σ (P_i + P_{i+1}) / 2 · (t_{i+1} - t_i)."""
    times_s, watts = _trace(times_s, watts)
    if len(times_s) < 2:
        raise ValueError("a power trace needs at least 2 samples to integrate")
    return sum((p0 + p1) / 2 * (t1 - t0) for t0, t1, p0, p1 in zip(times_s, times_s[1:], watts, watts[1:]))


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Increase of a counter that wraps to 0 after max_range (RAPL's energy_uj): one wrap at most,
    so windows must be shorter than the time to count through the whole range."""
    if max_range <= 0 or not (0 <= start <= max_range and 0 <= end <= max_range):
        raise ValueError(f"need 0 <= start, end <= max_range and max_range > 0, got {start}, {end}, {max_range}")
    return end - start if end >= start else end + (max_range - start)


@dataclass
class Reading:
    """One backend's account of one window."""
    name: str
    method: str                       # e.g. "NVML energy counter", "RAPL package", "estimate: ..."
    device: str
    duration_s: float
    joules: float | None              # None: no valid reading for this window (see note)
    note: str = ""

    @property
    def watts(self) -> float | None:
        return None if self.joules is None or self.duration_s <= 0 else self.joules / self.duration_s

    @property
    def is_estimate(self) -> bool:
        return self.method.startswith("estimate")

    def __str__(self) -> str:
        if self.joules is None:
            return f"{self.name}: no reading over {self.duration_s:.3g} s [{self.method}, {self.device}]: {self.note}"
        return (f"{self.name}: {format_energy(self.joules)} over {self.duration_s:.3g} s = {self.watts:.3g} W average "
                f"[{self.method}, {self.device}]" + (f" ({self.note})" if self.note else ""))


# ---------------------------------------------------------------- backends


class Backend:
    """start() returns an opaque state; stop(state, duration_s) returns (joules or None, note)."""
    method = "?"
    device = "?"

    def start(self):
        raise NotImplementedError

    def stop(self, state, duration_s: float):
        raise NotImplementedError


class RaplBackend(Backend):
    """Intel RAPL through the Linux powercap tree: one counter per domain (package-N, dram)."""

    def __init__(self, domain_dir: Path):
        self.dir = Path(domain_dir)
        name = (self.dir / "name").read_text().strip()
        self.method, self.device = f"RAPL {name} counter", self.dir.name
        self.max_range = int((self.dir / "max_energy_range_uj").read_text())
        self._read()  # raises PermissionError now, not in the middle of a measurement

    def _read(self) -> int:
        return int((self.dir / "energy_uj").read_text())

    def start(self):
        return self._read()

    def stop(self, state, duration_s):
        delta = counter_delta(state, self._read(), self.max_range)
        if delta == 0:
            return None, "the counter did not move: window shorter than its update period (~1 ms)"
        return delta * 1e-6, ""


def rapl_backends(root: Path | str = "/sys/class/powercap") -> tuple[list[RaplBackend], list[str]]:
    """The readable RAPL domains under `root` (packages and their DRAM subdomains), and a list of
    reasons for those that are not (missing tree, permission denied)."""
    root = Path(root)
    if not root.exists():
        return [], [f"{root} does not exist (no powercap/RAPL on this machine or in this container)"]
    found, problems = [], []
    for d in sorted(root.glob("intel-rapl:*")):
        if not (d / "energy_uj").exists():
            continue
        try:
            found.append(RaplBackend(d))
        except OSError as e:  # PermissionError (root-only files) or I/O errors some VMs return
            if not isinstance(e, PermissionError):
                problems.append(f"{d}/energy_uj could not be read: {e}")
                continue
            problems.append(f"{d}/energy_uj is not readable by this user (root-only since 2020; "
                            "ask for read access or run as root)")
    if not found and not problems:
        problems.append(f"no intel-rapl:* domains under {root}")
    return found, problems


class _Nvml:
    """Import NVML and find a GPU's handle; a RuntimeError saying why when that fails."""

    @staticmethod
    def handle(index: int):
        """NVML handle of torch's GPU `index`. NVML numbers GPUs by PCI bus and ignores
        CUDA_VISIBLE_DEVICES, so the GPU is found by its UUID when torch can tell it."""
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception as e:  # library missing, no driver
            raise RuntimeError(f"NVML unavailable: {type(e).__name__}: {e}") from None
        try:
            import torch
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        except Exception:
            try:
                return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as e:  # no such GPU
                raise RuntimeError(f"NVML has no GPU {index}: {type(e).__name__}: {e}") from None


class NvmlCounterBackend(Backend):
    """The GPU's total-energy counter (mJ since the driver loaded; Volta and newer)."""

    def __init__(self, index: int = 0):
        self.index = index
        self.nvml, self.h = _Nvml.handle(index)
        self.method, self.device = "NVML energy counter", f"GPU {index} {self.nvml.nvmlDeviceGetName(self.h)}"
        self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.h)  # raises on GPUs without the counter

    def start(self):
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.h)

    def stop(self, state, duration_s):
        delta = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.h) - state
        if delta <= 0:
            return None, "the counter did not move: window shorter than its update period"
        return delta * 1e-3, ""


class PowerSampler:
    """A power sensor integrated over a window: read_watts() every interval_s seconds in a
    background thread, plus one reading as the window opens and one as it closes (so the whole
    window is covered), joined by the trapezoid rule. start(), then stop() returns the joules;
    times and watts keep the samples."""

    def __init__(self, read_watts, interval_s: float = 0.005):
        if not callable(read_watts):
            raise TypeError(f"read_watts must be callable, got {type(read_watts).__name__}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.read_watts, self.interval_s = read_watts, interval_s
        self.times: list[float] = []
        self.watts: list[float] = []
        self._stop, self._thread = threading.Event(), None

    def _sample(self) -> None:
        self.times.append(time.perf_counter())
        self.watts.append(float(self.read_watts()))

    def start(self) -> "PowerSampler":
        if self._thread is not None:
            raise RuntimeError("this sampler is already running")
        self.times, self.watts = [], []
        self._stop.clear()
        self._sample()  # the window's first instant

        def loop():
            while not self._stop.wait(self.interval_s):
                self._sample()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        if self._thread is None:
            raise RuntimeError("stop() before start()")
        self._stop.set()
        self._thread.join()  # no sample may land after the last one
        self._thread = None
        self._sample()       # the window's last instant
        return integrate_power(self.times, self.watts)


def dynamic_joules(total_j: float, idle_w: float, seconds: float) -> float:
    """The energy a workload added: a window's total minus what the machine draws doing nothing
    (idle watts times the window's length)."""
    if seconds < 0 or idle_w < 0:
        raise ValueError(f"seconds and idle_w must be >= 0, got {seconds!r} and {idle_w!r}")
    return total_j - idle_w * seconds


def min_window_s(update_period_s: float, resolution_j: float, watts: float, max_error: float) -> float:
    """The shortest window whose energy a sensor reads within a relative error max_error: its
    reading may miss up to one update period at each end (2·period·P joules) and is quantised to
    resolution_j; both must stay under max_error · P · t."""
    if not (update_period_s >= 0 and resolution_j >= 0 and watts > 0 and 0 < max_error < 1):
        raise ValueError(f"need update_period_s >= 0, resolution_j >= 0, watts > 0 and 0 < max_error < 1, got "
                         f"{update_period_s!r}, {resolution_j!r}, {watts!r}, {max_error!r}")
    return (2 * update_period_s + resolution_j / watts) / max_error


# ---------------------------------------------------------------- how sensors see power


def averaged_power(times_s, watts, window_s: float) -> list[float]:
    """What a sensor that reports a trailing mean reads at each sample time: the mean of the true
    samples with t_i - window_s < t_j <= t_i (never a later one). Many GPU boards report power like
    this, over about a second, so a short kernel's power is spread over the second that follows it."""
    times_s, watts = _trace(times_s, watts)
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
    out, lo, total = [], 0, 0.0
    for i, t in enumerate(times_s):                     # a sliding window: each sample enters and leaves once
        total += watts[i]
        while times_s[lo] <= t - window_s:
            total -= watts[lo]
            lo += 1
        out.append(total / (i + 1 - lo))
    return out


def burst_energy(times_s, reported_w, start: float, end: float, window_s: float, idle_w: float) -> float:
    """The energy (J) a device used during [start, end], from a trailing-mean sensor's readings,
    when it drew idle_w outside that interval. The readings carry the burst for one window after
    it ends: ∫ (reported - idle) over [start, end + window_s] is exactly the burst's dynamic energy,
    and idle_w · (end - start) adds its idle share back."""
    times_s, reported_w = _trace(times_s, reported_w)
    if not (end >= start and window_s > 0 and idle_w >= 0):
        raise ValueError(f"need end >= start, window_s > 0 and idle_w >= 0, got {start!r}, {end!r}, {window_s!r}, {idle_w!r}")
    keep = [i for i, t in enumerate(times_s) if start <= t <= end + window_s]
    if len(keep) < 2:
        raise ValueError(f"fewer than 2 readings in [start, end + window_s] = [{start}, {end + window_s}] s")
    extra = integrate_power([times_s[i] for i in keep], [reported_w[i] - idle_w for i in keep])
    return extra + idle_w * (end - start)


def part_time_power(times_s, watts, period_s: float = 0.1, on_s: float = 0.025) -> list[tuple[float, float]]:
    """A sensor that looks only part of the time: every period_s it reports, at k·period_s + on_s,
    the mean power of [k·period_s, k·period_s + on_s) and sees nothing of the rest of the period
    (Yang et al., arXiv 2312.02741, found 25 ms of every 100 ms on A100 and H100). Returns
    (report time, watts) for each period with samples in its on-window."""
    times_s, watts = _trace(times_s, watts)
    if not 0 < on_s <= period_s:
        raise ValueError(f"need 0 < on_s <= period_s, got on_s={on_s!r}, period_s={period_s!r}")
    seen: dict[int, list[float]] = {}
    for t, w in zip(times_s, watts):
        k = int(t // period_s)
        if t - k * period_s < on_s:
            seen.setdefault(k, []).append(w)
    return [(k * period_s + on_s, sum(ws) / len(ws)) for k, ws in sorted(seen.items())]


class NvmlSamplerBackend(Backend):
    """Board power sampled in a background thread every interval_s, integrated over the window."""

    def __init__(self, index: int = 0, interval_s: float = 0.005):
        self.index = index
        self.nvml, self.h = _Nvml.handle(index)
        self.method, self.device = "NVML power samples", f"GPU {index} {self.nvml.nvmlDeviceGetName(self.h)}"
        self.interval_s = interval_s

    def watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.h) / 1000.0

    def start(self):
        return PowerSampler(self.watts, self.interval_s).start()

    def stop(self, sampler, duration_s):
        joules = sampler.stop()
        if len(sampler.times) < 2:
            return None, f"fewer than 2 power samples (sampling every {self.interval_s * 1e3:.0f} ms)"
        return joules, f"{len(sampler.times)} samples; board power is itself an average"


ASSUMED_CPU_WATTS_PER_CORE = 10.0  # an assumption, not a measurement: override with cpu_tdp_w / LABKIT_CPU_TDP_W


class EstimateBackend(Backend):
    """Energy ≈ assumed CPU power × this process's CPU utilisation × time."""

    def __init__(self, cpu_tdp_w: float | None = None):
        from .device import cpu_cores
        self.cores = cpu_cores()
        env = os.environ.get("LABKIT_CPU_TDP_W")
        self.tdp_w = float(cpu_tdp_w or env or ASSUMED_CPU_WATTS_PER_CORE * self.cores)
        source = "given" if cpu_tdp_w else ("LABKIT_CPU_TDP_W" if env else f"assumed {ASSUMED_CPU_WATTS_PER_CORE:g} W/core")
        self.method = f"estimate: CPU power {self.tdp_w:g} W ({source}) × CPU utilisation"
        self.device = f"CPU ({self.cores} cores)"

    def start(self):
        t = os.times()
        return t.user + t.system

    def stop(self, state, duration_s):
        t = os.times()
        cpu_s = t.user + t.system - state
        if cpu_s <= 0:
            return None, "no CPU time recorded (window shorter than the OS clock tick, ~10 ms)"
        util = min(1.0, cpu_s / (duration_s * self.cores)) if duration_s > 0 else 1.0
        return self.tdp_w * util * duration_s, f"utilisation {util:.0%} of {self.cores} cores"


# ---------------------------------------------------------------- the meter


@dataclass
class Window:
    name: str
    readings: list[Reading] = field(default_factory=list)

    def best(self) -> Reading | None:
        """The first valid measured reading, else the first valid estimate."""
        valid = [r for r in self.readings if r.joules is not None]
        return next((r for r in valid if not r.is_estimate), valid[0] if valid else None)


class EnergyMeter:
    """Measure named windows with every available backend (see the module docstring).

    backends: a list of Backend objects, or "auto" (NVML counter + samples for each visible
    GPU, readable RAPL domains, and always the CPU estimate). unavailable lists why the others
    are missing, for the notebook to say.
    """

    def __init__(self, backends="auto", gpus=None, powercap_root: str = "/sys/class/powercap",
                 cpu_tdp_w: float | None = None):
        self.unavailable: list[str] = []
        if backends == "auto":
            backends = []
            for i in (gpus if gpus is not None else range(_gpu_count())):
                for cls in (NvmlCounterBackend, NvmlSamplerBackend):
                    try:
                        backends.append(cls(i))
                    except Exception as e:
                        self.unavailable.append(f"{cls.__name__}({i}): {e}")
            rapl, problems = rapl_backends(powercap_root)
            backends += rapl
            self.unavailable += problems
            backends.append(EstimateBackend(cpu_tdp_w))
        if not backends:
            raise ValueError("backends must name at least one backend")
        self.backends = list(backends)
        self._open: dict[str, tuple[float, list]] = {}

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise ValueError(f"window {name!r} is already open")
        states = []
        try:
            for b in self.backends:
                states.append(b.start())
        except Exception:
            for b, s in zip(self.backends, states):  # stop what started (sampler threads) before failing
                b.stop(s, 0.0)
            raise
        self._open[name] = (time.perf_counter(), states)

    def end_window(self, name: str) -> Window:
        if name not in self._open:
            raise ValueError(f"no open window named {name!r} (open: {sorted(self._open)})")
        t_end = time.perf_counter()
        t0, states = self._open.pop(name)
        duration = t_end - t0
        win = Window(name)
        for b, s in zip(self.backends, states):
            joules, note = b.stop(s, duration)
            win.readings.append(Reading(name, b.method, b.device, duration, joules, note))
        return win

    @contextmanager
    def window(self, name: str = "window", sync=None):
        """Context manager. sync runs before the window opens and before it closes, so queued GPU
        work lands inside it; by default it synchronises every GPU a backend measures (each by
        its index, not only the current GPU)."""
        gpus = sorted({b.index for b in self.backends if isinstance(b, (NvmlCounterBackend, NvmlSamplerBackend))})
        if sync is None and gpus:
            import torch
            if torch.cuda.is_available():
                def sync():
                    for i in gpus:
                        torch.cuda.synchronize(i)
        w = Window(name)
        if sync:
            sync()
        self.begin_window(name)
        try:
            yield w
            if sync:
                sync()
        finally:
            w.readings = self.end_window(name).readings

    def overhead_s(self, n: int = 50) -> float:
        """Median seconds one begin_window + end_window pair costs (with empty windows)."""
        import statistics
        times = []
        for i in range(n):
            t = time.perf_counter()
            self.begin_window(f"_overhead{i}")
            self.end_window(f"_overhead{i}")
            times.append(time.perf_counter() - t)
        return statistics.median(times)


def run_for(seconds: float, fn, device=None, depth: int = 8) -> int:
    """Call fn() back to back for `seconds` of finished work and return how many calls ran.

    On a GPU a call only queues work, so a plain loop queues far more than `seconds` of it and the
    window, which waits for the queue, runs much longer than asked. With device on CUDA, the host
    stays at most `depth` calls ahead of the GPU (it waits on the event recorded `depth` calls
    back: the GPU never idles, the queue never grows) and the GPU is synchronised at the end.
    """
    import collections
    import torch
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    cuda = device is not None and torch.device(device).type == "cuda"
    queued, n, t = collections.deque(), 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        fn()
        n += 1
        if cuda:
            ev = torch.cuda.Event()
            ev.record()
            queued.append(ev)
            if len(queued) > depth:
                queued.popleft().synchronize()
    if cuda:
        torch.cuda.synchronize(device)
    return n


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def per_inference(reading: Reading, n_inferences: int) -> dict:
    """J per inference, inferences per J, and throughput from one window's reading."""
    if n_inferences <= 0:
        raise ValueError(f"n_inferences must be > 0, got {n_inferences}")
    if reading.joules is None:
        raise ValueError(f"reading {reading.name!r} has no energy: {reading.note}")
    return {"joules_per_inference": reading.joules / n_inferences, "inferences_per_joule": n_inferences / reading.joules,
            "inferences_per_s": n_inferences / reading.duration_s, "watts": reading.watts, "method": reading.method}
