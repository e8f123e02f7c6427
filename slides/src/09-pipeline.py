"""Figures of the 09-pipeline deck, drawn by labkit.pipeline (and one real 4-rank run) at build time."""
import matplotlib.pyplot as plt

from labkit import pipeline as PP


def fig_gpipe():
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw(PP.simulate(PP.schedule("gpipe", 4, 4)), ax=ax, title="GPipe, 4 stages, m = 4 (a backward takes 2 units)")
    return fig


def fig_1f1b():
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw(PP.simulate(PP.schedule("1f1b", 4, 8)), ax=ax, title="1F1B, 4 stages, m = 8")
    return fig


def fig_bubble():
    ms = [1, 2, 4, 8, 16, 32, 64]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for p in (2, 4, 8):
        ax.plot(ms, [100 * max(PP.idle_fraction(PP.simulate(PP.schedule("1f1b", p, m)))) for m in ms], "o-", label=f"p = {p}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="micro-batches m", ylabel="idle share of the step [%]", title="the bubble, simulated = (p−1)/(m+p−1)")
    ax.legend()
    return fig


def fig_measured():
    from labkit import parallel as P
    res = P.run(PP.run_pipeline, 4, "1f1b", 8, 8, 64, 8, 0.01, backend="gloo")
    idle = max(PP.idle_fraction([r["timeline"] for r in res]))
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw([r["timeline"] for r in res], ax=ax, t_unit=1e-3, unit="ms",
            title=f"measured on 4 gloo ranks, ops padded to 10/20 ms: idle {idle:.0%} (formula {PP.bubble_fraction(4, 8):.0%})")
    return fig


def fig_chimera():
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.2))
    PP.draw(PP.simulate(PP.schedule("1f1b", 4, 4)), ax=axes[0],
            title=f"1F1B, m = 4: idle {max(PP.idle_fraction(PP.simulate(PP.schedule('1f1b', 4, 4)))):.0%}")
    ch = PP.chimera(4, 4)
    PP.draw(ch, ax=axes[1], labels=lambda i: f"{i}↓" if i < 2 else f"{i}↑",
            title=f"Chimera (list-scheduled), m = 4: idle {max(PP.idle_fraction(ch)):.0%}")
    axes[1].set_xlim(axes[0].get_xlim())
    fig.tight_layout()
    return fig


def fig_planner():
    from labkit import memory as M
    llama = PP.Model("Llama-3.1-405B", 405e9, 126, 16384, 128, 8192)
    cluster = PP.Cluster("1024 x 8 H100", 1024, 8, 80e9, 989e12, 450e9, 50e9)
    rows = PP.layouts(llama, cluster, 2048, act_bytes=lambda b, s: 34 * b * s * 16384,
                      state_bytes=lambda dp: M.zero_bytes_per_param(1, dp))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for fits, mark in ((True, "o"), (False, "x")):
        pts = [r for r in rows if r["fits"] == fits]
        ax.scatter([r["memory"] / 1e9 for r in pts], [100 * r["mfu"] for r in pts], marker=mark,
                   label="fits in 80 GB" if fits else "does not fit")
    ax.axvline(80, color="gray", ls="--")
    ax.set_xscale("log")
    ax.set(xlabel="memory per GPU [GB]", ylabel="predicted MFU [%]", title="Llama-3.1-405B on 8192 H100: every dp × tp × pp")
    ax.legend()
    return fig
