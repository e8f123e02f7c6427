"""Hardware ceilings: the vendor's datasheet, and what this machine actually reaches.

A percentage of peak means nothing until you say which peak. The kit shows two:
- the datasheet figure (DATASHEETS, copied from the NVIDIA A100 and H100 datasheets quoted
  in the course's lecture decks), and
- the measured peak of the machine at hand: a large matmul per dtype (FLOP/s) and a large
  device-to-device copy (bytes/s), measured once and cached per machine.
"""
import datetime as _dt
import json
import os
from pathlib import Path

import torch

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
}


def datasheet(name: str) -> dict[str, float] | None:
    """The datasheet entry matching a device name such as torch.cuda.get_device_name().

    "NVIDIA H100 80GB HBM3" -> "H100 SXM"; "NVIDIA H100 NVL" -> "H100 NVL";
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


def measure_matmul_flops(dtype: str = "fp32", n: int | None = None, device=None,
                         min_time_s: float = 0.3) -> float:
    """FLOP/s of an n×n×n matmul in `dtype` ("fp32", "tf32", "fp16", "bf16") on `device`.

    fp32 on a GPU runs with TF32 tensor cores disabled (true fp32); "tf32" enables them.
    Default n: 8192 on a GPU, 2048 on a CPU.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    device = torch.device(device) if device is not None else pick_device()
    if dtype == "tf32" and device.type != "cuda":
        raise ValueError("dtype='tf32' needs a CUDA device; on a CPU use 'fp32'")
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if not isinstance(n, int) or n < 16:
        raise ValueError(f"n must be an int >= 16, got {n!r}")
    a = torch.randn(n, n, device=device, dtype=_DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=_DTYPES[dtype])
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        t = benchmark(lambda: a @ b, device=device, warmup=2, min_time_s=min_time_s)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return t.rate(2 * n**3)


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
    """Where measured peaks are cached: $LABKIT_CACHE_DIR or ~/.cache/labkit, file peaks.json."""
    root = os.environ.get("LABKIT_CACHE_DIR") or Path.home() / ".cache" / "labkit"
    return Path(root) / "peaks.json"


def measured_peaks(device=None, refresh: bool = False) -> dict:
    """Measured peaks of `device`, from the cache or measured now (about 5 s on a CPU).

    Returns {"machine", "device", "date", "matmul_flops": {dtype: FLOP/s}, "copy_bytes_per_s"}.
    refresh=True measures again and overwrites the cached entry.
    """
    device = torch.device(device) if device is not None else pick_device()
    key = machine_key(device)
    path = cache_path()
    cache = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}  # a corrupt cache is re-measured, never trusted
    if key in cache and not refresh:
        return cache[key]
    dtypes = ["fp32", "tf32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16", "fp16"]
    peaks = {
        "machine": describe_machine(device),
        "device": device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "matmul_flops": {d: measure_matmul_flops(d, device=device) for d in dtypes},
        "copy_bytes_per_s": measure_copy_bandwidth(device=device),
    }
    cache[key] = peaks
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2))
    tmp.replace(path)
    return peaks


def format_rate(x: float, unit: str = "FLOP/s") -> str:
    """1.23e12 -> '1.23 TFLOP/s'; works for any unit (B/s, FLOP, J)."""
    x = float(f"{x:.3g}")  # round first, so 999.96e9 prints as 1 T..., not 1e+03 G...
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def describe_peaks(peaks: dict) -> str:
    """Measured peaks (and the datasheet's where the kit has it) as a few readable lines."""
    sheet = datasheet(peaks["device"])
    lines = []
    for dt, v in peaks["matmul_flops"].items():
        ref = f"  (datasheet {format_rate(sheet[dt])})" if sheet and dt in sheet else ""
        lines.append(f"  matmul {dt:>4}: {format_rate(v)}{ref}")
    ref = f"  (datasheet {format_rate(sheet['mem_bytes_per_s'], 'B/s')})" if sheet else ""
    lines.append(f"  copy       : {format_rate(peaks['copy_bytes_per_s'], 'B/s')}{ref}")
    return "\n".join(lines)
