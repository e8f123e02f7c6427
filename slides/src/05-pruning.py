"""Figures of the 05-pruning deck, drawn by labkit.prune at build time: the shipped SmallCNN (accuracy on
500 test images, latency on this machine's CPU), exact storage arithmetic, a short CSR-vs-dense sweep on
this CPU, and the 2:4 speed-ups recorded on an NVIDIA H200 (data/measurements/sparse-2-4-nvidia-h200.json)."""
import copy
import time
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from labkit import data, models, prune, record
from labkit.seed import seed_everything

N_EVAL = 250   # test images for the accuracy figure: a subset, so the deck builds in seconds


@lru_cache(maxsize=None)
def _cnn():
    """The lab's trained SmallCNN (loaded once; every variant below is a pruned copy, never this one)."""
    return models.load_cnn()


@lru_cache(maxsize=None)
def _tests():
    return data.load_fashion_mnist().tensors("test")


def _test(n):
    x, y = _tests()
    return x[:n], y[:n]


@lru_cache(maxsize=None)
def _global(s):
    """A copy of the CNN with one magnitude threshold over all its layers removing the share s."""
    m = copy.deepcopy(_cnn())
    params = [p for _, p in prune.prunable(m)]
    prune.Masks(dict(zip(params, prune.global_magnitude_masks(params, s)))).apply()
    return m


@lru_cache(maxsize=None)
def _two_four():
    # as in the lab: groups of 4 along each filter's flattened inputs; conv1 (9 inputs per filter) stays dense
    m = copy.deepcopy(_cnn())
    prune.Masks({p: prune.nm_mask(p.reshape(p.shape[0], -1), 2, 4).view_as(p) for _, p in prune.prunable(m)
                 if p[0].numel() % 4 == 0}).apply()
    return m


@lru_cache(maxsize=None)
def _channels(f):
    return prune.prune_cnn_channels(_cnn(), f)


def _removed(m, dense):
    """Share of the dense model's parameters that are gone: zeroed or cut out (as the lab counts it)."""
    return 1 - sum(int(p.count_nonzero()) for p in m.parameters()) / sum(p.numel() for p in dense.parameters())


def fig_threshold():
    cnn = _cnn()
    flat = torch.cat([w.detach().flatten() for _, w in prune.prunable(cnn)]).numpy()
    mags = np.sort(np.abs(flat))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.hist(flat, bins=201, range=(-0.25, 0.25), color="#8d96a3")
    outside = int((np.abs(flat) > 0.25).sum())
    for s, color in ((0.5, "C0"), (0.9, "C1")):
        t = mags[round(s * mags.size) - 1]          # the largest |w| that goes: one threshold for every layer
        ax.axvspan(-t, t, color=color, alpha=0.18, label=f"|w| ≤ {t:.3f}: the {s:.0%} set to 0")
    ax.set_yscale("log")
    ax.set(xlabel=f"weight value ({outside} weights beyond ±0.25 not drawn)", ylabel="weights per bin",
           title=f"all {flat.size:,} conv and linear weights of the lab's SmallCNN")
    ax.legend(loc="upper right", fontsize=9)
    return fig


def fig_patterns():
    seed_everything(0)
    w = torch.randn(8, 16)
    conv = nn.Conv2d(16, 8, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w.view(8, 16, 1, 1))
    rows = torch.zeros(8, 16, dtype=torch.bool)
    rows[prune.filter_keep(conv, 0.5)] = True
    masks = [("unstructured: smallest |w| anywhere", prune.magnitude_mask(w, 0.5)),
             ("structured: whole rows (filters)", rows),
             ("2:4: 2 of every 4 in a row", prune.nm_mask(w, 2, 4))]
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.4))
    for ax, (title, m) in zip(axes, masks):
        ax.imshow(np.where(m.numpy(), w.abs().numpy(), np.nan), cmap="Blues", vmin=0, vmax=2.5)
        ax.set(title=title, xticks=[], yticks=[])
        ax.set_title(title, fontsize=9)
        ax.grid(False)
        for x in np.arange(3.5, 15, 4):
            ax.axvline(x, color="gray", lw=0.5)
    fig.suptitle("the same 8 × 16 weight at 50 % sparsity (blank = pruned, darker = larger |w|)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_accuracy():
    cnn = _cnn()
    x, y = _test(N_EVAL)
    names = [n for n, _ in prune.prunable(cnn)]

    def uniform(s):
        m = copy.deepcopy(cnn)
        prune.masks_for(m, {n: s for n in names}).apply()
        return m
    curves = [("unstructured, one global threshold", "o-", [_global(s) for s in (0.5, 0.8, 0.9, 0.95)]),
              ("unstructured, same sparsity in every layer", "s-", [uniform(s) for s in (0.5, 0.7, 0.8)]),
              ("structured: 25/50/75 % of filters", "^--", [_channels(f) for f in (0.25, 0.5, 0.75)]),
              ("2:4 (conv1 dense)", "D", [_two_four()])]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    dense = models.accuracy(cnn, x, y)
    for label, style, ms in curves:
                ax.plot([100 * _removed(m, cnn) for m in ms], [100 * models.accuracy(m, x, y) for m in ms], style,
                ms=10 if style == "D" else 7, mfc="none" if style == "D" else None, mew=2, label=label)
    ax.axhline(100 * dense, color="black", lw=1, ls=":", label=f"dense {dense:.1%}")
    ax.set(xlabel="parameters removed [%]", ylabel="test accuracy [%]", ylim=(0, 100),
           title=f"SmallCNN, no fine-tuning ({N_EVAL} of the 2000 test images)")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def _cpu_ms(fn, repeats=3):
    """Fastest of a few calls, in CPU milliseconds of this thread: with torch on one thread that is the
    work of the call itself, and other jobs sharing the machine's 2 cores do not inflate it (wall time would)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return 1e3 * best


def fig_latency():
    cnn = _cnn()
    xb = _test(64)[0]
    variants = {"dense": cnn, "unstructured 90 %\n(stored dense)": _global(0.9),
                "2:4\n(stored dense)": _two_four(), "structured:\n50 % of filters": _channels(0.5)}
    with torch.inference_mode():
        for m in variants.values():
            m(xb)                                   # warm-up
        ms = {name: _cpu_ms(lambda: m(xb)) for name, m in variants.items()}
    fig, ax = plt.subplots(figsize=(8, 3))
    bars = ax.bar(list(ms), list(ms.values()), color=["#8d96a3", "C1", "C2", "C0"])
    for b, v in zip(bars, ms.values()):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{ms['dense'] / v:.1f}× dense speed", ha="center", va="bottom", fontsize=9)
    ax.set(ylabel="CPU ms per batch of 64", title="SmallCNN forward pass, measured on this machine's CPU (1 thread, fastest of 3)")
    ax.title.set_fontsize(10)
    ax.set_ylim(0, 1.2 * max(ms.values()))
    return fig


def fig_storage():
    seed_everything(0)
    w = torch.randn(64, 512)                       # the ratios hardly depend on the shape (only CSR's row offsets do)
    order = w.abs().flatten().argsort()            # smallest |w| first: pruning to s zeroes the first round(s · n)
    ss = np.linspace(0, 0.98, 50)
    pruned = []
    for s in ss:
        p = w.clone()
        p.view(-1)[order[:round(s * w.numel())]] = 0
        pruned.append(p)
    fig, ax = plt.subplots(figsize=(7, 3.3))
    ax.axhline(1, color="black", lw=1, label="dense")
    for vb, ls in ((4, "-"), (2, "--")):
        dense = prune.storage_bytes(w, "dense", value_bytes=vb)
        for fmt, color in (("csr", "C0"), ("bitmask", "C1")):
            ax.plot(100 * ss, [prune.storage_bytes(p, fmt, value_bytes=vb) / dense for p in pruned], ls, color=color,
                    label=f"{fmt.upper() if fmt == 'csr' else fmt}, {8 * vb}-bit values")
        ax.plot([50], [prune.storage_bytes(w * prune.nm_mask(w), "2:4", value_bytes=vb) / dense], "D" if vb == 4 else "d",
                color="C2", ms=8, label=f"2:4, {8 * vb}-bit values")
    ax.set(xlabel="sparsity [%]", ylabel="bytes / dense bytes", ylim=(0, 2.1),
           title="bytes to store a 64 × 512 weight, by format (prune.storage_bytes)")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def fig_csr():
    seed_everything(0)
    sweep = prune.sparse_dense_sweep(512, [0.5, 0.7, 0.8, 0.9, 0.99], batch=64, min_time_s=0.01)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.plot([100 * r["sparsity"] for r in sweep], [r["speedup"] for r in sweep], "o-")
    ax.axhline(1.0, color="black", lw=1)
    ax.set_yscale("log")
    ax.set_yticks([0.25, 0.5, 1, 2, 5, 10, 20], ["0.25", "0.5", "1", "2", "5", "10", "20"])
    ax.set_ylim(0.8 * min(r["speedup"] for r in sweep), 1.25 * max(r["speedup"] for r in sweep))
    ax.set(xlabel="sparsity [%]", ylabel="dense time / CSR time",
           title="512 × 512 weight · 64 vectors, torch CSR vs dense, this machine's CPU (1 thread)")
    ax.text(51, 1.05, "CSR faster ↑", fontsize=9, va="bottom")
    ax.text(51, 0.95, "dense faster ↓", fontsize=9, va="top")
    return fig


def fig_h200():
    rec = record.load("sparse-2-4-nvidia-h200")
    rows = rec["results"]
    labels = [f"{r['rows']}×{r['cols']}\n@ {r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    bars = ax.bar(labels, [r["speedup"] for r in rows], color=["C0" if r["speedup"] >= 1 else "C1" for r in rows])
    for b, r in zip(bars, rows):
        ax.text(b.get_x() + b.get_width() / 2, r["speedup"], f"{r['speedup']:.2f}×", ha="center", va="bottom", fontsize=9)
    ax.axhline(1.0, color="black", lw=1)
    ax.set(ylabel="dense time / 2:4 time", ylim=(0, 2),
           title=f"fp16 2:4 vs dense, recorded on an {rec['provenance']['device']}, {rec['provenance']['date'][:10]}")
    ax.tick_params(axis="x", labelsize=8)
    return fig


def fig_wanda():
    seed_everything(0)
    w = torch.randn(8, 16)
    norm = torch.ones(16)
    norm[5] = 12.0                                 # one outlier input feature, as LLMs have
    x = torch.randn(256, 16) * norm                # calibration inputs with that feature
    masks = {"magnitude, per row": prune.wanda_mask(w, torch.ones(16), 0.5), "Wanda, |W|·‖X‖ per row": prune.wanda_mask(w, norm, 0.5)}
    ref = x @ w.T
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.6))
    for ax, (name, m) in zip(axes, masks.items()):
        err = ((x @ (w * m).T - ref).norm() / ref.norm()).item()
        ax.imshow(np.where(m.numpy(), w.abs().numpy(), np.nan), cmap="Blues", vmin=0, vmax=2.5)
        ax.add_patch(plt.Rectangle((4.5, -0.5), 1, 8, fill=False, edgecolor="C1", lw=2.5))
        ax.set(xticks=[5], xticklabels=["outlier feature"], yticks=[])
        ax.set_title(f"{name}: ‖ΔY‖ / ‖Y‖ = {err:.0%}", fontsize=10)
        ax.grid(False)
    fig.suptitle("8 × 16 weight, 50 % per row, inputs with one large feature (‖X₅‖ = 12)", fontsize=10)
    fig.tight_layout()
    return fig
