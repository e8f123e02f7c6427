"""Figures of the 08-memory deck, drawn by labkit.memory at build time on this machine's CPU: bytes
per parameter and per ZeRO stage from its formulas; what autograd saves (saved_bytes) against
the block formula; peaks of small training steps (peak_bytes, profiler memory events), with and
without checkpointing; the gradients of the lab's model against fp16's range."""
import functools

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from labkit import memory as M
from labkit.seed import seed_everything

MiB = 2**20
H100 = 96e9                                    # bytes of one H100 in the UMD lecture's figures


def _step(model, ids, every=0):
    """Forward, next-token loss and backward of one step (the lab's train_step, fp32)."""
    logits = model(ids, run_blocks=lambda blocks, x: M.checkpointed(blocks, x, every))
    F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()


@functools.lru_cache(maxsize=1)
def _small():
    """A small M.Stack and a batch, its gradients already allocated (as in training)."""
    seed_everything(0)
    cfg = dict(layers=8, d=64, heads=4, vocab=1024, context=128)
    model = M.Stack(**cfg)
    ids = torch.randint(0, cfg["vocab"], (4, 128))
    _step(model, ids)
    return cfg, model, ids


def fig_state():
    rows = [("SGD, fp32", "sgd", False, {"weight": 4, "gradient": 4}),
            ("Adam, fp32", "adam", False, {"weight": 4, "gradient": 4, "optimizer state": 8}),
            ("Adam, mixed precision", "adam", True,
             {"weight": 2, "gradient": 2, "fp32 master weight": 4, "optimizer state": 8})]
    parts = ["weight", "gradient", "fp32 master weight", "optimizer state"]
    fig, ax = plt.subplots(figsize=(8, 2.9))
    for i, (name, opt, mixed, split) in enumerate(rows):
        total = M.state_bytes_per_param(opt, mixed)
        assert sum(split.values()) == total, (name, split, total)
        left = 0
        for j, part in enumerate(parts):
            if part in split:
                ax.barh(i, split[part], left=left, color=f"C{j}", label=part if i == 2 or part == "weight" and i == 0 else None)
                left += split[part]
        ax.text(left + 0.3, i, f"{total} bytes → {H100 / total / 1e9:.0f} billion parameters in 96 GB", va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set(xlim=(0, 34), xlabel="bytes per parameter (activations not included)",
           title="the training state, per parameter")
    handles, labels = ax.get_legend_handles_labels()
    order = [labels.index(p) for p in parts]
    ax.legend([handles[k] for k in order], parts, fontsize=8, loc="upper center", ncol=4, bbox_to_anchor=(0.45, -0.25))
    return fig


def fig_peak():
    cfg, model, ids = _small()
    n_params = sum(p.numel() for p in model.parameters())
    b, T = ids.shape
    peak = M.peak_bytes(lambda: _step(model, ids), device="cpu")
    bars = {"weights + gradients\n(there before the step)": 8 * n_params,
            "the blocks' activations\n(block_activation_bytes)": cfg["layers"] * M.block_activation_bytes(b, T, cfg["d"], cfg["heads"]),
            "one logits tensor\n(b·T·vocab, fp32)": b * T * cfg["vocab"] * 4,
            "measured: peak of\nthe step (peak_bytes)": peak}
    fig, ax = plt.subplots(figsize=(8, 3.1))
    ax.barh(list(bars), [v / MiB for v in bars.values()], color=["C5", "C0", "C2", "C1"])
    ax.invert_yaxis()
    ax.set(xlabel="MiB", title=f"one fp32 training step, {cfg['layers']} blocks of width {cfg['d']}, "
                               f"batch {b} × {T} tokens (this machine's CPU)")
    return fig


def fig_activations():
    seed_everything(0)
    b, d, heads = 2, 64, 4
    blk = M.Block(d, heads, context=512)
    Ts = [16, 32, 64, 128, 256, 512]
    measured = []
    for T in Ts:
        x = torch.randn(b, T, d, requires_grad=True)
        measured.append(M.saved_bytes(blk, x, exclude=[*blk.parameters(), *blk.buffers()]).bytes)
    formula = [M.block_activation_bytes(b, T, d, heads) for T in Ts]
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    ax.loglog(Ts, [f / MiB for f in formula], "-", label="formula: block_activation_bytes")
    ax.loglog(Ts, [m / MiB for m in measured], "o", label="measured: what autograd saves (saved_bytes)")
    ax.loglog(Ts, [formula[0] / MiB * T / Ts[0] for T in Ts], ":", color="gray", label="∝ T (for comparison)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.minorticks_off()
    ax.set_yticks([0.1, 0.3, 1, 3, 10], ["0.1", "0.3", "1", "3", "10"])
    ax.set(xlabel="sequence length T [tokens]", ylabel="bytes kept for backward [MiB]",
           title=f"one block, d = {d}, {heads} heads, batch {b}, fp32: the T² scores take over")
    ax.legend(fontsize=9)
    return fig


def fig_grads():
    seed_everything(0)
    model = M.Stack(layers=4, d=256, heads=4, vocab=4096, context=256)   # the lab's model, as initialised
    ids = torch.randint(0, 4096, (2, 128))
    _step(model, ids)
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    g = g[g != 0].abs()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bins = torch.arange(-48, 21, 1.0)
    for S, label in ((1, "S = 1"), (2**16, "S = 2¹⁶")):
        h = (g * S).half()
        zero, sub = (h == 0).float().mean().item(), ((h != 0) & (h.abs() < 2**-14)).float().mean().item()
        ax.hist(torch.log2(g * S).clamp(-48, 20).numpy(), bins=bins.numpy(), alpha=0.6,
                label=f"{label}: {zero:.2%} → 0, {sub:.1%} subnormal")
    ax.axvspan(-48, -25, color="C1", alpha=0.12)              # at most half the smallest subnormal: 0
    ax.axvspan(-25, -14, color="C2", alpha=0.12)              # below the smallest normal number
    ax.axvline(16, color="C1", ls="--")
    ax.text(-47, ax.get_ylim()[1] * 0.9, "fp16: 0", fontsize=8)
    ax.text(-24.5, ax.get_ylim()[1] * 0.9, "subnormal", fontsize=8)
    ax.text(15.5, ax.get_ylim()[1] * 0.9, "max 65,504", fontsize=8, ha="right")
    ax.set(xlabel="log₂ |S × gradient|", ylabel="gradient entries",
           title=f"{g.numel() / 1e6:.1f} M gradients of the lab's model (initialised, one batch) in fp16")
    ax.yaxis.set_major_formatter(lambda y, _: f"{y / 1e3:.0f} k")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.88))
    return fig


def fig_checkpoint():
    cfg, model, ids = _small()
    choices = [0, 1, 2, 4, 8]
    peaks, extra = [], []
    for every in choices:
        peaks.append(M.peak_bytes(lambda: _step(model, ids, every), device="cpu"))
        with M.ForwardCounter(model) as count:
            _step(model, ids, every)
        extra.append(count.calls - cfg["layers"])
    model.zero_grad()
    labels = ["none" if e == 0 else f"segments of {e}" for e in choices]
    fig, ax = plt.subplots(figsize=(8, 3.1))
    bars = ax.bar(labels, [p / MiB for p in peaks], color=["C5"] + ["C0"] * (len(choices) - 1))
    for bar, p, x in zip(bars, peaks, extra):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{p / peaks[0]:.0%}\n+{x} blocks",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.3 * max(peaks) / MiB)
    ax.set(ylabel="peak of the step [MiB]", xlabel="activation checkpointing",
           title=f"{cfg['layers']} blocks (d = {cfg['d']}), batch {ids.shape[0]} × {ids.shape[1]}: "
                 "peak (% of plain), blocks run again")
    return fig


def fig_zero():
    worlds = [1, 2, 4, 8, 16, 64, 256, 1024]
    psi, nd = 7.5e9, 64                      # the ZeRO paper's example: 7.5 B parameters on 64 GPUs
    names = ["0: replicate all", "1: + optimizer state", "2: + gradients", "3: + weights (FSDP)"]
    fig, ax = plt.subplots(figsize=(8, 3.1))
    for stage in range(4):
        ax.plot(worlds, [M.zero_bytes_per_param(stage, w) for w in worlds], "o-",
                label=f"stage {names[stage]}: {psi * M.zero_bytes_per_param(stage, nd) / 1e9:.1f} GB")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(worlds, [str(w) for w in worlds])
    ax.set_yticks([0.02, 0.1, 0.5, 2, 16], ["0.02", "0.1", "0.5", "2", "16"])
    ax.minorticks_off()
    ax.set(xlabel="data-parallel ranks", ylabel="bytes per parameter per rank",
           title="mixed-precision Adam, sharded by ZeRO stage")
    ax.legend(title=f"stage: per GPU, {psi / 1e9:g} B parameters on {nd} GPUs", fontsize=8, title_fontsize=8,
              loc="lower left")
    return fig
