"""Figures of the 10-io deck, drawn by labkit.dataio at build time on 256 small files in the temp folder."""
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from labkit import dataio as IO


def _files(n=256):
    return IO.make_dataset(Path(tempfile.gettempdir()) / f"labkit-io-{n}-16", n=n, seed=0, scale=1 / 16)


def fig_sizes():
    sizes = IO.file_sizes(20_000, seed=0, scale=1)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(sizes / 2**10, bins=100)
    ax.set_xscale("log")
    ax.set(xlabel="file size [KiB]", ylabel="files (of 20,000)",
           title=f"sizes drawn like ImageNet's: mean {sizes.mean() / 2**10:.0f} KiB, 508 B to 15 MiB")
    return fig


def fig_stages():
    paths = _files()
    st = IO.stage_times(IO.Store(paths), IO.access_order(len(paths), 0), batch=32)
    parts = ["open", "read", "decode", "collate", "copy"]
    fig, ax = plt.subplots(figsize=(8, 2.2))
    left = 0.0
    total = sum(st[k] for k in parts)
    for k in parts:
        ax.barh(0, 1e6 * st[k] / st["samples"], left=left, label=f"{k} {st[k] / total:.0%}")
        left += 1e6 * st[k] / st["samples"]
    ax.set(yticks=[], xlabel="µs per sample, one core", title="where loading a sample goes (256 files, 7 KiB on average)")
    ax.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    return fig


def fig_caches():
    paths = _files()
    n = len(paths)
    three = [i for e in range(3) for i in IO.access_order(n, 0, e)]
    shares = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for policy, mark in (("lru", "o-"), ("belady", "s-")):
        ax.plot([100 * f for f in shares], [100 * IO.simulate_cache(three, int(f * n), policy)["hit rate"] for f in shares],
                mark, label="LRU" if policy == "lru" else "Belady (the order is known)")
    ax.set(xlabel="cache size [% of the dataset]", ylabel="hit rate [%]", title="3 shuffled epochs through a cache")
    ax.legend()
    return fig


def fig_prefetch():
    import torch
    from torch.utils.data import DataLoader
    paths = _files()
    slow = dict(latency_s=4e-3, bytes_per_s=100e6)
    order = IO.access_order(len(paths), 0)
    loader = DataLoader(IO.FileDataset(IO.ThrottledStore(paths, **slow)), batch_size=8, sampler=order, num_workers=2,
                        prefetch_factor=2, persistent_workers=True, multiprocessing_context="fork")  # as in a notebook
    for _ in loader:
        pass
    t = time.perf_counter()
    plain = sum(len(y) for _, y in loader) / (time.perf_counter() - t)
    rates = {"DataLoader\n2 workers": plain}
    for depth, threads in ((8, 8), (32, 16)):
        t = time.perf_counter()
        for _, data in IO.Prefetcher(IO.ThrottledStore(paths, **slow), order, depth, threads):
            IO.decode(data)
        rates[f"prefetch\ndepth {depth}"] = len(order) / (time.perf_counter() - t)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(list(rates), list(rates.values()))
    ax.set(ylabel="samples/s", title="a throttled store (4 ms + 100 MB/s per read), 32 samples in memory at most")
    return fig
