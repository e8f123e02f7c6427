"""labkit.energy: the arithmetic, RAPL on fake powercap trees, NVML through a fake library, the
labelled estimate, and the meter's windows."""
import time

import pytest

from labkit import energy as E


def test_integrate_power_known_answers():
    assert E.integrate_power([0, 1, 2], [10, 10, 10]) == pytest.approx(20.0)
    assert E.integrate_power([0, 2], [0, 100]) == pytest.approx(100.0)  # a ramp: the average times the time
    with pytest.raises(ValueError, match="at least 2"):
        E.integrate_power([0], [1])
    with pytest.raises(ValueError, match="non-decreasing"):
        E.integrate_power([1, 0], [1, 1])


def test_counter_wraparound():
    assert E.counter_delta(100, 250, 1000) == 150
    assert E.counter_delta(990, 5, 1000) == 15
    with pytest.raises(ValueError, match="max_range"):
        E.counter_delta(5, 2000, 1000)


def test_units_cost_and_co2_by_hand():
    assert E.joules_to_kwh(3.6e6) == 1.0 and E.kwh_to_joules(2) == 7.2e6
    assert E.cost_eur(3.6e6) == pytest.approx(200e6 / 1.59e9)
    assert E.cost_eur(3.6e6, eur_per_kwh=0.3) == pytest.approx(0.3)
    assert E.co2_kg(3.6e6) == pytest.approx(0.445)


def _rapl_tree(root, domains):
    for name, (label, energy, max_range) in domains.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(label + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_reads_packages_and_dram_with_wraparound(tmp_path):
    _rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 999_000_000, 1_000_000_000),
                          "intel-rapl:0:0": ("dram", 10_000, 1_000_000_000)})
    meter = E.EnergyMeter(gpus=[], powercap_root=str(tmp_path))
    assert [b.method for b in meter.backends] == ["RAPL package-0 counter", "RAPL dram counter",
                                                  meter.backends[-1].method]
    meter.begin_window("w")
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("4000000\n")       # wrapped: +1 J +4 J
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("2010000\n")     # +2 J
    win = meter.end_window("w")
    pkg, dram, est = win.readings
    assert pkg.joules == pytest.approx(5.0) and dram.joules == pytest.approx(2.0)
    assert est.is_estimate and not pkg.is_estimate and win.best() is pkg


def test_rapl_window_too_short_is_no_reading_not_zero(tmp_path):
    _rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 5, 1000)})
    meter = E.EnergyMeter(gpus=[], powercap_root=str(tmp_path))
    with meter.window("tiny") as w:
        pass
    assert w.readings[0].joules is None and "update period" in w.readings[0].note
    assert "no reading" in str(w.readings[0])


def test_rapl_permission_denied_and_missing_trees(tmp_path, monkeypatch):
    _rapl_tree(tmp_path / "tree", {"intel-rapl:0": ("package-0", 5, 1000)})

    def denied(self):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(E.RaplBackend, "_read", denied)
    found, problems = E.rapl_backends(tmp_path / "tree")
    assert not found and "not readable" in problems[0]
    monkeypatch.undo()
    assert "does not exist" in E.rapl_backends(tmp_path / "nope")[1][0]
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl" in E.rapl_backends(tmp_path / "empty")[1][0]
    meter = E.EnergyMeter(gpus=[], powercap_root=str(tmp_path / "nope"))
    assert len(meter.backends) == 1 and meter.backends[0].method.startswith("estimate")
    assert any("does not exist" in u for u in meter.unavailable)


class FakeNvml:
    """Enough of pynvml for the backends: a GPU drawing a steady 200 W since t0."""

    def __init__(self, watts=200.0):
        self.t0, self.watts = time.perf_counter(), watts

    def nvmlDeviceGetName(self, h):
        return "Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # mJ, updated every 20 ms like a real counter
        elapsed = time.perf_counter() - self.t0
        return int((elapsed // 0.02) * 0.02 * self.watts * 1000)

    def nvmlDeviceGetPowerUsage(self, h):  # mW
        return int(self.watts * 1000)


def test_nvml_counter_and_samples_with_a_fake_library(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setattr(E._Nvml, "handle", staticmethod(lambda i: (fake, object())))
    meter = E.EnergyMeter(gpus=[0], powercap_root="/nonexistent")
    with meter.window("steady") as w:
        time.sleep(0.3)
    counter, samples, estimate = w.readings
    assert counter.method == "NVML energy counter" and samples.method == "NVML power samples"
    assert counter.joules == pytest.approx(200 * counter.duration_s, rel=0.15)
    assert samples.joules == pytest.approx(200 * samples.duration_s, rel=0.1)
    assert abs(counter.joules - samples.joules) / samples.joules < 0.15
    frozen = fake.nvmlDeviceGetTotalEnergyConsumption(None)
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda h: frozen  # no counter update inside the window
    with meter.window("short") as w:
        pass
    assert w.readings[0].joules is None and "update period" in w.readings[0].note


def test_estimate_is_labelled_and_tracks_cpu_time(monkeypatch):
    monkeypatch.delenv("LABKIT_CPU_TDP_W", raising=False)
    meter = E.EnergyMeter(backends=[E.EstimateBackend(cpu_tdp_w=100.0)])
    with meter.window("busy") as w:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.3:
            pass
    r = w.readings[0]
    assert r.is_estimate and "estimate" in str(r) and "100 W (given)" in r.method
    cores = meter.backends[0].cores
    assert r.joules == pytest.approx(100.0 * r.duration_s / cores, rel=0.3)  # one busy core of `cores`


def test_meter_windows_and_errors():
    meter = E.EnergyMeter(backends=[E.EstimateBackend(50.0)])
    meter.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("a")
    meter.end_window("a")
    with pytest.raises(ValueError, match="no open window"):
        meter.end_window("a")
    assert 0 < meter.overhead_s(n=20) < 0.1
    with pytest.raises(ValueError, match="at least one"):
        E.EnergyMeter(backends=[])


def test_per_inference():
    r = E.Reading("x", "RAPL package-0 counter", "cpu", 2.0, 10.0)
    out = E.per_inference(r, 100)
    assert out["joules_per_inference"] == 0.1 and out["inferences_per_joule"] == 10 and out["inferences_per_s"] == 50
    assert out["watts"] == 5.0
    with pytest.raises(ValueError, match="n_inferences"):
        E.per_inference(r, 0)
    with pytest.raises(ValueError, match="no energy"):
        E.per_inference(E.Reading("y", "m", "d", 1.0, None, "too short"), 1)


def test_power_sampler_covers_the_whole_window_and_stops_sampling():
    t0 = time.perf_counter()
    step = lambda: 50.0 if time.perf_counter() - t0 < 0.1 else 150.0  # noqa: E731  a 50 W -> 150 W step at 0.1 s
    s = E.PowerSampler(step, interval_s=0.01).start()
    time.sleep(0.3)
    joules = s.stop()
    window = s.times[-1] - s.times[0]
    assert s.times[0] - t0 < 0.01 and window >= 0.3                 # a sample as it opened and as it closed
    assert joules == pytest.approx(5 + 150 * (window - 0.1), rel=0.05)  # 50 W for 0.1 s, then 150 W
    n = len(s.times)
    time.sleep(0.05)
    assert len(s.times) == n                                        # nothing sampled after stop()
    with pytest.raises(RuntimeError, match="before start"):
        E.PowerSampler(step).stop()
    with pytest.raises(ValueError, match="interval_s"):
        E.PowerSampler(step, 0)


def test_dynamic_joules_and_the_shortest_honest_window():
    assert E.dynamic_joules(100.0, 20.0, 3.0) == 40.0
    # NVML's counter: 1 mJ resolution, updated every ~100 ms on recent boards; 300 W, 1 % error: 20 s
    assert E.min_window_s(0.1, 1e-3, 300.0, 0.01) == pytest.approx(20.0, rel=1e-4)
    # RAPL: updated every ~1 ms, 15.3 uJ units: 0.2 s at 1 %
    assert E.min_window_s(1e-3, 15.3e-6, 100.0, 0.01) == pytest.approx(0.2, rel=1e-3)
    with pytest.raises(ValueError, match="max_error"):
        E.min_window_s(0.1, 1e-3, 300.0, 0.0)


def test_averaged_power_is_a_trailing_mean_that_never_sees_the_future():
    import random
    assert E.averaged_power([0, 1, 2, 3, 4], [0, 0, 10, 10, 10], 2) == [0, 0, 5, 10, 10]
    assert E.averaged_power([0, 0.5, 3], [100, 100, 100], 0.1) == [100, 100, 100]
    rng = random.Random(3)
    for _ in range(20):
        t = sorted(rng.uniform(0, 10) for _ in range(rng.randint(1, 60)))
        w = [rng.uniform(0, 700) for _ in t]
        window = rng.uniform(0.1, 5)
        brute = [sum(w[j] for j in range(len(t)) if ti - window < t[j] <= ti)
                 / sum(1 for j in range(len(t)) if ti - window < t[j] <= ti) for ti in t]
        assert E.averaged_power(t, w, window) == pytest.approx(brute, rel=1e-9)
        changed = w[:len(w) // 2] + [0.0] * (len(w) - len(w) // 2)        # a different future
        assert E.averaged_power(t, changed, window)[:len(w) // 2] == pytest.approx(brute[:len(w) // 2], rel=1e-9)
    with pytest.raises(ValueError, match="window_s"):
        E.averaged_power([0, 1], [1, 1], 0)


def test_burst_energy_recovers_a_short_kernel_from_an_averaging_sensor():
    dt = 1e-3
    t = [i * dt for i in range(3000)]
    true = [700.0 if 1.0 <= ti < 1.04 else 100.0 for ti in t]              # 28 J of 700 W in 40 ms, 100 W idle
    seen = E.averaged_power(t, true, 1.0)
    assert E.burst_energy(t, seen, 1.0, 1.04, 1.0, 100.0) == pytest.approx(28.0, rel=0.01)
    inside = [i for i, ti in enumerate(t) if 1.0 <= ti <= 1.04]
    naive = E.integrate_power([t[i] for i in inside], [seen[i] for i in inside])
    assert naive < 0.2 * 28.0, "read only during the kernel, the averaged sensor misses most of it"
    with pytest.raises(ValueError, match="fewer than 2"):
        E.burst_energy(t, seen, 5.0, 6.0, 1.0, 100.0)


def test_part_time_power_sees_only_its_on_window():
    t = list(range(200))                                                    # 1 unit = 1 ms, a period of 100
    hidden = [700.0 if 50 <= x < 70 or 150 <= x < 170 else 100.0 for x in t]
    assert E.part_time_power(t, hidden, 100, 25) == [(25, 100.0), (125, 100.0)], "a kernel out of phase is not seen"
    early = [700.0 if x < 20 else 100.0 for x in t]
    assert E.part_time_power(t, early, 100, 25) == [(25, 580.0), (125, 100.0)]
    assert E.part_time_power(t, early, 100, 100) == [(100, 220.0), (200, 100.0)], "always on: the true mean"
    with pytest.raises(ValueError, match="on_s"):
        E.part_time_power(t, early, 100, 0)
