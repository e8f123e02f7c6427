"""labkit.target: the median is what is graded, the noise margin is on the right side, a missed
goal fails a test cell, and a figure this machine cannot measure says so instead of scoring 0."""
import itertools
import time

import pytest
import torch

from labkit.target import NotMeasurableHere, Target


def test_median_of_repeats_is_graded_not_the_best_run():
    t = Target("speed-up", goal=10, unit="x", tolerance=0.0)
    runs = iter([30.0, 2.0, 3.0])  # one lucky run must not carry a slow solution
    out = t.measure(lambda: next(runs), repeats=3)
    assert out.values == [30.0, 2.0, 3.0] and out.value == 3.0 and not out.met
    assert t.outcome is out


@pytest.mark.parametrize("higher, value, met", [
    (True, 9.6, True), (True, 9.4, False), (True, 12.0, True),      # goal 10, 5 %: met from 9.5 up
    (False, 10.4, True), (False, 10.6, False), (False, 3.0, True),  # goal 10, 5 %: met up to 10.5
])
def test_noise_margin_is_on_the_side_of_the_goal(higher, value, met):
    t = Target("figure", goal=10, higher_is_better=higher, tolerance=0.05)
    assert t.measure(lambda: value, repeats=1).met is met


def test_require_fails_a_missed_goal_with_the_figures():
    out = Target("bits per weight", goal=4.25, unit="bits/weight", higher_is_better=False).measure(lambda: 4.6)
    with pytest.raises(AssertionError, match=r"bits per weight: 4.6 bits/weight .* NOT met"):
        out.require()
    assert Target("x", goal=1).measure(lambda: 2).require().met


def test_a_gpu_target_on_a_machine_without_one_is_not_measurable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []
    t = Target("copy bandwidth share", goal=80, unit="%", needs="cuda")
    with pytest.raises(NotMeasurableHere, match="needs cuda"):
        t.measure(lambda: calls.append(1) or 90.0)
    assert calls == [], "nothing is measured where the figure means nothing"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert t.measure(lambda: 90.0).met


def test_budget_stops_repeats_early_but_always_measures_once():
    count = itertools.count()

    def slow():
        next(count)
        time.sleep(0.05)
        return 1.0
    out = Target("f", goal=1).measure(slow, repeats=50, budget_s=0.01)
    assert len(out.values) == 1 and next(count) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"goal": float("nan")}, "goal must be a finite number"),
    ({"goal": 1, "tolerance": 1.5}, "tolerance must be in"),
    ({"goal": 1, "needs": "tpu"}, "needs must be one of"),
])
def test_bad_targets_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Target("f", **kwargs)


def test_a_measurement_must_return_a_finite_number():
    t = Target("f", goal=1)
    with pytest.raises(TypeError, match="must return a number"):
        t.measure(lambda: "fast")
    with pytest.raises(ValueError, match="not a finite number"):
        t.measure(lambda: float("inf"))
    with pytest.raises(ValueError, match="repeats must be"):
        t.measure(lambda: 1.0, repeats=0)
