"""labkit.dataio: the files, the sampler's order, the caches and the prefetcher against references."""
import random
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from labkit import dataio as IO


def test_file_sizes_follow_the_deck_s_imagenet_scaled_down():
    sizes = IO.file_sizes(20_000, seed=1, scale=1 / 16)
    assert sizes.mean() == pytest.approx(IO.IMAGENET_MEAN_BYTES / 16, rel=0.03)
    assert sizes.min() >= IO.IMAGENET_MIN_BYTES / 16 and sizes.max() <= IO.IMAGENET_MAX_BYTES / 16
    assert (sizes % 3 == 0).all()
    with pytest.raises(ValueError, match="scale"):
        IO.file_sizes(3, scale=2)


def test_dataset_files_and_the_decoded_samples(tmp_path):
    paths = IO.make_dataset(tmp_path, n=24, seed=0)
    assert [p.stat().st_size for p in paths] == IO.file_sizes(24, 0).tolist()
    ds = IO.FileDataset(IO.Store(paths), side=16)
    x, y = ds[5]
    assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1 and y == 5
    raw = paths[5].read_bytes()
    assert x.mean().item() == pytest.approx(np.frombuffer(raw, np.uint8)[: len(raw) // 192 * 192].mean() / 255, abs=0.02)
    before = paths[0].stat().st_mtime_ns
    IO.make_dataset(tmp_path, n=24, seed=0)                      # kept, not rewritten
    assert paths[0].stat().st_mtime_ns == before
    assert IO.drop_cache(paths[0]) in (True, False)


@pytest.mark.parametrize("n, world, epoch", [(100, 1, 0), (101, 4, 3), (37, 3, 1), (2, 8, 0), (3, 8, 2)])
def test_access_order_is_exactly_the_distributed_sampler_s(n, world, epoch):
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(epoch)
        assert IO.access_order(n, seed=7, epoch=epoch, world=world, rank=rank) == list(sampler)
    if n > 3:
        assert IO.access_order(n, 7, 0) != IO.access_order(n, 7, 1)   # every epoch its own order
    with pytest.raises(ValueError, match="rank"):
        IO.access_order(n, world=2, rank=2)


def test_worker_batches_are_what_each_dataloader_worker_loads():
    class Who(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return i, torch.utils.data.get_worker_info().id

    order = IO.access_order(40, seed=3)
    loader = DataLoader(Who(), batch_size=4, sampler=order, num_workers=2)
    seen = [[], []]
    for idx, wid in loader:
        seen[wid[0].item()].append(idx.tolist())
    assert seen == IO.worker_batches(order, 4, 2)


@pytest.mark.parametrize("seed", range(6))
def test_belady_is_optimal_and_lru_is_not_better(seed):
    rng = random.Random(seed)
    order = [rng.randrange(6) for _ in range(14)]
    for cap in (1, 2, 3):
        opt = IO.simulate_cache(order, cap, "belady")["misses"]
        assert opt == IO.brute_force_min_misses(order, cap)
        assert IO.simulate_cache(order, cap, "lru")["misses"] >= opt


def test_lru_thrashes_on_a_cyclic_order_that_belady_serves():
    order = list(range(5)) * 4                                  # epochs in the same order, cache one short
    assert IO.simulate_cache(order, 4, "lru")["hits"] == 0
    belady = IO.simulate_cache(order, 4, "belady")
    assert belady["misses"] == IO.brute_force_min_misses(order, 4) and belady["hit rate"] > 0.5
    assert IO.simulate_cache(order, 0)["hits"] == 0
    with pytest.raises(ValueError, match="policy"):
        IO.simulate_cache(order, 2, "fifo")


def test_prefetcher_yields_exactly_the_order_and_hides_the_latency(tmp_path):
    paths = IO.make_dataset(tmp_path, n=48, seed=2, scale=1 / 64)
    order = IO.access_order(48, seed=5)
    slow = IO.ThrottledStore(paths, latency_s=5e-3, bytes_per_s=1e9)
    t = time.perf_counter()
    plain = [slow.read(i) for i in order]
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    got = list(IO.Prefetcher(slow, order, depth=8, threads=8))
    t_pre = time.perf_counter() - t
    assert [i for i, _ in got] == order and [d for _, d in got] == plain
    assert t_plain / t_pre >= 3, f"8 reads in flight should hide most of the 5 ms latency: {t_plain:.3f} s vs {t_pre:.3f} s"
    assert slow.files == 96
    with pytest.raises(ValueError, match="depth"):
        IO.Prefetcher(slow, order, depth=0)


def test_prefetcher_keeps_at_most_depth_samples_in_memory(tmp_path):
    paths = IO.make_dataset(tmp_path, n=20, seed=0, scale=1 / 64)
    store = IO.Store(paths)
    started, consumed = [], 0
    read = store.read
    store.read = lambda i: started.append(i) or read(i)
    for k, _ in enumerate(IO.Prefetcher(store, range(20), depth=4, threads=2)):
        time.sleep(0.005)                                         # let the readers run ahead if they can
        consumed = k + 1
        assert len(started) - consumed <= 3, (len(started), consumed)   # this one held + at most 3 ahead
    assert consumed == 20 and sorted(started) == list(range(20))


def test_the_deck_s_arithmetic_and_the_stage_times(tmp_path):
    need = IO.devices_needed(81_000, IO.IMAGENET_MEAN_BYTES, 190 * 2**20)
    assert need["bytes_per_s"] / 2**30 == pytest.approx(8.88, abs=0.01) and need["devices"] == pytest.approx(47.9, abs=0.1)
    with pytest.raises(ValueError):
        IO.devices_needed(0, 1, 1)
    paths = IO.make_dataset(tmp_path, n=40, seed=0, scale=1 / 64)
    st = IO.stage_times(IO.Store(paths), range(40), batch=16, side=8)
    assert st["samples"] == 40 and st["bytes"] == sum(p.stat().st_size for p in paths)
    assert all(st[k] > 0 for k in ("open", "read", "decode", "collate", "copy"))


def test_consumer_rate_is_a_positive_rate_that_grows_with_smaller_images():
    small, big = IO.consumer_rate(side=16, seconds=0.2), IO.consumer_rate(side=64, seconds=0.2)
    assert 0 < big < small


def test_decode_takes_files_shorter_than_a_row():
    assert IO.decode(bytes(range(30)), side=4).shape == (3, 4, 4)
