"""Record NVML energy traces on a GPU node, with provenance, for lab 06.

    python scripts/record_energy.py          # about 1 minute on one GPU

1. Steady load (fp16 matmuls back to back) for 12 s: the NVML energy counter and the integrated
   power samples over the same window (they should agree within a few percent), plus the trace.
2. A matmul sweep: J/FLOP per size and dtype, each window at least 1 s.
Writes data/measurements/energy-<gpu>.json; lab 06 plots it for students without a GPU.
"""
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import energy, record  # noqa: E402


def busy(seconds, fn):
    return energy.run_for(seconds, fn, device="cuda")


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: nothing to record (NVML needs an NVIDIA GPU)")
    meter = energy.EnergyMeter(gpus=[0])
    sampler = next(b for b in meter.backends if isinstance(b, energy.NvmlSamplerBackend))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    busy(2, lambda: a @ a)  # warm up clocks
    state = sampler.start()
    with meter.window("steady fp16 matmul, 12 s", sync=torch.cuda.synchronize) as w:
        busy(12, lambda: a @ a)
    sampler.stop(state, 0)
    steady = [{"method": r.method, "joules": r.joules, "seconds": r.duration_s, "note": r.note} for r in w.readings]
    t0 = state.times[0]
    trace = {"t_s": [t - t0 for t in state.times][::10], "watts": state.watts[::10]}
    sweep = []
    for dtype in (torch.float32, torch.float16):
        for n in (1024, 2048, 4096, 8192):
            x = torch.randn(n, n, device="cuda", dtype=dtype)
            with meter.window(f"{dtype} {n}", sync=torch.cuda.synchronize) as w:
                calls = busy(1.5, lambda: x @ x)
            r = next(r for r in w.readings if r.method == "NVML energy counter")
            flop = 2 * n**3 * calls
            sweep.append({"dtype": str(dtype).split(".")[-1], "n": n, "flop": flop, "seconds": r.duration_s,
                          "joules": r.joules, "joules_per_flop": r.joules / flop if r.joules else None})
            print(sweep[-1])
    for s in steady:
        print(s)
    name = "energy-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    print("recorded to", record.save(name, {"steady": steady, "trace": trace, "matmul_sweep": sweep,
                                            "meter_overhead_s": meter.overhead_s()},
                                     device="cuda", command="python scripts/record_energy.py"))


if __name__ == "__main__":
    main()
