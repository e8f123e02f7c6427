"""Feeding the accelerator: a dataset of many small files, where a loader's time goes, and
clairvoyant prefetching.

The seed of a shuffle fixes every future access: which sample each rank and each loader worker
reads, in which order, in every epoch (NoPFS, Dryden et al., 2021, arXiv 2101.08734). Knowing the
future makes two things possible: Belady's optimal cache (evict the sample needed farthest in the
future) and prefetching exactly what will be read next.

    make_dataset(root, n, ...)      n files of raw uint8 images, sizes drawn from a log-normal shaped
                                    like ImageNet's (mean 115 KiB, 508 B to 15 MiB), scaled down
    FileDataset(root, store)        a torch Dataset over them: read through a store, decode to a
                                    fixed-size float image; the time of each stage counted
    Store, ThrottledStore           read a file's bytes; the throttled one sleeps per file and per
                                    byte, a stand-in for a shared file system
    access_order(n, seed, epoch, world, rank)     the sample indices DistributedSampler gives a rank
    worker_batches(order, batch, workers)         which batches each DataLoader worker loads
    simulate_cache(order, capacity, policy)       hits and misses of an LRU or Belady cache
    brute_force_min_misses(order, capacity)       the fewest misses any eviction choice gets (small cases)
    Prefetcher(store, order, depth, threads)      reads ahead in the known order, at most `depth`
                                                  samples in memory, yields them in order
    devices_needed(samples/s, bytes, device B/s)  the deck's SSDs-per-GPU arithmetic
    stage_times(store, order, batch, device)      seconds in open, read, decode, collate, copy
    drop_cache(path), filesystem(path)            the page cache, and where the files live
    consumer_rate(device)                         samples/s a small CNN's training step eats here
"""
import collections
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

# ImageNet (Hoefler's deck): ~1.3 M files, ~150 GiB, mean 115 KiB, smallest 508 B, largest 15 MiB.
IMAGENET_MEAN_BYTES = 115 * 2**10
IMAGENET_MIN_BYTES, IMAGENET_MAX_BYTES = 508, 15 * 2**20
LOGNORMAL_SIGMA = 0.7    # an assumption: the deck gives the mean and the range, not the spread


def file_sizes(n: int, seed: int = 0, scale: float = 1 / 16) -> np.ndarray:
    """n file sizes in bytes: log-normal with ImageNet's mean (times `scale`) and spread
    LOGNORMAL_SIGMA, clipped to ImageNet's range (times `scale`), rounded to whole RGB pixels."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    rng = np.random.default_rng(seed)
    mu = np.log(IMAGENET_MEAN_BYTES * scale) - LOGNORMAL_SIGMA**2 / 2     # so that the mean is the target
    sizes = rng.lognormal(mu, LOGNORMAL_SIGMA, n)
    sizes = np.clip(sizes, max(IMAGENET_MIN_BYTES * scale, 12), IMAGENET_MAX_BYTES * scale)
    return (sizes // 3 * 3).astype(np.int64)


def make_dataset(root, n: int = 512, seed: int = 0, scale: float = 1 / 16) -> list[Path]:
    """n files root/000000.raw ... of random bytes (an RGB image of sizes[i] / 3 pixels, one row per
    64 pixels), sizes from file_sizes. Files already there with the right size are kept."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    paths = []
    for i, size in enumerate(file_sizes(n, seed, scale)):
        path = root / f"{i:06d}.raw"
        if not (path.exists() and path.stat().st_size == size):
            path.write_bytes(rng.integers(0, 256, int(size), dtype=np.uint8).tobytes())
        paths.append(path)
    return paths


def drop_cache(path) -> bool:
    """Ask the kernel to drop a file's pages from the page cache (posix_fadvise DONTNEED), so the
    next read comes from the device, not from memory. Returns False where the call is missing."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


class Store:
    """Reads a sample's bytes from local files; counts files and bytes read and the time spent."""

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths]
        self.files = self.bytes = 0
        self.open_s = self.read_s = 0.0
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.paths)

    def read(self, i: int) -> bytes:
        t0 = time.perf_counter()
        with open(self.paths[i], "rb") as f:
            t1 = time.perf_counter()
            data = f.read()
        t2 = time.perf_counter()
        with self._lock:
            self.files += 1
            self.bytes += len(data)
            self.open_s += t1 - t0
            self.read_s += t2 - t1
        return data


class ThrottledStore(Store):
    """A remote store on one machine: every read also costs latency_s + len / bytes_per_s, slept
    after the local read (a sleep, so concurrent reads overlap, as they do on a parallel file
    system; there is no cap on the total bandwidth). The sleep is not in read_s."""

    def __init__(self, paths, latency_s: float = 2e-3, bytes_per_s: float = 200e6):
        if latency_s < 0 or bytes_per_s <= 0:
            raise ValueError(f"need latency_s >= 0 and bytes_per_s > 0, got {latency_s!r}, {bytes_per_s!r}")
        super().__init__(paths)
        self.latency_s, self.bytes_per_s = latency_s, bytes_per_s

    def read(self, i: int) -> bytes:
        data = super().read(i)
        time.sleep(self.latency_s + len(data) / self.bytes_per_s)
        return data


def decode(data: bytes, side: int = 32) -> torch.Tensor:
    """Raw RGB bytes → a (3, side, side) float image in [0, 1]: the pixels as rows of 64, resized."""
    data = data.ljust(192, b"\0")                          # a file under one row of 64 pixels: zero-padded
    rows = len(data) // 192
    img = torch.frombuffer(bytearray(data[:rows * 64 * 3]), dtype=torch.uint8).view(rows, 64, 3)
    img = img.permute(2, 0, 1).unsqueeze(0).float() / 255
    return torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)[0]


class FileDataset(torch.utils.data.Dataset):
    """Sample i: decode(store.read(i)) and its label i % 10. The read and decode time is summed
    (per worker process: each has its own copy)."""

    def __init__(self, store: Store, side: int = 32):
        self.store, self.side = store, side
        self.decode_s = 0.0

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        data = self.store.read(i)
        t = time.perf_counter()
        x = decode(data, self.side)
        self.decode_s += time.perf_counter() - t
        return x, i % 10


# ---------------------------------------------------------------- clairvoyance


def access_order(n: int, seed: int = 0, epoch: int = 0, world: int = 1, rank: int = 0) -> list[int]:
    """The indices torch's DistributedSampler(shuffle=True, seed=seed) gives `rank` of `world` in
    `epoch`: a permutation of range(n) from a generator seeded with seed + epoch, padded by
    wrapping around (as many times as needed) to a multiple of world, then every world-th index
    from rank."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world={world}), got {rank!r}")
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    total = -(-n // world) * world
    pad = total - n
    perm += (perm * -(-pad // n))[:pad]                      # wrapping around as often as needed (n < world)
    return perm[rank:total:world]


def worker_batches(order, batch: int, workers: int) -> list[list[list[int]]]:
    """The batches each DataLoader worker loads, in its order: the order cut into batches, batch k
    to worker k % workers (no worker: one list holding every batch)."""
    batches = [list(order[i:i + batch]) for i in range(0, len(order), batch)]
    w = max(workers, 1)
    return [batches[k::w] for k in range(w)]


def simulate_cache(order, capacity: int, policy: str = "lru") -> dict:
    """Hits and misses of a cache holding `capacity` samples over the accesses in `order`. "lru"
    evicts the sample used longest ago; "belady" the one whose next use is farthest ahead, the new
    sample included (never used again counts as farthest; if the new one is needed last, it is read
    and not kept): optimal for equal-size samples, and possible only because the order is known."""
    if policy not in ("lru", "belady"):
        raise ValueError(f"policy must be 'lru' or 'belady', got {policy!r}")
    if not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
    order = list(order)
    nxt, upcoming = [0] * len(order), {}
    for t in range(len(order) - 1, -1, -1):                   # next use of the sample accessed at t
        nxt[t] = upcoming.get(order[t], float("inf"))
        upcoming[order[t]] = t
    cache, hits = collections.OrderedDict(), 0                # sample -> its next use; order = recency
    for t, x in enumerate(order):
        if x in cache:
            hits += 1
            cache.move_to_end(x)
        elif capacity:
            if len(cache) >= capacity:
                if policy == "lru":
                    cache.popitem(last=False)
                else:
                    victim = max(cache, key=cache.get)
                    if cache[victim] <= nxt[t]:               # x itself is needed last: read it, keep the rest
                        continue
                    del cache[victim]
            cache[x] = None
        if x in cache:
            cache[x] = nxt[t]
    return {"hits": hits, "misses": len(order) - hits, "hit rate": hits / len(order) if order else 0.0}


def brute_force_min_misses(order, capacity: int) -> int:
    """The fewest misses of any cache of `capacity` samples over `order`, trying every choice of
    what to evict (exponential: for checking simulate_cache on small cases)."""
    order = list(order)
    best = {frozenset(): 0}                                   # cache contents -> fewest misses so far
    for x in order:
        step = {}
        for content, misses in best.items():
            if x in content:
                options = [(content, misses)]
            elif len(content) < capacity:
                options = [(content | {x}, misses + 1)]
            else:
                options = [((content - {y}) | {x}, misses + 1) for y in content] + [(content, misses + 1)]
            for c, mi in options:
                if mi < step.get(c, float("inf")):
                    step[c] = mi
        best = step
    return min(best.values())


class Prefetcher:
    """Iterate over store's samples in a known order, reading up to `depth` samples ahead with
    `threads` reader threads: at most `depth` samples are read and not yet consumed (the memory
    budget). Yields (index, bytes) in exactly the given order."""

    def __init__(self, store: Store, order, depth: int = 16, threads: int = 8):
        if not isinstance(depth, int) or depth < 1 or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"depth and threads must be positive ints, got {depth!r}, {threads!r}")
        self.store, self.order, self.depth, self.threads = store, list(order), depth, threads

    def __iter__(self):
        with ThreadPoolExecutor(self.threads) as pool:
            pending = collections.deque()
            ahead = iter(self.order)
            for i in ahead:                                    # fill the window
                pending.append((i, pool.submit(self.store.read, i)))
                if len(pending) == self.depth:
                    break
            while pending:
                i, fut = pending.popleft()
                yield i, fut.result()
                nxt = next(ahead, None)                        # the consumer is done with i: one more may be read
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.store.read, nxt)))


def devices_needed(samples_per_s: float, mean_bytes: float, device_bytes_per_s: float) -> dict:
    """The deck's arithmetic: the read rate a consumer of samples_per_s samples of mean_bytes needs,
    and how many storage devices of device_bytes_per_s (random reads of that size) supply it."""
    if min(samples_per_s, mean_bytes, device_bytes_per_s) <= 0:
        raise ValueError(f"all three must be > 0, got {samples_per_s!r}, {mean_bytes!r}, {device_bytes_per_s!r}")
    rate = samples_per_s * mean_bytes
    return {"bytes_per_s": rate, "devices": rate / device_bytes_per_s}


def stage_times(store: Store, order, batch: int = 32, device="cpu", side: int = 32) -> dict:
    """Load the samples of `order` in batches, in this process, timing each stage on its own: open
    and read (the store's counters), decode, collate (stack into a batch) and the copy to `device`
    (pinned memory and a synchronise on CUDA). Seconds per stage, samples and bytes."""
    import torch
    dev = torch.device(device)
    store.files = store.bytes = 0
    store.open_s = store.read_s = 0.0
    decode_s = collate_s = copy_s = 0.0
    order = list(order)
    for k in range(0, len(order), batch):
        raw = [store.read(i) for i in order[k:k + batch]]
        t = time.perf_counter()
        imgs = [decode(b, side) for b in raw]
        t1 = time.perf_counter()
        x = torch.stack(imgs)
        t2 = time.perf_counter()
        if dev.type == "cuda":
            x = x.pin_memory().to(dev, non_blocking=True)
            torch.cuda.synchronize(dev)
        else:
            x = x.to(dev)
        t3 = time.perf_counter()
        decode_s, collate_s, copy_s = decode_s + t1 - t, collate_s + t2 - t1, copy_s + t3 - t2
    return {"open": store.open_s, "read": store.read_s, "decode": decode_s, "collate": collate_s, "copy": copy_s,
            "samples": len(order), "bytes": store.bytes}


def filesystem(path) -> str:
    """The type of the file system holding path (from /proc/mounts, the longest matching mount
    point), e.g. "ext4", "overlay", "tmpfs"; "unknown" where /proc/mounts is missing."""
    path = str(Path(path).resolve())
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, point, fstype, *_ = line.split()
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                    best, kind = point, fstype
    except OSError:
        pass
    return kind


def consumer_rate(device="cpu", side: int = 32, batch: int = 64, seconds: float = 0.5) -> float:
    """Samples/s a small CNN's training step consumes on `device` (3 × side × side images, random
    data, SGD): the rate a loader must keep up with on this machine. Warmed up, then timed over
    about `seconds` with the device synchronised."""
    import torch.nn as nn
    dev = torch.device(device)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                        nn.Flatten(), nn.Linear(64 * 16, 10)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(batch, 3, side, side, device=dev), torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    sync()
    return n * batch / (time.perf_counter() - t0)
