"""Benchmark labkit's Triton kernels on this GPU and record the results to data/measurements/.

    python scripts/bench_kernels.py            # on a CUDA node: sweep, print, record
    python scripts/bench_kernels.py --quick    # smaller sweep

Records data/measurements/kernels-<gpu>.json with provenance (GPU, driver, torch and triton
versions, date, command); lab 02 shows the recording to students who have no GPU. Without a
GPU the script stops: interpreter timings are not hardware measurements.
"""
import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import hw, kernels, record  # noqa: E402
from labkit.hw import format_rate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if kernels.INTERPRETED:
        raise SystemExit("no CUDA GPU: Triton runs in its interpreter here, whose timings are not worth recording")
    peaks = hw.measured_peaks("cuda", refresh=True)
    big = [2**20, 2**24, 2**27] if args.quick else [2**16, 2**18, 2**20, 2**22, 2**24, 2**26, 2**27]
    cols = [256, 1024, 4096, 16384] if args.quick else [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    mm = [1024, 4096] if args.quick else [512, 1024, 2048, 4096, 8192]
    rows = []
    for dtype in ("fp32", "fp16"):
        rows += kernels.kernel_sweep("add", big, dtype)
        rows += kernels.kernel_sweep("softmax", cols, dtype, rows=4096)
        rows += kernels.kernel_sweep("bias_gelu", cols, dtype, rows=4096)
    rows += kernels.kernel_sweep("matmul", mm, "fp16")
    rows += kernels.kernel_sweep("matmul", mm[:3], "fp32")
    # block-size tuning of the vector add at the largest size
    x, y = torch.randn(big[-1], device="cuda"), torch.randn(big[-1], device="cuda")  # two inputs: x + x reads x once
    from labkit.bench import benchmark
    tuning = []
    for block in (128, 256, 512, 1024, 2048, 4096, 8192):
        t = benchmark(lambda: kernels.add(x, y, block=block), device="cuda")
        tuning.append({"block": block, "seconds": t.median_s, "bytes_per_s": 3 * x.numel() * 4 / t.median_s})
    for r in rows:
        rate = format_rate(r["flop_rate"]) if r["kernel"] == "matmul" else format_rate(r["bytes_per_s"], "B/s")
        print(f"{r['kernel']:9s} {r['dtype']} {r['size']:>10,} {r['impl']:14s} {rate}")
    name = "kernels-" + re.sub(r"[^a-z0-9]+", "-", peaks["device"].lower()).strip("-")
    path = record.save(name, {"peaks": peaks, "sweep": rows, "add_block_tuning": tuning}, device="cuda",
                       command="python scripts/bench_kernels.py" + (" --quick" if args.quick else ""))
    print(f"recorded to {path}")


if __name__ == "__main__":
    main()
