"""Figures of the 02-kernels deck. GPU numbers come from data/measurements/kernels-nvidia-h200.json
(labkit.kernels.kernel_sweep on an H200); bytes are counted by Triton's interpreter running
labkit.kernels on tiny CPU tensors at build time, or computed by kernels.work / tile_shared_bytes."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from labkit import kernels, record
from labkit.bench import benchmark
from labkit.seed import seed_everything

H200 = record.load("kernels-nvidia-h200")
H200_DATE = H200["provenance"]["date"][:10]
PEAKS = H200["results"]["peaks"]
COPY = PEAKS["copy_bytes_per_s"]
SWEEP = H200["results"]["sweep"]
IMPLS = ["triton", "torch eager", "torch.compile"]


def _recorded(kernel, dtype, impl):
    return sorted((r for r in SWEEP if r["kernel"] == kernel and r["dtype"] == dtype and r["impl"] == impl),
                  key=lambda r: r["size"])


def _interpreter_only(title):
    """Drawn instead of a counted figure where the kernels are compiled for a GPU (count_traffic
    needs the interpreter): build with LABKIT_DEVICE=cpu to get the counted figure."""
    fig, ax = plt.subplots(figsize=(7, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}: counted by Triton's interpreter only\n(build the deck with LABKIT_DEVICE=cpu)",
            ha="center", va="center")
    return fig


def fig_intensity():
    ops = [("add, 2²⁷ elements", kernels.work("add", 2**27, 1, 2)),
           ("softmax, 4096 × 16384", kernels.work("softmax", 16384, 4096, 2)),
           ("bias + GELU, 4096 × 16384", kernels.work("bias_gelu", 16384, 4096, 2)),
           ("matmul 1024³", kernels.work("matmul", 1024, 1, 2)),
           ("matmul 4096³", kernels.work("matmul", 4096, 1, 2))]
    ridge = PEAKS["matmul_flop_per_s"]["fp16"] / COPY
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ys = np.arange(len(ops))
    ax.barh(ys, [f / b for _, (f, b) in ops], color=["#d1495b"] * 3 + ["#1b6ca8"] * 2)
    for y, (_, (f, b)) in zip(ys, ops):
        ax.annotate(f"{f / b:,.0f}" if f / b >= 100 else f"{f / b:.3g}", (f / b, y), xytext=(4, 0),
                    textcoords="offset points", va="center")
    ax.axvline(ridge, color="black", ls="--")
    ax.text(ridge / 1.15, 0.97, f"H200 ridge point:\n{ridge:.0f} FLOP/byte", transform=ax.get_xaxis_transform(),
            ha="right", va="top")
    ax.set_xscale("log")
    ax.set_yticks(ys, [name for name, _ in ops])
    ax.invert_yaxis()
    ax.set_xlim(right=8e3)
    ax.set(xlabel="arithmetic intensity [FLOP/byte], fp16, minimum traffic",
           title=f"FLOP per byte vs the H200's ridge (fp16 peak ÷ copy, recorded {H200_DATE})")
    return fig


def fig_grid():
    n, block = 1000, 256
    programs = -(-n // block)                                   # triton.cdiv(n, BLOCK)
    fig, ax = plt.subplots(figsize=(8.5, 1.9))
    for pid in range(programs):
        start = pid * block
        valid = min(block, n - start)
        ax.add_patch(plt.Rectangle((start, 0), valid, 1, color=f"C{pid}", alpha=0.8))
        if valid < block:
            ax.add_patch(plt.Rectangle((start + valid, 0), block - valid, 1, fill=False, hatch="///",
                                       edgecolor="gray"))
            ax.annotate(f"masked\n{start + valid}…{start + block - 1}", (start + valid + (block - valid) / 2, 1.05),
                        ha="center", va="bottom", fontsize=9, color="gray")
        ax.text(start + valid / 2, 0.5, f"program {pid}\noffs {start}…{start + valid - 1}", ha="center",
                va="center", color="white", fontweight="bold")
    ax.set(xlim=(0, programs * block), ylim=(0, 1.6), yticks=[], xlabel="element index",
           title=f"n = {n}, BLOCK = {block}: a grid of cdiv(n, BLOCK) = {programs} programs, the last one masked")
    ax.grid(False)
    return fig


def fig_interp():
    seed_everything(0)
    n = 2**14
    x, y = torch.randn(n, device=kernels.DEVICE), torch.randn(n, device=kernels.DEVICE)
    t_kernel = benchmark(lambda: kernels.add(x, y), min_time_s=0.05, warmup=1, min_repeats=3).median_s
    t_torch = benchmark(lambda: x + y, min_time_s=0.02).median_s
    label = "Triton, interpreted" if kernels.INTERPRETED else "Triton, compiled"
    ns = [t_kernel / n * 1e9, t_torch / n * 1e9]
    fig, ax = plt.subplots(figsize=(7.5, 2.4))
    ax.barh([label, "torch eager"], ns, color=["#d1495b", "#1b6ca8"])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ns[0] * 30)
    for i, v in enumerate(ns):
        ax.annotate(f"{v:,.0f} ns" if v >= 100 else f"{v:.2g} ns", (v, i), xytext=(4, 0), textcoords="offset points",
                    va="center")
    if kernels.INTERPRETED:
        with kernels.count_traffic() as t:
            kernels.add(x, y)
        ax.text(0.98, 0.1, f"counted by the interpreter:\n{t.read / n:.0f} B read + {t.written / n:.0f} B written per element",
                transform=ax.transAxes, ha="right", va="bottom")
    ax.set(xlabel="time per element [ns], median", title=f"x + y on {n:,} fp32 elements, on this machine's CPU")
    return fig


def fig_add():
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for impl in IMPLS:
        rows = _recorded("add", "fp32", impl)
        a.plot([r["size"] for r in rows], [r["bytes_per_s"] / 1e12 for r in rows], "o-", label=impl)
    tune = H200["results"]["add_block_tuning"]
    b.plot([r["block"] for r in tune], [r["bytes_per_s"] / 1e12 for r in tune], "o-", label="Triton add, 2²⁷ elements")
    for ax in (a, b):
        ax.axhline(COPY / 1e12, color="black", ls=":", label=f"measured copy {COPY / 1e12:.2f} TB/s")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 5)
        ax.legend(fontsize=9, loc="lower right")
    a.set(xlabel="elements (fp32)", ylabel="effective bandwidth [TB/s]", title="x + y by size")
    b.set(xlabel="BLOCK (elements per program)", title="Triton add by block size")
    fig.suptitle(f"NVIDIA H200, recorded {H200_DATE}", fontweight="bold")
    fig.tight_layout()
    return fig


def _bandwidth_sweep(kernel, dtype, title, labels=None):
    fig, ax = plt.subplots(figsize=(6, 3.3))
    for impl in IMPLS:
        rows = _recorded(kernel, dtype, impl)
        ax.plot([r["size"] for r in rows], [r["bytes_per_s"] / 1e12 for r in rows], "o-", label=(labels or {}).get(impl, impl))
    ax.axhline(COPY / 1e12, color="black", ls=":", label=f"measured copy {COPY / 1e12:.2f} TB/s")
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"row length (4096 rows, {dtype})", ylabel="effective bandwidth [TB/s]", ylim=(0, 5),
           title=f"{title}, NVIDIA H200, recorded {H200_DATE}")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def fig_softmax():
    return _bandwidth_sweep("softmax", "fp16", "Softmax")


def fig_fusion():
    return _bandwidth_sweep("bias_gelu", "fp32", "gelu(x + b)",
                            {"triton": "Triton, fused", "torch eager": "torch eager (two kernels)"})


def fig_online():
    rng = np.random.default_rng(0)
    block, n = 256, 2048
    x = rng.standard_normal(n)
    x[1400] = 9.0                                      # the row's max arrives in block 6 of 8
    ends = np.arange(block, n + 1, block)
    m = np.array([x[:e].max() for e in ends])         # the running max after each block
    s = np.array([np.exp(x[:e] - x[:e].max()).sum() for e in ends])   # the sum of exp(x − running max)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.9))
    blocks = np.arange(1, len(ends) + 1)
    a.step(blocks, m, "o-", where="post")
    a.set(xlabel="blocks read", ylabel="running max m", title="m grows when a block holds a larger value")
    b.plot(blocks, s, "o-", color="#d1495b", label="running sum s")
    b.axhline(np.exp(x - x.max()).sum(), color="black", ls=":", label="the row's denominator")
    b.set_yscale("log")
    b.set(xlabel="blocks read", ylabel="s = Σ exp(x − m)", title="…and every term in s shrinks by exp(m − m′)")
    b.legend(fontsize=9)
    fig.suptitle(f"One row of {n} values read in blocks of {block}", fontweight="bold")
    fig.tight_layout()
    return fig


def fig_traffic():
    if not kernels.INTERPRETED:
        return _interpreter_only("bytes moved per kernel")
    seed_everything(0)
    x = torch.randn(4, 1000)
    xb, b = torch.randn(64, 256), torch.randn(256)
    runs = [("softmax\none block per row", x, lambda: kernels.softmax(x)),
            ("softmax\nonline, blocks of 256", x, lambda: kernels.softmax(x, online_block=256)),
            ("gelu(x + b)\ntwo kernels", xb, lambda: kernels.bias_gelu_unfused(xb, b)),
            ("gelu(x + b)\nfused", xb, lambda: kernels.bias_gelu(xb, b))]
    fig, ax = plt.subplots(figsize=(8, 3.0))
    for i, (name, inp, fn) in enumerate(runs):
        with kernels.count_traffic() as t:
            fn()
        size = inp.numel() * inp.element_size()
        ax.bar(i, t.read / size, color="#1b6ca8", label="read" if i == 0 else None)
        ax.bar(i, t.written / size, bottom=t.read / size, color="#d1495b", label="written" if i == 0 else None)
        ax.annotate(f"{t.total / size:.1f}×", (i, t.total / size), ha="center", va="bottom", fontweight="bold")
    ax.set_xticks(range(len(runs)), [r[0] for r in runs])
    ax.set_ylim(0, 6)
    ax.set(ylabel="bytes ÷ the input's bytes", title="Loads and stores counted by Triton's interpreter (fp32)")
    ax.legend(loc="upper left")
    return fig


def fig_tiles():
    if not kernels.INTERPRETED:
        return _interpreter_only("matmul traffic per tile")
    seed_everything(0)
    n = 128                                            # small: the interpreter runs programs one by one
    a, b = torch.randn(n, n), torch.randn(n, n)
    tiles = [32, 64, 128]
    ratios = []
    for t in tiles:
        with kernels.count_traffic() as c:
            kernels.matmul(a, b, block=(t, t, 32))
        ratios.append(c.total / (3 * n * n * 4))
    fig, (l, r) = plt.subplots(1, 2, figsize=(9, 3.1))
    l.bar([f"{t} × {t}" for t in tiles], ratios)
    for i, v in enumerate(ratios):
        l.annotate(f"{v:.2f}×", (i, v), ha="center", va="bottom")
    l.set(xlabel="tile of C (BLOCK_K 32)", ylabel="counted ÷ minimum bytes", ylim=(0, 1.2 * max(ratios)),
          title=f"Counted traffic, {n}³ fp32")
    sizes = [32, 64, 128, 256]
    for bk in (32, 64, 128):
        r.plot(sizes, [kernels.tile_shared_bytes((s, s, bk), 2, 3) / 1024 for s in sizes], "o-", label=f"BLOCK_K {bk}")
    for limit, gpu, style in ((227, "H100", ":"), (163, "A100", "--")):
        r.axhline(limit, color="black", ls=style, lw=1)
        r.annotate(f"{gpu}: {limit} KiB per block", (32, limit), xytext=(0, 3), textcoords="offset points", fontsize=9)
    r.set_xscale("log", base=2)
    r.set_xticks(sizes, [str(s) for s in sizes])
    r.set(xlabel="square tile BLOCK_M = BLOCK_N", ylabel="shared memory [KiB]", ylim=(0, 480),
          title="Shared memory per program, fp16")
    r.legend(fontsize=9, loc="upper left", title="num_stages = 3 (lower bound)", title_fontsize=9)
    fig.tight_layout()
    return fig


def fig_matmul():
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.1))
    for ax, dtype in zip(axes, ["fp16", "fp32"]):
        sizes = [r["size"] for r in _recorded("matmul", dtype, "triton")]
        xs = np.arange(len(sizes))
        for i, impl in enumerate(IMPLS):
            rows = _recorded("matmul", dtype, impl)
            ax.bar(xs + (i - 1) * 0.27, [r["flop_rate"] / 1e12 for r in rows], 0.27,
                   label={"triton": "Triton (autotuned tile)", "torch eager": "torch eager (cuBLAS)"}.get(impl, impl))
        peak = PEAKS["matmul_flop_per_s"][dtype] / 1e12
        ax.axhline(peak, color="black", ls=":")
        ax.annotate(f"measured peak {peak:.0f}", (-0.45, peak), xytext=(0, 3), textcoords="offset points", fontsize=9)
        ax.set_xticks(xs, [f"{s}³" for s in sizes])
        ax.set_ylim(0, 1.2 * peak)
        ax.set(ylabel="TFLOP/s", title=f"{dtype}" + (" (true fp32, no TF32)" if dtype == "fp32" else ""))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.07))
    fig.suptitle(f"Matmul on an NVIDIA H200 (recorded {H200_DATE})", fontweight="bold")
    fig.tight_layout()
    return fig
