"""Measure, on this GPU, what the GPU goals of two graded targets rest on, so they can be set from data.

    python scripts/probe_gpu_targets.py

Lab 01 (forward MFU of GPT-2 small): the MFU of one forward at several batch × sequence sizes and
dtypes, against the peak matmul timed beside it (the lab's forward_mfu). Lab 02 (softmax
bandwidth): the one-block-per-row softmax (the lab's exercise, labkit.kernels' row kernel) at
4096 × 8192 fp16 with 4, 8 and 16 warps, as a share of the measured copy bandwidth. Prints tables.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from labkit import flops, hw, kernels  # noqa: E402
from labkit.bench import benchmark  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: these goals are for GPUs")
    from transformers import GPT2Config, GPT2LMHeadModel
    peaks = hw.measured_peaks("cuda")
    x = torch.randn(4096, 8192, device="cuda", dtype=torch.float16)
    for warps in (4, 8, 16):
        y = torch.empty_like(x)
        run = lambda: kernels._softmax_row_kernel[(x.shape[0],)](x, y, x.shape[1], x.stride(0), y.stride(0),
                                                                 BLOCK=8192, num_warps=warps)
        run()
        torch.testing.assert_close(y, torch.softmax(x.float(), -1).half(), atol=1e-3, rtol=1e-2)
        t = benchmark(run, device="cuda", min_time_s=0.2)
        print(f"softmax 4096 x 8192 fp16, {warps:2d} warps: {t.median_s * 1e6:6.1f} us, "
              f"{100 * 2 * x.numel() * 2 / t.median_s / peaks['copy_bytes_per_s']:.0f}% of the measured copy")
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    model = GPT2LMHeadModel(cfg).cuda().eval()
    for dtype in ("bf16", "fp16"):
        m = model.to(DTYPES[dtype])
        n = peaks["matmul_n"][dtype]
        a = torch.randn(n, n, device="cuda", dtype=DTYPES[dtype])
        for batch, seq in [(8, 1024), (16, 1024), (32, 1024), (64, 1024), (128, 512)]:
            ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
            with torch.inference_mode():
                t = benchmark(lambda: m(ids), device="cuda", min_time_s=0.3)
            peak_now = 2 * n**3 / benchmark(lambda: a @ a, device="cuda", min_time_s=0.2).median_s
            mfu = 100 * flops.transformer_flops(cfg, seq, batch) / t.median_s / peak_now
            print(f"GPT-2 small forward {batch:3d} x {seq:4d} {dtype}: {t.median_s * 1e3:7.2f} ms, MFU {mfu:.1f}%")


if __name__ == "__main__":
    main()
