"""The GPU branches, on a machine without a GPU: a fake CUDA (two GPUs, a current device,
events that remember which GPU they were recorded on) stands in for torch.cuda, so the logic
that only runs on GPU nodes is checked in CI. Each test failed before its fix."""
import time

import pytest
import torch

from labkit import bench, device, energy, hw


class FakeCuda:
    """Two GPUs; what was recorded and synchronised where."""

    def __init__(self):
        self.current, self.synced, self.recorded, self.waited, self.set = 0, [], [], [], []
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t, self.where = None, None

            def record(self):
                self.t, self.where = time.perf_counter(), fake.current
                fake.recorded.append(self)

            def synchronize(self):
                fake.waited.append(self)

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3

        class Device:  # torch.cuda.device(d): makes d current inside the block
            def __init__(self, d):
                self.index = torch.device(d).index

            def __enter__(self):
                self.old, fake.current = fake.current, self.index

            def __exit__(self, *exc):
                fake.current = self.old

        self.Event, self.Device = Event, Device

    def synchronize(self, d=None):
        self.synced.append(self.current if d is None else (d if isinstance(d, int) else torch.device(d).index))

    def set_device(self, i):
        self.set.append(i)
        self.current = i


@pytest.fixture
def cuda(monkeypatch):
    fake = FakeCuda()
    for name, value in {"is_available": lambda: True, "is_initialized": lambda: True, "device_count": lambda: 2,
                        "current_device": lambda: fake.current, "synchronize": fake.synchronize,
                        "set_device": fake.set_device, "Event": fake.Event, "device": fake.Device}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    return fake


def test_timing_gpu_1_records_and_waits_on_gpu_1_not_the_current_one(cuda):
    t = bench.benchmark(lambda: None, device="cuda:1", warmup=1, min_repeats=3, min_time_s=0)
    assert t.n >= 3 and {e.where for e in cuda.recorded} == {1}, "events on GPU 0 time an idle GPU"
    assert set(cuda.synced) == {1}
    assert cuda.current == 0, "the caller's current GPU is left as it was"
    assert t.device == "cuda:1"


def test_plain_cuda_means_the_current_gpu(cuda):
    cuda.current = 1
    bench.benchmark(lambda: None, device="cuda", warmup=0, min_repeats=2, min_time_s=0)
    assert {e.where for e in cuda.recorded} == {1} and set(cuda.synced) == {1}


def test_cpu_work_on_a_gpu_node_is_timed_by_the_wall_clock(cuda):
    # device=None after CUDA was used (lab 05's latency(), prune's sweeps): CPU work must not be
    # timed by GPU events, which see nothing and read ~0 s
    t = bench.benchmark(lambda: time.sleep(0.002), warmup=0, min_repeats=3, min_time_s=0)
    assert cuda.recorded == [] and t.median_s >= 0.002
    assert len(cuda.synced) >= 3, "queued GPU work is still waited for around each call"


def test_choosing_gpu_1_makes_it_current(cuda):
    assert device.pick_device("cuda:1") == torch.device("cuda:1")
    assert cuda.set == [1] and cuda.current == 1
    with pytest.raises(RuntimeError, match="only 2 GPU"):
        device.pick_device("cuda:2")


def test_energy_windows_wait_for_every_measured_gpu(cuda):
    b = object.__new__(energy.NvmlCounterBackend)  # a counter on GPU 1, without NVML
    b.index, b.method, b.device = 1, "NVML energy counter", "GPU 1 fake"
    b.start = lambda: 0
    b.stop = lambda state, duration_s: (1.0, "")
    meter = energy.EnergyMeter(backends=[b])
    with meter.window("w") as w:
        pass
    assert cuda.synced == [1, 1], "synchronising the current GPU (0) leaves GPU 1's work outside the window"
    assert w.readings[0].joules == 1.0


def test_run_for_keeps_the_host_at_most_depth_calls_ahead(cuda):
    calls = energy.run_for(0.05, lambda: time.sleep(0.001), device="cuda:0", depth=4)
    assert calls == len(cuda.recorded) and calls > 8
    # each wait is on the event recorded `depth` calls back, so the queue never holds more than that
    assert cuda.waited == cuda.recorded[:len(cuda.waited)] and len(cuda.waited) == calls - 4
    assert cuda.synced[-1] == 0, "and the queue is drained at the end"
    with pytest.raises(ValueError, match="depth must be"):
        energy.run_for(0.01, lambda: None, device="cuda", depth=0)


def test_tf32_switch_uses_the_new_api_and_restores_it():
    m = torch.backends.cuda.matmul
    old = m.fp32_precision
    try:
        m.fp32_precision = "ieee"  # a program that uses torch's new API...
        hw._time_matmul("fp32", 64, torch.device("cpu"), warmup=0, min_repeats=1, min_time_s=0)  # ...must not break
        with hw._tf32(True):
            assert m.fp32_precision == "tf32"
        assert m.fp32_precision == "ieee"
    finally:
        m.fp32_precision = old


# --- helpers that must follow their inputs' device -----------------------------------------
# PyTorch's "meta" device has shapes and dtypes but no data: a helper that makes a tensor on the
# CPU (torch.eye(n), torch.zeros(...) with no device) and mixes it with its input fails there
# exactly as it would with a CUDA input.

@pytest.mark.parametrize("method", ["rtn", "gptq", "nf4", "nf4-dq", "fp4"])
def test_4bit_quantizers_follow_the_weights_device(method):
    from torch import nn

    from labkit.quant import kbit
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16)).to("meta")
    x = torch.randn(5, 64, device="meta")
    q = kbit.quantize_model_4bit(model, method, calibrate=lambda m: m(x), group=32, blocksize=32)
    assert q[0].weight.device.type == "meta" and q[2].weight.shape == (16, 32)


def test_4bit_codes_and_gptq_pieces_follow_the_device():
    from labkit.quant import kbit
    w = torch.randn(8, 64, device="meta")
    codes, absmax = kbit.quantize_4bit(w)
    assert kbit.dequantize_4bit(codes, absmax, w.shape).device.type == "meta"
    assert kbit.gptq_hinv(torch.eye(64, device="meta")).device.type == "meta"
