"""Graded measured targets: a figure the student's decisions move, measured again where it is graded.

A lab states its target up front ("your kernel reaches at least 80 % of the measured copy
bandwidth", "at most 4.25 bits per weight"). The student's code produces the figure, and the
graded test cell measures it, so at autograde time it is measured again on the grading machine
from the student's code: a number typed into the notebook earns nothing.

    speedup = Target("speed-up of your sum over the Python loop", goal=10, unit="x")
    outcome = speedup.measure(lambda: loop_time() / my_time())   # repeats, keeps the median
    outcome.require()                                            # AssertionError if missed

Noise: a shared CPU gives a different figure each run. The measurement is repeated and the
median kept, and the goal counts as met within `tolerance` (relative), which the lab sets from
its figure's noise. Choose figures that noise barely moves (a ratio of two timings taken side by
side, a count, an error, a quality figure), never an absolute time.

Hardware: a target that needs a GPU raises NotMeasurableHere on a machine without one. The
grader (labkit.grading) gives such a hand-in the status "unmeasurable" and lists it for a
re-grade on a machine that has one: it is never a silent 0.
"""
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

NEEDS = ("any", "cuda")


class NotMeasurableHere(RuntimeError):
    """A graded target needs hardware this machine does not have (the grader lists the hand-in
    for a re-grade on a machine that has it)."""


@dataclass
class Target:
    """A goal for a measured figure. `what` names the figure, `unit` is printed after it ("%",
    "x", "bits/weight"), `higher_is_better` says which side of the goal passes, `tolerance` is
    the relative margin granted for noise (0.05: a goal of 10 is met from 9.5 up), `needs` the
    hardware the figure must be measured on ("any" or "cuda")."""
    what: str
    goal: float
    unit: str = ""
    higher_is_better: bool = True
    tolerance: float = 0.05
    needs: str = "any"
    outcome: "Outcome | None" = field(default=None, repr=False, compare=False)  # the last measure()

    def __post_init__(self):
        if not (isinstance(self.goal, (int, float)) and math.isfinite(self.goal)):
            raise ValueError(f"goal must be a finite number, got {self.goal!r}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1) (a relative margin), got {self.tolerance!r}")
        if self.needs not in NEEDS:
            raise ValueError(f"needs must be one of {NEEDS}, got {self.needs!r}")

    @property
    def threshold(self) -> float:
        """The figure that still counts as meeting the goal, noise margin included."""
        margin = abs(self.goal) * self.tolerance
        return self.goal - margin if self.higher_is_better else self.goal + margin

    def __str__(self) -> str:
        side = ">=" if self.higher_is_better else "<="
        return f"{self.what} {side} {_fmt(self.goal, self.unit)}"

    def measurable(self) -> bool:
        """Whether this machine has what the figure must be measured on."""
        if self.needs == "cuda":
            import torch
            return torch.cuda.is_available()
        return True

    def measure(self, fn: Callable[[], float], repeats: int = 3, budget_s: float = 60.0) -> "Outcome":
        """Call `fn` (which measures the figure and returns it) up to `repeats` times, stopping
        early once `budget_s` seconds are spent (at least one call is always made), and keep
        the median. Raises NotMeasurableHere when this machine lacks what `needs` names."""
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        if not self.measurable():
            raise NotMeasurableHere(f"{self}: needs {self.needs}, which this machine does not have; "
                                    "the grader lists this hand-in for a re-grade on a machine that has it")
        values, start = [], time.perf_counter()
        for _ in range(repeats):
            v = fn()
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"the measurement for {self.what!r} must return a number, got {v!r}") from None
            if not math.isfinite(v):
                raise ValueError(f"the measurement for {self.what!r} returned {v}, not a finite number")
            values.append(v)
            if time.perf_counter() - start > budget_s:
                break
        self.outcome = Outcome(self, values)
        return self.outcome


@dataclass
class Outcome:
    """What one `Target.measure` found: every value, their median, and whether it met the goal."""
    target: Target
    values: list[float]

    @property
    def value(self) -> float:
        return statistics.median(self.values)

    @property
    def met(self) -> bool:
        t = self.target
        return self.value >= t.threshold if t.higher_is_better else self.value <= t.threshold

    def __str__(self) -> str:
        t = self.target
        runs = ", ".join(_fmt(v, t.unit) for v in self.values)
        verdict = "met" if self.met else f"NOT met (counts as met from {_fmt(t.threshold, t.unit)}, noise margin included)"
        return (f"{t.what}: {_fmt(self.value, t.unit)} (median of {len(self.values)}: {runs}); "
                f"target {'>=' if t.higher_is_better else '<='} {_fmt(t.goal, t.unit)}: {verdict}")

    def require(self) -> "Outcome":
        """Raise AssertionError (failing a graded test cell) if the goal was missed; else return self."""
        if not self.met:
            raise AssertionError(str(self))
        return self


def _fmt(v: float, unit: str) -> str:
    return f"{v:.3g}{'' if unit in ('', '%', 'x') else ' '}{unit}"
