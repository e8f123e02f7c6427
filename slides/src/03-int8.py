"""Figures of the 03-int8 deck, drawn by labkit.quant.int8 at build time on this machine's CPU.

The weights are the tiny GPT's own (data/tiny_gpt, read with safetensors: no transformers import);
the activations are synthetic, made like the ones students find in all-MiniLM-L6-v2 (a few feature
channels far larger than the rest, the same channels in every token), and labelled as such.
"""
import functools

import matplotlib.pyplot as plt
import torch
import torch.nn as nn

from labkit.data import DATA
from labkit.quant import int8 as Q
from labkit.seed import seed_everything

OUTLIERS = {17: 10.0, 90: 6.0, 151: 6.0, 230: 4.0}   # channel -> how many times the others' spread


@functools.lru_cache(maxsize=1)
def _weights() -> tuple[dict, dict]:
    """({name: (out, in) weight} of the tiny GPT's block linears (GPT-2 stores them (in, out)), the whole state dict)."""
    from safetensors.torch import load_file
    sd = load_file(str(DATA / "tiny_gpt" / "model.safetensors"))
    return {k[len("transformer."):-len(".weight")].replace("h.", "h"): v.t().contiguous()
            for k, v in sd.items() if k.endswith(".weight") and (".attn.c_" in k or ".mlp.c_" in k)}, sd


def _acts(tokens: int, channels: int = 256, seed: int = 0, outliers: bool = True) -> torch.Tensor:
    """Synthetic activations (tokens, channels): channels of mildly different spread, tokens of mildly
    different size, and (if outliers) the OUTLIERS channels many times larger, in every token."""
    seed_everything(seed)
    x = torch.randn(tokens, channels) * 0.5 * torch.exp(0.3 * torch.randn(channels))
    x = x * torch.exp(0.2 * torch.randn(tokens, 1))
    if outliers:
        for c, k in OUTLIERS.items():
            x[:, c] *= k
    return x


def _layer() -> nn.Linear:
    """The tiny GPT's first MLP layer (256 -> 1024) as an nn.Linear."""
    w, sd = _weights()
    lin = nn.Linear(256, 1024)
    with torch.no_grad():
        lin.weight.copy_(w["h0.mlp.c_fc"])
        lin.bias.copy_(sd["transformer.h.0.mlp.c_fc.bias"])
    return lin


def fig_weights():
    w, _ = _weights()
    names = list(w)
    err = {g: [Q.relative_error(w[n], Q.fake_quant(w[n], g)) for n in names] for g in ("tensor", "channel")}
    fig, ax = plt.subplots(figsize=(8.5, 3.3))
    xs = torch.arange(len(names)).float()
    ax.bar(xs - 0.2, err["tensor"], 0.4, label="one scale per tensor")
    ax.bar(xs + 0.2, err["channel"], 0.4, label="one scale per output channel (row)")
    ax.set_xticks(xs.tolist(), names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="relative error ‖W − Ŵ‖ / ‖W‖", title="int8 absmax on the tiny GPT's 16 weight matrices")
    ax.legend(fontsize=8)
    return fig


def fig_zeropoint():
    seed_everything(0)
    relu = torch.relu(torch.randn(512, 512))
    mixed = torch.randn(512, 512) * torch.logspace(-1, 1, 512)[:, None]    # tokens from 0.1 to 10 in size
    cases = [("ReLU output (all ≥ 0)", ["symmetric", "zero-point"],
              [Q.relative_error(relu, Q.fake_quant(relu)), Q.relative_error(relu, Q.fake_quant(relu, symmetric=False))]),
             ("tokens of mixed size (0.1 to 10)", ["per tensor", "per token"],
              [Q.relative_error(mixed, Q.fake_quant(mixed)), Q.relative_error(mixed, Q.fake_quant(mixed, "token"))])]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.9))
    for ax, (title, labels, errs) in zip(axes, cases):
        ax.bar(labels, errs, color=["C1", "C0"], width=0.55)
        for i, e in enumerate(errs):
            ax.text(i, e, f"{e:.4f}", ha="center", va="bottom", fontsize=9)
        ax.set(title=title, ylabel="relative error")
        ax.title.set_fontsize(10)
        ax.margins(y=0.15)
    fig.suptitle("int8, 512 × 512 random tensors (computed here)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_outliers():
    x = _acts(512)
    fig, (hm, bar) = plt.subplots(1, 2, figsize=(9, 3.2), width_ratios=(1.3, 1))
    im = hm.imshow(x[:48].abs().numpy(), aspect="auto", cmap="magma", vmax=4)
    hm.set(xlabel="feature channel", ylabel="token", title="|x| of 48 tokens (colour clipped at 4)")
    fig.colorbar(im, ax=hm, fraction=0.04)
    amax = x.abs().amax(0)
    bar.bar(range(len(amax)), amax.numpy(), width=1.0)
    bar.axhline(6.0, color="C1", ls="--", label="LLM.int8 threshold 6")
    n = len(Q.outlier_columns(x))
    bar.set(xlabel="feature channel", ylabel="max |x| over 512 tokens", title=f"{n} of {x.shape[1]} channels reach 6")
    bar.legend(fontsize=8)
    for a in (hm, bar):
        a.title.set_fontsize(10)
    fig.suptitle("synthetic activations, made like MiniLM's", fontsize=10)
    fig.tight_layout()
    return fig


def fig_smooth():
    lin = _layer()
    calib = _acts(512, seed=1)
    a, w = calib.abs().amax(0), lin.weight.detach()
    s = Q.smoothquant_scales(a, w, alpha=0.5)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), sharey=True)
    for ax, (title, before, after) in zip(axes, [("activations: max |X_j| over 512 tokens", a, a / s),
                                                 ("weights: max |W_j| of input column j", w.abs().amax(0), (w * s).abs().amax(0))]):
        ax.plot(before.numpy(), ".", ms=3, color="0.6", label=f"before: largest {before.max() / before.median():.1f}× the median")
        ax.plot(after.numpy(), ".", ms=3, color="C0", label=f"smoothed: largest {after.max() / after.median():.1f}× the median")
        ax.set(yscale="log", xlabel="input channel j", title=title)
        ax.title.set_fontsize(10)
        ax.legend(fontsize=8, markerscale=3, loc="upper right")
    axes[0].set_ylabel("max |value| (log scale)")
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 4)
    fig.suptitle("SmoothQuant, α = 0.5: the tiny GPT's h0.mlp.c_fc and synthetic inputs", fontsize=10)
    fig.tight_layout()
    return fig


def fig_schemes():
    lin = _layer()
    names = ["W8 (weights only)", "W8A8, act per tensor", "W8A8, act per token", "SmoothQuant, per tensor",
             "SmoothQuant, per token", "LLM.int8 (threshold 6)"]
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    ys = torch.arange(len(names)).float()
    with torch.no_grad():
        for k, (label, outl) in enumerate([("without outlier channels", False), ("with 4 outlier channels", True)]):
            stats = _acts(512, seed=1, outliers=outl).abs().amax(0)      # calibration: other tokens, same kind
            layers = [Q.W8A8Linear(lin, "channel", None), Q.W8A8Linear(lin, "channel", "tensor"),
                      Q.W8A8Linear(lin, "channel", "token"), Q.SmoothedLinear(lin, stats, 0.5, "tensor"),
                      Q.SmoothedLinear(lin, stats, 0.5, "token"), Q.LLMInt8Linear(lin, 6.0)]
            x = _acts(256, seed=2, outliers=outl)
            ref = lin(x)
            ax.barh(ys + (0.2 if k else -0.2), [100 * Q.relative_error(ref, m(x)) for m in layers], 0.4,
                    label=label, color=f"C{k}")
    ax.set_yticks(ys.tolist(), names)
    ax.invert_yaxis()
    ax.set(xlabel="relative error of the layer's output [%]",
           title="one layer (the tiny GPT's h0.mlp.c_fc) on 256 synthetic tokens")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _cpu_int8_units() -> str:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "flags unknown"
    have = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if f in flags]
    return ", ".join(have) if have else "no VNNI, no AMX"


def fig_speed():
    from labkit.bench import benchmark
    from labkit.device import cpu_name
    seed_everything(0)
    sizes, t8, tf = [128, 256, 512], [], []
    for n in sizes:
        a8, b8 = (torch.randint(-127, 128, (n, n), dtype=torch.int8) for _ in range(2))
        af, bf = a8.float(), b8.float()
        kw = dict(device="cpu", warmup=1, min_repeats=5, min_time_s=0.04, max_repeats=40)
        t8.append(min(benchmark(lambda: torch._int_mm(a8, b8), **kw).times_s))
        tf.append(min(benchmark(lambda: af @ bf, **kw).times_s))
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.plot(sizes, [2 * n**3 / t / 1e9 for n, t in zip(sizes, tf)], "o-", label="fp32 matmul")
    ax.plot(sizes, [2 * n**3 / t / 1e9 for n, t in zip(sizes, t8)], "s-", label="int8 × int8 → int32 (torch._int_mm)")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="n (an n × n × n matmul)", ylabel="GFLOP/s (fp32), GOP/s (int8)", ylim=(0, None),
           title=f"one core of this machine's CPU, best of ≥ 5 runs: {cpu_name()} ({_cpu_int8_units()})")
    ax.title.set(fontsize=8, fontweight="normal")
    fig.suptitle(f"int8 at n = {sizes[-1]}: {tf[-1] / t8[-1]:.1f}× the speed of fp32", fontsize=11, fontweight="bold")
    ax.legend(fontsize=8, loc="best")
    return fig


def fig_datasheet():
    from labkit.hw import DATASHEETS
    gpus, dtypes = ["A100 80GB SXM", "H100 SXM"], [("fp32", "fp32"), ("fp16", "fp16 tensor"), ("int8", "int8 tensor")]
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    for k, (key, label) in enumerate(dtypes):
        vals = [DATASHEETS[g][key] / 1e12 for g in gpus]
        bars = ax.bar([i + 0.27 * (k - 1) for i in range(len(gpus))], vals, 0.27, label=label)
        ax.bar_label(bars, [f"{v:,.0f}" for v in vals], fontsize=8)
    ax.set_xticks(range(len(gpus)), gpus)
    ax.set(ylabel="dense peak [TFLOP/s or TOP/s]", title="datasheet peaks (labkit.hw, from the decks' NVIDIA tables)")
    ax.legend(fontsize=8)
    ax.margins(y=0.12)
    return fig
