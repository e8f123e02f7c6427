"""Figures of the 07-parallel deck, drawn by labkit.parallel at build time: the ring's bytes and the
traffic of each scheme from its formulas, one real measurement (all-reduce time against message
size on 2 gloo ranks of this machine, fitted with the α–β model), and top-k with error feedback on
a small random gradient stream."""
import functools

import matplotlib.pyplot as plt
import torch

from labkit import parallel as P
from labkit.layers import gelu_stack
from labkit.seed import seed_everything

KiB, MiB = 2**10, 2**20


@functools.lru_cache(maxsize=1)
def _all_reduce():
    """([bytes], [seconds], α, β): P.time_all_reduce on 2 gloo ranks of this machine (the lab's section 1)."""
    rows = P.run(P.time_all_reduce, 2, [2**k for k in range(10, 24, 2)], backend="gloo")[0]   # the lab's QUICK sizes
    n, t = [r["bytes"] for r in rows], [r["seconds"] for r in rows]
    alpha, beta = P.fit_alpha_beta(n, t)
    return n, t, alpha, beta


def fig_ring():
    ps = [2, 4, 8, 16, 32, 64, 128]
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    ax.plot(ps, [P.ring_allreduce_bytes(1.0, p) for p in ps], "o-", label="ring: 2(p−1)/p × n, on every rank")
    ax.plot(ps, [p - 1.0 for p in ps], "s--", label="one root gathers and sends back: (p−1) × n, at the root")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ps, [str(p) for p in ps])
    ax.set(xlabel="ranks p", ylabel="bytes sent ÷ gradient bytes n",
           title="all-reduce of n bytes: what the busiest rank sends")
    ax.legend(loc="upper left")
    return fig


def fig_alphabeta():
    n, t, alpha, beta = _all_reduce()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.loglog([b / KiB for b in n], [1e3 * s for s in t], "o", label="measured (median)")
    grid = [2**(k / 4) for k in range(40, 92)]
    ax.loglog([b / KiB for b in grid], [1e3 * (alpha + b / beta) for b in grid], "-", label="α + n/β")
    ax.axvline(alpha * beta / KiB, color="gray", ls=":", label=f"n = α·β = {alpha * beta / KiB:,.0f} KiB")
    ax.set(xlabel="message size n [KiB]", ylabel="time per all-reduce [ms]",
           title=f"2 gloo ranks on this machine's CPU: α = {1e6 * alpha:.0f} µs, β = {beta / 1e9:.2f} GB/s")
    ax.legend(loc="upper left")
    return fig


def fig_buckets():
    _, _, alpha, beta = _all_reduce()
    model = gelu_stack(8, 256)                     # the lab's bucket timing: 8 layers of width 256
    tensors = len(list(model.parameters()))
    grad = sum(q.numel() * q.element_size() for q in model.parameters())
    messages = [tensors, 8, 4, 2, 1]
    lat = [1e3 * m * alpha for m in messages]
    bw = 1e3 * grad / beta
    labels = [f"{m}" + (" (one per tensor)" if m == tensors else " (one bucket)" if m == 1 else "") for m in messages]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.barh(labels, lat, label="latency: messages × α")
    ax.barh(labels, [bw] * len(messages), left=lat, label="bandwidth: bytes / β")
    ax.invert_yaxis()
    ax.set(xlabel="predicted all-reduce time per step [ms]", ylabel="messages per step",
           title=f"{grad / MiB:.0f} MiB of gradients in {tensors} tensors, α and β measured here")
    ax.legend(loc="lower right")
    return fig


def _matrix(ax, x0, y0, w, h, p, split, label):
    """A matrix of w × h at (x0, y0), drawn as p coloured slices (split "rows" or "cols", one per
    rank) or in grey (split None: the same on every rank)."""
    from matplotlib.patches import Rectangle
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r in range(p if split else 0):
        xy, size = (((x0, y0 + h - (r + 1) * h / p), (w, h / p)) if split == "rows"
                    else ((x0 + r * w / p, y0), (w / p, h)))
        ax.add_patch(Rectangle(xy, *size, color=colors[r], alpha=0.75))
    if not split:
        ax.add_patch(Rectangle((x0, y0), w, h, color="0.8"))
    ax.add_patch(Rectangle((x0, y0), w, h, fill=False, lw=1.5))
    ax.text(x0 + w / 2, y0 + h + 0.15, label, ha="center", va="bottom", fontsize=9)


def fig_tp():
    from matplotlib.patches import Patch
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arrow = dict(arrowstyle="->", lw=1.2)
    fig, ax = plt.subplots(figsize=(9, 3.0))
    _matrix(ax, 0.0, 1.5, 1.0, 1.0, 2, None, "x\n(every rank)")
    ax.annotate("", (2.0, 2.0), (1.2, 2.0), arrowprops=arrow)
    _matrix(ax, 2.2, 0.0, 1.0, 4.0, 2, "rows", "W₁: rows split\n(out-features)")
    ax.annotate("", (4.8, 0.5), (3.4, 2.0), arrowprops=arrow)
    ax.text(4.2, 1.6, "GELU on\nits slice", fontsize=9, ha="left")
    _matrix(ax, 5.0, 0.0, 4.0, 1.0, 2, "cols", "")
    ax.text(7.0, 1.15, "W₂: columns split (in-features)", ha="center", va="bottom", fontsize=9)
    ax.annotate("", (10.6, 0.5), (9.2, 0.5), arrowprops=arrow)
    ax.text(9.9, 0.3, "all-reduce:\nΣ partial y", fontsize=9, ha="center", va="top")
    ax.text(10.75, 0.5, "y", fontsize=14, va="center")
    ax.legend(handles=[Patch(color=colors[r], alpha=0.75, label=f"rank {r}'s slice") for r in range(2)],
              loc="upper right", fontsize=9)
    ax.set(xlim=(-0.2, 11.4), ylim=(-0.2, 4.9), aspect="equal")
    ax.axis("off")
    ax.set_title("MLP on 2 ranks: column-parallel, then row-parallel (Megatron-LM)")
    return fig


def fig_traffic():
    tokens = [2**k for k in range(9, 21)]
    p = 8
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for i, (name, d) in enumerate((("GPT-2 small, d = 768", 768), ("GPT-3, d = 12288", 12288))):
        dp = P.ring_allreduce_bytes(12 * d * d * 4, p)                     # the layer's fp32 gradients, once
        tp = [4 * P.ring_allreduce_bytes(t * d * 4, p) for t in tokens]    # 2 all-reduces forward, 2 backward
        color = plt.rcParams["axes.prop_cycle"].by_key()["color"][i]
        ax.loglog(tokens, [dp / MiB] * len(tokens), "--", color=color, label=f"data parallel, {name}")
        ax.loglog(tokens, [b / MiB for b in tp], "o-", color=color, ms=4, label=f"tensor parallel, {name}")
    ax.set(xlabel="tokens per step (batch × sequence)", ylabel="MiB sent per rank, per layer",
           title=f"one transformer layer, fp32, p = {p}: what each scheme sends per step")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def fig_topk():
    seed_everything(0)
    n, steps, ratio = 4096, 300, 0.01
    mean = torch.randn(n) * 0.05                   # a drift that persists from step to step, plus noise
    grads = [mean + torch.randn(n) for _ in range(steps)]
    total = torch.zeros(n)
    applied = {"top-k with error feedback": torch.zeros(n), "top-k, rest dropped": torch.zeros(n)}
    residual = torch.zeros(n)
    err = {k: [] for k in applied}
    for g in grads:
        total += g
        idx, vals, residual = P.topk_compress(g, residual, ratio)
        applied["top-k with error feedback"][idx] += vals
        idx, vals, _ = P.topk_compress(g, torch.zeros(n), ratio)
        applied["top-k, rest dropped"][idx] += vals
        for k, a in applied.items():
            err[k].append(((a - total).norm() / total.norm()).item())
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    for k, e in err.items():
        ax.plot(range(1, steps + 1), e, label=k)
    ax.set(xlabel="step", ylabel="‖Σ sent − Σ gradients‖ ÷ ‖Σ gradients‖",
           title=f"{n:,} entries, k/n = {ratio:.0%}: what the updates miss (random gradients)", ylim=(0, 1.05))
    ax.legend(loc="center right")
    return fig


def fig_sparse():
    ps = [2**k for k in range(2, 11)]
    n = 1e6
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    for ratio in (0.01, 0.001):
        k = ratio * n
        dense = [P.ring_allreduce_bytes(4 * n, p) for p in ps]             # fp32 ring all-reduce
        sparse = [(p - 1) * k * 8 for p in ps]                            # all-gather of (int32, fp32) pairs
        ax.loglog(ps, [d / s for d, s in zip(dense, sparse)], "o-", label=f"k/n = {ratio:g}")
    ax.axhline(1, color="gray", ls=":")
    ax.set_xticks(ps, [str(p) for p in ps])
    ax.set(xlabel="ranks p", ylabel="dense bytes ÷ sparse bytes, per rank",
           title="top-k pairs all-gathered vs the dense ring all-reduce")
    ax.legend()
    return fig
