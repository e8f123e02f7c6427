"""labkit core: seeding, device choice, the timer, hardware peaks, setup()."""
import json
import sys
import time

import pytest
import torch

import labkit
from labkit import bench, device, hw, record
from labkit.seed import seed_everything


def test_seed_everything_repeats_random_draws():
    seed_everything(123)
    a = (torch.rand(5), __import__("numpy").random.rand(3), __import__("random").random())
    seed_everything(123)
    b = (torch.rand(5), __import__("numpy").random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]
    seed_everything(124)
    assert not torch.equal(torch.rand(5), a[0])


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_pick_device(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.pick_device().type == expected
    assert device.pick_device("cpu").type == "cpu"
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert device.pick_device().type == "cpu"
    assert device.pick_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ValueError, match="prefer"):
        device.pick_device("tpu")
    monkeypatch.setenv("LABKIT_DEVICE", "gpu")
    with pytest.raises(ValueError, match="LABKIT_DEVICE"):
        device.pick_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_pick_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        device.pick_device("cuda")


def test_describe_machine_names_hardware_and_torch():
    line = device.describe_machine("cpu")
    assert "CPU" in line and torch.__version__ in line and "\n" not in line
    key = device.machine_key("cpu")
    assert key.startswith("cpu-") and f"-{torch.get_num_threads()}t-" in key and " " not in key
    assert torch.__version__.split("+")[0].replace(".", "-") in key


def test_benchmark_measures_a_known_sleep():
    t = bench.benchmark(lambda: time.sleep(0.01), warmup=1, min_repeats=5, min_time_s=0)
    assert t.n == 5
    assert 0.0095 < t.median_s < 0.05
    assert t.q25_s <= t.median_s <= t.q75_s
    assert "ms" in str(t)


def test_benchmark_warms_up_and_repeats_until_min_time():
    calls = []
    t = bench.benchmark(lambda: calls.append(1), warmup=4, min_repeats=3, max_repeats=50, min_time_s=10)
    assert t.n == 50 and len(calls) == 54  # stops at max_repeats, after 4 untimed warm-ups


@pytest.mark.parametrize("kwargs, match", [({"warmup": -1}, "warmup"), ({"min_repeats": 0}, "min_repeats"),
                                           ({"min_repeats": 5, "max_repeats": 2}, "max_repeats"),
                                           ({"min_time_s": -1}, "min_time_s")])
def test_benchmark_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.benchmark(lambda: None, **kwargs)
    with pytest.raises(TypeError, match="callable"):
        bench.benchmark(42)


def test_format_helpers():
    assert bench.format_seconds(0.00123) == "1.23 ms"
    assert bench.format_seconds(2.5) == "2.5 s"
    assert bench.format_seconds(0.00099996) == "1 ms" and hw.format_rate(999.96e9) == "1 TFLOP/s"
    assert hw.format_rate(1.5e12) == "1.5 TFLOP/s"
    assert hw.format_rate(3.35e12, "B/s") == "3.35 TB/s"


def test_datasheets_match_the_decks():
    # Dense figures: the datasheets' tensor-core numbers are quoted with 2:4 sparsity (×2).
    h100 = hw.datasheet("NVIDIA H100 80GB HBM3")
    assert h100["fp16"] == 989.5e12 and h100["fp32"] == 67e12 and h100["mem_bytes_per_s"] == 3.35e12
    assert hw.datasheet("NVIDIA H100 NVL")["mem_bytes_per_s"] == 3.9e12
    assert hw.datasheet("NVIDIA A100-SXM4-80GB")["fp16"] == 312e12
    assert hw.datasheet("NVIDIA A100 80GB PCIe")["mem_bytes_per_s"] == 1.935e12
    assert hw.datasheet("NVIDIA H200")["mem_bytes_per_s"] == 4.8e12 and hw.datasheet("NVIDIA H200")["bf16"] == 989.5e12
    assert hw.datasheet("NVIDIA H200 NVL") is None, "the NVL board has lower clocks: no peak rather than a wrong one"
    assert hw.datasheet("Intel(R) Xeon(R)") is None
    # variants the decks do not tabulate get no peak rather than a wrong one
    for name in ("NVIDIA H100 PCIe", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"):
        assert hw.datasheet(name) is None, name
    assert h100["tf32"] == 494.5e12 and h100["fp8"] == h100["int8"] == 1979e12 and h100["tdp_w"] == 700


def test_measured_matmul_and_copy_are_plausible():
    f = hw.measure_matmul_flops("fp32", n=256, device="cpu", min_time_s=0.05)
    assert 1e8 < f < 1e14  # between an old phone and a GPU: a sanity bound, not a target
    bw = hw.measure_copy_bandwidth(2**22, device="cpu", min_time_s=0.05)
    assert 1e8 < bw < 1e13
    with pytest.raises(ValueError, match="dtype"):
        hw.measure_matmul_flops("fp7")
    with pytest.raises(ValueError, match="tf32"):
        hw.measure_matmul_flops("tf32", device="cpu")


def _fake_machine(monkeypatch, fp32=100e9, fp16=1e9, recheck=None):
    """hw's timers replaced by a machine with these FLOP/s (n ignored); returns the calls made."""
    calls = []
    rates = {"fp32": fp32, "bf16": 2 * fp32, "fp16": fp16}

    def fake_time(dtype, n, device, **kw):
        calls.append((dtype, n))
        if recheck is not None and dtype == "fp32" and "max_repeats" not in kw:
            return recheck.pop(0)  # the re-checks, in order
        return rates[dtype]
    monkeypatch.setattr(hw, "_time_matmul", fake_time)
    monkeypatch.setattr(hw, "measure_copy_bandwidth", lambda device, min_time_s: 2e9)
    return calls


def test_measured_peaks_are_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    calls = _fake_machine(monkeypatch, recheck=[100e9] * 4)
    p1 = hw.measured_peaks("cpu")
    n = len(calls)
    p2 = hw.measured_peaks("cpu")
    assert p1 == p2 and len(calls) == n + 1  # read back after one re-check, not measured again
    stored = json.loads((tmp_path / "peaks.json").read_text())
    assert stored[device.machine_key("cpu")]["copy_bytes_per_s"] == 2e9
    hw.measured_peaks("cpu", refresh=True)
    assert len(calls) > 2 * n
    (tmp_path / "peaks.json").write_text("{not json")
    assert hw.measured_peaks("cpu")["matmul_flop_per_s"]["fp32"] == 100e9  # corrupt cache: re-measured


def test_peaks_measure_slow_dtypes_small_and_say_so(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    calls = _fake_machine(monkeypatch, fp32=200e9, fp16=0.2e9, recheck=[200e9])
    peaks = hw.measured_peaks("cpu", progress=False)
    # fp16 at 0.2 GFLOP/s: n=256 would take 0.17 s per call, over the 0.1 s budget -> stays at 128
    assert peaks["matmul_n"] == {"fp32": 2048, "bf16": 2048, "fp16": 128}
    assert max(n for d, n in calls if d == "fp16") == 128
    assert "no fast fp16 path" in peaks["notes"]["fp16"] and "bf16" not in peaks["notes"]
    assert peaks["steady"] and "note: no fast fp16" in hw.describe_peaks(peaks)


def test_peaks_measured_under_load_are_not_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    # busy while measuring: the two fp32 timings disagree -> the higher is kept, with a note
    _fake_machine(monkeypatch, fp32=60e9, recheck=[170e9])
    p = hw.measured_peaks("cpu", progress=False)
    assert not p["steady"] and p["matmul_flop_per_s"]["fp32"] == 170e9 and "not steady" in p["notes"]["steady"]
    # a cached peak lower than today's re-check was measured under load: measured again
    _fake_machine(monkeypatch, fp32=175e9, recheck=[175e9, 175e9, 175e9])
    cache = json.loads((tmp_path / "peaks.json").read_text())
    key = device.machine_key("cpu")
    cache[key]["matmul_flop_per_s"]["fp32"] = 60e9
    (tmp_path / "peaks.json").write_text(json.dumps(cache))
    assert hw.measured_peaks("cpu", progress=False)["matmul_flop_per_s"]["fp32"] == 175e9
    assert json.loads((tmp_path / "peaks.json").read_text())[key]["matmul_flop_per_s"]["fp32"] == 175e9
    # busy now: the cached peaks stay, with a note
    _fake_machine(monkeypatch, recheck=[50e9])
    p = hw.measured_peaks("cpu", progress=False)
    assert p["matmul_flop_per_s"]["fp32"] == 175e9 and "busy now" in p["notes"]["busy"]


def test_sized_matmul_grows_to_the_budget_on_a_real_cpu():
    flops, n = hw.sized_matmul_flops("fp32", device="cpu", call_s=0.01, n_max=1024, min_time_s=0.02)
    assert 128 <= n <= 1024 and 1e8 < flops < 1e14
    assert 2 * n**3 / flops < 0.2  # one call near the budget, not minutes
    with pytest.raises(ValueError, match="call_s"):
        hw.sized_matmul_flops("fp32", device="cpu", call_s=0)


def test_setup_prints_machine_and_peaks(capsys):
    lab = labkit.setup(seed=7, device="cpu")
    out = capsys.readouterr().out
    assert lab.device.type == "cpu" and lab.seed == 7 and not lab.is_gpu
    assert "CPU" in out and "FLOP/s" in out and "B/s" in out
    assert lab.peaks["matmul_flop_per_s"]["fp32"] > 0


@pytest.mark.gpu
def test_gpu_peaks_are_below_datasheet():
    peaks = hw.measured_peaks("cuda", refresh=True)
    sheet = hw.datasheet(peaks["device"])
    if sheet is None:
        pytest.skip(f"no datasheet for {peaks['device']}")
    assert 0.5 * sheet["fp16"] < peaks["matmul_flop_per_s"]["fp16"] < 1.05 * sheet["fp16"]
    assert 0.5 * sheet["mem_bytes_per_s"] < peaks["copy_bytes_per_s"] < 1.05 * sheet["mem_bytes_per_s"]


@pytest.mark.gpu
def test_gpu_timer_uses_the_gpu_clock():
    a = torch.randn(4096, 4096, device="cuda")
    t = bench.benchmark(lambda: a @ a, device="cuda", min_time_s=0.1)
    # 137 GFLOP: far longer than a launch, far shorter than a second on any datacenter GPU
    assert 1e-4 < t.median_s < 1.0 and t.q25_s <= t.median_s <= t.q75_s


def test_recorded_measurements_round_trip_with_provenance(tmp_path):
    path = record.save("demo-sweep", {"n": [1, 2], "flop_rate": [1e9, 2e9]}, device="cpu",
                       command="python bench.py", root=tmp_path)
    rec = record.load("demo-sweep", root=tmp_path)
    assert path.exists() and rec["results"]["flop_rate"] == [1e9, 2e9]
    p = rec["provenance"]
    assert p["command"] == "python bench.py" and p["torch"] == torch.__version__ and "CPU" in p["machine"]
    assert "RECORDED" in record.describe(rec) and "python bench.py" in record.describe(rec)
    with pytest.raises(FileNotFoundError, match="demo-sweep"):
        record.load("missing", root=tmp_path)
    with pytest.raises(ValueError, match="name"):
        record.save("../escape", {}, root=tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="provenance"):
        record.load("bad", root=tmp_path)


def test_command_line_is_what_one_types_again(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/repo/scripts/train_cnn.py", "--epochs", "5"])
    assert record.command_line() == "python /repo/scripts/train_cnn.py --epochs 5"
    assert record.command_line("torchrun --nproc_per_node=2").startswith("torchrun --nproc_per_node=2 /repo/")
    assert record.provenance("cpu")["command"] == "python /repo/scripts/train_cnn.py --epochs 5"
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher", "-f", "k.json"])   # no script: as is
    assert record.command_line() == "ipykernel_launcher -f k.json"
