"""Hardware ceilings: the vendor's datasheet, and what this machine actually reaches.

A percentage of peak means nothing until you say which peak. The kit shows two:
- the datasheet figure (DATASHEETS, copied from the NVIDIA A100 and H100 datasheets quoted
  in the course's lecture decks, and the H200's, the GPU of the kit's recordings), and
- the measured peak of the machine at hand: a large matmul per dtype (FLOP/s) and a large
  device-to-device copy (bytes/s), measured once and cached per machine.
"""
import datetime as _dt
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .bench import benchmark
from .device import describe_machine, device_name, machine_key, pick_device

T = 1e12
# Dense peaks (FLOP/s or byte/s). NVIDIA's tensor-core figures marked "*" in the datasheets
# are *with 2:4 sparsity*; the dense figure is half of it, and that is what is stored here.
# Source: NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4) and the
# H100 Tensor Core GPU datasheet, as quoted in the course's lecture decks.
DATASHEETS: dict[str, dict[str, float]] = {
    "A100 80GB PCIe": {"fp64": 9.7 * T, "fp64_tensor": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T,
                       "bf16": 312 * T, "fp16": 312 * T, "int8": 624 * T,
                       "mem_bytes_per_s": 1.935e12, "tdp_w": 300},
    "A100 80GB SXM": {"fp64": 9.7 * T, "fp64_tensor": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T,
                      "bf16": 312 * T, "fp16": 312 * T, "int8": 624 * T,
                      "mem_bytes_per_s": 2.039e12, "tdp_w": 400},
    "H100 SXM": {"fp64": 34 * T, "fp64_tensor": 67 * T, "fp32": 67 * T, "tf32": 494.5 * T,
                 "bf16": 989.5 * T, "fp16": 989.5 * T, "fp8": 1979 * T, "int8": 1979 * T,
                 "mem_bytes_per_s": 3.35e12, "tdp_w": 700},
    "H100 NVL": {"fp64": 30 * T, "fp64_tensor": 60 * T, "fp32": 60 * T, "tf32": 417.5 * T,
                 "bf16": 835.5 * T, "fp16": 835.5 * T, "fp8": 1670.5 * T, "int8": 1670.5 * T,
                 "mem_bytes_per_s": 3.9e12, "tdp_w": 400},
    # NVIDIA H200 Tensor Core GPU datasheet: the H100 SXM's GH100 and its compute, with 141 GB of
    # HBM3e at 4.8 TB/s (the kit's GPU recordings in data/measurements are from an H200).
    "H200 SXM": {"fp64": 34 * T, "fp64_tensor": 67 * T, "fp32": 67 * T, "tf32": 494.5 * T,
                 "bf16": 989.5 * T, "fp16": 989.5 * T, "fp8": 1979 * T, "int8": 1979 * T,
                 "mem_bytes_per_s": 4.8e12, "tdp_w": 700},
}


def datasheet(name: str) -> dict[str, float] | None:
    """The datasheet entry matching a device name such as torch.cuda.get_device_name().

    "NVIDIA H100 80GB HBM3" -> "H100 SXM"; "NVIDIA H100 NVL" -> "H100 NVL"; "NVIDIA H200" -> "H200 SXM";
    "NVIDIA A100-SXM4-80GB" -> "A100 80GB SXM"; "NVIDIA A100 80GB PCIe" -> "A100 80GB PCIe".
    None when the kit has no datasheet for that exact product (every CPU; GPUs and variants
    the decks do not tabulate, such as the H100 PCIe or the A100 40GB; a MIG slice, which has
    only part of the GPU): a wrong peak is worse than none.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a device name string, got {type(name).__name__}")
    n = name.upper()
    if "MIG" in n.split():
        return None
    if "H200" in n:
        return None if "NVL" in n else DATASHEETS["H200 SXM"]
    if "H100" in n:
        if "NVL" in n:
            return DATASHEETS["H100 NVL"]
        if "PCIE" in n:
            return None
        return DATASHEETS["H100 SXM"]
    if "A100" in n and "80GB" in n:
        return DATASHEETS["A100 80GB PCIe" if "PCIE" in n else "A100 80GB SXM"]
    return None


_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _matmul_operands(dtype: str, n: int, device: torch.device):
    a = torch.randn(n, n, device=device, dtype=_DTYPES[dtype])
    return a, torch.randn(n, n, device=device, dtype=_DTYPES[dtype])


@contextmanager
def _tf32(on: bool):
    """fp32 matmuls on TF32 tensor cores (on=True) or in full fp32 for the duration, then as before.
    Uses torch's fp32_precision setting where it exists (torch >= 2.9): reading the legacy
    allow_tf32 flag raises once a program has used the new one."""
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        old, m.fp32_precision = m.fp32_precision, ("tf32" if on else "ieee")
        try:
            yield
        finally:
            m.fp32_precision = old
    else:  # older torch
        old, m.allow_tf32 = m.allow_tf32, on
        try:
            yield
        finally:
            m.allow_tf32 = old


def _time_matmul(dtype: str, n: int, device: torch.device, **bench_kw) -> float:
    """FLOP/s of one n×n×n matmul in `dtype`, timed by bench.benchmark (fp32 with TF32 off)."""
    a, b = _matmul_operands(dtype, n, device)
    with _tf32(dtype == "tf32"):
        t = benchmark(lambda: a @ b, device=device, **bench_kw)
    return t.rate(2 * n**3)


def _check_dtype(dtype: str, device: torch.device) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if dtype == "tf32" and device.type != "cuda":
        raise ValueError("dtype='tf32' needs a CUDA device; on a CPU use 'fp32'")


def measure_matmul_flops(dtype: str = "fp32", n: int | None = None, device=None,
                         min_time_s: float = 0.3) -> float:
    """FLOP/s of an n×n×n matmul in `dtype` ("fp32", "tf32", "fp16", "bf16") on `device`.

    fp32 on a GPU runs with TF32 tensor cores disabled (true fp32); "tf32" enables them.
    Default n: 8192 on a GPU, 2048 on a CPU. Careful on a CPU without fp16/bf16 hardware:
    there a 2048³ fp16 matmul takes about a minute; `sized_matmul_flops` picks n for you.
    """
    device = torch.device(device) if device is not None else pick_device()
    _check_dtype(dtype, device)
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if not isinstance(n, int) or n < 16:
        raise ValueError(f"n must be an int >= 16, got {n!r}")
    return _time_matmul(dtype, n, device, warmup=2, min_time_s=min_time_s)


def sized_matmul_flops(dtype: str = "fp32", device=None, call_s: float = 0.1,
                       n_max: int | None = None, min_time_s: float = 0.2) -> tuple[float, int]:
    """(FLOP/s, n): the matmul peak in `dtype`, at the largest n whose one call fits in `call_s`.

    A matmul's FLOP/s grows with n until the hardware is saturated, but one call's time grows as
    n³. So n starts at 128 and doubles while the next size, predicted at today's rate (8× the
    time), still fits in `call_s` seconds, up to n_max (8192 on a GPU, 2048 on a CPU). A dtype
    with no fast path on this hardware (fp16 on many CPUs: ~0.2 GFLOP/s) stays at a small n
    and costs a fraction of a second instead of minutes. Then `min_time_s` of timed repeats.
    """
    device = torch.device(device) if device is not None else pick_device()
    _check_dtype(dtype, device)
    if not call_s > 0:
        raise ValueError(f"call_s must be > 0 seconds, got {call_s!r}")
    n_max = n_max or (8192 if device.type == "cuda" else 2048)
    n = 128
    while 2 * n <= n_max:
        rate = _time_matmul(dtype, n, device, warmup=1, min_repeats=1, max_repeats=1, min_time_s=0)
        if 2 * (2 * n) ** 3 / rate > call_s:
            break
        n *= 2
    return _time_matmul(dtype, n, device, warmup=1, min_repeats=3, max_repeats=200, min_time_s=min_time_s), n


def measure_copy_bandwidth(nbytes: int | None = None, device=None, min_time_s: float = 0.3) -> float:
    """Bytes/s of copying one large buffer into another on `device` (bytes read + written).

    Default size: 1 GiB on a GPU, 256 MiB on a CPU (well past the last-level cache).
    """
    device = torch.device(device) if device is not None else pick_device()
    if nbytes is None:
        nbytes = 2**30 if device.type == "cuda" else 2**28
    if not isinstance(nbytes, int) or nbytes < 4096:
        raise ValueError(f"nbytes must be an int >= 4096, got {nbytes!r}")
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = benchmark(lambda: dst.copy_(src), device=device, warmup=2, min_time_s=min_time_s)
    return t.rate(2 * src.numel() * 4)


def cache_path() -> Path:
    """Where measured peaks are cached: $LABKIT_CACHE_DIR or ~/.cache/labkit, file peaks.json.

    One file holds every machine's entry, keyed by hardware, torch's thread count and torch
    version (device.machine_key): on a cluster with a shared $HOME, each node type and each
    --cpus-per-task measures once (a few seconds), and nodes of the same type share the result.
    """
    root = os.environ.get("LABKIT_CACHE_DIR") or Path.home() / ".cache" / "labkit"
    return Path(root) / "peaks.json"


# A re-check that differs from the first fp32 measurement by more than this factor means the
# machine was not steady (another job, a turbo state, a noisy neighbour).
UNSTEADY = 1.25
NO_FAST_PATH = 0.1   # a dtype under 10% of fp32's FLOP/s has no fast hardware path here


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a corrupt cache is re-measured, never trusted


def _write_cache(path: Path, key: str, peaks: dict) -> None:
    cache = _read_cache(path)  # read again: another process may have added its machine meanwhile
    cache[key] = peaks
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2))
        tmp.replace(path)
    except OSError as e:  # a read-only cache (a grading sandbox, a read-only $HOME): use, don't keep
        print(f"labkit: peaks not cached ({path}: {e.strerror}); they will be measured again next time")


def _measure(device: torch.device, progress: bool) -> dict:
    """Every peak of `device`, in a few seconds: sized matmuls per dtype, a copy, an fp32 re-check."""
    dtypes = ["fp32", "tf32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16", "fp16"]
    t0 = time.perf_counter()
    flops, sizes, notes = {}, {}, {}
    steps = tqdm(dtypes + ["copy", "re-check"], desc="measuring this machine's peaks (first time only)",
                 disable=not progress, leave=False)
    for step in steps:
        steps.set_postfix_str(step)
        if step == "copy":
            copy = measure_copy_bandwidth(device=device, min_time_s=0.2)
        elif step == "re-check":
            again = _time_matmul("fp32", sizes["fp32"], device, warmup=1, min_repeats=3, min_time_s=0.15)
        else:
            flops[step], sizes[step] = sized_matmul_flops(step, device=device)
    for dt in dtypes:
        if flops[dt] < NO_FAST_PATH * flops["fp32"]:
            notes[dt] = (f"no fast {dt} path on this hardware: {flops[dt] / flops['fp32']:.1%} of fp32, "
                         f"measured at n={sizes[dt]} only")
    ratio = max(again, flops["fp32"]) / min(again, flops["fp32"])
    steady = ratio <= UNSTEADY
    if not steady:  # the higher of the two is kept; a peak low throughout is caught at the next start
        notes["steady"] = (f"fp32 measured {format_rate(flops['fp32'])}, then {format_rate(again)} at the end: "
                           f"the machine was not steady; the higher is kept")
    flops["fp32"] = max(flops["fp32"], again)
    return {
        "machine": describe_machine(device),
        "device": device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "matmul_flop_per_s": flops,
        "matmul_n": sizes,
        "copy_bytes_per_s": copy,
        "steady": steady,
        "notes": notes,
        "measure_s": round(time.perf_counter() - t0, 2),
    }


def measured_peaks(device=None, refresh: bool = False, progress: bool = True) -> dict:
    """Measured peaks of `device`: from the cache, checked, or measured now (a few seconds).

    Returns {"machine", "device", "date", "matmul_flop_per_s": {dtype: FLOP/s}, "matmul_n": {dtype: n},
    "copy_bytes_per_s", "steady", "notes": {what: why}, "measure_s"}.
    A cached entry is trusted only after a quick fp32 re-check (a fraction of a second): if
    this machine is now clearly faster than the cache says, the cached peaks were measured
    under load and are measured again; if it is clearly slower, it is busy now, the cached
    peaks stay and a note says so. While measuring, fp32 is timed first and last; the higher
    counts ("steady" says whether they agreed). refresh=True always measures again.
    """
    device = torch.device(device) if device is not None else pick_device()
    key, path = machine_key(device), cache_path()
    cached = _read_cache(path).get(key)
    if cached and not refresh and "matmul_flop_per_s" in cached:  # older caches named it "matmul_flops": re-measured
        now = _time_matmul("fp32", cached["matmul_n"]["fp32"], device, warmup=1, min_repeats=3, min_time_s=0.1)
        was = cached["matmul_flop_per_s"]["fp32"]
        if now <= UNSTEADY * was:
            peaks = dict(cached, notes=dict(cached["notes"]))
            if now * UNSTEADY < was:
                peaks["notes"]["busy"] = (f"this machine is busy now: fp32 re-check {format_rate(now)} vs "
                                          f"{format_rate(was)} cached; timings now will be low")
            return peaks
        progress and print(f"cached fp32 peak {format_rate(was)} < re-check {format_rate(now)}: "
                           "it was measured under load; measuring again")
    peaks = _measure(device, progress)
    _write_cache(path, key, peaks)
    return peaks


def format_rate(x: float, unit: str = "FLOP/s") -> str:
    """1.23e12 -> '1.23 TFLOP/s'; works for any unit (B/s, FLOP, J)."""
    x = float(f"{x:.3g}")  # round first, so 999.96e9 prints as 1 T..., not 1e+03 G...
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def describe_peaks(peaks: dict) -> str:
    """Measured peaks (and the datasheet's where the kit has it) as a few readable lines, with
    the matmul size each was measured at and any note (no fast path, a busy machine)."""
    sheet = datasheet(peaks["device"])
    sizes = peaks.get("matmul_n", {})
    lines = []
    for dt, v in peaks["matmul_flop_per_s"].items():
        at = f" at n={sizes[dt]}" if dt in sizes else ""
        ref = f"  (datasheet {format_rate(sheet[dt])})" if sheet and dt in sheet else ""
        lines.append(f"  matmul {dt:>4}: {format_rate(v)}{at}{ref}")
    ref = f"  (datasheet {format_rate(sheet['mem_bytes_per_s'], 'B/s')})" if sheet else ""
    lines.append(f"  copy       : {format_rate(peaks['copy_bytes_per_s'], 'B/s')}{ref}")
    lines += [f"  note: {text}" for text in peaks.get("notes", {}).values()]
    return "\n".join(lines)
