"""labkit.pipeline: schedules against the bubble formula, and a real pipeline against one process."""
import pytest

from labkit import parallel as P
from labkit import pipeline as PP


@pytest.mark.parametrize("kind", PP.KINDS)
@pytest.mark.parametrize("p, m", [(2, 1), (2, 4), (4, 4), (4, 8), (3, 5), (8, 32)])
def test_schedules_run_every_op_once_and_their_bubble_is_the_formula(kind, p, m):
    ops = PP.schedule(kind, p, m)
    for stage in ops:
        assert sorted(stage) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
        assert all(stage.index(("F", i)) < stage.index(("B", i)) for i in range(m))
    idle = PP.idle_fraction(PP.simulate(ops, t_f=1.0, t_b=2.0))
    assert idle == pytest.approx([PP.bubble_fraction(p, m)] * p, abs=1e-9)


def test_1f1b_holds_fewer_micro_batches_than_gpipe():
    assert PP.in_flight(PP.schedule("gpipe", 4, 8)) == [8, 8, 8, 8]
    assert PP.in_flight(PP.schedule("1f1b", 4, 8)) == [4, 3, 2, 1]     # p - s
    assert PP.in_flight(PP.schedule("1f1b", 4, 2)) == [2, 2, 2, 1]     # never more than m


def test_a_wrong_order_deadlocks_and_bad_arguments_are_named():
    ops = PP.schedule("gpipe", 2, 2)
    ops[1] = [("B", 0), ("F", 0), ("F", 1), ("B", 1)]                  # a backward before its forward
    with pytest.raises(ValueError, match="deadlock"):
        PP.simulate(ops)
    with pytest.raises(ValueError, match="kind"):
        PP.schedule("zb", 2, 2)
    with pytest.raises(ValueError, match="m must"):
        PP.schedule("1f1b", 2, 0)


@pytest.mark.parametrize("world, kind", [(2, "gpipe"), (4, "1f1b")])
def test_a_real_pipeline_equals_the_whole_model_in_one_process_and_idles_as_the_formula_says(world, kind):
    res = P.run(PP.run_pipeline, world, kind, 4, 8, 64, 8, 0.01, backend="gloo")   # ops padded to 10 / 20 ms
    assert all(r["grad diff"] <= 1e-6 for r in res), [r["grad diff"] for r in res]
    assert res[-1]["loss"] == pytest.approx(res[-1]["reference loss"], rel=1e-6)
    assert [r["most held"] for r in res] == PP.in_flight(PP.schedule(kind, world, 4))
    for r, ops in zip(res, PP.schedule(kind, world, 4)):
        assert [(k, i) for k, i, _, _ in r["timeline"]] == ops
        assert all(0 <= start <= end for _, _, start, end in r["timeline"])
    idle = PP.idle_fraction([r["timeline"] for r in res])       # each rank's clock starts at a common barrier
    assert idle == pytest.approx([PP.bubble_fraction(world, 4)] * world, abs=0.05)
