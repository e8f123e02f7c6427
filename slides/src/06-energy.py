"""Figures of the 06-energy deck, drawn by labkit.energy at build time: the decks' arithmetic (labkit.hw
datasheets, cost_eur, co2_kg), the NVML recording made on an NVIDIA H200 (data/measurements/
energy-nvidia-h200.json), sensor windows (min_window_s), simulated sensors (averaged_power, burst_energy,
part_time_power), and joules per inference measured on this machine by EnergyMeter (which says how)."""

import matplotlib.pyplot as plt
import numpy as np
import torch

from labkit import data, energy, hw, models, prune, record
from labkit.seed import seed_everything

SIBIU_HOME_KWH = 250e6 / 68_000          # Almeida's deck: Sibiu, 68,000 homes, 250 GWh a year
GPT4_FLOP, GPT4_GPUS, GPT4_DAYS = 2e25, 20_000, 95   # Almeida's deck: ~2e25 FLOP, ~20,000 A100, 90-100 days
CLUSTER_J = 1.59e12 * 3600                # SemiAnalysis, quoted by Almeida: 100k H100, 1.59 TWh a year


def _gpt4_gpu_joules():
    """GPT-4's GPUs alone at TDP for the whole run, as in the lab: the MFU that fits 2e25 FLOP into
    95 days on 20,000 A100s, then energy = FLOP / (MFU × peak) × TDP."""
    a100 = hw.DATASHEETS["A100 80GB SXM"]
    mfu = GPT4_FLOP / (GPT4_GPUS * a100["bf16"] * GPT4_DAYS * 86400)
    return GPT4_FLOP / (mfu * a100["bf16"]) * a100["tdp_w"]


def _short(v: float) -> str:
    """Three significant digits: 0.00368, 18.2, 1,590, 708,000; 2.29 M, 200 M from a million on."""
    if v >= 1e6:
        return f"{v / 1e6:,.3g} M"
    return f"{float(f'{v:.3g}'):,.0f}" if v >= 100 else f"{v:.3g}"


def _energy_record():
    return record.load("energy-nvidia-h200")


def fig_scale():
    h100 = hw.DATASHEETS["H100 SXM"]
    gwh = 1e-9 / 3600                       # J -> GWh
    rows = [("one Sibiu home, a year", SIBIU_HOME_KWH * 3.6e6 * gwh, None),
            ("GPT-4 training, GPUs alone at TDP\n(20,000 A100 × 400 W × 95 days)", _gpt4_gpu_joules() * gwh, None),
            ("GPT-4 training, as quoted", 17, 50),
            ("100k H100, GPUs alone at TDP, a year", 100_000 * h100["tdp_w"] * 8760 * 3600 * gwh, None),
            ("100k H100 cluster, a year, as quoted", CLUSTER_J * gwh, None)]
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    y = np.arange(len(rows))[::-1]
    for yi, (label, lo, hi) in zip(y, rows):
        if hi is None:
            ax.barh(yi, lo, color="C1" if "quoted" in label else "C0")
            ax.text(lo * 1.15, yi, f"{_short(lo)} GWh", va="center", fontsize=9)
        else:
            ax.barh(yi, hi - lo, left=lo, color="C1")
            ax.text(hi * 1.15, yi, f"{lo:g}–{hi:g} GWh", va="center", fontsize=9)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 2e4)
    ax.set(xlabel="energy [GWh] (log scale)", title="blue: computed here from the decks' figures and datasheets · red: quoted")
    ax.title.set_fontsize(10)
    return fig


def fig_readings():
    rec = _energy_record()
    res, prov = rec["results"], rec["provenance"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [1.4, 1]})
    tr = res["trace"]
    a.plot(tr["t_s"], tr["watts"], lw=1)
    a.set(xlabel="time [s]", ylabel="board power [W]", ylim=(0, 800), title="NVML power samples (every 10th)")
    names = {"NVML energy counter": "NVML\ncounter", "NVML power samples": "NVML samples\n(integrated)"}
    steady = [s for s in res["steady"] if s["joules"]]
    labels = [names.get(s["method"], "CPU estimate\n(host CPU only)") for s in steady]
    bars = b.bar(labels, [s["joules"] / 1e3 for s in steady], color=["C0", "C3", "#8d96a3"])
    for bar, s in zip(bars, steady):
        b.text(bar.get_x() + bar.get_width() / 2, s["joules"] / 1e3, f"{s['joules']:,.0f} J", ha="center", va="bottom", fontsize=9)
    b.set(ylabel="energy [kJ]", ylim=(0, 10), title=f"one {steady[0]['seconds']:.0f} s window, three readings")
    b.tick_params(axis="x", labelsize=8)
    for ax in (a, b):
        ax.title.set_fontsize(10)
    fig.suptitle(f"fp16 matmuls, RECORDED on an {prov['device']}, {prov['date'][:10]}", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return fig


def fig_window():
    errors = np.logspace(-3, -1, 30)        # 0.1 % .. 10 %
    sensors = [("NVML counter: ~100 ms refresh, 1 mJ, 700 W", 0.1, 1e-3, 700.0),
               ("RAPL: ~1 ms refresh, 15.3 µJ, 100 W", 1e-3, 15.3e-6, 100.0)]
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    for label, period, res, watts in sensors:
        ax.plot(100 * errors, [energy.min_window_s(period, res, watts, e) for e in errors], label=label)
    ax.set(xscale="log", yscale="log", xlabel="largest error you accept [%]", ylabel="shortest window [s]",
           title="how long to measure, at a steady power (energy.min_window_s)")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.legend(fontsize=9)
    return fig


def fig_pj():
    rec = _energy_record()
    sweep, prov = rec["results"]["matmul_sweep"], rec["provenance"]
    h200 = hw.DATASHEETS["H200 SXM"]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for dtype, mark in (("float32", "s-"), ("float16", "o-")):
        rows = [r for r in sweep if r["dtype"] == dtype]
        ax.plot([r["n"] for r in rows], [1e12 * r["joules_per_flop"] for r in rows], mark, label=f"{dtype}, measured (NVML counter)")
    for key, ls in (("fp32", ":"), ("fp16", "--")):
        ax.axhline(1e12 * h200["tdp_w"] / h200[key], color="gray", ls=ls, lw=1,
                   label=f"H200 SXM datasheet, {key} peak at 700 W")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="matrix size n (n × n · n × n)", ylabel="energy per FLOP [pJ]",
           title=f"RECORDED on an {prov['device']}, {prov['date'][:10]}: 1.5 s windows per size")
    ax.legend(fontsize=8)
    return fig


def fig_per_inference():
    seed_everything(0)
    meter = energy.EnergyMeter(gpus=[])     # the CNN runs on the CPU: RAPL where readable, else the labelled estimate
    cnn = models.load_cnn()
    x = data.load_fashion_mnist().tensors("test")[0][:64]
    variants = {"CNN dense": cnn, "CNN, 50 % of filters removed\n(lab 05, structured)": prune.prune_cnn_channels(cnn, 0.5)}
    mj, method = {}, None
    with torch.inference_mode():
        for name, m in variants.items():
            m(x)                                          # warm-up, outside the window
            with meter.window(name) as w:
                calls = energy.run_for(0.3, lambda: m(x))
            r = w.best()
            mj[name] = 1e3 * energy.per_inference(r, calls * len(x))["joules_per_inference"]
            method = r.method
    estimate = method.startswith("estimate")
    fig, ax = plt.subplots(figsize=(7.5, 3))
    bars = ax.barh(list(mj)[::-1], list(mj.values())[::-1], color=["C0", "#8d96a3"])
    for b, v in zip(bars, list(mj.values())[::-1]):
        ax.text(v, b.get_y() + b.get_height() / 2, f" {v:.2f} mJ", va="center", fontsize=10)
    ax.set(xlabel="mJ per image" + (", ESTIMATED" if estimate else ""), xlim=(0, 1.3 * max(mj.values())))
    ax.set_title(("ESTIMATE on this machine (no counter): " if estimate else "measured on this machine: ")
                 + method.replace("estimate: ", ""), fontsize=9)
    return fig


def _burst(dt=0.002):
    t = [i * dt for i in range(1500)]                 # 3 s sampled every 2 ms
    true_w = [700.0 if 1.0 <= ti < 1.04 else 100.0 for ti in t]
    return t, true_w


def fig_averaging():
    t, true_w = _burst()
    seen = energy.averaged_power(t, true_w, 1.0)
    inside = [i for i, ti in enumerate(t) if 1.0 <= ti <= 1.04]
    naive = energy.integrate_power([t[i] for i in inside], [seen[i] for i in inside])
    fixed = energy.burst_energy(t, seen, 1.0, 1.04, 1.0, 100.0)
    true_j = energy.integrate_power(t, true_w) - energy.integrate_power(t, [100.0] * len(t)) + 100.0 * 0.04
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(t, true_w, label="true power")
    ax.plot(t, seen, label="reported: 1 s trailing mean")
    ax.axvspan(1.0, 1.04, color="C3", alpha=0.25, label="the 40 ms kernel")
    ax.axvspan(1.04, 2.04, color="C2", alpha=0.1, label="one window after it")
    ax.set(xlabel="time [s]", ylabel="power [W]", ylim=(0, 800),
           title=f"SIMULATION: kernel {true_j:.0f} J; readings during it {naive:.1f} J; "
                 f"one window past it, idle removed: {fixed:.1f} J")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def fig_part_time():
    t = [i * 0.001 for i in range(2000)]              # 2 s sampled every ms; a 20 ms kernel in every 100 ms
    phases, seen_j, true_j = list(range(0, 100, 5)), [], None
    for phase in phases:
        w = [700.0 if (i - phase) % 100 < 20 else 100.0 for i in range(len(t))]
        true_j = energy.integrate_power(t, w)
        seen_j.append(sum(p for _, p in energy.part_time_power(t, w, 0.1, 0.025)) * 0.1)  # a report stands for its period
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.plot(phases, seen_j, "o-", label="part-time sensor (sees 25 of every 100 ms)")
    ax.axhline(true_j, color="black", ls="--", label="true energy")
    ax.set(xlabel="kernel start within each 100 ms [ms]", ylabel="energy over 2 s [J]", ylim=(0, 1.25 * max(seen_j)),
           title="SIMULATION: the same work, read at different phases")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def fig_cost():
    cases = [("one Sibiu home, a year", SIBIU_HOME_KWH * 3.6e6),
             ("GPT-4 training,\nGPUs alone (computed)", _gpt4_gpu_joules()),
             ("100k H100 cluster, a year\n(1.59 TWh, quoted)", CLUSTER_J)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
    y = np.arange(len(cases))[::-1]
    eur = [energy.cost_eur(j) for _, j in cases]
    co2 = [energy.co2_kg(j) / 1000 for _, j in cases]
    a.barh(y, eur, color="C0")
    b.barh(y, co2, color="C3")
    for yi, e, c in zip(y, eur, co2):
        a.text(e * 1.2, yi, f"€{_short(e)}", va="center", fontsize=9)
        b.text(c * 1.2, yi, f"{_short(c)} t", va="center", fontsize=9)
    a.set_yticks(y, [c[0] for c in cases], fontsize=9)
    a.set(xscale="log", xlim=(1e2, 1e10), xlabel=f"electricity [€] at €{energy.DEFAULT_EUR_PER_KWH:.3f}/kWh")
    b.set(xscale="log", xlim=(1, 1e7), xlabel=f"CO₂ [t] at {energy.DEFAULT_G_CO2_PER_KWH:.0f} g/kWh (IEA, world 2024)")
    fig.tight_layout()
    return fig
