"""The kit's one plotting style, and the plots more than one lab draws (the roofline)."""
import matplotlib
import matplotlib.pyplot as plt

COLORS = ["#1b6ca8", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d96a3", "#30343f"]


def use_style() -> None:
    """Readable defaults for every figure in the kit: size, grid, colours, no top/right spines."""
    matplotlib.rcParams.update({
        "figure.figsize": (7.0, 4.2), "figure.dpi": 100, "savefig.dpi": 150,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "axes.prop_cycle": matplotlib.cycler(color=COLORS), "axes.titleweight": "bold",
        "font.size": 10, "legend.frameon": False,
    })


def roofline(peak_flops: float, peak_bytes_per_s: float, points=(), ax=None, title=None,
             extra_roofs=(), memory_roofs=()):
    """Draw a roofline: attainable FLOP/s = min(peak FLOP/s, intensity × bandwidth), log-log.

    points: iterable of (label, arithmetic intensity in FLOP/byte, achieved FLOP/s).
    extra_roofs: iterable of (label, FLOP/s) horizontal lines, e.g. a datasheet peak.
    memory_roofs: iterable of (label, bytes/s) further slanted roofs, e.g. a cache's bandwidth.
    Returns the matplotlib Axes.
    """
    import numpy as np
    if peak_flops <= 0 or peak_bytes_per_s <= 0:
        raise ValueError(f"peaks must be > 0, got peak_flops={peak_flops}, peak_bytes_per_s={peak_bytes_per_s}")
    points = list(points)
    for label, ai, f in points:
        if not (ai > 0 and f > 0):
            raise ValueError(f"point {label!r} needs intensity > 0 and FLOP/s > 0 on a log plot, got {ai}, {f}")
    ax = ax or plt.subplots()[1]
    ridge = peak_flops / peak_bytes_per_s
    lo = min([ridge / 100] + [p[1] / 3 for p in points])
    hi = max([ridge * 100] + [p[1] * 3 for p in points])
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.loglog(x, np.minimum(peak_flops, x * peak_bytes_per_s), color="black", lw=2,
              label=f"measured roof (ridge at {ridge:.3g} FLOP/B)")
    for label, f in extra_roofs:
        ax.axhline(f, ls="--", color="gray", lw=1)
        ax.annotate(label, (x[0], f), va="bottom", fontsize=8, color="gray")
    for label, bw in memory_roofs:
        ax.loglog(x, np.minimum(peak_flops, x * bw), ls="--", color="gray", lw=1, label=label)
    for i, (label, ai, f) in enumerate(points):
        ax.loglog([ai], [f], "o", color=COLORS[(i + 1) % len(COLORS)], label=label)
    ax.set_xlabel("arithmetic intensity [FLOP/byte]")
    ax.set_ylabel("performance [FLOP/s]")
    ax.set_title(title or "Roofline")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never over a point
    return ax
